//! The GPU staged path against the f64 CPU reference, on fresh seeded random inputs, with the
//! context's output buffers poisoned with NaN before every run (see `common::ctx`).
//!
//! Tolerances: `Tols::for_dtype` unless a test says otherwise (`tests/common/mod.rs` gives the
//! reason for each); every override carries its own one-line reason.

mod common;

use common::*;
use wgattn::{AttentionOptions, BoolMask, DType, ExecutionPath, Layout, Mask, Returns, Tensor};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// A random `bhsd` case on the staged path, every intermediate asked for.
fn case(seed: u64, dims: Dims, dtype: DType) -> Case {
    Case::random(&mut Rng::new(seed), dims, dtype, Layout::Bhsd)
        .all_returns()
        .staged()
}

/// Asserts that row `(b, h, i)` is fully masked in a GPU result: out 0, probs 0, logits
/// `-inf`, and nothing NaN.
fn assert_row_fully_masked(
    case: &Case,
    got: &wgattn::AttentionOutput,
    b: usize,
    h: usize,
    i: usize,
) {
    let d = case.dims;
    let lt = d.lt();
    let row = row_of(&d, b, h, i);
    let out_row = match case.opts.layout {
        Layout::Bhsd => row,
        Layout::Bshd => (b * d.lq + i) * d.hq + h,
    };
    let out = got.out.to_f64_vec();
    assert!(
        out[out_row * d.dv..(out_row + 1) * d.dv]
            .iter()
            .all(|&x| x == 0.0),
        "out row ({b},{h},{i}) of {d:?} is not 0: {:?}",
        &out[out_row * d.dv..(out_row + 1) * d.dv]
    );
    if let Some(p) = &got.probs {
        let p = p.to_f64_vec();
        assert!(
            p[row * lt..(row + 1) * lt].iter().all(|&x| x == 0.0),
            "probs row ({b},{h},{i}) is not 0"
        );
    }
    if let Some(l) = &got.logits {
        let l = l.to_f64_vec();
        assert!(
            l[row * lt..(row + 1) * lt]
                .iter()
                .all(|&x| x == f64::NEG_INFINITY),
            "logits row ({b},{h},{i}) is not all -inf"
        );
    }
}

