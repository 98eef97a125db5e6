//! The WGSL kernels: sources embedded once, specialized per dtype, mask kind and tile.

use crate::mods::ModFlags;
use crate::problem::MaskKind;
use crate::shader::{preprocess, substitute};
use crate::tensor::DType;

/// A compute kernel. The staged path runs the first four in order; the fused path runs
/// `Fused` or `FusedDecode`, then `FusedCombine` when keys were split.
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
    /// Fused tiled attention with online softmax, one invocation per query row.
    Fused,
    /// Fused attention for short query blocks, keys split across workgroups.
    FusedDecode,
    /// Merges the per-split partial results of the fused kernels into `out`.
    FusedCombine,
    /// Token-class masks: which keys' token ids are blocked (before the attention kernels).
    TokenMask,
    /// Classifies the fused kernel's tiles as empty, full or partial under the mask mods.
    BlockMask,
}

const IMPORTS: [(&str, &str); 6] = [
    ("mods", include_str!("../../shaders/mods.wgsl")),
    ("out_words", include_str!("../../shaders/out_words.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("common", include_str!("../../shaders/common.wgsl")),
    ("masking", include_str!("../../shaders/masking.wgsl")),
    ("fused_io", include_str!("../../shaders/fused_io.wgsl")),
];

impl Kernel {
    /// The staged kernels, in dispatch order.
    pub const STAGED: [Kernel; 4] = [
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
            Kernel::Fused => "fused",
            Kernel::FusedDecode => "fused_decode",
            Kernel::FusedCombine => "fused_combine",
            Kernel::TokenMask => "token_mask",
            Kernel::BlockMask => "block_mask",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Kernel::QkScores => include_str!("../../shaders/qk_scores.wgsl"),
            Kernel::ApplyMask => include_str!("../../shaders/apply_mask.wgsl"),
            Kernel::Softmax => include_str!("../../shaders/softmax.wgsl"),
            Kernel::AttendValues => include_str!("../../shaders/attend_values.wgsl"),
            Kernel::Fused => include_str!("../../shaders/fused.wgsl"),
            Kernel::FusedDecode => include_str!("../../shaders/fused_decode.wgsl"),
            Kernel::FusedCombine => include_str!("../../shaders/fused_combine.wgsl"),
            Kernel::TokenMask => include_str!("../../shaders/token_mask.wgsl"),
            Kernel::BlockMask => include_str!("../../shaders/block_mask.wgsl"),
        }
    }

    /// The storage buffers the kernel binds in group 0 (its bindings but the uniform).
    pub fn storage_buffers(self) -> u32 {
        self.bindings()
            .iter()
            .filter(|b| **b != Binding::Uniform)
            .count() as u32
    }

    /// The kernel's bindings in group 0, in binding order (matching its WGSL declarations).
    pub fn bindings(self) -> &'static [Binding] {
        use Binding::{ReadOnly as R, ReadWrite as W, Uniform as U};
        match self {
            // params, q, k, past_k, scores
            Kernel::QkScores => &[U, R, R, R, W],
            // params, tables (bounds and mods), mask, work, row_alive
            Kernel::ApplyMask => &[U, R, R, W, W],
            // params, row_alive, work
            Kernel::Softmax => &[U, R, W],
            // params, v, past_v, probs, row_alive, out
            Kernel::AttendValues => &[U, R, R, R, R, W],
            // params, q, k, v, tables (bounds and mods), mask, out, partials
            Kernel::Fused | Kernel::FusedDecode => &[U, R, R, R, R, R, W, W],
            // params, partials, out
            Kernel::FusedCombine => &[U, R, W],
            // params, tables
            Kernel::TokenMask | Kernel::BlockMask => &[U, W],
        }
    }

    /// The mods a kernel's code depends on (the rest of `flags` is dropped from its variant).
    fn mods(self, flags: ModFlags) -> ModFlags {
        match self {
            Kernel::ApplyMask => ModFlags {
                block_mask: false,
                ..flags
            },
            Kernel::Fused | Kernel::FusedDecode => flags,
            Kernel::QkScores => ModFlags {
                user_score: flags.user_score,
                ..ModFlags::default()
            },
            Kernel::BlockMask => ModFlags {
                alibi: false,
                user_score: false,
                block_mask: false,
                ..flags
            },
            Kernel::Softmax | Kernel::AttendValues | Kernel::FusedCombine | Kernel::TokenMask => {
                ModFlags::default()
            }
        }
    }

    /// Whether the kernel's code depends on the mask kind.
    fn reads_mask(self) -> bool {
        matches!(
            self,
            Kernel::ApplyMask | Kernel::Fused | Kernel::FusedDecode
        )
    }
}

