//! What the GPU paths share: the uniform block, pooled buffers held for one call, bind
//! groups, dispatch grids, and the single read-back.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host_copy;
use crate::kernels::Variant;
use crate::kv_cache;
use crate::output::AttentionOutput;
use crate::plan::trace;
use crate::problem::{AttentionInputs, AttentionProblem, Layout};
use crate::tensor::Tensor;

/// The uniform block of `shaders/common.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct Params {
    pub batch: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub q_len: u32,
    pub k_len: u32,
    pub past_len: u32,
    pub total_len: u32,
    pub head_dim: u32,
    pub v_dim: u32,
    pub group: u32,
    pub bshd: u32,
    pub rows: u32,
    pub scale: f32,
    pub softcap: f32,
    pub neg_inf: f32,
    pub out_len: u32,
    pub mask_sb: u32,
    pub mask_sh: u32,
    pub mask_si: u32,
    pub mask_n: u32,
    pub kv_bshd: u32,
    pub splits: u32,
    pub split_len: u32,
    pub key_pass: u32,
    // Where the mods' tables lie in `tables`, and the block mask's layout (see blocks.rs).
    pub t_q_seg: u32,
    pub t_kv_seg: u32,
    pub t_prefix: u32,
    pub t_alibi: u32,
    pub alibi_symmetric: u32,
    pub t_ids: u32,
    pub t_blocked: u32,
    pub n_blocked: u32,
    pub t_classes: u32,
    pub n_classes: u32,
    pub t_class_blocked: u32,
    pub t_key_ok: u32,
    pub t_mod_q: u32,
    pub t_mod_kv: u32,
    pub t_allow: u32,
    pub t_mod_causal: u32,
    pub modalities: u32,
    pub t_blocks: u32,
    pub blk_q: u32,
    pub blk_k: u32,
    pub blk_qt: u32,
    pub blk_kt: u32,
    pub blk_sb: u32,
    pub blk_sh: u32,
    pub b_base: u32,
    pub h_base: u32,
    pub pad1: u32,
    pub pad2: u32,
}

impl Params {
    pub(crate) fn new(p: &AttentionProblem) -> Self {
        let (strides, n) = p.mask.map_or(([0; 3], 0), |(_, l)| (l.strides, l.last_len));
        let bshd = (p.layout == Layout::Bshd) as u32;
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
            bshd,
            rows: p.rows() as u32,
            scale: p.scale,
            // A GPU that flushes subnormals would read a subnormal cap as 0, no cap at all;
            // the smallest normal f32 caps as closely (every capped score within 1.2e-38 of
            // 0, which no softmax in f32 tells apart).
            softcap: if p.softcap > 0.0 {
                p.softcap.max(f32::MIN_POSITIVE)
            } else {
                p.softcap
            },
            neg_inf: f32::NEG_INFINITY,
            out_len: p.out_len() as u32,
            mask_sb: strides[0] as u32,
            mask_sh: strides[1] as u32,
            mask_si: strides[2] as u32,
            mask_n: n as u32,
            // With a cache the kernels read the concatenated present cache, always bhsd.
            kv_bshd: if p.has_past { 0 } else { bshd },
            splits: 1,
            split_len: p.total_len() as u32,
            b_base: p.mods.as_ref().map_or(0, |m| m.batch_offset as u32),
            h_base: p.mods.as_ref().map_or(0, |m| m.head_offset as u32),
            ..Zeroable::zeroed()
        }
    }
}

/// Usage of every pooled storage buffer (one usage, so any buffer can serve any role).
pub(crate) const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// The most bytes one binding may hold, and the limit's name: the device's binding and
/// buffer limits (and the u32 indices of the kernels), lowered by
/// [`Tuning::max_binding_bytes`](crate::Tuning::max_binding_bytes) when that is smaller.
pub(crate) fn binding_limit(ctx: &Context) -> (u64, &'static str) {
    let limits = ctx.limits();
    let device = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        .min(u32::MAX as u64);
    match ctx.tuning().max_binding_bytes {
        Some(bytes) if bytes < device => (
            bytes,
            "max_storage_buffer_binding_size (lowered by Tuning::max_binding_bytes)",
        ),
        _ => (device, "max_storage_buffer_binding_size"),
    }
}

