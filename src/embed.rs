//! Attention recorded into a caller's command encoder, on tensors in the caller's buffers:
//! for apps that already have a device (a renderer) and keep their tensors on it. Nothing is
//! copied to or from the host and nothing is submitted; the caller submits the encoder when
//! it likes (between a render pass and the next frame, say).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::fused;
use crate::gpu::{Held, Slice, Wait};
use crate::problem::{
    AttentionOptions, AttentionProblem, ExecutionPath, InputDesc, MaskKind, TensorDesc,
};
use crate::staged;
use crate::tensor::DType;

/// A tensor held in a caller's GPU buffer: `shape` elements of `dtype`, packed little-endian
/// in row-major order (as [`crate::Tensor`] holds them), starting `offset` bytes into
/// `buffer`. The buffer needs `STORAGE` usage; `offset` must be a multiple of the device's
/// `min_storage_buffer_offset_alignment` (256 on most devices).
#[derive(Clone, Copy, Debug)]
pub struct GpuTensor<'a> {
    /// The buffer holding the elements.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of element 0.
    pub offset: u64,
    /// The shape (4-D for q, k, v and out, in the options' layout).
    pub shape: &'a [usize],
    /// The element type.
    pub dtype: DType,
}

impl<'a> GpuTensor<'a> {
    /// A tensor at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, shape: &'a [usize], dtype: DType) -> Self {
        GpuTensor {
            buffer,
            offset: 0,
            shape,
            dtype,
        }
    }

    fn desc(&self) -> TensorDesc {
        TensorDesc {
            shape: self.shape.to_vec(),
            dtype: self.dtype,
        }
    }

    /// Elements of `shape`; `None` where the count overflows.
    fn elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |a, &n| a.checked_mul(n as u64))
    }
}

/// A mask tensor in a caller's buffer, broadcast to `[B, Hq, Lq, Lt]` as
/// [`crate::Mask`] is.
#[derive(Clone, Copy, Debug)]
pub enum GpuMask<'a> {
    /// One byte per element, nonzero = may attend (`dtype` is ignored).
    Bool(GpuTensor<'a>),
    /// Added to the logits (f32, f16 or bf16; may hold `-inf`).
    Additive(GpuTensor<'a>),
}

impl GpuMask<'_> {
    fn tensor(&self) -> &GpuTensor<'_> {
        match self {
            GpuMask::Bool(t) | GpuMask::Additive(t) => t,
        }
    }
}

/// The inputs of [`record_attention`]. There is no past cache: keep keys and values in
/// preallocated `[B, Hkv, Lmax, D]` buffers, append to them with your own copies, and pass
/// the valid lengths in `kv_lengths` (with `causal_offset` for causal decoding).
#[derive(Clone, Copy, Debug)]
pub struct GpuInputs<'a> {
    /// Queries `[B, Hq, Lq, D]` (or `bshd`).
    pub q: GpuTensor<'a>,
    /// Keys `[B, Hkv, Lt, D]` (or `bshd`).
    pub k: GpuTensor<'a>,
    /// Values `[B, Hkv, Lt, Dv]` (or `bshd`).
    pub v: GpuTensor<'a>,
    /// Per-batch number of valid keys (host values; they go into a small uniform upload).
    pub kv_lengths: Option<&'a [i64]>,
    /// A mask tensor.
    pub mask: Option<GpuMask<'a>>,
    /// Structured and user-defined masks (host data, uploaded with the call's other
    /// small buffers).
    pub mods: Option<&'a crate::MaskMods>,
}

impl<'a> GpuInputs<'a> {
    /// Inputs with `q`, `k`, `v` only.
    pub fn new(q: GpuTensor<'a>, k: GpuTensor<'a>, v: GpuTensor<'a>) -> Self {
        GpuInputs {
            q,
            k,
            v,
            kv_lengths: None,
            mask: None,
            mods: None,
        }
    }
}

