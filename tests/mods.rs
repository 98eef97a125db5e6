//! Structured masks (segments, prefix-LM, ALiBi, token filters, modalities) and user WGSL
//! mask_mod / score_mod, on both GPU paths, against the CPU reference (which gets the snippets
//! as Rust closures): alone and combined, odd sizes, GQA, caches, fully masked rows. Plus the
//! block mask: its counts, its reuse, and what a mismatched one does.

mod common;

#[allow(dead_code)]
#[path = "../examples/custom_mask.rs"]
mod custom_mask_example;

use common::{compare, ctx, subgroup_keys_ctx, Case, Dims, Rng, Tols, ALL_RETURNS};
use wgattn::reference::{self, RustMods};
use wgattn::{
    masked_attention, Alibi, Aux, BlockedTokens, DType, Error, ExecutionPath, Layout, Mask,
    MaskMods, Modalities, Segments, Tensor, TokenFilter,
};

type MaskFn = dyn Fn(usize, usize, usize, usize) -> bool + Sync;
type ScoreFn = dyn Fn(f64, usize, usize, usize, usize) -> f64 + Sync;

/// Runs `case` (with its mods) on the staged path (with every intermediate), the fused path
/// (the adapter's configuration, and every query length on the decode kernel with a subgroup
/// per key) and the reference with the given closures, and compares.
fn check(case: &Case, mask: Option<&MaskFn>, score: Option<&ScoreFn>) {
    let rust = RustMods {
        mask_mod: mask,
        score_mod: score,
    };
    let tols = Tols::for_dtype(case.dtype());
    for (path, returns, cx) in [
        (ExecutionPath::Staged, ALL_RETURNS, ctx()),
        (ExecutionPath::Fused, Default::default(), ctx()),
        (
            ExecutionPath::Fused,
            Default::default(),
            subgroup_keys_ctx(),
        ),
    ] {
        let c = case.clone().with_opts(|o| {
            o.path = path;
            o.returns = returns;
        });
        let got = masked_attention(cx, &c.inputs(), &c.opts)
            .unwrap_or_else(|e| panic!("{path:?} failed on {:?}: {e}", c.dims));
        let want = reference::masked_attention_with(&c.inputs(), &c.opts, rust)
            .unwrap_or_else(|e| panic!("reference failed on {:?}: {e}", c.dims));
        compare(
            &format!("{path:?} {:?}", c.dims),
            &got,
            &want,
            &c.opts.returns,
            tols,
        );
        // The online reference agrees with the three-stage one.
        let online = reference::masked_attention_online_with(&c.inputs(), &c.opts, rust).unwrap();
        common::assert_close("online reference", &online.out, &want.out, tols.out);
    }
}

/// Sorted ids in `0..n` over `len` positions per batch entry (packed documents).
fn packed(rng: &mut Rng, batch: usize, len: usize, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..batch {
        let mut row: Vec<i64> = (0..len).map(|_| rng.below(n) as i64).collect();
        row.sort_unstable();
        ids.extend(row);
    }
    ids
}

fn with_mods(case: Case, mods: MaskMods) -> Case {
    Case {
        mods: Some(mods),
        ..case
    }
}

#[test]
fn segments_alone_and_causal_odd_sizes() {
    let mut rng = Rng::new(61);
    for (dims, dtype, causal) in [
        (Dims::new(2, 3, 37, 37, 16), DType::F32, true),
        (Dims::new(1, 2, 70, 70, 8).v_dim(12), DType::F16, false),
        (Dims::new(2, 4, 3, 45, 8).heads(4, 2), DType::F32, false),
    ] {
        let lt = dims.lt();
        let case =
            Case::random(&mut rng, dims, dtype, Layout::Bhsd).with_opts(|o| o.causal = causal);
        let seg = packed(&mut rng, dims.b, lt.max(dims.lq), 4);
        // Query segments: those of the last Lq keys (the block sits at the end).
        let q: Vec<i64> = (0..dims.b)
            .flat_map(|b| seg[b * lt + lt - dims.lq..(b + 1) * lt].to_vec())
            .collect();
        let mods = MaskMods {
            segments: Some(Segments {
                q,
                kv: seg[..dims.b * lt].to_vec(),
            }),
            ..Default::default()
        };
        check(&with_mods(case, mods), None, None);
    }
    // A sliding window over several query tiles: the tiles' key ranges start off the block
    // mask's grid, which the kernel must align to.
    let dims = Dims::new(1, 1, 600, 600, 8);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_opts(|o| {
        o.causal = true;
        o.window_left = 100;
    });
    let seg = packed(&mut rng, 1, 600, 3);
    let mods = MaskMods {
        segments: Some(Segments {
            q: seg.clone(),
            kv: seg,
        }),
        ..Default::default()
    };
    check(&with_mods(case, mods), None, None);
}

