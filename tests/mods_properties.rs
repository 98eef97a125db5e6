//! Property test of the mods: over random shapes, caches, paths and random subsets of the
//! structured masks and a user mask_mod / score_mod (with their Rust closures for the
//! reference), beside an additive mask tensor or none, the GPU equals the f64 reference. Proptest draws the sizes and which mods are
//! on (so a failure shrinks to a small case) and a seed for every value.

mod common;

use common::{compare, ctx, random_additive_mask, Case, Dims, Rng, Tols};
use proptest::prelude::*;
use proptest::test_runner::Config;
use wgattn::reference::{self, RustMods};
use wgattn::{
    masked_attention, Alibi, Aux, BlockedTokens, DType, ExecutionPath, Layout, Mask, MaskMods,
    Modalities, Segments, Tensor, TokenFilter,
};

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

/// The mods `spec.on` asks for, with seeded tables.
fn mods(s: &Spec, rng: &mut Rng, lt: usize) -> MaskMods {
    let (b, lq, hq) = (s.b, s.lq, s.hkv * s.group);
    let ids = |rng: &mut Rng, len: usize, n: usize| -> Vec<i64> {
        (0..b * len).map(|_| rng.below(n) as i64).collect()
    };
    let mut m = MaskMods::default();
    if s.on[0] {
        let kv = ids(rng, lt, 3);
        let q = (0..b)
            .flat_map(|bi| kv[bi * lt + lt - lq..(bi + 1) * lt].to_vec())
            .collect();
        m.segments = Some(Segments { q, kv });
    }
    if s.on[1] {
        m.prefix_lengths = Some((0..b).map(|_| rng.below(lt + 1) as i64).collect());
    }
    if s.on[2] {
        let slopes = (rng.below(2) == 0).then(|| (0..hq).map(|_| rng.uniform().abs()).collect());
        m.alibi = Some(Alibi {
            slopes,
            symmetric: rng.below(2) == 0,
        });
    }
    if s.on[3] {
        m.token_filter = Some(TokenFilter {
            kv_token_ids: ids(rng, lt, 9),
            blocked: BlockedTokens::Ids(vec![rng.below(9) as i64, rng.below(9) as i64]),
        });
    }
    if s.on[4] {
        let q = ids(rng, lq, 2).into_iter().map(|x| x as u32).collect();
        let kv = ids(rng, lt, 2).into_iter().map(|x| x as u32).collect();
        m.modalities = Some(Modalities {
            q,
            kv,
            allow: (0..4).map(|_| rng.below(4) != 0).collect(),
            causal: vec![rng.below(2) == 0, rng.below(2) == 0],
        });
    }
    if s.on[5] {
        m.mask_mod = Some("return (q * 3u + k + h + b * 5u) % 4u != 0u;".into());
    }
    if s.on[6] {
        m.score_mod = Some(
            "if (k % 5u == 3u) { return minus_infinity(); }\nreturn s + aux_w[k % 7u];".into(),
        );
        m.aux = vec![Aux::f32("w", (0..7).map(|_| rng.uniform()).collect())];
    }
    m
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
    case.mods = Some(mods(s, &mut rng, lt));
    if s.mask > 0 {
        let shape = [1, s.hkv * s.group, s.lq, lt];
        let Mask::Additive(t) = random_additive_mask(&mut rng, &shape, DType::F32, 2.0, 0.1) else {
            unreachable!("an additive mask")
        };
        let mut x = t.to_f32_vec();
        if s.mask == 2 {
            let at = rng.below(x.len());
            x[at] = if rng.bool(0.5) {
                f32::NAN
            } else {
                f32::INFINITY
            };
        }
        case.mask = Some(Mask::Additive(
            Tensor::from_f32_as(shape.to_vec(), &x, DType::F32).unwrap(),
        ));
    }
    let weights = case
        .mods
        .as_ref()
        .and_then(|m| m.aux.first())
        .map(|a| match &a.data {
            wgattn::AuxData::F32(w) => w.clone(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    let mask = |b: usize, h: usize, q: usize, k: usize| !(q * 3 + k + h + b * 5).is_multiple_of(4);
    let score = move |s: f64, _b: usize, _h: usize, _q: usize, k: usize| {
        if k % 5 == 3 {
            f64::NEG_INFINITY
        } else {
            s + weights[k % 7] as f64
        }
    };
    let rust = RustMods {
        mask_mod: s.on[5].then_some(&mask as _),
        score_mod: s.on[6].then_some(&score as _),
    };
    let got = masked_attention(ctx(), &case.inputs(), &case.opts)
        .unwrap_or_else(|e| panic!("GPU failed on {s:?}: {e}"));
    let want = reference::masked_attention_with(&case.inputs(), &case.opts, rust)
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
