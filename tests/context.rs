//! The host layer: a context on a caller's own device, buffer reuse, pipeline reuse.
mod common;

use common::*;
use wgattn::{
    masked_attention, reference, AttentionInputs, AttentionOptions, AttentionOutput, Aux, Context,
    DType, ExecutionPath, Layout, Mask, MaskMods, Returns, Tensor,
};

/// An app that already has a device hands it to the engine and keeps using it.
#[test]
fn context_from_callers_device() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("an adapter (install mesa-vulkan-drivers)");
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))
        .expect("a device with default limits");
    let ctx = Context::from_device(device.clone(), queue, adapter.get_info());
    let mut rng = Rng::new(7);
    let q = random(&mut rng, &[1, 2, 9, 16], DType::F32, 1.0);
    let k = random(&mut rng, &[1, 2, 11, 16], DType::F32, 1.0);
    let v = random(&mut rng, &[1, 2, 11, 16], DType::F32, 1.0);
    let inputs = AttentionInputs::new(&q, &k, &v);
    for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
        let options = AttentionOptions {
            causal: true,
            path,
            ..Default::default()
        };
        let got = masked_attention(&ctx, &inputs, &options).unwrap();
        let want = reference::masked_attention(&inputs, &options).unwrap();
        assert_close("out", &got.out, &want.out, Tol::for_dtype(DType::F32));
    }
    // The caller's device is still theirs to use.
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's own"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    drop(buffer);
}

/// Repeated calls of one shape reuse the pooled buffers: no growth after the first call.
#[test]
fn repeated_calls_reuse_buffers() {
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    let mut rng = Rng::new(8);
    let q = random(&mut rng, &[2, 4, 33, 32], DType::F16, 1.0);
    let k = random(&mut rng, &[2, 2, 40, 32], DType::F16, 1.0);
    let v = random(&mut rng, &[2, 2, 40, 32], DType::F16, 1.0);
    let inputs = AttentionInputs::new(&q, &k, &v);
    for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
        let options = AttentionOptions {
            path,
            ..Default::default()
        };
        let first = masked_attention(&ctx, &inputs, &options).unwrap();
        let after_first = ctx.memory();
        for _ in 0..5 {
            let again = masked_attention(&ctx, &inputs, &options).unwrap();
            assert_eq!(again.out, first.out, "{path:?}: same inputs, same bits");
        }
        assert_eq!(
            ctx.memory(),
            after_first,
            "{path:?}: the pool grew on repeated calls"
        );
        assert!(after_first.live_bytes > 0);
    }
    ctx.trim_memory();
    assert_eq!(ctx.memory().live_bytes, 0, "trim frees every pooled buffer");
}

/// An async call whose future is dropped while the GPU runs it (a timeout, a `select!`, a
/// task cancelled) leaves the context working: its buffers, in use by the submission and
/// with the read-back's mapping pending, are not handed to the next call. (They were, and
/// the next call failed with a validation error.)
#[test]
fn a_dropped_async_call_leaves_the_context_working() {
    use std::future::Future;
    use std::task::{Context as TaskContext, Poll, Waker};
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    ctx.set_poison_outputs(true);
    let mut rng = Rng::new(9);
    let mut dropped_pending = 0;
    for (path, returns) in [
        (ExecutionPath::Fused, Returns::default()),
        (ExecutionPath::Staged, ALL_RETURNS),
    ] {
        let case = Case::random(
            &mut rng,
            Dims::new(2, 4, 40, 300, 32),
            DType::F32,
            Layout::Bhsd,
        )
        .path(path)
        .with_opts(|o| o.returns = returns);
        let want = case.reference();
        for round in 0..4 {
            {
                let inputs = case.inputs();
                let call = wgattn::masked_attention_async(&ctx, &inputs, &case.opts);
                let mut call = std::pin::pin!(call);
                let first = call
                    .as_mut()
                    .poll(&mut TaskContext::from_waker(Waker::noop()));
                // Submitted, waiting for the device (unless it was that quick): dropped here.
                dropped_pending += matches!(first, Poll::Pending) as usize;
            }
            let got = masked_attention(&ctx, &case.inputs(), &case.opts)
                .unwrap_or_else(|e| panic!("{path:?} round {round}: {e}"));
            compare(
                &format!("{path:?} round {round}"),
                &got,
                &want,
                &returns,
                Tols::for_dtype(DType::F32),
            );
        }
    }
    assert!(
        dropped_pending > 0,
        "no call was still running when dropped"
    );
    ctx.trim_memory();
    assert_eq!(
        ctx.memory().live_bytes,
        0,
        "nothing counted for the dropped calls"
    );
    assert_eq!(ctx.lost_reason(), None);
}

