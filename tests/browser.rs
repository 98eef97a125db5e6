//! The same kernels in a real browser: plans of small cases of every mask kind (staged and
//! fused, f32, f16 and bf16, WebGPU's default limits, no optional features; a subgroups plan;
//! and the decode kernel's subgroup-per-key layout, which Tint once rejected while naga ran it)
//! run by `web/` in headless Chromium (Debian's `chromium`: SwiftShader, no shader-f16,
//! subgroup size 4), which POSTs its results to a small server here. And a shader with a
//! construct Tint rejects (a constant infinity, which naga accepts) must come back as a
//! compile failure.
//!
//! Without Chromium this fails, saying how to install it, unless `WGATTN_SKIP_BROWSER=1`.
//! `WGATTN_CHROMIUM=/path/to/chrome` picks another Chromium-based browser.
//!
//! Needs the binary: `cargo test --features cli --test browser` (without the feature this file
//! is empty).
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use safetensors::Dtype;
use serde_json::Value;
use wgattn::{DType, Tensor};

use common::browser::{chromium, run_page, scratch_dir, Site};
use common::cli::{command, run_ok as wgattn, CaseFile};
use common::{random, Rng};

/// How long the page may take for all cases (SwiftShader needs a few seconds).
const PAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// A tensor of uniform values in `dtype` (f32, f16 or bf16).
fn float(rng: &mut Rng, shape: &[usize], dtype: Dtype) -> Tensor {
    let dtype = match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        _ => DType::BF16,
    };
    random(rng, shape, dtype, 1.0)
}

/// Small cases of every mask kind, in `dtype`: (name, file).
fn cases(dtype: Dtype) -> Vec<(&'static str, CaseFile)> {
    let mut rng = Rng::new(match dtype {
        Dtype::F32 => 1,
        Dtype::F16 => 2,
        _ => 3,
    });
    let (b, h, l, d) = (2, 2, 7, 8);
    let qkv = |rng: &mut Rng, hq: usize, hkv: usize, lq: usize, lk: usize| {
        CaseFile::new(
            &float(rng, &[b, hq, lq, d], dtype),
            &float(rng, &[b, hkv, lk, d], dtype),
            &float(rng, &[b, hkv, lk, d], dtype),
        )
    };
    let bools: Vec<u8> = (0..b * l * l).map(|i| (i % 3 != 1) as u8).collect();
    vec![
        ("none", qkv(&mut rng, h, h, l, l)),
        (
            "bool",
            qkv(&mut rng, h, h, l, l).raw("mask", Dtype::BOOL, &[b, 1, l, l], bools),
        ),
        ("additive", {
            let c = qkv(&mut rng, h, h, l, l);
            c.tensor("mask", &float(&mut rng, &[1, h, l, l], dtype))
        }),
        ("causal", qkv(&mut rng, h, h, l, l).meta("causal", "true")),
        (
            "window",
            qkv(&mut rng, h, h, l, l)
                .meta("window_left", "2")
                .meta("window_right", "1"),
        ),
        (
            "kv_lengths",
            qkv(&mut rng, h, h, l, l).raw(
                "kv_lengths",
                Dtype::I64,
                &[b],
                [7i64, 4].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ),
        (
            "kv_cache",
            qkv(&mut rng, h, h, 3, 3)
                .tensor("past_k", &float(&mut rng, &[b, h, 5, d], dtype))
                .tensor("past_v", &float(&mut rng, &[b, h, 5, d], dtype))
                .meta("causal", "true"),
        ),
        ("gqa", qkv(&mut rng, 4, 2, l, l).meta("causal", "true")),
        // One query row: the fused path's split-key decode kernel.
        (
            "decode",
            qkv(&mut rng, 4, 2, 1, 40).meta("window_left", "20"),
        ),
    ]
}

/// The plan files: every mask kind, staged and fused, f32, f16 and bf16, under WebGPU's default
/// limits; the f32 cases again with subgroups; the decode cases with the decode kernel's
/// subgroup-per-key layout; and one case whose shader holds a constant infinity. Returns the
/// directory and the `plan=` query.
fn write_plans() -> (PathBuf, String) {
    let dir = scratch_dir("plans");
    let mut files = Vec::new();
    for (dtype, name) in [
        (Dtype::F32, "f32"),
        (Dtype::F16, "f16"),
        (Dtype::BF16, "bf16"),
    ] {
        for (case, file) in cases(dtype) {
            let path = dir.join(format!("{case}_{name}.safetensors"));
            file.write(&path);
            files.push(path.to_str().unwrap().to_string());
        }
    }
    let f32_files: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with("_f32.safetensors"))
        .cloned()
        .collect();
    let plan = |out: &str, path: &str, extra: &[&str], files: &[String]| {
        let out = dir.join(out);
        let mut args = vec!["plan", "--webgpu-limits", "--path", path];
        args.extend_from_slice(extra);
        args.extend(["-o", out.to_str().unwrap()]);
        args.extend(files.iter().map(String::as_str));
        wgattn(&args);
    };
    plan("staged.json", "staged", &[], &files);
    plan("fused.json", "fused", &[], &files);
    plan(
        "subgroups.json",
        "auto",
        &["--with-features", "subgroups"],
        &f32_files,
    );
    // The decode kernel's subgroup-per-key layout (the GPU default), in 16-key splits, for
    // this browser's subgroups of 4: the decode and KV-cache cases of every dtype.
    let decode_files: Vec<String> = files
        .iter()
        .filter(|f| f.contains("/decode_") || f.contains("/kv_cache_"))
        .cloned()
        .collect();
    let keys = plan_with_subgroups(
        &dir.join("subgroup_keys.json"),
        &[
            "--subgroup-sizes",
            "4,4",
            "--tuning",
            "decode-layout=subgroup-keys,decode-keys-per-split=16",
        ],
        &decode_files,
    );
    // Every case as the engine plans it for a GPU (64-row tiles, 64-invocation decode
    // workgroups with a subgroup per key): what a browser on a GPU compiles and runs.
    let gpu = plan_with_subgroups(
        &dir.join("gpu_choices.json"),
        &["--as-gpu", "--subgroup-sizes", "4,4"],
        &files,
    );
    assert_eq!(gpu["planned_on"]["device_type"], "DiscreteGpu");
    for case in gpu["cases"].as_array().unwrap() {
        for shader in case["shaders"].as_array().unwrap() {
            let (kernel, tile) = (&shader["kernel"], &shader["tile"]);
            if kernel == "fused" || kernel == "fused_decode" {
                assert_eq!(tile["rows"], 64, "{}", shader["label"]);
                assert_eq!(tile["per_invocation"], 1, "{}", shader["label"]);
            }
            if kernel == "fused_decode" {
                assert_eq!(tile["lanes"], 4, "{}", shader["label"]);
            }
        }
    }
    // Every one of the decode cases runs that layout, for subgroups of at least 4.
    assert_eq!(keys["subgroup_sizes"], serde_json::json!([4, 4]));
    for case in keys["cases"].as_array().unwrap() {
        let decode = case["shaders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kernel"] == "fused_decode")
            .unwrap_or_else(|| panic!("{} has no fused_decode", case["name"]));
        assert_eq!(decode["tile"]["lanes"], 4, "{}", decode["label"]);
    }
    let probe = tint_probe(&dir.join("staged.json"));
    std::fs::write(dir.join("probe.json"), probe.to_string()).unwrap();
    let query = [
        "staged",
        "fused",
        "subgroups",
        "subgroup_keys",
        "gpu_choices",
        "probe",
    ]
    .map(|p| format!("plan=/plans/{p}.json"))
    .join("&");
    (dir, query)
}

