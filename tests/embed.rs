//! `record_attention`: attention recorded into a caller's encoder on tensors in the caller's
//! buffers, checked against the CPU reference; nothing submitted by the engine; every bad
//! buffer a typed error.
mod common;

use common::embed::{self, pack, poisoned, read};
use common::*;
use wgattn::{
    record_attention, reference, Alibi, AttentionOptions, BoolMask, Context, DType, Error,
    ExecutionPath, GpuInputs, GpuTensor, Layout, Mask, MaskMods, Returns, Segments, Tensor,
};

fn own_context() -> Context {
    let ctx = Context::new()
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}. Install mesa-vulkan-drivers."));
    ctx
}

/// One embedded case: q, k, v (and a mask) in one caller buffer at aligned offsets, `out` at
/// an offset in another; recorded after a caller's own pass in the caller's encoder;
/// checked against the reference, and `out` untouched until the caller submits. On both
/// paths: the default (fused) and the staged one.
fn check_embedded(ctx: &Context, name: &str, case: Case) {
    for path in [ExecutionPath::Auto, ExecutionPath::Staged] {
        let mut case = case.clone();
        case.opts.path = path;
        check_embedded_on(ctx, &format!("{name} ({path:?})"), &case);
    }
}

fn check_embedded_on(ctx: &Context, name: &str, case: &Case) {
    let want = reference::masked_attention(&case.inputs(), &case.opts).unwrap();
    let (got, path) = embed::record_case(ctx, name, case).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want_path = match case.opts.path {
        ExecutionPath::Staged => ExecutionPath::Staged,
        _ => ExecutionPath::Fused,
    };
    assert_eq!(path, want_path, "{name}");
    assert_close(name, &got, &want.out, Tol::for_dtype(case.dtype()));
}

#[test]
fn embedded_prefill_and_decode_agree_with_the_reference() {
    let ctx = own_context();
    let mut rng = Rng::new(1);
    let causal = |o: &mut AttentionOptions| o.causal = true;
    let dims = Dims::new(2, 4, 33, 33, 16).heads(4, 2);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_opts(causal);
    check_embedded(&ctx, "prefill f32 gqa causal", case);
    let dims = Dims::new(1, 2, 19, 40, 7).v_dim(13);
    let case = Case::random(&mut rng, dims, DType::F16, Layout::Bshd);
    check_embedded(&ctx, "prefill f16 bshd odd dims", case);
    // A preallocated cache of 64 keys, 37 and 50 valid; one new query per sequence.
    let dims = Dims::new(2, 8, 1, 64, 32).heads(8, 2);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd)
        .with_kv_lengths(vec![37, 50])
        .with_opts(|o| {
            o.causal = true;
            o.causal_offset = Some(36);
        });
    check_embedded(&ctx, "decode f32 kv cache", case);
    let data = (0..2 * 9 * 21).map(|_| rng.bool(0.7)).collect();
    let bool_mask = Mask::Bool(BoolMask::new([2, 1, 9, 21], data).unwrap());
    let dims = Dims::new(2, 2, 9, 21, 8);
    let case = Case::random(&mut rng, dims, DType::BF16, Layout::Bhsd)
        .with_mask(bool_mask)
        .with_opts(causal);
    check_embedded(&ctx, "bool mask bf16", case);
    let additive = random_additive_mask(&mut rng, &[2, 9, 21], DType::F16, 2.0, 0.2);
    let dims = Dims::new(1, 2, 9, 21, 8);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd).with_mask(additive);
    check_embedded(&ctx, "additive f16 mask", case);
    // Mods (their tables and ALiBi's slopes are the engine's own small uploads): two packed
    // documents per sequence, ALiBi, and a key-length mask beside them.
    let dims = Dims::new(2, 4, 12, 30, 8);
    let seg = |n: usize| -> Vec<i64> {
        (0..2)
            .flat_map(|_| (0..n).map(|j| (j * 2 / n) as i64))
            .collect()
    };
    let mut case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd)
        .with_kv_lengths(vec![30, 25])
        .with_opts(causal);
    case.mods = Some(MaskMods {
        segments: Some(Segments {
            q: seg(12).into_iter().map(|s| s.max(1)).collect(),
            kv: seg(30),
        }),
        alibi: Some(Alibi::default()),
        ..Default::default()
    });
    check_embedded(&ctx, "segments + alibi + key lengths", case);
}

