//! The staged path: four kernels (`qk_scores`, `apply_mask`, `softmax`, `attend_values`)
//! encoded into one submission, with one read-back.

use std::num::NonZeroU64;

use bytemuck::{Pod, Zeroable};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{Kernel, Variant};
use crate::kv_cache;
use crate::output::AttentionOutput;
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, Layout};
use crate::tensor::{DType, Mask, Tensor};

/// Invocations per workgroup of every staged kernel (the `WORKGROUP` constant of the shaders).
const WORKGROUP: u64 = 64;

/// The uniform block of `shaders/common.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Params {
    batch: u32,
    q_heads: u32,
    kv_heads: u32,
    q_len: u32,
    k_len: u32,
    past_len: u32,
    total_len: u32,
    head_dim: u32,
    v_dim: u32,
    group: u32,
    bshd: u32,
    rows: u32,
    scale: f32,
    softcap: f32,
    neg_inf: f32,
    out_len: u32,
    mask_sb: u32,
    mask_sh: u32,
    mask_si: u32,
    mask_n: u32,
}

/// Computes masked attention on the GPU and waits for the result.
///
/// Validates everything first ([`Error`] names the problem); then uploads, dispatches the four
/// kernels in one submission and reads the results back once.
pub fn masked_attention(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    pollster::block_on(run(ctx, inputs, options, Wait::Block))
}

/// [`masked_attention`] without blocking the calling thread: a helper thread waits for the
/// device while the returned future is pending, so any executor can drive it.
pub async fn masked_attention_async(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    run(ctx, inputs, options, Wait::Thread).await
}

#[derive(Clone, Copy, PartialEq)]
enum Wait {
    Block,
    Thread,
}

async fn run(
    ctx: &Context,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    wait: Wait,
) -> Result<AttentionOutput> {
    ctx.check_alive()?;
    let problem = AttentionProblem::new(inputs, options)?;
    let plan = Plan::new(ctx, &problem)?;
    let mut held = Held::new(ctx);
    let submitted = submit(ctx, &problem, &plan, inputs, &mut held);
    let (readback, index) = match submitted {
        Ok(x) => x,
        Err(e) => {
            held.give_back();
            return Err(e);
        }
    };
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let device = ctx.device().clone();
    let poll = move || {
        device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
    };
    let poll_result = match wait {
        Wait::Block => Some(poll()),
        Wait::Thread => {
            std::thread::spawn(poll);
            None
        }
    };
    let mapped = rx.receive().await;
    let result = match (mapped, poll_result) {
        (_, Some(Err(e))) => Err(ctx.check_alive().err().unwrap_or(Error::Gpu(e.to_string()))),
        (Some(Ok(())), _) => read_results(ctx, &problem, &plan, inputs, &readback),
        (Some(Err(e)), _) => Err(ctx.check_alive().err().unwrap_or(Error::Gpu(e.to_string()))),
        (None, _) => Err(Error::Gpu("read-back was cancelled".into())),
    };
    readback.unmap();
    held.keep(readback);
    held.give_back();
    result
}

/// Buffer sizes and dispatch grids, checked against the device's limits before anything is
/// allocated.
struct Plan {
    out_bytes: u64,
    score_bytes: u64,
    /// Offsets in the read-back buffer of out, scores, logits, probs.
    readback: [Option<u64>; 4],
    readback_bytes: u64,
    grids: [(u32, u32); 4],
}