/// The most bytes one buffer may hold, and the limit's name: `max_buffer_size`, lowered by
/// [`Tuning::max_binding_bytes`](crate::Tuning::max_binding_bytes) when that is smaller.
pub(crate) fn buffer_limit(ctx: &Context) -> (u64, &'static str) {
    let device = ctx.limits().max_buffer_size;
    match ctx.tuning().max_binding_bytes {
        Some(bytes) if bytes < device => (
            bytes,
            "max_buffer_size (lowered by Tuning::max_binding_bytes)",
        ),
        _ => (device, "max_buffer_size"),
    }
}

/// Fails with `ExceedsLimit` when one binding would need more than [`binding_limit`] allows.
pub(crate) fn check_binding(ctx: &Context, what: &str, bytes: u64) -> Result<u64> {
    let (max, limit) = binding_limit(ctx);
    if bytes.next_multiple_of(16) > max {
        return Err(Error::ExceedsLimit {
            what: what.to_string(),
            limit,
            requested: bytes,
            max,
        });
    }
    Ok(bytes.max(4).next_multiple_of(4))
}

/// A 2-D grid of at least `n` workgroups (the shaders linearize `y * nx + x`).
pub(crate) fn grid(ctx: &Context, kernel: &str, n: u64) -> Result<(u32, u32)> {
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
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

/// Creates a buffer inside an out-of-memory error scope, so that an allocation the device
/// refuses is [`Error::OutOfMemory`] naming its size: never an invalid buffer handed on to a
/// later call, nor an error left to wgpu's uncaptured-error handler. `engine_bytes`: what the
/// engine has allocated on the context now (for the error).
pub(crate) fn create_buffer(
    device: &wgpu::Device,
    desc: &wgpu::BufferDescriptor<'_>,
    engine_bytes: u64,
) -> Result<wgpu::Buffer> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let buffer = device.create_buffer(desc);
    match scope_error(scope) {
        None => Ok(buffer),
        Some(e) => Err(Error::OutOfMemory {
            what: buffer_role(desc.usage).to_string(),
            requested: desc.size,
            engine_bytes,
            message: e.to_string(),
        }),
    }
}

/// What an engine buffer of this usage is for, in [`Error::OutOfMemory`].
fn buffer_role(usage: wgpu::BufferUsages) -> &'static str {
    if usage.contains(wgpu::BufferUsages::MAP_READ) {
        "read-back buffer"
    } else if usage.contains(wgpu::BufferUsages::MAP_WRITE) {
        "upload buffer"
    } else if usage.contains(wgpu::BufferUsages::UNIFORM) {
        "uniform buffer"
    } else {
        "storage buffer"
    }
}

/// Buffers taken from the pool for one call; all go back when the call ends, however it ends.
///
/// An unpooled `Held` (work recorded into a caller's encoder, which the engine never sees
/// finish) creates fresh buffers, written at creation, and never reuses them, so nothing
/// the GPU has yet to read can be overwritten by a later call.
///
/// When the device runs out of memory during the call, its buffers are dropped instead of
/// pooled and the pool frees the buffers it keeps for reuse, so the memory goes back to the
/// device at once.
pub(crate) struct Held<'c> {
    ctx: &'c Context,
    buffers: Vec<wgpu::Buffer>,
    pooled: bool,
    out_of_memory: bool,
    /// Submitted and not yet seen done: dropped now (an async call's future dropped while it
    /// waits), the GPU may still use the buffers, and the read-back may have a mapping
    /// pending, so they are let go instead of pooled.
    in_flight: bool,
}

