//! Device time of a call (see [`crate::Context::set_gpu_timing`]): while a call records on
//! this thread, every compute pass writes its begin and end timestamps into one query set;
//! after the submission the timestamps are resolved, read back with the results, and the
//! span from the first pass's begin to the last pass's end is the call's GPU time; each pass's
//! own begin-to-end is its kernel's.

use std::cell::RefCell;
use std::time::Duration;

use crate::context::Context;
use crate::error::Result;
use crate::kernels::Variant;
use crate::output::KernelTime;

/// Passes one call may time; a call with more reports no GPU time rather than part of it.
/// (A long prefill on llvmpipe takes its key splits in dozens of passes: 69 at 65,536 keys.)
const MAX_PASSES: u32 = 256;

/// The kernel and variant label of a timed pass.
type Pass = (&'static str, String);

/// The query set of the call recording on this thread, each pass timed so far (two slots
/// each), and whether a pass went untimed.
struct Active {
    set: wgpu::QuerySet,
    kernels: Vec<Pass>,
    overflow: bool,
}

/// What a call timed: its query set and each pass, in order.
pub(crate) struct Timer {
    set: wgpu::QuerySet,
    kernels: Vec<Pass>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// Starts timing the passes this thread records, where the context asks for it.
pub(crate) fn start(ctx: &Context) {
    if !ctx.gpu_timing() {
        return;
    }
    let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("wgattn pass timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count: 2 * MAX_PASSES,
    });
    ACTIVE.with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            *a = Some(Active {
                set,
                kernels: Vec::new(),
                overflow: false,
            });
        }
    });
}

/// The query set and the two slots the next pass (running `variant`) writes, while timing.
pub(crate) fn next_pass(variant: &Variant) -> Option<(wgpu::QuerySet, u32)> {
    ACTIVE.with(|a| {
        let mut a = a.try_borrow_mut().ok()?;
        let a = a.as_mut()?;
        let at = 2 * a.kernels.len() as u32;
        if at + 2 > 2 * MAX_PASSES {
            a.overflow = true;
            return None;
        }
        a.kernels.push((variant.kernel.name(), variant.label()));
        Some((a.set.clone(), at))
    })
}

/// Stops timing on this thread; what was timed, unless no pass was or one went untimed.
pub(crate) fn finish() -> Option<Timer> {
    let a = ACTIVE.with(|a| a.try_borrow_mut().ok()?.take())?;
    (!a.kernels.is_empty() && !a.overflow).then_some(Timer {
        set: a.set,
        kernels: a.kernels,
    })
}

/// Where a call's timestamps are resolved and read back.
pub(crate) struct Pending {
    readback: wgpu::Buffer,
    kernels: Vec<Pass>,
}

/// Records the resolution of the timer's timestamps into `encoder` and their copy to a
/// mappable buffer (both fresh: a few hundred bytes, never pooled, so a read-back left mapped
/// by a failed call cannot reach another).
pub(crate) fn resolve(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    Timer { set, kernels }: Timer,
) -> Result<Pending> {
    let count = 2 * kernels.len() as u32;
    let bytes = count as u64 * 8;
    let buffer = |label, usage| {
        let desc = wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage,
            mapped_at_creation: false,
        };
        crate::gpu::create_buffer(ctx.device(), &desc, ctx.memory().live_bytes)
    };
    let resolved = buffer(
        "wgattn timestamps",
        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
    )?;
    let readback = buffer(
        "wgattn timestamps read-back",
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    )?;
    encoder.resolve_query_set(&set, 0..count, &resolved, 0);
    encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, bytes);
    Ok(Pending { readback, kernels })
}

impl Pending {
    /// Bytes of the read-back: two timestamps per pass.
    fn bytes(&self) -> u64 {
        16 * self.kernels.len() as u64
    }

    /// Maps the read-back (call before waiting for the submission); the receiver reports the
    /// mapping.
    pub(crate) fn map(
        &self,
    ) -> futures_intrusive::channel::shared::OneshotReceiver<Result<(), wgpu::BufferAsyncError>>
    {
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        self.readback
            .map_async(wgpu::MapMode::Read, ..self.bytes(), move |r| {
                let _ = tx.send(r);
            });
        rx
    }

    /// The read-back buffer.
    pub(crate) fn readback(&self) -> &wgpu::Buffer {
        &self.readback
    }

    /// The span from the first begin to the last end and each pass's own time, once mapped;
    /// `None` when the timestamps do not make one (a driver that writes zeros, or out of
    /// order).
    pub(crate) fn read(&self, ctx: &Context) -> Option<(Duration, Vec<KernelTime>)> {
        let ticks: Vec<u64> = {
            let view = self.readback.get_mapped_range(..self.bytes()).ok()?;
            view.chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        };
        self.readback.unmap();
        let first = *ticks.first()?;
        let last = *ticks.last()?;
        let ordered = ticks.chunks_exact(2).all(|p| p[0] != 0 && p[0] <= p[1]);
        if !ordered || last < first {
            return None;
        }
        let period = ctx.queue().get_timestamp_period() as f64;
        let time = |ticks: u64| Duration::from_nanos((ticks as f64 * period) as u64);
        let kernels = ticks
            .chunks_exact(2)
            .zip(&self.kernels)
            .map(|(p, (kernel, variant))| KernelTime {
                kernel: kernel.to_string(),
                variant: variant.clone(),
                time: time(p[1] - p[0]),
            })
            .collect();
        Some((time(last - first), kernels))
    }
}
