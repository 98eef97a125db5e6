//! Converters from other libraries' mask conventions to this crate's (`true` = may attend).
//!
//! | library | argument | meaning of true / 1 | converter |
//! |---|---|---|---|
//! | this crate, PyTorch SDPA, ONNX `Attention` | boolean `attn_mask` | may attend | [`BoolMask::new`] |
//! | HF Transformers | `attention_mask [B, S]` (ints) | 1 = real token, 0 = padding | [`from_hf_attention_mask`] |
//! | PyTorch `nn.MultiheadAttention` | `key_padding_mask [B, S]` | true = padding (blocked) | [`from_key_padding_mask`] |
//! | PyTorch `nn.MultiheadAttention` | boolean `attn_mask [L, S]` or `[B*H, L, S]` | true = blocked | [`from_mha_attn_mask`] |
//!
//! The engine takes one mask tensor; [`combine`] makes one of two (e.g. `nn.MultiheadAttention`'s
//! `key_padding_mask` and `attn_mask` together, as `tests/from_pytorch.rs` checks against PyTorch's
//! own results).

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::tensor::{collected, element_count, BoolMask, DType, Mask, Tensor, TensorData};

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

/// Two masks as one, the way the engine combines every mask it is given (`SEMANTICS.md`): a
/// position is allowed only if both allow it, and additive values add.
///
/// Shapes broadcast right-aligned, as each mask would to `[B, Hq, Lq, Lt]` (ranks 1 to 4;
/// every axis but the last equal or 1 in one of them). The last axis (keys) is never
/// broadcast: the result has the longer one, and keys past the shorter mask's end are
/// disallowed there, as the engine would disallow them. Two boolean masks give a boolean
/// one; a boolean and an additive mask give the additive one's dtype with `-inf` where the
/// boolean mask disallows (selected, so a NaN there is gone too); two additive masks give
/// their sum in f32. The result holds every element of the broadcast shape (a `[B, 1, 1, S]`
/// and an `[L, S]` mask give `[B, 1, L, S]`).
///
/// ```
/// use wgattn::masks;
///
/// // nn.MultiheadAttention's two masks: padding [B=2, S=3] and a causal attn_mask [L=3, S=3].
/// let padding = masks::from_key_padding_mask(&[false, false, true, false, false, false], 2, 3)?;
/// let causal = [false, true, true, false, false, true, false, false, false];
/// let attn = masks::from_mha_attn_mask(&causal, &[3, 3], 1)?;
/// let both = masks::combine(&padding, &attn)?;
/// assert_eq!(both.shape(), &[2, 1, 3, 3]);
/// # Ok::<(), wgattn::Error>(())
/// ```
pub fn combine(a: &Mask, b: &Mask) -> Result<Mask> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let len = element_count("combined mask shape", &shape)?;
    let (ia, ib) = (
        Source::new(a.shape(), &shape),
        Source::new(b.shape(), &shape),
    );
    match (a, b) {
        (Mask::Bool(x), Mask::Bool(y)) => {
            let get = |m: &BoolMask, src: &Source, i| src.index(i).is_some_and(|j| m.data()[j]);
            let data = elements(len, |i| get(x, &ia, i) && get(y, &ib, i))?;
            Ok(Mask::Bool(BoolMask::new(shape, data)?))
        }
        (Mask::Bool(m), Mask::Additive(t)) | (Mask::Additive(t), Mask::Bool(m)) => {
            let (im, it) = if matches!(a, Mask::Bool(_)) {
                (&ia, &ib)
            } else {
                (&ib, &ia)
            };
            // Widened to f32 (exact for every dtype) and narrowed back: the same values.
            let values = t.to_f32_vec();
            let at = |i| match (im.index(i).map(|j| m.data()[j]), it.index(i)) {
                (Some(true), Some(j)) => values[j],
                _ => f32::NEG_INFINITY,
            };
            let data = match t.dtype() {
                DType::F32 => TensorData::F32(elements(len, at)?),
                DType::F16 => TensorData::F16(elements(len, |i| f16::from_f32(at(i)))?),
                DType::BF16 => TensorData::BF16(elements(len, |i| bf16::from_f32(at(i)))?),
            };
            Ok(Mask::Additive(Tensor::new(shape, data)?))
        }
        (Mask::Additive(x), Mask::Additive(y)) => {
            let (vx, vy) = (x.to_f64_vec(), y.to_f64_vec());
            let at = |v: &[f64], src: &Source, i| src.index(i).map_or(f64::NEG_INFINITY, |j| v[j]);
            let data = elements(len, |i| (at(&vx, &ia, i) + at(&vy, &ib, i)) as f32)?;
            Ok(Mask::Additive(Tensor::from_f32(shape, data)?))
        }
    }
}

