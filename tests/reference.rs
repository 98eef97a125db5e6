//! The CPU reference against truths written down by hand from `SEMANTICS.md`, without a GPU.
//!
//! Most cases set `q = 0`, so every score is 0 and the logits are exactly the bias: the
//! probabilities are then a softmax of the bias the test spells out (uniform over the allowed
//! keys for boolean masks), and `out` the matching average of `v`. The test states which keys
//! each query may see; the reference must agree to the element.

mod common;

use common::*;
use half::{bf16, f16};
use wgattn::masks::{from_hf_attention_mask, from_key_padding_mask, from_mha_attn_mask};
use wgattn::{
    reference, AttentionInputs, AttentionOptions, AttentionOutput, BoolMask, DType, Error, Layout,
    Mask, Tensor,
};

const NEG_INF: f64 = f64::NEG_INFINITY;

fn f32_tensor(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
}

fn bool_mask(shape: &[usize], data: &[u8]) -> Mask {
    Mask::Bool(BoolMask::new(shape.to_vec(), data.iter().map(|&x| x != 0).collect()).unwrap())
}

fn run(case: &Case) -> AttentionOutput {
    case.reference()
}

/// A random case with `q = 0` (so logits = bias) and every intermediate returned.
fn zero_q_case(seed: u64, dims: Dims, layout: Layout) -> Case {
    let mut case = Case::random(&mut Rng::new(seed), dims, DType::F32, layout).all_returns();
    case.q = Tensor::from_f32(case.q.shape().to_vec(), vec![0.0; case.q.len()]).unwrap();
    case
}

/// `v[b, hk, j, :]` of the keys attended (past first), whatever the layout.
fn v_row(case: &Case, b: usize, hk: usize, j: usize) -> Vec<f64> {
    let d = case.dims;
    let p = d.past.unwrap_or(0);
    if j < p {
        let pv = case.past.as_ref().unwrap().1.to_f64_vec();
        let start = ((b * d.hkv + hk) * p + j) * d.dv;
        return pv[start..start + d.dv].to_vec();
    }
    let jj = j - p;
    let row = match case.opts.layout {
        Layout::Bhsd => (b * d.hkv + hk) * d.lk + jj,
        Layout::Bshd => (b * d.lk + jj) * d.hkv + hk,
    };
    case.v.to_f64_vec()[row * d.dv..(row + 1) * d.dv].to_vec()
}

/// `out[b, h, i, :]` in the case's layout.
fn out_row(case: &Case, out: &Tensor, b: usize, h: usize, i: usize) -> Vec<f64> {
    let d = case.dims;
    let row = match case.opts.layout {
        Layout::Bhsd => (b * d.hq + h) * d.lq + i,
        Layout::Bshd => (b * d.lq + i) * d.hq + h,
    };
    out.to_f64_vec()[row * d.dv..(row + 1) * d.dv].to_vec()
}

/// f32 rounding of a value computed in f64: half an ulp, plus room for f64 sums near 0.
fn close32(got: f64, want: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= 1e-12 + want.abs() * f32::EPSILON as f64
}

/// Runs a `q = 0` case and checks it against `bias(b, h, i, j)`, written by hand: the logits
/// are the bias (`-inf` where disallowed), the probabilities its softmax (0 on a fully masked
/// row), `out` the probability-weighted average of `v` (0 on a fully masked row), and
/// `reference::allowed` is `true` exactly where the bias is above `-inf`.
fn expect_bias(case: &Case, bias: impl Fn(usize, usize, usize, usize) -> f64) {
    let d = case.dims;
    let lt = d.lt();
    let got = run(case);
    let allowed = reference::allowed(&case.inputs(), &case.opts).unwrap();
    assert_eq!(
        allowed.len(),
        d.b * d.hq * d.lq * lt,
        "allowed is [B, Hq, Lq, Lt]"
    );
    let (scores, logits, probs) = (
        got.scores.as_ref().unwrap().to_f64_vec(),
        got.logits.as_ref().unwrap().to_f64_vec(),
        got.probs.as_ref().unwrap().to_f64_vec(),
    );
    assert!(scores.iter().all(|&s| s == 0.0), "q = 0 must give scores 0");
    for b in 0..d.b {
        for h in 0..d.hq {
            for i in 0..d.lq {
                let row = row_of(&d, b, h, i);
                let want_logits: Vec<f64> = (0..lt).map(|j| bias(b, h, i, j)).collect();
                let max = want_logits.iter().copied().fold(NEG_INF, f64::max);
                let weights: Vec<f64> = if max == NEG_INF {
                    vec![0.0; lt]
                } else {
                    let e: Vec<f64> = want_logits.iter().map(|&l| (l - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.iter().map(|x| x / sum).collect()
                };
                let mut want_out = vec![0.0; d.dv];
                for (j, &w) in weights.iter().enumerate() {
                    if w > 0.0 {
                        let vr = v_row(case, b, h / (d.hq / d.hkv), j);
                        for (o, x) in want_out.iter_mut().zip(vr) {
                            *o += w * x;
                        }
                    }
                }
                for j in 0..lt {
                    assert_eq!(
                        allowed[row * lt + j],
                        want_logits[j] > NEG_INF,
                        "allowed[{b},{h},{i},{j}] (bias {})",
                        want_logits[j]
                    );
                    let (gl, gp) = (logits[row * lt + j], probs[row * lt + j]);
                    assert!(
                        close32(gl, want_logits[j]),
                        "logits[{b},{h},{i},{j}] = {gl}, want {}",
                        want_logits[j]
                    );
                    assert!(
                        close32(gp, weights[j]),
                        "probs[{b},{h},{i},{j}] = {gp}, want {}",
                        weights[j]
                    );
                }
                let got_out = out_row(case, &got.out, b, h, i);
                for (c, (&g, &w)) in got_out.iter().zip(&want_out).enumerate() {
                    assert!(
                        !g.is_nan() && (g - w).abs() <= 1e-6,
                        "out[{b},{h},{i},{c}] = {g}, want {w}"
                    );
                }
                if max == NEG_INF {
                    assert!(got_out.iter().all(|&x| x == 0.0), "fully masked row not 0");
                }
            }
        }
    }
}

/// [`expect_bias`] for masks that only allow or disallow.
fn expect_allowed(case: &Case, allowed: impl Fn(usize, usize, usize, usize) -> bool) {
    expect_bias(
        case,
        |b, h, i, j| if allowed(b, h, i, j) { 0.0 } else { NEG_INF },
    );
}

// ---------------------------------------------------------------------------------------------
// The plain computation.

#[test]
fn zero_query_is_uniform_average_of_all_values() {
    let case = zero_q_case(1, Dims::new(2, 2, 3, 5, 4).v_dim(3), Layout::Bhsd);
    expect_allowed(&case, |_, _, _, _| true);
}

#[test]
fn one_huge_logit_picks_its_keys_value() {
    // Key 2 is q scaled by 100: its score is 100·|q|²/sqrt(2) ≈ 70.7, the others' below 0.1,
    // so its weight is 1 - O(e^-70) and out is its value row to f32 precision.
    let q = f32_tensor(&[1, 1, 1, 2], &[0.6, -0.8]);
    let k = f32_tensor(&[1, 1, 4, 2], &[0.1, 0.2, -0.3, 0.1, 60.0, -80.0, 0.2, 0.2]);
    let v = f32_tensor(
        &[1, 1, 4, 3],
        &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.],
    );
    let opts = AttentionOptions {
        returns: ALL_RETURNS,
        ..Default::default()
    };
    let got = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &opts).unwrap();
    assert_eq!(got.out.to_f32_vec(), vec![7.0, 8.0, 9.0]);
    let probs = got.probs.unwrap().to_f32_vec();
    assert_eq!(probs[2], 1.0);
    assert!(
        probs[0] < 1e-30 && probs[1] < 1e-30 && probs[3] < 1e-30,
        "{probs:?}"
    );
}

