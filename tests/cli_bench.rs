//! `wgattn bench`, end to end: tiny shapes through the binary, the table and the `--json` line
//! checked field by field, and the failures (bad arguments, a staged request over the device's
//! binding limit) checked for one `error:` line and, with `--json`, an error object.
//!
//! Needs the binary: `cargo test --features cli --test cli_bench`.
#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::process::Output;

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
fn bench_json(path: &str, extra: &[&str]) -> HashMap<String, Json> {
    let mut extra = extra.to_vec();
    extra.push("--json");
    let stdout = bench_ok(path, &extra);
    let object = one_object(&stdout);
    for key in RESULT_KEYS {
        assert!(object.contains_key(key), "no {key:?} in {stdout}");
    }
    assert_eq!(object["path"], Json::Str(path.into()));
    for key in ["median_ms", "min_ms", "max_ms", "gflops"] {
        assert!(object[key].num() > 0.0, "{key} is not positive: {stdout}");
    }
    assert!(object["min_ms"].num() <= object["median_ms"].num());
    assert!(object["median_ms"].num() <= object["max_ms"].num());
    object
}

/// Asserts stdout is one error object with the request's fields and an `error` mentioning
/// every one of `expect`.
fn assert_error_json(o: &Output, expect: &[&str]) -> HashMap<String, Json> {
    let stdout = text(&o.stdout);
    let object = one_object(&stdout);
    for key in ERROR_KEYS {
        assert!(object.contains_key(key), "no {key:?} in {stdout}");
    }
    let Json::Str(error) = &object["error"] else {
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
// A flat JSON object reader: enough to prove the line is one well-formed object of strings,
// numbers, booleans and nulls.

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// An array of flat objects (`gpu_kernels`).
    Objects(Vec<HashMap<String, Json>>),
}

impl Json {
    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("expected a number, got {other:?}"),
        }
    }
}

/// Parses stdout as exactly one line holding one JSON object of scalars and arrays of flat
/// objects.
fn one_object(stdout: &str) -> HashMap<String, Json> {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stdout: {stdout:?}");
    let line = lines[0];
    assert!(
        line.starts_with('{') && line.ends_with('}'),
        "not an object: {line}"
    );
    parse_object(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn parse_object(s: &str) -> Result<HashMap<String, Json>, String> {
    let mut p = Parser {
        chars: s.chars().collect(),
        at: 0,
    };
    let object = p.object(true)?;
    if p.at != p.chars.len() {
        return Err(format!("trailing characters after {}", p.at));
    }
    Ok(object)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    /// An object; `nested` allows arrays of flat objects as values.
    fn object(&mut self, nested: bool) -> Result<HashMap<String, Json>, String> {
        let mut object = HashMap::new();
        self.expect('{')?;
        if self.peek() == Some('}') {
            self.at += 1;
            return Ok(object);
        }
        loop {
            let key = self.string()?;
            self.expect(':')?;
            let value = if nested && self.peek() == Some('[') {
                self.objects()?
            } else {
                self.value()?
            };
            if object.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate key {key:?}"));
            }
            match self.next() {
                Some(',') => continue,
                Some('}') => return Ok(object),
                c => return Err(format!("expected , or }} at {}, got {c:?}", self.at)),
            }
        }
    }

    fn objects(&mut self) -> Result<Json, String> {
        self.expect('[')?;
        let mut items = Vec::new();
        if self.peek() == Some(']') {
            self.at += 1;
            return Ok(Json::Objects(items));
        }
        loop {
            items.push(self.object(false)?);
            match self.next() {
                Some(',') => continue,
                Some(']') => return Ok(Json::Objects(items)),
                c => return Err(format!("expected , or ] at {}, got {c:?}", self.at)),
            }
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += 1;
        c
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.next() {
            Some(c) if c == want => Ok(()),
            c => Err(format!("expected {want:?} at {}, got {c:?}", self.at - 1)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.next().ok_or("unterminated string")? {
                '"' => return Ok(out),
                '\\' => match self.next().ok_or("unterminated escape")? {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| self.next()).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .map_err(|_| format!("bad \\u escape {hex:?}"))?;
                        out.push(char::from_u32(code).ok_or("bad \\u code")?);
                    }
                    c => return Err(format!("bad escape \\{c}")),
                },
                c if (c as u32) < 0x20 => return Err("raw control character in string".into()),
                c => out.push(c),
            }
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek().ok_or("missing value")? {
            '"' => self.string().map(Json::Str),
            't' | 'f' | 'n' => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                    self.at += 1;
                }
                match self.chars[start..self.at]
                    .iter()
                    .collect::<String>()
                    .as_str()
                {
                    "true" => Ok(Json::Bool(true)),
                    "false" => Ok(Json::Bool(false)),
                    "null" => Ok(Json::Null),
                    w => Err(format!("bad literal {w:?}")),
                }
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                {
                    self.at += 1;
                }
                let token: String = self.chars[start..self.at].iter().collect();
                let valid_start =
                    token.starts_with('-') || token.starts_with(|c: char| c.is_ascii_digit());
                match token.parse::<f64>() {
                    Ok(n) if valid_start && n.is_finite() => Ok(Json::Num(n)),
                    _ => Err(format!("bad number {token:?}")),
                }
            }
        }
    }
}

