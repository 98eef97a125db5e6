//! The CPU reference: `SEMANTICS.md` transcribed loop by loop, in f64.
//!
//! One function per stage, named like the GPU kernels (`qk_scores`, `apply_mask`, `softmax`,
//! `attend_values`). It does not share the GPU path's derived bounds: the masks are evaluated
//! straight from the options, so the two implementations check each other.

mod bias;
mod online;

pub use online::{masked_attention_online, masked_attention_online_with};

use crate::error::Result;
use crate::kv_cache;
use crate::output::AttentionOutput;
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, Layout};
use crate::tensor::{filled, reserved, Tensor};
use bias::Bias;

/// Computes attention on the CPU with f64 accumulation. Validates exactly like the GPU path.
///
/// ```
/// use wgattn::{reference, AttentionInputs, AttentionOptions, Tensor};
///
/// // One head, two queries, two keys; causal: query 0 sees key 0 only.
/// let q = Tensor::from_f32([1, 1, 2, 2], vec![1.0, 0.0, 0.0, 1.0])?;
/// let k = q.clone();
/// let v = Tensor::from_f32([1, 1, 2, 2], vec![10.0, 20.0, 30.0, 40.0])?;
/// let options = AttentionOptions { causal: true, ..Default::default() };
/// let out = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options)?.out;
/// assert_eq!(&out.to_f32_vec()[..2], &[10.0, 20.0]);
/// # Ok::<(), wgattn::Error>(())
/// ```
pub fn masked_attention(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    masked_attention_with(inputs, options, RustMods::default())
}

/// The user's `mask_mod` and `score_mod` as Rust closures, for the CPU reference (which does
/// not run WGSL). Arguments as in the snippets: `(b, h, q, k)` and `(s, b, h, q, k)`.
#[derive(Clone, Copy, Default)]
pub struct RustMods<'a> {
    /// Stands for the WGSL `mask_mod`.
    pub mask_mod: Option<&'a (dyn Fn(usize, usize, usize, usize) -> bool + Sync)>,
    /// Stands for the WGSL `score_mod` (in f64).
    pub score_mod: Option<&'a (dyn Fn(f64, usize, usize, usize, usize) -> f64 + Sync)>,
}

impl std::fmt::Debug for RustMods<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustMods")
            .field("mask_mod", &self.mask_mod.is_some())
            .field("score_mod", &self.score_mod.is_some())
            .finish()
    }
}

/// Checks that every WGSL snippet of the inputs has its closure (and no closure is given
/// without its snippet, which would be a test comparing different things).
fn check_rust_mods(inputs: &AttentionInputs<'_>, rust: &RustMods<'_>) -> Result<()> {
    let mods = inputs.mods;
    let wgsl_mask = mods.is_some_and(|m| m.mask_mod.is_some());
    let wgsl_score = mods.is_some_and(|m| m.score_mod.is_some());
    if wgsl_mask != rust.mask_mod.is_some() || wgsl_score != rust.score_mod.is_some() {
        return Err(crate::Error::InvalidCombination(
            "the CPU reference runs mask_mod / score_mod as Rust closures: give one closure \
             (reference::masked_attention_with) for each WGSL snippet, and no other",
        ));
    }
    Ok(())
}

/// [`masked_attention`] with the user's snippets as Rust closures.
pub fn masked_attention_with(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    rust: RustMods<'_>,
) -> Result<AttentionOutput> {
    let p = AttentionProblem::new(inputs, options)?;
    check_rust_mods(inputs, &rust)?;
    let ctx = RefInputs::new(&p, inputs, options, rust);
    let lt = p.total_len();
    let stage = |what| filled(what, p.score_len(), 0f64);
    let mut scores = stage("the reference's scores [B, Hq, Lq, Lt] in f64")?;
    let mut logits = stage("the reference's logits [B, Hq, Lq, Lt] in f64")?;
    let mut probs = stage("the reference's probs [B, Hq, Lq, Lt] in f64")?;
    let mut out = filled("the reference's out in f64", p.out_len(), 0f64)?;
    for b in 0..p.batch {
        for h in 0..p.q_heads {
            for i in 0..p.q_len {
                let row = (b * p.q_heads + h) * p.q_len + i;
                let r = row * lt..(row + 1) * lt;
                qk_scores(&ctx, b, h, i, &mut scores[r.clone()]);
                let any_allowed =
                    apply_mask(&ctx, b, h, i, &scores[r.clone()], &mut logits[r.clone()]);
                softmax(&logits[r.clone()], any_allowed, &mut probs[r.clone()]);
                let o = out_index(&p, b, h, i, 0);
                attend_values(&ctx, b, h, &probs[r], any_allowed, &mut out[o..o + p.v_dim]);
            }
        }
    }
    finish(&p, inputs, scores, logits, probs, out)
}

