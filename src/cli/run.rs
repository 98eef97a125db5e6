//! `wgattn run`: one case file in, one result file out.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use wgattn::{AttentionProblem, Context, ExecutionPath, Returns, Tuning};

use super::case_file::Case;
use super::options::{parse_returns, OptionFlags};
use super::result_file;
use super::tuning::{help, parse_tuning};

/// Which implementation computes the result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The GPU, fused kernel unless intermediates are asked for or the shape needs staged.
    Auto,
    /// The GPU, four kernels materializing the scores (can return intermediates).
    Staged,
    /// The GPU, one tiled online-softmax pass (no intermediates).
    Fused,
    /// The f64 CPU reference (`wgattn::reference::masked_attention`).
    Reference,
}

impl Engine {
    /// The GPU path, or `None` for the CPU reference.
    fn gpu_path(self) -> Option<ExecutionPath> {
        match self {
            Engine::Auto => Some(ExecutionPath::Auto),
            Engine::Staged => Some(ExecutionPath::Staged),
            Engine::Fused => Some(ExecutionPath::Fused),
            Engine::Reference => None,
        }
    }
}

/// Options given here override the case file's metadata.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Case file (safetensors): q, k, v; optionally mask, past_k, past_v, kv_lengths.
    #[arg(value_name = "CASE")]
    pub case: PathBuf,
    /// Result file to write (safetensors): out, present_k/present_v, intermediates.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    #[command(flatten)]
    pub options: OptionFlags,
    /// Intermediates to write too: a comma-separated list of scores, logits, probs.
    #[arg(long = "return", value_name = "LIST", value_parser = parse_returns)]
    pub returns: Option<Returns>,
    /// Implementation to run.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub path: Engine,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = parse_tuning,
        help = concat!(help!(), " GPU paths only.")
    )]
    pub tuning: Option<Tuning>,
    /// Fill the GPU's output buffers with NaN before the run, so an element no kernel wrote
    /// shows as NaN instead of a stale value.
    #[arg(long)]
    pub poison: bool,
}

/// Reads and validates everything before touching the GPU, then computes and writes.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.path == Engine::Reference && (args.tuning.is_some() || args.poison) {
        bail!("--tuning and --poison apply to the GPU paths; --path reference runs on the CPU");
    }
    result_file::check_output_dir(&args.output)?;
    let case = Case::read(&args.case)?;
    let mut options = args
        .options
        .values(args.returns)
        .or(case.options.clone())
        .resolve();
    let inputs = case.inputs();
    let in_case = || format!("case file {}", args.case.display());
    let problem = AttentionProblem::new(&inputs, &options).with_context(in_case)?;

    let mut metadata = HashMap::new();
    let output = match args.path.gpu_path() {
        Some(requested) => {
            let ctx = Context::new()?;
            if let Some(tuning) = args.tuning {
                ctx.set_tuning(tuning);
            }
            ctx.set_poison_outputs(args.poison);
            // Timed, so the result can name the kernel variants that ran.
            ctx.set_gpu_timing(true);
            options.path = wgattn::resolve_path(&ctx, &problem, requested).with_context(in_case)?;
            metadata.insert("path".into(), options.path.name().into());
            metadata.insert("adapter".into(), ctx.adapter_info().name.clone());
            metadata.insert(
                "backend".into(),
                format!("{:?}", ctx.adapter_info().backend),
            );
            let output = wgattn::masked_attention(&ctx, &inputs, &options).with_context(in_case)?;
            if !output.gpu_kernels.is_empty() {
                let variants: Vec<&str> = output
                    .gpu_kernels
                    .iter()
                    .map(|k| k.variant.as_str())
                    .collect();
                metadata.insert("kernels".into(), variants.join("; "));
            }
            output
        }
        None => {
            metadata.insert("path".into(), "reference".into());
            wgattn::reference::masked_attention(&inputs, &options).with_context(in_case)?
        }
    };
    result_file::write(&args.output, &output, metadata)
}
