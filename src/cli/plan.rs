//! `wgattn plan CASE... -o plan.json`: the execution plan of each case (what the engine
//! records for it, captured by `wgattn::plan::plan`) with the CPU reference's expected
//! outputs, as JSON that `web/` replays with WebGPU.
//!
//! Every byte string (initial buffer contents, expected outputs) is base64 (RFC 4648, the
//! standard alphabet, padded) of little-endian data. The format is in `web/README.md`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use wgattn::plan::{Contents, Plan, Step};
use wgattn::{AttentionOutput, Context, ExecutionPath, Returns, Tensor};

use super::case_file::Case;
use super::options::{parse_returns, OptionFlags};
use super::result_file::{check_output_dir, write_atomically};
use super::shaders::{bindings, describe, feature_names, validate, TINT_NOTE};
use super::tuning::{help, parse_tuning};

/// The GPU path to plan.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanPath {
    /// The fused kernel unless intermediates are asked for or the shape needs staged.
    Auto,
    /// Four kernels materializing the scores (can return intermediates).
    Staged,
    /// One tiled online-softmax pass (no intermediates).
    Fused,
}

/// Options given here override each case file's metadata.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Case files (safetensors); each is one case of the plan, named by its file stem.
    #[arg(value_name = "CASE", required = true)]
    pub cases: Vec<PathBuf>,
    /// Plan file to write (JSON).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Plan for WebGPU's default limits and no optional features (no shader-f16, no
    /// subgroups), which every browser adapter offers; without it, for this machine's adapter.
    #[arg(long)]
    pub webgpu_limits: bool,
    /// With `--webgpu-limits`: optional features the plan may use where this adapter offers
    /// them too, a comma-separated list of shader-f16, subgroups (a browser adapter must
    /// then offer them as well).
    #[arg(long, value_name = "LIST", value_parser = parse_features, requires = "webgpu_limits")]
    pub with_features: Option<wgpu::Features>,
    /// With `--webgpu-limits`: the smallest and largest subgroup size of the browser adapters
    /// the plan is for, `MIN,MAX` (default 4,128: any adapter). Kernels specialized on the
    /// subgroup size (the decode kernel's subgroup-per-key layout) need a range that a
    /// workgroup holds whole; the replayer refuses an adapter outside the range.
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_subgroup_sizes, requires = "webgpu_limits")]
    pub subgroup_sizes: Option<(u32, u32)>,
    /// With `--webgpu-limits`: plan the engine's choices for a GPU (64 query rows of one
    /// invocation each, 64-invocation decode workgroups with a subgroup per key where the
    /// subgroup sizes allow), what a browser on a GPU runs, whatever adapter makes the plan.
    #[arg(long, requires = "webgpu_limits")]
    pub as_gpu: bool,
    /// GPU path to plan.
    #[arg(long, value_enum, default_value_t = PlanPath::Auto)]
    pub path: PlanPath,
    #[command(flatten)]
    pub options: OptionFlags,
    /// Intermediates to plan for too: a comma-separated list of scores, logits, probs.
    #[arg(long = "return", value_name = "LIST", value_parser = parse_returns)]
    pub returns: Option<Returns>,
    #[arg(long, value_name = "LIST", value_parser = parse_tuning, help = help!())]
    pub tuning: Option<wgattn::Tuning>,
}