impl Plan {
    fn new(ctx: &Context, p: &AttentionProblem) -> Result<Self> {
        let limits = ctx.limits();
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let el = p.dtype.size() as u64;
        let check = |what: &str, bytes: u64| -> Result<u64> {
            if bytes > binding {
                return Err(Error::ExceedsLimit {
                    what: what.to_string(),
                    limit: "max_storage_buffer_binding_size",
                    requested: bytes,
                    max: binding,
                });
            }
            Ok(bytes)
        };
        let pad4 = |b: u64| b.max(4).next_multiple_of(4);
        let total = p.total_len() as u64;
        let rows = p.rows() as u64;
        check("q", pad4(rows * p.head_dim as u64 * el))?;
        let kv_rows = (p.batch * p.kv_heads) as u64;
        check("k", pad4(kv_rows * p.k_len as u64 * p.head_dim as u64 * el))?;
        check("v", pad4(kv_rows * p.k_len as u64 * p.v_dim as u64 * el))?;
        check(
            "past_k",
            pad4(kv_rows * p.past_len as u64 * p.head_dim as u64 * el),
        )?;
        check(
            "past_v",
            pad4(kv_rows * p.past_len as u64 * p.v_dim as u64 * el),
        )?;
        if let Some((_, layout)) = p.mask {
            check("mask", pad4(layout.len as u64 * 4))?;
        }
        let score_bytes = check(
            &format!("scores [B, Hq, Lq, Lt] = {:?} in f32", p.score_shape()),
            rows * total * 4,
        )?;
        let out_bytes = check("out", pad4(p.out_len() as u64 * el))?;

        let mut offset = 0;
        let mut readback = [None; 4];
        let wanted = [true, p.returns.scores, p.returns.logits, p.returns.probs];
        for (slot, want) in readback.iter_mut().zip(wanted) {
            if want {
                *slot = Some(offset);
                offset += if offset == 0 { out_bytes } else { score_bytes };
            }
        }
        if offset > limits.max_buffer_size {
            return Err(Error::ExceedsLimit {
                what: "read-back of out and the intermediates".into(),
                limit: "max_buffer_size",
                requested: offset,
                max: limits.max_buffer_size,
            });
        }
        let per_word = if p.dtype == DType::F32 { 1 } else { 2 };
        let out_words = (p.out_len() as u64).div_ceil(per_word);
        let max_dim = limits.max_compute_workgroups_per_dimension;
        let grids = [
            grid("qk_scores", (rows * total).div_ceil(WORKGROUP), max_dim)?,
            grid("apply_mask", rows, max_dim)?,
            grid("softmax", rows, max_dim)?,
            grid("attend_values", out_words.div_ceil(WORKGROUP), max_dim)?,
        ];
        Ok(Plan {
            out_bytes,
            score_bytes,
            readback,
            readback_bytes: offset,
            grids,
        })
    }
}

/// A 2-D grid of at least `n` workgroups (the shaders linearize `y * nx + x`).
fn grid(kernel: &str, n: u64, max_dim: u32) -> Result<(u32, u32)> {
    let max = max_dim as u64;
    let x = n.clamp(1, max);
    let y = n.div_ceil(x).max(1);
    if y > max {
        return Err(Error::ExceedsLimit {
            what: format!("{kernel} dispatch of {n} workgroups"),
            limit: "max_compute_workgroups_per_dimension",
            requested: n,
            max: max * max,
        });
    }
    Ok((x as u32, y as u32))
}

/// Buffers taken from the pool for one call; all go back when the call ends, however it ends.
struct Held<'c> {
    ctx: &'c Context,
    buffers: Vec<wgpu::Buffer>,
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl<'c> Held<'c> {
    fn new(ctx: &'c Context) -> Self {
        Held {
            ctx,
            buffers: Vec::new(),
        }
    }

    fn take(&mut self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let mut pool = self
            .ctx
            .pool
            .lock()
            .map_err(|_| Error::Gpu("buffer pool poisoned".into()))?;
        let b = pool.take(
            self.ctx.device(),
            size,
            usage,
            self.ctx.limits().max_buffer_size,
        );
        self.buffers.push(b.clone());
        Ok(b)
    }

    /// A storage buffer holding `bytes`.
    fn upload(&mut self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let b = self.take(bytes.len() as u64, STORAGE)?;
        self.ctx.queue().write_buffer(&b, 0, bytes);
        Ok(b)
    }

    fn keep(&mut self, b: wgpu::Buffer) {
        if !self.buffers.iter().any(|x| x == &b) {
            self.buffers.push(b);
        }
    }

    fn give_back(&mut self) {
        if let Ok(mut pool) = self.ctx.pool.lock() {
            for b in self.buffers.drain(..) {
                pool.give(b);
            }
        }
    }
}