/// Whether `kernel` with `aux` aux tensors beside its own buffers fits the device's storage
/// buffers per shader stage, and the aux tensors' second bind group its bind groups;
/// `ExceedsLimit` naming `what` if not.
pub(crate) fn check_bindings(
    ctx: &crate::Context,
    what: &str,
    kernel: Kernel,
    aux: usize,
) -> crate::Result<()> {
    let limits = ctx.limits();
    let groups = limits.max_bind_groups;
    if aux > 0 && groups < 2 {
        return Err(crate::Error::ExceedsLimit {
            what: format!("{what}: {aux} aux tensors, bound in a second bind group"),
            limit: "max_bind_groups",
            requested: 2,
            max: groups as u64,
        });
    }
    let own = kernel.storage_buffers() as u64;
    let storage = own.saturating_add(aux as u64);
    let max = limits.max_storage_buffers_per_shader_stage as u64;
    if storage <= max {
        return Ok(());
    }
    Err(crate::Error::ExceedsLimit {
        what: if aux > 0 {
            format!("{what}: storage buffers bound ({own} of the kernel, {aux} aux tensors)")
        } else {
            format!("{what}: storage buffers bound")
        },
        limit: "max_storage_buffers_per_shader_stage",
        requested: storage,
        max,
    })
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

/// Compile-time sizes of a fused kernel (all zero for the staged kernels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Invocations per workgroup (`BQ` query rows of `fused`, `WG` of `fused_decode`).
    pub rows: u32,
    /// Query rows per invocation (`R` of `fused`), or per workgroup (`R` of `fused_decode`).
    pub per_invocation: u32,
    /// Keys per tile (`BK` of `fused`) or per split (`CHUNK` of `fused_decode`).
    pub keys: u32,
    /// `ceil(D / 4)`.
    pub d4: u32,
    /// `ceil(Dv / 4)`.
    pub dv4: u32,
    /// `fused` writes per-split partials for `fused_combine` instead of `out`.
    pub split: bool,
    /// D and Dv are multiples of 4: q, k, v load four elements at a time. In
    /// `fused_combine`'s tile: each invocation merges four elements of an output row.
    pub vec4: bool,
    /// `fused_decode` with subgroups: the adapter's smallest subgroup size, for the layout
    /// that spreads each key's row over a subgroup (`SUBGROUP_KEYS`); 0 for one key per
    /// invocation.
    pub lanes: u32,
}

impl Tile {
    /// f16/bf16 rows whose D and Dv are multiples of 8: q, k, v load eight elements (16
    /// bytes) at a time, in place of `vec4`'s four, and `fused` keeps its tiles as those words.
    /// (Never `fused_combine`'s tile, which has no q or k rows.)
    pub fn vec8(&self, dtype: DType) -> bool {
        dtype != DType::F32
            && self.vec4
            && self.d4 > 0
            && self.d4.is_multiple_of(2)
            && self.dv4.is_multiple_of(2)
    }

