//! The one error type of the library.

use crate::tensor::DType;

/// Everything that can go wrong in a request, named with the sizes involved.
///
/// Each variant is checked before anything is dispatched to the GPU, except
/// [`Error::Gpu`], [`Error::OutOfMemory`] and [`Error::DeviceLost`], which report what the
/// device itself said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor's shape does not agree with the others.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which tensor or axis.
        what: String,
        /// The shape (or size) the other inputs imply.
        expected: String,
        /// The shape (or size) given.
        got: String,
    },
    /// A tensor has the wrong rank.
    #[error("{what} must have rank {expected}, got rank {got} (shape {shape:?})")]
    RankMismatch {
        /// Which tensor.
        what: &'static str,
        /// The rank (or range of ranks) expected.
        expected: &'static str,
        /// The rank given.
        got: usize,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A tensor's element type is not the one required.
    #[error("dtype mismatch for {what}: expected {expected}, got {got}")]
    DTypeMismatch {
        /// Which tensor.
        what: &'static str,
        /// The dtype required.
        expected: DType,
        /// The dtype given.
        got: DType,
    },
    /// `Hq` is not a multiple of `Hkv`.
    #[error("query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")]
    HeadsNotDivisible {
        /// `Hq`.
        q_heads: usize,
        /// `Hkv`.
        kv_heads: usize,
    },
    /// An axis that must be non-empty is empty.
    #[error("axis {axis} of {what} is zero-sized; it must be at least 1")]
    ZeroSizedAxis {
        /// Which tensor.
        what: &'static str,
        /// Which axis.
        axis: &'static str,
    },
    /// A mask tensor does not broadcast to `[B, Hq, Lq, Lt]`.
    #[error("{what} of shape {mask_shape:?} does not broadcast to [B, Hq, Lq, Lt] = {target:?}: {reason}")]
    MaskNotBroadcastable {
        /// Which mask.
        what: &'static str,
        /// The mask's shape.
        mask_shape: Vec<usize>,
        /// `[B, Hq, Lq, Lt]`.
        target: [usize; 4],
        /// Which axis fails and why.
        reason: String,
    },
    /// A key length outside `0..=Lt`.
    #[error("kv_lengths[{batch}] = {value} is outside 0..={total_len}")]
    KvLengthOutOfRange {
        /// The batch entry.
        batch: usize,
        /// The length given.
        value: i64,
        /// `Lt`, the number of keys.
        total_len: usize,
    },
    /// An option has a value outside its allowed set.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// Two inputs that cannot be given together, or one that needs another.
    #[error("invalid combination: {0}")]
    InvalidCombination(&'static str),
    /// A tensor's data length does not match its shape.
    #[error("{what}: shape {shape:?} holds {expected} elements but {got} were given")]
    DataLength {
        /// Which tensor.
        what: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The number of elements given.
        got: usize,
    },
    /// A caller's GPU buffer cannot hold or bind a tensor as asked.
    #[error("{what}: {reason}")]
    InvalidBuffer {
        /// Which tensor.
        what: &'static str,
        /// What is wrong with its buffer, offset or size.
        reason: String,
    },
    /// The request needs more than the device allows.
    #[error("{what} exceeds limit {limit}: needs {requested}, the device allows {max}")]
    ExceedsLimit {
        /// What needed it (a buffer, a dispatch).
        what: String,
        /// The limit's name: a wgpu limit, or the driver's loop trips per invocation.
        limit: &'static str,
        /// The size asked for.
        requested: u64,
        /// The device's limit.
        max: u64,
    },
    /// A user `mask_mod` or `score_mod` does not compile.
    #[error("{snippet} does not compile{}: {message}", line.map(|l| format!(" (line {l} of the snippet)")).unwrap_or_default())]
    InvalidSnippet {
        /// `mask_mod` or `score_mod`.
        snippet: &'static str,
        /// The line inside the snippet (1-based), where naga names one.
        line: Option<usize>,
        /// naga's message.
        message: String,
    },
    /// A [`crate::BlockMask`] was built for another problem or mask.
    #[error("the block mask does not fit this call: {0}")]
    BlockMaskMismatch(String),
    /// No adapter could be found.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(String),
    /// wgpu reported an error (validation, mapping).
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device could not allocate memory a call needed (wgpu's `OutOfMemory`). The call
    /// has released every buffer it held and the engine has freed the buffers it kept for
    /// reuse; the context stays usable, so a later call (smaller, or after the app frees
    /// memory) can succeed.
    #[error(
        "out of GPU memory: {what} of {requested} bytes (the engine held {engine_bytes} bytes \
         on this context): {message}"
    )]
    OutOfMemory {
        /// What could not be allocated: a `read-back`, `storage`, `upload` or `uniform`
        /// buffer, a `pipeline` (named), or `submission` when the device ran out while
        /// accepting the work.
        what: String,
        /// Bytes of that buffer; for a `submission`, the bytes of every buffer the call held;
        /// 0 for a pipeline.
        requested: u64,
        /// Bytes of GPU buffers the engine had allocated on this context when it failed (in
        /// use by calls and kept for reuse, as [`Context::memory`](crate::Context::memory)).
        engine_bytes: u64,
        /// What the device said.
        message: String,
    },
    /// The host could not allocate what a call needed: the CPU reference's `[B, Hq, Lq, Lt]`
    /// stages, or a split request's intermediates stitched together. Nothing was computed.
    #[error("out of host memory: {what} needs {requested} bytes")]
    HostOutOfMemory {
        /// What could not be allocated.
        what: String,
        /// Its bytes (`u64::MAX` where the count itself overflows).
        requested: u64,
    },
    /// The device was lost; the context cannot be used any more.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