#[test]
fn prefix_lm_with_cache_and_key_lengths() {
    let mut rng = Rng::new(62);
    // With a cache the query block sits after P keys: causal after the prefix uses that offset.
    let dims = Dims::new(2, 2, 9, 9, 8).past(11);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
    let mods = MaskMods {
        prefix_lengths: Some(vec![13, 0]),
        ..Default::default()
    };
    check(&with_mods(case, mods), None, None);
    // Key lengths (offset kv_len - Lq), bshd, a prefix covering everything for one entry.
    let dims = Dims::new(3, 2, 21, 21, 8);
    let case =
        Case::random(&mut rng, dims, DType::BF16, Layout::Bshd).with_kv_lengths(vec![21, 15, 9]);
    let mods = MaskMods {
        prefix_lengths: Some(vec![5, 21, 0]),
        ..Default::default()
    };
    check(&with_mods(case, mods), None, None);
}

#[test]
fn alibi_default_custom_and_symmetric() {
    let mut rng = Rng::new(63);
    let dims = Dims::new(1, 6, 33, 33, 16).heads(6, 2);
    let case =
        Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_opts(|o| o.causal = true);
    let mods = MaskMods {
        alibi: Some(Alibi::default()),
        ..Default::default()
    };
    check(&with_mods(case, mods), None, None);
    // Decode against a cache, symmetric, own slopes, with a window.
    let dims = Dims::new(2, 3, 2, 2, 8).past(40);
    let case =
        Case::random(&mut rng, dims, DType::F16, Layout::Bhsd).with_opts(|o| o.window_left = 17);
    let mods = MaskMods {
        alibi: Some(Alibi {
            slopes: Some(vec![0.5, 0.125, 0.03]),
            symmetric: true,
        }),
        ..Default::default()
    };
    check(&with_mods(case, mods), None, None);
}

#[test]
fn token_filters_by_id_and_by_class_with_a_fully_masked_row() {
    let mut rng = Rng::new(64);
    let dims = Dims::new(2, 2, 19, 19, 8);
    let lt = dims.lt();
    let mut ids: Vec<i64> = (0..2 * lt).map(|_| rng.below(12) as i64).collect();
    // Batch entry 1 holds blocked tokens only: every one of its rows is fully masked.
    for id in &mut ids[lt..] {
        *id = 3;
    }
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
    let mods = MaskMods {
        token_filter: Some(TokenFilter {
            kv_token_ids: ids.clone(),
            blocked: BlockedTokens::Ids(vec![3, 7, 3, 11]),
        }),
        ..Default::default()
    };
    let (got, _) = {
        let c = with_mods(case.clone(), mods);
        check(&c, None, None);
        (masked_attention(ctx(), &c.inputs(), &c.opts).unwrap(), ())
    };
    let out = got.out.to_f32_vec();
    assert!(
        out[out.len() / 2..].iter().all(|&x| x == 0.0),
        "fully masked rows are 0"
    );
    // A class table: ids 0..12 in classes id % 4; class 1 (ids 1, 5, 9) blocked.
    let mods = MaskMods {
        token_filter: Some(TokenFilter {
            kv_token_ids: ids.iter().map(|&x| x % 12).collect(),
            blocked: BlockedTokens::Classes {
                class_of: (0..12).map(|i| i % 4).collect(),
                blocked: vec![1],
            },
        }),
        ..Default::default()
    };
    check(
        &with_mods(case.with_opts(|o| o.causal = true), mods),
        None,
        None,
    );
}

