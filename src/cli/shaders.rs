//! `wgattn shaders --emit DIR`: every specialized shader the engine can build
//! (`Variant::all()`) as a standalone WGSL file, plus `manifest.json` describing each.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use wgattn::kernels::{Binding, ShaderFeatures, Tile, Variant};
use wgattn::MaskKind;

use super::result_file::write_atomically;

/// Where to write the shaders.
#[derive(clap::Args, Debug)]
pub struct ShadersArgs {
    /// Directory for one `.wgsl` file per shader and `manifest.json` (created if missing).
    #[arg(long, value_name = "DIR")]
    pub emit: PathBuf,
}

/// What a manifest or plan says a WGSL reader other than naga needs in front of a shader.
pub const TINT_NOTE: &str = "sources are as naga (wgpu) reads them; Tint (Chrome's WebGPU) \
    also needs `enable subgroups;` at the top of a shader whose features include subgroups \
    (naga 30 refuses that line); `enable f16;` is already in shaders that use shader-f16";

/// Writes every shader and the manifest; each shader is parsed and validated with naga
/// first, so a broken one fails here, naming it.
pub fn shaders(args: &ShadersArgs) -> Result<()> {
    let dir = &args.emit;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let mut names = HashSet::new();
    let mut entries = Vec::new();
    for variant in Variant::all() {
        let label = variant.label();
        let source = variant.source().map_err(|e| anyhow!("{label}: {e}"))?;
        let workgroup_size = validate(&variant, &source).with_context(|| label.clone())?;
        let file = format!("{}.wgsl", file_stem(&label));
        if !names.insert(file.clone()) {
            bail!("two shaders would be written to {file}");
        }
        write_atomically(&dir.join(&file), source.as_bytes())?;
        let mut entry = describe(&variant);
        entry["file"] = json!(file);
        entry["workgroup_size"] = json!(workgroup_size);
        entries.push(entry);
    }
    let manifest = json!({
        "format": "wgattn-shaders",
        "version": 1,
        "count": entries.len(),
        "note": TINT_NOTE,
        "shaders": entries,
    });
    let text = serde_json::to_string_pretty(&manifest).context("serializing the manifest")?;
    write_atomically(&dir.join("manifest.json"), text.as_bytes())?;
    println!(
        "wrote {} shaders and manifest.json to {}",
        names.len(),
        dir.display()
    );
    Ok(())
}

/// A file name from a label: letters, digits, `-`, `_` and `.` kept, anything else `_`.
fn file_stem(label: &str) -> String {
    let label = label.strip_prefix("wgattn ").unwrap_or(label);
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses and validates `source` with the capabilities its features need; the workgroup size
/// of its `main`.
pub fn validate(variant: &Variant, source: &str) -> Result<[u32; 3]> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| anyhow!("naga cannot parse it: {}", e.emit_to_string(source)))?;
    let caps = variant.features.naga_capabilities();
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
        .subgroup_operations(naga::valid::SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| anyhow!("naga rejects it: {}", e.emit_to_string(source)))?;
    module
        .entry_points
        .iter()
        .find(|e| e.name == "main")
        .map(|e| e.workgroup_size)
        .ok_or_else(|| anyhow!("no entry point `main`"))
}

/// A variant as JSON: label, kernel, dtype, mask kind, tile, features, entry point and bind
/// group layout.
pub fn describe(variant: &Variant) -> Value {
    let t: Tile = variant.tile;
    json!({
        "label": variant.label(),
        "kernel": variant.kernel.name(),
        "dtype": variant.dtype.name(),
        "mask": mask_name(variant.mask),
        "tile": {
            "rows": t.rows,
            "per_invocation": t.per_invocation,
            "keys": t.keys,
            "d4": t.d4,
            "dv4": t.dv4,
            "split": t.split,
            "vec4": t.vec4,
            "vec8": t.vec8(variant.dtype),
            "lanes": t.lanes,
        },
        "features": feature_names(variant.features),
        "opaque_loops": variant.features.opaque_loops,
        "entry_point": "main",
        "bindings": bindings(variant.kernel.bindings()),
    })
}

/// `none`, `bool`, `additive-f32`, `additive-f16`, `additive-bf16`.
fn mask_name(mask: Option<MaskKind>) -> String {
    match mask {
        None => "none".into(),
        Some(MaskKind::Bool) => "bool".into(),
        Some(MaskKind::Additive(d)) => format!("additive-{}", d.name()),
    }
}

/// WebGPU's names of the features: `shader-f16`, `subgroups`.
pub fn feature_names(f: ShaderFeatures) -> Vec<&'static str> {
    let mut names = Vec::new();
    if f.f16 {
        names.push("shader-f16");
    }
    if f.subgroups {
        names.push("subgroups");
    }
    names
}

/// Bind group 0 in WebGPU's terms: `{binding, type}`, `type` a `GPUBufferBindingType`
/// (`uniform`, `read-only-storage`, `storage`).
pub fn bindings(bindings: &[Binding]) -> Value {
    bindings
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let ty = match b {
                Binding::Uniform => "uniform",
                Binding::ReadOnly => "read-only-storage",
                Binding::ReadWrite => "storage",
            };
            json!({ "binding": i, "type": ty })
        })
        .collect()
}