fn assert_no_nan(what: &str, got: &wgattn::AttentionOutput) {
    for (name, t) in [
        ("out", Some(&got.out)),
        ("scores", got.scores.as_ref()),
        ("logits", got.logits.as_ref()),
        ("probs", got.probs.as_ref()),
    ] {
        if let Some(t) = t {
            assert!(
                t.to_f64_vec().iter().all(|x| !x.is_nan()),
                "{what}: {name} holds NaN"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Each mask alone.

#[test]
fn unmasked_in_every_dtype() {
    for (seed, dtype) in DTYPES.into_iter().enumerate() {
        case(seed as u64, Dims::new(2, 2, 7, 9, 16), dtype).check();
    }
}

#[test]
fn causal_top_left() {
    for dtype in DTYPES {
        case(10, Dims::new(2, 2, 7, 33, 8), dtype)
            .with_opts(|o| o.causal = true)
            .check();
    }
}

#[test]
fn causal_with_past() {
    for dtype in DTYPES {
        case(11, Dims::new(2, 2, 5, 4, 8).past(9), dtype)
            .with_opts(|o| o.causal = true)
            .check();
    }
}

#[test]
fn causal_with_empty_past() {
    case(12, Dims::new(1, 2, 5, 5, 8).past(0), DType::F32)
        .with_opts(|o| o.causal = true)
        .check();
}

#[test]
fn causal_offset_negative_masks_rows() {
    let c = case(13, Dims::new(1, 2, 6, 6, 8), DType::F32).with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(-3);
    });
    let (got, _) = c.check();
    for h in 0..2 {
        for i in 0..3 {
            assert_row_fully_masked(&c, &got, 0, h, i);
        }
    }
}

#[test]
fn causal_offset_bottom_right() {
    case(14, Dims::new(2, 1, 3, 11, 8), DType::F16)
        .with_opts(|o| {
            o.causal = true;
            o.causal_offset = Some(8);
        })
        .check();
}

#[test]
fn causal_offset_extremes() {
    for offset in [i64::MIN, i64::MAX, -1_000_000_000_000, 1 << 40] {
        case(15, Dims::new(1, 1, 4, 6, 4), DType::F32)
            .with_opts(|o| {
                o.causal = true;
                o.causal_offset = Some(offset);
                o.window_left = 3;
            })
            .check();
    }
}

#[test]
fn window_left_alone() {
    case(16, Dims::new(1, 2, 9, 9, 8), DType::F32)
        .with_opts(|o| o.window_left = 2)
        .check();
}

#[test]
fn window_right_alone() {
    case(17, Dims::new(1, 2, 9, 12, 8), DType::BF16)
        .with_opts(|o| o.window_right = 3)
        .check();
}

#[test]
fn window_left_and_right() {
    case(18, Dims::new(2, 1, 9, 12, 8), DType::F16)
        .with_opts(|o| {
            o.window_left = 1;
            o.window_right = 2;
        })
        .check();
}

#[test]
fn window_zero_zero_is_the_diagonal() {
    case(19, Dims::new(1, 1, 7, 7, 4), DType::F32)
        .with_opts(|o| {
            o.window_left = 0;
            o.window_right = 0;
        })
        .check();
}

#[test]
fn window_with_causal_and_past() {
    case(20, Dims::new(1, 2, 4, 4, 8).past(6), DType::F32)
        .with_opts(|o| {
            o.causal = true;
            o.window_left = 3;
            o.window_right = 1;
        })
        .check();
}

#[test]
fn huge_windows_are_unbounded() {
    case(21, Dims::new(1, 1, 5, 7, 4), DType::F32)
        .with_opts(|o| {
            o.window_left = i64::MAX;
            o.window_right = i64::MAX;
        })
        .check();
}

#[test]
fn kv_lengths_alone() {
    let c = case(22, Dims::new(3, 2, 4, 9, 8), DType::F32).with_kv_lengths(vec![9, 0, 4]);
    let (got, _) = c.check();
    for h in 0..2 {
        for i in 0..4 {
            assert_row_fully_masked(&c, &got, 1, h, i);
        }
    }
}

#[test]
fn kv_lengths_with_causal() {
    for dtype in DTYPES {
        case(23, Dims::new(3, 2, 4, 9, 8), dtype)
            .with_opts(|o| o.causal = true)
            .with_kv_lengths(vec![9, 5, 2])
            .check();
    }
}

#[test]
fn bool_mask_rank_1() {
    let mut rng = Rng::new(24);
    let m = random_bool_mask(&mut rng, &[10], 0.6);
    case(25, Dims::new(2, 2, 5, 10, 8), DType::F32)
        .with_mask(m)
        .check();
}

#[test]
fn bool_mask_rank_2() {
    let mut rng = Rng::new(26);
    for shape in [[5, 10], [1, 10]] {
        let m = random_bool_mask(&mut rng, &shape, 0.6);
        case(27, Dims::new(2, 2, 5, 10, 8), DType::F16)
            .with_mask(m)
            .check();
    }
}

#[test]
fn bool_mask_rank_3() {
    let mut rng = Rng::new(28);
    for shape in [[2, 5, 10], [2, 1, 10], [1, 5, 10]] {
        let m = random_bool_mask(&mut rng, &shape, 0.6);
        case(29, Dims::new(2, 2, 5, 10, 8), DType::F32)
            .with_mask(m)
            .check();
    }
}

#[test]
fn bool_mask_rank_4() {
    let mut rng = Rng::new(30);
    for shape in [
        [2, 4, 5, 10],
        [2, 1, 1, 10],
        [1, 4, 1, 10],
        [2, 1, 5, 10],
        [1, 1, 5, 10],
        [2, 4, 1, 10],
    ] {
        let m = random_bool_mask(&mut rng, &shape, 0.6);
        case(31, Dims::new(2, 1, 5, 10, 8).heads(4, 2), DType::BF16)
            .with_mask(m)
            .check();
    }
}

#[test]
fn additive_mask_with_neg_inf_in_each_mask_dtype() {
    let mut rng = Rng::new(32);
    for mask_dtype in DTYPES {
        for q_dtype in DTYPES {
            let m = random_additive_mask(&mut rng, &[2, 1, 6, 11], mask_dtype, 4.0, 0.25);
            case(33, Dims::new(2, 2, 6, 11, 8), q_dtype)
                .with_mask(m)
                .check();
        }
    }
}

#[test]
fn additive_mask_odd_element_offsets_in_half_dtypes() {
    // Odd strides and a short last axis land mask elements in both halves of a packed word.
    let mut rng = Rng::new(34);
    for mask_dtype in [DType::F16, DType::BF16] {
        let m = random_additive_mask(&mut rng, &[3, 7, 5], mask_dtype, 2.0, 0.1);
        case(35, Dims::new(1, 3, 7, 9, 5), DType::F32)
            .with_mask(m)
            .check();
    }
}

#[test]
fn short_last_axis_bool_and_additive() {
    let mut rng = Rng::new(36);
    for n in [1, 3, 12] {
        let b = random_bool_mask(&mut rng, &[4, n], 0.7);
        case(37, Dims::new(1, 2, 4, 13, 8), DType::F32)
            .with_mask(b)
            .check();
        let a = random_additive_mask(&mut rng, &[1, 2, 4, n], DType::F32, 2.0, 0.1);
        case(38, Dims::new(1, 2, 4, 13, 8), DType::F16)
            .with_mask(a)
            .check();
    }
}

#[test]
fn bool_mask_with_byte_offsets_not_multiple_of_four() {
    // 7 x 13 booleans per head: rows start at every byte offset within a word.
    let mut rng = Rng::new(39);
    let m = random_bool_mask(&mut rng, &[3, 7, 13], 0.5);
    case(40, Dims::new(1, 3, 7, 13, 3), DType::F32)
        .with_mask(m)
        .check();
}

// ---------------------------------------------------------------------------------------------
// Masks combined (one mask tensor at a time: boolean or additive).

#[test]
fn causal_window_kv_lengths_and_bool_mask() {
    let mut rng = Rng::new(41);
    for dtype in DTYPES {
        let m = random_bool_mask(&mut rng, &[3, 1, 6, 14], 0.8);
        case(42, Dims::new(3, 2, 6, 14, 8), dtype)
            .with_opts(|o| {
                o.causal = true;
                o.window_left = 4;
                o.window_right = 2;
            })
            .with_kv_lengths(vec![14, 9, 3])
            .with_mask(m)
            .check();
    }
}

#[test]
fn causal_window_past_and_additive_mask() {
    let mut rng = Rng::new(43);
    for dtype in DTYPES {
        let m = random_additive_mask(&mut rng, &[2, 5, 12], DType::BF16, 3.0, 0.2);
        case(44, Dims::new(2, 1, 5, 4, 8).heads(2, 1).past(8), dtype)
            .with_opts(|o| {
                o.causal = true;
                o.window_left = 5;
                o.softcap = 2.0;
            })
            .with_mask(m)
            .check();
    }
}

#[test]
fn causal_offset_window_and_short_bool_mask_bshd() {
    let mut rng = Rng::new(45);
    let m = random_bool_mask(&mut rng, &[1, 4, 1, 7], 0.7);
    Case::random(
        &mut rng,
        Dims::new(2, 1, 6, 10, 8).heads(4, 2),
        DType::F16,
        Layout::Bshd,
    )
    .all_returns()
    .staged()
    .with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(2);
        o.window_left = 3;
    })
    .with_mask(m)
    .check();
}

