//! What a caller asks for ([`AttentionInputs`], [`AttentionOptions`]) and the validated
//! problem every path runs ([`AttentionProblem`]).

use crate::error::{Error, Result};
use crate::mods::{self, MaskMods, ModsInfo};
use crate::tensor::{DType, Mask, Tensor};

/// Memory order of `q`, `k`, `v` and `out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[B, H, S, D]` (PyTorch SDPA, ONNX 4-D).
    #[default]
    Bhsd,
    /// `[B, S, H, D]` (FlashAttention; ONNX 3-D `[B, S, H*D]` seen as 4-D).
    Bshd,
}

impl Layout {
    /// The lower-case name used in case files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bhsd => "bhsd",
            Layout::Bshd => "bshd",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bhsd" => Ok(Layout::Bhsd),
            "bshd" => Ok(Layout::Bshd),
            _ => Err(Error::InvalidOption {
                name: "layout",
                value: s.to_string(),
                reason: "expected bhsd or bshd",
            }),
        }
    }
}

/// Which intermediates `[B, Hq, Lq, Lt]` to return besides `out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Returns {
    /// Scaled (and softcapped) scores, before any mask.
    pub scores: bool,
    /// What enters the softmax: scores plus bias, `-inf` where disallowed.
    pub logits: bool,
    /// The attention probabilities; fully masked rows are 0.
    pub probs: bool,
}

impl Returns {
    /// Whether any intermediate is asked for.
    pub fn any(self) -> bool {
        self.scores || self.logits || self.probs
    }
}

impl std::str::FromStr for Returns {
    type Err = Error;
    /// Parses a comma-separated list of `scores`, `logits`, `probs` (empty = none).
    fn from_str(s: &str) -> Result<Self> {
        let mut r = Returns::default();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "scores" => r.scores = true,
                "logits" => r.logits = true,
                "probs" => r.probs = true,
                _ => {
                    return Err(Error::InvalidOption {
                        name: "return",
                        value: name.to_string(),
                        reason: "expected a comma-separated list of scores, logits, probs",
                    })
                }
            }
        }
        Ok(r)
    }
}

/// Which GPU path runs a request. Both meet the same contract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExecutionPath {
    /// Fused unless an intermediate is asked for or the fused kernels cannot take the shape.
    #[default]
    Auto,
    /// Four kernels materializing `[B, Hq, Lq, Lt]`; can return the intermediates.
    Staged,
    /// One tiled pass with online softmax (plus a merge when keys are split); no
    /// intermediates, memory linear in the sequence lengths.
    Fused,
}

impl ExecutionPath {
    /// The lower-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionPath::Auto => "auto",
            ExecutionPath::Staged => "staged",
            ExecutionPath::Fused => "fused",
        }
    }
}

impl std::str::FromStr for ExecutionPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(ExecutionPath::Auto),
            "staged" => Ok(ExecutionPath::Staged),
            "fused" => Ok(ExecutionPath::Fused),
            _ => Err(Error::InvalidOption {
                name: "path",
                value: s.to_string(),
                reason: "expected auto, staged or fused",
            }),
        }
    }
}

/// Options of one attention call. `Default` is plain, unmasked attention with scale `1/sqrt(D)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Multiplies `q·kᵀ`; `None` = `1/sqrt(D)`. Must be finite.
    pub scale: Option<f32>,
    /// `s = c·tanh(s/c)` when `c > 0`; 0 = none. Must be finite and `>= 0`.
    pub softcap: f32,
    /// Query `i` sees key `j` iff `j <= i + offset`.
    pub causal: bool,
    /// Replaces the derived causal/window offset (e.g. `Lt - Lq` for bottom-right alignment).
    pub causal_offset: Option<i64>,
    /// Keys before `i + offset - left` are disallowed; `-1` = unbounded.
    pub window_left: i64,
    /// Keys after `i + offset + right` are disallowed; `-1` = unbounded.
    pub window_right: i64,
    /// Memory order of `q`, `k`, `v`, `out`.
    pub layout: Layout,
    /// Intermediates to return.
    pub returns: Returns,
    /// Which GPU path runs it (ignored by the CPU reference).
    pub path: ExecutionPath,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions {
            scale: None,
            softcap: 0.0,
            causal: false,
            causal_offset: None,
            window_left: -1,
            window_right: -1,
            layout: Layout::Bhsd,
            returns: Returns::default(),
            path: ExecutionPath::Auto,
        }
    }
}