/// Image tokens (modality 0) see each other bidirectionally and no text; text (1) is causal
/// and sees the image before it.
fn vision_language(batch: usize, lq: usize, lt: usize, image: usize) -> Modalities {
    let ids = |len: usize, off: usize| -> Vec<u32> {
        (0..batch)
            .flat_map(|_| (0..len).map(move |i| u32::from(i + off >= image)))
            .collect()
    };
    Modalities {
        q: ids(lq, lt - lq),
        kv: ids(lt, 0),
        allow: vec![true, false, true, true],
        causal: vec![false, true],
    }
}

#[test]
fn modalities_image_bidirectional_text_causal() {
    let mut rng = Rng::new(65);
    for (dims, dtype) in [
        (Dims::new(2, 2, 29, 29, 8), DType::F32),
        (Dims::new(1, 4, 3, 3, 16).heads(4, 1).past(30), DType::F16),
    ] {
        let case = Case::random(&mut rng, dims, dtype, Layout::Bhsd);
        let mods = MaskMods {
            modalities: Some(vision_language(dims.b, dims.lq, dims.lt(), 12)),
            ..Default::default()
        };
        check(&with_mods(case, mods), None, None);
    }
}

#[test]
fn user_mask_mod_with_aux_tensors() {
    let mut rng = Rng::new(66);
    let dims = Dims::new(2, 3, 41, 41, 8);
    let lt = dims.lt();
    let docs = packed(&mut rng, 2, lt, 5);
    let docs32: Vec<i32> = docs.iter().map(|&x| x as i32).collect();
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
    // Same document, causal, and head 1 also blocks even keys: reads b, h, q, k and aux.
    let mods = MaskMods {
        mask_mod: Some(
            "let base = b * 41u;\n\
             if (h == 1u && k % 2u == 0u) { return false; }\n\
             return aux_doc[base + q] == aux_doc[base + k] && k <= q;"
                .into(),
        ),
        aux: vec![Aux::i32("doc", docs32)],
        ..Default::default()
    };
    let mask = move |b: usize, h: usize, q: usize, k: usize| {
        !(h == 1 && k.is_multiple_of(2)) && docs[b * 41 + q] == docs[b * 41 + k] && k <= q
    };
    check(&with_mods(case, mods), Some(&mask), None);
}

#[test]
fn user_score_mod_and_its_minus_infinity() {
    let mut rng = Rng::new(67);
    let dims = Dims::new(1, 2, 23, 23, 8);
    let bias: Vec<f32> = (0..23).map(|_| rng.uniform() * 2.0).collect();
    let case =
        Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_opts(|o| o.softcap = 4.0);
    // A per-key bias from aux, and -inf (removing the key) for keys after the query on head 0;
    // query 5 of head 1 loses every key: a fully masked row by score_mod alone.
    let mods = MaskMods {
        score_mod: Some(
            "if ((h == 0u && k > q) || (h == 1u && q == 5u)) { return minus_infinity(); }\n\
             return s * 0.5 + aux_bias[k];"
                .into(),
        ),
        aux: vec![Aux::f32("bias", bias.clone())],
        ..Default::default()
    };
    let score = move |s: f64, _b: usize, h: usize, q: usize, k: usize| {
        if (h == 0 && k > q) || (h == 1 && q == 5) {
            f64::NEG_INFINITY
        } else {
            s * 0.5 + bias[k] as f64
        }
    };
    let c = with_mods(case, mods);
    check(&c, None, Some(&score));
    let out = masked_attention(ctx(), &c.inputs(), &c.opts)
        .unwrap()
        .out
        .to_f32_vec();
    let row = (23 + 5) * 8;
    assert!(
        out[row..row + 8].iter().all(|&x| x == 0.0),
        "row removed by score_mod is 0"
    );
}

