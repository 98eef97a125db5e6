//! Host tensors: a shape and a typed vector, in f32, f16 or bf16.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// Element type of a floating-point tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Elements per stored 32-bit word (the kernels read and write tensors as words).
    pub(crate) fn per_word(self) -> u64 {
        4 / self.size() as u64
    }

    /// The lower-case name used in case files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Rounds an f64 to this dtype (round to nearest even) and widens it back.
    pub fn round_f64(self, x: f64) -> f64 {
        match self {
            DType::F32 => x as f32 as f64,
            DType::F16 => f16::from_f64(x).to_f64(),
            DType::BF16 => bf16::from_f64(x).to_f64(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => Err(Error::InvalidOption {
                name: "dtype",
                value: s.to_string(),
                reason: "expected f32, f16 or bf16",
            }),
        }
    }
}

/// The elements of a [`Tensor`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
}

impl TensorData {
    fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
        }
    }
}

/// A dense, row-major floating-point tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// An empty vector with room for `n` elements, or [`Error::HostOutOfMemory`] naming `what`
/// where the host cannot allocate them (where `Vec::with_capacity` or `vec![x; n]` would
/// abort the process).
pub(crate) fn reserved<T>(what: &str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::HostOutOfMemory {
        what: what.to_string(),
        requested: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    Ok(v)
}

/// The `n` elements of `iter`, allocated as [`reserved`] does.
pub(crate) fn collected<T>(what: &str, n: usize, iter: impl Iterator<Item = T>) -> Result<Vec<T>> {
    let mut v = reserved(what, n)?;
    v.extend(iter);
    Ok(v)
}

/// `n` copies of `fill`, allocated as [`reserved`] does.
pub(crate) fn filled<T: Clone>(what: &str, n: usize, fill: T) -> Result<Vec<T>> {
    let mut v = reserved(what, n)?;
    v.resize(n, fill);
    Ok(v)
}

/// The f32 values of little-endian words.
fn f32_words(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

pub(crate) fn element_count(what: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidOption {
            name: what,
            value: format!("{shape:?}"),
            reason: "the number of elements overflows usize",
        })
}

impl Tensor {
    /// A tensor from a shape and matching data; errors if the lengths disagree.
    pub fn new(shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Self> {
        let shape = shape.into();
        let expected = element_count("shape", &shape)?;
        if expected != data.len() {
            return Err(Error::DataLength {
                what: "tensor",
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// An f32 tensor.
    pub fn from_f32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        Self::new(shape, TensorData::F32(data))
    }

    /// An f16 tensor.
    pub fn from_f16(shape: impl Into<Vec<usize>>, data: Vec<f16>) -> Result<Self> {
        Self::new(shape, TensorData::F16(data))
    }

    /// A bf16 tensor.
    pub fn from_bf16(shape: impl Into<Vec<usize>>, data: Vec<bf16>) -> Result<Self> {
        Self::new(shape, TensorData::BF16(data))
    }

    /// A tensor of `dtype` from f32 values, each rounded to nearest even.
    pub fn from_f32_as(shape: impl Into<Vec<usize>>, data: &[f32], dtype: DType) -> Result<Self> {
        Self::from_floats(shape, data.len(), data.iter().copied(), dtype)
    }

    /// A tensor of `dtype` from little-endian f32 words (a read-back), each rounded once to
    /// nearest even: one pass, no intermediate copy of the floats.
    pub(crate) fn from_f32_le_as(
        shape: impl Into<Vec<usize>>,
        bytes: &[u8],
        dtype: DType,
    ) -> Result<Self> {
        Self::from_floats(shape, bytes.len() / 4, f32_words(bytes), dtype)
    }

    /// A tensor of `dtype` from `n` f32 values, each rounded to nearest even.
    fn from_floats(
        shape: impl Into<Vec<usize>>,
        n: usize,
        floats: impl Iterator<Item = f32>,
        dtype: DType,
    ) -> Result<Self> {
        let what = "a tensor's elements";
        let data = match dtype {
            DType::F32 => TensorData::F32(collected(what, n, floats)?),
            DType::F16 => TensorData::F16(collected(what, n, floats.map(f16::from_f32))?),
            DType::BF16 => TensorData::BF16(collected(what, n, floats.map(bf16::from_f32))?),
        };
        Self::new(shape, data)
    }

    /// A tensor of `dtype` from f64 values, each rounded once to nearest even.
    pub fn from_f64_as(shape: impl Into<Vec<usize>>, data: &[f64], dtype: DType) -> Result<Self> {
        let (what, n) = ("a tensor's elements", data.len());
        let data = match dtype {
            DType::F32 => TensorData::F32(collected(what, n, data.iter().map(|&x| x as f32))?),
            DType::F16 => {
                TensorData::F16(collected(what, n, data.iter().map(|&x| f16::from_f64(x)))?)
            }
            DType::BF16 => {
                TensorData::BF16(collected(what, n, data.iter().map(|&x| bf16::from_f64(x)))?)
            }
        };
        Self::new(shape, data)
    }

    /// A tensor of `dtype` from little-endian bytes (as in safetensors).
    pub fn from_le_bytes(shape: impl Into<Vec<usize>>, dtype: DType, bytes: &[u8]) -> Result<Self> {
        let shape = shape.into();
        let n = element_count("shape", &shape)?;
        if bytes.len() != n.saturating_mul(dtype.size()) {
            return Err(Error::DataLength {
                what: "tensor bytes",
                shape,
                expected: n.saturating_mul(dtype.size()),
                got: bytes.len(),
            });
        }
        let what = "a tensor's elements";
        let data = match dtype {
            DType::F32 => TensorData::F32(collected(what, n, f32_words(bytes))?),
            DType::F16 => TensorData::F16(collected(
                what,
                n,
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]])),
            )?),
            DType::BF16 => TensorData::BF16(collected(
                what,
                n,
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]])),
            )?),
        };
        Ok(Tensor { shape, data })
    }

    /// The tensor's elements as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// The typed elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// The elements widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// The elements as raw bytes, padded with zeros to a multiple of 4 (for GPU upload);
    /// borrowed, not copied, when no padding is needed.
    pub(crate) fn padded_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        let raw: &[u8] = match &self.data {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F16(v) => bytemuck::cast_slice(v),
            TensorData::BF16(v) => bytemuck::cast_slice(v),
        };
        if !raw.is_empty() && raw.len().is_multiple_of(4) {
            return std::borrow::Cow::Borrowed(raw);
        }
        let mut bytes = raw.to_vec();
        bytes.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        std::borrow::Cow::Owned(bytes)
    }
}

