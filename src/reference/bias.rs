//! The bias of step 3 of `SEMANTICS.md`, evaluated position by position from the options and
//! the mask tensor (not from the GPU's folded [`RowBounds`](crate::RowBounds)).

use std::collections::HashSet;

use super::RustMods;
use crate::mods::{alibi_slopes, BlockedTokens, MaskMods};
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem};
use crate::tensor::Mask;

/// Every mask of a request: causal, window, offset, key lengths, the mask tensor and the
/// mods (the user's as Rust closures).
pub(crate) struct Bias<'a> {
    p: &'a AttentionProblem,
    options: &'a AttentionOptions,
    kv_lengths: Option<&'a [i64]>,
    mask: Option<&'a Mask>,
    mask_f64: Vec<f64>,
    mods: Option<&'a MaskMods>,
    rust: RustMods<'a>,
    slopes: Vec<f64>,
    blocked: HashSet<i64>,
}

impl<'a> Bias<'a> {
    pub(crate) fn new(
        p: &'a AttentionProblem,
        inputs: &AttentionInputs<'a>,
        options: &'a AttentionOptions,
        rust: RustMods<'a>,
    ) -> Self {
        let mods = inputs.mods;
        let slopes = mods
            .and_then(|m| m.alibi.as_ref())
            .map(|a| a.slopes.clone().unwrap_or_else(|| alibi_slopes(p.q_heads)))
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect();
        let blocked = match mods
            .and_then(|m| m.token_filter.as_ref())
            .map(|t| &t.blocked)
        {
            Some(BlockedTokens::Ids(ids)) => ids.iter().copied().collect(),
            _ => HashSet::new(),
        };
        Bias {
            p,
            options,
            kv_lengths: inputs.kv_lengths,
            mask: inputs.mask,
            mask_f64: match inputs.mask {
                Some(Mask::Additive(t)) => t.to_f64_vec(),
                _ => Vec::new(),
            },
            mods,
            rust,
            slopes,
            blocked,
        }
    }

    /// The score after the user's score_mod closure (`s` itself without one).
    pub(crate) fn score_mod(&self, s: f64, b: usize, h: usize, i: usize, j: usize) -> f64 {
        match self.rust.score_mod {
            Some(f) => f(s, b, h, i, j),
            None => s,
        }
    }

    /// Whether `s` (a modded score) removes its key: `-inf` from a score_mod.
    pub(crate) fn removed(&self, s: f64) -> bool {
        self.rust.score_mod.is_some() && s == f64::NEG_INFINITY
    }

    /// Whether the mods allow `(b, h, i, j)`, and their additive bias (ALiBi).
    fn mods_at(&self, b: usize, h: usize, i: usize, j: usize, pos: i128) -> (bool, f64) {
        let Some(m) = self.mods else {
            return (true, 0.0);
        };
        let (lq, lt) = (self.p.q_len, self.p.total_len());
        let jj = j as i128;
        let mut ok = true;
        if let Some(s) = &m.segments {
            ok &= s.q[b * lq + i] == s.kv[b * lt + j];
        }
        if let Some(prefix) = &m.prefix_lengths {
            ok &= jj < prefix[b] as i128 || jj <= pos;
        }
        if let Some(t) = &m.token_filter {
            let id = t.kv_token_ids[b * lt + j];
            ok &= match &t.blocked {
                BlockedTokens::Ids(_) => !self.blocked.contains(&id),
                BlockedTokens::Classes { class_of, blocked } => {
                    !blocked.contains(&class_of[id as usize])
                }
            };
        }
        if let Some(md) = &m.modalities {
            let n = md.causal.len();
            let (mq, mk) = (md.q[b * lq + i] as usize, md.kv[b * lt + j] as usize);
            ok &= md.allow[mq * n + mk];
            ok &= !md.causal[mq] || jj <= pos;
        }
        if let Some(f) = self.rust.mask_mod {
            ok &= f(b, h, i, j);
        }
        let mut add = 0.0;
        if let Some(a) = &m.alibi {
            let distance = (pos - jj) as f64;
            let d = if a.symmetric {
                distance.abs()
            } else {
                distance
            };
            add = -self.slopes[h] * d;
        }
        (ok, add)
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
    pub(crate) fn at(&self, b: usize, h: usize, i: usize, j: usize) -> f64 {
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
        let (mods_ok, mut add) = self.mods_at(b, h, i, j, pos);
        allowed &= mods_ok;
        if let Some(m) = self.mask {
            match mask_index(m.shape(), b, h, i, j) {
                None => allowed = false,
                Some(idx) => match m {
                    Mask::Bool(bm) => allowed &= bm.data()[idx],
                    Mask::Additive(_) => add += self.mask_f64[idx],
                },
            }
        }
        if allowed {
            add
        } else {
            f64::NEG_INFINITY
        }
    }
}

/// Right-aligned broadcasting of `(b, h, i, j)` into a mask of `shape`; `None` when `j` is
/// past the mask's last axis (a missing trailing key).
fn mask_index(shape: &[usize], b: usize, h: usize, i: usize, j: usize) -> Option<usize> {
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