/// A key the score_mod removes (-inf) is -inf whatever the mask holds there: NaN or +inf in an
/// additive mask at a removed key leaves the row as a 0 there would (it is selected away,
/// not added to), on every path and in both references; elsewhere a NaN still makes its row
/// NaN. Prefill (Lq = 9) and decode (Lq = 1).
#[test]
fn a_key_the_score_mod_removes_ignores_non_finite_mask_values() {
    for lq in [9, 1] {
        let mut rng = Rng::new(68);
        let (h, lk) = (2, 9);
        let case = Case::random(
            &mut rng,
            Dims::new(1, h, lq, lk, 8),
            DType::F32,
            Layout::Bhsd,
        );
        let mods = MaskMods {
            score_mod: Some("if (k % 4u == 1u) { return minus_infinity(); }\nreturn s;".into()),
            ..Default::default()
        };
        let score = |s: f64, _b: usize, _h: usize, _q: usize, k: usize| {
            if k % 4 == 1 {
                f64::NEG_INFINITY
            } else {
                s
            }
        };
        // [1, H, Lq, Lk]: NaN at removed key 1 and +inf at removed key 5 of every row of head
        // 0; head 1 also has NaN at key 2 (not removed) of its last row.
        let mut data: Vec<f32> = (0..h * lq * lk).map(|_| rng.uniform()).collect();
        let clean = data.clone();
        for i in 0..lq {
            data[i * lk + 1] = f32::NAN;
            data[i * lk + 5] = f32::INFINITY;
        }
        data[(2 * lq - 1) * lk + 2] = f32::NAN;
        let additive =
            |x: &[f32]| Mask::Additive(Tensor::from_f32_as([1, h, lq, lk], x, DType::F32).unwrap());
        let c = with_mods(case.clone().with_mask(additive(&data)), mods.clone());
        check(&c, None, Some(&score));
        let got = masked_attention(ctx(), &c.inputs(), &c.opts)
            .unwrap()
            .out
            .to_f32_vec();
        let mut zeros = clean;
        for i in 0..lq {
            zeros[i * lk + 1] = 0.0;
            zeros[i * lk + 5] = 0.0;
        }
        let c0 = with_mods(case.with_mask(additive(&zeros)), mods);
        let want = masked_attention(ctx(), &c0.inputs(), &c0.opts)
            .unwrap()
            .out
            .to_f32_vec();
        let rows = lq * 8;
        assert_eq!(
            got[..rows],
            want[..rows],
            "lq {lq}: head 0 as with 0 at the removed keys"
        );
        let last = &got[(2 * lq - 1) * 8..];
        assert!(
            last.iter().all(|x| x.is_nan()),
            "lq {lq}: a NaN at a kept key: {last:?}"
        );
        assert!(
            got[..(2 * lq - 1) * 8].iter().all(|x| x.is_finite()),
            "lq {lq}"
        );
    }
}

#[test]
fn everything_combined_prefill_and_decode() {
    let mut rng = Rng::new(68);
    for (dims, dtype) in [
        (Dims::new(2, 4, 38, 38, 12).heads(4, 2), DType::F32),
        (Dims::new(2, 4, 2, 2, 16).heads(4, 2).past(45), DType::F16),
    ] {
        let (lq, lt) = (dims.lq, dims.lt());
        let seg = packed(&mut rng, dims.b, lt, 3);
        let q_seg: Vec<i64> = (0..dims.b)
            .flat_map(|b| seg[b * lt + lt - lq..(b + 1) * lt].to_vec())
            .collect();
        let ids: Vec<i64> = (0..dims.b * lt).map(|_| rng.below(20) as i64).collect();
        let mask_shape = [dims.b, 1, lq, lt];
        let case = Case::random(&mut rng, dims, dtype, Layout::Bhsd)
            .with_mask(common::random_additive_mask(
                &mut rng,
                &mask_shape,
                DType::F32,
                0.5,
                0.1,
            ))
            .with_opts(|o| o.window_left = 30);
        let mods = MaskMods {
            segments: Some(Segments { q: q_seg, kv: seg }),
            prefix_lengths: Some(vec![4, 0]),
            alibi: Some(Alibi::default()),
            token_filter: Some(TokenFilter {
                kv_token_ids: ids,
                blocked: BlockedTokens::Ids(vec![0, 19]),
            }),
            modalities: Some(vision_language(dims.b, lq, lt, 6)),
            mask_mod: Some("return (q + k + h) % 7u != 3u;".into()),
            score_mod: Some("return s + 0.01 * f32(b);".into()),
            aux: vec![],
        };
        let mask = |_b: usize, h: usize, q: usize, k: usize| (q + k + h) % 7 != 3;
        let score = |s: f64, b: usize, _h: usize, _q: usize, _k: usize| s + 0.01 * b as f64;
        check(&with_mods(case, mods), Some(&mask), Some(&score));
    }
}