/// The tensors of one attention call (borrowed; nothing is copied until upload).
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    /// Queries `[B, Hq, Lq, D]` (or `[B, Lq, Hq, D]` in `bshd`).
    pub q: &'a Tensor,
    /// Keys `[B, Hkv, Lk, D]` (or `bshd`), `q`'s dtype.
    pub k: &'a Tensor,
    /// Values `[B, Hkv, Lk, Dv]` (or `bshd`), `q`'s dtype.
    pub v: &'a Tensor,
    /// Cached keys `[B, Hkv, P, D]`, always `bhsd`; put in front of `k`.
    pub past_k: Option<&'a Tensor>,
    /// Cached values `[B, Hkv, P, Dv]`, always `bhsd`; put in front of `v`.
    pub past_v: Option<&'a Tensor>,
    /// Per-batch number of valid keys (ONNX `nonpad_kv_seqlen`); not with a past cache.
    pub kv_lengths: Option<&'a [i64]>,
    /// A boolean or additive mask broadcast to `[B, Hq, Lq, Lt]`.
    pub mask: Option<&'a Mask>,
    /// Structured and user-defined masks ([`MaskMods`]).
    pub mods: Option<&'a MaskMods>,
    /// A block mask built for these mods by [`crate::block_mask`], reused instead of
    /// classifying the tiles again (the fused path; the staged path ignores it).
    pub block_mask: Option<&'a crate::BlockMask>,
}

impl<'a> AttentionInputs<'a> {
    /// Inputs with `q`, `k`, `v` only.
    pub fn new(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor) -> Self {
        AttentionInputs {
            q,
            k,
            v,
            past_k: None,
            past_v: None,
            kv_lengths: None,
            mask: None,
            mods: None,
            block_mask: None,
        }
    }

    /// Adds a past KV cache.
    pub fn with_past(mut self, past_k: &'a Tensor, past_v: &'a Tensor) -> Self {
        self.past_k = Some(past_k);
        self.past_v = Some(past_v);
        self
    }

    /// Adds per-batch key lengths.
    pub fn with_kv_lengths(mut self, kv_lengths: &'a [i64]) -> Self {
        self.kv_lengths = Some(kv_lengths);
        self
    }

    /// Adds a mask tensor.
    pub fn with_mask(mut self, mask: &'a Mask) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Adds structured or user-defined masks.
    pub fn with_mods(mut self, mods: &'a MaskMods) -> Self {
        self.mods = Some(mods);
        self
    }

    /// Reuses a block mask built by [`crate::block_mask`] for the same mods.
    pub fn with_block_mask(mut self, block_mask: &'a crate::BlockMask) -> Self {
        self.block_mask = Some(block_mask);
        self
    }
}

/// How a mask tensor is laid over `[B, Hq, Lq, Lt]`: element `(b, h, i, j)` for `j < last_len`
/// is at `b*strides[0] + h*strides[1] + i*strides[2] + j` (broadcast axes have stride 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskLayout {
    /// Strides of the batch, head and query axes, in elements.
    pub strides: [usize; 3],
    /// Length of the key axis; keys at or past it are disallowed.
    pub last_len: usize,
    /// Number of elements of the mask tensor.
    pub len: usize,
}

/// The kind of mask tensor in a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// Boolean, `true` = may attend.
    Bool,
    /// Additive, of this dtype.
    Additive(DType),
}

