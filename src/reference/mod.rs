//! The CPU reference: `SEMANTICS.md` transcribed loop by loop, in f64.
//!
//! One function per stage, named like the GPU kernels (`qk_scores`, `apply_mask`, `softmax`,
//! `attend_values`). It does not share the GPU path's derived bounds: the masks are evaluated
//! straight from the options, so the two implementations check each other.

mod online;

pub use online::masked_attention_online;

use crate::error::Result;
use crate::kv_cache;
use crate::output::AttentionOutput;
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, Layout};
use crate::tensor::{Mask, Tensor};

/// Computes attention on the CPU with f64 accumulation. Validates exactly like the GPU path.
pub fn masked_attention(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    let p = AttentionProblem::new(inputs, options)?;
    let ctx = RefInputs::new(&p, inputs, options);
    let lt = p.total_len();
    let mut scores = vec![0f64; p.score_len()];
    let mut logits = vec![0f64; p.score_len()];
    let mut probs = vec![0f64; p.score_len()];
    let mut out = vec![0f64; p.out_len()];
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
    })
}

/// Inputs widened to f64, keys and values already concatenated (`bhsd`), plus the options.
pub(crate) struct RefInputs<'a> {
    pub(crate) p: &'a AttentionProblem,
    pub(crate) options: &'a AttentionOptions,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    kv_lengths: Option<&'a [i64]>,
    mask: Option<&'a Mask>,
    mask_f64: Vec<f64>,
}

impl<'a> RefInputs<'a> {
    pub(crate) fn new(
        p: &'a AttentionProblem,
        inputs: &AttentionInputs<'a>,
        options: &'a AttentionOptions,
    ) -> Self {
        let widen = |past: Option<&Tensor>, new: &Tensor, dim: usize| {
            kv_cache::concat(p, past, new, dim)
                .map(|t| t.to_f64_vec())
                .unwrap_or_default()
        };
        RefInputs {
            p,
            options,
            q: inputs.q.to_f64_vec(),
            k: widen(inputs.past_k, inputs.k, p.head_dim),
            v: widen(inputs.past_v, inputs.v, p.v_dim),
            kv_lengths: inputs.kv_lengths,
            mask: inputs.mask,
            mask_f64: match inputs.mask {
                Some(Mask::Additive(t)) => t.to_f64_vec(),
                _ => Vec::new(),
            },
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

    /// The causal/window offset of batch entry `b`, straight from `SEMANTICS.md`.
    fn offset(&self, b: usize) -> i128 {
        if let Some(o) = self.options.causal_offset {
            o as i128
        } else if self.p.has_past {
            self.p.past_len as i128
        } else if let Some(l) = self.kv_lengths {
            l[b] as i128 - self.p.q_len as i128
        } else {
            0
        }
    }

    /// The bias of position `(b, h, i, j)`: `-inf` if any mask disallows it, else the
    /// additive mask's value (0 without one).
    pub(crate) fn bias(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
        let o = self.options;
        let (ii, jj) = (i as i128, j as i128);
        let pos = ii + self.offset(b);
        let mut allowed = true;
        if o.causal && jj > pos {
            allowed = false;
        }
        if o.window_left >= 0 && pos - (o.window_left as i128) > jj {
            allowed = false;
        }
        if o.window_right >= 0 && jj > pos + o.window_right as i128 {
            allowed = false;
        }
        if let Some(l) = self.kv_lengths {
            if jj >= l[b] as i128 {
                allowed = false;
            }
        }
        let mut add = 0.0;
        if let Some(m) = self.mask {
            match self.mask_index(m.shape(), b, h, i, j) {
                None => allowed = false,
                Some(idx) => match m {
                    Mask::Bool(bm) => allowed &= bm.data()[idx],
                    Mask::Additive(_) => add = self.mask_f64[idx],
                },
            }
        }
        if allowed {
            add
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Right-aligned broadcasting of `(b, h, i, j)` into a mask of `shape`; `None` when `j` is
    /// past the mask's last axis (a missing trailing key).
    fn mask_index(&self, shape: &[usize], b: usize, h: usize, i: usize, j: usize) -> Option<usize> {
        let idx = [b, h, i, j];
        let offset = 4 - shape.len();
        if j >= shape[shape.len() - 1] {
            return None;
        }
        let mut flat = 0;
        for (axis, &n) in shape.iter().enumerate() {
            let x = if n == 1 { 0 } else { idx[axis + offset] };
            flat = flat * n + x;
        }
        Some(flat)
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
        if c > 0.0 {
            c * (s / c).tanh()
        } else {
            s
        }
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

/// Stage 2: `logits = s + bias`, selecting `-inf` where disallowed. Returns whether any key's
/// bias is above `-inf` (a row that is not fully masked).
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
        if bias == f64::NEG_INFINITY {
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