// ---------------------------------------------------------------------------------------------
// Heads, lengths, layouts, dtypes, KV cache.

#[test]
fn gqa_eight_query_heads_two_kv_heads() {
    for dtype in DTYPES {
        case(50, Dims::new(2, 1, 5, 9, 16).heads(8, 2), dtype)
            .with_opts(|o| o.causal = true)
            .check();
    }
}

#[test]
fn mqa_one_kv_head() {
    for dtype in DTYPES {
        case(51, Dims::new(2, 1, 5, 9, 16).heads(6, 1), dtype).check();
    }
}

#[test]
fn lq_differs_from_lk() {
    case(52, Dims::new(1, 2, 3, 40, 8), DType::F32).check();
    case(53, Dims::new(1, 2, 40, 3, 8), DType::F32).check();
}

#[test]
fn v_dim_differs_from_head_dim() {
    for dtype in DTYPES {
        case(54, Dims::new(2, 2, 5, 7, 16).v_dim(5), dtype).check();
        case(55, Dims::new(2, 2, 5, 7, 3).v_dim(24), dtype).check();
    }
}

#[test]
fn bshd_layout() {
    for dtype in DTYPES {
        let mut rng = Rng::new(56);
        Case::random(
            &mut rng,
            Dims::new(2, 1, 5, 7, 8).heads(4, 2).v_dim(6),
            dtype,
            Layout::Bshd,
        )
        .all_returns()
        .staged()
        .with_opts(|o| o.causal = true)
        .check();
    }
}

#[test]
fn bshd_layout_with_past() {
    let mut rng = Rng::new(57);
    Case::random(
        &mut rng,
        Dims::new(2, 1, 3, 4, 8).heads(4, 2).past(5),
        DType::F16,
        Layout::Bshd,
    )
    .all_returns()
    .staged()
    .with_opts(|o| o.causal = true)
    .check();
}

#[test]
fn kv_cache_with_past_returns_present() {
    for dtype in DTYPES {
        let (got, _) = case(
            58,
            Dims::new(2, 1, 1, 1, 8).heads(4, 2).v_dim(5).past(12),
            dtype,
        )
        .with_opts(|o| o.causal = true)
        .check();
        assert_eq!(got.present_k.as_ref().unwrap().shape(), &[2, 2, 13, 8]);
        assert_eq!(got.present_v.as_ref().unwrap().shape(), &[2, 2, 13, 5]);
    }
}

#[test]
fn kv_cache_with_empty_past() {
    let (got, _) = case(59, Dims::new(1, 2, 3, 3, 8).past(0), DType::F32).check();
    assert_eq!(got.present_k.as_ref().unwrap().shape(), &[1, 2, 3, 8]);
}

#[test]
fn kv_cache_with_no_new_keys() {
    // Lk = 0: every key comes from the cache.
    case(60, Dims::new(1, 2, 2, 0, 8).past(5), DType::F32)
        .with_opts(|o| o.causal = true)
        .check();
}

#[test]
fn odd_element_counts_in_half_dtypes() {
    // out_len odd: the last packed word holds one element and a zero.
    for dtype in [DType::F16, DType::BF16] {
        case(61, Dims::new(1, 1, 3, 5, 7), dtype).check();
        case(62, Dims::new(1, 3, 1, 1, 1), dtype).check();
    }
}

// ---------------------------------------------------------------------------------------------
// Intermediates.

#[test]
fn each_intermediate_alone() {
    let alone = [
        Returns {
            scores: true,
            ..Default::default()
        },
        Returns {
            logits: true,
            ..Default::default()
        },
        Returns {
            probs: true,
            ..Default::default()
        },
    ];
    for (n, returns) in alone.into_iter().enumerate() {
        for dtype in DTYPES {
            case(70 + n as u64, Dims::new(2, 2, 5, 9, 8), dtype)
                .with_opts(|o| {
                    o.returns = returns;
                    o.causal = true;
                    o.softcap = 1.5;
                })
                .check();
        }
    }
}

#[test]
fn no_intermediates() {
    let (got, _) = case(73, Dims::new(2, 2, 5, 9, 8), DType::F32)
        .with_opts(|o| o.returns = Returns::default())
        .check();
    assert!(got.scores.is_none() && got.logits.is_none() && got.probs.is_none());
    assert!(got.present_k.is_none() && got.present_v.is_none());
}

