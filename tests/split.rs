//! Requests over the binding limit, split over batch entries and heads: the same result as
//! the reference and as an unsplit run, on both paths. `Tuning::max_binding_bytes` lowers
//! the limit so the splits happen at small sizes.
//!
//! Sizes used below (f32, Lq = 7, Lt = 13, D = Dv = 12), in bytes: per query head q and out
//! 336, staged scores and a full mask 364; per key/value head k and v 624 (the fused path
//! binds `[past, k]`, the staged path `past` and `k` apart).
mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};

use common::*;
use wgattn::{
    masked_attention, masked_attention_async, AttentionInputs, AttentionOptions, AttentionOutput,
    Context, DType, Error, ExecutionPath, Layout, Returns, Tensor, Tuning,
};

const PATHS: [ExecutionPath; 2] = [ExecutionPath::Staged, ExecutionPath::Fused];

/// One case at a time: software devices submitting at once oversubscribe the two cores, and
/// the memory test reads the split context's statistics.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The context whose binding limit the tests lower (only under [`serial`]).
fn split_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| tuned_context(Tuning::AUTO))
}

fn limit(bytes: Option<u64>) -> Tuning {
    Tuning {
        max_binding_bytes: bytes,
        ..Default::default()
    }
}

/// Runs `case` on `path` with the binding limit lowered to `max` and checks it against the
/// reference and against an unsplit run on a context with the device's limit. The staged
/// path computes each element the same way whatever the part, so it matches bit for bit; the
/// fused path's key splits depend on the number of rows, so it matches within tolerance.
fn check_split(name: &str, case: &Case, path: ExecutionPath, max: u64) -> AttentionOutput {
    let case = case.clone().path(path);
    let what = format!("{name} {path:?}");
    let _serial = serial();
    split_ctx().set_tuning(limit(Some(max)));
    let got = masked_attention(split_ctx(), &case.inputs(), &case.opts)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let tols = Tols::for_dtype(case.dtype());
    compare(&what, &got, &case.reference(), &case.opts.returns, tols);
    let whole = masked_attention(ctx(), &case.inputs(), &case.opts)
        .unwrap_or_else(|e| panic!("{what} unsplit: {e}"));
    match path {
        ExecutionPath::Staged => assert_same_bits(&what, &got, &whole),
        _ => compare(&what, &got, &whole, &case.opts.returns, tols),
    }
    got
}

fn case(seed: u64, dims: Dims, layout: Layout) -> Case {
    Case::random(&mut Rng::new(seed), dims, DType::F32, layout)
}

#[test]
fn batch_split_with_a_broadcast_bool_mask() {
    // One batch entry: q 672, k 624, scores 728. Two fit in 1500, four do not: 2 parts.
    let dims = Dims::new(4, 2, 7, 13, 12).heads(2, 1);
    let mut rng = Rng::new(1);
    let mask = random_bool_mask(&mut rng, &[4, 1, 1, 13], 0.7);
    let c = case(2, dims, Layout::Bhsd)
        .with_mask(mask)
        .with_opts(|o| o.causal = true);
    for path in PATHS {
        check_split("batch split, bool mask [B, 1, 1, Lt]", &c, path, 1500);
    }
    // The async entry point splits the same way.
    let _serial = serial();
    split_ctx().set_tuning(limit(Some(1500)));
    let c = c.staged();
    let got = pollster::block_on(masked_attention_async(split_ctx(), &c.inputs(), &c.opts))
        .unwrap_or_else(|e| panic!("async: {e}"));
    let whole = masked_attention(ctx(), &c.inputs(), &c.opts).unwrap();
    assert_same_bits("async batch split", &got, &whole);
}

#[test]
fn kv_head_split_in_bshd() {
    // Hq = 4, Hkv = 2: one key/value head with its 2 query heads is q 672, k 624, scores 728,
    // under 1000; one batch entry (q 1344) is not. 2 parts per batch entry.
    let dims = Dims::new(2, 4, 7, 13, 12).heads(4, 2);
    let c = case(3, dims, Layout::Bshd).with_opts(|o| o.causal = true);
    for path in PATHS {
        check_split("kv-head split, bshd", &c, path, 1000);
    }
}

