//! The WGSL kernels: sources embedded once, specialized per dtype and mask kind.

use crate::problem::MaskKind;
use crate::shader::preprocess;
use crate::tensor::DType;

/// A compute kernel of the staged path, in dispatch order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Stage 1: scaled `q·kᵀ`, softcap.
    QkScores,
    /// Stage 2: bias (select `-inf`, add float mask), fully-masked-row flags.
    ApplyMask,
    /// Stage 3: stable row softmax.
    Softmax,
    /// Stage 4: `probs·v`.
    AttendValues,
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");

impl Kernel {
    /// Every kernel, in dispatch order.
    pub const ALL: [Kernel; 4] = [
        Kernel::QkScores,
        Kernel::ApplyMask,
        Kernel::Softmax,
        Kernel::AttendValues,
    ];

    /// The kernel's name: its file is `shaders/<name>.wgsl`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::QkScores => "qk_scores",
            Kernel::ApplyMask => "apply_mask",
            Kernel::Softmax => "softmax",
            Kernel::AttendValues => "attend_values",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Kernel::QkScores => include_str!("../../shaders/qk_scores.wgsl"),
            Kernel::ApplyMask => include_str!("../../shaders/apply_mask.wgsl"),
            Kernel::Softmax => include_str!("../../shaders/softmax.wgsl"),
            Kernel::AttendValues => include_str!("../../shaders/attend_values.wgsl"),
        }
    }

    /// The kernel's bindings in group 0, in binding order (matching its WGSL declarations).
    pub fn bindings(self) -> &'static [Binding] {
        use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
        match self {
            // params, q, k, past_k, scores
            Kernel::QkScores => &[U, R, R, R, W],
            // params, bounds, mask, work, row_alive
            Kernel::ApplyMask => &[U, R, R, W, W],
            // params, row_alive, work
            Kernel::Softmax => &[U, R, W],
            // params, v, past_v, probs, row_alive, out
            Kernel::AttendValues => &[U, R, R, R, R, W],
        }
    }

    /// Whether the kernel's code depends on the mask kind.
    fn reads_mask(self) -> bool {
        self == Kernel::ApplyMask
    }
}

/// How a kernel binds one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    ReadOnly,
    /// `var<storage, read_write>`.
    ReadWrite,
}

impl Binding {
    /// The layout entry of this binding at `index`.
    pub fn layout_entry(self, index: u32) -> wgpu::BindGroupLayoutEntry {
        let ty = match self {
            Binding::Uniform => wgpu::BufferBindingType::Uniform,
            Binding::ReadOnly => wgpu::BufferBindingType::Storage { read_only: true },
            Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
        };
        wgpu::BindGroupLayoutEntry {
            binding: index,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }
    }
}

/// One specialization of a kernel: what its pipeline is cached under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The kernel.
    pub kernel: Kernel,
    /// dtype of q, k, v, past and out.
    pub dtype: DType,
    /// The mask tensor's kind (normalized to `None` for kernels that do not read it).
    pub mask: Option<MaskKind>,
}

impl Variant {
    /// The variant of `kernel` a problem with this dtype and mask needs.
    pub fn new(kernel: Kernel, dtype: DType, mask: Option<MaskKind>) -> Self {
        Variant {
            kernel,
            dtype,
            mask: if kernel.reads_mask() { mask } else { None },
        }
    }

    /// A label naming kernel, dtype and mask, for pipelines and captures.
    pub fn label(&self) -> String {
        let mask = match self.mask {
            None => "nomask".to_string(),
            Some(MaskKind::Bool) => "boolmask".to_string(),
            Some(MaskKind::Additive(d)) => format!("{d}mask"),
        };
        format!("wgattn {} {} {}", self.kernel.name(), self.dtype, mask)
    }

    fn defines(&self) -> [&'static str; 2] {
        let dtype = match self.dtype {
            DType::F32 => "DTYPE_F32",
            DType::F16 => "DTYPE_F16",
            DType::BF16 => "DTYPE_BF16",
        };
        let mask = match self.mask {
            None => "MASK_NONE",
            Some(MaskKind::Bool) => "MASK_BOOL",
            Some(MaskKind::Additive(DType::F32)) => "MASK_F32",
            Some(MaskKind::Additive(DType::F16)) => "MASK_F16",
            Some(MaskKind::Additive(DType::BF16)) => "MASK_BF16",
        };
        [dtype, mask]
    }

    /// The specialized WGSL source.
    pub fn source(&self) -> Result<String, String> {
        preprocess(self.kernel.source(), &[("common", COMMON)], &self.defines())
            .map_err(|e| format!("{}: {e}", self.kernel.name()))
    }

    /// Every variant the engine can build (for validation and export).
    pub fn all() -> Vec<Variant> {
        let dtypes = [DType::F32, DType::F16, DType::BF16];
        let masks = [
            None,
            Some(MaskKind::Bool),
            Some(MaskKind::Additive(DType::F32)),
            Some(MaskKind::Additive(DType::F16)),
            Some(MaskKind::Additive(DType::BF16)),
        ];
        let mut all = Vec::new();
        for kernel in Kernel::ALL {
            for dtype in dtypes {
                for mask in masks {
                    let v = Variant::new(kernel, dtype, mask);
                    if !all.contains(&v) {
                        all.push(v);
                    }
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every specialized shader parses and validates in naga, without a GPU.
    #[test]
    fn every_variant_validates_in_naga() {
        for variant in Variant::all() {
            let source = variant.source().unwrap();
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!("{}: {}", variant.label(), e.emit_to_string(&source))
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", variant.label()));
        }
    }

    /// No shader spells an infinite constant (naga and Tint reject them); -inf comes from
    /// the uniform block.
    #[test]
    fn no_infinite_constants() {
        for variant in Variant::all() {
            let source = variant.source().unwrap();
            for bad in ["bitcast<f32>(0x", "-inf", "inf(", "3.40282347e+38"] {
                let hit = source
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .any(|l| l.contains(bad));
                assert!(!hit, "{} contains {bad}", variant.label());
            }
        }
    }
}