#[test]
fn intermediates_pairs() {
    for (scores, logits, probs) in [
        (true, true, false),
        (true, false, true),
        (false, true, true),
    ] {
        case(74, Dims::new(1, 2, 4, 6, 8), DType::F16)
            .with_opts(|o| {
                o.returns = Returns {
                    scores,
                    logits,
                    probs,
                };
                o.window_left = 2;
            })
            .check();
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes that do not divide the workgroup (64).

#[test]
fn odd_sizes_lq_one_lk_300() {
    case(80, Dims::new(1, 2, 1, 300, 7), DType::F32)
        .with_opts(|o| o.causal = true)
        .check();
    case(81, Dims::new(1, 2, 1, 300, 7), DType::F16).check();
}

#[test]
fn odd_sizes_lq_7_lk_129_d_33() {
    for dtype in DTYPES {
        case(82, Dims::new(1, 2, 7, 129, 33), dtype)
            .with_opts(|o| o.causal = true)
            .check();
    }
}

#[test]
fn odd_sizes_lq_33_lk_7_d_129() {
    case(83, Dims::new(1, 2, 33, 7, 129), DType::F32).check();
    case(84, Dims::new(1, 1, 33, 7, 129).v_dim(1), DType::BF16).check();
}

#[test]
fn odd_sizes_lq_129_lk_33_d_1() {
    for dtype in DTYPES {
        case(85, Dims::new(1, 1, 129, 33, 1), dtype)
            .with_opts(|o| {
                o.causal = true;
                o.causal_offset = Some(-60);
            })
            .check();
    }
}

#[test]
fn odd_sizes_lq_300_lk_1_d_300() {
    case(86, Dims::new(1, 1, 300, 1, 300).v_dim(7), DType::F32).check();
}

#[test]
fn odd_sizes_lk_65_past_64() {
    // Lt = 129 split across cache and new keys, one past the workgroup size.
    case(87, Dims::new(1, 2, 7, 65, 33).past(64), DType::F32)
        .with_opts(|o| o.causal = true)
        .check();
}

// ---------------------------------------------------------------------------------------------
// Numerics: fully masked rows, large logits, softcap, one large value.

#[test]
fn fully_masked_rows_are_zero_not_nan() {
    let d = Dims::new(2, 2, 5, 8, 8);
    let mut rng = Rng::new(90);
    // Bool mask rank 4 with (0, 1, 2) and (1, 0, 4) entirely false, the rest random.
    let mut data: Vec<bool> = (0..2 * 2 * 5 * 8).map(|_| rng.bool(0.5)).collect();
    for (b, h, i) in [(0, 1, 2), (1, 0, 4)] {
        let r = row_of(&d, b, h, i);
        data[r * 8..(r + 1) * 8].fill(false);
    }
    let m = Mask::Bool(BoolMask::new([2, 2, 5, 8], data).unwrap());
    for dtype in DTYPES {
        let c = case(91, d, dtype).with_mask(m.clone());
        let (got, _) = c.check();
        assert_row_fully_masked(&c, &got, 0, 1, 2);
        assert_row_fully_masked(&c, &got, 1, 0, 4);
        assert_no_nan("bool", &got);
    }
    // Additive mask with a row of -inf.
    let mut vals: Vec<f32> = (0..5 * 8).map(|_| rng.uniform()).collect();
    vals[3 * 8..4 * 8].fill(f32::NEG_INFINITY);
    for dtype in DTYPES {
        let m = Mask::Additive(Tensor::from_f32_as([5, 8], &vals, dtype).unwrap());
        let c = case(92, d, DType::F32).with_mask(m);
        let (got, _) = c.check();
        for (b, h) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            assert_row_fully_masked(&c, &got, b, h, 3);
        }
        assert_no_nan("additive", &got);
    }
    // Every row masked.
    let c = case(93, d, DType::F16).with_kv_lengths(vec![0, 0]);
    let (got, _) = c.check();
    assert!(got.out.to_f32_vec().iter().all(|&x| x == 0.0));
    assert_no_nan("kv_len 0", &got);
}

#[test]
fn fully_masked_row_is_zero_even_with_non_finite_values() {
    // Batch entry 1 has key length 0; its values hold NaN and inf. Its rows are 0 (decided on
    // the bias), not 0·NaN.
    for dtype in DTYPES {
        let mut c = case(95, Dims::new(2, 2, 3, 4, 4), dtype).with_kv_lengths(vec![4, 0]);
        let mut v = c.v.to_f32_vec();
        let n = v.len();
        v[n / 2] = f32::NAN;
        v[n / 2 + 5] = f32::INFINITY;
        v[n - 1] = f32::NEG_INFINITY;
        c.v = Tensor::from_f32_as(c.v.shape().to_vec(), &v, dtype).unwrap();
        let (got, _) = c.check();
        for h in 0..2 {
            for i in 0..3 {
                assert_row_fully_masked(&c, &got, 1, h, i);
            }
        }
        assert_no_nan("non-finite v", &got);
    }
}

/// NaN and infinity at allowed positions propagate as IEEE arithmetic does in the reference,
/// on both paths: a NaN in a query row makes that row NaN; an infinite key makes its scores
/// infinite (softmax then gives NaN or a one-hot row, as in the reference); an infinite value
/// spreads to every row that gives it weight. Non-finite values are compared in place. With a
/// softcap too: `c * tanh(NaN / c)` is NaN (llvmpipe's GL `tanh` gave -1 for NaN, which turned
/// a NaN score into `-c`).
#[test]
fn non_finite_inputs_at_allowed_positions_propagate_like_the_reference() {
    // Lq = 5 takes the fused prefill kernel, Lq = 1 the decode kernel (keys split, combined).
    let runs = DTYPES
        .into_iter()
        .flat_map(|d| [(d, 5), (d, 1)])
        .flat_map(|(d, lq)| [(d, lq, 0.0), (d, lq, 5.0)]);
    for (dtype, lq, softcap) in runs {
        for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
            let mut c = case(96, Dims::new(1, 4, lq, 9, 8), dtype)
                .path(path)
                .with_opts(|o| o.softcap = softcap);
            if path == ExecutionPath::Fused {
                c = c.with_opts(|o| o.returns = Returns::default());
            }
            let set = |t: &Tensor, at: &[(usize, f32)]| {
                let mut x = t.to_f32_vec();
                for &(i, val) in at {
                    x[i] = val;
                }
                Tensor::from_f32_as(t.shape().to_vec(), &x, dtype).unwrap()
            };
            // Element (head, key, channel) of k or v [1, 4, 9, 8].
            let kv = |h: usize, j: usize, d: usize| (h * 9 + j) * 8 + d;
            // Head 0: a NaN in query row 0. Head 1: -inf in one value. Head 2: +inf in one
            // key. Head 3: NaN in one key, which makes every row of the head NaN (the row's
            // sum is NaN) though its maximum may pass over it.
            c.q = set(&c.q, &[(3, f32::NAN)]);
            c.v = set(&c.v, &[(kv(1, 4, 1), f32::NEG_INFINITY)]);
            c.k = set(
                &c.k,
                &[(kv(2, 2, 1), f32::INFINITY), (kv(3, 5, 2), f32::NAN)],
            );
            let (got, _) = c.check();
            let out = got.out.to_f32_vec();
            let nan = |h: usize| out[h * lq * 8..(h + 1) * lq * 8].iter().all(|x| x.is_nan());
            assert!(
                nan(3),
                "{dtype} {path:?} lq {lq} softcap {softcap}: a NaN key makes its head NaN"
            );
        }
    }
}

