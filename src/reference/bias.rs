//! The bias of step 3 of `SEMANTICS.md`, evaluated position by position from the options and
//! the mask tensor (not from the GPU's folded [`RowBounds`](crate::RowBounds)).

use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem};
use crate::tensor::Mask;

/// Every mask of a request: causal, window, offset, key lengths and the mask tensor.
pub(crate) struct Bias<'a> {
    p: &'a AttentionProblem,
    options: &'a AttentionOptions,
    kv_lengths: Option<&'a [i64]>,
    mask: Option<&'a Mask>,
    mask_f64: Vec<f64>,
}

impl<'a> Bias<'a> {
    pub(crate) fn new(
        p: &'a AttentionProblem,
        inputs: &AttentionInputs<'a>,
        options: &'a AttentionOptions,
    ) -> Self {
        Bias {
            p,
            options,
            kv_lengths: inputs.kv_lengths,
            mask: inputs.mask,
            mask_f64: match inputs.mask {
                Some(Mask::Additive(t)) => t.to_f64_vec(),
                _ => Vec::new(),
            },
        }
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
        let mut add = 0.0;
        if let Some(m) = self.mask {
            match mask_index(m.shape(), b, h, i, j) {
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