/// The `len` elements of a combined mask, `f(i)` each; a typed error where the host cannot
/// hold them (two masks can broadcast to far more elements than either has).
fn elements<T>(len: usize, f: impl Fn(usize) -> T) -> Result<Vec<T>> {
    collected("the combined mask", len, (0..len).map(f))
}

/// The shape two masks broadcast to (see [`combine`]).
fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    for s in [a, b] {
        if !(1..=4).contains(&s.len()) {
            return Err(Error::RankMismatch {
                what: "a mask to combine",
                expected: "1 to 4",
                got: s.len(),
                shape: s.to_vec(),
            });
        }
    }
    let rank = a.len().max(b.len());
    let axis = |s: &[usize], k: usize| if k < s.len() { s[s.len() - 1 - k] } else { 1 };
    let mut shape = vec![0; rank];
    for k in 0..rank {
        let (x, y) = (axis(a, k), axis(b, k));
        shape[rank - 1 - k] = if k == 0 {
            x.max(y)
        } else if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return Err(Error::ShapeMismatch {
                what: format!("masks to combine, axis {} from the end", k + 1),
                expected: format!("equal sizes or 1 ({a:?} and {b:?})"),
                got: format!("{x} and {y}"),
            });
        };
    }
    Ok(shape)
}

/// Where an element of the combined shape comes from in one mask.
struct Source {
    /// Per combined axis (outermost first): the mask's stride there, 0 where it broadcasts.
    strides: Vec<usize>,
    /// The combined shape.
    shape: Vec<usize>,
    /// The mask's number of keys.
    keys: usize,
}

impl Source {
    fn new(mask: &[usize], shape: &[usize]) -> Self {
        let lead = shape.len() - mask.len();
        let mut strides = vec![0; shape.len()];
        let mut stride = 1;
        for (k, &d) in mask.iter().enumerate().rev() {
            strides[lead + k] = if d == 1 && k + 1 < mask.len() {
                0
            } else {
                stride
            };
            stride *= d;
        }
        Source {
            strides,
            shape: shape.to_vec(),
            keys: mask.last().copied().unwrap_or(1),
        }
    }

    /// The mask's flat index of combined element `i`; `None` for a key past its last one.
    fn index(&self, mut i: usize) -> Option<usize> {
        let mut j = 0;
        for (k, (&d, &stride)) in self.shape.iter().zip(&self.strides).enumerate().rev() {
            let x = i % d;
            i /= d;
            if k + 1 == self.shape.len() && x >= self.keys {
                return None;
            }
            j += x * stride;
        }
        Some(j)
    }
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
    use crate::tensor::DType;

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

    fn additive(m: &Mask) -> (Vec<usize>, Vec<f64>) {
        match m {
            Mask::Additive(t) => (t.shape().to_vec(), t.to_f64_vec()),
            Mask::Bool(_) => panic!("expected an additive mask"),
        }
    }

