//! `wgattn info`: the adapter the engine picks and what it offers.

use anyhow::Result;
use wgattn::{Context, DType};

/// Prints the adapter (honoring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`), the
/// features the engine uses and the limits that bound problem sizes.
pub fn info() -> Result<()> {
    let ctx = Context::new()?;
    let a = ctx.adapter_info();
    let f = ctx.features();
    let l = ctx.limits();
    let sf = ctx.shader_features();
    let mapped = ctx.uses_mapped_uploads();
    let yes_no = |feature| if f.contains(feature) { "yes" } else { "no" };
    let rows: Vec<(&str, String)> = vec![
        ("adapter", a.name.clone()),
        ("backend", format!("{:?}", a.backend)),
        ("device type", format!("{:?}", a.device_type)),
        ("driver", a.driver.clone()),
        ("driver info", a.driver_info.clone()),
        ("", String::new()),
        ("SHADER_F16", yes_no(wgpu::Features::SHADER_F16).into()),
        ("SUBGROUP", yes_no(wgpu::Features::SUBGROUP).into()),
        (
            "TIMESTAMP_QUERY",
            yes_no(wgpu::Features::TIMESTAMP_QUERY).into(),
        ),
        (
            "subgroup size",
            format!("{} to {}", a.subgroup_min_size, a.subgroup_max_size),
        ),
        ("", String::new()),
        (
            "f16 loads (fused kernels)",
            if sf.f16 {
                "shader-f16 (hardware conversion)"
            } else {
                "u32 words, integer decoding"
            }
            .into(),
        ),
        (
            "reductions (fused_decode, softmax)",
            if sf.subgroups {
                "subgroup operations, then workgroup memory"
            } else {
                "workgroup memory"
            }
            .into(),
        ),
        (
            "decode keys (fused_decode)",
            match (
                ctx.decode_subgroup_keys(DType::F32, 64, 64),
                ctx.decode_subgroup_keys(DType::F32, 256, 256),
            ) {
                (true, _) => "a subgroup per key (GPU default, or as tuned)",
                (false, true) => {
                    "one per invocation, a subgroup per key from D + Dv = 256 in f16/bf16 \
                     and past it in f32; up to 4 query rows of a GQA group or query block \
                     sharing each key (CPU default)"
                }
                (false, false) => "one per invocation (no subgroups, or as tuned)",
            }
            .into(),
        ),
        (
            "loops (fused, fused_decode, softmax)",
            if sf.opaque_loops {
                "trip counts opaque to the driver (not unrolled)"
            } else {
                "constant trip counts (the driver may unroll)"
            }
            .into(),
        ),
        (
            "loop trips per invocation",
            match ctx.loop_trip_limit() {
                Some(n) => format!(
                    "at most {n} (the driver ends loops past it: key splits kept short, \
                     staged rows bounded)"
                ),
                None => "unbounded".into(),
            },
        ),
        (
            "uploads",
            if mapped {
                "mapped storage buffers (unified memory)"
            } else {
                "queue writes (staging copy)"
            }
            .into(),
        ),
        ("", String::new()),
        (
            "max_storage_buffer_binding_size",
            bytes(l.max_storage_buffer_binding_size),
        ),
        ("max_buffer_size", bytes(l.max_buffer_size)),
        (
            "max_compute_workgroup_storage_size",
            bytes(l.max_compute_workgroup_storage_size.into()),
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup.to_string(),
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension.to_string(),
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x.to_string(),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        if key.is_empty() {
            println!();
        } else {
            println!(
                "{key:<width$}  {}",
                if value.is_empty() { "-" } else { &value }
            );
        }
    }
    Ok(())
}

/// A byte count, with its binary-prefixed size when that is shorter to read.
fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match UNITS.iter().find(|(_, size)| n >= *size) {
        Some((unit, size)) => format!("{n} ({:.1} {unit})", n as f64 / *size as f64),
        None => n.to_string(),
    }
}
