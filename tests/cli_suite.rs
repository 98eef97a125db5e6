//! `wgattn bench --suite/--compare/--plot`, end to end through the binary: the smoke suite's
//! report (every case, every required field), its Markdown table and progress lines, a
//! comparison with an edited copy, the SVG figure, and the failures (a missing, truncated or
//! foreign report, an unknown suite, a report that cannot be written): one `error:` line each.
//!
//! The smoke suite runs once (seconds on lavapipe) and its outputs are shared by the tests.
//! Needs the binary: `cargo test --features cli --test cli_suite`.
#![cfg(feature = "cli")]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use common::cli::{self, text, wgattn, Scratch};
use serde_json::Value;

/// A directory for this process's files, shared by the tests (never removed: statics are not
/// dropped).
fn scratch() -> &'static Scratch {
    static DIR: OnceLock<Scratch> = OnceLock::new();
    DIR.get_or_init(|| Scratch::new("suite"))
}

fn path_in_scratch(name: &str) -> String {
    scratch().arg(name)
}

/// The smoke suite, run once: its report (path and parsed JSON), stdout and stderr.
struct Smoke {
    report_path: String,
    report: Value,
    stdout: String,
    stderr: String,
}

fn smoke() -> &'static Smoke {
    static SMOKE: OnceLock<Smoke> = OnceLock::new();
    SMOKE.get_or_init(|| {
        let report_path = path_in_scratch("smoke.json");
        let o = wgattn(&["bench", "--suite", "smoke", "--report", &report_path]);
        assert!(
            o.status.success(),
            "the smoke suite failed ({}): {}",
            o.status,
            text(&o.stderr)
        );
        let report_text = std::fs::read_to_string(&report_path).expect("the report is written");
        let report: Value = serde_json::from_str(&report_text).expect("the report is JSON");
        Smoke {
            report_path,
            report,
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
        }
    })
}

fn cases(report: &Value) -> &Vec<Value> {
    report["cases"].as_array().expect("cases is an array")
}

fn case<'a>(report: &'a Value, id: &str) -> &'a Value {
    cases(report)
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id}"))
}

/// The failure contract ([`cli::assert_fails`]: non-zero exit, exactly one `error:` line on
/// stderr that mentions every one of `expect`), and nothing on stdout.
fn assert_fails(o: &Output, expect: &[&str]) {
    cli::assert_fails(o, expect);
    assert!(o.stdout.is_empty(), "stdout: {}", text(&o.stdout));
}

// ---------------------------------------------------------------------------------------------
// The report.

/// Fields every case has, whatever became of it.
const CASE_KEYS: [&str; 18] = [
    "id",
    "group",
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
    "mask",
    "iters",
    "warmup",
    "status",
];

/// Fields a case that ran has.
const FIGURE_KEYS: [&str; 6] = [
    "median_ms",
    "min_ms",
    "max_ms",
    "dense_flops",
    "gflops",
    "gpu_bytes",
];