/// Reads every case, plans each on one context, writes one JSON file.
pub fn plan(args: &PlanArgs) -> Result<()> {
    check_output_dir(&args.output)?;
    let cases = args
        .cases
        .iter()
        .map(|path| Case::read(path).map(|c| (path, c)))
        .collect::<Result<Vec<_>>>()?;
    let web = args.webgpu_limits.then_some(WebTarget {
        features: args.with_features.unwrap_or(wgpu::Features::empty()),
        subgroup_sizes: args.subgroup_sizes.unwrap_or(WEB_SUBGROUP_SIZES),
        as_gpu: args.as_gpu,
    });
    let ctx = context(web)?;
    if let Some(tuning) = args.tuning {
        ctx.set_tuning(tuning);
    }
    let mut planned = Vec::new();
    for (path, case) in &cases {
        let in_case = || format!("case file {}", path.display());
        planned.push(plan_case(&ctx, args, path, case).with_context(in_case)?);
    }
    let plan = plan_json(&ctx, args.webgpu_limits, planned);
    let text = serde_json::to_string(&plan).context("serializing the plan")?;
    write_atomically(&args.output, text.as_bytes())?;
    println!(
        "wrote {} case{} to {}",
        cases.len(),
        if cases.len() == 1 { "" } else { "s" },
        args.output.display()
    );
    Ok(())
}

/// Subgroup sizes a browser adapter may have (WebGPU's bounds): what a plan for any browser
/// assumes.
pub const WEB_SUBGROUP_SIZES: (u32, u32) = (
    wgpu::MINIMUM_SUBGROUP_MIN_SIZE,
    wgpu::MAXIMUM_SUBGROUP_MAX_SIZE,
);

/// The browser adapters a plan is for (`--webgpu-limits`).
#[derive(Clone, Copy, Debug)]
pub struct WebTarget {
    /// Optional features the plan may use (where this adapter has them too).
    pub features: wgpu::Features,
    /// Their smallest and largest subgroup size.
    pub subgroup_sizes: (u32, u32),
    /// GPUs: the engine's GPU choices, whatever this adapter is.
    pub as_gpu: bool,
}

impl WebTarget {
    /// Any browser adapter: no optional features, any subgroup size, this adapter's kind.
    pub const ANY: WebTarget = WebTarget {
        features: wgpu::Features::empty(),
        subgroup_sizes: WEB_SUBGROUP_SIZES,
        as_gpu: false,
    };
}

/// The context to plan on: this machine's adapter, or (`web`) a device on it with exactly
/// WebGPU's default limits and only the optional features given, whose adapter reports the
/// target's subgroup sizes (and, `as_gpu`, a discrete GPU) instead of this one's, so that
/// kernels specialized on them fit the browsers the plan is for. Outputs and scratch start
/// as NaN, so a replay shows any element a kernel skips.
pub fn context(web: Option<WebTarget>) -> Result<Context> {
    let ctx = match web {
        Some(web) => {
            let local = Context::with_limits(wgpu::Limits::default(), web.features)
                .context("a device with WebGPU's default limits")?;
            let mut info = local.adapter_info().clone();
            (info.subgroup_min_size, info.subgroup_max_size) = web.subgroup_sizes;
            if web.as_gpu {
                info.device_type = wgpu::DeviceType::DiscreteGpu;
            }
            Context::from_device(local.device().clone(), local.queue().clone(), info)
        }
        None => Context::new()?,
    };
    ctx.set_poison_outputs(true);
    Ok(ctx)
}

/// `MIN,MAX`: powers of two within WebGPU's bounds, `MIN <= MAX`.
fn parse_subgroup_sizes(text: &str) -> Result<(u32, u32), String> {
    let (lo, hi) = WEB_SUBGROUP_SIZES;
    let bad = || format!("`{text}`: expected MIN,MAX, powers of two from {lo} to {hi}, MIN <= MAX");
    let (min, max) = text.split_once(',').ok_or_else(bad)?;
    let size = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| n.is_power_of_two() && (lo..=hi).contains(n))
    };
    match (size(min), size(max)) {
        (Some(min), Some(max)) if min <= max => Ok((min, max)),
        _ => Err(bad()),
    }
}