/// A validated request: every size the kernels need, checked against the rules of
/// `SEMANTICS.md`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionProblem {
    /// `B`.
    pub batch: usize,
    /// `Hq`.
    pub q_heads: usize,
    /// `Hkv`.
    pub kv_heads: usize,
    /// `Lq`.
    pub q_len: usize,
    /// `Lk`, the new keys.
    pub k_len: usize,
    /// `P`, the cached keys (0 without a cache).
    pub past_len: usize,
    /// `D`.
    pub head_dim: usize,
    /// `Dv`.
    pub v_dim: usize,
    /// dtype of `q`, `k`, `v`, the past and every output.
    pub dtype: DType,
    /// Memory order of `q`, `k`, `v`, `out`.
    pub layout: Layout,
    /// Whether a past cache is given.
    pub has_past: bool,
    /// The effective scale (`1/sqrt(D)` when none was given).
    pub scale: f32,
    /// Softcap, 0 = none.
    pub softcap: f32,
    /// The mask tensor's kind and layout, if one is given.
    pub mask: Option<(MaskKind, MaskLayout)>,
    /// Per batch: key `j` is allowed for query `i` only if `i + lo <= j <= i + hi` and
    /// `j < kv_len`. Derived from causal, window, offset and key lengths, clamped so the
    /// values fit in i32 without changing which keys are allowed.
    pub bounds: Vec<RowBounds>,
    /// Intermediates to return.
    pub returns: Returns,
    /// The validated [`MaskMods`], if any are given.
    pub mods: Option<ModsInfo>,
}

/// The structured masks of one batch entry, folded into three integers (and the causal
/// offset, which the mods need).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowBounds {
    /// Key `j` needs `j >= i + lo`.
    pub lo: i32,
    /// Key `j` needs `j <= i + hi`.
    pub hi: i32,
    /// Key `j` needs `j < kv_len`.
    pub kv_len: i32,
    /// The causal offset (`p = i + offset`), clamped to `[min(-Lq, -2^24), max(Lt, 2^24)]`:
    /// exact where it matters for ALiBi (which refuses larger offsets), and deciding `j <= p`
    /// like the true offset for every `i < Lq`, `j < Lt`.
    pub offset: i32,
}

impl AttentionProblem {
    /// `Lt = P + Lk`, the number of keys attended.
    pub fn total_len(&self) -> usize {
        self.past_len + self.k_len
    }

    /// `Hq / Hkv`.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// Number of query rows `B * Hq * Lq`.
    pub fn rows(&self) -> usize {
        self.batch * self.q_heads * self.q_len
    }

    /// Elements of one intermediate, `B * Hq * Lq * Lt`; `usize::MAX` where that overflows
    /// (a 32-bit target, or a shape no memory holds), so a check or an allocation of that
    /// many fails instead of wrapping. The fused path never allocates it.
    pub fn score_len(&self) -> usize {
        self.rows().saturating_mul(self.total_len())
    }

    /// Elements of `out`, `B * Hq * Lq * Dv` (saturating, as [`Self::score_len`]).
    pub fn out_len(&self) -> usize {
        self.rows().saturating_mul(self.v_dim)
    }