/// A boolean mask tensor; `true` means the position MAY be attended (PyTorch SDPA and ONNX
/// convention). See [`crate::masks`] for converters from other libraries' conventions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoolMask {
    shape: Vec<usize>,
    data: Vec<bool>,
}

impl BoolMask {
    /// A mask from a shape and matching data; errors if the lengths disagree.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<bool>) -> Result<Self> {
        let shape = shape.into();
        let expected = element_count("mask shape", &shape)?;
        if expected != data.len() {
            return Err(Error::DataLength {
                what: "boolean mask",
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(BoolMask { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, `true` = may attend.
    pub fn data(&self) -> &[bool] {
        &self.data
    }

    /// One byte per element (0 or 1), padded with zeros to a multiple of 4.
    pub(crate) fn padded_bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.data.iter().map(|&b| b as u8).collect();
        bytes.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        bytes
    }
}

/// A mask tensor: boolean (select) or additive (float bias).
#[derive(Clone, Debug, PartialEq)]
pub enum Mask {
    /// `true` = may attend; `false` positions get `-inf`.
    Bool(BoolMask),
    /// Added to the logits; may hold `-inf`. Any float dtype, independent of `q`'s.
    Additive(Tensor),
}

impl Mask {
    /// The mask's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Mask::Bool(m) => m.shape(),
            Mask::Additive(t) => t.shape(),
        }
    }
}