impl<'c> Held<'c> {
    pub(crate) fn new(ctx: &'c Context) -> Self {
        Held {
            ctx,
            buffers: Vec::new(),
            pooled: true,
            out_of_memory: false,
            in_flight: false,
        }
    }

    /// Fresh buffers that are dropped, not pooled, at the end.
    pub(crate) fn unpooled(ctx: &'c Context) -> Self {
        let mut held = Held::new(ctx);
        held.pooled = false;
        held
    }

    /// Bytes of every buffer held.
    pub(crate) fn bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.size()).sum()
    }

    /// Notes an out-of-memory error on the way out, so that [`Held::give_back`] frees memory.
    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(Error::OutOfMemory { .. }) = &r {
            self.out_of_memory = true;
        }
        r
    }

    /// Marks the buffers as in use by a submission ([`Held::landed`] once it is done).
    pub(crate) fn submitted(&mut self) {
        self.in_flight = true;
    }

    /// The submission is done (its read-back mapped): the buffers can be reused.
    pub(crate) fn landed(&mut self) {
        self.in_flight = false;
    }

    /// Marks the call as having run out of memory (an error reported at submission).
    pub(crate) fn ran_out_of_memory(&mut self) {
        self.out_of_memory = true;
    }

    /// An unpooled buffer this call holds (see [`Held::outliving`]).
    fn fresh(&mut self, desc: &wgpu::BufferDescriptor<'_>) -> Result<wgpu::Buffer> {
        let b = self.outliving(desc)?;
        trace::created(&b);
        self.buffers.push(b.clone());
        Ok(b)
    }

    /// A fresh buffer, not held (one that outlives the call, which the caller keeps; and what
    /// [`Held::fresh`] then holds): created in an out-of-memory scope, counted in the error as
    /// the engine's live bytes plus what this call holds.
    pub(crate) fn outliving(&mut self, desc: &wgpu::BufferDescriptor<'_>) -> Result<wgpu::Buffer> {
        let engine_bytes = self.ctx.memory().live_bytes + self.bytes();
        let b = create_buffer(self.ctx.device(), desc, engine_bytes);
        self.note(b)
    }

    /// A fresh buffer holding `bytes` (padded to 16), written at creation.
    fn fresh_with(&mut self, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let size = (bytes.len() as u64).max(16).next_multiple_of(16);
        let b = self.fresh(&wgpu::BufferDescriptor {
            label: Some("wgattn recorded"),
            size,
            usage,
            mapped_at_creation: true,
        })?;
        let copied = host_copy::copy_to_mapped(&b, bytes);
        b.unmap();
        copied.map_err(|e| Error::Gpu(format!("writing a recorded buffer: {e}")))?;
        trace::written(&b, bytes);
        Ok(b)
    }

    pub(crate) fn take(&mut self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        if !self.pooled {
            return self.fresh(&wgpu::BufferDescriptor {
                label: Some("wgattn recorded"),
                size: size.max(16).next_multiple_of(16),
                usage,
                mapped_at_creation: false,
            });
        }
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
        drop(pool);
        let b = self.note(b)?;
        trace::created(&b);
        self.buffers.push(b.clone());
        Ok(b)
    }

    /// A storage buffer holding `bytes`. Where the device shares host memory, large inputs
    /// are written straight into a mapped storage buffer (one copy, no staging buffer: wgpu's
    /// `write_buffer` allocates a fresh staging buffer per call, whose page faults and extra
    /// copy cost more than the kernels of a decode step).
    pub(crate) fn upload(&mut self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        if !self.pooled {
            return self.fresh_with(bytes, STORAGE);
        }
        if bytes.len() >= MAPPED_UPLOAD_MIN && self.ctx.uses_mapped_uploads() {
            let b = self.take(bytes.len() as u64, STORAGE | wgpu::BufferUsages::MAP_WRITE)?;
            if !write_mapped(self.ctx, &b, bytes)? {
                self.ctx.queue().write_buffer(&b, 0, bytes);
            }
            trace::written(&b, bytes);
            return Ok(b);
        }
        let b = self.take(bytes.len() as u64, STORAGE)?;
        self.ctx.queue().write_buffer(&b, 0, bytes);
        trace::written(&b, bytes);
        Ok(b)
    }

    /// A scratch or output buffer; filled with NaN when the context poisons outputs.
    pub(crate) fn scratch(&mut self, size: u64) -> Result<wgpu::Buffer> {
        let b = self.take(size, STORAGE)?;
        if self.ctx.poison_outputs() {
            let n = size.max(4).next_multiple_of(4) as usize;
            self.ctx.queue().write_buffer(&b, 0, &vec![0xff; n]);
            trace::filled(&b, 0xff);
        }
        Ok(b)
    }

    /// The uniform block.
    pub(crate) fn uniform(&mut self, params: &Params) -> Result<wgpu::Buffer> {
        if !self.pooled {
            let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
            return self.fresh_with(bytemuck::bytes_of(params), usage);
        }
        let b = self.take(
            std::mem::size_of::<Params>() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        self.ctx
            .queue()
            .write_buffer(&b, 0, bytemuck::bytes_of(params));
        trace::written(&b, bytemuck::bytes_of(params));
        Ok(b)
    }

    pub(crate) fn give_back(&mut self) {
        if !self.pooled {
            self.buffers.clear();
        }
        if self.buffers.is_empty() && !self.out_of_memory {
            return;
        }
        if let Ok(mut pool) = self.ctx.pool.lock() {
            for b in self.buffers.drain(..) {
                if self.in_flight {
                    // wgpu frees it once the GPU is done with it.
                    pool.let_go(b);
                } else {
                    pool.give(b);
                }
            }
            if self.out_of_memory {
                pool.release_free();
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Inputs smaller than this go through `write_buffer` (a map costs a device poll).
const MAPPED_UPLOAD_MIN: usize = 64 << 10;

/// Copies `bytes` into the start of an idle pooled buffer through a mapping. Returns false,
/// with the buffer unmapped and untouched, when the mapping is not ready at once (the buffer
/// is still in use elsewhere): the caller then writes through the queue instead of waiting.
fn write_mapped(ctx: &Context, buffer: &wgpu::Buffer, bytes: &[u8]) -> Result<bool> {
    let ready = Arc::new(Mutex::new(None));
    let slot = ready.clone();
    buffer.map_async(wgpu::MapMode::Write, .., move |r| {
        if let Ok(mut s) = slot.lock() {
            *s = Some(r.is_ok());
        }
    });
    // A buffer no submission uses maps on the next poll.
    let _ = ctx.device().poll(wgpu::PollType::Poll);
    let mapped = ready.lock().map(|s| *s).unwrap_or(None);
    if mapped != Some(true) {
        buffer.unmap();
        return Ok(false);
    }
    let copied = host_copy::copy_to_mapped(buffer, bytes);
    buffer.unmap();
    copied.map_err(|e| Error::Gpu(format!("writing an upload buffer: {e}")))?;
    Ok(true)
}

/// A range of a buffer bound to one binding.
#[derive(Clone, Copy)]
pub(crate) struct Slice<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'b> Slice<'b> {
    /// The first `size` bytes of an engine buffer, bound rounded up to a multiple of 16
    /// (kernels may read q, k, v as vec4<u32>; pooled buffers are that large).
    pub(crate) fn whole(buffer: &'b wgpu::Buffer, size: u64) -> Self {
        Slice {
            buffer,
            offset: 0,
            size: size.max(16).next_multiple_of(16),
        }
    }
}

/// A bind group of `pipeline` binding each slice in order.
pub(crate) fn bind_slices(
    ctx: &Context,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    slices: &[Slice<'_>],
) -> wgpu::BindGroup {
    bind_slices_at(ctx, pipeline, 0, label, slices)
}

/// [`bind_slices`] for bind group `index` of the pipeline (1: the user's aux tensors).
pub(crate) fn bind_slices_at(
    ctx: &Context,
    pipeline: &wgpu::ComputePipeline,
    index: u32,
    label: &str,
    slices: &[Slice<'_>],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = slices
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: s.buffer,
                offset: s.offset,
                size: NonZeroU64::new(s.size),
            }),
        })
        .collect();
    let group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(index),
        entries: &entries,
    });
    trace::bound(&group, slices);
    group
}

