//! The staged path: four kernels (`qk_scores`, `apply_mask`, `softmax`, `attend_values`)
//! recorded into one encoder, with one read-back. It materializes `[B, Hq, Lq, Lt]` and is
//! the path that can return the intermediates.

use crate::blocks::{self, AuxGroup, Tables};
use crate::context::Context;
use crate::error::Result;
use crate::gpu::{
    bind_group, check_binding, dispatch_with, grid, Held, Params, Readback, Recorded, Slice,
};
use crate::kernels::{Kernel, Variant};
use crate::problem::{AttentionInputs, AttentionProblem};
use crate::tensor::{DType, Mask, Tensor};

/// Invocations per workgroup of the staged kernels (`WORKGROUP` in their WGSL).
const WORKGROUP: u64 = 64;

/// Bytes of a tensor's elements (at least 4: a binding is never empty).
fn bytes_of(t: Option<&Tensor>) -> u64 {
    t.map_or(4, |t| (t.len() * t.dtype().size()) as u64)
}

/// Bytes of `n` elements of the problem's dtype.
fn elements(p: &AttentionProblem, n: usize) -> u64 {
    (n * p.dtype.size()) as u64
}

/// Checks every binding of the staged path and its read-back against the limits (from the
/// problem's sizes alone, so [`crate::split`] can ask about sub-problems); returns the bytes
/// of `out` and where the results lie in the read-back.
pub(crate) fn check_limits(ctx: &Context, p: &AttentionProblem) -> Result<(u64, Readback)> {
    let kv_rows = p.batch * p.kv_heads;
    for (what, n) in [
        ("q", p.rows() * p.head_dim),
        ("k", kv_rows * p.k_len * p.head_dim),
        ("v", kv_rows * p.k_len * p.v_dim),
        ("past_k", kv_rows * p.past_len * p.head_dim),
        ("past_v", kv_rows * p.past_len * p.v_dim),
    ] {
        check_binding(ctx, what, elements(p, n))?;
    }
    if let Some((_, layout)) = p.mask {
        check_binding(ctx, "mask", layout.len as u64 * 4)?;
    }
    let score_bytes = check_binding(
        ctx,
        &format!(
            "staged scores [B, Hq, Lq, Lt] = {:?} in f32",
            p.score_shape()
        ),
        p.score_len() as u64 * 4,
    )?;
    let out_bytes = check_binding(ctx, "out", elements(p, p.out_len()))?;
    Ok((out_bytes, Readback::new(ctx, p, out_bytes, score_bytes)?))
}