/// The plan file around its cases.
pub fn plan_json(ctx: &Context, webgpu_limits: bool, cases: Vec<Value>) -> Value {
    let mut features = Vec::new();
    for case in &cases {
        for f in case["required_features"].as_array().into_iter().flatten() {
            if !features.contains(f) {
                features.push(f.clone());
            }
        }
    }
    let info = ctx.adapter_info();
    json!({
        "format": "wgattn-plan",
        "version": 1,
        "encoding": "base64 (RFC 4648, standard alphabet, padded) of little-endian bytes",
        "planned_on": {
            "adapter": info.name,
            "backend": format!("{:?}", info.backend),
            // What the engine planned for (`DiscreteGpu` under --as-gpu).
            "device_type": format!("{:?}", info.device_type),
        },
        "limits_kind": if webgpu_limits { "webgpu-defaults" } else { "adapter" },
        "limits": limits(ctx.limits()),
        "subgroup_sizes": [info.subgroup_min_size, info.subgroup_max_size],
        "required_features": features,
        "note": TINT_NOTE,
        "cases": cases,
    })
}

fn plan_case(ctx: &Context, args: &PlanArgs, path: &Path, case: &Case) -> Result<Value> {
    let mut options = args
        .options
        .values(args.returns)
        .or(case.options.clone())
        .resolve();
    options.path = match args.path {
        PlanPath::Auto => ExecutionPath::Auto,
        PlanPath::Staged => ExecutionPath::Staged,
        PlanPath::Fused => ExecutionPath::Fused,
    };
    let inputs = case.inputs();
    let plan = wgattn::plan::plan(ctx, &inputs, &options)?;
    let expected = wgattn::reference::masked_attention(&inputs, &options)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    case_json(&name, &plan, Some(&expected), None)
}

/// One case of the plan file, with the expected outputs when given (else results carry no
/// `expected`: a plan to time, not to check). Initial contents longer than `random_above`
/// bytes are left to the replayer as `{kind: "random", dtype}` (uniform values in [-1, 1) of
/// the case's dtype: q, k, v of a benchmark, whose values do not change the work).
pub fn case_json(
    name: &str,
    plan: &Plan,
    expected: Option<&AttentionOutput>,
    random_above: Option<usize>,
) -> Result<Value> {
    let dtype = plan
        .results
        .iter()
        .find(|r| r.name == "out")
        .map(|r| r.dtype)
        .ok_or_else(|| anyhow!("the plan has no `out`"))?;
    let buffers = plan
        .buffers
        .iter()
        .map(|b| {
            let contents = match &b.contents {
                Contents::Zeros => json!({ "kind": "zeros" }),
                Contents::Bytes(bytes) if random_above.is_some_and(|n| bytes.len() > n) => {
                    json!({ "kind": "random", "dtype": dtype.name(), "bytes": bytes.len() })
                }
                Contents::Bytes(bytes) => json!({ "kind": "bytes", "base64": base64(bytes) }),
                Contents::Fill(byte) => json!({ "kind": "fill", "byte": byte }),
            };
            Ok(json!({
                "id": b.id,
                "size": b.size,
                "usage": usage_names(b.usage)?,
                "contents": contents,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let shaders = plan
        .shaders
        .iter()
        .map(|s| {
            let workgroup_size =
                validate(&s.variant, &s.source).with_context(|| s.label.clone())?;
            let mut entry = describe(&s.variant);
            entry["entry_point"] = json!(s.entry_point);
            entry["bindings"] = bindings(&s.bindings);
            entry["workgroup_size"] = json!(workgroup_size);
            entry["source"] = json!(s.source);
            Ok(entry)
        })
        .collect::<Result<Vec<_>>>()?;
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|step| match step {
            Step::Dispatch(d) => json!({
                "op": "dispatch",
                "label": d.label,
                "shader": d.shader,
                "bindings": d.bindings.iter().enumerate().map(|(i, r)| json!({
                    "binding": i, "buffer": r.buffer, "offset": r.offset, "size": r.size,
                })).collect::<Vec<_>>(),
                "workgroups": d.workgroups,
            }),
            Step::Copy(c) => json!({
                "op": "copy",
                "src": c.src,
                "src_offset": c.src_offset,
                "dst": c.dst,
                "dst_offset": c.dst_offset,
                "size": c.size,
            }),
        })
        .collect();
    let results = plan
        .results
        .iter()
        .map(|r| {
            let mut result = json!({
                "name": r.name,
                "buffer": r.buffer,
                "offset": r.offset,
                "size": r.size,
                "dtype": r.dtype.name(),
                "shape": r.shape,
            });
            if let Some(expected) = expected {
                let want = expected_tensor(expected, r.name)?;
                let values: Vec<u8> = want
                    .to_f32_vec()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect();
                let (atol, rtol) = super::check::tolerance(want.dtype());
                result["expected"] = json!({ "dtype": "f32", "base64": base64(&values) });
                result["atol"] = json!(atol);
                result["rtol"] = json!(rtol);
            }
            Ok(result)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "name": name,
        "path": plan.path.name(),
        "dtype": dtype.name(),
        "required_features": feature_names(plan.features),
        "buffers": buffers,
        "shaders": shaders,
        "steps": steps,
        "results": results,
    }))
}

fn expected_tensor<'a>(expected: &'a AttentionOutput, name: &str) -> Result<&'a Tensor> {
    let t = match name {
        "out" => Some(&expected.out),
        "scores" => expected.scores.as_ref(),
        "logits" => expected.logits.as_ref(),
        "probs" => expected.probs.as_ref(),
        _ => None,
    };
    t.ok_or_else(|| anyhow!("the reference returned no `{name}`"))
}

/// `shader-f16`, `subgroups`, comma-separated.
fn parse_features(list: &str) -> Result<wgpu::Features, String> {
    let mut features = wgpu::Features::empty();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        features |= match name {
            "shader-f16" => wgpu::Features::SHADER_F16,
            "subgroups" => wgpu::Features::SUBGROUP,
            other => {
                return Err(format!(
                    "unknown feature `{other}`; the optional features are shader-f16, subgroups"
                ))
            }
        };
    }
    Ok(features)
}