#[test]
fn query_head_split_with_a_full_additive_mask() {
    // Hq = 6, Hkv = 2: a group of 3 query heads is q 1008, over 800; 2 of them (q 672, mask
    // 728) fit. Each group takes parts of 2 and 1 query heads sharing their key/value head;
    // the mask is sliced on its batch and head axes.
    let dims = Dims::new(2, 6, 7, 13, 12).heads(6, 2);
    let mut rng = Rng::new(4);
    let mask = random_additive_mask(&mut rng, &[2, 6, 7, 13], DType::F32, 2.0, 0.2);
    let c = case(5, dims, Layout::Bhsd).with_mask(mask);
    for path in PATHS {
        check_split("query-head split, additive [B, H, Lq, Lt]", &c, path, 800);
    }
}

#[test]
fn kv_cache_split_stitches_present() {
    // P = 5, Lk = 8: as the query-head split above, with `present_k`/`present_v` of each key
    // value head written by the two parts that share it; causal from offset P.
    let dims = Dims::new(2, 6, 7, 8, 12).heads(6, 2).past(5);
    let c = case(6, dims, Layout::Bhsd).with_opts(|o| o.causal = true);
    for path in PATHS {
        let got = check_split("kv cache split", &c, path, 800);
        assert_eq!(
            got.present_k.map(|t| t.shape().to_vec()),
            Some(vec![2, 2, 13, 12])
        );
    }
}

#[test]
fn kv_lengths_split_over_batches() {
    // Hq = Hkv = 2: one batch entry is q 672, k 1248, under 1300; two are not. Causal with key
    // lengths (offset kv_len - Lq); the last entry is fully masked.
    let dims = Dims::new(3, 2, 7, 13, 12);
    let c = case(7, dims, Layout::Bhsd)
        .with_kv_lengths(vec![13, 9, 0])
        .with_opts(|o| o.causal = true);
    for path in PATHS {
        check_split("kv_lengths batch split", &c, path, 1300);
    }
}

#[test]
fn staged_intermediates_split_by_the_read_back() {
    // Every intermediate: the read-back of one query head is out 336 + 3 x 364 = 1428, of two
    // 2856. Under 1500 each query head is a part of its own; softcap and causal too.
    let dims = Dims::new(1, 6, 7, 13, 12).heads(6, 2);
    let c = case(8, dims, Layout::Bhsd).all_returns().with_opts(|o| {
        o.causal = true;
        o.softcap = 2.0;
    });
    let got = check_split("intermediates split", &c, ExecutionPath::Staged, 1500);
    assert!(got.probs.is_some() && got.scores.is_some() && got.logits.is_some());
    // Auto with an intermediate takes the staged path, split the same way.
    let probs = c.with_opts(|o| {
        o.returns = Returns {
            probs: true,
            ..Default::default()
        }
    });
    check_split("probs split", &probs, ExecutionPath::Auto, 1000);
}

/// The `ExceedsLimit` of a request, with its fields checked against `what` and `requested`.
fn expect_limit(r: wgattn::Result<AttentionOutput>, what: &str, requested: u64, max: u64) -> Error {
    let e = match r {
        Ok(_) => panic!("a request over the limit ({what}) was accepted"),
        Err(e) => e,
    };
    match &e {
        Error::ExceedsLimit {
            what: w,
            requested: r,
            max: m,
            ..
        } => {
            assert!(w.contains(what), "{e}");
            assert_eq!((*r, *m), (requested, max), "{e}");
            let text = e.to_string();
            for s in ["exceeds limit", &requested.to_string(), &max.to_string()] {
                assert!(text.contains(s), "{text} does not mention {s}");
            }
        }
        _ => panic!("expected ExceedsLimit, got {e:?}"),
    }
    e
}

#[test]
fn one_unit_over_the_limit_fails_naming_the_binding_and_limit() {
    let _serial = serial();
    let c = split_ctx();
    // Staged, D = 4: one query head's scores (7 x 13 x 4 = 364 bytes) exceed 300, while its
    // q (112) and k (208) fit.
    c.set_tuning(limit(Some(300)));
    let small = case(9, Dims::new(2, 2, 7, 13, 4).heads(2, 1), Layout::Bhsd).staged();
    let e = expect_limit(
        masked_attention(c, &small.inputs(), &small.opts),
        "staged scores [B, Hq, Lq, Lt] = [1, 1, 7, 13] in f32",
        364,
        300,
    );
    match &e {
        Error::ExceedsLimit { what, limit, .. } => {
            assert!(what.contains("smallest split"), "{e}");
            assert!(limit.contains("max_binding_bytes"), "{e}");
            assert!(limit.starts_with("max_storage_buffer_binding_size"), "{e}");
        }
        _ => unreachable!(),
    }
    // Fused, D = 12: the keys of one head (624) exceed 600.
    c.set_tuning(limit(Some(600)));
    let fused =
        case(10, Dims::new(2, 2, 7, 13, 12).heads(2, 1), Layout::Bhsd).path(ExecutionPath::Fused);
    expect_limit(
        masked_attention(c, &fused.inputs(), &fused.opts),
        "k",
        624,
        600,
    );
    // The context still runs what fits.
    c.set_tuning(limit(Some(1 << 20)));
    let got = masked_attention(c, &fused.inputs(), &fused.opts).unwrap();
    compare(
        "after the refusals",
        &got,
        &fused.reference(),
        &Returns::default(),
        Tols::for_dtype(DType::F32),
    );
}

