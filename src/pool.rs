//! Buffers reused across calls: a call takes what it needs and gives it back when done.

/// Free buffers by usage, each at least as large as asked and at most twice that.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Vec<wgpu::Buffer>,
    free_bytes: u64,
    /// Bytes of every buffer the pool created and still owns or lent out.
    live_bytes: u64,
    /// High-water mark of `live_bytes` since the last reset.
    peak_bytes: u64,
}

/// Free bytes kept for reuse; beyond it the oldest free buffers are dropped.
const KEEP_BYTES: u64 = 512 << 20;

impl BufferPool {
    /// A buffer of at least `size` bytes with exactly `usage`, reused when one fits.
    pub(crate) fn take(
        &mut self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        max: u64,
    ) -> wgpu::Buffer {
        let size = size.max(16).next_multiple_of(16);
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.usage() == usage && b.size() >= size && b.size() <= 2 * size)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let b = self.free.swap_remove(i);
            self.free_bytes -= b.size();
            return b;
        }
        // Round up so that nearby sizes share buffers, without passing the device's limit.
        let rounded = size.next_power_of_two().max(256);
        let alloc = if rounded <= max { rounded } else { size };
        self.live_bytes += alloc;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("wgattn pool {alloc}B {usage:?}")),
            size: alloc,
            usage,
            mapped_at_creation: false,
        })
    }

    /// Returns a buffer for later calls.
    pub(crate) fn give(&mut self, buffer: wgpu::Buffer) {
        self.free_bytes += buffer.size();
        self.free.push(buffer);
        while self.free_bytes > KEEP_BYTES && !self.free.is_empty() {
            let b = self.free.remove(0);
            self.free_bytes -= b.size();
            self.live_bytes -= b.size();
        }
    }
}

impl BufferPool {
    /// `(live, peak)` bytes of GPU buffers the engine allocated.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.live_bytes, self.peak_bytes)
    }

    /// Drops every free buffer and restarts the high-water mark from what is live.
    pub(crate) fn trim(&mut self) {
        for b in self.free.drain(..) {
            self.live_bytes -= b.size();
        }
        self.free_bytes = 0;
        self.peak_bytes = self.live_bytes;
    }
}