/// NaN in an additive mask at an allowed position makes its row NaN (`logits = s + bias`, as
/// in the reference, ONNX and PyTorch); a NaN where another mask disallows the key is not
/// seen (-inf is selected there). Checked on every kernel that reads a mask: staged, fused
/// prefill (Lq = 5) and the decode kernel in both layouts, one query row per workgroup
/// (Lq = 1) and three (Lq = 3).
#[test]
fn nan_in_an_additive_mask_makes_its_row_nan_where_the_key_is_allowed() {
    let (hq, lk) = (3, 9);
    for (dtype, lq) in DTYPES.into_iter().flat_map(|d| [(d, 5), (d, 3), (d, 1)]) {
        // Mask [Hq, Lq, Lk]: head 0 has NaN at key 2 of every row (allowed); head 1 at key
        // 7, past the key length 6 (disallowed); head 2 none.
        let mut data = vec![0.25f32; hq * lq * lk];
        for i in 0..lq {
            data[i * lk + 2] = f32::NAN;
            data[(lq + i) * lk + 7] = f32::NAN;
            data[(2 * lq + i) * lk + 4] = -1.5;
        }
        let mask = Mask::Additive(Tensor::from_f32_as([hq, lq, lk], &data, dtype).unwrap());
        for (path, cx) in [
            (ExecutionPath::Staged, ctx()),
            (ExecutionPath::Fused, ctx()),
            (ExecutionPath::Fused, subgroup_keys_ctx()),
        ] {
            let mut c = case(98, Dims::new(1, hq, lq, lk, 8), dtype)
                .path(path)
                .with_mask(mask.clone())
                .with_kv_lengths(vec![6]);
            if path == ExecutionPath::Fused {
                c = c.with_opts(|o| o.returns = Returns::default());
            }
            let got = wgattn::masked_attention(cx, &c.inputs(), &c.opts).unwrap();
            let want = c.reference();
            compare(
                &format!("{dtype} {path:?} lq {lq}"),
                &got,
                &want,
                &c.opts.returns,
                Tols::for_dtype(dtype),
            );
            let out = got.out.to_f32_vec();
            let row = |h: usize| &out[h * lq * 8..(h + 1) * lq * 8];
            assert!(
                row(0).iter().all(|x| x.is_nan()),
                "{dtype} {path:?} lq {lq}: a NaN bias at an allowed key makes the row NaN: {:?}",
                row(0)
            );
            assert!(
                row(1).iter().chain(row(2)).all(|x| x.is_finite()),
                "{dtype} {path:?} lq {lq}: a NaN bias at a disallowed key is not seen"
            );
        }
        // What the mask allows, on the CPU and the GPU: the NaN key of head 0 (it takes
        // part), not head 1's (past the key length).
        let c = case(98, Dims::new(1, hq, lq, lk, 8), dtype)
            .with_mask(mask.clone())
            .with_kv_lengths(vec![6]);
        let cpu = wgattn::reference::allowed(&c.inputs(), &c.opts).unwrap();
        let gpu = wgattn::allowed_positions(ctx(), &c.inputs(), &c.opts).unwrap();
        assert_eq!(cpu, gpu, "{dtype} lq {lq}");
        assert!(cpu[2] && !cpu[lq * lk + 7], "{dtype} lq {lq}");
    }
}

/// A whole split of the decode kernel's keys with NaN in `k` (every score of the split NaN),
/// the other splits finite: the merged row is NaN, as in the reference, not the finite
/// merge of the other splits.
#[test]
fn nan_across_a_whole_key_split_makes_the_row_nan() {
    let mut c = case(97, Dims::new(1, 1, 1, 1100, 4), DType::F32)
        .path(ExecutionPath::Fused)
        .with_opts(|o| o.returns = Returns::default());
    let mut k = c.k.to_f32_vec();
    for j in 0..600 {
        k[j * 4] = f32::NAN;
    }
    c.k = Tensor::from_f32_as(c.k.shape().to_vec(), &k, DType::F32).unwrap();
    let (got, _) = c.check();
    assert!(got.out.to_f32_vec().iter().all(|x| x.is_nan()));
}