/// Which positions of `[B, Hq, Lq, Lt]` a request allows (row-major, `true` = may attend):
/// those whose bias (step 3 of `SEMANTICS.md`) is not `-inf` after every mask, causal,
/// window, key lengths and the mask tensor (boolean, or an additive one's `-inf` entries; a
/// NaN entry is allowed, as it takes part and makes its row NaN).
/// Validates exactly like [`masked_attention`]; reads no `q`, `k` or `v` values.
///
/// A disallowed position has probability exactly 0, but an allowed one can underflow to 0
/// too, so this, not `probs == 0`, tells which keys a mask removed.
pub fn allowed(inputs: &AttentionInputs<'_>, options: &AttentionOptions) -> Result<Vec<bool>> {
    allowed_with(inputs, options, RustMods::default())
}

/// [`allowed`] with the user's `mask_mod` as a Rust closure (a `score_mod` does not change
/// which positions a mask allows and is not needed).
pub fn allowed_with(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    rust: RustMods<'_>,
) -> Result<Vec<bool>> {
    let p = AttentionProblem::new(inputs, options)?;
    let rust = RustMods {
        score_mod: None,
        ..rust
    };
    let wgsl_mask = inputs.mods.is_some_and(|m| m.mask_mod.is_some());
    if wgsl_mask != rust.mask_mod.is_some() {
        return Err(crate::Error::InvalidCombination(
            "the CPU reference runs mask_mod as a Rust closure: give one (allowed_with) \
             exactly when the inputs have a WGSL mask_mod",
        ));
    }
    let bias = Bias::new(&p, inputs, options, rust);
    let mut allowed = reserved("the allowed positions [B, Hq, Lq, Lt]", p.score_len())?;
    for b in 0..p.batch {
        for h in 0..p.q_heads {
            for i in 0..p.q_len {
                allowed
                    .extend((0..p.total_len()).map(|j| bias.at(b, h, i, j) != f64::NEG_INFINITY));
            }
        }
    }
    Ok(allowed)
}

/// Rounds the f64 results to the input dtype and assembles the output.
fn finish(
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    scores: Vec<f64>,
    logits: Vec<f64>,
    probs: Vec<f64>,
    out: Vec<f64>,
) -> Result<AttentionOutput> {
    let inter = |want: bool, data: Vec<f64>| -> Result<Option<Tensor>> {
        want.then(|| Tensor::from_f64_as(p.score_shape(), &data, p.dtype))
            .transpose()
    };
    let (present_k, present_v) = if p.has_past {
        (
            Some(kv_cache::concat(p, inputs.past_k, inputs.k, p.head_dim)?),
            Some(kv_cache::concat(p, inputs.past_v, inputs.v, p.v_dim)?),
        )
    } else {
        (None, None)
    };
    Ok(AttentionOutput {
        out: Tensor::from_f64_as(p.out_shape(), &out, p.dtype)?,
        present_k,
        present_v,
        scores: inter(p.returns.scores, scores)?,
        logits: inter(p.returns.logits, logits)?,
        probs: inter(p.returns.probs, probs)?,
        gpu_time: None,
        gpu_kernels: Vec::new(),
    })
}

/// Inputs widened to f64, keys and values already concatenated (`bhsd`), plus the options.
pub(crate) struct RefInputs<'a> {
    pub(crate) p: &'a AttentionProblem,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    bias: Bias<'a>,
}

impl<'a> RefInputs<'a> {
    pub(crate) fn new(
        p: &'a AttentionProblem,
        inputs: &AttentionInputs<'a>,
        options: &'a AttentionOptions,
        rust: RustMods<'a>,
    ) -> Self {
        let widen = |past: Option<&Tensor>, new: &Tensor, dim: usize| {
            kv_cache::concat(p, past, new, dim)
                .map(|t| t.to_f64_vec())
                .unwrap_or_default()
        };
        RefInputs {
            p,
            q: inputs.q.to_f64_vec(),
            k: widen(inputs.past_k, inputs.k, p.head_dim),
            v: widen(inputs.past_v, inputs.v, p.v_dim),
            bias: Bias::new(p, inputs, options, rust),
        }
    }