#[test]
fn allowed_keys_whose_probability_underflows_to_zero_are_still_allowed() {
    // With scale 1000 key 2 wins by a margin of about 1e5 in the logits: the others' f32
    // probabilities are exactly 0, yet only the causal mask disallows anything (row 0 sees key
    // 0 alone, so its probability is 1).
    let q = f32_tensor(&[1, 1, 4, 2], &[0.6, -0.8, 0.6, -0.8, 0.6, -0.8, 0.6, -0.8]);
    let k = f32_tensor(&[1, 1, 4, 2], &[0.1, 0.2, -0.3, 0.1, 60.0, -80.0, 0.2, 0.2]);
    let v = k.clone();
    let opts = AttentionOptions {
        scale: Some(1000.0),
        causal: true,
        returns: ALL_RETURNS,
        ..Default::default()
    };
    let inputs = AttentionInputs::new(&q, &k, &v);
    let probs = reference::masked_attention(&inputs, &opts)
        .unwrap()
        .probs
        .unwrap()
        .to_f32_vec();
    assert_eq!(
        probs[2 * 4..3 * 4],
        [0.0, 0.0, 1.0, 0.0],
        "row 2: {probs:?}"
    );
    let allowed = reference::allowed(&inputs, &opts).unwrap();
    let causal: Vec<bool> = (0..16).map(|x| x % 4 <= x / 4).collect();
    assert_eq!(allowed, causal);
}