fn binding(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: NonZeroU64::new(size.max(4).next_multiple_of(4)),
    })
}

fn bind_group(
    ctx: &Context,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    entries: &[(&wgpu::Buffer, u64)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
        .iter()
        .enumerate()
        .map(|(i, (b, size))| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: binding(b, *size),
        })
        .collect();
    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

fn params(p: &AttentionProblem) -> Params {
    let (strides, n) = p.mask.map_or(([0; 3], 0), |(_, l)| (l.strides, l.last_len));
    Params {
        batch: p.batch as u32,
        q_heads: p.q_heads as u32,
        kv_heads: p.kv_heads as u32,
        q_len: p.q_len as u32,
        k_len: p.k_len as u32,
        past_len: p.past_len as u32,
        total_len: p.total_len() as u32,
        head_dim: p.head_dim as u32,
        v_dim: p.v_dim as u32,
        group: p.group() as u32,
        bshd: (p.layout == Layout::Bshd) as u32,
        rows: p.rows() as u32,
        scale: p.scale,
        softcap: p.softcap,
        neg_inf: f32::NEG_INFINITY,
        out_len: p.out_len() as u32,
        mask_sb: strides[0] as u32,
        mask_sh: strides[1] as u32,
        mask_si: strides[2] as u32,
        mask_n: n as u32,
    }
}

/// Uploads, encodes the four stages and the copies into one encoder and submits it.
fn submit(
    ctx: &Context,
    p: &AttentionProblem,
    plan: &Plan,
    inputs: &AttentionInputs<'_>,
    held: &mut Held<'_>,
) -> Result<(wgpu::Buffer, wgpu::SubmissionIndex)> {
    let mask_kind = p.mask.map(|(k, _)| k);
    let pipelines = Kernel::ALL.map(|k| ctx.pipeline(Variant::new(k, p.dtype, mask_kind)));
    let [qk_p, mask_p, softmax_p, pv_p] = pipelines;
    let (qk_p, mask_p, softmax_p, pv_p) = (qk_p?, mask_p?, softmax_p?, pv_p?);

    let oom = ctx
        .device()
        .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);

    let uniform = held.take(
        std::mem::size_of::<Params>() as u64,
        wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    )?;
    ctx.queue()
        .write_buffer(&uniform, 0, bytemuck::bytes_of(&params(p)));
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
    let mask = match inputs.mask {
        Some(Mask::Bool(m)) => held.upload(&m.padded_bytes())?,
        Some(Mask::Additive(t)) => held.upload(&t.padded_bytes())?,
        None => held.upload(&empty)?,
    };
    let bounds: Vec<[i32; 4]> = p.bounds.iter().map(|b| [b.lo, b.hi, b.kv_len, 0]).collect();
    let bounds = held.upload(bytemuck::cast_slice(&bounds))?;
    let row_bytes = p.rows() as u64 * 4;
    let work = held.take(plan.score_bytes, STORAGE)?;
    let alive = held.take(row_bytes, STORAGE)?;
    let out = held.take(plan.out_bytes, STORAGE)?;
    let readback = held.take(
        plan.readback_bytes,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;
    if ctx.poison_outputs() {
        for (b, n) in [
            (&work, plan.score_bytes),
            (&alive, row_bytes),
            (&out, plan.out_bytes),
        ] {
            ctx.queue()
                .write_buffer(b, 0, &vec![0xff; n.max(4).next_multiple_of(4) as usize]);
        }
    }

    let size = |t: Option<&Tensor>| t.map_or(4, |t| (t.len() * t.dtype().size()) as u64);
    let u = std::mem::size_of::<Params>() as u64;
    let mask_bytes = match inputs.mask {
        Some(Mask::Bool(m)) => m.data().len() as u64,
        Some(Mask::Additive(t)) => size(Some(t)),
        None => 4,
    };
    let shape = format!("{:?}", p.score_shape());
    let groups = [
        bind_group(
            ctx,
            &qk_p,
            &format!("qk_scores {shape}"),
            &[
                (&uniform, u),
                (&q, size(Some(inputs.q))),
                (&k, size(Some(inputs.k))),
                (&past_k, size(inputs.past_k)),
                (&work, plan.score_bytes),
            ],
        ),
        bind_group(
            ctx,
            &mask_p,
            &format!("apply_mask {shape}"),
            &[
                (&uniform, u),
                (&bounds, p.batch as u64 * 16),
                (&mask, mask_bytes),
                (&work, plan.score_bytes),
                (&alive, row_bytes),
            ],
        ),
        bind_group(
            ctx,
            &softmax_p,
            &format!("softmax {shape}"),
            &[
                (&uniform, u),
                (&alive, row_bytes),
                (&work, plan.score_bytes),
            ],
        ),
        bind_group(
            ctx,
            &pv_p,
            &format!("attend_values {:?}", p.out_shape()),
            &[
                (&uniform, u),
                (&v, size(Some(inputs.v))),
                (&past_v, size(inputs.past_v)),
                (&work, plan.score_bytes),
                (&alive, row_bytes),
                (&out, plan.out_bytes),
            ],
        ),
    ];

    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgattn staged"),
        });
    let stages = [
        (Kernel::QkScores, &qk_p, plan.readback[1]),
        (Kernel::ApplyMask, &mask_p, plan.readback[2]),
        (Kernel::Softmax, &softmax_p, plan.readback[3]),
        (Kernel::AttendValues, &pv_p, None),
    ];
    for (i, (kernel, pipeline, copy_to)) in stages.into_iter().enumerate() {
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.name()),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &groups[i], &[]);
            let (x, y) = plan.grids[i];
            pass.dispatch_workgroups(x, y, 1);
        }
        if let Some(offset) = copy_to {
            encoder.copy_buffer_to_buffer(&work, 0, &readback, offset, plan.score_bytes);
        }
    }
    encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, plan.out_bytes);
    let index = ctx.queue().submit([encoder.finish()]);

    let validation = pollster::block_on(validation.pop());
    let oom = pollster::block_on(oom.pop());
    if let Some(e) = validation.or(oom) {
        return Err(match e {
            wgpu::Error::OutOfMemory { .. } => Error::Gpu(format!("out of GPU memory: {e}")),
            e => Error::Gpu(e.to_string()),
        });
    }
    Ok((readback, index))
}

