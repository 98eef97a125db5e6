//! The same kernels in a real browser: plans of small cases of every mask kind (staged and
//! fused, f32, f16 and bf16, WebGPU's default limits, no optional features; and a subgroups plan)
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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use safetensors::Dtype;
use serde_json::Value;
use wgattn::{DType, Tensor};

use common::cli::{run_ok as wgattn, CaseFile};
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

/// The Chromium to run, or `None` with the skip variable set; fails saying how to install
/// it otherwise.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WGATTN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() && std::env::var("WGATTN_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("WGATTN_SKIP_BROWSER=1: the browser test did not run");
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!(
            "the browser test needs Chromium and found none on PATH: install it \
             (apt-get install -y chromium), point WGATTN_CHROMIUM at a Chromium-based browser, \
             or set WGATTN_SKIP_BROWSER=1 to skip this test explicitly"
        )
    }))
}

/// Serves `web/` at `/`, `plans` at `/plans/`, and sends each body POSTed to `/report`.
fn serve(listener: TcpListener, plans: PathBuf, reports: mpsc::Sender<String>) {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for stream in listener.incoming().flatten() {
        let (web, plans, reports) = (web.clone(), plans.clone(), reports.clone());
        std::thread::spawn(move || {
            let _ = handle(stream, &web, &plans, &reports);
        });
    }
}

fn handle(
    stream: TcpStream,
    web: &Path,
    plans: &Path,
    reports: &mpsc::Sender<String>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut stream = stream;
    let path = target.split('?').next().unwrap_or("");
    if method == "POST" && path == "/report" {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let _ = reports.send(String::from_utf8_lossy(&body).into_owned());
        return respond(&mut stream, "204 No Content", "text/plain", b"");
    }
    let file = match path {
        "/" => Some(web.join("index.html")),
        p if p.contains("..") => None,
        p => match p.strip_prefix("/plans/") {
            Some(name) => Some(plans.join(name)),
            None => Some(web.join(p.trim_start_matches('/'))),
        },
    };
    match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
        Some((f, body)) => {
            let kind = match f.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html",
                Some("js") => "text/javascript",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            respond(&mut stream, "200 OK", kind, &body)
        }
        None => respond(&mut stream, "404 Not Found", "text/plain", b"not found"),
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// Loads `page` in headless Chromium and returns the first report it POSTs.
fn run_page(browser: &Path, plans: &Path, query: &str) -> Value {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let plans = plans.to_path_buf();
    std::thread::spawn(move || serve(listener, plans, tx));
    let profile = tempfile_dir(&format!("chromium-profile-{port}"));
    let url = format!("http://127.0.0.1:{port}/?{query}&report=/report");
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--enable-unsafe-webgpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            &format!("--user-data-dir={}", profile.display()),
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let started = Instant::now();
    let report = rx.recv_timeout(PAGE_TIMEOUT);
    // SIGTERM lets Chromium end its helper processes; SIGKILL if it does not exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&profile);
    let report = report.unwrap_or_else(|_| {
        panic!(
            "the page posted no results within {PAGE_TIMEOUT:?} ({url}); does {} run WebGPU \
             with --enable-unsafe-webgpu?",
            browser.display()
        )
    });
    eprintln!("page ran in {:.1?}", started.elapsed());
    serde_json::from_str(&report).unwrap_or_else(|e| panic!("the report is not JSON: {e}"))
}

fn tempfile_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgattn-browser-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The plan files: every mask kind, staged and fused, f32, f16 and bf16, under WebGPU's default
/// limits; the staged f32 cases again with subgroups; and one case whose shader holds a
/// constant infinity. Returns the directory and the `plan=` query.
fn write_plans() -> (PathBuf, String) {
    let dir = tempfile_dir("plans");
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
    let probe = tint_probe(&dir.join("staged.json"));
    std::fs::write(dir.join("probe.json"), probe.to_string()).unwrap();
    let query = ["staged", "fused", "subgroups", "probe"]
        .map(|p| format!("plan=/plans/{p}.json"))
        .join("&");
    (dir, query)
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
    let report = run_page(&browser, &dir, &query);
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
    // 9 kinds x 3 dtypes x 2 paths, plus the 9 f32 cases with subgroups.
    let want = 9 * 3 * 2 + 9;
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
    let dir = tempfile_dir("bench");
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
    let report = run_page(&browser, &dir, "plan=/plans/bench.json&mode=time");
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