/// WebGPU's `GPUBufferUsage` names of wgpu's usage flags (the bits are the same).
fn usage_names(usage: wgpu::BufferUsages) -> Result<Vec<&'static str>> {
    use wgpu::BufferUsages as U;
    let known = [
        (U::MAP_READ, "MAP_READ"),
        (U::MAP_WRITE, "MAP_WRITE"),
        (U::COPY_SRC, "COPY_SRC"),
        (U::COPY_DST, "COPY_DST"),
        (U::UNIFORM, "UNIFORM"),
        (U::STORAGE, "STORAGE"),
    ];
    let mut rest = usage;
    let mut names = Vec::new();
    for (flag, name) in known {
        if usage.contains(flag) {
            names.push(name);
            rest.remove(flag);
        }
    }
    if !rest.is_empty() {
        bail!("a buffer has usage {rest:?}, which plans do not describe");
    }
    Ok(names)
}

/// The limits that bound the engine's choices, under WebGPU's names.
fn limits(l: &wgpu::Limits) -> Value {
    json!({
        "maxStorageBufferBindingSize": l.max_storage_buffer_binding_size,
        "maxBufferSize": l.max_buffer_size,
        "maxUniformBufferBindingSize": l.max_uniform_buffer_binding_size,
        "maxStorageBuffersPerShaderStage": l.max_storage_buffers_per_shader_stage,
        "maxComputeWorkgroupStorageSize": l.max_compute_workgroup_storage_size,
        "maxComputeInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
        "maxComputeWorkgroupSizeX": l.max_compute_workgroup_size_x,
        "maxComputeWorkgroupSizeY": l.max_compute_workgroup_size_y,
        "maxComputeWorkgroupSizeZ": l.max_compute_workgroup_size_z,
        "maxComputeWorkgroupsPerDimension": l.max_compute_workgroups_per_dimension,
    })
}

/// Base64 with the standard alphabet and padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }
}