    /// Shape of `out` in the problem's layout.
    pub fn out_shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::Bhsd => vec![self.batch, self.q_heads, self.q_len, self.v_dim],
            Layout::Bshd => vec![self.batch, self.q_len, self.q_heads, self.v_dim],
        }
    }

    /// Shape of each intermediate, `[B, Hq, Lq, Lt]`.
    pub fn score_shape(&self) -> Vec<usize> {
        vec![self.batch, self.q_heads, self.q_len, self.total_len()]
    }

    /// Dense FLOPs of the attention, `2·B·Hq·Lq·Lt·(D + Dv)`.
    pub fn dense_flops(&self) -> f64 {
        2.0 * self.rows() as f64 * self.total_len() as f64 * (self.head_dim + self.v_dim) as f64
    }

    /// Checks a request against every rule of the contract.
    pub fn new(inputs: &AttentionInputs<'_>, options: &AttentionOptions) -> Result<Self> {
        let desc = |t: &'_ Tensor| TensorDesc {
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
        };
        Self::from_desc(
            &InputDesc {
                q: desc(inputs.q),
                k: desc(inputs.k),
                v: desc(inputs.v),
                past_k: inputs.past_k.map(desc),
                past_v: inputs.past_v.map(desc),
                kv_lengths: inputs.kv_lengths,
                mask: inputs.mask.map(|m| match m {
                    Mask::Bool(_) => (MaskKind::Bool, m.shape().to_vec()),
                    Mask::Additive(t) => (MaskKind::Additive(t.dtype()), m.shape().to_vec()),
                }),
                mods: inputs.mods,
            },
            options,
        )
    }

    /// [`AttentionProblem::new`] from the inputs' shapes and dtypes alone (for tensors that
    /// live in GPU buffers).
    pub(crate) fn from_desc(inputs: &InputDesc<'_>, options: &AttentionOptions) -> Result<Self> {
        let layout = options.layout;
        let q = dims4("q", &inputs.q.shape, layout)?;
        let k = dims4("k", &inputs.k.shape, layout)?;
        let v = dims4("v", &inputs.v.shape, layout)?;
        let [batch, q_heads, q_len, head_dim] = q;
        let [_, kv_heads, k_len, _] = k;
        let v_dim = v[3];
        let dtype = inputs.q.dtype;

        for (what, t) in [("k", &inputs.k), ("v", &inputs.v)] {
            if t.dtype != dtype {
                return Err(Error::DTypeMismatch {
                    what,
                    expected: dtype,
                    got: t.dtype,
                });
            }
        }
        for (what, axis, n) in [
            ("q", "B", batch),
            ("q", "H", q_heads),
            ("q", "S", q_len),
            ("q", "D", head_dim),
            ("k", "H", kv_heads),
            ("v", "Dv", v_dim),
        ] {
            if n == 0 {
                return Err(Error::ZeroSizedAxis { what, axis });
            }
        }
        let expect = |what: &str, want: [usize; 4], got: [usize; 4], lay: Layout| {
            if want == got {
                Ok(())
            } else {
                Err(Error::ShapeMismatch {
                    what: what.to_string(),
                    expected: layout_shape(want, lay),
                    got: layout_shape(got, lay),
                })
            }
        };
        expect("k", [batch, kv_heads, k_len, head_dim], k, layout)?;
        expect("v", [batch, kv_heads, k_len, v_dim], v, layout)?;
        if q_heads % kv_heads != 0 {
            return Err(Error::HeadsNotDivisible { q_heads, kv_heads });
        }

        let past_len = match (&inputs.past_k, &inputs.past_v) {
            (None, None) => 0,
            (Some(pk), Some(pv)) => {
                let pkd = dims4("past_k", &pk.shape, Layout::Bhsd)?;
                let pvd = dims4("past_v", &pv.shape, Layout::Bhsd)?;
                let p = pkd[2];
                expect("past_k", [batch, kv_heads, p, head_dim], pkd, Layout::Bhsd)?;
                expect("past_v", [batch, kv_heads, p, v_dim], pvd, Layout::Bhsd)?;
                for (what, t) in [("past_k", pk), ("past_v", pv)] {
                    if t.dtype != dtype {
                        return Err(Error::DTypeMismatch {
                            what,
                            expected: dtype,
                            got: t.dtype,
                        });
                    }
                }
                p
            }
            _ => {
                return Err(Error::InvalidCombination(
                    "past_k and past_v must be given together",
                ))
            }
        };
        let has_past = inputs.past_k.is_some();
        let total_len = past_len + k_len;
        if total_len == 0 {
            return Err(Error::ZeroSizedAxis {
                what: "keys (past + k)",
                axis: "S",
            });
        }

        if let Some(lengths) = inputs.kv_lengths {
            if has_past {
                return Err(Error::InvalidCombination(
                    "kv_lengths cannot be given with a past cache",
                ));
            }
            if lengths.len() != batch {
                return Err(Error::ShapeMismatch {
                    what: "kv_lengths".into(),
                    expected: format!("[{batch}]"),
                    got: format!("[{}]", lengths.len()),
                });
            }
            for (b, &len) in lengths.iter().enumerate() {
                if len < 0 || len as u64 > total_len as u64 {
                    return Err(Error::KvLengthOutOfRange {
                        batch: b,
                        value: len,
                        total_len,
                    });
                }
            }
        }

        for (name, w) in [
            ("window_left", options.window_left),
            ("window_right", options.window_right),
        ] {
            if w < -1 {
                return Err(Error::InvalidOption {
                    name,
                    value: w.to_string(),
                    reason: "a window size is -1 (unbounded) or >= 0",
                });
            }
        }
        let scale = match options.scale {
            Some(s) if !s.is_finite() => {
                return Err(Error::InvalidOption {
                    name: "scale",
                    value: s.to_string(),
                    reason: "the scale must be finite",
                })
            }
            Some(s) => s,
            None => (1.0 / (head_dim as f64).sqrt()) as f32,
        };
        if !(options.softcap.is_finite() && options.softcap >= 0.0) {
            return Err(Error::InvalidOption {
                name: "softcap",
                value: options.softcap.to_string(),
                reason: "the softcap must be finite and >= 0 (0 = none)",
            });
        }

        let target = [batch, q_heads, q_len, total_len];
        let mask = match &inputs.mask {
            None => None,
            Some((kind, shape)) => {
                let what = match kind {
                    MaskKind::Bool => "boolean mask",
                    MaskKind::Additive(_) => "additive mask",
                };
                Some((*kind, mask_layout(what, shape, target)?))
            }
        };

        let bounds: Vec<RowBounds> = (0..batch)
            .map(|b| {
                row_bounds(
                    options,
                    q_len,
                    total_len,
                    has_past.then_some(past_len),
                    inputs.kv_lengths.map(|l| l[b]),
                )
            })
            .collect();

        let mods = match inputs.mods {
            None => None,
            Some(m) => {
                let dims = mods::Dims {
                    batch,
                    q_heads,
                    q_len,
                    total_len,
                };
                let info = mods::validate(m, &dims)?;
                if info.flags.alibi {
                    let off = (0..batch).map(|b| {
                        causal_offset(
                            options,
                            q_len,
                            has_past.then_some(past_len),
                            inputs.kv_lengths.map(|l| l[b]),
                        )
                    });
                    if let Some(bad) = off.into_iter().find(|o| o.abs() > EXACT_OFFSET) {
                        return Err(Error::InvalidOption {
                            name: "causal offset",
                            value: bad.to_string(),
                            reason: "ALiBi needs |offset| <= 2^24 (f32 distances are exact there)",
                        });
                    }
                }
                Some(info)
            }
        };

        Ok(AttentionProblem {
            batch,
            q_heads,
            kv_heads,
            q_len,
            k_len,
            past_len,
            head_dim,
            v_dim,
            dtype,
            layout,
            has_past,
            scale,
            softcap: options.softcap,
            mask,
            bounds,
            returns: options.returns,
            mods,
        })
    }
}

