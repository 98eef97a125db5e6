//! Device time of a call (see [`crate::Context::set_gpu_timing`]): while a call records on
//! this thread, every compute pass writes its begin and end timestamps into one query set;
//! after the submission the timestamps are resolved, read back with the results, and the
//! span from the first pass's begin to the last pass's end is the call's GPU time.

use std::cell::RefCell;
use std::time::Duration;

use crate::context::Context;
use crate::error::Result;

/// Passes one call may time; a call with more reports no GPU time rather than part of it.
const MAX_PASSES: u32 = 64;

/// The query set of the call recording on this thread, the slots used, and whether a pass
/// went untimed.
struct Active {
    set: wgpu::QuerySet,
    used: u32,
    overflow: bool,
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
                used: 0,
                overflow: false,
            });
        }
    });
}

/// The query set and the two slots the next pass writes, while timing.
pub(crate) fn next_pass() -> Option<(wgpu::QuerySet, u32)> {
    ACTIVE.with(|a| {
        let mut a = a.try_borrow_mut().ok()?;
        let a = a.as_mut()?;
        if a.used + 2 > 2 * MAX_PASSES {
            a.overflow = true;
            return None;
        }
        a.used += 2;
        Some((a.set.clone(), a.used - 2))
    })
}

/// Stops timing on this thread; the query set and the slots used, unless no pass was timed
/// or one went untimed.
pub(crate) fn finish() -> Option<(wgpu::QuerySet, u32)> {
    let a = ACTIVE.with(|a| a.try_borrow_mut().ok()?.take())?;
    (a.used > 0 && !a.overflow).then_some((a.set, a.used))
}

/// Where a call's timestamps are resolved and read back.
pub(crate) struct Pending {
    readback: wgpu::Buffer,
    count: u32,
}

/// Records the resolution of `count` timestamps of `set` into `encoder` and their copy to a
/// mappable buffer (both fresh: a few hundred bytes, never pooled, so a read-back left mapped
/// by a failed call cannot reach another).
pub(crate) fn resolve(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    (set, count): (wgpu::QuerySet, u32),
) -> Result<Pending> {
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
    Ok(Pending { readback, count })
}

impl Pending {
    /// Maps the read-back (call before waiting for the submission); the receiver reports the
    /// mapping.
    pub(crate) fn map(
        &self,
    ) -> futures_intrusive::channel::shared::OneshotReceiver<Result<(), wgpu::BufferAsyncError>>
    {
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        self.readback
            .map_async(wgpu::MapMode::Read, ..self.count as u64 * 8, move |r| {
                let _ = tx.send(r);
            });
        rx
    }

    /// The span from the first begin to the last end, once mapped; `None` when the
    /// timestamps do not make one (a driver that writes zeros, or out of order).
    pub(crate) fn span(&self, ctx: &Context) -> Option<Duration> {
        let ticks: Vec<u64> = {
            let view = self
                .readback
                .get_mapped_range(..self.count as u64 * 8)
                .ok()?;
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
        Some(Duration::from_nanos(
            ((last - first) as f64 * period) as u64,
        ))
    }
}