#[test]
fn scale_defaults_to_inverse_sqrt_head_dim() {
    // q·k = 4 with D = 4: score 4/sqrt(4) = 2 by default, 4·0.25 = 1 with scale 0.25.
    let q = f32_tensor(&[1, 1, 1, 4], &[1.0; 4]);
    let k = f32_tensor(&[1, 1, 2, 4], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let v = f32_tensor(&[1, 1, 2, 1], &[1.0, 0.0]);
    let inputs = AttentionInputs::new(&q, &k, &v);
    let mut opts = AttentionOptions {
        returns: ALL_RETURNS,
        ..Default::default()
    };
    let got = reference::masked_attention(&inputs, &opts).unwrap();
    assert_eq!(got.scores.unwrap().to_f32_vec(), vec![2.0, 0.0]);
    let e2 = 2f64.exp();
    assert_eq!(got.out.to_f32_vec(), vec![(e2 / (e2 + 1.0)) as f32]);
    opts.scale = Some(0.25);
    let got = reference::masked_attention(&inputs, &opts).unwrap();
    assert_eq!(got.scores.unwrap().to_f32_vec(), vec![1.0, 0.0]);
    let e1 = 1f64.exp();
    assert_eq!(got.out.to_f32_vec(), vec![(e1 / (e1 + 1.0)) as f32]);
}

#[test]
fn scores_are_scaled_dot_products() {
    let mut rng = Rng::new(2);
    let case = Case::random(&mut rng, Dims::new(1, 2, 3, 4, 5), DType::F32, Layout::Bhsd)
        .all_returns()
        .with_opts(|o| o.scale = Some(0.7));
    let got = run(&case);
    let (q, k) = (case.q.to_f64_vec(), case.k.to_f64_vec());
    let scores = got.scores.unwrap().to_f64_vec();
    for h in 0..2 {
        for i in 0..3 {
            for j in 0..4 {
                let dot: f64 = (0..5)
                    .map(|c| q[(h * 3 + i) * 5 + c] * k[(h * 4 + j) * 5 + c])
                    .sum();
                let want = (0.7f32 as f64 * dot) as f32 as f64;
                assert_eq!(scores[(h * 3 + i) * 4 + j], want, "scores[0,{h},{i},{j}]");
            }
        }
    }
}

#[test]
fn softcap_applies_before_the_mask() {
    // s = [10, 20, 30, 40], c = 5: scores 5·tanh(s/5); key 3 masked by a boolean mask stays
    // -inf in the logits, and an additive mask adds to the capped score (not capped itself).
    let q = f32_tensor(&[1, 1, 1, 1], &[1.0]);
    let k = f32_tensor(&[1, 1, 4, 1], &[10.0, 20.0, 30.0, 40.0]);
    let v = f32_tensor(&[1, 1, 4, 1], &[1.0, 2.0, 3.0, 4.0]);
    let opts = AttentionOptions {
        scale: Some(1.0),
        softcap: 5.0,
        returns: ALL_RETURNS,
        ..Default::default()
    };
    let capped: Vec<f64> = [10.0f64, 20.0, 30.0, 40.0]
        .iter()
        .map(|s| 5.0 * (s / 5.0).tanh())
        .collect();
    let m = bool_mask(&[4], &[1, 1, 1, 0]);
    let got = reference::masked_attention(&AttentionInputs::new(&q, &k, &v).with_mask(&m), &opts)
        .unwrap();
    let scores = got.scores.unwrap().to_f64_vec();
    let logits = got.logits.unwrap().to_f64_vec();
    for j in 0..4 {
        assert_eq!(scores[j], capped[j] as f32 as f64, "scores[{j}]");
    }
    assert_eq!(&logits[..3], &scores[..3]);
    assert_eq!(logits[3], NEG_INF);
    let e: Vec<f64> = capped[..3].iter().map(|c| (c - capped[2]).exp()).collect();
    let want = (e[0] * 1.0 + e[1] * 2.0 + e[2] * 3.0) / e.iter().sum::<f64>();
    assert!(close32(got.out.to_f64_vec()[0], want));

    let add = Mask::Additive(f32_tensor(&[4], &[100.0, 0.0, 0.0, f32::NEG_INFINITY]));
    let got = reference::masked_attention(&AttentionInputs::new(&q, &k, &v).with_mask(&add), &opts)
        .unwrap();
    let logits = got.logits.unwrap().to_f64_vec();
    assert_eq!(logits[0], (capped[0] + 100.0) as f32 as f64);
    assert_eq!(logits[3], NEG_INF);
    assert_eq!(got.out.to_f32_vec(), vec![1.0]);
}

#[test]
fn gqa_query_head_reads_kv_head_h_over_group() {
    // Hq = 6, Hkv = 2: heads 0..3 read kv head 0, heads 3..6 kv head 1 (expect_bias averages
    // v of head h / 3 and checks the reference does the same).
    let case = zero_q_case(3, Dims::new(2, 1, 2, 4, 3).heads(6, 2), Layout::Bhsd);
    expect_allowed(&case, |_, _, _, _| true);
    // And the scores: q of head h against k of head h / 3.
    let mut rng = Rng::new(4);
    let case = Case::random(
        &mut rng,
        Dims::new(1, 1, 1, 2, 2).heads(6, 2),
        DType::F32,
        Layout::Bhsd,
    )
    .all_returns()
    .with_opts(|o| o.scale = Some(1.0));
    let got = run(&case);
    let (q, k) = (case.q.to_f64_vec(), case.k.to_f64_vec());
    let scores = got.scores.unwrap().to_f64_vec();
    for h in 0..6 {
        for j in 0..2 {
            let hk = h / 3;
            let dot = q[h * 2] * k[(hk * 2 + j) * 2] + q[h * 2 + 1] * k[(hk * 2 + j) * 2 + 1];
            assert_eq!(scores[h * 2 + j], dot as f32 as f64, "scores[0,{h},0,{j}]");
        }
    }
}

#[test]
fn mqa_every_query_head_reads_the_one_kv_head() {
    let case = zero_q_case(5, Dims::new(1, 1, 3, 4, 2).heads(4, 1), Layout::Bhsd)
        .with_opts(|o| o.causal = true);
    expect_allowed(&case, |_, _, i, j| j <= i);
}

/// `[B, S, H, X]` from `[B, H, S, X]`, or back (the same swap).
fn swap_middle(t: &Tensor) -> Tensor {
    let s = t.shape();
    let (b, a1, a2, x) = (s[0], s[1], s[2], s[3]);
    let src = t.to_f32_vec();
    let mut dst = vec![0f32; src.len()];
    for bi in 0..b {
        for i in 0..a1 {
            for j in 0..a2 {
                let from = ((bi * a1 + i) * a2 + j) * x;
                let to = ((bi * a2 + j) * a1 + i) * x;
                dst[to..to + x].copy_from_slice(&src[from..from + x]);
            }
        }
    }
    Tensor::from_f32_as([b, a2, a1, x], &dst, t.dtype()).unwrap()
}

#[test]
fn bshd_equals_bhsd_after_transposing() {
    let mut rng = Rng::new(6);
    let dims = Dims::new(2, 1, 3, 4, 5).heads(4, 2).v_dim(3).past(2);
    let bhsd = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd)
        .all_returns()
        .with_opts(|o| {
            o.causal = true;
            o.window_left = 2;
        })
        .with_mask(random_bool_mask(&mut rng, &[2, 1, 3, 6], 0.8));
    let mut bshd = bhsd.clone().with_opts(|o| o.layout = Layout::Bshd);
    bshd.q = swap_middle(&bhsd.q);
    bshd.k = swap_middle(&bhsd.k);
    bshd.v = swap_middle(&bhsd.v);
    let (a, b) = (run(&bhsd), run(&bshd));
    assert_eq!(b.out.shape(), &[2, 3, 4, 3]);
    assert_eq!(swap_middle(&b.out), a.out);
    assert_eq!(a.scores, b.scores);
    assert_eq!(a.logits, b.logits);
    assert_eq!(a.probs, b.probs);
    assert_eq!(a.present_k, b.present_k);
    assert_eq!(a.present_v, b.present_v);
}

