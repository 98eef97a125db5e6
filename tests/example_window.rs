//! Runs `examples/live_window.rs` in a real window under Xvfb for 20 frames (each one encoder:
//! attention, the colormap pass, the blit to the surface; presented) and checks its
//! screenshot of the last frame against the CPU reference for that frame's options, coloured
//! as the colormap pass colours it. Needs Xvfb (`xvfb-run`): without it the test fails and
//! says how to install it.
#![cfg(feature = "window")]

#[allow(dead_code)]
#[path = "../examples/live_window.rs"]
mod example;

#[path = "common/picture.rs"]
mod picture;

use std::path::{Path, PathBuf};
use std::process::Command;

use wgattn::{reference, AttentionInputs};

const FRAMES: u64 = 20;

/// The example's binary, built by Cargo with this test's features and profile (so with
/// `cargo test --all-features` it is already built and fresh).
fn example_binary() -> PathBuf {
    let mut features = vec!["window"];
    if cfg!(feature = "cli") {
        features.push("cli");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--example", "live_window", "--message-format=json"])
        .args(["--features", &features.join(",")])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let out = build.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "live_window")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the example's executable")
}

/// How long the example may run (a few seconds here; a first frame with a cold shader cache
/// takes longer) before it is taken for hung and killed with its X server.
const TIMEOUT_S: u32 = 300;

/// `xvfb-run` under `timeout`, or a failure saying how to get it.
fn xvfb_run() -> Command {
    let found = Command::new("sh")
        .args([
            "-c",
            "command -v xvfb-run && command -v Xvfb && command -v xauth",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test opens a window under Xvfb, and xvfb-run, Xvfb or xauth is missing: \
         `apt-get install -y xvfb xauth libx11-6 libx11-xcb1 libxcursor1 libxi6 libxcb1 \
         libxkbcommon-x11-0` (Xvfb and the X client libraries winit loads; `.ci/run` \
         installs them), or build without the `window` feature"
    );
    // coreutils' timeout signals its whole process group: the example, Xvfb and xvfb-run.
    let mut c = Command::new("timeout");
    c.args(["-k", "10", &TIMEOUT_S.to_string(), "xvfb-run"]);
    // Any free display; a 24-bit screen, said rather than left to xvfb-run's default (at
    // depth 16 lavapipe's surface offers no formats at all).
    c.args(["-a", "-s", "-screen 0 1024x768x24 -nolisten tcp"]);
    c
}

#[test]
fn live_window_presents_the_attention_of_its_last_frame() {
    let mut xvfb = xvfb_run();
    let binary = example_binary();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wgattn-window-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("live.png");

    let out = xvfb
        .arg(&binary)
        .args(["--frames", &FRAMES.to_string(), "--screenshot"])
        .arg(&shot)
        .output()
        .expect("xvfb-run runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert_ne!(
        out.status.code(),
        Some(124),
        "the example ran over {TIMEOUT_S} s:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the example failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("presented {FRAMES} frames")),
        "{stdout}"
    );

    let (rgba, width, height) = picture::read_png(&shot);
    let (cols, rows) = example::picture_size();
    let zoom = if stdout.contains("the presented surface texture") {
        example::ZOOM
    } else {
        1 // the colormap texture itself (a surface that allows no copies)
    };
    assert_eq!((width, height), (cols * zoom, rows * zoom), "{stdout}");

    let (q, k, v) = example::inputs();
    let reference_of = |frame: u64| {
        reference::masked_attention(&AttentionInputs::new(&q, &k, &v), &example::options(frame))
            .unwrap()
            .out
            .to_f32_vec()
    };
    let last = reference_of(FRAMES - 1);
    picture::assert_shows(
        &rgba,
        (width, height),
        &last,
        cols as usize,
        example::app::rgb8,
    );
    // The picture moves: the first frame's differs, somewhere, by more than the tolerance.
    let first = reference_of(0);
    assert!(
        first.iter().zip(&last).any(|(a, b)| (0..3)
            .any(|c| example::app::rgb8(*a)[c].abs_diff(example::app::rgb8(*b)[c]) > 8)),
        "frame 0 and frame {} draw the same picture",
        FRAMES - 1
    );
    std::fs::remove_dir_all(&dir).ok();
}