    /// Workgroup memory of one key and its value row in `fused`'s tiles: f32 rows, or with
    /// `vec8` the words as loaded.
    pub fn bytes_per_key(&self, dtype: DType) -> u64 {
        (self.d4 + self.dv4) as u64 * if self.vec8(dtype) { 8 } else { 16 }
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
    /// Compile-time sizes (fused kernels only).
    pub tile: Tile,
    /// Optional device features the specialization uses.
    pub features: ShaderFeatures,
    /// The mods it is specialized on (normalized to what the kernel reads).
    pub mods: ModFlags,
}

/// Device features a kernel may use where the adapter offers them; without them every kernel
/// has a fallback with the same results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ShaderFeatures {
    /// `shader-f16`: the fused kernels convert f16 `q`, `k`, `v` in hardware (u32 words
    /// converted by `unpack2x16float`, which wgpu allows wherever it offers shader-f16; `f16`
    /// arrays where D or Dv is not a multiple of 4); else u32 words decoded with integer code.
    pub f16: bool,
    /// Subgroup operations: workgroup reductions (`fused_decode`, `softmax`) reduce inside each
    /// subgroup first (else: a tree in workgroup memory).
    pub subgroups: bool,
    /// Loop trip counts hidden from the driver's compiler (`fused`, `fused_decode`,
    /// `softmax`), so it does not unroll them: the engine's choice on GL, whose GLSL
    /// compilers unroll constant loops (Mesa's llvmpipe took up to a minute per fused
    /// pipeline). Not a device feature: the results are the same either way.
    pub opaque_loops: bool,
}

impl ShaderFeatures {
    /// What the device offers, for WGSL that needs it.
    pub fn of_device(features: wgpu::Features) -> Self {
        ShaderFeatures {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            opaque_loops: false,
        }
    }

    /// The naga capabilities the kernels' WGSL needs with these features (to validate it
    /// outside wgpu, which derives them from the device).
    pub fn naga_capabilities(self) -> naga::valid::Capabilities {
        use naga::valid::Capabilities as Caps;
        let mut caps = Caps::empty();
        if self.f16 {
            // unpack2x16float (eight-element f16 loads): wgpu grants it wherever it offers
            // shader-f16 (the SHADER_F16_IN_F32 downlevel flag).
            caps |= Caps::SHADER_FLOAT16 | Caps::SHADER_FLOAT16_IN_FLOAT32;
        }
        if self.subgroups {
            caps |= Caps::SUBGROUP;
        }
        caps
    }
}

impl Variant {
    /// The variant of `kernel` a problem with this dtype and mask needs.
    pub fn new(kernel: Kernel, dtype: DType, mask: Option<MaskKind>) -> Self {
        Variant {
            kernel,
            dtype,
            mask: if kernel.reads_mask() { mask } else { None },
            tile: Tile::default(),
            features: ShaderFeatures::default(),
            mods: ModFlags::default(),
        }
    }

    /// The same variant specialized on the mods this kernel reads.
    pub fn with_mods(mut self, flags: ModFlags) -> Self {
        self.mods = self.kernel.mods(flags);
        self
    }

    /// Whether its source includes the user's snippets (and binds their aux tensors in
    /// group 1).
    pub fn uses_user_module(&self) -> bool {
        self.mods.user_mask || self.mods.user_score
    }

    /// The same variant using what `available` offers that this kernel and dtype can use.
    pub fn with_features(mut self, available: ShaderFeatures) -> Self {
        self.features = ShaderFeatures {
            f16: available.f16
                && self.dtype == DType::F16
                && matches!(self.kernel, Kernel::Fused | Kernel::FusedDecode),
            subgroups: available.subgroups
                && matches!(self.kernel, Kernel::FusedDecode | Kernel::Softmax),
            opaque_loops: available.opaque_loops
                && matches!(
                    self.kernel,
                    Kernel::Fused | Kernel::FusedDecode | Kernel::Softmax
                ),
        };
        self
    }

    /// The same variant with compile-time sizes.
    pub fn with_tile(mut self, tile: Tile) -> Self {
        self.tile = tile;
        self
    }