    #[test]
    fn combine_broadcasts_and_disallows_keys_past_the_shorter_mask() {
        // [2, 1, 3] keys: batch 0 allows keys 0 and 2, batch 1 key 1; [2, 2] rows of 2 keys.
        let a = Mask::Bool(
            BoolMask::new([2, 1, 3], vec![true, false, true, false, true, true]).unwrap(),
        );
        let b = Mask::Bool(BoolMask::new([2, 2], vec![true, true, false, true]).unwrap());
        let both = combine(&a, &b).unwrap();
        #[rustfmt::skip]
        let want = vec![
            true, false, false,  false, false, false, // batch 0: rows 0 and 1
            false, true, false,  false, true, false,  // batch 1
        ];
        assert_eq!(bools(&both), (vec![2, 2, 3], want.clone()));
        assert_eq!(bools(&combine(&b, &a).unwrap()), (vec![2, 2, 3], want));
    }

    #[test]
    fn combine_selects_minus_infinity_and_adds() {
        let inf = f64::NEG_INFINITY;
        let keep = Mask::Bool(BoolMask::new([2], vec![true, false]).unwrap());
        let bias = Mask::Additive(
            Tensor::from_f32(
                [2, 3],
                vec![0.5, f32::NAN, 2.0, -1.0, 3.0, f32::NEG_INFINITY],
            )
            .unwrap(),
        );
        // Keys past the boolean mask's end, and the NaN where it disallows, are -inf.
        let (shape, v) = additive(&combine(&bias, &keep).unwrap());
        assert_eq!(
            (shape, v),
            (vec![2, 3], vec![0.5, inf, inf, -1.0, inf, inf])
        );
        let half =
            Mask::Additive(Tensor::from_f64_as([1, 3], &[1.0, 2.0, 4.0], DType::F16).unwrap());
        let (shape, v) = additive(&combine(&half, &bias).unwrap());
        assert_eq!(shape, vec![2, 3]);
        assert_eq!((v[0], v[2], v[3], v[4], v[5]), (1.5, 6.0, 0.0, 5.0, inf));
        assert!(v[1].is_nan());
        let Mask::Additive(t) = combine(&keep, &half).unwrap() else {
            panic!()
        };
        assert_eq!(t.dtype(), DType::F16);
    }

    #[test]
    fn combine_refuses_shapes_that_do_not_broadcast() {
        let m = |shape: &[usize]| {
            let n = shape.iter().product();
            Mask::Bool(BoolMask::new(shape.to_vec(), vec![true; n]).unwrap())
        };
        assert!(matches!(
            combine(&m(&[2, 3]), &m(&[3, 3])),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            combine(&m(&[1, 1, 1, 1, 2]), &m(&[2])),
            Err(Error::RankMismatch { .. })
        ));
        // Zero-sized axes broadcast as sizes do.
        assert_eq!(
            combine(&m(&[0, 1, 2]), &m(&[3, 2])).unwrap().shape(),
            &[0, 3, 2]
        );
    }

    #[test]
    fn mha_attn_mask_splits_batch_and_heads() {
        let m = from_mha_attn_mask(&[true, false, false, false], &[4, 1, 1], 2).unwrap();
        assert_eq!(bools(&m), (vec![2, 2, 1, 1], vec![false, true, true, true]));
        assert!(from_mha_attn_mask(&[true; 3], &[3, 1, 1], 2).is_err());
        assert!(from_mha_attn_mask(&[true; 1], &[1], 2).is_err());
    }

    #[test]
    fn a_combination_the_host_cannot_hold_is_an_error() {
        // 16 MiB each, broadcast to [2^12, 2^12, 2^12, 2^12]: 2^48 bytes, past any address
        // space, so refused whatever the overcommit (a `collect` aborted the process).
        let n = 1 << 12;
        let a = Mask::Bool(BoolMask::new([n, 1, n, 1], vec![true; n * n]).unwrap());
        let b = Mask::Bool(BoolMask::new([n, 1, n], vec![true; n * n]).unwrap());
        match combine(&a, &b) {
            Err(Error::HostOutOfMemory { what, requested }) => {
                assert_eq!(requested, 1 << 48, "{what}");
            }
            other => panic!(
                "expected HostOutOfMemory, got {:?}",
                other.map(|m| m.shape().to_vec())
            ),
        }
    }
}
