//! `record_attention`: attention recorded into a caller's encoder on tensors in the caller's
//! buffers, checked against the CPU reference; nothing submitted by the engine; every bad
//! buffer a typed error.
mod common;

use common::*;
use wgattn::{
    record_attention, reference, Alibi, AttentionOptions, BoolMask, Context, DType, Error,
    ExecutionPath, GpuInputs, GpuMask, GpuTensor, Layout, Mask, MaskMods, Returns, Segments,
    Tensor,
};

/// One buffer holding several tensors at aligned offsets, as an app might pack them.
struct Packed {
    buffer: wgpu::Buffer,
    offsets: Vec<u64>,
}

fn pack(ctx: &Context, parts: &[Vec<u8>]) -> Packed {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let mut offsets = Vec::new();
    let mut end = 0u64;
    for p in parts {
        // Start every tensor one alignment step after the previous one ends, so that a
        // kernel reading past a tensor would read its neighbour, not zeros.
        let at = end.next_multiple_of(align);
        offsets.push(at);
        end = at + (p.len() as u64).next_multiple_of(4);
    }
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test inputs"),
        size: end.max(16).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    for (p, &at) in parts.iter().zip(&offsets) {
        let mut bytes = p.clone();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        ctx.queue().write_buffer(&buffer, at, &bytes);
    }
    Packed { buffer, offsets }
}

/// An output buffer filled with NaN bytes, `size` bytes long.
fn poisoned(ctx: &Context, size: u64) -> wgpu::Buffer {
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test out"),
        size,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue()
        .write_buffer(&buffer, 0, &vec![0xff; size as usize]);
    buffer
}

/// Copies `size` bytes of `buffer` from `offset` to the host (one submission of its own).
fn read(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Vec<u8> {
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test read-back"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let bytes = staging.get_mapped_range(..).unwrap().to_vec();
    staging.unmap();
    bytes
}

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
    let dtype = case.dtype();
    let mut parts = vec![
        case.q.to_le_bytes(),
        case.k.to_le_bytes(),
        case.v.to_le_bytes(),
    ];
    if let Some(m) = &case.mask {
        parts.push(match m {
            Mask::Bool(b) => b.data().iter().map(|&x| x as u8).collect(),
            Mask::Additive(t) => t.to_le_bytes(),
        });
    }
    let packed = pack(ctx, &parts);
    let want = reference::masked_attention(&case.inputs(), &case.opts).unwrap();
    let out_bytes = (want.out.len() * dtype.size()) as u64;
    let out_offset = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let out_size = (out_offset + out_bytes).next_multiple_of(16) + 16;
    let out_buffer = poisoned(ctx, out_size);

    let at = |i: usize, shape: &'static [usize], dt: DType| GpuTensor {
        buffer: &packed.buffer,
        offset: packed.offsets[i],
        shape,
        dtype: dt,
    };
    let leak = |s: &[usize]| -> &'static [usize] { Box::leak(s.to_vec().into_boxed_slice()) };
    let mut inputs = GpuInputs::new(
        at(0, leak(case.q.shape()), dtype),
        at(1, leak(case.k.shape()), dtype),
        at(2, leak(case.v.shape()), dtype),
    );
    inputs.kv_lengths = case.kv_lengths.as_deref();
    inputs.mods = case.mods.as_ref();
    inputs.mask = case.mask.as_ref().map(|m| match m {
        Mask::Bool(b) => GpuMask::Bool(at(3, leak(b.shape()), DType::F32)),
        Mask::Additive(t) => GpuMask::Additive(at(3, leak(t.shape()), t.dtype())),
    });
    let out_shape = want.out.shape().to_vec();
    let out = GpuTensor {
        buffer: &out_buffer,
        offset: out_offset,
        shape: &out_shape,
        dtype,
    };

    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    // The caller's own work before the attention: clear a scratch buffer.
    let scratch = poisoned(ctx, 64);
    encoder.clear_buffer(&scratch, 0, None);
    let recorded = record_attention(ctx, &mut encoder, &inputs, &case.opts, &out)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(recorded.problem().out_shape(), out_shape);
    let want_path = match case.opts.path {
        ExecutionPath::Staged => ExecutionPath::Staged,
        _ => ExecutionPath::Fused,
    };
    assert_eq!(recorded.path(), want_path, "{name}");
    drop(recorded); // allowed before the submission: wgpu keeps the buffers alive

    // Nothing has run yet: out still holds the poison.
    let before = read(ctx, &out_buffer, out_offset, out_bytes.next_multiple_of(4));
    assert!(
        before.iter().all(|&b| b == 0xff),
        "{name}: out was written before the caller submitted"
    );
    ctx.queue().submit([encoder.finish()]);
    let bytes = read(ctx, &out_buffer, out_offset, out_bytes.next_multiple_of(4));
    let got =
        Tensor::from_le_bytes(out_shape.clone(), dtype, &bytes[..out_bytes as usize]).unwrap();
    assert_close(name, &got, &want.out, Tol::for_dtype(dtype));
    // The bytes after `out` (past its 4-byte rounding) are the caller's and stay untouched.
    let tail_at = out_offset + out_bytes.next_multiple_of(4);
    let tail = read(ctx, &out_buffer, tail_at, 16);
    assert!(tail.iter().all(|&b| b == 0xff), "{name}: wrote past out");
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
