//! Soak: random cases over a wider space than tests/properties.rs and
//! tests/mods_properties.rs (key ranges into the thousands that take the decode kernel's
//! splits and passes, query blocks over many tiles, GQA groups up to 8, head dims up to 256,
//! logits in the thousands, every mask kind, junk past the key lengths, the mods over long
//! caches), each run on one of seven tunings of the engine and held to the f64 reference.
//!
//! Each test runs `SOAK_CASES` cases (default 4) from seed `SOAK_SEED` (default 1); case `i`
//! uses seed `SOAK_SEED + i`, and a failure names its seed, so `SOAK_SEED=<seed> SOAK_CASES=1`
//! replays it. A long soak:
//! `SOAK_CASES=400 cargo test --release --all-features --test soak -- --nocapture`
//! (also with `WGPU_BACKEND=gl`).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::embed;
use common::*;
use wgattn::{
    AttentionOutput, Context, DType, Error, ExecutionPath, Layout, Mask, MaskMods, Returns, Tensor,
    Tuning,
};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The tunings a case may run on: the default; a discrete GPU's choices (with
/// `LP_NATIVE_VECTOR_WIDTH=128` or `512`, lavapipe's subgroups are 4 or 16 wide; past 512 it
/// reports wider subgroups than it runs, see tests/subgroup_sizes.rs); the decode kernel for
/// every block with a subgroup per key; no shader-f16 and no subgroups; a small loop-trip and binding limit (key
/// splits in passes, requests split over heads); odd tile and split sizes; the prefill kernel
/// for every block.
fn contexts() -> Vec<(&'static str, Context)> {
    let tuned = |name, tuning| (name, tuned_context(tuning));
    vec![
        tuned("default", Tuning::AUTO),
        tuned("gpu", Tuning::DISCRETE_GPU),
        tuned(
            "subgroup-keys",
            Tuning {
                decode_max_q: Some(1 << 20),
                decode_subgroup_keys: Some(true),
                ..Tuning::AUTO
            },
        ),
        tuned(
            "no-features",
            Tuning {
                shader_f16: Some(false),
                subgroups: Some(false),
                ..Tuning::AUTO
            },
        ),
        tuned(SMALL_LIMITS, small_limits(3 << 20)),
        tuned(
            "odd-tiles",
            Tuning {
                decode_rows: Some(3),
                decode_invocations: Some(8),
                decode_keys_per_split: Some(40),
                rows_per_invocation: Some(2),
                keys_per_tile: Some(12),
                decode_max_q: Some(9),
                ..Tuning::AUTO
            },
        ),
        tuned(
            "prefill-only",
            Tuning {
                decode_max_q: Some(0),
                rows_per_invocation: Some(1),
                ..Tuning::AUTO
            },
        ),
    ]
}

const SMALL_LIMITS: &str = "small-limits";

