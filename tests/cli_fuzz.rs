//! A bounded mutation fuzz of the case-file reader and the option/shape validation behind
//! `wgattn run`: a valid case file is truncated, bit-flipped, its header and metadata
//! scribbled over, and every mutant run through the binary. Whatever the bytes, the binary
//! must exit 0 with an output file, or exit non-zero with exactly one `error:` line and no
//! output file; never a panic, a signal or a backtrace.
//!
//! `WGATTN_FUZZ_CASES=N` runs N mutants instead of the default (CI runs the default, a few
//! seconds); the seed is printed with each failure so a mutant can be replayed.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;

use common::cli::{command, CaseFile, Scratch};
use common::Rng;

use safetensors::Dtype;

/// Runs `wgattn run INPUT -o OUTPUT`: exit code and the stderr lines that are not Mesa's
/// headless noise.
fn run_case(input: &Path, output: &Path) -> (Option<i32>, String, Vec<String>) {
    let o = command(&[
        "run",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ])
    .env_remove("RUST_BACKTRACE")
    .output()
    .expect("the wgattn binary runs");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let lines = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(str::to_string)
        .collect();
    (o.status.code(), stderr, lines)
}

/// A small valid case: q, k, v, a bool mask, key lengths and option metadata.
fn base_case() -> Vec<u8> {
    let f32s = |n: usize, seed: u32| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                ((((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
                    .to_le_bytes()
            })
            .collect()
    };
    let q = f32s(2 * 2 * 3 * 4, 1);
    let k = f32s(2 * 2 * 5 * 4, 2);
    let v = f32s(2 * 2 * 5 * 4, 3);
    let mask: Vec<u8> = (0..2 * 5).map(|i| (i % 4 != 3) as u8).collect();
    let lengths: Vec<u8> = [5i64, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
    CaseFile::default()
        .raw("q", Dtype::F32, &[2, 2, 3, 4], q)
        .raw("k", Dtype::F32, &[2, 2, 5, 4], k)
        .raw("v", Dtype::F32, &[2, 2, 5, 4], v)
        .raw("mask", Dtype::BOOL, &[2, 1, 1, 5], mask)
        .raw("kv_lengths", Dtype::I64, &[2], lengths)
        .meta("causal", "true")
        .meta("scale", "0.5")
        .meta("window_left", "3")
        .meta("softcap", "0")
        .bytes()
}

/// One mutant of `base`, chosen by `rng`.
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    match rng.below(7) {
        // Truncated anywhere.
        0 => b.truncate(rng.below(b.len())),
        // A few random bytes anywhere.
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next_u64() as u8;
            }
        }
        // A few printable characters in the JSON header (keys, shapes, offsets, metadata).
        2 => {
            const CHARS: &[u8] = b"0123456789-+.,:[]{}\"eE truefalsnNaI";
            for _ in 0..1 + rng.below(6) {
                let i = 8 + rng.below(header_end - 8);
                b[i] = CHARS[rng.below(CHARS.len())];
            }
        }
        // A header length that lies.
        3 => {
            let len = match rng.below(3) {
                0 => rng.next_u64(),
                1 => rng.below(header_end * 2) as u64,
                _ => u64::MAX - rng.below(16) as u64,
            };
            b[..8].copy_from_slice(&len.to_le_bytes());
        }
        // A metadata value replaced by something else.
        4 => {
            let text = String::from_utf8_lossy(&b[8..header_end]).into_owned();
            let values = [
                "\"-1\"", "\"NaN\"", "\"inf\"", "\"1e39\"", "\"\"", "\"yes\"", "\"-7\"",
            ];
            let replaced = text
                .replacen("\"true\"", values[rng.below(values.len())], 1)
                .replacen("\"0.5\"", values[rng.below(values.len())], 1)
                .replacen("\"3\"", values[rng.below(values.len())], 1);
            let mut header = replaced.into_bytes();
            header.resize(header_end - 8, b' ');
            if header.len() == header_end - 8 {
                b[8..header_end].copy_from_slice(&header);
            }
        }
        // Junk appended or inserted in the data.
        5 => {
            let at = header_end + rng.below(b.len() - header_end);
            let junk: Vec<u8> = (0..1 + rng.below(64))
                .map(|_| rng.next_u64() as u8)
                .collect();
            b.splice(at..at, junk);
        }
        // A shape digit changed (shape and data length disagree, or a dim becomes 0).
        _ => {
            let text = &b[8..header_end];
            let digits: Vec<usize> = (0..text.len())
                .filter(|&i| text[i].is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                let i = 8 + digits[rng.below(digits.len())];
                b[i] = b'0' + rng.below(10) as u8;
            }
        }
    }
    b
}

