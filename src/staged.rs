//! The staged path: four kernels (`qk_scores`, `apply_mask`, `softmax`, `attend_values`)
//! recorded into one encoder, with one read-back. It materializes `[B, Hq, Lq, Lt]` and is
//! the path that can return the intermediates.

use crate::blocks::{self, AuxGroup, Tables};
use crate::context::Context;
use crate::error::Result;
use crate::gpu::{
    bind_slices, check_binding, dispatch_with, grid, Held, Params, Readback, Recorded, Slice,
};
use crate::kernels::{Kernel, Variant};
use crate::loops;
use crate::mods::MaskMods;
use crate::problem::{AttentionInputs, AttentionProblem};
use crate::tensor::{Mask, Tensor};

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
    blocks::check_tables(ctx, p, None)?;
    let score_bytes = check_binding(
        ctx,
        &format!(
            "staged scores [B, Hq, Lq, Lt] = {:?} in f32",
            p.score_shape()
        ),
        p.score_len() as u64 * 4,
    )?;
    let out_bytes = check_binding(ctx, "out", elements(p, p.out_len()))?;
    if let Some(limit) = ctx.loop_trip_limit() {
        let trips = loops::staged(p.total_len() as u64, p.dtype.per_word());
        if trips > limit {
            let what = format!("staged attend_values over {} keys", p.total_len());
            return Err(loops::too_many_trips(&what, trips, limit));
        }
    }
    Ok((out_bytes, Readback::new(ctx, p, out_bytes, score_bytes)?))
}

/// Where the staged kernels read their inputs and write `out` (engine buffers, or a
/// caller's through [`crate::record_attention`]).
pub(crate) struct Io<'b> {
    pub q: Slice<'b>,
    pub k: Slice<'b>,
    pub v: Slice<'b>,
    pub past_k: Option<Slice<'b>>,
    pub past_v: Option<Slice<'b>>,
    pub mask: Option<Slice<'b>>,
    pub out: Slice<'b>,
    /// The mods' data (`p.mods` says which are given).
    pub mods: Option<&'b MaskMods>,
}

/// The four stages of one problem, validated and compiled: grids within the dispatch
/// limits and a pipeline for each, before anything is uploaded.
pub(crate) struct Stages {
    /// Bytes of `out` and where the results lie in a read-back.
    pub out_bytes: u64,
    pub layout: Readback,
    grids: [(u32, u32); 4],
    variants: [Variant; 4],
    pipelines: [wgpu::ComputePipeline; 4],
}

impl Stages {
    pub(crate) fn new(ctx: &Context, p: &AttentionProblem) -> Result<Stages> {
        let (out_bytes, layout) = check_limits(ctx, p)?;
        let rows = p.rows() as u64;
        let per_word = p.dtype.per_word();
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
        let [a, b, c, d] = variants.map(|v| ctx.pipeline_with(v, p.mods.as_ref()));
        Ok(Stages {
            out_bytes,
            layout,
            grids,
            variants,
            pipelines: [a?, b?, c?, d?],
        })
    }