    fn q_row(&self, b: usize, h: usize, i: usize) -> &[f64] {
        let p = self.p;
        let row = match p.layout {
            Layout::Bhsd => (b * p.q_heads + h) * p.q_len + i,
            Layout::Bshd => (b * p.q_len + i) * p.q_heads + h,
        };
        &self.q[row * p.head_dim..(row + 1) * p.head_dim]
    }

    fn k_row(&self, b: usize, hk: usize, j: usize) -> &[f64] {
        let (p, d) = (self.p, self.p.head_dim);
        let row = (b * p.kv_heads + hk) * p.total_len() + j;
        &self.k[row * d..(row + 1) * d]
    }

    pub(crate) fn v_row(&self, b: usize, hk: usize, j: usize) -> &[f64] {
        let (p, d) = (self.p, self.p.v_dim);
        let row = (b * p.kv_heads + hk) * p.total_len() + j;
        &self.v[row * d..(row + 1) * d]
    }

    /// The bias of position `(b, h, i, j)` ([`Bias::at`]).
    pub(crate) fn bias(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        self.bias.at(b, h, i, j)
    }

    pub(crate) fn score(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        let p = self.p;
        let hk = h / p.group();
        let dot: f64 = self
            .q_row(b, h, i)
            .iter()
            .zip(self.k_row(b, hk, j))
            .map(|(x, y)| x * y)
            .sum();
        let s = p.scale as f64 * dot;
        let c = p.softcap as f64;
        let s = if c > 0.0 { c * (s / c).tanh() } else { s };
        self.bias.score_mod(s, b, h, i, j)
    }

    /// Whether a modded score removes its key (`-inf` from a score_mod).
    pub(crate) fn removed(&self, s: f64) -> bool {
        self.bias.removed(s)
    }
}

/// Flat index of `out[b, h, i, d]` in the problem's layout.
pub(crate) fn out_index(p: &AttentionProblem, b: usize, h: usize, i: usize, d: usize) -> usize {
    let row = match p.layout {
        Layout::Bhsd => (b * p.q_heads + h) * p.q_len + i,
        Layout::Bshd => (b * p.q_len + i) * p.q_heads + h,
    };
    row * p.v_dim + d
}

/// Stage 1: `s = scale·(q·kᵀ)`, then softcap, for one query row.
fn qk_scores(ctx: &RefInputs<'_>, b: usize, h: usize, i: usize, scores: &mut [f64]) {
    for (j, s) in scores.iter_mut().enumerate() {
        *s = ctx.score(b, h, i, j);
    }
}

/// Stage 2: `logits = s + bias`, selecting `-inf` where disallowed and where a score_mod
/// removed the key (whatever the bias holds there: NaN or +inf in a mask at a removed key does
/// not make the row NaN, as in the online reference and the kernels). Returns whether any key
/// is neither (a row that is not fully masked).
fn apply_mask(
    ctx: &RefInputs<'_>,
    b: usize,
    h: usize,
    i: usize,
    scores: &[f64],
    logits: &mut [f64],
) -> bool {
    let mut any_allowed = false;
    for (j, (l, &s)) in logits.iter_mut().zip(scores).enumerate() {
        let bias = ctx.bias(b, h, i, j);
        if bias == f64::NEG_INFINITY || ctx.removed(s) {
            *l = f64::NEG_INFINITY;
        } else {
            any_allowed = true;
            *l = s + bias;
        }
    }
    any_allowed
}

/// Stage 3: stable softmax of one row; a fully masked row gives zeros.
fn softmax(logits: &[f64], any_allowed: bool, probs: &mut [f64]) {
    if !any_allowed {
        probs.fill(0.0);
        return;
    }
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (p, &l) in probs.iter_mut().zip(logits) {
        *p = (l - max).exp();
        sum += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
}

/// Stage 4: `out = probs·v` for one row, over the keys with a probability above 0: a
/// disallowed key contributes nothing even where `v` holds NaN or infinity (junk in a
/// preallocated cache past `kv_lengths`, say). A fully masked row gives zeros.
fn attend_values(
    ctx: &RefInputs<'_>,
    b: usize,
    h: usize,
    probs: &[f64],
    any_allowed: bool,
    out: &mut [f64],
) {
    out.fill(0.0);
    if !any_allowed {
        return;
    }
    let hk = h / ctx.p.group();
    for (j, &pj) in probs.iter().enumerate() {
        if pj == 0.0 {
            continue;
        }
        for (o, &v) in out.iter_mut().zip(ctx.v_row(b, hk, j)) {
            *o += pj * v;
        }
    }
}
