//! The `wgattn` binary, end to end: case files written here with the `safetensors` crate, run
//! through the binary, results compared with the CPU reference computed in this process.
//!
//! Every error test checks the whole contract of a failure: non-zero exit, exactly one line on
//! stderr that names the problem, and nothing written.
//!
//! Needs the binary: `cargo test --features cli --test cli` (without the feature this file is
//! empty).
#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::cli::{self, assert_fails, text, wgattn, CaseFile, Scratch};
use common::{assert_close, random, Rng, Tol};
use safetensors::{Dtype, SafeTensors};
use wgattn::{reference, AttentionInputs, AttentionOptions, BoolMask, DType, Layout, Mask, Tensor};

// ---------------------------------------------------------------------------------------------
// Helpers: running the binary, reading results (case files: `common::cli::CaseFile`).

/// `wgattn run CASE -o OUT EXTRA...`, asserting success; the result file's tensors by name.
fn run_ok(case: &Path, out: &Path, extra: &[&str]) -> HashMap<String, Tensor> {
    let mut args = vec!["run", case.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    cli::run_ok(&args);
    read_result(out)
}

fn read_result(path: &Path) -> HashMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.iter()
        .map(|(name, view)| {
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                other => panic!("result tensor {name} has dtype {other}"),
            };
            let t = Tensor::from_le_bytes(view.shape(), dtype, view.data()).unwrap();
            (name.to_string(), t)
        })
        .collect()
}

/// The string metadata of a result file (`path`, `adapter`).
fn result_metadata(path: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap_or_default()
}

/// The sorted names of a result.
fn names(result: &HashMap<String, Tensor>) -> Vec<&str> {
    let mut n: Vec<&str> = result.keys().map(String::as_str).collect();
    n.sort();
    n
}

