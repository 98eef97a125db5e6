//! `record_attention` on a case: its tensors in a caller's buffers, recorded into the
//! caller's encoder, submitted and read back (tests/embed.rs, tests/soak.rs).

use wgattn::{
    record_attention, Context, DType, ExecutionPath, GpuInputs, GpuMask, GpuTensor, Mask, Tensor,
};

use super::Case;

/// One buffer holding several tensors at aligned offsets, as an app might pack them.
pub struct Packed {
    pub buffer: wgpu::Buffer,
    pub offsets: Vec<u64>,
}

pub fn pack(ctx: &Context, parts: &[Vec<u8>]) -> Packed {
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
pub fn poisoned(ctx: &Context, size: u64) -> wgpu::Buffer {
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
pub fn read(ctx: &Context, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Vec<u8> {
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

/// Runs `case` through `record_attention`: q, k, v (and a mask) in one caller buffer at
/// aligned offsets, `out` at an offset in another poisoned one; recorded after a caller's own
/// pass in the caller's encoder. Returns `out` and the path recorded, or the engine's error.
/// Panics (naming `name`) where `out` was written before the caller submitted, or bytes past
/// it were.
pub fn record_case(
    ctx: &Context,
    name: &str,
    case: &Case,
) -> wgattn::Result<(Tensor, ExecutionPath)> {
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
    let d = &case.dims;
    let out_shape = super::Dims::shape(case.opts.layout, d.b, d.hq, d.lq, d.dv).to_vec();
    let out_bytes = (out_shape.iter().product::<usize>() * dtype.size()) as u64;
    let out_offset = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let out_size = (out_offset + out_bytes).next_multiple_of(16) + 16;
    let out_buffer = poisoned(ctx, out_size);

    let at = |i: usize, shape, dt| GpuTensor {
        buffer: &packed.buffer,
        offset: packed.offsets[i],
        shape,
        dtype: dt,
    };
    let mut inputs = GpuInputs::new(
        at(0, case.q.shape(), dtype),
        at(1, case.k.shape(), dtype),
        at(2, case.v.shape(), dtype),
    );
    inputs.kv_lengths = case.kv_lengths.as_deref();
    inputs.mods = case.mods.as_ref();
    inputs.mask = case.mask.as_ref().map(|m| match m {
        Mask::Bool(b) => GpuMask::Bool(at(3, b.shape(), DType::F32)),
        Mask::Additive(t) => GpuMask::Additive(at(3, t.shape(), t.dtype())),
    });
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
    let recorded = record_attention(ctx, &mut encoder, &inputs, &case.opts, &out)?;
    assert_eq!(recorded.problem().out_shape(), out_shape, "{name}");
    let path = recorded.path();
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
    // The bytes after `out` (past its 4-byte rounding) are the caller's and stay untouched.
    let tail_at = out_offset + out_bytes.next_multiple_of(4);
    let tail = read(ctx, &out_buffer, tail_at, 16);
    assert!(tail.iter().all(|&b| b == 0xff), "{name}: wrote past out");
    Ok((got, path))
}