/// A loop-trip limit of 5000 (key splits in passes) and a binding limit of `bytes`
/// (requests split over batch entries and heads).
fn small_limits(bytes: u64) -> Tuning {
    Tuning {
        max_loop_trips: Some(5000),
        max_binding_bytes: Some(bytes),
        ..Tuning::AUTO
    }
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

/// Batch (1 to 3, so split parts hold entries of different key lengths), heads and head dims:
/// one of the usual head dims half the time, else any up to 140.
fn dims(rng: &mut Rng, lq: usize, lk: usize, past: Option<usize>, groups: &[usize]) -> Dims {
    let d = if rng.bool(0.5) {
        pick(rng, &[32, 64, 80, 96, 128, 256])
    } else {
        1 + rng.below(140)
    };
    let dv = if rng.bool(0.6) { d } else { 1 + rng.below(140) };
    let hkv = 1 + rng.below(3);
    Dims {
        b: 1 + rng.below(3),
        hq: hkv * pick(rng, groups),
        hkv,
        lq,
        lk,
        past,
        d,
        dv,
    }
}

/// A case with the options, key lengths and mask tensor of the main API, and a line saying
/// what it is.
fn draw(rng: &mut Rng) -> (Case, String) {
    // Short blocks against long keys (the decode kernel), long blocks, small ones.
    let (lq, lk) = match rng.below(3) {
        0 => (1 + rng.below(6), rng.below(3000)),
        1 => (1 + rng.below(150), rng.below(400)),
        _ => (1 + rng.below(20), rng.below(60)),
    };
    // At least one key: without new keys, the cache supplies it.
    let past = (lk == 0 || rng.bool(0.3)).then(|| rng.below(300).max(usize::from(lk == 0)));
    let dims = dims(rng, lq, lk, past, &[1, 1, 2, 3, 4, 5, 8]);
    let lt = dims.lt();
    let dtype = pick(rng, &DTYPES);
    let layout = if rng.bool(0.5) {
        Layout::Bshd
    } else {
        Layout::Bhsd
    };
    // q and k up to 10: with a scale up to 2, logits in the thousands.
    let amp = pick(rng, &[1.0f32, 1.0, 3.0, 10.0]);
    let mut case = Case::random_amp(rng, dims, dtype, layout, amp);
    let o = &mut case.opts;
    o.causal = rng.bool(0.4);
    o.causal_offset = rng.bool(0.3).then(|| rng.below(40) as i64 - 10);
    o.window_left = if rng.bool(0.3) {
        rng.below(300) as i64
    } else {
        -1
    };
    o.window_right = if rng.bool(0.2) {
        rng.below(50) as i64
    } else {
        -1
    };
    o.scale = rng.bool(0.2).then(|| rng.uniform() * 2.0);
    o.softcap = if rng.bool(0.2) {
        0.5 + rng.uniform().abs() * 20.0
    } else {
        0.0
    };
    // Intermediates a fifth of the time: the staged path.
    if rng.bool(0.2) {
        o.returns = Returns {
            scores: rng.bool(0.5),
            logits: rng.bool(0.5),
            probs: rng.bool(0.5),
        };
    }
    // Key lengths only without a cache (with one they are an error).
    let mut junk = false;
    if past.is_none() && rng.bool(0.3) {
        let lengths: Vec<i64> = (0..dims.b).map(|_| rng.below(lt + 1) as i64).collect();
        // Half the time junk (NaN, +-inf) in k and v past the lengths, as in a preallocated
        // cache: it must not be seen.
        junk = rng.bool(0.5);
        if junk {
            case.k = junk_past(&case.k, layout, dims.hkv, &lengths);
            case.v = junk_past(&case.v, layout, dims.hkv, &lengths);
        }
        case.kv_lengths = Some(lengths);
    }
    let kind = pick(rng, &[0, 0, 1, 2, 3]);
    let mut what = String::new();
    if junk {
        what.push_str(", junk past the lengths");
    }
    if kind != 0 {
        let (mask, line) = draw_mask(rng, &dims, kind);
        what += &line;
        case.mask = Some(mask);
    }
    let what = format!(
        "{dims:?} {dtype:?} {layout:?} amp {amp} kv_lengths {:?} {:?}{what}",
        case.kv_lengths, case.opts
    );
    (case, what)
}

/// A mask tensor of [`MASK_KINDS`]`[kind]` for `dims`, and a line saying what it is: rank 1
/// to 4, each leading axis full or 1, the key axis `Lt` or shorter (all broadcast).
fn draw_mask(rng: &mut Rng, dims: &Dims, kind: usize) -> (Mask, String) {
    let rank = 1 + rng.below(4);
    let mut full = [false; 3];
    for f in &mut full[4 - rank..] {
        *f = rng.bool(0.5);
    }
    let lt = dims.lt();
    let keys = if rng.bool(0.6) { lt } else { 1 + rng.below(lt) };
    let shape = mask_shape(dims, rank, full, keys);
    let mask_dtype = pick(rng, &DTYPES);
    let p_true = if kind == 1 {
        pick(rng, &[0.9, 0.5, 0.05])
    } else {
        0.0
    };
    let line = format!(", mask {} {shape:?} {mask_dtype:?}", MASK_KINDS[kind]);
    (random_mask(rng, kind, &shape, mask_dtype, p_true), line)
}

/// `t` (`k` or `v` in `layout`, `hkv` heads) with NaN and infinities at the keys past each
/// batch entry's length.
fn junk_past(t: &Tensor, layout: Layout, hkv: usize, lengths: &[i64]) -> Tensor {
    let shape = t.shape().to_vec();
    let (len, x) = (shape[if layout == Layout::Bhsd { 2 } else { 1 }], shape[3]);
    let mut data = t.to_f32_vec();
    for (n, e) in data.iter_mut().enumerate() {
        let (b, j) = match layout {
            Layout::Bhsd => (n / (hkv * len * x), n / x % len),
            Layout::Bshd => (n / (len * hkv * x), n / (hkv * x) % len),
        };
        if j as i64 >= lengths[b] {
            *e = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][n % 3];
        }
    }
    Tensor::from_f32_as(shape, &data, t.dtype()).unwrap()
}