/// Reads `out` and the intermediates back, rounding intermediates to the input dtype once.
fn read_results(
    ctx: &Context,
    p: &AttentionProblem,
    plan: &Plan,
    inputs: &AttentionInputs<'_>,
    readback: &wgpu::Buffer,
) -> Result<AttentionOutput> {
    let view = readback
        .get_mapped_range(..plan.readback_bytes)
        .map_err(|e| Error::Gpu(format!("mapping the read-back: {e}")))?;
    let bytes: &[u8] = &view;
    let out_len = p.out_len() * p.dtype.size();
    let out = Tensor::from_le_bytes(p.out_shape(), p.dtype, &bytes[..out_len])?;
    let inter = |slot: Option<u64>| -> Result<Option<Tensor>> {
        slot.map(|offset| {
            let start = offset as usize;
            let floats: Vec<f32> = bytes[start..start + plan.score_bytes as usize]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::from_f32_as(p.score_shape(), &floats, p.dtype)
        })
        .transpose()
    };
    let (present_k, present_v) = if p.has_past {
        (
            Some(kv_cache::concat(p, inputs.past_k, inputs.k, p.head_dim)?),
            Some(kv_cache::concat(p, inputs.past_v, inputs.v, p.v_dim)?),
        )
    } else {
        (None, None)
    };
    let result = AttentionOutput {
        out,
        present_k,
        present_v,
        scores: inter(plan.readback[1])?,
        logits: inter(plan.readback[2])?,
        probs: inter(plan.readback[3])?,
    };
    drop(view);
    ctx.check_alive()?;
    Ok(result)
}
