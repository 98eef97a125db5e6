//! Kernels within a driver's loop trips per invocation (`Context::loop_trip_limit`): llvmpipe
//! ends every loop of a shader invocation once it has taken 65,535 trips in all, and the
//! kernel's results come out wrong with no error. On llvmpipe (CI's adapter) the first two
//! tests run shapes that crossed that count before the engine bounded it (a 4096-key split
//! of the prefill kernel at `D = 128`, the staged value stage over 65,600 keys); on other
//! adapters they are plain checks of long rows. The others set a small limit through
//! `Tuning::max_loop_trips`, so every adapter runs the splits it forces.
mod common;

use common::*;
use wgattn::{
    masked_attention, AttentionOptions, Context, DType, Error, ExecutionPath, Layout, Tuning,
};

/// Runs the case in `ctx` and holds `out` to the reference.
fn check_in(ctx: &Context, what: &str, case: &Case) {
    let got =
        masked_attention(ctx, &case.inputs(), &case.opts).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = case.reference();
    let tol = Tol::for_dtype(case.dtype());
    assert_close(&format!("{what} {:?}", case.dims), &got.out, &want.out, tol);
}

#[test]
fn long_splits_of_the_prefill_kernel() {
    // 64 heads fill the device without a key split, so before the bound each workgroup read
    // all 4096 keys in 128 tiles of 32 (2.6e-2 off on lavapipe); one query row per head keeps
    // the reference quick. The prefill kernel forced (the decode kernel's splits are short).
    let ctx = tuned_context(Tuning {
        decode_max_q: Some(0),
        ..Tuning::AUTO
    });
    let mut rng = Rng::new(0x100b);
    for (dims, causal) in [
        (Dims::new(1, 64, 1, 4096, 128), false),
        (Dims::new(1, 16, 37, 3001, 96).heads(16, 4), true),
    ] {
        let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_opts(|o| {
            o.causal = causal;
            o.path = ExecutionPath::Fused;
        });
        check_in(&ctx, "prefill", &case);
    }
}

#[test]
fn staged_rows_past_65535_keys() {
    // attend_values loops over a row's keys; before it took four per trip, rows past 65,535
    // keys came out wrong on lavapipe (2.6e-4 off at 65,600). f16 writes two elements per
    // invocation; the cache's keys come first in the loop.
    let mut rng = Rng::new(0x5ad);
    for (dims, dtype) in [
        (Dims::new(1, 1, 1, 65_600, 8), DType::F32),
        (Dims::new(1, 1, 2, 30_000, 4).past(40_000), DType::F16),
    ] {
        let case = Case::random(&mut rng, dims, dtype, Layout::Bhsd).staged();
        check_in(ctx(), "staged", &case);
    }
}

#[test]
fn small_limits_split_the_keys_finely() {
    // Limits of one to eleven tiles: the prefill kernel splits every row's keys into many
    // short splits (causal and windowed rows among them, some splits empty); at the lowest
    // the decode kernel halves its splits too (odd D: elements loaded one at a time). Both
    // still match the reference.
    let mut rng = Rng::new(0x5117);
    for limit in [1_500, 3_000, 12_000] {
        let ctx = tuned_context(Tuning {
            max_loop_trips: Some(limit),
            ..Tuning::AUTO
        });
        let prefill = Case::random(
            &mut rng,
            Dims::new(2, 3, 150, 301, 8),
            DType::F32,
            Layout::Bshd,
        )
        .with_opts(|o| {
            o.causal = true;
            o.window_left = 90;
            o.path = ExecutionPath::Fused;
        });
        check_in(&ctx, &format!("prefill, limit {limit}"), &prefill);
        let decode = Case::random(
            &mut rng,
            Dims::new(1, 4, 3, 700, 12).heads(4, 2).past(500),
            DType::F16,
            Layout::Bhsd,
        );
        check_in(&ctx, &format!("decode, limit {limit}"), &decode);
    }
}

#[test]
fn windowed_rows_split_their_window_not_every_key() {
    // Each tile sees its window's few hundred keys, so the splits a low limit forces are cut
    // from those: a handful per tile, not Lt / split (64 here, whose partials, 12 MiB, the
    // 4 MiB binding limit set below refuses).
    let ctx = tuned_context(Tuning {
        decode_max_q: Some(0),
        max_loop_trips: Some(1_500),
        max_binding_bytes: Some(4 << 20),
        ..Tuning::AUTO
    });
    let mut rng = Rng::new(0x3d);
    let case = Case::random(
        &mut rng,
        Dims::new(1, 1, 4096, 4096, 8),
        DType::F32,
        Layout::Bhsd,
    )
    .with_opts(|o| {
        o.causal = true;
        o.window_left = 64;
        o.path = ExecutionPath::Fused;
    });
    check_in(&ctx, "windowed prefill", &case);
}

#[test]
fn splits_beyond_those_run_at_once_take_passes() {
    // 2000 query rows make 8 workgroups (tiles of 256 rows at D = 64 on CPU adapters, 4 rows
    // per invocation), so 8 key splits run at once; a 9,000-trip limit cuts each row's 2000
    // keys into 16 splits of 128. Taken all at once their partials need 8.7 MB, over the
    // 6 MiB binding limit set here (and a one-head prefill of 32768 keys on lavapipe needed
    // 312 MB, over its 128 MiB); in passes of 8 splits that carry the rows' states, 4.4 MB.
    // On a GPU the tiles are smaller and the splits fewer: there it is a plain check.
    let ctx = tuned_context(Tuning {
        max_loop_trips: Some(9_000),
        max_binding_bytes: Some(6 << 20),
        ..Tuning::AUTO
    });
    let mut rng = Rng::new(0x9a55);
    for causal in [false, true] {
        let case = Case::random(
            &mut rng,
            Dims::new(1, 1, 2000, 2000, 64),
            DType::F32,
            Layout::Bhsd,
        )
        .with_opts(|o| {
            o.causal = causal;
            o.path = ExecutionPath::Fused;
        });
        check_in(&ctx, &format!("passes, causal {causal}"), &case);
    }
}

#[test]
fn a_limit_too_small_for_any_split_is_refused() {
    let ctx = tuned_context(Tuning {
        max_loop_trips: Some(100),
        ..Tuning::AUTO
    });
    let mut rng = Rng::new(7);
    let case = Case::random(
        &mut rng,
        Dims::new(1, 2, 9, 40, 16),
        DType::F32,
        Layout::Bhsd,
    );
    for path in [ExecutionPath::Fused, ExecutionPath::Staged] {
        let opts = AttentionOptions {
            path,
            ..case.opts.clone()
        };
        match masked_attention(&ctx, &case.inputs(), &opts) {
            Err(e @ Error::ExceedsLimit { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("loop trips"), "{path:?}: {msg}");
            }
            other => panic!("{path:?}: expected a loop-trip refusal, got {other:?}"),
        }
    }
}