/// The per-tile classification the block mask should find, from the reference's allowed
/// positions (of the mods only: no structured masks in these cases).
fn expected_counts(allowed: &[bool], lq: usize, lt: usize, rows: usize, keys: usize) -> [u64; 3] {
    let mut counts = [0u64; 3];
    for qt in 0..lq.div_ceil(rows) {
        for kt in 0..lt.div_ceil(keys) {
            let mut seen = (false, false);
            for i in qt * rows..((qt + 1) * rows).min(lq) {
                for j in kt * keys..((kt + 1) * keys).min(lt) {
                    if allowed[i * lt + j] {
                        seen.0 = true;
                    } else {
                        seen.1 = true;
                    }
                }
            }
            counts[match seen {
                (true, false) => 1,
                (false, _) => 0,
                _ => 2,
            }] += 1;
        }
    }
    counts
}

#[test]
fn block_mask_counts_reuse_and_mismatch() {
    let mut rng = Rng::new(69);
    let dims = Dims::new(1, 2, 300, 300, 8);
    let lt = dims.lt();
    // Eight documents of uneven lengths.
    let docs: Vec<i64> = (0..lt as i64).map(|j| (j * 8 / lt as i64).min(7)).collect();
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).path(ExecutionPath::Fused);
    let mods = MaskMods {
        segments: Some(Segments {
            q: docs.clone(),
            kv: docs.clone(),
        }),
        ..Default::default()
    };
    let c = with_mods(case, mods);
    let bm = wgattn::block_mask(ctx(), &c.inputs(), &c.opts).unwrap();
    let (rows, keys) = bm.block_size();
    // Segments do not depend on the head: one head's worth of blocks.
    let allowed = reference::allowed(&c.inputs(), &c.opts).unwrap();
    let want = expected_counts(&allowed[..dims.lq * lt], dims.lq, lt, rows, keys);
    let got = bm.counts();
    assert_eq!(
        [got.empty, got.full, got.partial],
        want,
        "tiles {rows}x{keys}"
    );
    assert!(got.empty > 0 && got.partial > 0);

    // Reused: the same bits as classifying again.
    let fresh = masked_attention(ctx(), &c.inputs(), &c.opts).unwrap();
    let reused = masked_attention(ctx(), &c.inputs().with_block_mask(&bm), &c.opts).unwrap();
    common::assert_same_bits("reused block mask", &reused, &fresh);
    let want = c.reference();
    common::assert_close(
        "block-masked out",
        &fresh.out,
        &want.out,
        Tols::for_dtype(DType::F32).out,
    );

    // Other documents: the block mask no longer fits and the call says so.
    let mut other = c.clone();
    if let Some(m) = other.mods.as_mut() {
        m.segments = Some(Segments {
            q: vec![0; lt],
            kv: vec![0; lt],
        });
    }
    match masked_attention(ctx(), &other.inputs().with_block_mask(&bm), &other.opts) {
        Err(Error::BlockMaskMismatch(_)) => {}
        r => panic!(
            "expected BlockMaskMismatch, got {:?}",
            r.map(|o| o.out.shape().to_vec())
        ),
    }
    // On another context: refused. wgpu resolves a buffer by an id that repeats across
    // instances, so that context's device would have read one of its own buffers instead.
    let other_ctx = wgattn::Context::new().expect("a second context");
    match masked_attention(&other_ctx, &c.inputs().with_block_mask(&bm), &c.opts) {
        Err(Error::BlockMaskMismatch(why)) => assert!(why.contains("another context"), "{why}"),
        r => panic!(
            "expected BlockMaskMismatch, got {:?}",
            r.map(|o| o.out.shape().to_vec())
        ),
    }
    // ALiBi alone disallows nothing: no block mask to build.
    let alibi = with_mods(
        c.clone(),
        MaskMods {
            alibi: Some(Alibi::default()),
            ..Default::default()
        },
    );
    assert!(matches!(
        wgattn::block_mask(ctx(), &alibi.inputs(), &alibi.opts),
        Err(Error::InvalidCombination(_))
    ));
}

