//! Writing a result file: `out`, `present_k`/`present_v`, the intermediates asked for, each in
//! its tensor's dtype. The file appears whole or not at all.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use wgattn::{AttentionOutput, DType, Tensor};

/// The directory `path` will be written in; it must exist already (checked before any work).
pub fn check_output_dir(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    Ok(dir)
}

/// The tensors of a result, under their names in the result file.
pub fn named_tensors(output: &AttentionOutput) -> Vec<(&'static str, &Tensor)> {
    [
        ("out", Some(&output.out)),
        ("present_k", output.present_k.as_ref()),
        ("present_v", output.present_v.as_ref()),
        ("scores", output.scores.as_ref()),
        ("logits", output.logits.as_ref()),
        ("probs", output.probs.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, t)| t.map(|t| (name, t)))
    .collect()
}

/// Serializes `output` with `metadata` and moves it into place at `path`.
pub fn write(
    path: &Path,
    output: &AttentionOutput,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let tensors = named_tensors(output);
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, t)| t.to_le_bytes()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), data)| {
            TensorView::new(safetensors_dtype(t.dtype()), t.shape().to_vec(), data)
                .map(|view| (*name, view))
                .map_err(|e| anyhow!("tensor `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| anyhow!("serializing the result: {e}"))?;
    write_atomically(path, &file)
}

fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

/// Writes a temporary file beside `path`, then renames it over `path`: a reader sees the old
/// file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = check_output_dir(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}
