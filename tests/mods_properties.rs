//! Property test of the mods: over random shapes, caches, paths and random subsets of the
//! structured masks and a user mask_mod / score_mod (`common::mods`, with their Rust closures
//! for the reference), beside an additive mask tensor or none, the GPU equals the f64
//! reference. Proptest draws the sizes and which mods are on (so a failure shrinks to a small
//! case) and a seed for every value.

mod common;

use common::{compare, ctx, poison_one_entry, random_additive_mask, Case, Dims, Rng, Tols};
use proptest::prelude::*;
use proptest::test_runner::Config;
use wgattn::{masked_attention, DType, ExecutionPath, Layout};

#[derive(Clone, Debug)]
struct Spec {
    b: usize,
    hkv: usize,
    group: usize,
    lq: usize,
    past: Option<usize>,
    d: usize,
    dtype: DType,
    causal: bool,
    fused: bool,
    /// Segments, prefix-LM, ALiBi, token filter, modalities, mask_mod, score_mod.
    on: [bool; 7],
    /// A mask tensor beside the mods: 0 none, 1 an additive `[1, Hq, Lq, Lt]` f32 mask with
    /// some -inf, 2 the same with one NaN or +inf entry.
    mask: u8,
    seed: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (1usize..=2, 1usize..=2, 1usize..=2, 1usize..=40),
        prop::option::of(1usize..=24),
        prop::sample::select(vec![4usize, 8, 12, 16]),
        prop::sample::select(vec![DType::F32, DType::F16]),
        any::<(bool, bool)>(),
        // One to three mods at a time, so each one decides enough positions to be seen.
        prop::sample::subsequence((0..7).collect::<Vec<usize>>(), 1..=3),
        0u8..3,
        any::<u64>(),
    )
        .prop_map(
            |((b, hkv, group, lq), past, d, dtype, (causal, fused), picked, mask, seed)| Spec {
                b,
                hkv,
                group,
                lq,
                past,
                d,
                dtype,
                causal,
                fused,
                on: std::array::from_fn(|i| picked.contains(&i)),
                mask,
                seed,
            },
        )
}

fn check(s: &Spec) {
    let mut rng = Rng::new(s.seed);
    let mut dims = Dims::new(s.b, s.hkv * s.group, s.lq, s.lq, s.d).heads(s.hkv * s.group, s.hkv);
    if let Some(p) = s.past {
        dims = dims.past(p);
    }
    let lt = dims.lt();
    let path = if s.fused {
        ExecutionPath::Fused
    } else {
        ExecutionPath::Staged
    };
    let mut case = Case::random(&mut rng, dims, s.dtype, Layout::Bhsd).with_opts(|o| {
        o.causal = s.causal;
        o.path = path;
    });
    case.mods = Some(common::mods::random(
        &mut rng,
        s.on,
        s.b,
        s.hkv * s.group,
        s.lq,
        lt,
    ));
    if s.mask > 0 {
        let shape = [1, s.hkv * s.group, s.lq, lt];
        let mut mask = random_additive_mask(&mut rng, &shape, DType::F32, 2.0, 0.1);
        if s.mask == 2 {
            mask = poison_one_entry(&mut rng, mask);
        }
        case.mask = Some(mask);
    }
    let got = masked_attention(ctx(), &case.inputs(), &case.opts)
        .unwrap_or_else(|e| panic!("GPU failed on {s:?}: {e}"));
    let want = common::mods::reference(&case.inputs(), &case.opts)
        .unwrap_or_else(|e| panic!("reference failed on {s:?}: {e}"));
    compare(
        &format!("{s:?}"),
        &got,
        &want,
        &case.opts.returns,
        Tols::for_dtype(s.dtype),
    );
}

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::with_cases(24) })]

    #[test]
    fn gpu_equals_reference_with_random_mods(s in spec()) {
        check(&s);
    }
}
