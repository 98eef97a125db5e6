//! # wgattn
//!
//! Masked attention on any GPU: WGSL compute kernels on wgpu in which attention masks are
//! first-class, with a CPU reference that follows the same contract (`SEMANTICS.md`: ONNX
//! `Attention` and PyTorch `scaled_dot_product_attention`).
//!
//! ```
//! use wgattn::{masked_attention, AttentionInputs, AttentionOptions, Context, Tensor};
//!
//! # fn main() -> wgattn::Result<()> {
//! let ctx = Context::new()?;
//! let (b, h, l, d) = (1, 2, 5, 8);
//! let q = Tensor::from_f32([b, h, l, d], vec![0.1; b * h * l * d])?;
//! let k = q.clone();
//! let v = q.clone();
//! let options = AttentionOptions { causal: true, ..Default::default() };
//! let result = masked_attention(&ctx, &AttentionInputs::new(&q, &k, &v), &options)?;
//! assert_eq!(result.out.shape(), &[1, 2, 5, 8]);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod attention;
mod blocks;
mod context;
mod embed;
mod error;
mod fused;
mod gpu;
mod host_copy;
pub mod kernels;
mod kv_cache;
mod loops;
pub mod masks;
pub mod mods;
mod output;
pub mod plan;
mod pool;
mod problem;
pub mod reference;
mod shader;
mod split;
mod staged;
mod tensor;
mod timing;

pub use attention::{allowed_positions, masked_attention, masked_attention_async, resolve_path};
pub use blocks::{block_mask, BlockCounts, BlockMask};
pub use context::{Context, MemoryStats, Tuning};
pub use embed::{record_attention, GpuInputs, GpuMask, GpuTensor, RecordedAttention};
pub use error::{Error, Result};
pub use mods::{Alibi, Aux, AuxData, BlockedTokens, MaskMods, Modalities, Segments, TokenFilter};
pub use output::{AttentionOutput, KernelTime};
pub use problem::{
    AttentionInputs, AttentionOptions, AttentionProblem, ExecutionPath, Layout, MaskKind,
    MaskLayout, Returns, RowBounds,
};
pub use tensor::{BoolMask, DType, Mask, Tensor, TensorData};