/// A tensor's shape and dtype, without its data.
pub(crate) struct TensorDesc {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// What [`AttentionProblem::from_desc`] validates: the inputs' shapes, dtypes, key lengths and
/// mask kind and shape.
pub(crate) struct InputDesc<'a> {
    pub q: TensorDesc,
    pub k: TensorDesc,
    pub v: TensorDesc,
    pub past_k: Option<TensorDesc>,
    pub past_v: Option<TensorDesc>,
    pub kv_lengths: Option<&'a [i64]>,
    pub mask: Option<(MaskKind, Vec<usize>)>,
    pub mods: Option<&'a MaskMods>,
}

/// The shape `[B, H, S, D]` read from a 4-D tensor in `layout`.
fn dims4(what: &'static str, shape: &[usize], layout: Layout) -> Result<[usize; 4]> {
    let s: [usize; 4] = shape.try_into().map_err(|_| Error::RankMismatch {
        what,
        expected: "4",
        got: shape.len(),
        shape: shape.to_vec(),
    })?;
    Ok(match layout {
        Layout::Bhsd => s,
        Layout::Bshd => [s[0], s[2], s[1], s[3]],
    })
}

/// `[B, H, S, D]` written as the shape a caller passes in `layout`.
fn layout_shape(d: [usize; 4], layout: Layout) -> String {
    match layout {
        Layout::Bhsd => format!("{d:?}"),
        Layout::Bshd => format!("{:?}", [d[0], d[2], d[1], d[3]]),
    }
}

