//! The KV cache: `present = concat(past, new)` along the sequence axis, always `bhsd`.

use crate::error::{Error, Result};
use crate::problem::{AttentionProblem, Layout};
use crate::tensor::{reserved, DType, Tensor, TensorData};

/// `concat(past, new)` as `[B, Hkv, P + Lk, dim]`, where `new` is in `layout` and `past` (if
/// any) is `bhsd`. Elements are copied bit for bit.
pub(crate) fn concat(
    problem: &AttentionProblem,
    past: Option<&Tensor>,
    new: &Tensor,
    dim: usize,
) -> Result<Tensor> {
    fn go<T: Copy>(
        p: &AttentionProblem,
        past: Option<&[T]>,
        new: &[T],
        dim: usize,
    ) -> Result<Vec<T>> {
        let (b_n, h_n, pl, kl) = (p.batch, p.kv_heads, p.past_len, p.k_len);
        let mut out = reserved("the present cache", b_n * h_n * (pl + kl) * dim)?;
        for b in 0..b_n {
            for h in 0..h_n {
                if let Some(past) = past {
                    let start = (b * h_n + h) * pl * dim;
                    out.extend_from_slice(&past[start..start + pl * dim]);
                }
                for j in 0..kl {
                    let row = match p.layout {
                        Layout::Bhsd => (b * h_n + h) * kl + j,
                        Layout::Bshd => (b * kl + j) * h_n + h,
                    };
                    out.extend_from_slice(&new[row * dim..(row + 1) * dim]);
                }
            }
        }
        Ok(out)
    }
    let shape = [problem.batch, problem.kv_heads, problem.total_len(), dim];
    let data = match (past.map(Tensor::data), new.data()) {
        (None, TensorData::F32(n)) => TensorData::F32(go(problem, None, n, dim)?),
        (None, TensorData::F16(n)) => TensorData::F16(go(problem, None, n, dim)?),
        (None, TensorData::BF16(n)) => TensorData::BF16(go(problem, None, n, dim)?),
        (Some(TensorData::F32(p)), TensorData::F32(n)) => {
            TensorData::F32(go(problem, Some(p), n, dim)?)
        }
        (Some(TensorData::F16(p)), TensorData::F16(n)) => {
            TensorData::F16(go(problem, Some(p), n, dim)?)
        }
        (Some(TensorData::BF16(p)), TensorData::BF16(n)) => {
            TensorData::BF16(go(problem, Some(p), n, dim)?)
        }
        (Some(p), _) => {
            return Err(Error::DTypeMismatch {
                what: "past cache",
                expected: new.dtype(),
                got: match p {
                    TensorData::F32(_) => DType::F32,
                    TensorData::F16(_) => DType::F16,
                    TensorData::BF16(_) => DType::BF16,
                },
            })
        }
    };
    Tensor::new(shape, data)
}
