//! Buffers reused across calls: a call takes what it needs and gives it back when done.

use crate::error::Result;
use crate::gpu::create_buffer;

/// Free buffers, by usage and size class.
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
    /// A buffer of at least `size` bytes with exactly `usage`, reused when one fits. An
    /// allocation the device refuses is [`Error::OutOfMemory`](crate::Error::OutOfMemory) and
    /// is not counted.
    pub(crate) fn take(
        &mut self,
        device: &wgpu::Device,
        size: u64,
        usage: wgpu::BufferUsages,
        max: u64,
    ) -> Result<wgpu::Buffer> {
        let size = size.max(16).next_multiple_of(16);
        // Size classes (eight per octave from 256 B, so at most 1/8 is wasted) make buffers of
        // one class interchangeable: a repeated call finds exactly the buffers the previous one
        // gave back.
        let rounded = size_class(size);
        let alloc = if rounded <= max { rounded } else { size };
        if let Some(i) = self
            .free
            .iter()
            .position(|b| b.usage() == usage && b.size() == alloc)
        {
            let b = self.free.swap_remove(i);
            self.free_bytes -= b.size();
            return Ok(b);
        }
        let label = format!("wgattn pool {alloc}B {usage:?}");
        let desc = wgpu::BufferDescriptor {
            label: Some(&label),
            size: alloc,
            usage,
            mapped_at_creation: false,
        };
        let b = create_buffer(device, &desc, self.live_bytes)?;
        self.live_bytes += alloc;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
        Ok(b)
    }

    /// Lets go of a buffer that is not to be reused (a submission may still use it): it is
    /// no longer counted, and wgpu frees it when the GPU is done.
    pub(crate) fn let_go(&mut self, buffer: wgpu::Buffer) {
        self.live_bytes -= buffer.size();
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
        self.release_free();
        self.peak_bytes = self.live_bytes;
    }

    /// Drops every free buffer (after the device ran out of memory), keeping the high-water
    /// mark.
    pub(crate) fn release_free(&mut self) {
        for b in self.free.drain(..) {
            self.live_bytes -= b.size();
        }
        self.free_bytes = 0;
    }
}

/// The smallest size `>= size` of the form `m * 2^k` with `8 <= m < 16` (at least 256).
fn size_class(size: u64) -> u64 {
    if size <= 256 {
        return 256;
    }
    let step = 1u64 << (63 - size.leading_zeros()).saturating_sub(3);
    size.next_multiple_of(step)
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_waste_at_most_an_eighth() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1152);
        assert_eq!(size_class(16 << 20), 16 << 20);
        for size in (257..100_000).step_by(97) {
            let c = size_class(size);
            assert!(c >= size && (c - size) * 8 <= size, "{size} -> {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