#[test]
fn present_is_concat_of_past_and_new_bit_for_bit() {
    for (dtype, layout, p) in [
        (DType::F32, Layout::Bhsd, 3),
        (DType::F16, Layout::Bshd, 2),
        (DType::BF16, Layout::Bhsd, 1),
        (DType::F32, Layout::Bshd, 0),
    ] {
        let mut rng = Rng::new(7);
        let dims = Dims::new(2, 1, 2, 3, 4).heads(2, 2).v_dim(5).past(p);
        let case = Case::random(&mut rng, dims, dtype, layout);
        let got = run(&case);
        let (pk, pv) = case.past.as_ref().unwrap();
        let (k, v) = match layout {
            Layout::Bhsd => (case.k.clone(), case.v.clone()),
            Layout::Bshd => (swap_middle(&case.k), swap_middle(&case.v)),
        };
        for (name, present, past, new, x) in [
            ("present_k", &got.present_k, pk, &k, 4),
            ("present_v", &got.present_v, pv, &v, 5),
        ] {
            let present = present.as_ref().unwrap();
            assert_eq!(present.shape(), &[2, 2, p + 3, x], "{name}");
            assert_eq!(present.dtype(), dtype);
            let (pb, nb, gb) = (past.to_le_bytes(), new.to_le_bytes(), present.to_le_bytes());
            let el = dtype.size();
            for bh in 0..4 {
                let want = [
                    &pb[bh * p * x * el..(bh + 1) * p * x * el],
                    &nb[bh * 3 * x * el..(bh + 1) * 3 * x * el],
                ]
                .concat();
                let row = (p + 3) * x * el;
                assert_eq!(
                    &gb[bh * row..(bh + 1) * row],
                    &want[..],
                    "{name} {dtype} {layout:?}"
                );
            }
        }
    }
    // No past, no present.
    let case = Case::random(
        &mut Rng::new(8),
        Dims::new(1, 1, 1, 2, 2),
        DType::F32,
        Layout::Bhsd,
    );
    let got = run(&case);
    assert!(got.present_k.is_none() && got.present_v.is_none());
}

// ---------------------------------------------------------------------------------------------
// Causal and its offset.

#[test]
fn causal_is_top_left_aligned() {
    let case =
        zero_q_case(10, Dims::new(1, 2, 3, 5, 2), Layout::Bhsd).with_opts(|o| o.causal = true);
    expect_allowed(&case, |_, _, i, j| j <= i);
}

#[test]
fn causal_with_past_offsets_by_past_len() {
    // P = 3, Lk = 2: query i sees keys j <= i + 3.
    let case = zero_q_case(11, Dims::new(2, 1, 2, 2, 3).past(3), Layout::Bhsd)
        .with_opts(|o| o.causal = true);
    expect_allowed(&case, |_, _, i, j| j <= i + 3);
}

#[test]
fn causal_with_empty_past_is_top_left() {
    let case = zero_q_case(12, Dims::new(1, 1, 3, 3, 2).past(0), Layout::Bhsd)
        .with_opts(|o| o.causal = true);
    expect_allowed(&case, |_, _, i, j| j <= i);
}

#[test]
fn causal_with_kv_lengths_offsets_by_len_minus_lq() {
    // Lq = 2, Lk = 5, kv_len = [5, 3]: batch 0 has offset 3 (j <= i + 3), batch 1 offset 1
    // (j <= i + 1), and every key past kv_len is disallowed.
    let case = zero_q_case(13, Dims::new(2, 2, 2, 5, 2), Layout::Bhsd)
        .with_opts(|o| o.causal = true)
        .with_kv_lengths(vec![5, 3]);
    let lens = [5usize, 3];
    expect_allowed(&case, |b, _, i, j| j + 2 <= i + lens[b] && j < lens[b]);
}

#[test]
fn right_padded_causal_batch_with_kv_lengths_masks_early_rows() {
    // The documented trap: real tokens 0..2 then padding, Lq = Lk = 4, kv_len = [2]. The
    // offset is 2 - 4 = -2, so rows 0 and 1 see nothing (zeros), row 2 sees key 0, row 3 keys
    // 0 and 1.
    let case = zero_q_case(14, Dims::new(1, 1, 4, 4, 3), Layout::Bhsd)
        .with_opts(|o| o.causal = true)
        .with_kv_lengths(vec![2]);
    expect_allowed(&case, |_, _, i, j| j + 2 <= i && j < 2);
    let got = run(&case).out.to_f32_vec();
    assert!(
        got[..6].iter().all(|&x| x == 0.0),
        "rows 0 and 1 must be 0, got {got:?}"
    );
}

#[test]
fn right_padded_causal_batch_with_hf_mask_keeps_real_rows() {
    // The right way for the same batch: the HF padding mask, causal top-left.
    let mut case =
        zero_q_case(14, Dims::new(1, 1, 4, 4, 3), Layout::Bhsd).with_opts(|o| o.causal = true);
    case.mask = Some(from_hf_attention_mask(&[1, 1, 0, 0], 1, 4).unwrap());
    expect_allowed(&case, |_, _, i, j| j <= i && j < 2);
}

#[test]
fn negative_causal_offset_fully_masks_rows_to_zero() {
    let case = zero_q_case(15, Dims::new(1, 2, 4, 4, 2), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(-2);
    });
    expect_allowed(&case, |_, _, i, j| (j as i64) <= i as i64 - 2);
    let got = run(&case);
    assert!(got.out.to_f32_vec().iter().all(|x| !x.is_nan()));
    let probs = got.probs.unwrap().to_f32_vec();
    assert!(probs[..8].iter().all(|&p| p == 0.0), "rows 0, 1 of head 0");
}

#[test]
fn positive_causal_offset_is_bottom_right_alignment() {
    // Lq = 2, Lt = 5, offset Lt - Lq = 3.
    let case = zero_q_case(16, Dims::new(1, 1, 2, 5, 2), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(3);
    });
    expect_allowed(&case, |_, _, i, j| j <= i + 3);
}

#[test]
fn causal_offset_replaces_the_derived_offset() {
    // With a past of 3 the derived offset would be 3; the explicit 0 wins.
    let case = zero_q_case(17, Dims::new(1, 1, 2, 2, 2).past(3), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(0);
    });
    expect_allowed(&case, |_, _, i, j| j <= i);
    // With key lengths too.
    let case = zero_q_case(18, Dims::new(2, 1, 2, 4, 2), Layout::Bhsd)
        .with_opts(|o| {
            o.causal = true;
            o.causal_offset = Some(1);
        })
        .with_kv_lengths(vec![4, 2]);
    let lens = [4usize, 2];
    expect_allowed(&case, |b, _, i, j| j <= i + 1 && j < lens[b]);
}

