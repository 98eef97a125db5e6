//! The JSON fields of one measurement, shared by the one-shape `--json` line and the cases of
//! a suite's report: the request as asked, then the figures (absent when nothing ran).

use serde::{Deserialize, Serialize};

use super::measure::{ms, Measured, Request};

/// The request, echoed with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFields {
    pub path: String,
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub v_dim: usize,
    pub dtype: String,
    pub causal: bool,
    pub window_left: i64,
    pub window_right: i64,
    /// The softcap `c` (absent without one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub softcap: f32,
    /// Valid keys per batch entry, for a key-padding mask (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_lengths: Option<Vec<i64>>,
    /// The masks in words (one-shape) or the mask's name in the grid (suites).
    pub mask: String,
    /// Timed calls.
    pub iters: usize,
    /// Untimed calls before them.
    pub warmup: usize,
    /// Inputs kept on the device (`--resident`); absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resident: bool,
}

impl RequestFields {
    pub fn new(request: &Request, mask: String, iters: usize, warmup: usize) -> RequestFields {
        let s = &request.shape;
        RequestFields {
            path: request.path.name().into(),
            batch: s.batch,
            q_heads: s.q_heads,
            kv_heads: s.kv_heads,
            q_len: s.q_len,
            kv_len: s.kv_len,
            head_dim: s.head_dim,
            v_dim: s.v_dim,
            dtype: request.dtype.name().into(),
            causal: request.causal,
            window_left: request.window_left,
            window_right: request.window_right,
            softcap: request.softcap,
            kv_lengths: request.kv_lengths.clone(),
            mask,
            iters,
            warmup,
            resident: request.resident,
        }
    }
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// What a run measured, in milliseconds and GFLOP/s (dense FLOPs over the median).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub dense_flops: f64,
    pub gflops: f64,
    /// The engine's peak GPU allocation (0 for the CPU reference).
    pub gpu_bytes: u64,
    /// The median device time of the kernels (timestamp queries), where the adapter offers
    /// them: without the uploads and read-back `median_ms` includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_median_ms: Option<f64>,
    /// Each kernel's median device time, in the order the calls ran them (with
    /// `gpu_median_ms`; the gaps between kernels count there and not here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_kernels: Vec<KernelFigure>,
}

/// One kernel's median device time over the timed calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelFigure {
    pub kernel: String,
    pub median_ms: f64,
    /// The specializations its passes ran (pipeline labels: dtype, mask, tile, features).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

impl Figures {
    pub fn of(m: &Measured) -> Figures {
        Figures {
            median_ms: ms(m.median()),
            min_ms: ms(m.min()),
            max_ms: ms(m.max()),
            dense_flops: m.flops,
            gflops: m.gflops(),
            gpu_bytes: m.gpu_bytes,
            gpu_median_ms: m.gpu_median().map(ms),
            gpu_kernels: m
                .gpu_kernel_medians()
                .into_iter()
                .map(|(k, t)| KernelFigure {
                    kernel: k.kernel.clone(),
                    median_ms: ms(t),
                    variants: k.variants.clone(),
                })
                .collect(),
        }
    }
}
