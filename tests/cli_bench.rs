//! `wgattn bench`, end to end: tiny shapes through the binary, the table and the `--json` line
//! checked field by field, and the failures (bad arguments, a staged request over the device's
//! binding limit) checked for one `error:` line and, with `--json`, an error object.
//!
//! Needs the binary: `cargo test --features cli --test cli_bench`.
#![cfg(feature = "cli")]

mod common;

use std::process::Output;

use serde_json::{json, Map, Value};

use common::cli::{assert_fails, run_ok, text, wgattn};

/// A tiny shape: B = 1, H = 2, L = 16, D = 8, two timed calls.
const TINY: [&str; 10] = [
    "--batch",
    "1",
    "--q-heads",
    "2",
    "--q-len",
    "16",
    "--head-dim",
    "8",
    "--iters",
    "2",
];

/// Keys every successful `--json` object has.
const RESULT_KEYS: [&str; 20] = [
    "path",
    "adapter",
    "backend",
    "batch",
    "q_heads",
    "kv_heads",
    "q_len",
    "kv_len",
    "head_dim",
    "v_dim",
    "dtype",
    "causal",
    "window_left",
    "window_right",
    "iters",
    "median_ms",
    "min_ms",
    "max_ms",
    "gflops",
    "gpu_bytes",
];

/// Keys every `--json` error object has.
const ERROR_KEYS: [&str; 13] = [
    "path",
    "batch",
    "q_heads",
    "kv_heads",
    "q_len",
    "kv_len",
    "head_dim",
    "v_dim",
    "dtype",
    "causal",
    "window_left",
    "window_right",
    "error",
];

/// `wgattn bench --path PATH` on the tiny shape plus `extra`, asserting success; its stdout.
fn bench_ok(path: &str, extra: &[&str]) -> String {
    let mut args = vec!["bench", "--path", path];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// [`bench_ok`] with `--json`: the one object it prints.
fn bench_json(path: &str, extra: &[&str]) -> Map<String, Value> {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let stdout = bench_ok(path, &extra);
    let object = one_object(&stdout);
    for key in RESULT_KEYS {
        assert!(object.contains_key(key), "no {key:?} in {stdout}");
    }
    assert_eq!(object["path"], json!(path));
    for key in ["median_ms", "min_ms", "max_ms", "gflops"] {
        assert!(object[key].num() > 0.0, "{key} is not positive: {stdout}");
    }
    assert!(object["min_ms"].num() <= object["median_ms"].num());
    assert!(object["median_ms"].num() <= object["max_ms"].num());
    object
}

/// Asserts stdout is one error object with the request's fields and an `error` mentioning
/// every one of `expect`.
fn assert_error_json(o: &Output, expect: &[&str]) -> Map<String, Value> {
    let stdout = text(&o.stdout);
    let object = one_object(&stdout);
    for key in ERROR_KEYS {
        assert!(object.contains_key(key), "no {key:?} in {stdout}");
    }
    let Some(error) = object["error"].as_str() else {
        panic!("error is not a string: {stdout}");
    };
    for word in expect {
        assert!(
            error.contains(word),
            "error should mention {word:?}: {stdout}"
        );
    }
    object
}

// ---------------------------------------------------------------------------------------------
// Reading the line.

/// Parses stdout as exactly one line holding one JSON object.
fn one_object(stdout: &str) -> Map<String, Value> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stdout: {stdout:?}");
    match serde_json::from_str(lines[0]) {
        Ok(Value::Object(object)) => object,
        other => panic!("not one JSON object ({other:?}): {}", lines[0]),
    }
}

/// A JSON number's value.
trait Num {
    fn num(&self) -> f64;
}