/// A device with downlevel limits (16 KiB of workgroup memory, 256 invocations per
/// workgroup, as many OpenGL ES 3.1 GPUs) runs every path correctly, the tiles chosen from
/// those limits, with the 8 storage buffers per stage of the WebGPU default (the fused
/// kernels bind 7, plus a snippet's aux tensors). With 5 `Auto` takes the staged path (it
/// failed); with OpenGL ES 3.1's guaranteed 4 every path is a typed error naming that limit
/// (it was wgpu's validation error from building the pipeline), as is one bind group for aux
/// tensors.
#[test]
fn a_downlevel_device_runs_every_path_or_names_the_limit() {
    let eight = wgpu::Limits {
        max_storage_buffers_per_shader_stage: 8,
        ..wgpu::Limits::downlevel_defaults()
    };
    let ctx =
        Context::with_limits(eight.clone(), wgpu::Features::empty()).expect("downlevel limits");
    ctx.set_poison_outputs(true);
    let mut rng = Rng::new(10);
    for (dims, dtype) in [
        (Dims::new(1, 4, 1, 700, 64), DType::F32),
        (Dims::new(2, 4, 37, 90, 24), DType::F16),
        (Dims::new(1, 2, 65, 130, 128), DType::F32),
        (Dims::new(1, 2, 9, 300, 256), DType::BF16),
    ] {
        for path in [ExecutionPath::Auto, ExecutionPath::Staged] {
            let case = Case::random(&mut rng, dims, dtype, Layout::Bhsd)
                .path(path)
                .with_opts(|o| {
                    o.causal = true;
                    o.returns = if path == ExecutionPath::Staged {
                        ALL_RETURNS
                    } else {
                        Returns::default()
                    };
                });
            let what = format!("{dims:?} {dtype:?} {path:?}");
            let got = masked_attention(&ctx, &case.inputs(), &case.opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let tols = Tols::for_dtype(dtype);
            compare(&what, &got, &case.reference(), &case.opts.returns, tols);
        }
    }

    // `case` on `ctx` (f32, no intermediates) held to `want`.
    let f32_tols = Tols::for_dtype(DType::F32);
    let agrees = |ctx: &Context, what: &str, case: &Case, want: &AttentionOutput| {
        let got = masked_attention(ctx, &case.inputs(), &case.opts)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        compare(what, &got, want, &Returns::default(), f32_tols);
    };

    // A score_mod reading aux tensors (bound beside the kernel's buffers): with one, the fused
    // kernels' 7 and it fill the 8; with two, `Auto` takes the staged path (its kernels bind
    // at most 5) and `Fused` names the aux tensors. The snippet adds the tensors to each
    // score, which the reference computes as the same sum in an additive mask.
    let dims = Dims::new(1, 2, 3, 50, 16);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
    let per_key = |rng: &mut Rng| (0..50).map(|_| rng.uniform()).collect::<Vec<f32>>();
    let (a, b) = (per_key(&mut rng), per_key(&mut rng));
    for (snippet, aux) in [
        ("return s + aux_a[k];", vec![Aux::f32("a", a.clone())]),
        (
            "return s + aux_a[k] + aux_b[k];",
            vec![Aux::f32("a", a.clone()), Aux::f32("b", b.clone())],
        ),
    ] {
        let bias: Vec<f32> = (0..50)
            .map(|k| a[k] + if aux.len() > 1 { b[k] } else { 0.0 })
            .collect();
        let want = Case {
            mask: Some(Mask::Additive(Tensor::from_f32([50], bias).unwrap())),
            ..case.clone()
        }
        .reference();
        let two = aux.len() > 1;
        let modded = Case {
            mods: Some(MaskMods {
                score_mod: Some(snippet.into()),
                aux,
                ..Default::default()
            }),
            ..case.clone()
        };
        agrees(&ctx, snippet, &modded, &want);
        let fused = modded.path(ExecutionPath::Fused);
        match masked_attention(&ctx, &fused.inputs(), &fused.opts) {
            Ok(got) if !two => compare(snippet, &got, &want, &Returns::default(), f32_tols),
            Err(wgattn::Error::ExceedsLimit {
                what,
                limit,
                requested,
                max,
            }) if two => {
                assert_eq!(limit, "max_storage_buffers_per_shader_stage");
                assert!(what.contains("2 aux tensors"), "{what}");
                assert_eq!((requested, max), (9, 8));
            }
            other => panic!("{snippet} on the fused path: {:?}", other.map(|_| ())),
        }
    }

    // Five storage buffers (fewer than the fused kernels' 7, all the staged path binds):
    // `Auto` takes the staged path, `Fused` names the limit.
    let five = wgpu::Limits {
        max_storage_buffers_per_shader_stage: 5,
        ..eight.clone()
    };
    let ctx5 = Context::with_limits(five, wgpu::Features::empty()).expect("five buffers");
    agrees(&ctx5, "Auto on five", &case, &case.reference());
    let fused = case.clone().path(ExecutionPath::Fused);
    match masked_attention(&ctx5, &fused.inputs(), &fused.opts) {
        Err(wgattn::Error::ExceedsLimit {
            limit,
            requested,
            max,
            ..
        }) => {
            assert_eq!(
                (limit, requested, max),
                ("max_storage_buffers_per_shader_stage", 7, 5)
            );
        }
        other => panic!("Fused on five buffers: {:?}", other.map(|_| ())),
    }

    // Aux tensors take a second bind group: a device with one says so on every path.
    let one_group = wgpu::Limits {
        max_bind_groups: 1,
        ..eight
    };
    let ctx = Context::with_limits(one_group, wgpu::Features::empty()).expect("one bind group");
    let modded = Case {
        mods: Some(MaskMods {
            score_mod: Some("return s + aux_a[k];".into()),
            aux: vec![Aux::f32("a", a.clone())],
            ..Default::default()
        }),
        ..case.clone()
    };
    for path in [ExecutionPath::Auto, ExecutionPath::Staged] {
        let c = modded.clone().path(path);
        match masked_attention(&ctx, &c.inputs(), &c.opts) {
            Err(wgattn::Error::ExceedsLimit { limit, max, .. }) => {
                assert_eq!((limit, max), ("max_bind_groups", 1));
            }
            other => panic!("{path:?}, one bind group: {:?}", other.map(|_| ())),
        }
    }
    // Without aux tensors one group is all the kernels need.
    agrees(&ctx, "one bind group", &case, &case.reference());

    let ctx = Context::with_limits(wgpu::Limits::downlevel_defaults(), wgpu::Features::empty())
        .expect("downlevel limits");
    let case = Case::random(&mut rng, Dims::new(1, 2, 5, 9, 8), DType::F32, Layout::Bhsd);
    for path in [ExecutionPath::Fused, ExecutionPath::Staged] {
        match masked_attention(&ctx, &case.inputs(), &case.clone().path(path).opts) {
            Err(wgattn::Error::ExceedsLimit {
                limit,
                requested,
                max,
                ..
            }) => {
                assert_eq!(limit, "max_storage_buffers_per_shader_stage");
                assert_eq!(max, 4);
                assert!(requested > 4);
            }
            other => panic!(
                "{path:?}: expected ExceedsLimit, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert_eq!(ctx.lost_reason(), None);
}

/// The outputs of `q` against each of `ks` (with `v`), for each upload setting in turn
/// (`Tuning::mapped_uploads`; `None` = the adapter's default); the tuning is reset after.
fn outputs_by_upload<const N: usize>(
    ctx: &Context,
    uploads: [Option<bool>; N],
    q: &Tensor,
    ks: [&Tensor; 2],
    v: &Tensor,
    options: &AttentionOptions,
) -> Vec<Tensor> {
    let mut outs = Vec::new();
    for mapped in uploads {
        ctx.set_tuning(wgattn::Tuning {
            mapped_uploads: mapped,
            ..Default::default()
        });
        for k in ks {
            let inputs = AttentionInputs::new(q, k, v);
            outs.push(masked_attention(ctx, &inputs, options).unwrap().out);
        }
    }
    ctx.set_tuning(Default::default());
    outs
}

/// Inputs written through a mapped storage buffer (unified-memory adapters, the default on
/// lavapipe) and through the queue's staging copy give the same bits, on both paths, also
/// when the pooled buffers are reused with other contents.
#[test]
fn mapped_and_queued_uploads_agree() {
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    let mut rng = Rng::new(9);
    // 64 KiB and more per tensor take the mapped route.
    let (b, hq, hkv, lq, lk, d) = (1, 4, 2, 37, 300, 64);
    let q = random(&mut rng, &[b, hq, lq, d], DType::F32, 1.0);
    let k = random(&mut rng, &[b, hkv, lk, d], DType::F32, 1.0);
    let v = random(&mut rng, &[b, hkv, lk, d], DType::F32, 1.0);
    let k2 = random(&mut rng, &[b, hkv, lk, d], DType::F32, 1.0);
    for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
        let options = AttentionOptions {
            causal: true,
            path,
            ..Default::default()
        };
        let outs = outputs_by_upload(
            &ctx,
            [Some(false), None, Some(false), None],
            &q,
            [&k, &k2],
            &v,
            &options,
        );
        for (i, k) in [&k, &k2].into_iter().enumerate() {
            let want = reference::masked_attention(&AttentionInputs::new(&q, k, &v), &options)
                .unwrap()
                .out;
            assert_close("out", &outs[i], &want, Tol::for_dtype(DType::F32));
        }
        for (n, out) in outs.iter().enumerate() {
            assert_eq!(
                out,
                &outs[n % 2],
                "{path:?}: call {n} differs from call {}",
                n % 2
            );
        }
    }
}

/// Inputs of 8 MiB and more are copied into their mapped buffers by several host threads, each
/// through its own view of one piece: every byte arrives, the odd tail past the last whole word
/// included. Here k and v are 17.3 MB each of f16 (a length 2 bytes past a word, not a multiple
/// of the piece size), so a host with two cores copies each in two pieces; the result equals the
/// queued upload's bit for bit and the reference, and a second k through the same pooled buffers
/// replaces the first entirely.
#[test]
fn large_uploads_copied_in_pieces_arrive_whole() {
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    let mut rng = Rng::new(10);
    let (b, hq, hkv, lq, lk, d) = (1, 2, 1, 2, 133_121, 65);
    assert_eq!((lk * d * 2) % 4, 2, "a tail past the last whole word");
    let q = random(&mut rng, &[b, hq, lq, d], DType::F16, 1.0);
    let k = random(&mut rng, &[b, hkv, lk, d], DType::F16, 1.0);
    let v = random(&mut rng, &[b, hkv, lk, d], DType::F16, 1.0);
    let k2 = random(&mut rng, &[b, hkv, lk, d], DType::F16, 1.0);
    let options = AttentionOptions {
        path: ExecutionPath::Fused,
        ..Default::default()
    };
    let outs = outputs_by_upload(&ctx, [None, Some(false)], &q, [&k, &k2], &v, &options);
    for (i, k) in [&k, &k2].into_iter().enumerate() {
        let want = reference::masked_attention(&AttentionInputs::new(&q, k, &v), &options)
            .unwrap()
            .out;
        assert_close("out", &outs[i], &want, Tol::for_dtype(DType::F16));
        assert_eq!(
            outs[i],
            outs[i + 2],
            "mapped and queued uploads differ (k {i})"
        );
    }
}

/// The staged softmax reduces rows with subgroup operations where offered, else in workgroup
/// memory only; both agree with the reference, rows longer than a workgroup included.
#[test]
fn staged_softmax_with_and_without_subgroups() {
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    ctx.set_poison_outputs(true);
    let mut rng = Rng::new(10);
    let q = random(&mut rng, &[1, 2, 5, 24], DType::F32, 3.0);
    let k = random(&mut rng, &[1, 2, 333, 24], DType::F32, 3.0);
    let v = random(&mut rng, &[1, 2, 333, 24], DType::F32, 1.0);
    let inputs = AttentionInputs::new(&q, &k, &v);
    let options = AttentionOptions {
        path: ExecutionPath::Staged,
        returns: wgattn::Returns {
            probs: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let want = reference::masked_attention(&inputs, &options).unwrap();
    for subgroups in [None, Some(false)] {
        ctx.set_tuning(wgattn::Tuning {
            subgroups,
            ..Default::default()
        });
        let got = masked_attention(&ctx, &inputs, &options).unwrap();
        let tol = Tol::for_dtype(DType::F32);
        assert_close("out", &got.out, &want.out, tol);
        let (g, w) = (got.probs.unwrap(), want.probs.clone().unwrap());
        assert_close("probs", &g, &w, tol);
    }
}

/// With GPU timing on, every GPU path reports its kernels' device time (timestamp queries:
/// lavapipe and llvmpipe's GL both offer them), summed over the parts of a split request and
/// no longer than the call, and each kernel's own, by name; off, and on the reference, none.
/// How the time grows with the work is a benchmark's question, not this test's: on a loaded CI
/// machine a small call's kernels were once timed at 150 ms against 79 ms for 512x the keys.
#[test]
fn gpu_timing_reports_the_kernels_device_time() {
    let ctx = Context::new().expect("an adapter (install mesa-vulkan-drivers)");
    // The prefill kernel for 16 query rows on every adapter (CPU adapters would take the
    // decode kernel for so short a block).
    ctx.set_tuning(wgattn::Tuning {
        decode_max_q: Some(4),
        ..wgattn::Tuning::AUTO
    });
    let offered = ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let mut rng = Rng::new(41);
    let q = random(&mut rng, &[2, 4, 16, 32], DType::F32, 1.0);
    let k_small = random(&mut rng, &[2, 2, 8, 32], DType::F32, 1.0);
    let k_big = random(&mut rng, &[2, 2, 4096, 32], DType::F32, 1.0);
    let small = AttentionInputs::new(&q, &k_small, &k_small);
    let big = AttentionInputs::new(&q, &k_big, &k_big);
    let run = |inputs: &AttentionInputs<'_>, path| {
        let options = AttentionOptions {
            path,
            ..Default::default()
        };
        let start = std::time::Instant::now();
        let got = masked_attention(&ctx, inputs, &options).unwrap();
        let wall = start.elapsed();
        let want = reference::masked_attention(inputs, &options).unwrap();
        assert_close("out", &got.out, &want.out, Tol::for_dtype(DType::F32));
        assert_eq!(want.gpu_time, None, "the reference has no GPU time");
        assert!(want.gpu_kernels.is_empty());
        let kernels: Vec<String> = got.gpu_kernels.iter().map(|k| k.kernel.clone()).collect();
        if let Some(span) = got.gpu_time {
            for k in &got.gpu_kernels {
                assert!(
                    k.time <= span,
                    "{path:?}: {k:?} longer than the call's {span:?}"
                );
                // The specialization that ran, named by its pipeline's label.
                assert!(
                    k.variant.starts_with(&format!("wgattn {} f32 ", k.kernel)),
                    "{path:?}: {k:?}"
                );
            }
        } else {
            assert!(
                kernels.is_empty(),
                "{path:?}: kernels {kernels:?} without a GPU time"
            );
        }
        (got.gpu_time, wall, kernels)
    };
    let staged = ["qk_scores", "apply_mask", "softmax", "attend_values"];
    for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
        assert_eq!(
            run(&small, path).0,
            None,
            "{path:?}: timing is off by default"
        );
    }
    ctx.set_gpu_timing(true);
    assert_eq!(ctx.gpu_timing(), offered);
    for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
        // Warm: the first call compiles the pipelines.
        run(&small, path);
        run(&big, path);
        let (small_time, small_wall, small_kernels) = run(&small, path);
        let (big_time, big_wall, big_kernels) = run(&big, path);
        if !offered {
            assert_eq!((small_time, big_time), (None, None));
            continue;
        }
        match path {
            ExecutionPath::Staged => {
                assert_eq!(small_kernels, staged);
                assert_eq!(big_kernels, staged);
            }
            _ => {
                // 16 query rows: the prefill kernel; over 4096 keys it splits them across
                // workgroups, and the combine pass joins the splits.
                assert_eq!(small_kernels, ["fused"]);
                assert_eq!(big_kernels, ["fused", "fused_combine"]);
            }
        }
        let (s, b) = (small_time.unwrap(), big_time.unwrap());
        assert!(
            s > std::time::Duration::ZERO && b > std::time::Duration::ZERO,
            "{path:?}: {s:?}, {b:?}"
        );
        assert!(
            s <= small_wall && b <= big_wall,
            "{path:?}: longer than the call"
        );
    }
    // A request split over the binding limit (a quarter of k's f32 bytes): each part's
    // time, summed.
    ctx.set_tuning(wgattn::Tuning {
        max_binding_bytes: Some(k_big.len() as u64),
        decode_max_q: Some(4),
        ..wgattn::Tuning::AUTO
    });
    let (split_time, split_wall, split_kernels) = run(&big, ExecutionPath::Fused);
    if offered {
        let t = split_time.expect("a split request sums its parts' GPU time");
        assert!(t > std::time::Duration::ZERO && t <= split_wall);
        // Every part's two passes, in order.
        assert!(split_kernels.len() >= 4, "{split_kernels:?}");
        for pair in split_kernels.chunks(2) {
            assert_eq!(pair, ["fused", "fused_combine"], "{split_kernels:?}");
        }
    }
    ctx.set_gpu_timing(false);
    let (time, _, kernels) = run(&big, ExecutionPath::Fused);
    assert_eq!((time, kernels.len()), (None, 0), "off again");
}