#[test]
fn staged_one_head_of_65536_squared_is_refused_as_before() {
    // Scores [1, 1, 65536, 65536] in f32 are 16 GiB: over any device's binding limit (the
    // engine's indices stop at 4 GiB). A single unit keeps the unsplit message; with more
    // heads the message says the smallest split was tried. Nothing is allocated.
    let l = 65536;
    let mut rng = Rng::new(11);
    let t = |rng: &mut Rng, h: usize| random(rng, &[1, h, l, 4], DType::F16, 1.0);
    let (k, v) = (t(&mut rng, 1), t(&mut rng, 1));
    let opts = AttentionOptions {
        path: ExecutionPath::Staged,
        ..Default::default()
    };
    let _serial = serial();
    let one = t(&mut rng, 1);
    let e = masked_attention(ctx(), &AttentionInputs::new(&one, &k, &v), &opts).unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(
            "staged scores [B, Hq, Lq, Lt] = [1, 1, 65536, 65536] in f32 exceeds limit \
             max_storage_buffer_binding_size: needs 17179869184, the device allows"
        ),
        "{text}"
    );
    let two: Tensor = t(&mut rng, 2);
    let e = masked_attention(ctx(), &AttentionInputs::new(&two, &k, &v), &opts).unwrap_err();
    assert!(e.to_string().contains("smallest split"), "{e}");
}

#[test]
fn split_run_holds_one_part_of_gpu_memory() {
    // Four batch entries in two equal parts (as in the batch split above): the second part
    // reuses the first one's buffers, so the high-water mark is that of one part run alone,
    // and below that of the whole request.
    let dims = Dims::new(4, 2, 7, 13, 12).heads(2, 1);
    let whole = case(12, dims, Layout::Bhsd).staged();
    let half = case(12, Dims { b: 2, ..dims }, Layout::Bhsd).staged();
    let _serial = serial();
    let c = split_ctx();
    let peak = |case: &Case, max: Option<u64>| {
        c.set_tuning(limit(max));
        c.trim_memory();
        masked_attention(c, &case.inputs(), &case.opts).unwrap_or_else(|e| panic!("{e}"));
        c.memory().peak_bytes
    };
    let split = peak(&whole, Some(1500));
    let part = peak(&half, None);
    let unsplit = peak(&whole, None);
    assert!(split <= part, "split {split} > one part {part}");
    assert!(split < unsplit, "split {split} >= unsplit {unsplit}");
    c.set_tuning(limit(None));
}

