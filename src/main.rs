//! `wgattn`: run masked-attention case files, describe the GPU adapter, try the engine, time
//! one shape on one path or a whole benchmark suite, or draw attention probabilities and masks.
//!
//! Every failure ends the process with a non-zero status and exactly one line on stderr,
//! `error: ...`, the whole cause chain joined with `: `.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Masked attention on any GPU (wgpu), checked against a CPU reference.
#[derive(Parser, Debug)]
#[command(name = "wgattn", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one case file (safetensors) and write the result file.
    Run(cli::run::RunArgs),
    /// Describe the adapter the engine picks, with the features and limits that matter.
    Info,
    /// Run a small masked attention (GQA, causal, padded batch) and check it against the CPU
    /// reference. Start here.
    Demo(cli::demo::DemoArgs),
    /// Time one shape on one path (reference, staged, fused) with seeded random inputs: median,
    /// min, max, dense GFLOP/s and peak GPU memory; `--json` for one line a script can read.
    /// Or run a fixed grid into a JSON report you can share (`--suite standard`), compare two
    /// reports (`--compare A.json B.json`) and plot one (`--plot REPORT.json -o bench.svg`).
    Bench(cli::bench::BenchArgs),
    /// Draw a case's attention probabilities as one heatmap per head (PNG): keys across,
    /// queries down, masked positions grey.
    Heatmap(cli::heatmap::HeatmapArgs),
    /// Draw which positions a mask allows, per batch entry and head (PNG, or text with
    /// `--ascii`), from flags or a case file, without running attention.
    Mask(cli::mask::MaskArgs),
    /// Write every specialized shader the engine can build as a standalone WGSL file, with a
    /// manifest (kernel, dtype, mask, tile, features, workgroup size, bind group layout).
    Shaders(cli::shaders::ShadersArgs),
    /// Write the execution plan of case files as JSON: the buffers with their initial
    /// contents, the shaders, the ordered dispatches and copies, where the results lie and
    /// the CPU reference's expected values (`web/` replays it with WebGPU in a browser).
    Plan(cli::plan::PlanArgs),
}

/// Exit status of a command-line mistake (clap's convention).
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    quiet_headless_vulkan();
    cli::errors::install_panic_hook();
    let args = match Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return cli::errors::report_usage(&e),
    };
    let result = match args.command {
        Some(Command::Run(run)) => cli::run::run(&run),
        Some(Command::Info) => cli::info::info(),
        Some(Command::Demo(demo)) => cli::demo::demo(&demo),
        Some(Command::Bench(bench)) => cli::bench::bench(&bench),
        Some(Command::Heatmap(heatmap)) => cli::heatmap::heatmap(&heatmap),
        Some(Command::Mask(mask)) => cli::mask::mask(&mask),
        Some(Command::Shaders(shaders)) => cli::shaders::shaders(&shaders),
        Some(Command::Plan(plan)) => cli::plan::plan(&plan),
        None => {
            eprintln!("error: no command given; try `wgattn demo` first, or see `wgattn --help`");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::errors::report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan device-select layer prints "XDG_RUNTIME_DIR is invalid" lines on a headless
/// machine; it only reorders devices, which wgpu enumerates itself, so a headless run turns
/// it off (a caller who sets NODEVICE_SELECT keeps their choice).
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}
