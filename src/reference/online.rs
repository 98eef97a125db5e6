//! The online-softmax CPU reference: one pass over the keys with a running maximum and sum,
//! the way the fused GPU kernel works. Tested against the three-stage reference.

use super::{check_rust_mods, out_index, RefInputs, RustMods};
use crate::error::Result;
use crate::output::AttentionOutput;
use crate::problem::{AttentionInputs, AttentionOptions, AttentionProblem, Returns};

/// Attention in one pass per row (running max `m`, running sum `l`, accumulator rescaled by
/// `exp(m_old - m_new)`). Keys whose bias is `-inf` are skipped, as a tiled kernel skips them;
/// returns only `out` (and the present cache).
pub fn masked_attention_online(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
) -> Result<AttentionOutput> {
    masked_attention_online_with(inputs, options, RustMods::default())
}

/// [`masked_attention_online`] with the user's snippets as Rust closures.
pub fn masked_attention_online_with(
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    rust: RustMods<'_>,
) -> Result<AttentionOutput> {
    let p = AttentionProblem::new(inputs, options)?;
    check_rust_mods(inputs, &rust)?;
    let ctx = RefInputs::new(&p, inputs, options, rust);
    let mut out = crate::tensor::filled("the reference's out in f64", p.out_len(), 0f64)?;
    let mut acc = vec![0f64; p.v_dim];
    for b in 0..p.batch {
        for h in 0..p.q_heads {
            let hk = h / p.group();
            for i in 0..p.q_len {
                let (mut m, mut l) = (f64::NEG_INFINITY, 0f64);
                acc.fill(0.0);
                for j in 0..p.total_len() {
                    let bias = ctx.bias(b, h, i, j);
                    if bias == f64::NEG_INFINITY {
                        continue;
                    }
                    let s = ctx.score(b, h, i, j);
                    if ctx.removed(s) {
                        continue;
                    }
                    let x = s + bias;
                    let m_new = m.max(x);
                    let rescale = if m == f64::NEG_INFINITY {
                        0.0
                    } else {
                        (m - m_new).exp()
                    };
                    let w = (x - m_new).exp();
                    l = l * rescale + w;
                    for (a, &v) in acc.iter_mut().zip(ctx.v_row(b, hk, j)) {
                        *a = *a * rescale + w * v;
                    }
                    m = m_new;
                }
                let o = out_index(&p, b, h, i, 0);
                for (d, a) in acc.iter().enumerate() {
                    // l == 0 only for a fully masked row, whose output is 0; a NaN l (a NaN
                    // logit at a kept key) makes the row NaN, as in the three-stage reference.
                    out[o + d] = if l == 0.0 { 0.0 } else { a / l };
                }
            }
        }
    }
    let p = AttentionProblem {
        returns: Returns::default(),
        ..p
    };
    super::finish(&p, inputs, vec![], vec![], vec![], out)
}
