//! Reading a case file (`SEMANTICS.md`, "Case files"): the tensors of one attention call and
//! its options as string metadata.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use wgattn::{AttentionInputs, BoolMask, DType, Mask, MaskMods, Tensor};

use super::options::{OptionValues, OPTION_KEYS};

/// Metadata keys that describe a case without being options, ignored without a warning:
/// `format` (which safetensors writers add) and `description`.
pub const DESCRIPTIVE_KEYS: [&str; 2] = ["format", "description"];

/// The tensor names a case file may hold; any other name is a mistake (`attn_mask`, `Q`).
pub const TENSOR_NAMES: [&str; 7] = ["q", "k", "v", "mask", "past_k", "past_v", "kv_lengths"];

/// One attention call, owned.
#[derive(Debug)]
pub struct Case {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub mask: Option<Mask>,
    pub past_k: Option<Tensor>,
    pub past_v: Option<Tensor>,
    pub kv_lengths: Option<Vec<i64>>,
    /// Structured masks and user snippets (`case_mods.rs`).
    pub mods: Option<MaskMods>,
    /// The options the file's metadata gives.
    pub options: OptionValues,
    /// Metadata keys that are neither an option nor a mod's nor [`DESCRIPTIVE_KEYS`], sorted:
    /// ignored, and named in a warning by [`Case::read`], since a misspelt option
    /// (`is_causal`, `window`) would otherwise change the result silently.
    pub ignored_metadata: Vec<String>,
}

impl Case {
    /// Reads and checks a case file; errors name the file, the tensor or key, and the problem.
    pub fn read(path: &Path) -> Result<Case> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read case file {}", path.display()))?;
        let case = Self::parse(&bytes).with_context(|| format!("case file {}", path.display()))?;
        if !case.ignored_metadata.is_empty() {
            let keys: Vec<&str> = case.ignored_metadata.iter().map(String::as_str).collect();
            eprintln!(
                "warning: case file {}: metadata {} ignored (the options are {}; the mods' \
                 keys {})",
                path.display(),
                quoted(&keys),
                quoted(&OPTION_KEYS),
                quoted(&super::case_mods::MOD_KEYS)
            );
        }
        Ok(case)
    }

    /// [`Case::read`] on the bytes of a file.
    pub fn parse(bytes: &[u8]) -> Result<Case> {
        let invalid = |e: safetensors::SafeTensorError| {
            use safetensors::SafeTensorError::{InvalidHeaderLength, MetadataIncompleteBuffer};
            let hint = match e {
                InvalidHeaderLength | MetadataIncompleteBuffer => " (truncated?)",
                _ => "",
            };
            anyhow!("not a valid safetensors file: {e}{hint}")
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(invalid)?;
        let file = SafeTensors::deserialize(bytes).map_err(invalid)?;
        check_names(&file.names())?;
        let options = OptionValues::from_metadata(header.metadata().as_ref())?;
        let get = |name: &str| file.tensor(name).ok();
        let required = |name: &str| {
            get(name).ok_or_else(|| anyhow!("missing tensor `{name}` (a case needs q, k and v)"))
        };
        Ok(Case {
            q: float_tensor("q", &required("q")?)?,
            k: float_tensor("k", &required("k")?)?,
            v: float_tensor("v", &required("v")?)?,
            mask: get("mask").map(|t| mask(&t)).transpose()?,
            past_k: get("past_k")
                .map(|t| float_tensor("past_k", &t))
                .transpose()?,
            past_v: get("past_v")
                .map(|t| float_tensor("past_v", &t))
                .transpose()?,
            kv_lengths: get("kv_lengths").map(|t| kv_lengths(&t)).transpose()?,
            mods: super::case_mods::read(&file, header.metadata().as_ref())?,
            options,
            ignored_metadata: ignored_metadata(header.metadata().as_ref()),
        })
    }

    /// The library's view of the case.
    pub fn inputs(&self) -> AttentionInputs<'_> {
        AttentionInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            past_k: self.past_k.as_ref(),
            past_v: self.past_v.as_ref(),
            kv_lengths: self.kv_lengths.as_deref(),
            mask: self.mask.as_ref(),
            mods: self.mods.as_ref(),
            block_mask: None,
        }
    }
}

fn ignored_metadata(meta: Option<&HashMap<String, String>>) -> Vec<String> {
    let mut keys: Vec<String> = meta
        .into_iter()
        .flat_map(HashMap::keys)
        .filter(|k| {
            let k = k.as_str();
            !OPTION_KEYS.contains(&k)
                && !super::case_mods::MOD_KEYS.contains(&k)
                && !DESCRIPTIVE_KEYS.contains(&k)
        })
        .cloned()
        .collect();
    keys.sort_unstable();
    keys
}

fn check_names(names: &[&str]) -> Result<()> {
    let mut unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            !TENSOR_NAMES.contains(n)
                && !super::case_mods::MOD_TENSORS.contains(n)
                && !n.starts_with("aux_")
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    bail!(
        "unknown tensor name{} {}; a case file holds only {}, the mod tensors {} and \
         aux_<name>",
        if unknown.len() > 1 { "s" } else { "" },
        quoted(&unknown),
        quoted(&TENSOR_NAMES),
        quoted(&super::case_mods::MOD_TENSORS)
    )
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn float_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

fn float_tensor(name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let Some(dtype) = float_dtype(view.dtype()) else {
        bail!(
            "tensor `{name}` has dtype {}; it must be F32, F16 or BF16",
            view.dtype()
        );
    };
    Tensor::from_le_bytes(view.shape(), dtype, view.data())
        .with_context(|| format!("tensor `{name}`"))
}

/// `BOOL` (true = may attend) or an additive float mask.
fn mask(view: &TensorView<'_>) -> Result<Mask> {
    if view.dtype() == Dtype::BOOL {
        let data = view
            .data()
            .iter()
            .enumerate()
            .map(|(i, &byte)| match byte {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(anyhow!(
                    "tensor `mask` (BOOL) holds byte {byte} at flat index {i}; a BOOL holds 0 or 1"
                )),
            })
            .collect::<Result<Vec<bool>>>()?;
        return Ok(Mask::Bool(
            BoolMask::new(view.shape(), data).context("tensor `mask`")?,
        ));
    }
    if float_dtype(view.dtype()).is_none() {
        bail!(
            "tensor `mask` has dtype {}; it must be BOOL (true = may attend) or F32, F16, BF16 \
             (added to the logits)",
            view.dtype()
        );
    }
    Ok(Mask::Additive(float_tensor("mask", view)?))
}

/// `kv_lengths` `[B]`, I64 or I32.
fn kv_lengths(view: &TensorView<'_>) -> Result<Vec<i64>> {
    if view.shape().len() != 1 {
        bail!(
            "tensor `kv_lengths` must be 1-D [B], got shape {:?}",
            view.shape()
        );
    }
    match view.dtype() {
        Dtype::I64 | Dtype::I32 => super::case_mods::ints("kv_lengths", view, Some(1)),
        other => bail!("tensor `kv_lengths` has dtype {other}; it must be I64 or I32"),
    }
}
