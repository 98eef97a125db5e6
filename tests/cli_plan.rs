//! `wgattn shaders --emit` and `wgattn plan`: the emitted shaders are what naga reads, and a
//! plan replayed natively with plain wgpu (buffers, shaders, bind groups and steps from the
//! JSON alone) gives the expected outputs the plan carries, so a plan is complete without a
//! browser.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use wgattn::kernels::Variant;

fn wgattn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgattn"))
        .args(args)
        .output()
        .expect("the wgattn binary runs")
}

fn ok(args: &[&str]) {
    let o = wgattn(args);
    assert!(
        o.status.success(),
        "wgattn {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-cli-plan-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn shaders_emit_writes_every_variant_with_a_manifest_naga_reads() {
    let dir = temp_dir("emit");
    ok(&["shaders", "--emit", dir.to_str().unwrap()]);
    let manifest = read_json(&dir.join("manifest.json"));
    let shaders = manifest["shaders"].as_array().expect("a list of shaders");
    let want = Variant::all().len();
    assert_eq!(shaders.len(), want, "one manifest entry per variant");
    assert_eq!(manifest["count"], want);
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wgsl"))
        })
        .count();
    assert_eq!(files, want, "one .wgsl file per variant");
    for s in shaders {
        let file = s["file"].as_str().unwrap();
        assert!(
            file.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{file}: unsafe characters"
        );
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&source)));
        let main = module
            .entry_points
            .iter()
            .find(|e| e.name == s["entry_point"].as_str().unwrap())
            .unwrap_or_else(|| panic!("{file}: no entry point {}", s["entry_point"]));
        assert_eq!(s["workgroup_size"], serde_json::json!(main.workgroup_size));
        let bindings = s["bindings"].as_array().unwrap();
        let declared = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.binding.is_some())
            .count();
        assert_eq!(bindings.len(), declared, "{file}: bind group layout");
        for f in s["features"].as_array().unwrap() {
            assert!(matches!(f.as_str(), Some("shader-f16" | "subgroups")));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bytes of standard padded base64.
fn from_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

fn decode(bytes: &[u8], dtype: &str) -> Vec<f32> {
    match dtype {
        "f32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "f16" => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "bf16" => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => panic!("unknown dtype {other}"),
    }
}

fn usage(names: &Value) -> wgpu::BufferUsages {
    names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| match n.as_str().unwrap() {
            "MAP_READ" => wgpu::BufferUsages::MAP_READ,
            "MAP_WRITE" => wgpu::BufferUsages::MAP_WRITE,
            "COPY_SRC" => wgpu::BufferUsages::COPY_SRC,
            "COPY_DST" => wgpu::BufferUsages::COPY_DST,
            "UNIFORM" => wgpu::BufferUsages::UNIFORM,
            "STORAGE" => wgpu::BufferUsages::STORAGE,
            other => panic!("unknown usage {other}"),
        })
        .fold(wgpu::BufferUsages::empty(), |a, b| a | b)
}

