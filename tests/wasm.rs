//! The async API on WebGPU: `examples/web_async.rs` built for wasm32 (its JS glue made by
//! `wasm-bindgen`) and run by `web/wasm.html` in headless Chromium (WebGPU on SwiftShader),
//! where no call may block. The page's report carries every case's output, checked here
//! against the CPU reference on the same inputs (rebuilt from `examples/common/web_cases.rs`);
//! how many times each call's future returned `Pending` (it must have yielded to the browser's
//! event loop while the device worked: there is no other way to wait there); and the typed
//! error of an invalid request, which must read as it does natively.
//!
//! Needs the wasm32 target (`rustup target add wasm32-unknown-unknown`), `wasm-bindgen` at the
//! version in Cargo.lock (`cargo install wasm-bindgen-cli --version V --no-default-features`)
//! and Chromium. Without one of them it fails saying how to get it, unless `WGATTN_SKIP_WASM=1`
//! (or, for Chromium, `WGATTN_SKIP_BROWSER=1`) says to skip it.

mod common;

#[path = "../examples/common/web_cases.rs"]
mod web_cases;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wgattn::{reference, AttentionProblem, Tensor};

use common::browser::{chromium, run_page, scratch_dir, Site};
use common::{assert_close, Tol};

/// How long the page may take (SwiftShader compiles each pipeline on first use).
const PAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// A missing tool: `None` (skip) when `WGATTN_SKIP_WASM=1` asks for that, else a failure
/// saying `how` to get it.
fn missing<T>(how: &str) -> Option<T> {
    if std::env::var("WGATTN_SKIP_WASM").is_ok_and(|v| v == "1") {
        eprintln!("WGATTN_SKIP_WASM=1: the wasm test did not run ({how})");
        return None;
    }
    panic!("{how}; or set WGATTN_SKIP_WASM=1 to skip this test explicitly");
}

/// The wasm-bindgen version Cargo.lock pins (the CLI must match it exactly).
fn locked_wasm_bindgen() -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("Cargo.lock");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return v.trim_end_matches('"').to_string();
            }
        }
    }
    panic!("Cargo.lock pins no wasm-bindgen");
}

/// `wasm-bindgen` at the locked version, or `None` when skipping.
fn wasm_bindgen() -> Option<PathBuf> {
    let want = locked_wasm_bindgen();
    let how = format!(
        "the wasm test needs wasm-bindgen {want} on PATH: cargo install wasm-bindgen-cli \
         --version {want} --no-default-features"
    );
    match Command::new("wasm-bindgen").arg("--version").output() {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout).trim() == format!("wasm-bindgen {want}") =>
        {
            Some(PathBuf::from("wasm-bindgen"))
        }
        Ok(out) => missing(&format!(
            "{how} (found {})",
            String::from_utf8_lossy(&out.stdout).trim()
        )),
        Err(_) => missing(&how),
    }
}

/// Builds the example for wasm32 (dev profile) and returns its `.wasm`, or `None` when skipping.
fn build_example() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--target",
            "wasm32-unknown-unknown",
            "--example",
            "web_async",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            return missing(
                "the wasm test needs the wasm32 target: rustup target add wasm32-unknown-unknown",
            );
        }
        panic!("building the example for wasm32 failed:\n{stderr}");
    }
    let wasm = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["target"]["name"] == "web_async")
        .find_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        });
    Some(wasm.expect("cargo names the example's .wasm"))
}

#[test]
fn the_async_api_runs_on_webgpu_in_headless_chromium() {
    let Some(browser) = chromium() else {
        return;
    };
    let Some(bindgen) = wasm_bindgen() else {
        return;
    };
    let Some(wasm) = build_example() else {
        return;
    };
    let pkg = scratch_dir("wasm-pkg");
    let out = Command::new(bindgen)
        .args(["--target", "web", "--out-dir"])
        .arg(&pkg)
        .arg(&wasm)
        .output()
        .expect("wasm-bindgen runs");
    assert!(
        out.status.success(),
        "wasm-bindgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = run_page(
        &browser,
        Site::web("wasm.html", &[("/pkg/", &pkg)]),
        "",
        PAGE_TIMEOUT,
    );
    let _ = std::fs::remove_dir_all(&pkg);
    if let Some(fatal) = report.get("fatal") {
        panic!("the page failed: {fatal}");
    }
    eprintln!(
        "adapter: {} ({}), features {}",
        report["adapter"], report["backend"], report["features"]
    );
    assert_eq!(
        report["backend"], "BrowserWebGpu",
        "the engine ran on the browser's WebGPU"
    );

    let cases = web_cases::cases();
    let got = report["cases"].as_array().expect("the report lists cases");
    assert_eq!(got.len(), cases.len(), "every case reported");
    for (case, g) in cases.iter().zip(got) {
        let name = case.name;
        check_reported(case, g, name);
        let pending = g["pending"].as_u64().expect("a pending count");
        eprintln!("{name}: Pending {pending} times");
        assert!(
            pending >= 1,
            "{name}: the future never returned Pending, so it cannot have waited for the device"
        );
    }
    // The same cases through record_attention on the page's own buffers; a device time
    // wherever the browser offers timestamp queries.
    let timestamps = report["features"]
        .as_str()
        .is_some_and(|f| f.contains("TIMESTAMP_QUERY"));
    let recorded = report["recorded"]
        .as_array()
        .expect("the report lists recordings");
    assert_eq!(recorded.len(), cases.len(), "every recording reported");
    for (case, g) in cases.iter().zip(recorded) {
        let name = format!("{} (recorded)", case.name);
        check_reported(case, g, &name);
        assert_eq!(
            g["timed"].as_bool(),
            Some(timestamps),
            "{name}: a device time exactly where the browser offers timestamp queries"
        );
    }

    let bad = web_cases::invalid();
    let native = AttentionProblem::new(&bad.inputs(), &bad.options)
        .expect_err("the invalid case is invalid")
        .to_string();
    assert_eq!(
        report["invalid"]["error"].as_str(),
        Some(native.as_str()),
        "the browser refuses {} with the native error",
        bad.name
    );
}

/// `case`'s reported output (its shape and bit patterns), checked against the CPU reference.
fn check_reported(case: &web_cases::WebCase, g: &Value, name: &str) {
    assert_eq!(g["name"], case.name);
    if let Some(e) = g.get("error") {
        panic!("{name}: the call failed in the browser: {e}");
    }
    let want = reference::masked_attention(&case.inputs(), &case.options)
        .unwrap()
        .out;
    let shape: Vec<usize> = g["shape"]
        .as_array()
        .expect("a shape")
        .iter()
        .map(|d| d.as_u64().expect("a size") as usize)
        .collect();
    let values: Vec<f32> = g["out_bits"]
        .as_array()
        .expect("the output's bits")
        .iter()
        .map(|b| f32::from_bits(b.as_u64().expect("a bit pattern") as u32))
        .collect();
    let out = Tensor::from_f32_as(shape, &values, want.dtype()).expect("a valid output");
    assert_close(name, &out, &want, Tol::for_dtype(want.dtype()));
}