#[test]
fn json_reader_rejects_what_is_not_one_object() {
    assert!(parse_object(r#"{"a":1,"b":"x\"y","c":true,"d":null}"#).is_ok());
    assert!(parse_object(r#"{"a":1,}"#).is_err());
    assert!(parse_object(r#"{"a":1}{"b":2}"#).is_err());
    assert!(parse_object(r#"{"a":NaN}"#).is_err());
    assert!(parse_object(r#"{"a":[{"k":"x","t":1},{"k":"y","t":2}],"b":[]}"#).is_ok());
    assert!(parse_object(r#"{"a":[{"k":[{"x":1}]}]}"#).is_err());
    assert!(parse_object(r#"{"a":[1,2]}"#).is_err());
    assert!(parse_object(r#"{"a":[{"k":1},]}"#).is_err());
    assert!(parse_object(r#"{"a":1,"a":2}"#).is_err());
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
    assert_eq!(o["gpu_bytes"], Json::Num(0.0));
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
        matches!(&o["backend"], Json::Str(b) if !b.is_empty() && b != "none"),
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
fn kernels(o: &HashMap<String, Json>) -> Vec<(String, f64)> {
    let Json::Objects(items) = &o["gpu_kernels"] else {
        panic!("gpu_kernels is not an array of objects: {o:?}");
    };
    items
        .iter()
        .map(|k| {
            let Json::Str(name) = &k["kernel"] else {
                panic!("a kernel without a name: {k:?}");
            };
            let t = k["median_ms"].num();
            assert!(
                t >= 0.0 && t <= o["max_ms"].num(),
                "{name}: {t} ms in {o:?}"
            );
            (name.clone(), t)
        })
        .collect()
}

#[test]
fn json_fused_path_reports_peak_gpu_memory() {
    let o = bench_json("fused", &[]);
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
        assert_eq!(o[key], Json::Num(want), "{key}");
    }
    assert_eq!(o["dtype"], Json::Str("f32".into()));
    assert_eq!(o["causal"], Json::Bool(false));
}

#[test]
fn causal_and_window_flags_are_accepted_on_every_path() {
    for path in ["reference", "staged", "fused"] {
        let o = bench_json(
            path,
            &["--causal", "--window-left", "4", "--window-right", "0"],
        );
        assert_eq!(o["causal"], Json::Bool(true), "{path}");
        assert_eq!(o["window_left"], Json::Num(4.0), "{path}");
        assert_eq!(o["window_right"], Json::Num(0.0), "{path}");
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
    assert_eq!(o["kv_heads"], Json::Num(1.0));
    assert_eq!(o["dtype"], Json::Str("f16".into()));
    let o = bench_json("staged", &["--kv-heads", "1", "--dtype", "bf16"]);
    assert_eq!(o["dtype"], Json::Str("bf16".into()));
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
        assert_eq!(o["path"], Json::Str(path.into()));
    }
    let o = wgattn(&["bench", "--path", "fused", "--without", "tensor-cores"]);
    assert_fails(&o, &["tensor-cores"]);
    assert_eq!(o.status.code(), Some(2));
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
    assert_eq!(object["kv_heads"], Json::Num(3.0));
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
    assert_eq!(object["path"], Json::Str("staged".into()));
    assert_eq!(object["q_len"], Json::Num(8192.0));
    assert_eq!(object["kv_len"], Json::Num(8192.0));
    assert!(!object.contains_key("median_ms"));
}