#[test]
fn extreme_offsets_and_windows_do_not_overflow() {
    let dims = Dims::new(1, 1, 3, 4, 2);
    let case = zero_q_case(19, dims, Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(i64::MAX);
        o.window_left = i64::MAX;
        o.window_right = i64::MAX;
    });
    // p = i + MAX: causal and right always hold; left needs j >= p - MAX = i.
    expect_allowed(&case, |_, _, i, j| j >= i);
    let case = zero_q_case(19, dims, Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.window_left = i64::MAX;
        o.window_right = i64::MAX;
    });
    expect_allowed(&case, |_, _, i, j| j <= i);
    let case = zero_q_case(19, dims, Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(i64::MIN);
    });
    expect_allowed(&case, |_, _, _, _| false);
    let case = zero_q_case(19, dims, Layout::Bhsd).with_opts(|o| {
        o.causal_offset = Some(i64::MAX);
        o.window_left = 0;
    });
    expect_allowed(&case, |_, _, _, _| false);
}

// ---------------------------------------------------------------------------------------------
// Sliding windows.

#[test]
fn window_left_alone_bounds_the_past() {
    // left = 1, no causal: key j allowed iff i - 1 <= j.
    let case =
        zero_q_case(20, Dims::new(1, 1, 5, 5, 2), Layout::Bhsd).with_opts(|o| o.window_left = 1);
    expect_allowed(&case, |_, _, i, j| j + 1 >= i);
}

#[test]
fn window_right_alone_bounds_the_future() {
    // right = 2, no causal: key j allowed iff j <= i + 2.
    let case =
        zero_q_case(21, Dims::new(1, 1, 5, 6, 2), Layout::Bhsd).with_opts(|o| o.window_right = 2);
    expect_allowed(&case, |_, _, i, j| j <= i + 2);
}

#[test]
fn window_left_and_right_is_a_band() {
    let case = zero_q_case(22, Dims::new(1, 1, 5, 6, 2), Layout::Bhsd).with_opts(|o| {
        o.window_left = 1;
        o.window_right = 1;
    });
    expect_allowed(&case, |_, _, i, j| j + 1 >= i && j <= i + 1);
}

#[test]
fn window_zero_zero_sees_only_the_diagonal() {
    let case = zero_q_case(23, Dims::new(1, 1, 4, 4, 2), Layout::Bhsd).with_opts(|o| {
        o.window_left = 0;
        o.window_right = 0;
    });
    expect_allowed(&case, |_, _, i, j| j == i);
}

#[test]
fn window_left_with_causal() {
    let case = zero_q_case(24, Dims::new(1, 2, 6, 6, 2), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.window_left = 2;
    });
    expect_allowed(&case, |_, _, i, j| j <= i && j + 2 >= i);
}

#[test]
fn window_right_with_causal_is_causal() {
    let case = zero_q_case(25, Dims::new(1, 1, 4, 6, 2), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.window_right = 3;
    });
    expect_allowed(&case, |_, _, i, j| j <= i);
}

#[test]
fn window_uses_the_past_offset() {
    // P = 4: p = i + 4; left = 1, right = 0 (with causal): keys i + 3 ..= i + 4.
    let case = zero_q_case(26, Dims::new(1, 1, 3, 3, 2).past(4), Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.window_left = 1;
        o.window_right = 0;
    });
    expect_allowed(&case, |_, _, i, j| j + 1 >= i + 4 && j <= i + 4);
}

#[test]
fn window_uses_the_kv_lengths_offset() {
    // Lq = 2, kv_len = [6, 4]: p = i + kv_len - 2; left = 1 without causal.
    let case = zero_q_case(27, Dims::new(2, 1, 2, 6, 2), Layout::Bhsd)
        .with_opts(|o| o.window_left = 1)
        .with_kv_lengths(vec![6, 4]);
    let lens = [6usize, 4];
    expect_allowed(&case, |b, _, i, j| j + 1 + 2 >= i + lens[b] && j < lens[b]);
}

// ---------------------------------------------------------------------------------------------
// Key lengths.

#[test]
fn kv_lengths_without_causal_mask_trailing_keys() {
    let case =
        zero_q_case(30, Dims::new(3, 2, 3, 5, 2), Layout::Bhsd).with_kv_lengths(vec![5, 1, 3]);
    let lens = [5usize, 1, 3];
    expect_allowed(&case, |b, _, _, j| j < lens[b]);
}

#[test]
fn kv_length_zero_fully_masks_its_batch_entry() {
    let case = zero_q_case(31, Dims::new(2, 1, 2, 3, 2), Layout::Bhsd).with_kv_lengths(vec![0, 3]);
    expect_allowed(&case, |b, _, _, _| b == 1);
}

// ---------------------------------------------------------------------------------------------
// Boolean masks: true = may attend, right-aligned broadcasting, short last axis.

#[test]
fn bool_mask_rank_1_is_a_key_mask_for_every_row() {
    let mut case = zero_q_case(40, Dims::new(2, 2, 3, 4, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[4], &[1, 0, 1, 1]));
    expect_allowed(&case, |_, _, _, j| j != 1);
}

#[test]
fn bool_mask_rank_2_is_query_by_key() {
    let mut case = zero_q_case(41, Dims::new(2, 2, 2, 3, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[2, 3], &[1, 0, 0, 0, 1, 1]));
    let m = [[true, false, false], [false, true, true]];
    expect_allowed(&case, |_, _, i, j| m[i][j]);
}

#[test]
fn bool_mask_rank_3_is_head_query_key() {
    let mut case = zero_q_case(42, Dims::new(2, 2, 2, 2, 2), Layout::Bhsd);
    // [Hq, Lq, Lt] = [2, 2, 2].
    case.mask = Some(bool_mask(&[2, 2, 2], &[1, 0, 0, 1, 0, 1, 1, 1]));
    let m = [
        [[true, false], [false, true]],
        [[false, true], [true, true]],
    ];
    expect_allowed(&case, |_, h, i, j| m[h][i][j]);
}