/// Attention recorded by [`record_attention`]. It holds the small buffers the recorded
/// passes use (uniforms, bounds, partial results); they are fresh for each recording and
/// wgpu keeps them alive for the GPU, so this may be dropped at any time, before or after the
/// encoder is submitted.
pub struct RecordedAttention<'c> {
    ctx: &'c Context,
    held: Held<'c>,
    problem: AttentionProblem,
    path: ExecutionPath,
    /// Where the passes' timestamps are read back, when the context times calls.
    timestamps: Option<crate::timing::Pending>,
}

impl std::fmt::Debug for RecordedAttention<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedAttention")
            .field("out_shape", &self.problem.out_shape())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RecordedAttention<'_> {
    /// The validated problem that was recorded.
    pub fn problem(&self) -> &AttentionProblem {
        &self.problem
    }

    /// Bytes of the engine's buffers this recording holds (uniforms, mask tables, the fused
    /// path's partials, the staged path's scores), beside the caller's. They are not counted
    /// in [`Context::memory`], which covers the engine's pool.
    pub fn gpu_bytes(&self) -> u64 {
        self.held.bytes()
    }

    /// The device time of the recorded passes, where the context times calls
    /// ([`Context::set_gpu_timing`] on an adapter with timestamp queries; else `None`): the
    /// span from the first pass's begin to the last one's end, and each kernel's own time, as
    /// [`crate::AttentionOutput::gpu_time`] and `gpu_kernels` report them. Call it after
    /// submitting the encoder: it waits for the device (and reads a few hundred bytes back).
    /// `None` too where the timestamps do not make a span (not submitted yet, or a driver that
    /// writes none).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gpu_time(&self) -> Option<(std::time::Duration, Vec<crate::KernelTime>)> {
        pollster::block_on(self.read_time(Wait::Block))
    }

    /// [`Self::gpu_time`] without blocking the calling thread, and on the web (where the
    /// browser's event loop completes the read-back): natively a helper thread waits for the
    /// device while the future is pending. Await it after submitting the encoder.
    pub async fn gpu_time_async(&self) -> Option<(std::time::Duration, Vec<crate::KernelTime>)> {
        self.read_time(Wait::Thread).await
    }

    /// Maps the timestamps, waits for the device as `wait` says (as
    /// [`crate::gpu::submit_and_read`] does) and reads them.
    async fn read_time(&self, wait: Wait) -> Option<(std::time::Duration, Vec<crate::KernelTime>)> {
        let pending = self.timestamps.as_ref()?;
        let mapped = pending.map();
        let device = self.ctx.device().clone();
        let poll = move || device.poll(wgpu::PollType::wait_indefinitely());
        match wait {
            Wait::Block => {
                poll().ok()?;
            }
            #[cfg(not(target_arch = "wasm32"))]
            Wait::Thread => {
                std::thread::spawn(poll);
            }
            #[cfg(target_arch = "wasm32")]
            Wait::Thread => drop(poll),
        }
        // Dropped before the mapping completes (a future given up on), the mapping is
        // cancelled so that a later call can map again; `read` unmaps itself.
        let cancel = Unmap(pending.readback());
        let time = match mapped.receive().await {
            Some(Ok(())) => pending.read(self.ctx),
            _ => None,
        };
        std::mem::forget(cancel);
        time
    }

    /// The path that was recorded: `Fused`, or `Staged` (asked for, or the fused kernels do
    /// not take the problem); never `Auto`.
    pub fn path(&self) -> ExecutionPath {
        self.path
    }
}

/// Unmaps the buffer when dropped: cancels a pending mapping, or ends one nobody read.
struct Unmap<'a>(&'a wgpu::Buffer);

impl Drop for Unmap<'_> {
    fn drop(&mut self) {
        self.0.unmap();
    }
}

impl Drop for RecordedAttention<'_> {
    fn drop(&mut self) {
        self.held.give_back();
    }
}

