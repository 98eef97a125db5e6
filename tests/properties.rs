//! Property tests: over random shapes, layouts, dtypes, options and masks, the GPU equals the
//! f64 reference (`Tols::for_dtype`). Proptest draws the sizes and options (so a failure
//! shrinks to a small case) and a seed for the tensor values. Failures are not persisted to
//! files (the printed case and seed reproduce them).

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::Config;
use wgattn::{DType, ExecutionPath, Layout, Returns};

/// 32 cases per property (16 for the fused one) keep the suite fast on the software adapter.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::with_cases(32)
    }
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// A mask tensor's description: kind, which of the batch/head/query axes are present (and
/// full-size rather than 1), and the last axis as a fraction of `Lt`.
#[derive(Clone, Debug)]
struct MaskSpec {
    /// 0 = none, 1 = boolean, 2 = additive, 3 = additive with one NaN or +inf entry (a NaN
    /// makes the rows that see it at an allowed key NaN, +inf their softmax NaN or one-hot;
    /// where another mask disallows the key it is not seen).
    kind: u8,
    /// 1 to 4.
    rank: usize,
    /// For the batch, head and query axes (where the rank has them): full size or 1.
    full: [bool; 3],
    /// The last axis is `1 + n_pick % Lt` long (`Lt` itself half the time).
    n_pick: usize,
    n_is_lt: bool,
    dtype: DType,
}

#[derive(Clone, Debug)]
struct Spec {
    b: usize,
    hkv: usize,
    group: usize,
    lq: usize,
    lk: usize,
    past: Option<usize>,
    d: usize,
    dv: usize,
    layout: Layout,
    dtype: DType,
    causal: bool,
    causal_offset: Option<i64>,
    window_left: i64,
    window_right: i64,
    kv_lengths: bool,
    scale: Option<f32>,
    softcap: f32,
    mask: MaskSpec,
    returns: Returns,
    seed: u64,
}

fn mask_spec() -> impl Strategy<Value = MaskSpec> {
    (
        0u8..4,
        1usize..=4,
        any::<[bool; 3]>(),
        0usize..64,
        any::<bool>(),
        prop::sample::select(DTYPES.to_vec()),
    )
        .prop_map(|(kind, rank, full, n_pick, n_is_lt, dtype)| MaskSpec {
            kind,
            rank,
            full,
            n_pick,
            n_is_lt,
            dtype,
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    let shape = (
        1usize..=2,
        1usize..=2,
        1usize..=3,
        1usize..=20,
        0usize..=20,
        prop::option::of(0usize..=8),
        1usize..=40,
        1usize..=40,
    );
    let options = (
        any::<bool>(),
        prop::option::weighted(0.3, -5i64..25),
        prop_oneof![Just(-1i64), 0i64..6],
        prop_oneof![Just(-1i64), 0i64..6],
        any::<bool>(),
        prop::option::weighted(0.3, -1.5f32..1.5),
        prop_oneof![Just(0.0f32), 0.5f32..10.0],
    );
    (
        shape,
        options,
        any::<bool>(),
        prop::sample::select(DTYPES.to_vec()),
        mask_spec(),
        any::<[bool; 3]>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                (b, hkv, group, lq, lk, past, d, dv),
                (causal, causal_offset, window_left, window_right, kv_lengths, scale, softcap),
                bshd,
                dtype,
                mask,
                [scores, logits, probs],
                seed,
            )| {
                // At least one key: without new keys, the cache supplies it.
                let past = if lk == 0 {
                    Some(past.unwrap_or(1).max(1))
                } else {
                    past
                };
                Spec {
                    b,
                    hkv,
                    group,
                    lq,
                    lk,
                    past,
                    d,
                    dv,
                    layout: if bshd { Layout::Bshd } else { Layout::Bhsd },
                    dtype,
                    causal,
                    causal_offset,
                    window_left,
                    window_right,
                    // Key lengths only without a cache (with one they are an error).
                    kv_lengths: kv_lengths && past.is_none(),
                    scale,
                    softcap,
                    mask,
                    returns: Returns {
                        scores,
                        logits,
                        probs,
                    },
                    seed,
                }
            },
        )
}

/// The case a spec describes, with values drawn from its seed.
fn build(s: &Spec) -> Case {
    let dims = Dims {
        b: s.b,
        hq: s.hkv * s.group,
        hkv: s.hkv,
        lq: s.lq,
        lk: s.lk,
        past: s.past,
        d: s.d,
        dv: s.dv,
    };
    let lt = dims.lt();
    let mut rng = common::Rng::new(s.seed);
    let mut case = Case::random(&mut rng, dims, s.dtype, s.layout).with_opts(|o| {
        o.causal = s.causal;
        o.causal_offset = s.causal_offset;
        o.window_left = s.window_left;
        o.window_right = s.window_right;
        o.scale = s.scale;
        o.softcap = s.softcap;
        o.returns = s.returns;
    });
    if s.kv_lengths {
        let lens = (0..s.b).map(|_| rng.below(lt + 1) as i64).collect();
        case = case.with_kv_lengths(lens);
    }
    let m = &s.mask;
    if m.kind != 0 {
        let keys = if m.n_is_lt { lt } else { 1 + m.n_pick % lt };
        let shape = common::mask_shape(&dims, m.rank, m.full, keys);
        case.mask = Some(common::random_mask(
            &mut rng,
            usize::from(m.kind),
            &shape,
            m.dtype,
            0.7,
        ));
    }
    case
}

proptest! {
    #![proptest_config(config())]

    /// The staged path, with a random subset of the intermediates.
    #[test]
    fn staged_path_equals_reference(s in spec()) {
        build(&s).staged().check();
    }
}

proptest! {
    #![proptest_config(Config { cases: 16, ..config() })]

    /// The default path (`Auto`: the fused kernel where it applies) without intermediates.
    /// The fused kernels are specialized per head-dim tile, and each new pipeline costs about
    /// a second to build on the software adapter: D and Dv stay in 5..=8 (one tile width, odd
    /// sizes included) and the case count is halved.
    #[test]
    fn default_path_equals_reference(
        s in spec(),
        d in 5usize..=8,
        dv in 5usize..=8,
    ) {
        let s = Spec { returns: Returns::default(), d, dv, ..s };
        build(&s).path(ExecutionPath::Auto).check();
    }
}