/// Right-aligned broadcasting of a mask of rank 1..=4 to `[B, Hq, Lq, Lt]`.
pub(crate) fn mask_layout(
    what: &'static str,
    shape: &[usize],
    target: [usize; 4],
) -> Result<MaskLayout> {
    if shape.is_empty() || shape.len() > 4 {
        return Err(Error::RankMismatch {
            what,
            expected: "1 to 4",
            got: shape.len(),
            shape: shape.to_vec(),
        });
    }
    let fail = |reason: String| Error::MaskNotBroadcastable {
        what,
        mask_shape: shape.to_vec(),
        target,
        reason,
    };
    let mut full = [1usize; 4];
    full[4 - shape.len()..].copy_from_slice(shape);
    const AXES: [&str; 4] = ["batch", "head", "query", "key"];
    for axis in 0..3 {
        if full[axis] != 1 && full[axis] != target[axis] {
            return Err(fail(format!(
                "{} axis has {} but must be 1 or {}",
                AXES[axis], full[axis], target[axis]
            )));
        }
    }
    let n = full[3];
    if n == 0 {
        return Err(fail("key axis is empty".into()));
    }
    if n > target[3] {
        return Err(fail(format!(
            "key axis has {n}, longer than the {} keys attended",
            target[3]
        )));
    }
    let stride = |axis: usize, s: usize| if full[axis] == 1 { 0 } else { s };
    let si = n;
    let sh = full[2] * si;
    let sb = full[1] * sh;
    Ok(MaskLayout {
        strides: [stride(0, sb), stride(1, sh), stride(2, si)],
        last_len: n,
        len: full.iter().product(),
    })
}

/// Folds causal, window, offset and key length of one batch entry into [`RowBounds`].
///
/// Bounds are computed exactly in i128, then clamped to `[-Lq, Lt]`: for `0 <= i < Lq` and
/// `0 <= j < Lt`, `j >= i + lo` holds always when `lo <= -Lq` and never when `lo >= Lt`, and
/// likewise for `hi`, so clamping changes no decision.
fn row_bounds(
    options: &AttentionOptions,
    q_len: usize,
    total_len: usize,
    past_len: Option<usize>,
    kv_len: Option<i64>,
) -> RowBounds {
    let (lq, lt) = (q_len as i128, total_len as i128);
    let offset = causal_offset(options, q_len, past_len, kv_len);
    let mut lo = -lq;
    let mut hi = lt;
    if options.causal {
        hi = hi.min(offset);
    }
    if options.window_left >= 0 {
        lo = lo.max(offset - options.window_left as i128);
    }
    if options.window_right >= 0 {
        hi = hi.min(offset + options.window_right as i128);
    }
    let clamp = |x: i128| x.clamp(-lq, lt) as i32;
    RowBounds {
        lo: clamp(lo),
        hi: clamp(hi),
        kv_len: kv_len.map_or(total_len as i128, |l| l as i128) as i32,
        offset: offset.clamp(lq.max(EXACT_OFFSET).wrapping_neg(), lt.max(EXACT_OFFSET)) as i32,
    }
}

/// Offsets up to this size are kept exactly in [`RowBounds::offset`].
const EXACT_OFFSET: i128 = 1 << 24;

/// The causal/window offset of one batch entry (`SEMANTICS.md`).
fn causal_offset(
    options: &AttentionOptions,
    q_len: usize,
    past_len: Option<usize>,
    kv_len: Option<i64>,
) -> i128 {
    match (options.causal_offset, past_len, kv_len) {
        (Some(o), _, _) => o as i128,
        (None, Some(p), _) => p as i128,
        (None, None, Some(len)) => len as i128 - q_len as i128,
        (None, None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_layout_broadcasts_right_aligned() {
        let l = mask_layout("m", &[3, 1, 5], [2, 3, 4, 7]).unwrap();
        assert_eq!(l.strides, [0, 5, 0]);
        assert_eq!(l.last_len, 5);
        let l = mask_layout("m", &[2, 1, 4, 7], [2, 3, 4, 7]).unwrap();
        assert_eq!(l.strides, [28, 0, 7]);
        assert!(mask_layout("m", &[3, 8], [2, 3, 4, 7]).is_err());
        assert!(mask_layout("m", &[4, 9], [2, 3, 4, 7]).is_err());
        assert!(mask_layout("m", &[1, 1, 1, 1, 1], [2, 3, 4, 7]).is_err());
    }

    #[test]
    fn row_bounds_clamp_keeps_decisions() {
        let opts = AttentionOptions {
            causal: true,
            causal_offset: Some(i64::MIN),
            window_left: i64::MAX,
            ..Default::default()
        };
        let b = row_bounds(&opts, 4, 9, None, None);
        assert_eq!((b.lo, b.hi), (-4, -4));
    }
}