/// Runs one case of a plan with plain wgpu; returns each result's values.
fn replay(device: &wgpu::Device, queue: &wgpu::Queue, case: &Value) -> Vec<(String, Vec<f32>)> {
    let n = |v: &Value| v.as_u64().unwrap();
    let buffers: Vec<wgpu::Buffer> = case["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: n(&b["size"]),
                usage: usage(&b["usage"]),
                mapped_at_creation: false,
            });
            let c = &b["contents"];
            let bytes = match c["kind"].as_str().unwrap() {
                "bytes" => from_base64(c["base64"].as_str().unwrap()),
                "fill" => vec![n(&c["byte"]) as u8; n(&b["size"]) as usize],
                _ => Vec::new(),
            };
            if !bytes.is_empty() {
                let mut padded = bytes;
                padded.resize(padded.len().next_multiple_of(4), 0);
                queue.write_buffer(&buffer, 0, &padded);
            }
            buffer
        })
        .collect();
    let pipelines: Vec<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> = case["shaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(s["source"].as_str().unwrap().into()),
            });
            let entries: Vec<_> = s["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| wgpu::BindGroupLayoutEntry {
                    binding: n(&b["binding"]) as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match b["type"].as_str().unwrap() {
                            "uniform" => wgpu::BufferBindingType::Uniform,
                            "read-only-storage" => {
                                wgpu::BufferBindingType::Storage { read_only: true }
                            }
                            _ => wgpu::BufferBindingType::Storage { read_only: false },
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: Some(
                    &device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    }),
                ),
                module: &module,
                entry_point: Some(s["entry_point"].as_str().unwrap()),
                compilation_options: Default::default(),
                cache: None,
            });
            (pipeline, layout)
        })
        .collect();
    let mut encoder = device.create_command_encoder(&Default::default());
    for step in case["steps"].as_array().unwrap() {
        if step["op"] == "copy" {
            encoder.copy_buffer_to_buffer(
                &buffers[n(&step["src"]) as usize],
                n(&step["src_offset"]),
                &buffers[n(&step["dst"]) as usize],
                n(&step["dst_offset"]),
                n(&step["size"]),
            );
            continue;
        }
        let (pipeline, layout) = &pipelines[n(&step["shader"]) as usize];
        let entries: Vec<_> = step["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| wgpu::BindGroupEntry {
                binding: n(&r["binding"]) as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffers[n(&r["buffer"]) as usize],
                    offset: n(&r["offset"]),
                    size: std::num::NonZeroU64::new(n(&r["size"])),
                }),
            })
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &group, &[]);
        let w: Vec<u32> = step["workgroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| n(x) as u32)
            .collect();
        pass.dispatch_workgroups(w[0], w[1], w[2]);
    }
    queue.submit([encoder.finish()]);
    case["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let buffer = &buffers[n(&r["buffer"]) as usize];
            buffer.map_async(wgpu::MapMode::Read, .., |res| res.unwrap());
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            let (offset, size) = (n(&r["offset"]) as usize, n(&r["size"]) as usize);
            let values = decode(
                &buffer.get_mapped_range(..).unwrap()[offset..offset + size],
                r["dtype"].as_str().unwrap(),
            );
            buffer.unmap();
            (r["name"].as_str().unwrap().to_string(), values)
        })
        .collect()
}