/// A case with mods (`common::mods`, each kind a third of the time), over a long cache half
/// the time, with an additive mask tensor or none.
fn draw_mods(rng: &mut Rng) -> (Case, String) {
    let (lq, past) = if rng.bool(0.5) {
        (1 + rng.below(6), Some(rng.below(3000)))
    } else {
        (1 + rng.below(150), rng.bool(0.3).then(|| rng.below(200)))
    };
    let dims = dims(rng, lq, lq, past, &[1, 2, 4, 5]);
    let lt = dims.lt();
    let dtype = pick(rng, &DTYPES);
    let layout = if rng.bool(0.3) {
        Layout::Bshd
    } else {
        Layout::Bhsd
    };
    let mut case = Case::random(rng, dims, dtype, layout);
    case.opts.causal = rng.bool(0.5);
    case.opts.window_left = if rng.bool(0.3) {
        rng.below(300) as i64
    } else {
        -1
    };
    let on: [bool; 7] = std::array::from_fn(|_| rng.bool(0.3));
    case.mods = Some(mods::random(rng, on, dims.b, dims.hq, lq, lt));
    // Key lengths beside the mods (without a cache, where they are allowed).
    if past.is_none() && rng.bool(0.2) {
        case.kv_lengths = Some((0..dims.b).map(|_| rng.below(lt + 1) as i64).collect());
    }
    let mut what = String::new();
    if rng.bool(0.3) {
        let kind = 1 + rng.below(3);
        let (mask, line) = draw_mask(rng, &dims, kind);
        what = line;
        case.mask = Some(mask);
    }
    let kinds: Vec<&str> = (0..7).filter(|&i| on[i]).map(|i| mods::KINDS[i]).collect();
    let what = format!(
        "{dims:?} {dtype:?} {layout:?} mods {kinds:?} kv_lengths {:?} {:?}{what}",
        case.kv_lengths, case.opts
    );
    (case, what)
}

/// Whether `mods` can disallow positions (what a block mask records).
fn masks(mods: &MaskMods) -> bool {
    mods.segments.is_some()
        || mods.prefix_lengths.is_some()
        || mods.token_filter.is_some()
        || mods.modalities.is_some()
        || mods.mask_mod.is_some()
}

/// The f64 reference for `case`, and its largest finite |score| before any softcap (it
/// computes the scores anyway; they are dropped unless the case asks for them).
fn reference_and_largest_score(case: &Case) -> (AttentionOutput, f64) {
    let largest = |o: &AttentionOutput| {
        o.scores.as_ref().map_or(0.0, |s| {
            s.to_f32_vec()
                .iter()
                .filter(|x| x.is_finite())
                .fold(0.0f64, |a, &x| a.max(x.abs() as f64))
        })
    };
    let mut opts = case.opts.clone();
    opts.returns.scores = true;
    let mut want =
        mods::reference(&case.inputs(), &opts).unwrap_or_else(|e| panic!("reference failed: {e}"));
    // A softcap bounds the scores, not the logits' rounding: a capped score near 0 can come
    // from a logit that cancelled from terms in the thousands.
    let mut max = largest(&want);
    if opts.softcap != 0.0 {
        opts.softcap = 0.0;
        let uncapped = mods::reference(&case.inputs(), &opts)
            .unwrap_or_else(|e| panic!("reference failed: {e}"));
        max = max.max(largest(&uncapped));
    }
    if !case.opts.returns.scores {
        want.scores = None;
    }
    (want, max)
}

/// What a case ran through: `masked_attention`, or `record_attention` (`out` only).
enum Got {
    Call(Box<AttentionOutput>),
    Recorded(Tensor),
}

