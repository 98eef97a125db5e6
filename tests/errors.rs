//! Every invalid request gets its specific typed error, the same from the GPU (sync and async,
//! each path: auto, staged, fused), the three-stage reference and the online reference, and equal to what validation
//! alone (`AttentionProblem::new`) says, so it is reported before anything is dispatched. After
//! each error the shared context still runs a valid call correctly.

mod common;

use common::*;
use wgattn::{
    reference, AttentionInputs, AttentionOptions, AttentionProblem, BoolMask, DType, Error,
    ExecutionPath, Layout, Mask, Tensor,
};

fn t(rng: &mut Rng, shape: &[usize]) -> Tensor {
    random(rng, shape, DType::F32, 1.0)
}

fn t_as(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    random(rng, shape, dtype, 1.0)
}

/// A valid call on the shared context, compared with the reference.
fn context_still_works() {
    let mut rng = Rng::new(999);
    Case::random(&mut rng, Dims::new(1, 2, 3, 4, 8), DType::F32, Layout::Bhsd)
        .all_returns()
        .with_opts(|o| o.causal = true)
        .check();
}

/// The error every path returns for this request (they must all agree, and agree with
/// validation alone); then checks the context still works.
fn error_of(inputs: &AttentionInputs<'_>, opts: &AttentionOptions) -> Error {
    let validation = AttentionProblem::new(inputs, opts).expect_err("validation accepted it");
    for path in [
        ExecutionPath::Auto,
        ExecutionPath::Staged,
        ExecutionPath::Fused,
    ] {
        let opts = AttentionOptions {
            path,
            ..opts.clone()
        };
        let gpu = wgattn::masked_attention(ctx(), inputs, &opts).expect_err("GPU accepted it");
        assert_eq!(
            gpu, validation,
            "GPU error on {path:?} differs from validation"
        );
        let gpu_async = pollster::block_on(wgattn::masked_attention_async(ctx(), inputs, &opts))
            .expect_err("async GPU accepted it");
        assert_eq!(gpu_async, validation, "async GPU error on {path:?} differs");
    }
    let cpu = reference::masked_attention(inputs, opts).expect_err("reference accepted it");
    let online =
        reference::masked_attention_online(inputs, opts).expect_err("online reference accepted it");
    assert_eq!(cpu, validation, "reference error differs from validation");
    assert_eq!(
        online, validation,
        "online reference error differs from validation"
    );
    context_still_works();
    validation
}

fn default_error(inputs: &AttentionInputs<'_>) -> Error {
    error_of(inputs, &AttentionOptions::default())
}

/// Asserts the message names each of `parts`.
fn mentions(e: &Error, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes.

#[test]
fn k_head_dim_differs_from_q() {
    let mut rng = Rng::new(1);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 6]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    match &e {
        Error::ShapeMismatch {
            what,
            expected,
            got,
        } => {
            assert_eq!(what, "k");
            assert_eq!(expected, "[1, 2, 4, 8]");
            assert_eq!(got, "[1, 2, 4, 6]");
        }
        _ => panic!("expected ShapeMismatch, got {e:?}"),
    }
    mentions(&e, &["k", "[1, 2, 4, 8]", "[1, 2, 4, 6]"]);
}

#[test]
fn v_length_differs_from_k() {
    let mut rng = Rng::new(2);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 5, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    assert!(
        matches!(&e, Error::ShapeMismatch { what, .. } if what == "v"),
        "got {e:?}"
    );
    mentions(&e, &["v", "[1, 2, 4, 8]", "[1, 2, 5, 8]"]);
}

