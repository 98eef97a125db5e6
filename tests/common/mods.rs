//! Random mods for the property tests and the soak: seeded tables for the structured masks,
//! one user `mask_mod` and one `score_mod` (WGSL), and the f64 reference run with their Rust
//! counterparts.

use wgattn::reference::{self, RustMods};
use wgattn::{
    Alibi, AttentionInputs, AttentionOptions, AttentionOutput, Aux, AuxData, BlockedTokens,
    MaskMods, Modalities, Segments, TokenFilter,
};

use super::Rng;

/// The mods [`random`] can turn on, in the order of its `on` flags.
pub const KINDS: [&str; 7] = [
    "segments",
    "prefix-LM",
    "ALiBi",
    "token filter",
    "modalities",
    "mask_mod",
    "score_mod",
];

/// The user `mask_mod`; [`reference`] has its Rust counterpart.
const MASK_MOD: &str = "return (q * 3u + k + h + b * 5u) % 4u != 0u;";
/// The user `score_mod` (it reads the aux table `w` of seven weights).
const SCORE_MOD: &str = "if (k % 5u == 3u) { return minus_infinity(); }\nreturn s + aux_w[k % 7u];";

/// The mods `on` asks for ([`KINDS`]), with tables drawn from `rng` for `b` batch entries,
/// `hq` query heads, `lq` queries and `lt` keys.
pub fn random(rng: &mut Rng, on: [bool; 7], b: usize, hq: usize, lq: usize, lt: usize) -> MaskMods {
    let ids = |rng: &mut Rng, len: usize, n: usize| -> Vec<i64> {
        (0..b * len).map(|_| rng.below(n) as i64).collect()
    };
    let mut m = MaskMods::default();
    if on[0] {
        let kv = ids(rng, lt, 3);
        let q = (0..b)
            .flat_map(|bi| kv[bi * lt + lt - lq..(bi + 1) * lt].to_vec())
            .collect();
        m.segments = Some(Segments { q, kv });
    }
    if on[1] {
        m.prefix_lengths = Some((0..b).map(|_| rng.below(lt + 1) as i64).collect());
    }
    if on[2] {
        let slopes = (rng.below(2) == 0).then(|| (0..hq).map(|_| rng.uniform().abs()).collect());
        m.alibi = Some(Alibi {
            slopes,
            symmetric: rng.below(2) == 0,
        });
    }
    if on[3] {
        m.token_filter = Some(TokenFilter {
            kv_token_ids: ids(rng, lt, 9),
            blocked: BlockedTokens::Ids(vec![rng.below(9) as i64, rng.below(9) as i64]),
        });
    }
    if on[4] {
        let q = ids(rng, lq, 2).into_iter().map(|x| x as u32).collect();
        let kv = ids(rng, lt, 2).into_iter().map(|x| x as u32).collect();
        m.modalities = Some(Modalities {
            q,
            kv,
            allow: (0..4).map(|_| rng.below(4) != 0).collect(),
            causal: vec![rng.below(2) == 0, rng.below(2) == 0],
        });
    }
    if on[5] {
        m.mask_mod = Some(MASK_MOD.into());
    }
    if on[6] {
        m.score_mod = Some(SCORE_MOD.into());
        m.aux = vec![Aux::f32("w", (0..7).map(|_| rng.uniform()).collect())];
    }
    m
}

/// The f64 reference for inputs whose mods came from [`random`]: the user mods evaluated by
/// their Rust counterparts.
pub fn reference(
    inputs: &AttentionInputs<'_>,
    opts: &AttentionOptions,
) -> wgattn::Result<AttentionOutput> {
    let mods = inputs.mods;
    let weights = mods
        .and_then(|m| m.aux.first())
        .map(|a| match &a.data {
            AuxData::F32(w) => w.clone(),
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
        mask_mod: mods
            .is_some_and(|m| m.mask_mod.is_some())
            .then_some(&mask as _),
        score_mod: mods
            .is_some_and(|m| m.score_mod.is_some())
            .then_some(&score as _),
    };
    reference::masked_attention_with(inputs, opts, rust)
}