impl Num for Value {
    fn num(&self) -> f64 {
        self.as_f64()
            .unwrap_or_else(|| panic!("expected a number, got {self}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Successful runs.

#[test]
fn plain_output_names_every_field() {
    let stdout = bench_ok("staged", &[]);
    for field in [
        "path",
        "staged",
        "adapter",
        "shape",
        "B 1, Hq 2, Hkv 2, Lq 16, Lt 16, D 8, Dv 8, f32",
        "mask",
        "none",
        "median ms",
        "GPU median ms",
        "GPU kernels ms",
        "qk_scores",
        "min ms",
        "max ms",
        "GFLOP/s",
        "peak GPU MiB",
    ] {
        assert!(stdout.contains(field), "no {field:?} in:\n{stdout}");
    }
}

#[test]
fn json_reference_path_uses_no_gpu_memory() {
    let o = bench_json("reference", &[]);
    assert_eq!(o["gpu_bytes"].num(), 0.0);
    assert!(!o.contains_key("gpu_median_ms"), "{o:?}");
}

#[test]
fn json_staged_path_reports_peak_gpu_memory() {
    let o = bench_json("staged", &[]);
    assert!(o["gpu_bytes"].num() > 0.0);
    // lavapipe and llvmpipe's GL offer timestamp queries: the kernels' device time, within
    // the call's.
    let gpu = o["gpu_median_ms"].num();
    assert!(gpu > 0.0 && gpu <= o["max_ms"].num(), "{o:?}");
    assert!(
        matches!(o["backend"].as_str(), Some(b) if !b.is_empty() && b != "none"),
        "{o:?}"
    );
    let names: Vec<String> = kernels(&o).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        ["qk_scores", "apply_mask", "softmax", "attend_values"]
    );
}

/// `gpu_kernels`: each kernel's name and median device time, which is no longer than the
/// slowest call.
fn kernels(o: &Map<String, Value>) -> Vec<(String, f64)> {
    let Some(items) = o["gpu_kernels"].as_array() else {
        panic!("gpu_kernels is not an array: {o:?}");
    };
    items
        .iter()
        .map(|k| {
            let Some(name) = k["kernel"].as_str() else {
                panic!("a kernel without a name: {k:?}");
            };
            let t = k["median_ms"].num();
            assert!(
                t >= 0.0 && t <= o["max_ms"].num(),
                "{name}: {t} ms in {o:?}"
            );
            (name.to_string(), t)
        })
        .collect()
}

#[test]
fn json_fused_path_reports_peak_gpu_memory() {
    // The prefill kernel for 16 query rows on every adapter (CPU adapters would take the
    // decode kernel for so short a block).
    let o = bench_json("fused", &["--tuning", "decode-max-q=4"]);
    assert!(o["gpu_bytes"].num() > 0.0);
    let gpu = o["gpu_median_ms"].num();
    assert!(gpu > 0.0 && gpu <= o["max_ms"].num(), "{o:?}");
    let names: Vec<String> = kernels(&o).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["fused"], "16 query rows: the prefill kernel alone");
    let decode = [
        "bench",
        "--path",
        "fused",
        "--q-heads",
        "2",
        "--q-len",
        "1",
        "--kv-len",
        "3000",
        "--head-dim",
        "8",
        "--iters",
        "2",
        "--json",
    ];
    let o = one_object(&run_ok(&decode));
    let names: Vec<String> = kernels(&o).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        ["fused_decode", "fused_combine"],
        "one query row over split keys"
    );
}

#[test]
fn json_echoes_the_shape_with_defaults_filled_in() {
    let o = bench_json("fused", &["--v-dim", "4", "--kv-len", "9"]);
    for (key, want) in [
        ("batch", 1.0),
        ("q_heads", 2.0),
        ("kv_heads", 2.0),
        ("q_len", 16.0),
        ("kv_len", 9.0),
        ("head_dim", 8.0),
        ("v_dim", 4.0),
        ("iters", 2.0),
        ("window_left", -1.0),
        ("window_right", -1.0),
    ] {
        assert_eq!(o[key].num(), want, "{key}");
    }
    assert_eq!(o["dtype"], json!("f32"));
    assert_eq!(o["causal"], Value::Bool(false));
}

#[test]
fn causal_and_window_flags_are_accepted_on_every_path() {
    for path in ["reference", "staged", "fused"] {
        let o = bench_json(
            path,
            &["--causal", "--window-left", "4", "--window-right", "0"],
        );
        assert_eq!(o["causal"], Value::Bool(true), "{path}");
        assert_eq!(o["window_left"].num(), 4.0, "{path}");
        assert_eq!(o["window_right"].num(), 0.0, "{path}");
    }
    let stdout = bench_ok("fused", &["--causal", "--window-left", "4"]);
    assert!(
        stdout.contains("causal + window (left 4, right unbounded)"),
        "{stdout}"
    );
}

#[test]
fn gqa_and_half_precision_run() {
    let o = bench_json("fused", &["--kv-heads", "1", "--dtype", "f16"]);
    assert_eq!(o["kv_heads"].num(), 1.0);
    assert_eq!(o["dtype"], json!("f16"));
    let o = bench_json("staged", &["--kv-heads", "1", "--dtype", "bf16"]);
    assert_eq!(o["dtype"], json!("bf16"));
}

/// `--decode-layout` picks the decode kernel's layout, and the JSON names the variant that ran:
/// `lanes8` (a subgroup per key) only where asked for and the adapter has subgroups, never
/// for `key-per-invocation`, and by default on CPU adapters (lavapipe, llvmpipe) only for
/// wide heads (`D + Dv` past 256 in f32, from 256 in f16/bf16), where either layout takes up
/// to four query rows of a GQA group per workgroup (`wg16x4`).
#[test]
fn decode_layout_is_chosen_and_reported() {
    let variant_with = |layout: &str, head_dim: &str, dtype: &str, heads: [&str; 2]| {
        let o = one_object(&run_ok(&[
            "bench",
            "--q-heads",
            heads[0],
            "--kv-heads",
            heads[1],
            "--path",
            "fused",
            "--q-len",
            "1",
            "--kv-len",
            "300",
            "--head-dim",
            head_dim,
            "--dtype",
            dtype,
            "--iters",
            "2",
            "--decode-layout",
            layout,
            "--json",
        ]));
        let kernels = o["gpu_kernels"].as_array().expect("gpu_kernels");
        let variants = kernels[0]["variants"].as_array().expect("variants");
        assert_eq!(variants.len(), 1, "{o:?}");
        let v = variants[0].as_str().expect("a label").to_string();
        assert!(
            v.starts_with(&format!("wgattn fused_decode {dtype} ")),
            "{v}"
        );
        (v, o["adapter"].as_str().unwrap_or_default().to_string())
    };
    let variant_of = |layout: &str, head_dim: &str, dtype: &str| {
        variant_with(layout, head_dim, dtype, ["2", "2"])
    };
    let variant = |layout: &str| variant_of(layout, "64", "f32");
    let (subgroup, adapter) = variant("subgroup-keys");
    assert_eq!(
        subgroup.contains(" lanes"),
        subgroup.ends_with(" subgroups"),
        "a subgroup per key wherever subgroups are used: {subgroup}"
    );
    let (per_invocation, _) = variant("key-per-invocation");
    assert!(!per_invocation.contains(" lanes"), "{per_invocation}");
    let (auto, _) = variant("auto");
    if adapter.contains("llvmpipe") {
        assert_eq!(auto, per_invocation, "CPU adapters' default");
        // Wide heads take a subgroup per key there, wherever subgroups are used.
        let with_subgroups = subgroup.ends_with(" subgroups");
        for (d, dtype, wide) in [
            ("128", "f32", false),
            ("128", "f16", true),
            ("256", "f32", true),
        ] {
            let (auto, _) = variant_of("auto", d, dtype);
            assert_eq!(auto.contains(" lanes"), wide && with_subgroups, "{auto}");
            assert!(
                auto.contains(" wg16x1 "),
                "one query row per workgroup: {auto}"
            );
        }
        // Four query heads to a key/value head: the four rows in one workgroup, in the same
        // layout as one row would take.
        for (d, dtype, wide) in [
            ("128", "f32", false),
            ("128", "f16", true),
            ("64", "bf16", false),
            ("256", "f32", true),
        ] {
            let (gqa, _) = variant_with("auto", d, dtype, ["8", "2"]);
            assert!(gqa.contains(" wg16x4 "), "{gqa}");
            assert_eq!(gqa.contains(" lanes"), wide && with_subgroups, "{gqa}");
        }
    }
    let o = wgattn(&["bench", "--path", "fused", "--decode-layout", "diagonal"]);
    assert_fails(&o, &["diagonal"]);
}

/// `--tuning` times the variant it names (the JSON's variants say so), `--decode-layout`
/// applies on top of it, and a bad list is a usage error.
#[test]
fn tuning_picks_the_variant_timed() {
    let variants = |extra: &[&str]| {
        let mut args = vec![
            "bench", "--path", "fused", "--q-len", "3", "--kv-len", "300", "--iters", "2", "--json",
        ];
        args.extend_from_slice(extra);
        let o = one_object(&run_ok(&args));
        let kernels = o["gpu_kernels"].as_array().expect("gpu_kernels").clone();
        kernels[0]["variants"][0]
            .as_str()
            .expect("a label")
            .to_string()
    };
    let prefill = variants(&[
        "--tuning",
        "decode-max-q=1,keys-per-tile=16,rows-per-invocation=2",
    ]);
    assert!(prefill.starts_with("wgattn fused f32 "), "{prefill}");
    assert!(prefill.contains("x2 k16 "), "{prefill}");
    let decode = variants(&[
        "--tuning",
        "decode-invocations=32,decode-layout=subgroup-keys",
        "--decode-layout",
        "key-per-invocation",
    ]);
    // (A key per invocation takes the query block's three rows in one workgroup.)
    assert!(
        decode.starts_with("wgattn fused_decode f32 nomask wg32x3 "),
        "{decode}"
    );
    assert!(
        !decode.contains(" lanes"),
        "--decode-layout applies on top: {decode}"
    );
    let o = wgattn(&["bench", "--path", "fused", "--tuning", "keys-per-tile=x"]);
    assert_fails(&o, &["keys-per-tile=x", "whole number"]);
}

#[test]
fn optional_features_can_be_left_unused() {
    for path in ["staged", "fused"] {
        let o = bench_json(
            path,
            &[
                "--dtype",
                "f16",
                "--kv-len",
                "300",
                "--without",
                "shader-f16,subgroups,mapped-uploads",
            ],
        );
        assert_eq!(o["path"], json!(path));
    }
    let o = wgattn(&["bench", "--path", "fused", "--without", "tensor-cores"]);
    assert_fails(&o, &["tensor-cores"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn resident_inputs_are_timed_on_both_gpu_paths() {
    // TINY in f32: q, k, v and out are 2 x 16 x 8 x 4 = 1 KiB each; the staged scores 2 KiB.
    for (path, at_least) in [("staged", 6144.0), ("fused", 4096.0)] {
        // The prefill kernel for 16 query rows (below 4 query rows the decode kernel).
        let o = bench_json(path, &["--resident", "--tuning", "decode-max-q=4"]);
        assert_eq!(o["resident"], json!(true), "{o:?}");
        assert!(o["median_ms"].num() > 0.0, "{o:?}");
        assert!(o["gpu_bytes"].num() >= at_least, "{path}: {o:?}");
        // Device time from the recording's own timestamps (RecordedAttention::gpu_time).
        let gpu = o["gpu_median_ms"].num();
        assert!(gpu > 0.0 && gpu <= o["max_ms"].num(), "{o:?}");
        let names: Vec<String> = kernels(&o).into_iter().map(|(k, _)| k).collect();
        let want: &[&str] = match path {
            "staged" => &["qk_scores", "apply_mask", "softmax", "attend_values"],
            _ => &["fused"],
        };
        assert_eq!(names, want, "{o:?}");
        let plain = bench_ok(path, &["--resident"]);
        assert!(plain.contains("resident: uploaded once"), "{plain}");
    }
    assert!(!bench_json("fused", &[]).contains_key("resident"));
    let o = wgattn(&[&["bench", "--path", "reference", "--resident"][..], &TINY].concat());
    assert_fails(&o, &["--resident", "staged or fused"]);
    let o = wgattn(
        &[
            &[
                "bench",
                "--path",
                "fused",
                "--resident",
                "--causal",
                "--reuse-block-mask",
            ][..],
            &TINY,
        ]
        .concat(),
    );
    assert_fails(&o, &["--resident", "block mask"]);
    // The scores' binding limit holds for a recorded staged call too.
    let o = wgattn(&[&OVER_LIMIT[..], &["--resident"]].concat());
    assert_fails(&o, &["exceeds limit", "max_storage_buffer_binding_size"]);
}

#[test]
fn check_holds_the_timed_path_to_the_reference() {
    // Both GPU paths, both kernels of the fused one (16 rows: the decode kernel on CPU
    // adapters, the prefill kernel when forced), f32 and f16, causal.
    for (path, extra) in [
        ("staged", &[][..]),
        ("fused", &[][..]),
        (
            "fused",
            &["--tuning", "decode-max-q=4", "--dtype", "f16"][..],
        ),
    ] {
        let o = bench_json(path, &[extra, &["--check", "--causal"]].concat());
        assert_eq!(o["check_passed"], json!(true), "{o:?}");
        assert_eq!(o["check_violations"], json!(0), "{o:?}");
        // TINY's out: 1 x 2 x 16 x 8 elements.
        assert_eq!(o["check_elements"], json!(256), "{o:?}");
        let err = o["check_max_abs_error"].num();
        assert!(err >= 0.0 && err <= o["check_atol"].num(), "{o:?}");
    }
    let plain = bench_ok("fused", &["--check"]);
    assert!(
        plain.contains("vs reference") && plain.contains("agrees: max |err|"),
        "{plain}"
    );
    assert!(!bench_json("fused", &[]).contains_key("check_passed"));
    assert!(bench_ok("fused", &[]).contains("- (no --check)"));
    let o = wgattn(&[&["bench", "--path", "reference", "--check"][..], &TINY].concat());
    assert_fails(&o, &["--check", "staged or fused"]);
    let o = wgattn(
        &[
            &[
                "bench",
                "--path",
                "fused",
                "--check",
                "--mask-mod",
                "return k <= q;",
            ][..],
            &TINY,
        ]
        .concat(),
    );
    assert_fails(&o, &["--check", "mask_mod"]);
}

/// `--softcap` reaches every path (held to the reference), is echoed in the JSON and named
/// with the masks; an invalid one is the library's error.
#[test]
fn softcap_is_timed_checked_and_echoed() {
    for path in ["staged", "fused"] {
        let o = bench_json(path, &["--softcap", "2.5", "--check"]);
        assert_eq!(o["check_passed"], json!(true), "{o:?}");
        assert_eq!(o["softcap"], json!(2.5), "{o:?}");
        assert_eq!(o["mask"], json!("softcap 2.5"), "{o:?}");
    }
    let o = bench_json("reference", &["--softcap", "2.5", "--causal"]);
    assert_eq!(o["mask"], json!("causal + softcap 2.5"), "{o:?}");
    assert!(!bench_json("fused", &[]).contains_key("softcap"));
    let o = wgattn(&["bench", "--path", "fused", "--softcap", "-1", "--json"]);
    assert_fails(&o, &["softcap", ">= 0"]);
    assert_error_json(&o, &["softcap"]);
}

// ---------------------------------------------------------------------------------------------
// Failures.

#[test]
fn heads_not_divisible_fails_with_one_line() {
    let args = [
        "bench",
        "--path",
        "fused",
        "--q-heads",
        "8",
        "--kv-heads",
        "3",
    ];
    let o = wgattn(&args);
    assert_fails(&o, &["--q-heads (8)", "--kv-heads (3)", "multiple"]);
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));

    let o = wgattn(&[&args[..], &["--json"]].concat());
    assert_fails(&o, &["multiple"]);
    let object = assert_error_json(&o, &["multiple"]);
    assert_eq!(object["kv_heads"].num(), 3.0);
}

#[test]
fn zero_iters_and_zero_sizes_fail_with_one_line() {
    let o = wgattn(&["bench", "--path", "reference", "--iters", "0"]);
    assert_fails(&o, &["--iters", "at least 1"]);
    for flag in ["--batch", "--q-heads", "--kv-len", "--head-dim", "--v-dim"] {
        let o = wgattn(&["bench", "--path", "staged", flag, "0"]);
        assert_fails(&o, &[flag, "at least 1"]);
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = wgattn(&["bench", "--path", "fused", "--dtype", "f64"]);
    assert_fails(&o, &["f64"]);
    assert_eq!(o.status.code(), Some(2));
    let o = wgattn(&["bench", "--path", "auto"]);
    assert_fails(&o, &["auto"]);
    let o = wgattn(&["bench"]);
    assert_fails(&o, &["--path"]);
}

#[test]
fn library_validation_reaches_the_user() {
    let o = wgattn(&["bench", "--path", "fused", "--window-left", "-2", "--json"]);
    assert_fails(&o, &["window_left"]);
    assert_error_json(&o, &["window_left"]);
}

/// Scores `[1, 1, 8192, 8192]` in f32 are 256 MiB, over lavapipe's 128 MiB binding limit
/// (and over WebGPU's default); the inputs are 128 KiB each.
const OVER_LIMIT: [&str; 13] = [
    "bench",
    "--path",
    "staged",
    "--q-heads",
    "1",
    "--q-len",
    "8192",
    "--head-dim",
    "4",
    "--iters",
    "1",
    "--warmup",
    "0",
];

#[test]
fn staged_scores_over_the_binding_limit_are_refused() {
    let o = wgattn(&OVER_LIMIT);
    assert_fails(&o, &["exceeds limit", "max_storage_buffer_binding_size"]);
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
}

#[test]
fn staged_refusal_with_json_prints_an_error_object() {
    let o = wgattn(&[&OVER_LIMIT[..], &["--json"]].concat());
    assert_fails(&o, &["exceeds limit"]);
    let object = assert_error_json(&o, &["exceeds limit"]);
    assert_eq!(object["path"], json!("staged"));
    assert_eq!(object["q_len"].num(), 8192.0);
    assert_eq!(object["kv_len"].num(), 8192.0);
    assert!(!object.contains_key("median_ms"));
}