/// Every mod, split over batch entries and then over single query heads: per-batch tables
/// cut to the part, ALiBi slopes to its heads, and the user's snippet seeing the request's
/// batch and head indices (it reads both, and an aux tensor indexed by them).
#[test]
fn mods_split_over_batches_and_heads() {
    let dims = Dims::new(4, 4, 7, 13, 12).heads(4, 2);
    let mut rng = Rng::new(80);
    let (b, lq, lt) = (4usize, 7usize, 13usize);
    let kv_seg: Vec<i64> = (0..b * lt).map(|x| ((x % lt) / 5) as i64).collect();
    let q_seg: Vec<i64> = (0..b * lq)
        .map(|x| ((x % lq + lt - lq) / 5) as i64)
        .collect();
    let weights: Vec<f32> = (0..16).map(|_| rng.uniform()).collect();
    let mods = wgattn::MaskMods {
        segments: Some(wgattn::Segments {
            q: q_seg,
            kv: kv_seg,
        }),
        prefix_lengths: Some(vec![3, 0, 13, 5]),
        alibi: Some(wgattn::Alibi::default()),
        token_filter: Some(wgattn::TokenFilter {
            kv_token_ids: (0..b * lt).map(|x| (x * 5 % 11) as i64).collect(),
            blocked: wgattn::BlockedTokens::Ids(vec![2]),
        }),
        mask_mod: Some("return (k + b + h) % 5u != 1u;".into()),
        score_mod: Some("return s + aux_w[b * 4u + h];".into()),
        aux: vec![wgattn::Aux::f32("w", weights.clone())],
        ..Default::default()
    };
    let base = Case {
        mods: Some(mods),
        ..case(81, dims, Layout::Bhsd)
    };
    let mask = |b: usize, h: usize, _q: usize, k: usize| (k + b + h) % 5 != 1;
    let score =
        move |s: f64, b: usize, h: usize, _q: usize, _k: usize| s + weights[b * 4 + h] as f64;
    let rust = wgattn::reference::RustMods {
        mask_mod: Some(&mask),
        score_mod: Some(&score),
    };
    for path in PATHS {
        let c = base.clone().path(path);
        let want = wgattn::reference::masked_attention_with(&c.inputs(), &c.opts, rust).unwrap();
        let whole = masked_attention(ctx(), &c.inputs(), &c.opts).unwrap();
        for max in [1500, 700] {
            let what = format!("mods {path:?} max {max}");
            let _serial = serial();
            split_ctx().set_tuning(limit(Some(max)));
            let got = masked_attention(split_ctx(), &c.inputs(), &c.opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            split_ctx().set_tuning(limit(None));
            let tols = Tols::for_dtype(DType::F32);
            compare(&what, &got, &want, &c.opts.returns, tols);
            match path {
                ExecutionPath::Staged => assert_same_bits(&what, &got, &whole),
                _ => compare(&what, &got, &whole, &c.opts.returns, tols),
            }
        }
    }
}

/// The planner judges each part with its mods: mods that mask change the fused kernel's
/// configuration (one query row per decode workgroup, no long decode blocks, more key
/// splits) and add tables to bind. Judged without them, one query head's part of this
/// request seemed to fit whole under 3 MiB, and the run then refused its 3.25 MB of partials
/// (found by tests/soak.rs, seed 9500179).
#[test]
fn mods_that_mask_are_judged_with_the_parts() {
    let dims = Dims::new(1, 5, 125, 125, 256).heads(5, 1).past(175);
    let mut rng = Rng::new(9500179);
    let mut on = [false; 7];
    on[4] = true; // modalities
    let mods = common::mods::random(&mut rng, on, 1, 5, 125, dims.lt());
    let c = Case {
        mods: Some(mods),
        ..case(9500179, dims, Layout::Bhsd)
    };
    for path in PATHS {
        for max in [3 << 20, 1 << 20] {
            check_split(&format!("modalities max {max}"), &c, path, max);
        }
    }
}

/// The mods' tables count in the planner's judgement: here they are the largest binding
/// (four words per batch entry and key against one word of k per key at `D = 1`), so the
/// fused request splits over batch entries where before it ran whole and its tables were
/// refused.
#[test]
fn mods_tables_are_judged_with_the_parts() {
    let dims = Dims::new(4, 1, 7, 13, 1);
    let mut rng = Rng::new(84);
    let mut on = [false; 7];
    on[0] = true; // segments
    let mods = common::mods::random(&mut rng, on, 4, 1, 7, 13);
    let c = Case {
        mods: Some(mods),
        ..case(85, dims, Layout::Bshd)
    };
    for path in PATHS {
        check_split("segments tables", &c, path, 600);
    }
}

/// The planner judges each batch range with its own key lengths: the fused prefill kernel's
/// key splits (and so its partials) follow the widest key range a tile sees, so a part of the
/// long entry needs more than one of the short entry. Judged by the first entries' lengths
/// for every range, a part of the second entry was planned to fit and then refused.
#[test]
fn key_lengths_of_every_batch_range_are_judged() {
    let dims = Dims::new(2, 4, 200, 3000, 64).heads(4, 1);
    let c = case(86, dims, Layout::Bhsd).with_kv_lengths(vec![10, 3000]);
    check_split("short then long keys", &c, ExecutionPath::Fused, 2_500_000);
    let c = case(87, dims, Layout::Bhsd).with_kv_lengths(vec![3000, 10]);
    check_split("long then short keys", &c, ExecutionPath::Fused, 2_500_000);
}