/// Records masked attention into `encoder`: reads `inputs` from the caller's buffers and
/// writes the result into `out` (`[B, Hq, Lq, Dv]` or `bshd`, the inputs' dtype), on the
/// path [`AttentionOptions::path`] chooses as [`crate::masked_attention`] does (the fused
/// kernels unless the staged path is asked for). Nothing is submitted and nothing is read
/// back.
///
/// `encoder` and every buffer must belong to `ctx`'s device: make the context from the app's
/// own device with [`Context::from_device`]. wgpu cannot tell a buffer of another device or
/// instance apart (it resolves buffers by ids that repeat across instances) and would use
/// whichever buffer of this device has the same id.
///
/// Everything is validated first, as in [`crate::masked_attention`], plus the buffers:
/// `STORAGE` usage, aligned offsets, room for each tensor (and for `out` rounded up to 4
/// bytes: with an odd number of f16/bf16 elements the two bytes after it are written), and
/// `out` in a buffer no input uses. Intermediates (`returns`) are not offered here, nor are
/// requests over the binding limits (they are split only by [`crate::masked_attention`]):
/// those are errors. The staged path takes an `Lq x Lt` scratch buffer for the scores,
/// as it does there.
///
/// ```
/// use wgattn::{record_attention, AttentionOptions, Context, DType, GpuInputs, GpuTensor};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ctx = Context::new()?; // or Context::from_device with the app's own device
/// let (device, queue) = (ctx.device(), ctx.queue());
/// let shape = [1usize, 2, 5, 8]; // [B, H, L, D]
/// let buffer = |data: &[f32]| {
///     let b = device.create_buffer(&wgpu::BufferDescriptor {
///         label: None,
///         size: (data.len() * 4) as u64,
///         usage: wgpu::BufferUsages::STORAGE
///             | wgpu::BufferUsages::COPY_DST
///             | wgpu::BufferUsages::COPY_SRC,
///         mapped_at_creation: false,
///     });
///     queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
///     b
/// };
/// let x: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin()).collect();
/// let (q, k, v, out) = (buffer(&x), buffer(&x), buffer(&x), buffer(&[0.0; 80]));
/// let t = |b| GpuTensor::new(b, &shape, DType::F32);
/// let mut encoder = device.create_command_encoder(&Default::default());
/// let options = AttentionOptions { causal: true, ..Default::default() };
/// record_attention(&ctx, &mut encoder, &GpuInputs::new(t(&q), t(&k), t(&v)), &options, &t(&out))?;
/// // ... the app's own passes, reading `out` ...
/// queue.submit([encoder.finish()]);
/// # Ok(())
/// # }
/// ```
pub fn record_attention<'c>(
    ctx: &'c Context,
    encoder: &mut wgpu::CommandEncoder,
    inputs: &GpuInputs<'_>,
    options: &AttentionOptions,
    out: &GpuTensor<'_>,
) -> Result<RecordedAttention<'c>> {
    let _serial = pollster::block_on(ctx.serial());
    ctx.check_alive()?;
    if options.returns.any() {
        return Err(Error::InvalidCombination(
            "record_attention writes `out` only: use masked_attention for intermediates",
        ));
    }
    // Each tensor within its buffer first: that bounds every size derived from the shapes.
    let q = slice(ctx, "q", &inputs.q, inputs.q.dtype.size())?;
    let k = slice(ctx, "k", &inputs.k, inputs.k.dtype.size())?;
    let v = slice(ctx, "v", &inputs.v, inputs.v.dtype.size())?;
    let mask = match &inputs.mask {
        None => None,
        Some(GpuMask::Bool(t)) => Some(slice(ctx, "mask", t, 1)?),
        Some(GpuMask::Additive(t)) => Some(slice(ctx, "mask", t, t.dtype.size())?),
    };
    let out_slice = slice(ctx, "out", out, out.dtype.size())?;
    let p = AttentionProblem::from_desc(
        &InputDesc {
            q: inputs.q.desc(),
            k: inputs.k.desc(),
            v: inputs.v.desc(),
            past_k: None,
            past_v: None,
            kv_lengths: inputs.kv_lengths,
            mask: inputs.mask.map(|m| match m {
                GpuMask::Bool(t) => (MaskKind::Bool, t.shape.to_vec()),
                GpuMask::Additive(t) => (MaskKind::Additive(t.dtype), t.shape.to_vec()),
            }),
            mods: inputs.mods,
        },
        options,
    )?;
    if out.dtype != p.dtype {
        return Err(Error::DTypeMismatch {
            what: "out",
            expected: p.dtype,
            got: out.dtype,
        });
    }
    if out.shape != p.out_shape() {
        return Err(Error::ShapeMismatch {
            what: "out".into(),
            expected: format!("{:?}", p.out_shape()),
            got: format!("{:?}", out.shape),
        });
    }
    let path = crate::resolve_path(ctx, &p, options.path)?;
    // Everything the path checks before it records (limits, grids, pipelines).
    let chosen = match path {
        ExecutionPath::Fused => {
            let cfg = fused::Config::new(ctx, &p)?;
            let bindings = fused::check_limits(ctx, &p, &cfg)?;
            Chosen::Fused(cfg, bindings)
        }
        _ => Chosen::Staged(Box::new(staged::Stages::new(ctx, &p)?)),
    };

    let reads = [Some(&inputs.q), Some(&inputs.k), Some(&inputs.v)]
        .into_iter()
        .chain([inputs.mask.as_ref().map(|m| m.tensor())]);
    for t in reads.flatten() {
        if t.buffer == out.buffer {
            return Err(Error::InvalidCombination(
                "out must be in a buffer that no input is read from (wgpu forbids binding one \
                 buffer as both read-only and writable storage in a dispatch)",
            ));
        }
    }

    let mut held = Held::unpooled(ctx);
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    crate::timing::start(ctx);
    let recorded = match &chosen {
        Chosen::Fused(cfg, bindings) => fused::encode(
            ctx,
            &p,
            cfg,
            bindings,
            &fused::Io {
                q,
                k,
                v,
                mask,
                out: out_slice,
                mods: inputs.mods,
                block_mask: None,
            },
            &mut held,
            encoder,
        ),
        Chosen::Staged(stages) => stages.encode(
            ctx,
            &p,
            &staged::Io {
                q,
                k,
                v,
                past_k: None,
                past_v: None,
                mask,
                out: out_slice,
                mods: inputs.mods,
            },
            &mut held,
            encoder,
            None,
        ),
    };
    let timer = crate::timing::finish();
    let timestamps = recorded.and_then(|()| {
        timer
            .map(|t| crate::timing::resolve(ctx, encoder, t))
            .transpose()
    });
    if let Some(err) = crate::gpu::scope_error(scope) {
        return Err(Error::Gpu(format!("recording attention: {err}")));
    }
    Ok(RecordedAttention {
        ctx,
        held,
        problem: p,
        path,
        timestamps: timestamps?,
    })
}