/// `wgattn plan --webgpu-limits --path fused --with-features subgroups EXTRA... -o OUT FILES...`
/// on a primary backend whichever one the suite runs on (GL offers no subgroups, and the plan
/// would quietly leave them out); the plan, which must use subgroups.
fn plan_with_subgroups(out: &Path, extra: &[&str], files: &[String]) -> Value {
    let mut args = vec![
        "plan",
        "--webgpu-limits",
        "--path",
        "fused",
        "--with-features",
        "subgroups",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(String::as_str));
    let o = command(&args)
        .env("WGPU_BACKEND", "vulkan,metal,dx12")
        .output()
        .expect("the wgattn binary runs");
    assert!(
        o.status.success(),
        "wgattn {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let plan: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    assert_eq!(
        plan["required_features"],
        serde_json::json!(["subgroups"]),
        "planned on {}",
        plan["planned_on"]
    );
    plan
}

/// What the probe case's shader gets: a constant expression that evaluates to -inf. naga
/// leaves it to run time; Tint evaluates every constant expression and rejects it.
const TINT_REJECTED: &str =
    "\nfn wgattn_probe() -> f32 {\n    return bitcast<f32>(0xff800000u);\n}\n";

/// The first case of a plan, renamed, with [`TINT_REJECTED`] in its first shader.
fn tint_probe(plan: &Path) -> Value {
    let mut plan: Value = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    let mut case = plan["cases"][0].clone();
    case["name"] = "tint_probe".into();
    let source = format!(
        "{}{TINT_REJECTED}",
        case["shaders"][0]["source"].as_str().unwrap()
    );
    // The construct is valid for naga: only Tint's strictness can fail the case.
    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
        panic!(
            "naga should accept the probe: {}",
            e.emit_to_string(&source)
        )
    });
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .expect("naga validates the probe");
    case["shaders"][0]["source"] = source.into();
    plan["cases"] = Value::Array(vec![case]);
    plan
}

