//! Copies into mapped buffers, split over host threads when they are large.
//!
//! One core's memcpy does not saturate memory bandwidth: on the 2-core test VM, 134 MB (the
//! keys of a `Lt=8192, H=32, D=128` f32 decode step) took ~19 ms on one thread and ~10.5 ms
//! on two. Where the device shares host memory, that copy is most of an upload.

/// Copies smaller than this stay on the calling thread (a thread start costs tens of µs).
#[cfg(not(target_arch = "wasm32"))]
const PIECE_MIN: usize = 8 << 20;

/// At most this many threads copy at once (memory saturates long before a large host's cores
/// run out).
#[cfg(not(target_arch = "wasm32"))]
const THREADS_MAX: usize = 8;

/// Copies `src` into the start of `buffer`, which is mapped for writing as a whole (and, like
/// every engine buffer, padded to a multiple of 4 bytes at least as long as `src`). Each
/// thread writes its own piece through its own view of the mapping.
pub(crate) fn copy_to_mapped(buffer: &wgpu::Buffer, src: &[u8]) -> Result<(), String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = threads_for(src.len());
        if threads > 1 {
            return copy_threaded(buffer, src, threads);
        }
    }
    copy_piece(buffer, 0, src)
}

/// [`copy_to_mapped`] on `threads` threads, this one among them.
#[cfg(not(target_arch = "wasm32"))]
fn copy_threaded(buffer: &wgpu::Buffer, src: &[u8], threads: usize) -> Result<(), String> {
    // Pieces start on page boundaries (views must start on MAP_ALIGNMENT).
    let piece = src.len().div_ceil(threads).next_multiple_of(4096);
    let pieces: Vec<(u64, &[u8])> = src
        .chunks(piece)
        .enumerate()
        .map(|(i, s)| ((i * piece) as u64, s))
        .collect();
    std::thread::scope(|scope| {
        let started: Vec<_> = pieces
            .iter()
            .skip(1)
            .map(|&(offset, s)| {
                let thread = std::thread::Builder::new()
                    .spawn_scoped(scope, move || copy_piece(buffer, offset, s));
                (offset, s, thread)
            })
            .collect();
        let mut result = match pieces.first() {
            Some(&(offset, s)) => copy_piece(buffer, offset, s),
            None => Ok(()),
        };
        for (offset, s, thread) in started {
            let r = match thread {
                Ok(t) => t
                    .join()
                    .unwrap_or_else(|_| Err("a copy thread panicked".into())),
                // A thread that could not start leaves its piece to this one.
                Err(_) => copy_piece(buffer, offset, s),
            };
            result = result.and(r);
        }
        result
    })
}

/// Copies `src` to `offset` of the mapped `buffer` through a view of its own. The view runs to
/// the next multiple of 4 (views are whole words; the padding is the buffer's).
fn copy_piece(buffer: &wgpu::Buffer, offset: u64, src: &[u8]) -> Result<(), String> {
    // Nothing to write (an empty tensor): a view must hold at least one word.
    if src.is_empty() {
        return Ok(());
    }
    let end = (offset + src.len() as u64)
        .next_multiple_of(4)
        .min(buffer.size());
    let mut view = buffer
        .get_mapped_range_mut(offset..end)
        .map_err(|e| e.to_string())?;
    view.slice(..src.len()).copy_from_slice(src);
    Ok(())
}

/// How many threads copy `len` bytes: one per [`PIECE_MIN`], at most the host's cores.
#[cfg(not(target_arch = "wasm32"))]
fn threads_for(len: usize) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    (len / PIECE_MIN).clamp(1, cores.min(THREADS_MAX))
}