/// Records one compute pass with one dispatch of `variant`'s pipeline (its kernel and label
/// name the pass's device time).
pub(crate) fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    (variant, pipeline): (&Variant, &wgpu::ComputePipeline),
    group: &wgpu::BindGroup,
    grid: (u32, u32),
) {
    dispatch_with(encoder, label, (variant, pipeline), group, None, grid);
}

/// [`dispatch`] with bind group 1 (the user's aux tensors) where given.
pub(crate) fn dispatch_with(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    (variant, pipeline): (&Variant, &wgpu::ComputePipeline),
    group: &wgpu::BindGroup,
    aux: Option<&wgpu::BindGroup>,
    (x, y): (u32, u32),
) {
    let timer = crate::timing::next_pass(variant);
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: timer
            .as_ref()
            .map(|(set, at)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(*at),
                end_of_pass_write_index: Some(*at + 1),
            }),
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    if let Some(aux) = aux {
        pass.set_bind_group(1, aux, &[]);
    }
    pass.dispatch_workgroups(x, y, 1);
    trace::dispatched(label, pipeline, group, [x, y, 1]);
}

/// Records a copy of `size` bytes between two buffers.
pub(crate) fn copy(
    encoder: &mut wgpu::CommandEncoder,
    (src, src_offset): (&wgpu::Buffer, u64),
    (dst, dst_offset): (&wgpu::Buffer, u64),
    size: u64,
) {
    encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    trace::copied((src, src_offset), (dst, dst_offset), size);
}