/// Runs `wgattn run` on `case_bytes` and asserts the failure contract: non-zero exit, one
/// `error:` line on stderr containing every one of `expect`, no output and no stray file.
fn assert_run_fails(test: &str, case_bytes: &[u8], extra: &[&str], expect: &[&str]) {
    let dir = Scratch::new(test);
    let case = dir.path("case.safetensors");
    std::fs::write(&case, case_bytes).unwrap();
    let out = dir.path("out.safetensors");
    let mut args = vec!["run", case.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    assert_fails(&wgattn(&args), expect);
    assert!(!out.exists(), "{test}: the output file was written");
    assert_eq!(dir.files(), ["case.safetensors"], "{test}: stray files");
}

/// Random `q [B, Hq, Lq, D]`, `k [B, Hkv, Lk, D]`, `v [B, Hkv, Lk, Dv]` (`bhsd`).
fn qkv(seed: u64, dtype: DType, dims: [usize; 7]) -> (Tensor, Tensor, Tensor) {
    let [b, hq, hkv, lq, lk, d, dv] = dims;
    let mut rng = Rng::new(seed);
    (
        random(&mut rng, &[b, hq, lq, d], dtype, 1.0),
        random(&mut rng, &[b, hkv, lk, d], dtype, 1.0),
        random(&mut rng, &[b, hkv, lk, dv], dtype, 1.0),
    )
}

/// `B=2, Hq=4, Hkv=2, Lq=7, Lk=9, D=8, Dv=5`: GQA, `Dv != D`, sizes that divide nothing.
const DIMS: [usize; 7] = [2, 4, 2, 7, 9, 8, 5];

fn tol(dtype: DType) -> Tol {
    Tol::for_dtype(dtype)
}

// ---------------------------------------------------------------------------------------------
// `run`: results.

#[test]
fn run_f32_matches_reference() {
    let dir = Scratch::new("run_f32");
    let (q, k, v) = qkv(1, DType::F32, DIMS);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    assert_eq!(names(&got), ["out"]);
    let options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
    assert_eq!(dir.files(), ["case.safetensors", "out.safetensors"]);
}

/// Metadata keys that are no option are ignored, each named in one warning on stderr (a
/// misspelt option must not change the result silently); `format`, which safetensors writers
/// add, and `description` are not warned of.
#[test]
fn unknown_metadata_is_ignored_with_a_warning() {
    let dir = Scratch::new("unknown_metadata");
    let (q, k, v) = qkv(1, DType::F32, DIMS);
    let case = dir.path("case.safetensors");
    let out = dir.path("out.safetensors");
    let run = |file: CaseFile| {
        file.write(&case);
        let o = wgattn(&[
            "run",
            &dir.arg("case.safetensors"),
            "-o",
            &dir.arg("out.safetensors"),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let warnings: Vec<String> = text(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .map(str::to_string)
            .collect();
        (read_result(&out), warnings)
    };
    let (got, warnings) = run(CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .meta("is_causal", "false")
        .meta("note", "from a test")
        .meta("format", "pt"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert!(
        w.contains("metadata `is_causal`, `note` ignored") && w.contains("`causal`"),
        "{w}"
    );
    assert!(!w.contains("`format`"), "{w}");
    let options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
    let (_, warnings) = run(CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .meta("window_left", "3")
        .meta("format", "np")
        .meta("description", "a causal window"));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn run_f16_matches_reference() {
    let dir = Scratch::new("run_f16");
    let (q, k, v) = qkv(2, DType::F16, DIMS);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("softcap", "2.5")
        .write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    let options = AttentionOptions {
        softcap: 2.5,
        ..Default::default()
    };
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options).unwrap();
    assert_eq!(got["out"].dtype(), DType::F16);
    assert_close("out", &got["out"], &want.out, tol(DType::F16));
}

#[test]
fn flags_override_metadata() {
    let dir = Scratch::new("override");
    let (q, k, v) = qkv(3, DType::F32, DIMS);
    let inputs = AttentionInputs::new(&q, &k, &v);
    let out = dir.path("out.safetensors");
    let want = |options: AttentionOptions| reference::masked_attention(&inputs, &options).unwrap();

    // The file: not causal, scale 0.5, a left window of 2.
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("causal", "false")
        .meta("scale", "0.5")
        .meta("window_left", "2")
        .write(&case);
    let from_file = AttentionOptions {
        scale: Some(0.5),
        window_left: 2,
        ..Default::default()
    };
    let got = run_ok(&case, &out, &[]);
    assert_close(
        "file options",
        &got["out"],
        &want(from_file.clone()).out,
        tol(DType::F32),
    );

    let flags = ["--causal", "--scale", "0.25", "--window-left", "-1"];
    let got = run_ok(&case, &out, &flags);
    let overridden = AttentionOptions {
        causal: true,
        scale: Some(0.25),
        ..Default::default()
    };
    assert_close("flags", &got["out"], &want(overridden).out, tol(DType::F32));

    // `--causal=false` turns a file's `causal=true` off; an offset flag applies.
    let causal_case = dir.path("causal.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .write(&causal_case);
    let got = run_ok(&causal_case, &out, &["--causal=false"]);
    let plain = want(AttentionOptions::default());
    assert_close("--causal=false", &got["out"], &plain.out, tol(DType::F32));
    let got = run_ok(&causal_case, &out, &["--causal-offset", "-2"]);
    let shifted = AttentionOptions {
        causal: true,
        causal_offset: Some(-2),
        ..Default::default()
    };
    assert_close(
        "--causal-offset",
        &got["out"],
        &want(shifted).out,
        tol(DType::F32),
    );
}

#[test]
fn past_kv_writes_present_k_and_v() {
    let dir = Scratch::new("past");
    let (b, hkv, p, d, dv) = (2, 2, 4, 8, 5);
    let (q, k, v) = qkv(4, DType::F32, [b, 4, hkv, 3, 3, d, dv]);
    let mut rng = Rng::new(40);
    let past_k = random(&mut rng, &[b, hkv, p, d], DType::F32, 1.0);
    let past_v = random(&mut rng, &[b, hkv, p, dv], DType::F32, 1.0);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .tensor("past_k", &past_k)
        .tensor("past_v", &past_v)
        .meta("causal", "true")
        .write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    assert_eq!(names(&got), ["out", "present_k", "present_v"]);
    let options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    let inputs = AttentionInputs::new(&q, &k, &v).with_past(&past_k, &past_v);
    let want = reference::masked_attention(&inputs, &options).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
    assert_eq!(&got["present_k"], want.present_k.as_ref().unwrap());
    assert_eq!(&got["present_v"], want.present_v.as_ref().unwrap());
    assert_eq!(got["present_k"].shape(), [b, hkv, p + 3, d]);
}

#[test]
fn return_writes_scores_logits_probs() {
    let dir = Scratch::new("return");
    let (q, k, v) = qkv(5, DType::F32, DIMS);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .write(&case);
    let got = run_ok(
        &case,
        &dir.path("out.safetensors"),
        &["--return", "scores,logits,probs"],
    );
    assert_eq!(names(&got), ["logits", "out", "probs", "scores"]);
    let mut options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    options.returns = "scores,logits,probs".parse().unwrap();
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options).unwrap();
    let t = tol(DType::F32);
    assert_close("out", &got["out"], &want.out, t);
    assert_close("scores", &got["scores"], want.scores.as_ref().unwrap(), t);
    // Logits hold -inf where causal disallows; assert_close requires them in place.
    assert_close("logits", &got["logits"], want.logits.as_ref().unwrap(), t);
    assert_close("probs", &got["probs"], want.probs.as_ref().unwrap(), t);
}

#[test]
fn bool_mask_matches_reference() {
    let dir = Scratch::new("bool_mask");
    let [b, _, _, lq, lk, ..] = DIMS;
    let (q, k, v) = qkv(6, DType::F32, DIMS);
    let mut rng = Rng::new(60);
    // [B, 1, Lq, Lk], head-broadcast; query row 3 of batch 1 fully masked (its out is 0).
    let data: Vec<bool> = (0..b * lq * lk)
        .map(|i| i / lk != lq + 3 && rng.bool(0.6))
        .collect();
    let mask = Mask::Bool(BoolMask::new([b, 1, lq, lk], data).unwrap());
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v).mask(&mask).write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    let inputs = AttentionInputs::new(&q, &k, &v).with_mask(&mask);
    let want = reference::masked_attention(&inputs, &AttentionOptions::default()).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
}

#[test]
fn additive_mask_matches_reference() {
    let dir = Scratch::new("additive_mask");
    let [_, _, _, lq, lk, ..] = DIMS;
    let (q, k, v) = qkv(7, DType::F32, DIMS);
    let mut rng = Rng::new(70);
    // An f16 mask [Lq, Lk] on f32 inputs, with -inf entries (never a whole row).
    let data: Vec<f32> = (0..lq * lk)
        .map(|i| {
            if i % lk != 0 && rng.bool(0.3) {
                f32::NEG_INFINITY
            } else {
                rng.uniform()
            }
        })
        .collect();
    let mask = Mask::Additive(Tensor::from_f32_as([lq, lk], &data, DType::F16).unwrap());
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v).mask(&mask).write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    let inputs = AttentionInputs::new(&q, &k, &v).with_mask(&mask);
    let want = reference::masked_attention(&inputs, &AttentionOptions::default()).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
}

#[test]
fn kv_lengths_as_i32_and_i64_match_reference() {
    let dir = Scratch::new("kv_lengths");
    let (q, k, v) = qkv(8, DType::F32, DIMS);
    let lengths = [9i64, 4];
    let case64 = dir.path("i64.safetensors");
    let case32 = dir.path("i32.safetensors");
    CaseFile::new(&q, &k, &v)
        .kv_lengths_i64(&lengths)
        .write(&case64);
    CaseFile::new(&q, &k, &v)
        .kv_lengths_i32(&[9, 4])
        .write(&case32);
    let got64 = run_ok(&case64, &dir.path("out64.safetensors"), &[]);
    let got32 = run_ok(&case32, &dir.path("out32.safetensors"), &[]);
    let inputs = AttentionInputs::new(&q, &k, &v).with_kv_lengths(&lengths);
    let want = reference::masked_attention(&inputs, &AttentionOptions::default()).unwrap();
    assert_close("out (i64)", &got64["out"], &want.out, tol(DType::F32));
    assert_eq!(got32["out"], got64["out"], "I32 and I64 lengths differ");
}

#[test]
fn bshd_layout_writes_bshd_out() {
    let dir = Scratch::new("bshd");
    let (b, hq, hkv, lq, lk, d, dv) = (2, 4, 2, 5, 6, 8, 8);
    let mut rng = Rng::new(9);
    let q = random(&mut rng, &[b, lq, hq, d], DType::F32, 1.0);
    let k = random(&mut rng, &[b, lk, hkv, d], DType::F32, 1.0);
    let v = random(&mut rng, &[b, lk, hkv, dv], DType::F32, 1.0);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("layout", "bshd")
        .meta("causal", "true")
        .write(&case);
    let got = run_ok(&case, &dir.path("out.safetensors"), &[]);
    assert_eq!(got["out"].shape(), [b, lq, hq, dv]);
    let options = AttentionOptions {
        causal: true,
        layout: Layout::Bshd,
        ..Default::default()
    };
    let want = reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &options).unwrap();
    assert_close("out", &got["out"], &want.out, tol(DType::F32));
}

#[test]
fn every_path_equals_the_reference_path() {
    let dir = Scratch::new("paths");
    let (q, k, v) = qkv(10, DType::F32, DIMS);
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .meta("causal", "true")
        .write(&case);
    let run = |path: &str| {
        run_ok(
            &case,
            &dir.path(&format!("{path}.safetensors")),
            &["--path", path],
        )
    };
    let cpu = run("reference");
    for path in ["staged", "fused", "auto"] {
        let gpu = run(path);
        assert_eq!(names(&gpu), ["out"]);
        assert_close(path, &gpu["out"], &cpu["out"], tol(DType::F32));
    }
    let written_by =
        |path: &str| result_metadata(&dir.path(&format!("{path}.safetensors")))["path"].clone();
    assert_eq!(written_by("staged"), "staged");
    assert_eq!(written_by("fused"), "fused");
    assert_eq!(written_by("reference"), "reference");

    // Intermediates come from the staged path (auto picks it when they are asked for).
    let cpu = run_ok(
        &case,
        &dir.path("ref_probs.safetensors"),
        &["--return", "probs", "--path", "reference"],
    );
    let gpu_probs = dir.path("gpu_probs.safetensors");
    let gpu = run_ok(&case, &gpu_probs, &["--return", "probs"]);
    assert_eq!(names(&gpu), ["out", "probs"]);
    assert_eq!(result_metadata(&gpu_probs)["path"], "staged");
    assert_close("probs", &gpu["probs"], &cpu["probs"], tol(DType::F32));
    assert_close("out", &gpu["out"], &cpu["out"], tol(DType::F32));
}

#[test]
fn tuning_and_poison_run_each_variant_to_the_reference() {
    let dir = Scratch::new("tuning");
    // Prefill (Lq = 7; the prefill tunings force the prefill kernel, which CPU adapters would
    // not take for so short a block) and decode (Lq = 3, 70 keys: several 16-key splits), f16.
    let mut cases = HashMap::new();
    for (name, dims) in [("prefill", DIMS), ("decode", [2, 4, 2, 3, 70, 8, 5])] {
        let (q, k, v) = qkv(12, DType::F16, dims);
        let case = dir.path(&format!("{name}.safetensors"));
        CaseFile::new(&q, &k, &v)
            .meta("causal", "true")
            .write(&case);
        let cpu = run_ok(
            &case,
            &dir.path("cpu.safetensors"),
            &["--path", "reference"],
        );
        cases.insert(name, (case, cpu));
    }
    // Whether the adapter runs subgroup operations (the default decode kernel says so).
    let default_run = dir.path("default.safetensors");
    run_ok(&cases["decode"].0, &default_run, &["--path", "fused"]);
    let kernels_of = |path: &Path| result_metadata(path).get("kernels").cloned();
    let subgroups = kernels_of(&default_run).is_some_and(|k| k.contains("subgroups"));
    // (case, tuning, words the variant that ran must show, words it must not).
    let runs: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "prefill",
            "keys-per-tile=4,rows-per-invocation=3,decode-max-q=1",
            &["wgattn fused f16", "x3 ", " k4 "],
            &["fused_decode"],
        ),
        (
            "decode",
            "decode-keys-per-split=16,decode-layout=subgroup-keys,decode-invocations=64",
            // Splits are a multiple of the workgroup: 64 keys, two splits; the case's three
            // query rows in one workgroup (either layout, with subgroups or without).
            &["fused_decode f16", " k64 ", "fused_combine", "wg64x3"],
            &[],
        ),
        (
            "decode",
            "decode-keys-per-split=16,decode-layout=key-per-invocation,shader-f16=off",
            &["fused_decode f16", " k16 "],
            &["lanes", "shader-f16"],
        ),
        (
            "decode",
            "decode-max-q=1,subgroups=off,keys-per-tile=8",
            &["wgattn fused f16", " k8 "],
            &["fused_decode", "subgroups"],
        ),
    ];
    for (name, tuning, present, absent) in runs {
        let (case, cpu) = &cases[name];
        let out = dir.path("gpu.safetensors");
        let gpu = run_ok(
            case,
            &out,
            &["--path", "fused", "--poison", "--tuning", tuning],
        );
        let what = format!("{name} --tuning {tuning}");
        assert_close(&what, &gpu["out"], &cpu["out"], tol(DType::F16));
        let meta = result_metadata(&out);
        assert_eq!(meta["path"], "fused");
        assert!(!meta["backend"].is_empty());
        // The variants that ran, where the adapter can time kernels (it names them then).
        let Some(kernels) = kernels_of(&out) else {
            continue;
        };
        for word in present {
            assert!(
                kernels.contains(word),
                "{what}: ran {kernels}, not {word:?}"
            );
        }
        for word in absent {
            assert!(
                !kernels.contains(word),
                "{what}: ran {kernels}, with {word:?}"
            );
        }
        if tuning.contains("subgroup-keys") {
            assert_eq!(
                kernels.contains("lanes"),
                subgroups,
                "{what}: ran {kernels}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `run`: errors.

#[test]
fn error_bad_tuning_is_one_line() {
    let bytes = plain_case().bytes();
    assert_run_fails(
        "tuning_key",
        &bytes,
        &["--tuning", "keys-per-tile=8,tile=4"],
        &["unknown tuning key `tile`", "keys-per-tile=N"],
    );
    assert_run_fails(
        "tuning_value",
        &bytes,
        &["--tuning", "shader-f16=maybe"],
        &["shader-f16=maybe", "on or off"],
    );
    assert_run_fails(
        "tuning_reference",
        &bytes,
        &["--path", "reference", "--tuning", "keys-per-tile=8"],
        &["--tuning and --poison apply to the GPU paths"],
    );
    assert_run_fails(
        "tuning_split",
        &bytes,
        &["--tuning", "max-binding-bytes=16"],
        &["exceeds limit", "max_storage_buffer_binding_size"],
    );
}

fn plain_case() -> CaseFile {
    let (q, k, v) = qkv(11, DType::F32, DIMS);
    CaseFile::new(&q, &k, &v)
}

#[test]
fn error_missing_q() {
    let bytes = plain_case().without("q").bytes();
    assert_run_fails("missing_q", &bytes, &[], &["missing tensor `q`"]);
}

#[test]
fn error_truncated_file() {
    let bytes = plain_case().bytes();
    let half = &bytes[..bytes.len() / 2];
    assert_run_fails(
        "truncated",
        half,
        &[],
        &["not a valid safetensors file", "truncated"],
    );
}

#[test]
fn error_not_safetensors() {
    let garbage = b"q,k,v\n1,2,3\nthis is a CSV file, not safetensors\n";
    assert_run_fails("garbage", garbage, &[], &["not a valid safetensors file"]);
}

#[test]
fn error_empty_file() {
    assert_run_fails("empty", b"", &[], &["not a valid safetensors file"]);
}

#[test]
fn error_bad_metadata_value() {
    let bytes = plain_case().meta("causal", "maybe").bytes();
    assert_run_fails(
        "bad_meta",
        &bytes,
        &[],
        &["causal", "maybe", "true or false"],
    );
    let bytes = plain_case().meta("window_left", "wide").bytes();
    assert_run_fails("bad_window", &bytes, &[], &["window_left", "wide"]);
    let bytes = plain_case().meta("return", "scores,attn").bytes();
    assert_run_fails("bad_return", &bytes, &[], &["return", "scores,attn"]);
}

#[test]
fn error_unknown_tensor_name() {
    let mask: Vec<u8> = vec![1; 7 * 9];
    let bytes = plain_case()
        .raw("attn_mask", Dtype::BOOL, &[7, 9], mask)
        .bytes();
    assert_run_fails(
        "unknown_tensor",
        &bytes,
        &[],
        &["attn_mask", "`mask`", "`kv_lengths`"],
    );
}

#[test]
fn error_wrong_dtype() {
    let q: Vec<u8> = (0..2 * 4 * 7 * 8)
        .flat_map(|x: i32| x.to_le_bytes())
        .collect();
    let bytes = plain_case()
        .without("q")
        .raw("q", Dtype::I32, &[2, 4, 7, 8], q)
        .bytes();
    assert_run_fails("wrong_dtype", &bytes, &[], &["`q`", "I32"]);
    let lengths: Vec<u8> = [9f32, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bytes = plain_case()
        .raw("kv_lengths", Dtype::F32, &[2], lengths)
        .bytes();
    assert_run_fails("wrong_dtype_lengths", &bytes, &[], &["kv_lengths", "F32"]);
}

#[test]
fn error_shapes_do_not_match() {
    let (q, _, v) = qkv(12, DType::F32, DIMS);
    let mut rng = Rng::new(12);
    let bad_k = random(&mut rng, &[2, 2, 9, 6], DType::F32, 1.0);
    let bytes = CaseFile::new(&q, &bad_k, &v).bytes();
    assert_run_fails(
        "shapes",
        &bytes,
        &[],
        &["shape mismatch for k", "[2, 2, 9, 8]"],
    );
}

#[test]
fn error_kv_lengths_out_of_range() {
    let bytes = plain_case().kv_lengths_i64(&[3, 99]).bytes();
    assert_run_fails("kv_range", &bytes, &[], &["kv_lengths[1] = 99", "0..=9"]);
}

#[test]
fn error_output_directory_missing() {
    let dir = Scratch::new("no_dir");
    let case = dir.path("case.safetensors");
    plain_case().write(&case);
    let out = dir.path("missing/out.safetensors");
    let o = wgattn(&["run", case.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_fails(&o, &["does not exist"]);
    assert!(!out.exists());
    assert_eq!(dir.files(), ["case.safetensors"]);
}

#[test]
fn error_bad_flag_value_is_one_line() {
    let bytes = plain_case().bytes();
    assert_run_fails(
        "bad_flag",
        &bytes,
        &["--layout", "bsdh"],
        &["bsdh", "bhsd or bshd"],
    );
    assert_fails(&wgattn(&["run"]), &["required"]);
    assert_fails(&wgattn(&[]), &["wgattn demo"]);
}

// ---------------------------------------------------------------------------------------------
// `info` and `demo`.

#[test]
fn info_describes_the_adapter() {
    let o = wgattn(&["info"]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "info failed: {}", text(&o.stderr));
    for word in [
        "adapter",
        "backend",
        "SHADER_F16",
        "subgroup size",
        "max_storage_buffer_binding_size",
        "max_compute_workgroup_size_x",
    ] {
        assert!(stdout.contains(word), "info should show {word}: {stdout}");
    }
}

#[test]
fn demo_checks_staged_against_reference() {
    let o = wgattn(&["demo", "--runs", "2"]);
    let stdout = text(&o.stdout);
    assert!(
        o.status.success(),
        "demo failed: {}{stdout}",
        text(&o.stderr)
    );
    for word in ["staged", "reference", "f32", "f16", "checked"] {
        assert!(stdout.contains(word), "demo should show {word}: {stdout}");
    }
}

// ---------------------------------------------------------------------------------------------
// Mods in case files (README, "Custom masks").

fn ints_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn ints_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every mod at once in a case file, run through the binary against the reference, and drawn
/// by `wgattn mask --case` (the mask_mod evaluated on the GPU) against the reference's
/// allowed positions.
#[test]
fn case_file_mods_run_and_draw() {
    let dir = Scratch::new("mods");
    let (b, h, l) = (2usize, 2usize, 9usize);
    let (q, k, v) = qkv(41, DType::F32, [b, h, h, l, l, 4, 4]);
    let seg: Vec<i64> = (0..b * l).map(|x| ((x % l) / 4) as i64).collect();
    let ids: Vec<i32> = (0..b * l).map(|x| (x * 7 % 5) as i32).collect();
    let modality_q: Vec<i32> = (0..b * l).map(|x| i32::from(x % l >= 3)).collect();
    let doc: Vec<i32> = (0..l as i32).map(|j| j % 3).collect();
    let case = dir.path("case.safetensors");
    CaseFile::new(&q, &k, &v)
        .raw("q_segment", Dtype::I64, &[b, l], ints_i64(&seg))
        .raw("kv_segment", Dtype::I64, &[b, l], ints_i64(&seg))
        .raw("prefix_len", Dtype::I32, &[b], ints_i32(&[2, 0]))
        .meta("alibi", "one-sided")
        .raw("kv_token_ids", Dtype::I32, &[b, l], ints_i32(&ids))
        .meta("blocked_ids", "4")
        .raw("modality_q", Dtype::I32, &[b, l], ints_i32(&modality_q))
        .raw("modality_kv", Dtype::I32, &[b, l], ints_i32(&modality_q))
        .raw("modality_allow", Dtype::BOOL, &[2, 2], vec![1, 0, 1, 1])
        .raw("modality_causal", Dtype::BOOL, &[2], vec![0, 1])
        .raw("aux_doc", Dtype::I32, &[l], ints_i32(&doc))
        .meta("mask_mod", "return aux_doc[k] != 2 || k == q;")
        .meta("score_mod", "return s * 0.75;")
        .write(&case);

    let mods = wgattn::MaskMods {
        segments: Some(wgattn::Segments {
            q: seg.clone(),
            kv: seg,
        }),
        prefix_lengths: Some(vec![2, 0]),
        alibi: Some(wgattn::Alibi::default()),
        token_filter: Some(wgattn::TokenFilter {
            kv_token_ids: ids.iter().map(|&x| x as i64).collect(),
            blocked: wgattn::BlockedTokens::Ids(vec![4]),
        }),
        modalities: Some(wgattn::Modalities {
            q: modality_q.iter().map(|&x| x as u32).collect(),
            kv: modality_q.iter().map(|&x| x as u32).collect(),
            allow: vec![true, false, true, true],
            causal: vec![false, true],
        }),
        mask_mod: Some("return aux_doc[k] != 2 || k == q;".into()),
        score_mod: Some("return s * 0.75;".into()),
        aux: vec![wgattn::Aux::i32("doc", doc.clone())],
    };
    let mask = |_b: usize, _h: usize, q: usize, k: usize| doc[k] != 2 || k == q;
    let score = |s: f64, _b: usize, _h: usize, _q: usize, _k: usize| s * 0.75;
    let rust = reference::RustMods {
        mask_mod: Some(&mask),
        score_mod: Some(&score),
    };
    let inputs = AttentionInputs::new(&q, &k, &v).with_mods(&mods);
    let options = AttentionOptions::default();
    let want = reference::masked_attention_with(&inputs, &options, rust).unwrap();
    for path in ["fused", "staged"] {
        let got = run_ok(
            &case,
            &dir.path(&format!("{path}.safetensors")),
            &["--path", path],
        );
        assert_close(
            &format!("out {path}"),
            &got["out"],
            &want.out,
            tol(DType::F32),
        );
    }

    // The CPU reference cannot run WGSL: one clear line, nothing written.
    let out = dir.path("ref.safetensors");
    let o = wgattn(&[
        "run",
        case.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--path",
        "reference",
    ]);
    assert_fails(&o, &["mask_mod", "closure"]);
    assert!(!out.exists());

    // The picture's text form: `#` exactly where the reference allows.
    let o = wgattn(&["mask", "--case", case.to_str().unwrap(), "--ascii"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let allowed = reference::allowed_with(&inputs, &options, rust).unwrap();
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("segments") && stdout.contains("mask_mod"),
        "{stdout}"
    );
    let grid: Vec<bool> = stdout
        .lines()
        .filter(|line| line.len() == l && line.chars().all(|c| c == '#' || c == '.'))
        .flat_map(|line| line.chars().map(|c| c == '#').collect::<Vec<_>>())
        .collect();
    // Heads allow alike, so each batch entry is one block of Lq lines.
    let per_head: Vec<bool> = (0..b)
        .flat_map(|bi| allowed[bi * h * l * l..bi * h * l * l + l * l].to_vec())
        .collect();
    assert_eq!(grid, per_head, "{stdout}");
}

#[test]
fn case_file_mod_errors_are_one_line() {
    let dir = Scratch::new("mod_errors");
    let (q, k, v) = qkv(42, DType::F32, [1, 1, 1, 4, 4, 4, 4]);
    let base = || CaseFile::new(&q, &k, &v);
    for (name, case, expect) in [
        (
            "snippet",
            base().meta("mask_mod", "let a = 1u;\nreturn a == ;"),
            &["mask_mod", "line 2"][..],
        ),
        (
            "segments_alone",
            base().raw("q_segment", Dtype::I64, &[1, 4], ints_i64(&[0; 4])),
            &["q_segment", "kv_segment"][..],
        ),
        (
            "blocked_without_ids",
            base().meta("blocked_ids", "1,2"),
            &["kv_token_ids"][..],
        ),
        (
            "aux_dtype",
            base()
                .meta("mask_mod", "return true;")
                .raw("aux_x", Dtype::I64, &[1], ints_i64(&[1])),
            &["aux_x", "I32"][..],
        ),
        (
            "alibi_kind",
            base().meta("alibi", "both"),
            &["alibi", "symmetric"][..],
        ),
    ] {
        assert_run_fails(name, &case.bytes(), &[], expect);
    }
    let _ = dir;
}