    /// A label naming kernel, dtype, mask and tile, for pipelines and captures.
    pub fn label(&self) -> String {
        let mask = match self.mask {
            None => "nomask".to_string(),
            Some(MaskKind::Bool) => "boolmask".to_string(),
            Some(MaskKind::Additive(d)) => format!("{d}mask"),
        };
        let t = self.tile;
        let tile = if t == Tile::default() {
            String::new()
        } else {
            format!(
                " wg{}x{} k{} d{} dv{}{}{}{}",
                t.rows,
                t.per_invocation,
                t.keys,
                t.d4 * 4,
                t.dv4 * 4,
                if t.split { " split" } else { "" },
                if t.vec8(self.dtype) {
                    " vec8"
                } else if t.vec4 {
                    " vec4"
                } else {
                    ""
                },
                if t.lanes > 0 {
                    format!(" lanes{}", t.lanes)
                } else {
                    String::new()
                }
            )
        };
        let f = self.features;
        format!(
            "wgattn {} {} {}{tile}{}{}{}{}",
            self.kernel.name(),
            self.dtype,
            mask,
            if f.f16 { " shader-f16" } else { "" },
            if f.subgroups { " subgroups" } else { "" },
            if f.opaque_loops { " opaque-loops" } else { "" },
            self.mods.label()
        )
    }