#[test]
fn bool_mask_rank_4_full() {
    let mut rng = Rng::new(43);
    let mut case = zero_q_case(43, Dims::new(2, 2, 3, 4, 2), Layout::Bhsd);
    let mask = random_bool_mask(&mut rng, &[2, 2, 3, 4], 0.6);
    let data = match &mask {
        Mask::Bool(m) => m.data().to_vec(),
        Mask::Additive(_) => unreachable!(),
    };
    case.mask = Some(mask);
    expect_allowed(&case, |b, h, i, j| data[((b * 2 + h) * 3 + i) * 4 + j]);
}

#[test]
fn bool_mask_rank_4_broadcasts_size_one_axes() {
    // [B, 1, 1, Lt]: a per-batch key mask.
    let mut case = zero_q_case(44, Dims::new(2, 3, 2, 3, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[2, 1, 1, 3], &[1, 1, 0, 0, 1, 1]));
    expect_allowed(&case, |b, _, _, j| if b == 0 { j < 2 } else { j > 0 });
    // [1, Hq, 1, Lt]: per head.
    let mut case = zero_q_case(45, Dims::new(2, 2, 2, 3, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[1, 2, 1, 3], &[0, 1, 0, 1, 0, 1]));
    expect_allowed(&case, |_, h, _, j| if h == 0 { j == 1 } else { j != 1 });
    // [B, 1, Lq, Lt] with GQA: the mask is per query head, broadcast over heads.
    let mut case = zero_q_case(46, Dims::new(2, 1, 2, 2, 2).heads(4, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[2, 1, 2, 2], &[1, 0, 1, 1, 0, 1, 1, 0]));
    let m = [
        [[true, false], [true, true]],
        [[false, true], [true, false]],
    ];
    expect_allowed(&case, |b, _, i, j| m[b][i][j]);
}

#[test]
fn bool_mask_rank_3_with_broadcast_query_axis() {
    let mut case = zero_q_case(47, Dims::new(2, 2, 3, 3, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[2, 1, 3], &[1, 1, 0, 0, 0, 1]));
    expect_allowed(&case, |_, h, _, j| if h == 0 { j < 2 } else { j == 2 });
}

#[test]
fn bool_mask_short_last_axis_disallows_missing_keys() {
    // Lt = 5, mask last axis 3: keys 3 and 4 are disallowed for every row.
    let mut case = zero_q_case(48, Dims::new(1, 2, 2, 5, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[2, 3], &[1, 0, 1, 1, 1, 0]));
    let m = [[true, false, true], [true, true, false]];
    expect_allowed(&case, |_, _, i, j| j < 3 && m[i][j]);
}

#[test]
fn bool_mask_last_axis_of_one_covers_only_key_zero() {
    // ONNX's rule, not PyTorch's broadcast: n = 1 is key 0 alone.
    let mut case = zero_q_case(49, Dims::new(1, 1, 3, 4, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[3, 1], &[1, 0, 1]));
    expect_allowed(&case, |_, _, i, j| j == 0 && i != 1);
}

#[test]
fn bool_mask_with_past_covers_past_keys_first() {
    // P = 2, Lk = 2: mask keys 0, 1 are the cache.
    let mut case = zero_q_case(50, Dims::new(1, 1, 2, 2, 2).past(2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[4], &[0, 1, 1, 0]));
    expect_allowed(&case, |_, _, _, j| j == 1 || j == 2);
}

#[test]
fn all_false_bool_mask_gives_zeros_not_nan() {
    let mut case = zero_q_case(51, Dims::new(1, 2, 2, 3, 2), Layout::Bhsd);
    case.mask = Some(bool_mask(&[1], &[0]));
    expect_allowed(&case, |_, _, _, _| false);
}

#[test]
fn masks_combine_by_intersection() {
    // causal ∩ window_left 2 ∩ kv_len ∩ a boolean key mask.
    let mut case = zero_q_case(52, Dims::new(2, 1, 4, 6, 2), Layout::Bhsd)
        .with_opts(|o| {
            o.causal = true;
            o.causal_offset = Some(2);
            o.window_left = 2;
        })
        .with_kv_lengths(vec![6, 5]);
    case.mask = Some(bool_mask(&[6], &[1, 1, 1, 0, 1, 1]));
    let lens = [6usize, 5];
    expect_allowed(&case, |b, _, i, j| {
        j <= i + 2 && j + 2 >= i + 2 && j < lens[b] && j != 3
    });
}

// ---------------------------------------------------------------------------------------------
// Additive masks.

#[test]
fn additive_mask_values_are_the_logits_when_q_is_zero() {
    // Row [0, ln 2, -inf]: probs [1/3, 2/3, 0].
    let mut case = zero_q_case(60, Dims::new(1, 1, 2, 3, 2), Layout::Bhsd);
    let ln2 = std::f32::consts::LN_2;
    case.mask = Some(Mask::Additive(f32_tensor(
        &[2, 3],
        &[0.0, ln2, f32::NEG_INFINITY, -1.0, f32::NEG_INFINITY, 2.5],
    )));
    let m = [[0.0, ln2 as f64, NEG_INF], [-1.0, NEG_INF, 2.5]];
    expect_bias(&case, |_, _, i, j| m[i][j]);
    let probs = run(&case).probs.unwrap().to_f64_vec();
    assert!(close32(probs[0], 1.0 / 3.0) && close32(probs[1], 2.0 / 3.0) && probs[2] == 0.0);
}

#[test]
fn additive_mask_short_last_axis_counts_as_neg_inf() {
    let mut case = zero_q_case(61, Dims::new(1, 2, 2, 4, 2), Layout::Bhsd);
    // [Hq, 1, 2]: per-head bias on keys 0, 1; keys 2, 3 are -inf.
    case.mask = Some(Mask::Additive(f32_tensor(
        &[2, 1, 2],
        &[0.5, -0.5, 1.0, f32::NEG_INFINITY],
    )));
    let m = [[0.5, -0.5], [1.0, NEG_INF]];
    expect_bias(&case, |_, h, _, j| if j < 2 { m[h][j] } else { NEG_INF });
}

