//! What the CLI tests (`tests/cli*.rs`) share: running the `wgattn` binary, scratch
//! directories, and the failure contract (non-zero exit, one `error:` line, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