    fn defines(&self) -> Vec<&'static str> {
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
        let mut d = vec![dtype, mask];
        if self.tile.split {
            d.push("SPLIT");
        }
        if self.tile.vec8(self.dtype) {
            d.push("VEC8");
        } else if self.tile.vec4 {
            d.push("VEC4");
        }
        if self.features.f16 {
            d.push("NATIVE_F16");
        }
        if self.features.subgroups {
            d.push("SUBGROUPS");
            if self.kernel == Kernel::FusedDecode && self.tile.lanes > 0 {
                d.push("SUBGROUP_KEYS");
            }
        }
        if self.kernel == Kernel::FusedDecode && self.tile.per_invocation > 1 {
            d.push("ROWS");
        }
        if self.features.opaque_loops {
            d.push("OPAQUE_LOOPS");
        }
        d.extend(self.mods.defines());
        if self.mods.masks() {
            d.push("MOD_MASKS");
        }
        d
    }

    /// The specialized WGSL source (of a variant without user snippets).
    pub fn source(&self) -> Result<String, String> {
        self.source_with(None)
    }

    /// The specialized WGSL source, with `user` (the generated module of the user's
    /// snippets and aux bindings) where the variant uses it.
    pub fn source_with(&self, user: Option<&str>) -> Result<String, String> {
        let t = self.tile;
        // Kernel development: WGATTN_SHADER_DIR=shaders reads kernel and import files from
        // disk at pipeline creation (the embedded copy where a file is missing), so a shader
        // edit needs no rebuild.
        let dir = std::env::var("WGATTN_SHADER_DIR").ok();
        let dev = |name: &str| {
            dir.as_ref()
                .and_then(|d| std::fs::read_to_string(format!("{d}/{name}.wgsl")).ok())
        };
        let main = dev(self.kernel.name()).unwrap_or_else(|| self.kernel.source().to_string());
        let mut owned: Vec<(&str, String)> = IMPORTS
            .iter()
            .map(|(name, text)| (*name, dev(name).unwrap_or_else(|| text.to_string())))
            .collect();
        if self.uses_user_module() {
            let user = user.ok_or_else(|| format!("{}: no user module", self.label()))?;
            owned.push(("user", user.to_string()));
        }
        let imports: Vec<(&str, &str)> = owned.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let text = preprocess(&main, &imports, &self.defines())?;
        let values = [
            ("WG", t.rows),
            ("R", t.per_invocation.max(1)),
            ("BK", t.keys),
            ("CHUNK", t.keys),
            ("D4", t.d4),
            ("DV4", t.dv4),
            ("LANES", t.lanes),
        ];
        substitute(&text, &values).map_err(|e| format!("{}: {e}", self.kernel.name()))
    }

    /// Every variant the engine can build, over representative tiles (for validation).
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
        let mut push = |v: Variant| {
            // Without optional features (as on GL, with and without opaque loops), and with
            // both device features.
            for (f, opaque_loops) in [(false, false), (false, true), (true, false)] {
                let v = v.with_features(ShaderFeatures {
                    f16: f,
                    subgroups: f,
                    opaque_loops,
                });
                if !all.contains(&v) {
                    all.push(v);
                }
            }
        };
        for dtype in dtypes {
            for mask in masks {
                for kernel in Kernel::STAGED {
                    push(Variant::new(kernel, dtype, mask));
                }
                for (d, dv) in [
                    (32, 32),
                    (64, 64),
                    (80, 80),
                    (96, 96),
                    (128, 128),
                    (256, 256),
                    (7, 13),
                ] {
                    let (d4, dv4) = (u32::div_ceil(d, 4), u32::div_ceil(dv, 4));
                    let vec4 = d % 4 == 0 && dv % 4 == 0;
                    for (split, per_invocation) in [(false, 1), (true, 1), (false, 4)] {
                        let tile = Tile {
                            rows: 64,
                            per_invocation,
                            keys: 16,
                            d4,
                            dv4,
                            split,
                            vec4,
                            lanes: 0,
                        };
                        push(Variant::new(Kernel::Fused, dtype, mask).with_tile(tile));
                    }
                    // One key per invocation and a subgroup per key (lavapipe's 8 lanes, and
                    // the 32 of most GPUs), each with one query row per workgroup and four.
                    for (lanes, rows) in [(0, 1), (0, 4), (8, 1), (8, 4), (32, 1), (32, 4)] {
                        let tile = Tile {
                            rows: 16.max(lanes),
                            per_invocation: rows,
                            keys: 512,
                            d4,
                            dv4,
                            split: true,
                            vec4,
                            lanes,
                        };
                        push(Variant::new(Kernel::FusedDecode, dtype, mask).with_tile(tile));
                    }
                    for vec4 in [false, true] {
                        let tile = Tile {
                            dv4,
                            vec4,
                            ..Tile::default()
                        };
                        push(Variant::new(Kernel::FusedCombine, dtype, mask).with_tile(tile));
                    }
                }
            }
        }
        // Every built-in mod at once (user snippets need their module: see the tests).
        let builtin = ModFlags {
            segments: true,
            prefix: true,
            alibi: true,
            tokens: true,
            modality: true,
            block_mask: true,
            ..ModFlags::default()
        };
        for dtype in [DType::F32, DType::F16] {
            for mask in [None, Some(MaskKind::Bool)] {
                for v in Self::mod_kernels(dtype, mask) {
                    push(v.with_mods(builtin));
                }
            }
        }
        all
    }

    /// The kernels that read mods, with representative tiles.
    pub(crate) fn mod_kernels(dtype: DType, mask: Option<MaskKind>) -> Vec<Variant> {
        let tile = |rows, per_invocation, keys, split, lanes| Tile {
            rows,
            per_invocation,
            keys,
            d4: 16,
            dv4: 16,
            split,
            vec4: true,
            lanes,
        };
        vec![
            Variant::new(Kernel::QkScores, dtype, mask),
            Variant::new(Kernel::ApplyMask, dtype, mask),
            Variant::new(Kernel::Fused, dtype, mask).with_tile(tile(64, 4, 16, false, 0)),
            Variant::new(Kernel::FusedDecode, dtype, mask).with_tile(tile(16, 1, 512, true, 0)),
            Variant::new(Kernel::FusedDecode, dtype, mask).with_tile(tile(16, 1, 512, true, 8)),
            Variant::new(Kernel::TokenMask, dtype, None),
            Variant::new(Kernel::BlockMask, dtype, None),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every specialized shader parses and validates in naga, without a GPU.
    #[test]
    fn every_variant_validates_in_naga() {
        for variant in Variant::all() {
            validated(&variant);
        }
    }

    /// A user module like the one `mods` generates: two aux tensors, both snippets.
    const USER: &str = "@group(1) @binding(0) var<storage, read> aux_doc: array<i32>;\n\
        @group(1) @binding(1) var<storage, read> aux_bias: array<f32>;\n\
        fn mask_mod(b: u32, h: u32, q: u32, k: u32) -> bool {\n\
        return aux_doc[q] == aux_doc[k] && h + b < 9u;\n}\n\
        fn score_mod(s: f32, b: u32, h: u32, q: u32, k: u32) -> f32 {\n\
        if (k > q) { return minus_infinity(); }\n\
        return s + aux_bias[k];\n}\n";

    /// Every kernel that reads mods, with every mod and the user's snippets, validates and
    /// translates to every backend.
    #[test]
    fn variants_with_user_snippets_validate_and_translate() {
        let all = ModFlags {
            segments: true,
            prefix: true,
            alibi: true,
            tokens: true,
            modality: true,
            user_mask: true,
            user_score: true,
            block_mask: true,
        };
        let only_score = ModFlags {
            user_score: true,
            ..ModFlags::default()
        };
        for dtype in [DType::F32, DType::F16] {
            for mask in [None, Some(MaskKind::Additive(DType::F32))] {
                for v in Variant::mod_kernels(dtype, mask) {
                    for flags in [all, only_score] {
                        let v = v.with_mods(flags);
                        let source = v.source_with(Some(USER)).unwrap();
                        let (module, info) = parse_validate(&v, &source);
                        translate(&v, &module, &info);
                    }
                }
            }
        }
    }

    /// A variant's module, parsed and validated with the capabilities its features need.
    fn validated(variant: &Variant) -> (naga::Module, naga::valid::ModuleInfo) {
        let source = variant.source().unwrap();
        parse_validate(variant, &source)
    }

    fn parse_validate(variant: &Variant, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
        let source = source.to_string();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", variant.label(), e.emit_to_string(&source)));
        let caps = variant.features.naga_capabilities();
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", variant.label()));
        (module, info)
    }

    /// Every variant translates to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and, where GL
    /// can run it (no shader-f16, no subgroups), GLSL ES 3.1, so a break on a backend this
    /// machine lacks shows up here.
    #[test]
    fn every_variant_translates_to_every_backend() {
        for variant in Variant::all() {
            let (module, info) = validated(&variant);
            translate(&variant, &module, &info);
        }
    }

    /// SPIR-V, MSL, HLSL and (without optional features) GLSL of one validated variant.
    fn translate(variant: &Variant, module: &naga::Module, info: &naga::valid::ModuleInfo) {
        use naga::back::{glsl, hlsl, msl, spv};
        let label = variant.label();
        spv::write_vec(module, info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{label}: SPIR-V: {e}"));

        let msl_options = msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        msl::write_string(module, info, &msl_options, &msl::PipelineOptions::default())
            .unwrap_or_else(|e| panic!("{label}: MSL: {e}"));

        let hlsl_options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_2,
            ..Default::default()
        };
        let pipeline = hlsl::PipelineOptions { entry_point: None };
        let mut text = String::new();
        hlsl::Writer::new(&mut text, &hlsl_options, &pipeline)
            .write(module, info, None)
            .unwrap_or_else(|e| panic!("{label}: HLSL: {e}"));

        if !variant.features.f16 && !variant.features.subgroups {
            let glsl_options = glsl::Options {
                version: glsl::Version::Embedded {
                    version: 310,
                    is_webgl: false,
                },
                ..Default::default()
            };
            let pipeline = glsl::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: "main".into(),
                multiview: None,
            };
            let mut text = String::new();
            glsl::Writer::new(
                &mut text,
                module,
                info,
                &glsl_options,
                &pipeline,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write().map(|_| ()))
            .unwrap_or_else(|e| panic!("{label}: GLSL: {e}"));
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