#[test]
fn batch_differs() {
    let mut rng = Rng::new(3);
    let (q, k, v) = (
        t(&mut rng, &[2, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    assert!(
        matches!(&e, Error::ShapeMismatch { what, .. } if what == "k"),
        "got {e:?}"
    );
    mentions(&e, &["[2, 2, 4, 8]", "[1, 2, 4, 8]"]);
}

#[test]
fn v_heads_differ_from_k() {
    let mut rng = Rng::new(4);
    let (q, k, v) = (
        t(&mut rng, &[1, 4, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 4, 4, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    assert!(
        matches!(&e, Error::ShapeMismatch { what, .. } if what == "v"),
        "got {e:?}"
    );
}

#[test]
fn shape_mismatch_in_bshd_names_bshd_shapes() {
    let mut rng = Rng::new(5);
    // bshd: q [B, Lq, Hq, D] = [1, 3, 2, 8]; k [1, 4, 2, 6] has the wrong D.
    let (q, k, v) = (
        t(&mut rng, &[1, 3, 2, 8]),
        t(&mut rng, &[1, 4, 2, 6]),
        t(&mut rng, &[1, 4, 2, 8]),
    );
    let opts = AttentionOptions {
        layout: Layout::Bshd,
        ..Default::default()
    };
    let e = error_of(&AttentionInputs::new(&q, &k, &v), &opts);
    match &e {
        Error::ShapeMismatch { expected, got, .. } => {
            assert_eq!(expected, "[1, 4, 2, 8]");
            assert_eq!(got, "[1, 4, 2, 6]");
        }
        _ => panic!("expected ShapeMismatch, got {e:?}"),
    }
}

#[test]
fn query_heads_not_multiple_of_kv_heads() {
    let mut rng = Rng::new(6);
    let (q, k, v) = (
        t(&mut rng, &[1, 6, 3, 8]),
        t(&mut rng, &[1, 4, 4, 8]),
        t(&mut rng, &[1, 4, 4, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    assert_eq!(
        e,
        Error::HeadsNotDivisible {
            q_heads: 6,
            kv_heads: 4
        }
    );
    mentions(&e, &["6", "4"]);
}

#[test]
fn rank_not_four() {
    let mut rng = Rng::new(7);
    let q3 = t(&mut rng, &[2, 3, 8]);
    let q5 = t(&mut rng, &[1, 1, 2, 3, 8]);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let k3 = t(&mut rng, &[2, 4, 8]);
    let v2 = t(&mut rng, &[4, 8]);
    for (inputs, what, rank, shape) in [
        (AttentionInputs::new(&q3, &k, &v), "q", 3, vec![2, 3, 8]),
        (
            AttentionInputs::new(&q5, &k, &v),
            "q",
            5,
            vec![1, 1, 2, 3, 8],
        ),
        (AttentionInputs::new(&q, &k3, &v), "k", 3, vec![2, 4, 8]),
        (AttentionInputs::new(&q, &k, &v2), "v", 2, vec![4, 8]),
    ] {
        let e = default_error(&inputs);
        match &e {
            Error::RankMismatch {
                what: w,
                expected,
                got,
                shape: s,
            } => {
                assert_eq!((*w, *expected, *got), (what, "4", rank));
                assert_eq!(s, &shape);
            }
            _ => panic!("expected RankMismatch, got {e:?}"),
        }
        mentions(&e, &[what, &format!("{shape:?}")]);
    }
}

#[test]
fn k_or_v_dtype_differs_from_q() {
    let mut rng = Rng::new(8);
    let q = t_as(&mut rng, &[1, 2, 3, 8], DType::F16);
    let k16 = t_as(&mut rng, &[1, 2, 4, 8], DType::F16);
    let k32 = t_as(&mut rng, &[1, 2, 4, 8], DType::F32);
    let vb = t_as(&mut rng, &[1, 2, 4, 8], DType::BF16);
    let v16 = t_as(&mut rng, &[1, 2, 4, 8], DType::F16);
    let e = default_error(&AttentionInputs::new(&q, &k32, &v16));
    assert_eq!(
        e,
        Error::DTypeMismatch {
            what: "k",
            expected: DType::F16,
            got: DType::F32
        }
    );
    mentions(&e, &["k", "f16", "f32"]);
    let e = default_error(&AttentionInputs::new(&q, &k16, &vb));
    assert_eq!(
        e,
        Error::DTypeMismatch {
            what: "v",
            expected: DType::F16,
            got: DType::BF16
        }
    );
}

// ---------------------------------------------------------------------------------------------
// KV cache and key lengths.

#[test]
fn past_k_without_past_v_and_the_reverse() {
    let mut rng = Rng::new(9);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let pk = t(&mut rng, &[1, 2, 5, 8]);
    let mut inputs = AttentionInputs::new(&q, &k, &v);
    inputs.past_k = Some(&pk);
    let e = default_error(&inputs);
    assert!(matches!(e, Error::InvalidCombination(_)), "got {e:?}");
    mentions(&e, &["past_k", "past_v"]);
    let mut inputs = AttentionInputs::new(&q, &k, &v);
    inputs.past_v = Some(&pk);
    let e = default_error(&inputs);
    assert!(matches!(e, Error::InvalidCombination(_)), "got {e:?}");
}

#[test]
fn past_shapes_wrong() {
    let mut rng = Rng::new(10);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 6]),
    );
    let pk = t(&mut rng, &[1, 2, 5, 8]);
    let pv = t(&mut rng, &[1, 2, 5, 6]);
    let pk_bad_d = t(&mut rng, &[1, 2, 5, 7]);
    let pk_bad_heads = t(&mut rng, &[1, 1, 5, 8]);
    let pv_bad_len = t(&mut rng, &[1, 2, 4, 6]);
    let pv_bad_dv = t(&mut rng, &[1, 2, 5, 8]);
    let pk_rank3 = t(&mut rng, &[2, 5, 8]);
    for (past_k, past_v, what, expected, got) in [
        (&pk_bad_d, &pv, "past_k", "[1, 2, 5, 8]", "[1, 2, 5, 7]"),
        (&pk_bad_heads, &pv, "past_k", "[1, 2, 5, 8]", "[1, 1, 5, 8]"),
        // P differs between past_k and past_v: past_v is checked against past_k's P.
        (&pk, &pv_bad_len, "past_v", "[1, 2, 5, 6]", "[1, 2, 4, 6]"),
        (&pk, &pv_bad_dv, "past_v", "[1, 2, 5, 6]", "[1, 2, 5, 8]"),
    ] {
        let e = default_error(&AttentionInputs::new(&q, &k, &v).with_past(past_k, past_v));
        match &e {
            Error::ShapeMismatch {
                what: w,
                expected: ex,
                got: g,
            } => {
                assert_eq!(w, what, "{e}");
                assert_eq!((ex.as_str(), g.as_str()), (expected, got), "{e}");
            }
            _ => panic!("expected ShapeMismatch for {what}, got {e:?}"),
        }
    }
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_past(&pk_rank3, &pv));
    assert!(
        matches!(
            e,
            Error::RankMismatch {
                what: "past_k",
                got: 3,
                ..
            }
        ),
        "got {e:?}"
    );
}

#[test]
fn past_dtype_differs_from_q() {
    let mut rng = Rng::new(11);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let pk = t_as(&mut rng, &[1, 2, 5, 8], DType::F16);
    let pv = t(&mut rng, &[1, 2, 5, 8]);
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_past(&pk, &pv));
    assert_eq!(
        e,
        Error::DTypeMismatch {
            what: "past_k",
            expected: DType::F32,
            got: DType::F16
        }
    );
}

#[test]
fn kv_lengths_with_a_past_cache() {
    let mut rng = Rng::new(12);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let (pk, pv) = (t(&mut rng, &[1, 2, 5, 8]), t(&mut rng, &[1, 2, 5, 8]));
    let lens = [3i64];
    let e = default_error(
        &AttentionInputs::new(&q, &k, &v)
            .with_past(&pk, &pv)
            .with_kv_lengths(&lens),
    );
    assert!(matches!(e, Error::InvalidCombination(_)), "got {e:?}");
    mentions(&e, &["kv_lengths", "past"]);
}

#[test]
fn kv_lengths_wrong_length() {
    let mut rng = Rng::new(13);
    let (q, k, v) = (
        t(&mut rng, &[2, 2, 3, 8]),
        t(&mut rng, &[2, 2, 4, 8]),
        t(&mut rng, &[2, 2, 4, 8]),
    );
    for lens in [&[3i64][..], &[1, 2, 3][..], &[][..]] {
        let e = default_error(&AttentionInputs::new(&q, &k, &v).with_kv_lengths(lens));
        match &e {
            Error::ShapeMismatch {
                what,
                expected,
                got,
            } => {
                assert_eq!(what, "kv_lengths");
                assert_eq!(expected, "[2]");
                assert_eq!(got, &format!("[{}]", lens.len()));
            }
            _ => panic!("expected ShapeMismatch, got {e:?}"),
        }
    }
}

#[test]
fn kv_length_negative_or_past_lt() {
    let mut rng = Rng::new(14);
    let (q, k, v) = (
        t(&mut rng, &[2, 2, 3, 8]),
        t(&mut rng, &[2, 2, 4, 8]),
        t(&mut rng, &[2, 2, 4, 8]),
    );
    for (lens, batch, value) in [
        ([4i64, -1], 1, -1),
        ([5, 2], 0, 5),
        ([i64::MIN, 0], 0, i64::MIN),
        ([0, i64::MAX], 1, i64::MAX),
    ] {
        let e = default_error(&AttentionInputs::new(&q, &k, &v).with_kv_lengths(&lens));
        assert_eq!(
            e,
            Error::KvLengthOutOfRange {
                batch,
                value,
                total_len: 4
            }
        );
        mentions(&e, &[&value.to_string(), "0..=4"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Masks.

fn bool_mask(shape: &[usize]) -> Mask {
    let n = shape.iter().product();
    Mask::Bool(BoolMask::new(shape.to_vec(), vec![true; n]).unwrap())
}

#[test]
fn mask_rank_zero_or_five() {
    let mut rng = Rng::new(15);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    for (mask, what, rank) in [
        (bool_mask(&[]), "boolean mask", 0),
        (bool_mask(&[1, 1, 2, 3, 4]), "boolean mask", 5),
        (Mask::Additive(t(&mut rng, &[])), "additive mask", 0),
        (
            Mask::Additive(t(&mut rng, &[1, 1, 2, 3, 4])),
            "additive mask",
            5,
        ),
    ] {
        let e = default_error(&AttentionInputs::new(&q, &k, &v).with_mask(&mask));
        match &e {
            Error::RankMismatch { what: w, got, .. } => assert_eq!((*w, *got), (what, rank)),
            _ => panic!("expected RankMismatch, got {e:?}"),
        }
        mentions(&e, &[what, "1 to 4"]);
    }
}

#[test]
fn mask_not_broadcastable_on_each_axis() {
    let mut rng = Rng::new(16);
    // [B, Hq, Lq, Lt] = [2, 3, 4, 5].
    let (q, k, v) = (
        t(&mut rng, &[2, 3, 4, 8]),
        t(&mut rng, &[2, 3, 5, 8]),
        t(&mut rng, &[2, 3, 5, 8]),
    );
    for (shape, axis) in [
        (vec![3, 3, 4, 5], "batch axis has 3 but must be 1 or 2"),
        (vec![2, 2, 4, 5], "head axis has 2 but must be 1 or 3"),
        (vec![1, 1, 2, 5], "query axis has 2 but must be 1 or 4"),
        (vec![2, 4, 5], "head axis has 2 but must be 1 or 3"),
        (vec![3, 5], "query axis has 3 but must be 1 or 4"),
    ] {
        for mask in [
            bool_mask(&shape),
            Mask::Additive(t_as(&mut rng, &shape, DType::F16)),
        ] {
            let e = default_error(&AttentionInputs::new(&q, &k, &v).with_mask(&mask));
            match &e {
                Error::MaskNotBroadcastable {
                    mask_shape, target, ..
                } => {
                    assert_eq!(mask_shape, &shape);
                    assert_eq!(target, &[2, 3, 4, 5]);
                }
                _ => panic!("expected MaskNotBroadcastable for {shape:?}, got {e:?}"),
            }
            mentions(&e, &[axis, &format!("{shape:?}"), "[2, 3, 4, 5]"]);
        }
    }
    // Rank 3 is [Hq, Lq, Lt], not [B, Lq, Lt]: B = 2 in the head position fails.
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_mask(&bool_mask(&[2, 4, 5])));
    assert!(matches!(e, Error::MaskNotBroadcastable { .. }), "got {e:?}");
}

#[test]
fn mask_last_axis_longer_than_lt() {
    let mut rng = Rng::new(17);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let (pk, pv) = (t(&mut rng, &[1, 2, 2, 8]), t(&mut rng, &[1, 2, 2, 8]));
    let mask = bool_mask(&[3, 5]);
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_mask(&mask));
    assert!(matches!(e, Error::MaskNotBroadcastable { .. }), "got {e:?}");
    mentions(&e, &["key axis has 5", "4 keys"]);
    // With a past of 2, Lt = 6: a last axis of 7 fails, 6 is fine.
    let long = Mask::Additive(t(&mut rng, &[7]));
    let e = default_error(
        &AttentionInputs::new(&q, &k, &v)
            .with_past(&pk, &pv)
            .with_mask(&long),
    );
    mentions(&e, &["key axis has 7", "6 keys"]);
    let fits = Mask::Additive(t(&mut rng, &[6]));
    let inputs = AttentionInputs::new(&q, &k, &v)
        .with_past(&pk, &pv)
        .with_mask(&fits);
    assert!(wgattn::masked_attention(ctx(), &inputs, &AttentionOptions::default()).is_ok());
}

#[test]
fn mask_with_empty_key_axis() {
    let mut rng = Rng::new(18);
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
        t(&mut rng, &[1, 2, 4, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_mask(&bool_mask(&[3, 0])));
    assert!(matches!(e, Error::MaskNotBroadcastable { .. }), "got {e:?}");
}

// ---------------------------------------------------------------------------------------------
// Options.

fn small(rng: &mut Rng) -> (Tensor, Tensor, Tensor) {
    (
        t(rng, &[1, 2, 3, 8]),
        t(rng, &[1, 2, 4, 8]),
        t(rng, &[1, 2, 4, 8]),
    )
}

#[test]
fn window_below_minus_one() {
    let mut rng = Rng::new(19);
    let (q, k, v) = small(&mut rng);
    for (name, left, right) in [
        ("window_left", -2, -1),
        ("window_right", 3, -2),
        ("window_left", i64::MIN, 0),
    ] {
        let opts = AttentionOptions {
            window_left: left,
            window_right: right,
            ..Default::default()
        };
        let e = error_of(&AttentionInputs::new(&q, &k, &v), &opts);
        match &e {
            Error::InvalidOption { name: n, value, .. } => {
                assert_eq!(*n, name);
                assert_eq!(
                    value,
                    &if name == "window_left" { left } else { right }.to_string()
                );
            }
            _ => panic!("expected InvalidOption, got {e:?}"),
        }
        mentions(&e, &[name]);
    }
}

#[test]
fn scale_not_finite() {
    let mut rng = Rng::new(20);
    let (q, k, v) = small(&mut rng);
    for s in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let opts = AttentionOptions {
            scale: Some(s),
            ..Default::default()
        };
        let e = error_of(&AttentionInputs::new(&q, &k, &v), &opts);
        assert!(
            matches!(&e, Error::InvalidOption { name: "scale", value, .. } if value == &s.to_string()),
            "got {e:?}"
        );
        mentions(&e, &["scale", &s.to_string()]);
    }
}

#[test]
fn softcap_negative_or_not_finite() {
    let mut rng = Rng::new(21);
    let (q, k, v) = small(&mut rng);
    for c in [-1.0f32, -f32::MIN_POSITIVE, f32::NAN, f32::INFINITY] {
        let opts = AttentionOptions {
            softcap: c,
            ..Default::default()
        };
        let e = error_of(&AttentionInputs::new(&q, &k, &v), &opts);
        assert!(
            matches!(
                &e,
                Error::InvalidOption {
                    name: "softcap",
                    ..
                }
            ),
            "softcap {c}: got {e:?}"
        );
        mentions(&e, &["softcap", &c.to_string()]);
    }
}

// ---------------------------------------------------------------------------------------------
// Zero-sized axes.

#[test]
fn zero_sized_axes() {
    let mut rng = Rng::new(22);
    type Shape = &'static [usize];
    let cases: [(Shape, Shape, Shape, &str, &str); 6] = [
        (&[0, 2, 3, 8], &[0, 2, 4, 8], &[0, 2, 4, 8], "q", "B"),
        (&[1, 2, 3, 0], &[1, 2, 4, 0], &[1, 2, 4, 8], "q", "D"),
        (&[1, 2, 0, 8], &[1, 2, 4, 8], &[1, 2, 4, 8], "q", "S"),
        (&[1, 2, 3, 8], &[1, 0, 4, 8], &[1, 0, 4, 8], "k", "H"),
        (&[1, 0, 3, 8], &[1, 2, 4, 8], &[1, 2, 4, 8], "q", "H"),
        (&[1, 2, 3, 8], &[1, 2, 4, 8], &[1, 2, 4, 0], "v", "Dv"),
    ];
    for (qs, ks, vs, what, axis) in cases {
        let (q, k, v) = (t(&mut rng, qs), t(&mut rng, ks), t(&mut rng, vs));
        let e = default_error(&AttentionInputs::new(&q, &k, &v));
        assert_eq!(
            e,
            Error::ZeroSizedAxis { what, axis },
            "q {qs:?} k {ks:?} v {vs:?}"
        );
        mentions(&e, &[what, axis]);
    }
    // Lt = 0: no past and no keys.
    let (q, k, v) = (
        t(&mut rng, &[1, 2, 3, 8]),
        t(&mut rng, &[1, 2, 0, 8]),
        t(&mut rng, &[1, 2, 0, 8]),
    );
    let e = default_error(&AttentionInputs::new(&q, &k, &v));
    assert!(
        matches!(e, Error::ZeroSizedAxis { axis: "S", .. }),
        "got {e:?}"
    );
    mentions(&e, &["keys"]);
    // Lt = 0 with an empty past too.
    let (pk, pv) = (t(&mut rng, &[1, 2, 0, 8]), t(&mut rng, &[1, 2, 0, 8]));
    let e = default_error(&AttentionInputs::new(&q, &k, &v).with_past(&pk, &pv));
    assert!(
        matches!(e, Error::ZeroSizedAxis { axis: "S", .. }),
        "got {e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Device limits (GPU only: the reference has none).

#[test]
fn staged_scores_over_the_binding_limit() {
    // D = 1 and Lq = Lt = 8192 or more: q, k, v are 32 KiB or more while the f32 scores of the
    // one head are over the device's binding limit (256 MiB at 8192; 4 GiB, past the engine's
    // u32 indices, at 32768). Requests are split over batch and heads, never over the query
    // or key axes, so one head is as small as a part gets. The staged path materializes the
    // scores; the fused path would not, so it is asked for explicitly, and through Auto by
    // asking for an intermediate.
    let limits = ctx().limits();
    let binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        .min(u32::MAX as u64);
    let l = [8192usize, 16384, 32768]
        .into_iter()
        .find(|&l| 4 * (l * l) as u64 > binding)
        .unwrap_or(32768);
    let (heads, per_head) = (1usize, 4 * (l * l) as u64);
    let mut rng = Rng::new(23);
    let q = t(&mut rng, &[1, heads, l, 1]);
    let k = t(&mut rng, &[1, 1, l, 1]);
    let v = t(&mut rng, &[1, 1, l, 1]);
    let inputs = AttentionInputs::new(&q, &k, &v);
    let staged = AttentionOptions {
        path: ExecutionPath::Staged,
        ..Default::default()
    };
    let auto_with_probs = AttentionOptions {
        returns: wgattn::Returns {
            probs: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let expect_limit = |result: wgattn::Result<wgattn::AttentionOutput>| -> Error {
        let e = match result {
            Ok(_) => panic!("a {heads}x{l}x{l} f32 score matrix was accepted"),
            Err(e) => e,
        };
        match &e {
            Error::ExceedsLimit {
                what,
                limit,
                requested,
                max,
            } => {
                assert!(what.contains("scores"), "{e}");
                assert_eq!(*limit, "max_storage_buffer_binding_size");
                assert_eq!(*requested, heads as u64 * per_head);
                assert!(*max <= binding && *requested > *max, "{e}");
                mentions(&e, &[&requested.to_string(), &max.to_string()]);
            }
            _ => panic!("expected ExceedsLimit, got {e:?}"),
        }
        e
    };
    let e = expect_limit(wgattn::masked_attention(ctx(), &inputs, &staged));
    let e2 = expect_limit(pollster::block_on(wgattn::masked_attention_async(
        ctx(),
        &inputs,
        &staged,
    )));
    assert_eq!(e2, e);
    let e3 = expect_limit(wgattn::masked_attention(ctx(), &inputs, &auto_with_probs));
    assert_eq!(e3, e);
    context_still_works();
}

#[test]
fn fused_path_with_intermediates_is_rejected() {
    // GPU only: the reference has no paths.
    let mut rng = Rng::new(25);
    let (q, k, v) = small(&mut rng);
    let opts = AttentionOptions {
        path: ExecutionPath::Fused,
        returns: wgattn::Returns {
            scores: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let inputs = AttentionInputs::new(&q, &k, &v);
    match wgattn::masked_attention(ctx(), &inputs, &opts) {
        Err(e @ Error::InvalidCombination(_)) => mentions(&e, &["fused", "staged"]),
        Err(e) => panic!("expected InvalidCombination, got {e:?}"),
        Ok(_) => panic!("the fused path returned intermediates"),
    }
    context_still_works();
}

#[test]
fn errors_leave_the_context_usable_for_many_calls() {
    // Alternate invalid and valid calls; each valid one must still be right.
    let mut rng = Rng::new(24);
    let (q, k, v) = small(&mut rng);
    let bad = AttentionOptions {
        scale: Some(f32::NAN),
        ..Default::default()
    };
    for _ in 0..3 {
        assert!(wgattn::masked_attention(ctx(), &AttentionInputs::new(&q, &k, &v), &bad).is_err());
        context_still_works();
    }
}

#[test]
fn tensor_data_length_must_match_shape() {
    // Not an attention error, but the first one a caller meets: checked when building.
    let e = Tensor::from_f32([2, 3], vec![0.5; 5]).unwrap_err();
    assert_eq!(
        e,
        Error::DataLength {
            what: "tensor",
            shape: vec![2, 3],
            expected: 6,
            got: 5
        }
    );
    let e = BoolMask::new([2, 2], vec![true; 3]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DataLength {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "got {e:?}"
    );
}