#[test]
fn smoke_report_describes_the_run_and_the_adapter() {
    let r = &smoke().report;
    assert_eq!(r["format"], "wgattn-bench-report");
    assert_eq!(r["format_version"], 1);
    assert_eq!(r["wgattn_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["suite"], "smoke");
    assert!(r["created_unix_s"].as_u64().unwrap() > 1_600_000_000);
    for key in ["name", "backend", "device_type", "driver", "driver_info"] {
        assert!(
            r["adapter"][key].is_string(),
            "adapter.{key}: {}",
            r["adapter"]
        );
    }
    assert!(!r["adapter"]["name"].as_str().unwrap().is_empty());
    assert!(r["adapter"]["features_used"].is_array());
    assert_eq!(r["iterations"]["min_iters"], 2);
}

#[test]
fn smoke_report_has_every_case_with_the_required_fields() {
    let r = &smoke().report;
    let cases = cases(r);
    // prefill 2 L × 4 masks × 2 dtypes × 3 paths, decode 2 masks × 3, GQA 3, resident
    // decode 2, limit 2.
    assert_eq!(cases.len(), 48 + 6 + 3 + 2 + 2);
    let mut ids = HashSet::new();
    for c in cases {
        for key in CASE_KEYS {
            assert!(c.get(key).is_some(), "no {key:?} in {c}");
        }
        assert!(ids.insert(c["id"].as_str().unwrap()), "duplicate id in {c}");
        match c["status"].as_str().unwrap() {
            "ok" => {
                for key in FIGURE_KEYS {
                    assert!(c[key].is_number(), "no number {key:?} in {c}");
                }
                let (min, median, max) = (
                    c["min_ms"].as_f64().unwrap(),
                    c["median_ms"].as_f64().unwrap(),
                    c["max_ms"].as_f64().unwrap(),
                );
                assert!(0.0 < min && min <= median && median <= max, "{c}");
                assert!(c["gflops"].as_f64().unwrap() > 0.0, "{c}");
                assert_eq!(c["iters"], 2, "{c}");
                let gpu_bytes = c["gpu_bytes"].as_u64().unwrap();
                assert_eq!(gpu_bytes == 0, c["path"] == "reference", "{c}");
            }
            "error" => assert!(c["error"].is_string(), "{c}"),
            "skipped" => assert!(c["skipped"].is_string(), "{c}"),
            other => panic!("status {other:?} in {c}"),
        }
        if c["status"] != "ok" {
            assert!(c.get("median_ms").is_none(), "{c}");
        }
    }
}

#[test]
fn smoke_cases_carry_their_masks() {
    let r = &smoke().report;
    let padding = case(r, "prefill_f32_l64_padding_fused");
    assert_eq!(padding["kv_lengths"], serde_json::json!([48]));
    assert_eq!(padding["causal"], false);
    assert_eq!(padding["mask"], "padding");
    let window = case(r, "prefill_f16_l64_window_staged");
    assert_eq!(window["causal"], true);
    assert_eq!(window["window_left"], 8);
    let gqa = case(r, "decode_gqa_f16_lt64_none_fused");
    assert_eq!(
        (gqa["q_heads"].as_u64(), gqa["kv_heads"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(gqa["q_len"], 1);
    // Resident decode on both GPU paths, timed and named so; the others are not resident.
    for path in ["fused", "staged"] {
        let resident = case(r, &format!("decode_resident_f32_lt64_none_{path}"));
        assert_eq!(resident["resident"], true, "{resident}");
        assert_eq!(resident["status"], "ok", "{resident}");
        assert!(resident["median_ms"].as_f64().unwrap() > 0.0, "{resident}");
    }
    assert!(case(r, "decode_f32_lt64_none_fused")
        .get("resident")
        .is_none());
}

#[test]
fn refusals_are_errors_and_capped_cases_are_skipped() {
    let r = &smoke().report;
    // 256 MiB of scores: refused where the binding limit is lower (lavapipe's 128 MiB).
    let staged = case(r, "limit_f32_l8192_none_staged");
    match staged["status"].as_str().unwrap() {
        "error" => {
            let error = staged["error"].as_str().unwrap();
            assert!(error.contains("exceeds limit"), "{staged}");
            assert!(
                error.contains("max_storage_buffer_binding_size"),
                "{staged}"
            );
        }
        "ok" => {} // a device whose binding limit is over 256 MiB
        other => panic!("status {other:?}: {staged}"),
    }
    let reference = case(r, "limit_f32_l8192_none_reference");
    assert_eq!(reference["status"], "skipped");
    assert!(
        reference["skipped"]
            .as_str()
            .unwrap()
            .contains("up to 8388608 scores"),
        "{reference}"
    );
}

// ---------------------------------------------------------------------------------------------
// What the terminal shows.

#[test]
fn markdown_table_has_a_row_per_case() {
    let s = smoke();
    let rows: Vec<&str> = s
        .stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| case "))
        .collect();
    let cases = cases(&s.report);
    assert_eq!(rows.len(), cases.len(), "{}", s.stdout);
    for (row, c) in rows.iter().zip(cases) {
        let id = c["id"].as_str().unwrap();
        assert!(row.starts_with(&format!("| {id} |")), "{row} is not {id}");
        let status = c["status"].as_str().unwrap();
        assert!(row.contains(&format!("| {status}")), "{row}");
        // The GPU paths' device time (timestamp queries on lavapipe and llvmpipe's GL) in
        // the column after the wall median; none for the CPU reference.
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let gpu = c["gpu_median_ms"].as_f64();
        match (c["path"].as_str(), c["status"].as_str()) {
            (Some("reference"), _) => assert_eq!(cells[8], "-", "{row}"),
            (_, Some("ok")) => {
                let g = gpu.unwrap_or_else(|| panic!("no gpu_median_ms: {c}"));
                assert_eq!(cells[8], format!("{g:.3}"), "{row}");
            }
            _ => {}
        }
    }
    assert!(s.stdout.contains("|---|"), "{}", s.stdout);
    let adapter = s.report["adapter"]["name"].as_str().unwrap();
    assert!(s.stdout.contains(adapter), "{}", s.stdout);
}

#[test]
fn progress_is_one_plain_line_per_case_off_a_terminal() {
    let s = smoke();
    let n = cases(&s.report).len();
    let progress: Vec<&str> = s.stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), n, "{}", s.stderr);
    assert!(progress[0].starts_with(&format!("[1/{n}] prefill_f32_l16_none_fused: ")));
    assert!(progress[n - 1].starts_with(&format!("[{n}/{n}] ")));
    assert!(s.stderr.contains("wrote "), "{}", s.stderr);
    // No terminal control sequences when stderr is a pipe.
    assert!(!s.stderr.contains('\u{1b}'), "{:?}", s.stderr);
}

// ---------------------------------------------------------------------------------------------
// --compare.

/// A copy of the smoke report with every time doubled, the first case removed and one added.
fn slower_copy() -> String {
    let mut r = smoke().report.clone();
    let cases = r["cases"].as_array_mut().unwrap();
    for c in cases.iter_mut() {
        if c["status"] == "ok" {
            for key in ["median_ms", "min_ms", "max_ms"] {
                c[key] = (c[key].as_f64().unwrap() * 2.0).into();
            }
            c["gflops"] = (c["gflops"].as_f64().unwrap() / 2.0).into();
        }
    }
    cases.remove(0);
    let mut extra = cases[0].clone();
    extra["id"] = "prefill_f32_l99_none_fused".into();
    cases.push(extra);
    let path = path_in_scratch("slower.json");
    std::fs::write(&path, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    path
}

#[test]
fn compare_prints_the_ratio_of_every_case_in_both() {
    let a = &smoke().report_path;
    let b = slower_copy();
    let o = wgattn(&["bench", "--compare", a, &b]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let row = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("no row {id} in:\n{stdout}"))
            .to_string()
    };
    let report = &smoke().report;
    let mut in_both = 0;
    for c in cases(report).iter().skip(1) {
        let id = c["id"].as_str().unwrap();
        let cells: Vec<String> = row(id).split('|').map(|s| s.trim().to_string()).collect();
        // | id | A ms | B ms | B/A | A GFLOP/s | B GFLOP/s | note |
        if c["status"] == "ok" {
            in_both += 1;
            assert_eq!(cells[4], "2.00", "{id}: {cells:?}");
            let (a_ms, b_ms): (f64, f64) = (cells[2].parse().unwrap(), cells[3].parse().unwrap());
            // Both are rounded to 0.001 ms.
            assert!((b_ms - 2.0 * a_ms).abs() <= 0.0025, "{cells:?}");
        } else {
            assert_eq!(cells[4], "-", "{id}: {cells:?}");
            assert!(
                cells[7].contains(c["status"].as_str().unwrap()),
                "{cells:?}"
            );
        }
    }
    let first = cases(report)[0]["id"].as_str().unwrap();
    assert!(row(first).contains("only in A"), "{}", row(first));
    assert!(row("prefill_f32_l99_none_fused").contains("only in B"));
    assert!(
        stdout.contains(&format!(
            "{in_both} cases ran in both: B/A geometric mean 2.00. 1 only in A, 1 only in B."
        )),
        "{stdout}"
    );
    assert!(stdout.contains("slower.json"), "{stdout}");
}

#[test]
fn compare_of_a_missing_file_fails_with_one_line() {
    let a = &smoke().report_path;
    let missing = path_in_scratch("missing.json");
    let o = wgattn(&["bench", "--compare", a, &missing]);
    assert_fails(&o, &["cannot read report", "missing.json"]);
}

#[test]
fn compare_of_a_corrupt_file_fails_with_one_line() {
    let a = &smoke().report_path;
    let full = std::fs::read_to_string(a).unwrap();
    for (name, content, why) in [
        (
            "truncated.json",
            full[..full.len() / 2].to_string(),
            "bad JSON",
        ),
        ("garbage.json", "not json at all\n".to_string(), "bad JSON"),
        ("empty.json", String::new(), "bad JSON"),
        ("other.json", r#"{"hello": "world"}"#.to_string(), "format"),
        (
            "future.json",
            full.replacen("\"format_version\": 1", "\"format_version\": 7", 1),
            "format version 7",
        ),
        (
            "no_cases.json",
            full.replacen("\"cases\"", "\"kases\"", 1),
            "cases",
        ),
    ] {
        let path = path_in_scratch(name);
        std::fs::write(&path, content).unwrap();
        let o = wgattn(&["bench", "--compare", a, &path]);
        assert_fails(&o, &[name, "not a usable report", why]);
        // Either side.
        let o = wgattn(&["bench", "--compare", &path, a]);
        assert_fails(&o, &[name]);
    }
}

// ---------------------------------------------------------------------------------------------
// --plot.

/// Checks that `svg` is well-formed enough: every tag closes in order, attributes quoted.
fn assert_xmlish(svg: &str) {
    assert!(svg.starts_with("<?xml"), "{svg}");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("a tag closes") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        assert!(!tag.contains('<'), "nested '<' in {tag}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in {tag}"
        );
        if tag.starts_with('?') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "misnested </{name}>");
        } else {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert!(!rest.contains('>'), "stray '>'");
}

#[test]
fn plot_writes_an_svg_with_one_line_per_path_and_dtype() {
    let report = &smoke().report;
    for mask in ["none", "causal"] {
        let out = path_in_scratch(&format!("bench-{mask}.svg"));
        let o = wgattn(&[
            "bench",
            "--plot",
            &smoke().report_path,
            "--plot-mask",
            mask,
            "-o",
            &out,
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let svg = std::fs::read_to_string(&out).unwrap();
        assert_xmlish(&svg);
        assert!(svg.trim_end().ends_with("</svg>"));
        let series: HashSet<(String, String)> = cases(report)
            .iter()
            .filter(|c| c["group"] == "prefill" && c["mask"] == mask && c["status"] == "ok")
            .map(|c| (c["path"].to_string(), c["dtype"].to_string()))
            .collect();
        assert_eq!(series.len(), 6, "3 paths × 2 dtypes");
        assert_eq!(svg.matches("<polyline").count(), series.len(), "{svg}");
        for legend in ["fused f32", "fused f16", "staged f32", "reference f16"] {
            assert!(svg.contains(&format!(">{legend}</text>")), "{legend}");
        }
        assert!(svg.contains(&format!("mask {mask}")));
        assert!(svg.contains("dense GFLOP/s"));
        assert!(svg.contains("sequence length"));
        let adapter = report["adapter"]["name"].as_str().unwrap();
        assert!(svg.contains(adapter), "title names {adapter}");
    }
}

#[test]
fn plot_refuses_png_and_masks_without_cases() {
    let report = &smoke().report_path;
    let png = path_in_scratch("bench.png");
    let o = wgattn(&["bench", "--plot", report, "-o", &png]);
    assert_fails(&o, &["PNG", "svg"]);
    assert!(!Path::new(&png).exists());
    let o = wgattn(&[
        "bench",
        "--plot",
        report,
        "--plot-mask",
        "alibi",
        "-o",
        &png,
    ]);
    assert_fails(&o, &["PNG"]);
    let svg = path_in_scratch("alibi.svg");
    let o = wgattn(&[
        "bench",
        "--plot",
        report,
        "--plot-mask",
        "alibi",
        "-o",
        &svg,
    ]);
    assert_fails(&o, &["\"alibi\"", "causal, none, padding, window"]);
    assert!(!Path::new(&svg).exists());
}

// ---------------------------------------------------------------------------------------------
// Usage errors.

#[test]
fn unknown_suite_is_a_usage_error() {
    let o = wgattn(&["bench", "--suite", "huge"]);
    assert_fails(&o, &["huge", "standard", "smoke"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn suite_options_do_not_mix_with_one_shape_options() {
    let o = wgattn(&["bench", "--suite", "smoke", "--q-len", "5"]);
    assert_fails(&o, &["--suite", "--q-len"]);
    assert_eq!(o.status.code(), Some(2));
    let o = wgattn(&["bench", "--path", "fused", "--report", "x.json"]);
    assert_fails(&o, &["--report", "--path"]);
    let o = wgattn(&["bench", "--compare", "a.json"]);
    assert_fails(&o, &["--compare", "2 values"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_report_that_cannot_be_written_fails_before_the_suite_runs() {
    let report = path_in_scratch("no/such/dir/report.json");
    let o = wgattn(&["bench", "--suite", "smoke", "--report", &report]);
    assert_fails(&o, &["cannot write", "does not exist"]);
}