#[test]
fn bad_buffers_are_typed_errors() {
    let ctx = own_context();
    let shape = [1usize, 1, 4, 8];
    let storage = |size: u64, usage: wgpu::BufferUsages| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let s = wgpu::BufferUsages::STORAGE;
    let inputs_buf = storage(4096, s);
    let out_buf = storage(4096, s);
    let small = storage(64, s);
    let uniform = storage(4096, wgpu::BufferUsages::UNIFORM);
    let t = |b, offset| GpuTensor {
        buffer: b,
        offset,
        shape: &shape,
        dtype: DType::F32,
    };
    let good = GpuInputs::new(t(&inputs_buf, 0), t(&inputs_buf, 256), t(&inputs_buf, 512));
    let opts = AttentionOptions::default();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let mut attempt = |inputs: &GpuInputs<'_>, opts: &AttentionOptions, out: &GpuTensor<'_>| {
        record_attention(&ctx, &mut encoder, inputs, opts, out).map(|_| ())
    };
    let out = t(&out_buf, 0);
    attempt(&good, &opts, &out).expect("the good case records");

    let buffer_error = |r: wgattn::Result<()>, what: &str, has: &str| match r {
        Err(Error::InvalidBuffer { what: w, reason }) => {
            assert_eq!(w, what);
            assert!(reason.contains(has), "{reason}");
        }
        other => panic!("{what}: expected InvalidBuffer, got {other:?}"),
    };
    let mut bad = good;
    bad.q.offset = 4;
    buffer_error(attempt(&bad, &opts, &out), "q", "multiple");
    let k_small = GpuInputs {
        k: GpuTensor {
            buffer: &small,
            offset: 0,
            shape: &[1, 1, 4, 8],
            dtype: DType::F32,
        },
        ..good
    };
    buffer_error(attempt(&k_small, &opts, &out), "k", "do not fit");
    // Shapes whose byte counts overflow: the tensor's error, before any size is derived
    // from them (they overflowed the staged path's limit checks before).
    let huge = [1usize, 1 << 32, 1 << 32, 8];
    for what in ["q", "k"] {
        let mut bad = good;
        let tensor = if what == "q" { &mut bad.q } else { &mut bad.k };
        tensor.shape = &huge;
        buffer_error(attempt(&bad, &opts, &out), what, "overflow");
    }
    let v_uniform = GpuInputs {
        v: t(&uniform, 0),
        ..good
    };
    buffer_error(attempt(&v_uniform, &opts, &out), "v", "STORAGE");
    assert!(matches!(
        attempt(&good, &opts, &t(&inputs_buf, 768)),
        Err(Error::InvalidCombination(_))
    ));
    let probs = AttentionOptions {
        returns: Returns {
            probs: true,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        attempt(&good, &probs, &out),
        Err(Error::InvalidCombination(_))
    ));
    let wrong_shape = [1usize, 1, 4, 9];
    let out_wrong = GpuTensor {
        shape: &wrong_shape,
        ..out
    };
    assert!(matches!(
        attempt(&good, &opts, &out_wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let out_f16 = GpuTensor {
        dtype: DType::F16,
        ..out
    };
    assert!(matches!(
        attempt(&good, &opts, &out_f16),
        Err(Error::DTypeMismatch { .. })
    ));
    let k_f16 = GpuInputs {
        k: GpuTensor {
            dtype: DType::F16,
            ..good.k
        },
        ..good
    };
    assert!(matches!(
        attempt(&k_f16, &opts, &out),
        Err(Error::DTypeMismatch { .. })
    ));
    // The encoder holds the good recording; submitting it is fine.
    ctx.queue().submit([encoder.finish()]);
}

/// With timing on, a recording reads its passes' timestamps back once the caller has submitted
/// (lavapipe and llvmpipe's GL offer timestamp queries); with it off, it has none.
#[test]
fn recordings_report_their_device_time() {
    let ctx = own_context();
    if !ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        panic!("the software adapters offer timestamp queries; this one does not");
    }
    let mut rng = Rng::new(5);
    let dims = Dims::new(1, 2, 1, 700, 16);
    let case = Case::random(&mut rng, dims, DType::F32, Layout::Bhsd);
    let bytes = |t: &Tensor| t.to_le_bytes();
    let packed = pack(&ctx, &[bytes(&case.q), bytes(&case.k), bytes(&case.v)]);
    let shapes = [case.q.shape(), case.k.shape(), case.v.shape()];
    let at = |i: usize| GpuTensor {
        buffer: &packed.buffer,
        offset: packed.offsets[i],
        shape: shapes[i],
        dtype: DType::F32,
    };
    let inputs = GpuInputs::new(at(0), at(1), at(2));
    let out_shape = [1usize, 2, 1, 16];
    let out_buffer = poisoned(&ctx, 256);
    let out = GpuTensor::new(&out_buffer, &out_shape, DType::F32);
    for (timing, path, kernels) in [
        (
            true,
            ExecutionPath::Auto,
            &["fused_decode", "fused_combine"][..],
        ),
        (
            true,
            ExecutionPath::Staged,
            &["qk_scores", "apply_mask", "softmax", "attend_values"],
        ),
        (false, ExecutionPath::Auto, &[]),
    ] {
        ctx.set_gpu_timing(timing);
        let opts = AttentionOptions {
            path,
            ..case.opts.clone()
        };
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let recorded = record_attention(&ctx, &mut encoder, &inputs, &opts, &out).unwrap();
        ctx.queue().submit([encoder.finish()]);
        let time = recorded.gpu_time();
        // The same timestamps read again, without blocking.
        assert_eq!(
            pollster::block_on(recorded.gpu_time_async()),
            time,
            "{path:?}: gpu_time_async"
        );
        // A read given up on before it completes (its future dropped) costs nothing later:
        // the mapping is cancelled (it stayed pending or mapped, and every later read failed).
        {
            use std::future::Future;
            let call = recorded.gpu_time_async();
            let mut call = std::pin::pin!(call);
            let _ = call
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        }
        assert_eq!(recorded.gpu_time(), time, "{path:?}: after a dropped read");
        let Some((span, each)) = time else {
            assert!(!timing, "{path:?}: no device time with timing on");
            continue;
        };
        assert!(timing, "{path:?}: a device time with timing off");
        let names: Vec<&str> = each.iter().map(|k| k.kernel.as_str()).collect();
        assert_eq!(names, kernels, "{path:?}");
        let sum: std::time::Duration = each.iter().map(|k| k.time).sum();
        assert!(
            span > std::time::Duration::ZERO && sum <= span,
            "{span:?} {each:?}"
        );
        // The result is there too.
        let got = read(&ctx, &out_buffer, 0, 128);
        let got = Tensor::from_le_bytes(out_shape.to_vec(), DType::F32, &got).unwrap();
        let want = reference::masked_attention(&case.inputs(), &opts).unwrap();
        assert_close(
            &format!("{path:?}"),
            &got,
            &want.out,
            Tol::for_dtype(DType::F32),
        );
    }
}