/// Where `out` and the intermediates lie in the read-back buffer.
pub(crate) struct Readback {
    pub score_bytes: u64,
    /// Offsets of out, scores, logits, probs.
    pub offsets: [Option<u64>; 4],
    pub total: u64,
}

impl Readback {
    pub(crate) fn new(
        ctx: &Context,
        p: &AttentionProblem,
        out_bytes: u64,
        score_bytes: u64,
    ) -> Result<Self> {
        let mut offset = 0;
        let mut offsets = [None; 4];
        let wanted = [true, p.returns.scores, p.returns.logits, p.returns.probs];
        for (i, (slot, want)) in offsets.iter_mut().zip(wanted).enumerate() {
            if want {
                *slot = Some(offset);
                offset += if i == 0 { out_bytes } else { score_bytes };
            }
        }
        let (max, limit) = buffer_limit(ctx);
        if offset > max {
            return Err(Error::ExceedsLimit {
                what: "read-back of out and the intermediates".into(),
                limit,
                requested: offset,
                max,
            });
        }
        Ok(Readback {
            score_bytes,
            offsets,
            total: offset,
        })
    }

    /// Reads `out` and the intermediates from the mapped buffer, rounding intermediates
    /// (f32 on the GPU) to the input dtype once.
    fn read(
        &self,
        p: &AttentionProblem,
        present: Present,
        buffer: &wgpu::Buffer,
    ) -> Result<AttentionOutput> {
        let view = buffer
            .get_mapped_range(..self.total)
            .map_err(|e| Error::Gpu(format!("mapping the read-back: {e}")))?;
        let bytes: &[u8] = &view;
        let out_len = p.out_len() * p.dtype.size();
        let out = Tensor::from_le_bytes(p.out_shape(), p.dtype, &bytes[..out_len])?;
        let inter = |slot: Option<u64>| -> Result<Option<Tensor>> {
            slot.map(|offset| {
                let start = offset as usize;
                let words = &bytes[start..start + self.score_bytes as usize];
                Tensor::from_f32_le_as(p.score_shape(), words, p.dtype)
            })
            .transpose()
        };
        let (present_k, present_v) = present;
        Ok(AttentionOutput {
            out,
            present_k,
            present_v,
            scores: inter(self.offsets[1])?,
            logits: inter(self.offsets[2])?,
            probs: inter(self.offsets[3])?,
            gpu_time: None,
            gpu_kernels: Vec::new(),
        })
    }
}

