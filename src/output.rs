//! What an attention call returns.

use crate::tensor::Tensor;

/// The result of one attention call.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput {
    /// `[B, Hq, Lq, Dv]` (or `bshd`), `q`'s dtype.
    pub out: Tensor,
    /// `concat(past_k, k)` as `[B, Hkv, Lt, D]`, when a past cache was given.
    pub present_k: Option<Tensor>,
    /// `concat(past_v, v)` as `[B, Hkv, Lt, Dv]`, when a past cache was given.
    pub present_v: Option<Tensor>,
    /// `[B, Hq, Lq, Lt]` scaled, softcapped scores, when asked for.
    pub scores: Option<Tensor>,
    /// `[B, Hq, Lq, Lt]` logits (`-inf` where disallowed), when asked for.
    pub logits: Option<Tensor>,
    /// `[B, Hq, Lq, Lt]` probabilities, when asked for.
    pub probs: Option<Tensor>,
    /// The device time of the call's kernels, from the first pass's begin timestamp to the
    /// last one's end (summed over the parts of a split request): only with
    /// [`crate::Context::set_gpu_timing`] on an adapter that offers timestamp queries, else
    /// `None`. Excludes the uploads and the read-back that the call's wall time includes.
    pub gpu_time: Option<std::time::Duration>,
    /// Each kernel's own device time, in the order the call ran them (every part's, for a
    /// split request): filled exactly when [`AttentionOutput::gpu_time`] is. The gaps between
    /// kernels count in `gpu_time` and in no entry here.
    pub gpu_kernels: Vec<KernelTime>,
}

/// The device time of one kernel of a call ([`AttentionOutput::gpu_kernels`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (`qk_scores`, `fused_decode`, ...), as in `wgattn shaders` and plans.
    pub kernel: String,
    /// The specialization that ran: its pipeline's label, naming dtype, mask, tile and the
    /// optional features it used (`wgattn fused_decode f32 nomask wg16x1 k512 d128 dv128 split
    /// vec4 subgroups`, say), as in `wgattn shaders`' manifest.
    pub variant: String,
    /// From its compute pass's begin timestamp to its end.
    pub time: std::time::Duration,
}