/// Runs `SOAK_CASES` cases drawn by `draw` on random tunings; panics listing every failing
/// case (its seed, tuning and description).
fn soak(name: &str, draw: fn(&mut Rng) -> (Case, String), reuse_block_masks: bool) {
    let env = |key: &str| std::env::var(key).ok().and_then(|s| s.parse::<u64>().ok());
    let cases = env("SOAK_CASES").unwrap_or(4);
    // A fixed default, so the suite's cases are the same on every run and a failure is never
    // one run's bad draw; SOAK_SEED draws others (the long soaks, README).
    let seed0 = env("SOAK_SEED").unwrap_or(1);
    let only = std::env::var("SOAK_TUNING").ok();
    eprintln!("{name}: {cases} cases from seed {seed0}");
    let contexts = contexts();
    let mut failures = Vec::new();
    let refused = std::cell::Cell::new(0);
    let (mut seed, mut ran) = (seed0, 0);
    while ran < cases {
        let mut rng = Rng::new(seed);
        seed += 1;
        let (case, what) = draw(&mut rng);
        // Keep the f64 reference's work to a few seconds: draw again.
        let d = &case.dims;
        if d.b * d.hq * d.lq * d.lt() * (d.d + d.dv) > 150_000_000 {
            continue;
        }
        ran += 1;
        // SOAK_TUNING names one tuning for every case (the draw is made all the same, so a
        // seed's case is the same either way).
        let drawn = rng.below(contexts.len());
        let (tuning, ctx) = match &only {
            Some(name) => contexts
                .iter()
                .find(|(t, _)| t == name)
                .unwrap_or_else(|| panic!("SOAK_TUNING={name}: no such tuning")),
            None => &contexts[drawn],
        };
        // Half the cases whose mods can disallow positions run with a block mask built
        // beforehand (`wgattn::block_mask`), as a caller reusing it across calls does.
        let reuse = reuse_block_masks && case.mods.as_ref().is_some_and(masks) && rng.bool(0.5);
        let reused = if reuse { ", block mask reused" } else { "" };
        // The small-limits tuning's binding limit, per case: requests split over batch
        // entries and heads at every size, down to parts of one query head.
        let mut tuning = tuning.to_string();
        let limit =
            (tuning == SMALL_LIMITS).then(|| pick(&mut rng, &[3 << 20, 1 << 20, 256 << 10]));
        if let Some(bytes) = limit {
            ctx.set_tuning(small_limits(bytes));
            tuning += &format!(" ({} KiB)", bytes >> 10);
        }
        // A fifth of the cases record_attention takes (no cache, no intermediates, no block
        // mask to reuse) run through it, on tensors in a caller's buffers.
        let embedded = case.past.is_none() && !case.opts.returns.any() && !reuse && rng.bool(0.2);
        let recorded = if embedded { ", recorded" } else { "" };
        let what = format!("seed {} on {tuning}{reused}{recorded}: {what}", seed - 1);
        eprintln!("{name}: {what}");
        let result = catch_unwind(AssertUnwindSafe(|| {
            let block_mask =
                match reuse.then(|| wgattn::block_mask(ctx, &case.inputs(), &case.opts)) {
                    Some(Ok(bm)) => Some(bm),
                    // Only where the fused path cannot take the request (a tight loop-trip limit
                    // at a wide head); `Auto` then runs it staged.
                    Some(Err(e)) => {
                        let mut fused = case.opts.clone();
                        fused.path = ExecutionPath::Fused;
                        assert!(
                            wgattn::masked_attention(ctx, &case.inputs(), &fused).is_err(),
                            "block_mask failed ({e}) where the fused path runs"
                        );
                        None
                    }
                    None => None,
                };
            let mut inputs = case.inputs();
            if let Some(bm) = &block_mask {
                inputs = inputs.with_block_mask(bm);
            }
            let result = if embedded {
                embed::record_case(ctx, &what, &case).map(|(out, _)| Got::Recorded(out))
            } else {
                wgattn::masked_attention(ctx, &inputs, &case.opts).map(|o| Got::Call(Box::new(o)))
            };
            let got = match result {
                Ok(got) => got,
                // What even one batch entry and query head exceeds cannot be split further
                // (the key axis is not split), and record_attention does not split: the
                // refusal must say so.
                Err(e @ Error::ExceedsLimit { .. })
                    if limit.is_some()
                        && (embedded
                            || e.to_string().contains("the smallest split")
                            || case.dims.b * case.dims.hq == 1) =>
                {
                    eprintln!("{name}: refused as expected: {e}");
                    refused.set(refused.get() + 1);
                    return;
                }
                Err(e) => panic!("GPU failed: {e}"),
            };
            let (want, largest) = reference_and_largest_score(&case);
            // An f32 logit is off by up to its ulp whatever the path; with logits in the
            // thousands that moves an f32 `out` and `probs` past their tolerance (both paths,
            // checked), and a score near 0 that cancelled from such terms too.
            let mut tols = Tols::for_dtype(case.dtype());
            if case.dtype() == DType::F32 {
                let ulp = 2.0 * f32::EPSILON as f64 * largest;
                tols.out.atol += ulp;
                tols.probs.atol += ulp;
                tols.scores.atol += ulp;
            }
            match got {
                Got::Call(got) => compare("", &got, &want, &case.opts.returns, tols),
                Got::Recorded(out) => assert_close("out (recorded)", &out, &want.out, tols.out),
            }
        }));
        if result.is_err() {
            failures.push(what);
        }
    }
    eprintln!(
        "{name}: {cases} cases, {} failed, {} refused as over the small limits",
        failures.len(),
        refused.get()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_cases_on_every_tuning_equal_the_reference() {
    soak("soak", draw, false);
}

#[test]
fn random_mods_on_every_tuning_equal_the_reference() {
    soak("soak mods", draw_mods, true);
}