#[test]
fn additive_mask_all_neg_inf_row_gives_zeros() {
    let mut case = zero_q_case(62, Dims::new(1, 1, 2, 2, 2), Layout::Bhsd);
    case.mask = Some(Mask::Additive(f32_tensor(
        &[2, 2],
        &[f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, 0.0],
    )));
    expect_bias(
        &case,
        |_, _, i, j| if i == 0 { NEG_INF } else { [1.0, 0.0][j] },
    );
}

#[test]
fn additive_mask_in_f16_and_bf16_is_widened_exactly() {
    for dtype in [DType::F16, DType::BF16] {
        let mut case = zero_q_case(63, Dims::new(1, 1, 1, 3, 2), Layout::Bhsd);
        let vals = [0.3f32, -1.7, f32::NEG_INFINITY];
        let mask = Tensor::from_f32_as([3], &vals, dtype).unwrap();
        let widened = mask.to_f64_vec();
        case.mask = Some(Mask::Additive(mask));
        expect_bias(&case, |_, _, _, j| widened[j]);
    }
}

#[test]
fn additive_mask_combines_with_structured_masks() {
    let mut case =
        zero_q_case(64, Dims::new(1, 1, 3, 3, 2), Layout::Bhsd).with_opts(|o| o.causal = true);
    case.mask = Some(Mask::Additive(f32_tensor(&[3], &[1.0, 2.0, 3.0])));
    expect_bias(
        &case,
        |_, _, i, j| if j <= i { (j + 1) as f64 } else { NEG_INF },
    );
}

// ---------------------------------------------------------------------------------------------
// Converters from other libraries' conventions.

#[test]
fn hf_attention_mask_equals_native_key_mask() {
    let mut rng = Rng::new(70);
    let case = Case::random(&mut rng, Dims::new(2, 2, 3, 4, 3), DType::F32, Layout::Bhsd)
        .all_returns()
        .with_opts(|o| o.causal = true);
    let hf = from_hf_attention_mask(&[1, 1, 1, 0, 1, 1, 0, 0], 2, 4).unwrap();
    let native = bool_mask(&[2, 1, 1, 4], &[1, 1, 1, 0, 1, 1, 0, 0]);
    assert_eq!(hf, native);
    let a = run(&case.clone().with_mask(hf));
    let b = run(&case.with_mask(native));
    assert_eq!(a, b);
}

#[test]
fn key_padding_mask_true_means_blocked() {
    let mut rng = Rng::new(71);
    let case =
        Case::random(&mut rng, Dims::new(2, 1, 2, 3, 2), DType::F32, Layout::Bhsd).all_returns();
    let kpm = from_key_padding_mask(&[false, false, true, false, true, true], 2, 3).unwrap();
    let native = bool_mask(&[2, 1, 1, 3], &[1, 1, 0, 1, 0, 0]);
    assert_eq!(kpm, native);
    let a = run(&case.clone().with_mask(kpm));
    let b = run(&case.with_mask(native));
    assert_eq!(a, b);
}

#[test]
fn mha_attn_mask_true_means_blocked_in_both_shapes() {
    let mut rng = Rng::new(72);
    let case =
        Case::random(&mut rng, Dims::new(2, 2, 2, 3, 2), DType::F32, Layout::Bhsd).all_returns();
    // [L, S].
    let blocked = [false, true, true, false, false, true];
    let mha = from_mha_attn_mask(&blocked, &[2, 3], 2).unwrap();
    let native = bool_mask(&[2, 3], &[1, 0, 0, 1, 1, 0]);
    assert_eq!(
        run(&case.clone().with_mask(mha)),
        run(&case.clone().with_mask(native))
    );
    // [B*H, L, S] -> [B, H, L, S].
    let blocked: Vec<bool> = (0..24).map(|x| x % 3 == 1 || x % 5 == 0).collect();
    let allowed: Vec<u8> = blocked.iter().map(|&b| (!b) as u8).collect();
    let mha = from_mha_attn_mask(&blocked, &[4, 2, 3], 2).unwrap();
    let native = bool_mask(&[2, 2, 2, 3], &allowed);
    assert_eq!(
        run(&case.clone().with_mask(mha)),
        run(&case.with_mask(native))
    );
}

// ---------------------------------------------------------------------------------------------
// dtypes: the f64 result is rounded once to the input dtype.

#[test]
fn half_precision_outputs_are_the_f64_result_rounded_once() {
    let mut rng = Rng::new(80);
    for dtype in [DType::F16, DType::BF16] {
        let half = Case::random(&mut rng, Dims::new(1, 2, 3, 4, 5), dtype, Layout::Bhsd)
            .all_returns()
            .with_opts(|o| o.causal = true);
        // The same values in f32: the f64 results agree, so the half outputs must be the f32
        // outputs rounded (up to a double-rounding tie, 1 half ulp).
        let mut wide = half.clone();
        wide.q = Tensor::from_f32(half.q.shape().to_vec(), half.q.to_f32_vec()).unwrap();
        wide.k = Tensor::from_f32(half.k.shape().to_vec(), half.k.to_f32_vec()).unwrap();
        wide.v = Tensor::from_f32(half.v.shape().to_vec(), half.v.to_f32_vec()).unwrap();
        let (h, w) = (run(&half), run(&wide));
        assert_eq!(h.out.dtype(), dtype);
        assert_eq!(h.probs.as_ref().unwrap().dtype(), dtype);
        let ulp = match dtype {
            DType::F16 => 2f64.powi(-10),
            _ => 2f64.powi(-7),
        };
        for (name, a, b) in [
            ("out", &h.out, &w.out),
            (
                "scores",
                h.scores.as_ref().unwrap(),
                w.scores.as_ref().unwrap(),
            ),
            (
                "probs",
                h.probs.as_ref().unwrap(),
                w.probs.as_ref().unwrap(),
            ),
        ] {
            for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
                let rounded = dtype.round_f64(y);
                assert!(
                    *x == rounded || (x - rounded).abs() <= ulp * y.abs() + 6e-8,
                    "{name} {dtype}: {x} vs {y} rounded {rounded}"
                );
            }
        }
    }
    // Sanity of the rounding helpers the tests rely on.
    assert_eq!(f16::from_f64(1.0 + 2f64.powi(-11)).to_f64(), 1.0);
    assert_eq!(bf16::from_f64(1.0 + 2f64.powi(-8)).to_f64(), 1.0);
}