#[test]
fn fully_masked_rows_in_bshd_with_poisoned_output() {
    let mut rng = Rng::new(94);
    let c = Case::random(
        &mut rng,
        Dims::new(1, 1, 6, 6, 8).heads(3, 1),
        DType::BF16,
        Layout::Bshd,
    )
    .all_returns()
    .staged()
    .with_opts(|o| {
        o.causal = true;
        o.causal_offset = Some(-2);
    });
    let (got, _) = c.check();
    for h in 0..3 {
        for i in 0..2 {
            assert_row_fully_masked(&c, &got, 0, h, i);
        }
    }
}

#[test]
fn large_logits_do_not_overflow() {
    // Scale 1, q and k uniform in ±50, D = 8: scores in the thousands (exp would overflow
    // without subtracting the row maximum).
    let mut rng = Rng::new(95);
    let d = 8;
    let c = Case::random_amp(
        &mut rng,
        Dims::new(1, 2, 9, 37, d),
        DType::F32,
        Layout::Bhsd,
        50.0,
    )
    .all_returns()
    .staged()
    .with_opts(|o| {
        o.scale = Some(1.0);
        o.causal = true;
        o.causal_offset = Some(20);
    });
    // The f32 dot product of D terms, each up to 2500, is off by up to ~D·ulp(Σ|q·k|) ≈
    // 8·2^-23·2e4 ≈ 2e-2 absolute, even where the terms cancel to a small score; probs move
    // by that much relative (d p = p·(d l - Σ p d l)), and out, an average of values in
    // [-1, 1], by as much absolute.
    let logit_err = d as f64 * f32::EPSILON as f64 * 2e4;
    let tols = Tols {
        scores: Tol {
            atol: logit_err,
            rtol: Tol::for_dtype(DType::F32).rtol,
        },
        probs: Tol {
            atol: 2.0 * logit_err,
            rtol: 2.0 * logit_err,
        },
        out: Tol {
            atol: 2.0 * logit_err,
            rtol: 0.0,
        },
    };
    let (got, want) = c.check_with(tols);
    assert_no_nan("large logits", &got);
    let max_score = want
        .scores
        .as_ref()
        .unwrap()
        .to_f64_vec()
        .iter()
        .fold(0f64, |m, x| m.max(x.abs()));
    assert!(
        max_score > 1000.0,
        "scores should be large, max |s| = {max_score}"
    );
}

#[test]
fn large_integer_logits_are_exact() {
    // Integer q, k in ±50 with D = 4 and scale 1: every score is an exact integer in f32 too,
    // so only exp and the division round: f32's tolerance holds unscaled.
    let mut rng = Rng::new(96);
    let dims = Dims::new(1, 2, 7, 40, 4);
    let mut c = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd)
        .all_returns()
        .staged();
    let ints = |rng: &mut Rng, n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let x = (rng.below(100) as f32) - 50.0;
                if x == 0.0 {
                    7.0
                } else {
                    x
                }
            })
            .collect()
    };
    c.q = Tensor::from_f32(c.q.shape().to_vec(), ints(&mut rng, c.q.len())).unwrap();
    c.k = Tensor::from_f32(c.k.shape().to_vec(), ints(&mut rng, c.k.len())).unwrap();
    let c = c.with_opts(|o| {
        o.scale = Some(1.0);
        o.window_left = 9;
    });
    let (got, _) = c.check();
    assert_no_nan("integer logits", &got);
}

#[test]
fn softcap_bounds_large_scores() {
    for dtype in DTYPES {
        let mut rng = Rng::new(97);
        Case::random_amp(
            &mut rng,
            Dims::new(1, 2, 6, 20, 8),
            dtype,
            Layout::Bhsd,
            4.0,
        )
        .all_returns()
        .staged()
        .with_opts(|o| {
            o.scale = Some(1.0);
            o.softcap = 5.0;
            o.causal = true;
        })
        .check();
    }
}

/// A cap far above the scores is `c * tanh(s / c)` to f32 accuracy, on every kernel: the
/// drivers' `tanh` cancels near 0 to an absolute error of about 1.2e-7, which the cap
/// multiplied (cap 1e4: out off by 2.4e-4; cap 1e20 and above: the scores off by 1e12 and
/// `out` by up to 1), before the kernels computed it themselves.
#[test]
fn a_cap_far_above_the_scores_is_exact_to_f32() {
    let mut rng = Rng::new(99);
    for cap in [1e4, 1e20, f32::MAX] {
        for (lq, d) in [(7, 32), (1, 64), (3, 30)] {
            check_capped(&mut rng, lq, d, |o| o.softcap = cap);
        }
    }
}

/// An f32 case of `lq` queries against 90 keys of head dim `d` (q and k up to 3) with the
/// options `opts` sets, held to the reference on the default path and staged with every
/// intermediate.
fn check_capped(rng: &mut Rng, lq: usize, d: usize, opts: impl FnOnce(&mut AttentionOptions)) {
    let case = Case::random_amp(
        rng,
        Dims::new(1, 2, lq, 90, d),
        DType::F32,
        Layout::Bhsd,
        3.0,
    )
    .with_opts(opts);
    case.clone().check();
    case.all_returns().staged().check();
}