#[test]
fn every_mask_kind_passes_in_headless_chromium_and_tint_rejections_show() {
    let Some(browser) = chromium() else {
        return;
    };
    let (dir, query) = write_plans();
    let report = run_page(
        &browser,
        Site::web("index.html", &[("/plans/", &dir)]),
        &query,
        PAGE_TIMEOUT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(fatal) = report.get("fatal") {
        panic!("the page failed before running the cases: {fatal}");
    }
    eprintln!("adapter: {}", report["adapter"]);
    let cases = report["cases"].as_array().expect("the report lists cases");
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut probe = None;
    for c in cases {
        let (name, path, status) = (
            c["name"].as_str().unwrap_or("?"),
            c["path"].as_str().unwrap_or("?"),
            c["status"].as_str().unwrap_or("?"),
        );
        if name == "tint_probe" {
            probe = Some(c.clone());
        } else if status == "pass" {
            passed += 1;
        } else {
            failures.push(format!("{name} ({path}): {status}: {}", c["error"]));
        }
    }
    // 9 kinds x 3 dtypes x 2 paths, plus the 9 f32 cases with subgroups, plus the 2 decode
    // kinds x 3 dtypes with a subgroup per key, plus every kind and dtype with GPU choices.
    let want = 9 * 3 * 2 + 9 + 2 * 3 + 9 * 3;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed in the browser:\n{}",
        failures.len(),
        cases.len() - 1,
        failures.join("\n")
    );
    assert_eq!(passed, want, "cases that passed in the browser");
    let probe = probe.expect("the Tint probe case ran");
    assert_eq!(
        probe["status"], "compile_error",
        "a constant infinity must fail to compile in Tint: {probe}"
    );
    let message = probe["error"].as_str().unwrap_or("");
    assert!(
        message.contains("cannot be represented"),
        "the compile error should be Tint's: {message}"
    );
}

/// The page's timing mode on the smoke suite's benchmark plan: every case it was given runs,
/// and the report it builds is one `wgattn bench --compare` reads.
#[test]
fn the_timing_mode_writes_a_report_bench_compare_reads() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = scratch_dir("bench");
    let plan_path = dir.join("bench.json");
    wgattn(&[
        "bench",
        "--suite",
        "smoke",
        "--emit-plan",
        plan_path.to_str().unwrap(),
        "--webgpu-limits",
    ]);
    let plan: Value = serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    let planned = plan["cases"].as_array().unwrap().len();
    assert!(planned > 0, "the smoke plan has cases");
    let report = run_page(
        &browser,
        Site::web("index.html", &[("/plans/", &dir)]),
        "plan=/plans/bench.json&mode=time",
        PAGE_TIMEOUT,
    );
    if let Some(fatal) = report.get("fatal") {
        panic!("the page failed before timing the cases: {fatal}");
    }
    let bench = &report["bench_report"];
    let cases = bench["cases"].as_array().expect("the page built a report");
    let ran: Vec<&Value> = cases.iter().filter(|c| c["status"] == "ok").collect();
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c["status"] == "error" && c.get("median_ms").is_none())
        .filter(|c| {
            plan["cases"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == c["id"])
        })
        .map(|c| format!("{}: {}", c["id"], c["error"]))
        .collect();
    assert!(
        failed.is_empty(),
        "cases failed in the browser:\n{}",
        failed.join("\n")
    );
    assert_eq!(ran.len(), planned, "every planned case was timed");
    for c in &ran {
        let median = c["median_ms"].as_f64().unwrap();
        assert!(
            median > 0.0 && median.is_finite(),
            "{}: median {median}",
            c["id"]
        );
    }
    let path = dir.join("browser.json");
    std::fs::write(&path, bench.to_string()).unwrap();
    let table = wgattn(&[
        "bench",
        "--compare",
        path.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let id = ran[0]["id"].as_str().unwrap();
    assert!(table.contains(id), "the comparison lists {id}:\n{table}");
    // The page drew its heatmap case (checked against the reference too): 48 x 48 positions
    // under causal, a window of 16 and two documents (positions 0-29 and 30-47).
    let heat = &report["heatmap"];
    assert_eq!(heat["status"], "pass", "heatmap case: {heat}");
    let allowed = (0..48i64)
        .flat_map(|i| (0..48i64).map(move |j| (i, j)))
        .filter(|&(i, j)| j <= i && j >= i - 16 && (i >= 30) == (j >= 30))
        .count() as u64;
    assert_eq!(heat["masked"].as_u64(), Some(48 * 48 - allowed), "{heat}");
    assert!(heat["max"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plan specialized on subgroup sizes the browser's adapter does not have (8, where
/// SwiftShader's are 4) is refused before anything runs, with both ranges named, instead of
/// computing NaN (the decode kernel's guard) or garbage.
#[test]
fn a_plan_for_other_subgroup_sizes_is_refused() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = scratch_dir("subgroup_sizes");
    let (_, file) = cases(Dtype::F32)
        .into_iter()
        .find(|(name, _)| *name == "decode")
        .unwrap();
    let case = dir.join("decode.safetensors");
    file.write(&case);
    plan_with_subgroups(
        &dir.join("eight.json"),
        &[
            "--subgroup-sizes",
            "8,8",
            "--tuning",
            "decode-layout=subgroup-keys",
        ],
        &[case.to_str().unwrap().to_string()],
    );
    let report = run_page(
        &browser,
        Site::web("index.html", &[("/plans/", &dir)]),
        "plan=/plans/eight.json",
        PAGE_TIMEOUT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let fatal = report["fatal"].as_str().unwrap_or_default();
    assert!(
        fatal.contains("subgroup sizes are 4 to 4; this plan is for 8 to 8"),
        "the page should refuse the plan: {report}"
    );
}