/// A path, validated and ready to record.
enum Chosen {
    Fused(fused::Config, fused::Bindings),
    // Boxed: the four pipelines and grids make it the larger variant by far.
    Staged(Box<staged::Stages>),
}

/// The binding of `t`: its bytes rounded up to 4, checked against the buffer.
fn slice<'b>(
    ctx: &Context,
    what: &'static str,
    t: &GpuTensor<'b>,
    element: usize,
) -> Result<Slice<'b>> {
    let element = element as u64;
    let bad = |reason: String| Error::InvalidBuffer { what, reason };
    if !t.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(bad("the buffer lacks STORAGE usage".into()));
    }
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    if !t.offset.is_multiple_of(align) {
        return Err(bad(format!(
            "offset {} is not a multiple of min_storage_buffer_offset_alignment ({align})",
            t.offset
        )));
    }
    let size = t
        .elements()
        .and_then(|n| n.checked_mul(element))
        .map(|n| n.max(4).next_multiple_of(4));
    let end = size.and_then(|size| t.offset.checked_add(size));
    let (Some(size), Some(end)) = (size, end) else {
        return Err(bad(format!(
            "the bytes of shape {:?} ({element} per element) overflow u64",
            t.shape
        )));
    };
    if end > t.buffer.size() {
        return Err(bad(format!(
            "{size} bytes at offset {} do not fit in a buffer of {} bytes",
            t.offset,
            t.buffer.size()
        )));
    }
    Ok(Slice {
        buffer: t.buffer,
        offset: t.offset,
        size,
    })
}