/// A cap below the smallest normal f32 caps every score to within 1.2e-38 of 0 (the engine
/// passes such caps to the kernels as `f32::MIN_POSITIVE`, which a GPU that flushes subnormals
/// still reads as a cap): the probabilities are uniform over the allowed keys, and a score
/// over the cap by a factor past f32's range (`s / c` infinite) is capped too.
#[test]
fn a_subnormal_cap_caps_every_score() {
    let mut rng = Rng::new(97);
    for cap in [f32::from_bits(1), 1e-40, f32::MIN_POSITIVE] {
        for (lq, d) in [(7, 32), (1, 64)] {
            check_capped(&mut rng, lq, d, |o| {
                o.softcap = cap;
                o.causal = true;
            });
        }
    }
}

#[test]
fn softcap_with_additive_mask() {
    let mut rng = Rng::new(98);
    let m = random_additive_mask(&mut rng, &[6, 20], DType::F32, 10.0, 0.2);
    Case::random_amp(
        &mut rng,
        Dims::new(1, 2, 6, 20, 8),
        DType::F32,
        Layout::Bhsd,
        3.0,
    )
    .all_returns()
    .staged()
    .with_opts(|o| o.softcap = 0.5)
    .with_mask(m)
    .check();
}

#[test]
fn row_of_zeros_with_one_large_value() {
    // k is 0 except key 5, which is q's sign pattern times 100: with scale 1 the scores are 0
    // except one in the hundreds, so probs are one-hot and out is v's row 5.
    for dtype in DTYPES {
        let mut rng = Rng::new(99);
        let (lk, d) = (11, 8);
        let mut c = Case::random(&mut rng, Dims::new(1, 1, 1, lk, d), dtype, Layout::Bhsd)
            .all_returns()
            .staged()
            .with_opts(|o| o.scale = Some(1.0));
        let q = c.q.to_f32_vec();
        let mut k = vec![0f32; lk * d];
        for (x, &qv) in k[5 * d..6 * d].iter_mut().zip(&q) {
            *x = 100.0 * qv.signum();
        }
        c.k = Tensor::from_f32_as([1, 1, lk, d], &k, dtype).unwrap();
        let (got, _) = c.check();
        let probs = got.probs.unwrap().to_f32_vec();
        assert_eq!(probs[5], 1.0, "{dtype}: {probs:?}");
        assert_eq!(
            got.out.to_le_bytes(),
            Tensor::from_f32_as([1, 1, 1, d], &c.v.to_f32_vec()[5 * d..6 * d], dtype)
                .unwrap()
                .to_le_bytes()
        );
        // The same row negated: the large score is now -hundreds and gets weight 0.
        let neg: Vec<f32> = k.iter().map(|x| -x).collect();
        c.k = Tensor::from_f32_as([1, 1, lk, d], &neg, dtype).unwrap();
        let (got, _) = c.check();
        assert_eq!(got.probs.unwrap().to_f32_vec()[5], 0.0);
    }
}

#[test]
fn half_precision_outputs_within_one_ulp() {
    // Stricter than Tols::for_dtype: the GPU's f32 result is within ~1e-6 of the f64 one, so
    // rounding both once to the dtype can differ by at most one ulp of the dtype (2^-10 for
    // f16, 2^-7 for bf16 relative; the f16 subnormal spacing 2^-24 absolute).
    for (dtype, rtol, atol) in [
        (DType::F16, 2f64.powi(-10), 2f64.powi(-24)),
        (DType::BF16, 2f64.powi(-7), 1e-30),
    ] {
        let tol = Tol { atol, rtol };
        let tols = Tols {
            out: tol,
            scores: tol,
            probs: tol,
        };
        case(100, Dims::new(2, 2, 9, 17, 16), dtype)
            .with_opts(|o| o.causal = true)
            .check_with(tols);
    }
}

/// `t` with the same values in f32 (exact for f16 and bf16).
fn widened(t: &Tensor) -> Tensor {
    Tensor::from_f32(t.shape().to_vec(), t.to_f32_vec()).unwrap()
}

/// Each element of `got` (a half dtype) is the nearest value of its dtype to `wide` (the f64
/// reference rounded to f32), ties to even, unless `wide` is so close to the midpoint of two
/// neighbours that the GPU's f32 arithmetic may land on either side.
fn assert_rounded_to_nearest(what: &str, got: &Tensor, wide: &Tensor, dtype: DType) {
    let mut bad = Vec::new();
    for (i, (g, w)) in got
        .to_f64_vec()
        .into_iter()
        .zip(wide.to_f64_vec())
        .enumerate()
    {
        let nearest = dtype.round_f64(w);
        // f32 arithmetic over a few dozen terms: ~1e-6 relative, plus ~1e-7 absolute where
        // terms cancel.
        let near_tie = ((g - w).abs() - (nearest - w).abs()).abs() <= 1e-5 * w.abs() + 1e-7;
        if g != nearest && !near_tie {
            bad.push((i, g, nearest, w));
        }
    }
    assert!(
        bad.is_empty(),
        "{what} {dtype}: {} elements not rounded to nearest; first (index, got, nearest, f32 \
         reference): {:?}",
        bad.len(),
        bad[0]
    );
}

#[test]
fn half_precision_outputs_round_to_nearest_even() {
    // Stricter than one ulp: a kernel that truncates would still be within one ulp.
    for dtype in [DType::F16, DType::BF16] {
        let half =
            case(102, Dims::new(2, 2, 9, 17, 16).past(3), dtype).with_opts(|o| o.causal = true);
        let mut wide = half.clone();
        wide.q = widened(&half.q);
        wide.k = widened(&half.k);
        wide.v = widened(&half.v);
        wide.past = half.past.as_ref().map(|(k, v)| (widened(k), widened(v)));
        let (got, want) = (half.gpu(), wide.reference());
        assert_rounded_to_nearest("out", &got.out, &want.out, dtype);
        for (name, g, w) in [
            ("scores", &got.scores, &want.scores),
            ("logits", &got.logits, &want.logits),
            ("probs", &got.probs, &want.probs),
        ] {
            assert_rounded_to_nearest(name, g.as_ref().unwrap(), w.as_ref().unwrap(), dtype);
        }
    }
}