// ---------------------------------------------------------------------------------------------
// The online-softmax reference equals the three-stage one.

fn online_case(rng: &mut Rng, seed: usize) -> Case {
    let layout = if seed.is_multiple_of(2) {
        Layout::Bhsd
    } else {
        Layout::Bshd
    };
    let group = 1 + seed % 3;
    let hkv = 1 + seed % 2;
    let past = if seed.is_multiple_of(3) {
        None
    } else {
        Some(seed % 4)
    };
    let lk = 1 + rng.below(9);
    let dims = Dims {
        b: 1 + seed % 2,
        hq: hkv * group,
        hkv,
        lq: 1 + rng.below(8),
        lk,
        past,
        d: 1 + rng.below(12),
        dv: 1 + rng.below(12),
    };
    let lt = dims.lt();
    let mut case = Case::random_amp(rng, dims, DType::F32, layout, 2.0).with_opts(|o| {
        o.causal = seed % 2 == 1;
        o.causal_offset = seed.is_multiple_of(5).then_some(seed as i64 % 7 - 3);
        o.window_left = [-1, 0, 2][seed % 3];
        o.window_right = [-1, 1, 3, 0][seed % 4];
        o.softcap = if seed % 4 == 1 { 3.0 } else { 0.0 };
        o.scale = (seed % 3 == 2).then_some(0.4);
    });
    if past.is_none() && seed % 4 == 2 {
        let lens = (0..dims.b).map(|_| rng.below(lt + 1) as i64).collect();
        case = case.with_kv_lengths(lens);
    }
    let n = 1 + rng.below(lt);
    let mask_shape = [
        [n].to_vec(),
        vec![dims.lq, n],
        vec![dims.hq, 1, n],
        vec![dims.b, 1, dims.lq, n],
    ][seed % 4]
        .clone();
    case.mask = match seed % 3 {
        0 => None,
        1 => Some(random_bool_mask(rng, &mask_shape, 0.7)),
        _ => Some(random_additive_mask(rng, &mask_shape, DType::F32, 3.0, 0.2)),
    };
    case
}

#[test]
fn online_reference_equals_three_stage_reference() {
    let mut rng = Rng::new(90);
    let mut fully_masked_rows = 0;
    for seed in 0..120 {
        let case = online_case(&mut rng, seed);
        let three = run(&case);
        let online = reference::masked_attention_online(&case.inputs(), &case.opts).unwrap();
        // Both round an f64 result to f32 once: they may differ by one f32 ulp where the f64
        // values straddle a rounding boundary, plus ~1e-13 of f64 summation-order noise.
        assert_close(
            &format!("online out, case {seed} {:?}", case.dims),
            &online.out,
            &three.out,
            Tol {
                atol: 1e-13,
                rtol: f32::EPSILON as f64,
            },
        );
        assert_eq!(online.present_k, three.present_k);
        assert_eq!(online.present_v, three.present_v);
        assert!(online.scores.is_none() && online.logits.is_none() && online.probs.is_none());
        let dv = case.dims.dv;
        fully_masked_rows += three
            .out
            .to_f32_vec()
            .chunks(dv)
            .filter(|r| r.iter().all(|&x| x == 0.0))
            .count();
    }
    assert!(
        fully_masked_rows > 0,
        "the random cases should include fully masked rows"
    );
}

#[test]
fn online_reference_on_large_logits() {
    // Scores in the thousands: the running maximum must rescale without overflow.
    let mut rng = Rng::new(91);
    let case = Case::random_amp(
        &mut rng,
        Dims::new(1, 2, 5, 40, 8),
        DType::F32,
        Layout::Bhsd,
        40.0,
    )
    .with_opts(|o| o.scale = Some(1.0));
    let three = run(&case);
    let online = reference::masked_attention_online(&case.inputs(), &case.opts).unwrap();
    assert!(three.out.to_f32_vec().iter().all(|x| x.is_finite()));
    assert_close(
        "online large logits",
        &online.out,
        &three.out,
        Tol {
            atol: 1e-12,
            rtol: f32::EPSILON as f64,
        },
    );
}

/// The three-stage reference holds `[B, Hq, Lq, Lt]` f64 stages; where the host cannot
/// allocate them it is a typed error naming the size, not an abort of the process (as
/// `wgattn bench --path reference` at `Lq = Lt = 65536` was on a 24 GiB host). The stage
/// here, 2^45 f64, is past any 64-bit address space, so it fails whatever the overcommit.
#[test]
fn a_reference_the_host_cannot_hold_is_an_error() {
    let (lq, lt) = (1usize << 23, 1usize << 22);
    let q = f32_tensor(&[1, 1, lq, 1], &vec![0.5; lq]);
    let kv = f32_tensor(&[1, 1, lt, 1], &vec![0.25; lt]);
    let inputs = AttentionInputs::new(&q, &kv, &kv);
    let opts = AttentionOptions::default();
    match reference::masked_attention(&inputs, &opts) {
        Err(Error::HostOutOfMemory { what, requested }) => {
            assert!(what.contains("scores"), "{what}");
            assert_eq!(requested, (lq * lt * 8) as u64);
        }
        other => panic!(
            "expected HostOutOfMemory, got {:?}",
            other.map(|o| o.out.shape().to_vec())
        ),
    }
    match reference::allowed(&inputs, &opts) {
        Err(Error::HostOutOfMemory { requested, .. }) => {
            assert_eq!(requested, (lq * lt) as u64);
        }
        other => panic!("expected HostOutOfMemory, got {:?}", other.map(|a| a.len())),
    }
}