/// `present_k`, `present_v`, when a past cache is given.
pub(crate) type Present = (Option<Tensor>, Option<Tensor>);

/// `present_k`, `present_v` when a past cache is given (exact copies, built on the host).
pub(crate) fn present(p: &AttentionProblem, inputs: &AttentionInputs<'_>) -> Result<Present> {
    if !p.has_past {
        return Ok((None, None));
    }
    Ok((
        Some(kv_cache::concat(p, inputs.past_k, inputs.k, p.head_dim)?),
        Some(kv_cache::concat(p, inputs.past_v, inputs.v, p.v_dim)?),
    ))
}

/// Encoder and read-back of one call, ready to submit.
pub(crate) struct Recorded {
    pub encoder: wgpu::CommandEncoder,
    pub readback: wgpu::Buffer,
    pub layout: Readback,
}

/// How the caller waits for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Poll on this thread until done.
    Block,
    /// A helper thread polls; the future stays pending meanwhile.
    Thread,
}

/// Submits what `record` encodes inside error scopes, waits for the read-back and returns the
/// results. Buffers go back to the pool whatever happens.
pub(crate) async fn submit_and_read(
    ctx: &Context,
    p: &AttentionProblem,
    present: Present,
    wait: Wait,
    record: impl FnOnce(&mut Held<'_>, &Present) -> Result<Recorded>,
) -> Result<AttentionOutput> {
    // Dropped last: every buffer (read-back included) goes back to the pool on any exit.
    let mut held = Held::new(ctx);
    let (readback, layout, index, timestamps) = {
        let oom = ctx
            .device()
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
        crate::timing::start(ctx);
        let recorded = record(&mut held, &present);
        let timer = crate::timing::finish();
        let submitted = recorded.and_then(|mut rec| {
            let timestamps = timer
                .map(|t| crate::timing::resolve(ctx, &mut rec.encoder, t))
                .transpose()?;
            let index = ctx.queue().submit([rec.encoder.finish()]);
            Ok((rec.readback, rec.layout, index, timestamps))
        });
        // Popped in order here (a scope belongs to the thread that pushed it), awaited after:
        // natively they are ready at once, on the web the browser resolves them.
        let validation = validation.pop();
        let oom = oom.pop();
        let validation = validation.await;
        let oom = oom.await;
        let submitted = submitted?;
        held.submitted();
        if let Some(e) = validation {
            return Err(Error::Gpu(e.to_string()));
        }
        if let Some(e) = oom {
            held.ran_out_of_memory();
            return Err(Error::OutOfMemory {
                what: "submission".into(),
                requested: held.bytes(),
                engine_bytes: ctx.memory().live_bytes,
                message: e.to_string(),
            });
        }
        submitted
    };
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let timestamps_mapped = timestamps.as_ref().map(|t| t.map());
    let device = ctx.device().clone();
    let poll = move || {
        device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
    };
    let poll_result = match wait {
        Wait::Block => Some(poll()),
        // On the web the browser's event loop completes the mapping; natively a helper
        // thread drives the device so that this future never blocks its executor.
        #[cfg(not(target_arch = "wasm32"))]
        Wait::Thread => {
            std::thread::spawn(poll);
            None
        }
        #[cfg(target_arch = "wasm32")]
        Wait::Thread => {
            drop(poll);
            None
        }
    };
    let mapped = rx.receive().await;
    // A destroyed or lost device reports itself through the device-lost callback, which wgpu
    // runs from a poll: give it one before deciding what failed.
    let lost = |e: String| {
        let _ = ctx.device().poll(wgpu::PollType::Poll);
        ctx.check_alive().err().unwrap_or(Error::Gpu(e))
    };
    if let Some(Ok(())) = mapped {
        held.landed();
    }
    let mut result = match (mapped, poll_result) {
        (_, Some(Err(e))) => Err(lost(e.to_string())),
        (Some(Ok(())), _) => layout.read(p, present, &readback),
        (Some(Err(e)), _) => Err(lost(e.to_string())),
        (None, _) => Err(Error::Gpu("read-back was cancelled".into())),
    };
    readback.unmap();
    // Mapped by the same poll as the results (they come after them in the submission).
    if let (Some(t), Some(rx), Ok(out)) = (&timestamps, timestamps_mapped, result.as_mut()) {
        if let Some(Ok(())) = rx.receive().await {
            if let Some((span, kernels)) = t.read(ctx) {
                out.gpu_time = Some(span);
                out.gpu_kernels = kernels;
            }
        }
    }
    ctx.check_alive()?;
    result
}

/// The error an inner error scope (around one buffer or pipeline creation, inside a call that
/// records synchronously) caught. wgpu on native backends validates as each call is made, so
/// the scope's future is ready when popped and this polls it once, without blocking; a future
/// that is not ready (a backend that reports later) counts as no error here, and the call's
/// outer scopes, which `submit_and_read` awaits, still fail the call.
pub(crate) fn scope_error(scope: wgpu::ErrorScopeGuard) -> Option<wgpu::Error> {
    use std::future::Future;
    use std::task::{Context as TaskContext, Poll, Waker};
    let mut future = std::pin::pin!(scope.pop());
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(e) => e,
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    /// `(name, type)` of each member of `struct Params` in `shaders/common.wgsl`, in order.
    fn wgsl_params() -> Vec<(String, String)> {
        let source = include_str!("../shaders/common.wgsl");
        let body = source
            .split("struct Params {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_default();
        body.lines()
            .map(|line| line.split("//").next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, ty) = line
                    .trim_end_matches(',')
                    .split_once(':')
                    .unwrap_or((line, ""));
                (name.trim().to_string(), ty.trim().to_string())
            })
            .collect()
    }

    /// The uniform block the host writes is the one the shaders read: the same members in the
    /// same order with the same 4-byte types. The Rust side is read through `Debug` of a block
    /// whose word `n` holds `n`, so no field list is written twice.
    #[test]
    fn params_match_the_wgsl_uniform_block() {
        let wgsl = wgsl_params();
        assert!(
            wgsl.len() > 50,
            "parsed {} members of WGSL Params",
            wgsl.len()
        );
        assert_eq!(std::mem::size_of::<Params>(), 4 * wgsl.len());
        // A uniform block's size is a multiple of 16 bytes.
        assert_eq!(wgsl.len() % 4, 0, "WGSL Params has {} words", wgsl.len());

        let mut params: Params = bytemuck::Zeroable::zeroed();
        for (n, word) in bytemuck::cast_slice_mut::<Params, u32>(std::slice::from_mut(&mut params))
            .iter_mut()
            .enumerate()
        {
            *word = n as u32;
        }
        let debug = format!("{params:?}");
        let fields = debug
            .trim_start_matches("Params {")
            .trim_end_matches('}')
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| f.split_once(": ").unwrap_or((f, "")))
            .collect::<Vec<_>>();
        assert_eq!(fields.len(), wgsl.len(), "{debug}");
        for (n, ((name, value), (wgsl_name, wgsl_type))) in fields.iter().zip(&wgsl).enumerate() {
            assert_eq!(name, wgsl_name, "member {n}");
            let (word, ty) = match value.parse::<u32>() {
                Ok(word) => (word, "u32"),
                Err(_) => (value.parse::<f32>().map_or(u32::MAX, f32::to_bits), "f32"),
            };
            assert_eq!(word, n as u32, "`{name}` is not word {n} of the block");
            assert_eq!(ty, wgsl_type, "`{name}`");
        }
    }
}