#[test]
fn f16_subnormal_inputs_and_outputs() {
    // v in ±3e-5 (below f16's smallest normal, 6.1e-5) and q in ±2e-4: the kernels must decode
    // subnormal inputs and round subnormal outputs, to one f16 ulp (2^-24 there).
    let mut rng = Rng::new(101);
    let dims = Dims::new(1, 2, 5, 13, 8);
    let mut c = Case::random(&mut rng, dims, DType::F16, Layout::Bhsd)
        .all_returns()
        .staged();
    c.v = random(&mut rng, c.v.shape(), DType::F16, 3e-5);
    c.q = random(&mut rng, c.q.shape(), DType::F16, 2e-4);
    let tol = Tol {
        atol: 2f64.powi(-24),
        rtol: 2f64.powi(-10),
    };
    let (got, _) = c.check_with(Tols {
        out: tol,
        scores: tol,
        probs: tol,
    });
    let out = got.out.to_f64_vec();
    assert!(
        out.iter().any(|&x| x != 0.0 && x.abs() < 6.1e-5),
        "expected subnormal outputs"
    );
}

// ---------------------------------------------------------------------------------------------
// Grid size, determinism, async, threads.

#[test]
fn many_workgroups() {
    // B·Hq·Lq = 4096 rows (4096 workgroups in apply_mask and softmax) and 4096·80 scores
    // (5120 workgroups in qk_scores).
    case(110, Dims::new(2, 1, 512, 80, 16).heads(4, 2), DType::F32)
        .with_opts(|o| {
            o.causal = true;
            o.causal_offset = Some(40);
            o.window_left = 50;
        })
        .check();
}

#[test]
fn two_dimensional_grid_for_many_rows() {
    // 66,000 rows is more than the 65,535 workgroups a dimension allows: apply_mask and
    // softmax need the second grid dimension.
    case(111, Dims::new(2, 3, 11_000, 2, 1).v_dim(3), DType::F16)
        .with_opts(|o| o.causal = true)
        .check();
}

#[test]
fn two_dimensional_grid_for_many_scores() {
    // 4,608 rows x 1,000 keys = 72,000 workgroups of 64 scores in qk_scores.
    case(112, Dims::new(1, 2, 2_304, 1_000, 1), DType::F32)
        .with_opts(|o| o.returns = Returns::default())
        .with_kv_lengths(vec![990])
        .check();
}

#[test]
fn same_inputs_twice_give_identical_bits() {
    let mut rng = Rng::new(120);
    let m = random_additive_mask(&mut rng, &[2, 1, 7, 15], DType::F16, 2.0, 0.1);
    for dtype in DTYPES {
        let c = case(121, Dims::new(2, 1, 7, 10, 12).heads(4, 2).past(5), dtype)
            .with_opts(|o| {
                o.causal = true;
                o.softcap = 3.0;
            })
            .with_mask(m.clone());
        let a = c.gpu();
        // A different call in between, so that pooled buffers are reused with other contents.
        case(122, Dims::new(1, 3, 9, 17, 5), dtype).gpu();
        let b = c.gpu();
        assert_same_bits(&format!("{dtype}"), &a, &b);
    }
}

#[test]
fn async_api_equals_sync_api() {
    for dtype in DTYPES {
        let c = case(123, Dims::new(2, 1, 6, 9, 8).heads(2, 1).past(3), dtype)
            .with_opts(|o| o.causal = true);
        let sync = c.gpu();
        let asynchronous =
            pollster::block_on(wgattn::masked_attention_async(ctx(), &c.inputs(), &c.opts))
                .unwrap();
        assert_same_bits(&format!("async {dtype}"), &asynchronous, &sync);
        compare(
            "async",
            &asynchronous,
            &c.reference(),
            &c.opts.returns,
            Tols::for_dtype(dtype),
        );
    }
}

#[test]
fn shared_context_across_four_threads() {
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng::new(200 + t);
                for n in 0..3u64 {
                    let dtype = DTYPES[((t + n) % 3) as usize];
                    let dims =
                        Dims::new(1 + (t % 2) as usize, 2, 3 + n as usize, 5 + t as usize, 8)
                            .past(n as usize);
                    let m = random_bool_mask(&mut rng, &[dims.lq, dims.lt()], 0.7);
                    Case::random(&mut rng, dims, dtype, Layout::Bhsd)
                        .all_returns()
                        .staged()
                        .with_opts(|o| o.causal = n % 2 == 0)
                        .with_mask(m)
                        .check();
                }
            });
        }
    });
}

#[test]
fn async_calls_interleaved_across_threads() {
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let c = case(
                    300 + t,
                    Dims::new(1, 2, 4 + t as usize, 6, 8),
                    DTYPES[t as usize % 3],
                );
                let got =
                    pollster::block_on(wgattn::masked_attention_async(ctx(), &c.inputs(), &c.opts))
                        .unwrap();
                compare(
                    "async thread",
                    &got,
                    &c.reference(),
                    &c.opts.returns,
                    Tols::for_dtype(c.dtype()),
                );
            });
        }
    });
}
