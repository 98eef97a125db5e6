//! What the CLI tests (`tests/cli*.rs`, `tests/browser.rs`) share: case files, running the
//! `wgattn` binary, scratch directories, and the failure contract (non-zero exit, one `error:`
//! line, no panic).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use wgattn::{DType, Mask, Tensor};

/// A case file under construction: named raw tensors and string metadata.
#[derive(Default)]
pub struct CaseFile {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

/// safetensors' name of a dtype.
pub fn st_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
    }
}

impl CaseFile {
    /// A case of `q`, `k`, `v`.
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor) -> CaseFile {
        CaseFile::default()
            .tensor("q", q)
            .tensor("k", k)
            .tensor("v", v)
    }

    /// Adds a tensor as raw little-endian bytes (any dtype, malformed ones included).
    pub fn raw(mut self, name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> CaseFile {
        self.tensors
            .push((name.into(), dtype, shape.to_vec(), bytes));
        self
    }

    pub fn tensor(self, name: &str, t: &Tensor) -> CaseFile {
        self.raw(name, st_dtype(t.dtype()), t.shape(), t.to_le_bytes())
    }

    /// `mask`: BOOL bytes or the additive tensor.
    pub fn mask(self, mask: &Mask) -> CaseFile {
        match mask {
            Mask::Bool(m) => self.bool_mask(m.shape(), m.data()),
            Mask::Additive(t) => self.tensor("mask", t),
        }
    }

    pub fn bool_mask(self, shape: &[usize], data: &[bool]) -> CaseFile {
        let bytes = data.iter().map(|&b| b as u8).collect();
        self.raw("mask", Dtype::BOOL, shape, bytes)
    }

    pub fn kv_lengths_i64(self, lengths: &[i64]) -> CaseFile {
        let bytes = lengths.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.raw("kv_lengths", Dtype::I64, &[lengths.len()], bytes)
    }

    pub fn kv_lengths_i32(self, lengths: &[i32]) -> CaseFile {
        let bytes = lengths.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.raw("kv_lengths", Dtype::I32, &[lengths.len()], bytes)
    }

    pub fn meta(mut self, key: &str, value: &str) -> CaseFile {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn without(mut self, name: &str) -> CaseFile {
        self.tensors.retain(|(n, ..)| n != name);
        self
    }

    /// The safetensors file.
    pub fn bytes(&self) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                let view = TensorView::new(*dtype, shape.clone(), bytes).unwrap();
                (name.as_str(), view)
            })
            .collect();
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(views, metadata).unwrap()
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// The `wgattn` binary with `args`, not yet run (to change its environment first).
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgattn"));
    c.args(args);
    c
}

/// Runs the `wgattn` binary with `args`.
pub fn wgattn(args: &[&str]) -> Output {
    command(args).output().expect("the wgattn binary runs")
}

/// Captured output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `wgattn ARGS...`, asserting success; its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let o = wgattn(args);
    assert!(
        o.status.success(),
        "wgattn {args:?} failed ({}): {}",
        o.status,
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Asserts the failure contract: non-zero exit, exactly one `error:` line on stderr that
/// mentions every one of `expect`, no panic.
pub fn assert_fails(o: &Output, expect: &[&str]) {
    let stderr = text(&o.stderr);
    assert!(!o.status.success(), "expected a failure, stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "stderr: {stderr:?}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr:?}");
    for word in expect {
        assert!(
            stderr.contains(word),
            "stderr should mention {word:?}: {stderr:?}"
        );
    }
}

/// A fresh directory under Cargo's scratch space for integration tests (`target/tmp`), named
/// after the test binary, the process and `test`; removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "wgattn-{}-{}-{test}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// [`Scratch::path`] as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// The names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