/// The example case file's plan on each path, replayed natively: every result within the
/// plan's tolerance of the expected values the plan carries.
#[test]
fn a_plan_replayed_with_plain_wgpu_gives_its_expected_outputs() {
    let dir = temp_dir("replay");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/example.safetensors");
    let ctx = common::ctx();
    for (path, extra) in [("staged", &["--return", "probs"][..]), ("fused", &[][..])] {
        let out = dir.join(format!("{path}.json"));
        let mut args = vec![
            "plan",
            "--webgpu-limits",
            "--path",
            path,
            "-o",
            out.to_str().unwrap(),
            case.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&args);
        let plan = read_json(&out);
        assert_eq!(plan["format"], "wgattn-plan");
        assert_eq!(plan["limits_kind"], "webgpu-defaults");
        assert_eq!(plan["required_features"], serde_json::json!([]));
        let c = &plan["cases"][0];
        assert_eq!(c["path"], path);
        let got = replay(ctx.device(), ctx.queue(), c);
        let want_names: &[&str] = if path == "staged" {
            &["out", "probs"]
        } else {
            &["out"]
        };
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, want_names);
        for ((name, values), r) in got.iter().zip(c["results"].as_array().unwrap()) {
            let want = decode(
                &from_base64(r["expected"]["base64"].as_str().unwrap()),
                "f32",
            );
            let (atol, rtol) = (r["atol"].as_f64().unwrap(), r["rtol"].as_f64().unwrap());
            assert_eq!(values.len(), want.len(), "{path} {name}: element count");
            let bad: Vec<usize> = (0..want.len())
                .filter(|&i| {
                    let (g, w) = (values[i] as f64, want[i] as f64);
                    !((g - w).abs() <= atol + rtol * w.abs() || g == w)
                })
                .collect();
            assert!(
                bad.is_empty(),
                "{path} {name}: {} of {} differ; first at {}: got {}, want {}",
                bad.len(),
                want.len(),
                bad[0],
                values[bad[0]],
                want[bad[0]]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_errors_are_one_line_and_write_nothing() {
    let dir = temp_dir("errors");
    let out = dir.join("plan.json");
    let o = wgattn(&["plan", "missing.safetensors", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("missing.safetensors"), "{err}");
    let o = wgattn(&[
        "plan",
        "--with-features",
        "subgroups",
        "x.safetensors",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "--with-features needs --webgpu-limits");
    assert!(!out.exists());
    for (sizes, words) in [
        ("3,8", "powers of two from 4 to 128"),
        ("8,4", "MIN <= MAX"),
        ("4", "expected MIN,MAX"),
        ("4,256", "powers of two from 4 to 128"),
    ] {
        let o = wgattn(&[
            "plan",
            "--webgpu-limits",
            "--subgroup-sizes",
            sizes,
            "x.safetensors",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "--subgroup-sizes {sizes}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(words), "--subgroup-sizes {sizes}: {err}");
    }
    let o = wgattn(&[
        "plan",
        "--subgroup-sizes",
        "4,4",
        "x.safetensors",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "--subgroup-sizes needs --webgpu-limits"
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plan for browsers assumes any subgroup size WebGPU allows unless told the range, so the
/// decode kernel's subgroup-per-key layout, which is specialized on the smallest size and needs
/// whole subgroups in a workgroup, is planned only for a range given with --subgroup-sizes.
#[test]
fn web_plans_specialize_on_subgroup_sizes_only_when_given() {
    let dir = temp_dir("subgroup_sizes");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/example.safetensors");
    let lanes = |sizes: Option<&str>| {
        let out = dir.join("plan.json");
        let mut args = vec![
            "plan",
            "--webgpu-limits",
            "--with-features",
            "subgroups",
            "--path",
            "fused",
            "--tuning",
            "decode-layout=subgroup-keys,decode-max-q=64",
            "-o",
            out.to_str().unwrap(),
            case.to_str().unwrap(),
        ];
        if let Some(sizes) = sizes {
            args.extend(["--subgroup-sizes", sizes]);
        }
        ok(&args);
        let plan = read_json(&out);
        let decode = plan["cases"][0]["shaders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kernel"] == "fused_decode")
            .cloned()
            .expect("decode-max-q=64 plans the decode kernel");
        (
            plan["subgroup_sizes"].clone(),
            decode["tile"]["lanes"].clone(),
        )
    };
    let subgroups = common::ctx().features().contains(wgpu::Features::SUBGROUP);
    assert_eq!(lanes(None), (serde_json::json!([4, 128]), 0.into()));
    let (sizes, got) = lanes(Some("4,8"));
    assert_eq!(sizes, serde_json::json!([4, 8]));
    assert_eq!(got, if subgroups { 4 } else { 0 });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every function-scope `var` has an initializer. WGSL zeroes one without an initializer
/// each time its declaration runs, but Chromium (Tint on SwiftShader) kept the previous loop
/// iteration's value in `fused`'s per-group score array, which gave wrong results for every
/// row that sees more than four keys; `tests/browser.rs` caught it. Explicit initializers
/// work on every compiler.
#[test]
fn every_function_var_has_an_initializer() {
    for variant in Variant::all() {
        let source = variant.source().unwrap();
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("").trim();
            let function_scope = line.starts_with(char::is_whitespace);
            if function_scope && code.starts_with("var ") && !code.contains('=') {
                panic!(
                    "{}: line {}: `{code}` needs an initializer",
                    variant.label(),
                    n + 1
                );
            }
        }
    }
}