    /// Records the four stages reading and writing `io` into `encoder`, with the uniform
    /// block, tables and the scores' scratch taken from `held`. With a `readback` buffer
    /// (laid out as `self.layout`), the intermediates the problem asks for are copied there
    /// after the stage that produced them. Nothing is submitted.
    pub(crate) fn encode(
        &self,
        ctx: &Context,
        p: &AttentionProblem,
        io: &Io<'_>,
        held: &mut Held<'_>,
        encoder: &mut wgpu::CommandEncoder,
        readback: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let score_bytes = self.layout.score_bytes;
        let tables = Tables::upload(ctx, held, p, io.mods, None)?;
        let mut params = Params::new(p);
        tables.set_params(&mut params);
        let uniform = held.uniform(&params)?;
        let aux = AuxGroup::upload(ctx, held, io.mods)?;
        let absent = Slice::whole(ctx.absent(), 4);
        let row_bytes = p.rows() as u64 * 4;
        let work = held.scratch(score_bytes)?;
        let work = Slice::whole(&work, score_bytes);
        let alive = held.scratch(row_bytes)?;
        let alive = Slice::whole(&alive, row_bytes);
        let uniform = Slice {
            buffer: &uniform,
            offset: 0,
            size: std::mem::size_of::<Params>() as u64,
        };
        let [qk_p, mask_p, softmax_p, pv_p] = &self.pipelines;
        let shape = format!("{:?}", p.score_shape());
        let groups = [
            bind_slices(
                ctx,
                qk_p,
                &format!("qk_scores {shape}"),
                &[uniform, io.q, io.k, io.past_k.unwrap_or(absent), work],
            ),
            bind_slices(
                ctx,
                mask_p,
                &format!("apply_mask {shape}"),
                &[
                    uniform,
                    tables.slice(),
                    io.mask.unwrap_or(absent),
                    work,
                    alive,
                ],
            ),
            bind_slices(
                ctx,
                softmax_p,
                &format!("softmax {shape}"),
                &[uniform, alive, work],
            ),
            bind_slices(
                ctx,
                pv_p,
                &format!("attend_values {:?}", p.out_shape()),
                &[
                    uniform,
                    io.v,
                    io.past_v.unwrap_or(absent),
                    work,
                    alive,
                    io.out,
                ],
            ),
        ];

        tables.encode_passes(ctx, p, uniform, aux.as_ref(), None, encoder)?;
        // After stage i, the intermediate it produced is copied out if asked for.
        let offsets = &self.layout.offsets;
        let copies = [offsets[1], offsets[2], offsets[3], None];
        for (i, kernel) in Kernel::STAGED.into_iter().enumerate() {
            let pipeline = &self.pipelines[i];
            let aux_group = AuxGroup::bind_for(aux.as_ref(), ctx, &self.variants[i], pipeline);
            dispatch_with(
                encoder,
                kernel.name(),
                (&self.variants[i], pipeline),
                &groups[i],
                aux_group.as_ref(),
                self.grids[i],
            );
            if let (Some(readback), Some(offset)) = (readback, copies[i]) {
                crate::gpu::copy(encoder, (work.buffer, 0), (readback, offset), score_bytes);
            }
        }
        Ok(())
    }
}

/// Uploads the inputs and records the four stages and the copies into one encoder.
pub(crate) fn record(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    held: &mut Held<'_>,
) -> Result<Recorded> {
    let stages = Stages::new(ctx, p)?;
    let out_bytes = stages.out_bytes;
    let q = held.upload(&inputs.q.padded_bytes())?;
    let k = held.upload(&inputs.k.padded_bytes())?;
    let v = held.upload(&inputs.v.padded_bytes())?;
    let past = |t: Option<&Tensor>, held: &mut Held<'_>| -> Result<Option<wgpu::Buffer>> {
        match t {
            Some(t) if !t.is_empty() => Ok(Some(held.upload(&t.padded_bytes())?)),
            _ => Ok(None),
        }
    };
    let past_k = past(inputs.past_k, held)?;
    let past_v = past(inputs.past_v, held)?;
    let mask = upload_mask(held, inputs.mask)?;
    let out = held.scratch(out_bytes)?;
    let readback = held.take(
        stages.layout.total,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;
    let io = Io {
        q: Slice::whole(&q, bytes_of(Some(inputs.q))),
        k: Slice::whole(&k, bytes_of(Some(inputs.k))),
        v: Slice::whole(&v, bytes_of(Some(inputs.v))),
        past_k: past_k
            .as_ref()
            .map(|b| Slice::whole(b, bytes_of(inputs.past_k))),
        past_v: past_v
            .as_ref()
            .map(|b| Slice::whole(b, bytes_of(inputs.past_v))),
        mask: mask.as_ref().map(|(b, bytes)| Slice::whole(b, *bytes)),
        out: Slice::whole(&out, out_bytes),
        mods: inputs.mods,
    };
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgattn staged"),
        });
    stages.encode(ctx, p, &io, held, &mut encoder, Some(&readback))?;
    crate::gpu::copy(&mut encoder, (&out, 0), (&readback, 0), out_bytes);
    Ok(Recorded {
        encoder,
        readback,
        layout: stages.layout,
    })
}

/// The mask tensor's buffer and the bytes to bind; `None` without a mask (the kernels then
/// bind [`Context::absent`]).
pub(crate) fn upload_mask(
    held: &mut Held<'_>,
    mask: Option<&Mask>,
) -> Result<Option<(wgpu::Buffer, u64)>> {
    mask.map(|m| {
        Ok(match m {
            Mask::Bool(m) => (held.upload(&m.padded_bytes())?, m.data().len() as u64),
            Mask::Additive(t) => (held.upload(&t.padded_bytes())?, bytes_of(Some(t))),
        })
    })
    .transpose()
}