#[test]
fn bad_snippets_and_bad_tables_are_typed_errors() {
    let mut rng = Rng::new(70);
    let case = Case::random(&mut rng, Dims::new(1, 1, 4, 4, 4), DType::F32, Layout::Bhsd);
    let run = |mods: MaskMods| {
        let c = with_mods(case.clone(), mods);
        masked_attention(ctx(), &c.inputs(), &c.opts).map(|_| ())
    };
    match run(MaskMods {
        mask_mod: Some("let a = 1u;\nreturn a == ;".into()),
        ..Default::default()
    }) {
        Err(Error::InvalidSnippet {
            snippet: "mask_mod",
            line: Some(2),
            ..
        }) => {}
        r => panic!("expected a snippet error on line 2, got {r:?}"),
    }
    match run(MaskMods {
        score_mod: Some("return s + 1u;".into()),
        ..Default::default()
    }) {
        Err(Error::InvalidSnippet {
            snippet: "score_mod",
            line: Some(1),
            ..
        }) => {}
        r => panic!("expected a snippet error on line 1, got {r:?}"),
    }
    let bad = [
        MaskMods {
            segments: Some(Segments {
                q: vec![0; 3],
                kv: vec![0; 4],
            }),
            ..Default::default()
        },
        MaskMods {
            prefix_lengths: Some(vec![5]),
            ..Default::default()
        },
        MaskMods {
            token_filter: Some(TokenFilter {
                kv_token_ids: vec![0, 1, 2, 9],
                blocked: BlockedTokens::Classes {
                    class_of: vec![0; 4],
                    blocked: vec![0],
                },
            }),
            ..Default::default()
        },
        MaskMods {
            modalities: Some(Modalities {
                q: vec![0; 4],
                kv: vec![0, 1, 2, 0],
                allow: vec![true; 4],
                causal: vec![false; 2],
            }),
            ..Default::default()
        },
        MaskMods {
            alibi: Some(Alibi {
                slopes: Some(vec![f32::NAN]),
                symmetric: false,
            }),
            ..Default::default()
        },
        MaskMods {
            aux: vec![Aux::u32("x", vec![1])],
            ..Default::default()
        },
        MaskMods {
            mask_mod: Some("return true;".into()),
            aux: vec![Aux::u32("bad name", vec![1])],
            ..Default::default()
        },
    ];
    for mods in bad {
        let what = format!("{mods:?}");
        match run(mods) {
            Err(Error::ShapeMismatch { .. })
            | Err(Error::InvalidOption { .. })
            | Err(Error::InvalidCombination(_)) => {}
            r => panic!("{what}: expected a typed input error, got {r:?}"),
        }
    }
    // The reference wants a closure for each snippet.
    let c = with_mods(
        case.clone(),
        MaskMods {
            mask_mod: Some("return true;".into()),
            ..Default::default()
        },
    );
    assert!(matches!(
        reference::masked_attention(&c.inputs(), &c.opts),
        Err(Error::InvalidCombination(_))
    ));
}

/// `examples/custom_mask.rs` runs and agrees with the reference, and the README shows its
/// snippet line for line.
#[test]
fn custom_mask_example_runs_and_is_the_readme_snippet() {
    let (_, shape, worst) = custom_mask_example::run().expect("the example runs");
    assert_eq!(shape, vec![1, 2, 24, 16]);
    assert!(worst < 1e-4, "GPU and CPU disagree by {worst}");
    let example = include_str!("../examples/custom_mask.rs");
    let readme = include_str!("../README.md");
    let start = example
        .find("mask_mod: Some(")
        .expect("the example has a mask_mod");
    let body = &example[start..];
    let lines: Vec<&str> = body
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().starts_with('"'))
        .map(str::trim)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in lines {
        assert!(
            readme.contains(line),
            "README lacks the example's line {line:?}"
        );
    }
}
