//! Converters from other libraries' mask conventions to this crate's (`true` = may attend).
//!
//! | library | argument | meaning of true / 1 | converter |
//! |---|---|---|---|
//! | this crate, PyTorch SDPA, ONNX `Attention` | boolean `attn_mask` | may attend | [`BoolMask::new`] |
//! | HF Transformers | `attention_mask [B, S]` (ints) | 1 = real token, 0 = padding | [`from_hf_attention_mask`] |
//! | PyTorch `nn.MultiheadAttention` | `key_padding_mask [B, S]` | true = padding (blocked) | [`from_key_padding_mask`] |
//! | PyTorch `nn.MultiheadAttention` | boolean `attn_mask [L, S]` or `[B*H, L, S]` | true = blocked | [`from_mha_attn_mask`] |

use crate::error::{Error, Result};
use crate::tensor::{BoolMask, Mask};

/// HF Transformers `attention_mask` `[B, S]` (1 = keep, 0 = padding) as a key mask
/// `[B, 1, 1, S]`. Any value other than 0 or 1 is an error.
///
/// Use this, not key lengths, for right-padded causal batches: see `SEMANTICS.md`.
///
/// ```
/// use wgattn::{masks, Mask};
///
/// // Two sequences of three tokens; the second has one token of right padding.
/// let mask = masks::from_hf_attention_mask(&[1, 1, 1, 1, 1, 0], 2, 3)?;
/// assert_eq!(mask.shape(), &[2, 1, 1, 3]);
/// let Mask::Bool(m) = mask else { unreachable!() };
/// assert_eq!(m.data(), &[true, true, true, true, true, false]);
/// # Ok::<(), wgattn::Error>(())
/// ```
pub fn from_hf_attention_mask(mask: &[i64], batch: usize, seq: usize) -> Result<Mask> {
    check_len("HF attention_mask", mask.len(), batch, seq)?;
    let data = mask
        .iter()
        .map(|&x| match x {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::InvalidOption {
                name: "attention_mask",
                value: x.to_string(),
                reason: "an HF attention_mask holds 1 (keep) or 0 (padding)",
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Mask::Bool(BoolMask::new([batch, 1, 1, seq], data)?))
}

/// PyTorch `nn.MultiheadAttention` `key_padding_mask` `[B, S]` (true = padding, blocked) as a
/// key mask `[B, 1, 1, S]`.
pub fn from_key_padding_mask(mask: &[bool], batch: usize, seq: usize) -> Result<Mask> {
    check_len("key_padding_mask", mask.len(), batch, seq)?;
    let data = mask.iter().map(|&blocked| !blocked).collect();
    Ok(Mask::Bool(BoolMask::new([batch, 1, 1, seq], data)?))
}

/// PyTorch `nn.MultiheadAttention` boolean `attn_mask` (true = blocked), of shape `[L, S]`
/// or `[B*num_heads, L, S]`, as a mask `[L, S]` or `[B, num_heads, L, S]`.
pub fn from_mha_attn_mask(mask: &[bool], shape: &[usize], num_heads: usize) -> Result<Mask> {
    let new_shape = match *shape {
        [l, s] => vec![l, s],
        [bh, l, s] if num_heads > 0 && bh % num_heads == 0 => vec![bh / num_heads, num_heads, l, s],
        [bh, _, _] => {
            return Err(Error::ShapeMismatch {
                what: "nn.MultiheadAttention attn_mask first axis (B*num_heads)".into(),
                expected: format!("a multiple of num_heads = {num_heads}"),
                got: bh.to_string(),
            })
        }
        _ => {
            return Err(Error::RankMismatch {
                what: "nn.MultiheadAttention attn_mask",
                expected: "2 or 3",
                got: shape.len(),
                shape: shape.to_vec(),
            })
        }
    };
    let data = mask.iter().map(|&blocked| !blocked).collect();
    Ok(Mask::Bool(BoolMask::new(new_shape, data)?))
}

fn check_len(what: &str, len: usize, batch: usize, seq: usize) -> Result<()> {
    if batch.checked_mul(seq) != Some(len) {
        return Err(Error::ShapeMismatch {
            what: what.to_string(),
            expected: format!("[{batch}, {seq}] = {} elements", batch.saturating_mul(seq)),
            got: format!("{len} elements"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bools(m: &Mask) -> (Vec<usize>, Vec<bool>) {
        match m {
            Mask::Bool(b) => (b.shape().to_vec(), b.data().to_vec()),
            Mask::Additive(_) => panic!("expected a boolean mask"),
        }
    }

    #[test]
    fn hf_one_means_keep() {
        let m = from_hf_attention_mask(&[1, 1, 0, 1, 0, 0], 2, 3).unwrap();
        assert_eq!(
            bools(&m),
            (
                vec![2, 1, 1, 3],
                vec![true, true, false, true, false, false]
            )
        );
        assert!(from_hf_attention_mask(&[1, 2], 1, 2).is_err());
        assert!(from_hf_attention_mask(&[1, 1], 1, 3).is_err());
    }

    #[test]
    fn key_padding_true_means_blocked() {
        let m = from_key_padding_mask(&[false, true], 1, 2).unwrap();
        assert_eq!(bools(&m), (vec![1, 1, 1, 2], vec![true, false]));
    }

    #[test]
    fn mha_attn_mask_splits_batch_and_heads() {
        let m = from_mha_attn_mask(&[true, false, false, false], &[4, 1, 1], 2).unwrap();
        assert_eq!(bools(&m), (vec![2, 2, 1, 1], vec![false, true, true, true]));
        assert!(from_mha_attn_mask(&[true; 3], &[3, 1, 1], 2).is_err());
        assert!(from_mha_attn_mask(&[true; 1], &[1], 2).is_err());
    }
}