#[test]
fn mutated_case_files_never_crash_the_cli() {
    let cases: usize = std::env::var("WGATTN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    let dir = Scratch::new("mutants");
    let base = base_case();
    let (mut ok, mut refused) = (0, 0);
    for seed in 0..cases as u64 {
        let mut rng = Rng::new(seed);
        let bytes = mutate(&base, &mut rng);
        let input = dir.path(&format!("case-{seed}.safetensors"));
        let output = dir.path(&format!("out-{seed}.safetensors"));
        std::fs::write(&input, &bytes).unwrap();
        let (code, stderr, errors) = run_case(&input, &output);
        assert!(
            code.is_some(),
            "seed {seed}: killed by a signal; stderr: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "seed {seed}: {stderr}"
        );
        if code == Some(0) {
            ok += 1;
            assert!(
                output.exists(),
                "seed {seed}: success without an output file"
            );
        } else {
            refused += 1;
            assert_eq!(errors.len(), 1, "seed {seed}: stderr {stderr:?}");
            assert!(
                errors[0].starts_with("error: "),
                "seed {seed}: {}",
                errors[0]
            );
            assert!(
                !output.exists(),
                "seed {seed}: a failed run left {output:?}"
            );
        }
        std::fs::remove_file(&input).ok();
        std::fs::remove_file(&output).ok();
    }
    println!("{cases} mutants: {ok} ran, {refused} refused with one error line");
    assert!(refused > 0 && ok + refused == cases);
}

/// Headers that declare tensors far larger than the file (or than memory, or whose element
/// count overflows) are refused in one line before anything is allocated.
#[test]
fn declared_sizes_beyond_the_file_or_memory_are_refused() {
    let dir = Scratch::new("sizes");
    let shapes = [
        // 2^64 elements: the count overflows.
        "[4294967296, 4294967296, 1, 1]",
        // 1 TiB of f32 declared, 64 bytes present.
        "[1, 1024, 65536, 4096]",
        // 80 bytes of shape in 64 bytes of offsets.
        "[1, 1, 4, 5]",
    ];
    for (n, shape) in shapes.iter().enumerate() {
        let tensor = |name: &str, at: usize| {
            format!(
                "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[{},{}]}}",
                at,
                at + 64
            )
        };
        let header = format!(
            "{{{},{},{}}}",
            tensor("q", 0),
            tensor("k", 64),
            tensor("v", 128)
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, 192));
        let input = dir.path(&format!("big-{n}.safetensors"));
        let output = dir.path(&format!("out-{n}.safetensors"));
        std::fs::write(&input, &bytes).unwrap();
        let start = std::time::Instant::now();
        let (code, stderr, errors) = run_case(&input, &output);
        assert_eq!(code, Some(1), "{shape}: {stderr}");
        assert_eq!(errors.len(), 1, "{shape}: {stderr}");
        assert!(errors[0].starts_with("error: "), "{shape}: {}", errors[0]);
        assert!(!output.exists(), "{shape}: an output file was left");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{shape}: refused only after {:?}",
            start.elapsed()
        );
    }
}