/// Uploads the inputs and records the four stages and the copies into one encoder.
pub(crate) fn record(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    held: &mut Held<'_>,
) -> Result<Recorded> {
    let (out_bytes, layout) = check_limits(ctx, p)?;
    let score_bytes = layout.score_bytes;
    let rows = p.rows() as u64;
    let per_word = if p.dtype == DType::F32 { 1 } else { 2 };
    let grids = [
        grid(ctx, "qk_scores", (p.score_len() as u64).div_ceil(WORKGROUP))?,
        grid(ctx, "apply_mask", rows)?,
        grid(ctx, "softmax", rows)?,
        grid(
            ctx,
            "attend_values",
            (p.out_len() as u64).div_ceil(per_word).div_ceil(WORKGROUP),
        )?,
    ];
    let mask_kind = p.mask.map(|(k, _)| k);
    let flags = blocks::flags(p);
    let variants = Kernel::STAGED.map(|k| {
        Variant::new(k, p.dtype, mask_kind)
            .with_features(ctx.shader_features())
            .with_mods(flags)
    });
    let [qk_p, mask_p, softmax_p, pv_p] = variants.map(|v| ctx.pipeline_with(v, p.mods.as_ref()));
    let (qk_p, mask_p, softmax_p, pv_p) = (qk_p?, mask_p?, softmax_p?, pv_p?);

    let tables = Tables::upload(ctx, held, p, inputs.mods, None)?;
    let mut params = Params::new(p);
    tables.set_params(&mut params);
    let uniform = held.uniform(&params)?;
    let aux = AuxGroup::upload(ctx, held, inputs.mods)?;
    let q = held.upload(&inputs.q.padded_bytes())?;
    let k = held.upload(&inputs.k.padded_bytes())?;
    let v = held.upload(&inputs.v.padded_bytes())?;
    let empty = [0u8; 4];
    let past_k = match inputs.past_k {
        Some(t) if !t.is_empty() => held.upload(&t.padded_bytes())?,
        _ => held.upload(&empty)?,
    };
    let past_v = match inputs.past_v {
        Some(t) if !t.is_empty() => held.upload(&t.padded_bytes())?,
        _ => held.upload(&empty)?,
    };
    let (mask, mask_bytes) = upload_mask(held, inputs.mask)?;
    let row_bytes = rows * 4;
    let work = held.scratch(score_bytes)?;
    let alive = held.scratch(row_bytes)?;
    let out = held.scratch(out_bytes)?;
    let readback = held.take(
        layout.total,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;

    let u = std::mem::size_of::<Params>() as u64;
    let shape = format!("{:?}", p.score_shape());
    let groups = [
        bind_group(
            ctx,
            &qk_p,
            &format!("qk_scores {shape}"),
            &[
                (&uniform, u),
                (&q, bytes_of(Some(inputs.q))),
                (&k, bytes_of(Some(inputs.k))),
                (&past_k, bytes_of(inputs.past_k)),
                (&work, score_bytes),
            ],
        ),
        bind_group(
            ctx,
            &mask_p,
            &format!("apply_mask {shape}"),
            &[
                (&uniform, u),
                (&tables.buffer, tables.bytes),
                (&mask, mask_bytes),
                (&work, score_bytes),
                (&alive, row_bytes),
            ],
        ),
        bind_group(
            ctx,
            &softmax_p,
            &format!("softmax {shape}"),
            &[(&uniform, u), (&alive, row_bytes), (&work, score_bytes)],
        ),
        bind_group(
            ctx,
            &pv_p,
            &format!("attend_values {:?}", p.out_shape()),
            &[
                (&uniform, u),
                (&v, bytes_of(Some(inputs.v))),
                (&past_v, bytes_of(inputs.past_v)),
                (&work, score_bytes),
                (&alive, row_bytes),
                (&out, out_bytes),
            ],
        ),
    ];

    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgattn staged"),
        });
    let pipelines = [&qk_p, &mask_p, &softmax_p, &pv_p];
    let uniform_slice = Slice {
        buffer: &uniform,
        offset: 0,
        size: u,
    };
    tables.encode_passes(ctx, p, uniform_slice, aux.as_ref(), None, &mut encoder)?;
    // After stage i, the intermediate it produced is copied out if asked for.
    let copies = [
        layout.offsets[1],
        layout.offsets[2],
        layout.offsets[3],
        None,
    ];
    for (i, kernel) in Kernel::STAGED.into_iter().enumerate() {
        let aux_group = AuxGroup::bind_for(aux.as_ref(), ctx, &variants[i], pipelines[i]);
        dispatch_with(
            &mut encoder,
            kernel.name(),
            (&variants[i], pipelines[i]),
            &groups[i],
            aux_group.as_ref(),
            grids[i],
        );
        if let Some(offset) = copies[i] {
            crate::gpu::copy(&mut encoder, (&work, 0), (&readback, offset), score_bytes);
        }
    }
    crate::gpu::copy(&mut encoder, (&out, 0), (&readback, 0), out_bytes);
    Ok(Recorded {
        encoder,
        readback,
        layout,
    })
}

/// The mask tensor's buffer and the bytes to bind (a 4-byte placeholder without a mask).
pub(crate) fn upload_mask(held: &mut Held<'_>, mask: Option<&Mask>) -> Result<(wgpu::Buffer, u64)> {
    Ok(match mask {
        Some(Mask::Bool(m)) => (held.upload(&m.padded_bytes())?, m.data().len() as u64),
        Some(Mask::Additive(t)) => (held.upload(&t.padded_bytes())?, bytes_of(Some(t))),
        None => (held.upload(&[0u8; 4])?, 4),
    })
}
