//! `wgattn demo`: a realistic masked attention on the default adapter, checked against the CPU
//! reference, with timings. The newcomer's first command.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use wgattn::{
    AttentionInputs, AttentionOptions, AttentionProblem, Context, DType, ExecutionPath, Tensor,
};

/// Shape of the demo: a GQA decoder layer's attention over a right-padded batch.
const BATCH: usize = 2;
const Q_HEADS: usize = 4;
const KV_HEADS: usize = 2;
const SEQ: usize = 48;
const HEAD_DIM: usize = 64;
/// Real tokens per sequence; the rest is padding.
const LENGTHS: [usize; BATCH] = [48, 29];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Timed runs per dtype (after one warm-up); the median is shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
}

/// One row of the table.
struct Row {
    path: &'static str,
    dtype: DType,
    adapter: String,
    error: Option<f64>,
    time: Duration,
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let ctx = Context::new()?;
    let adapter = format!(
        "{} ({:?})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend
    );
    let hf_mask: Vec<i64> = LENGTHS
        .iter()
        .flat_map(|&len| (0..SEQ).map(move |j| (j < len) as i64))
        .collect();
    let mask = wgattn::masks::from_hf_attention_mask(&hf_mask, BATCH, SEQ)?;
    let options = AttentionOptions {
        causal: true,
        ..Default::default()
    };
    println!(
        "masked attention: batch {BATCH}, {Q_HEADS} query heads over {KV_HEADS} kv heads (GQA), \
         Lq = Lk = {SEQ}, D = {HEAD_DIM}, causal + HF attention_mask (lengths {}, {})",
        LENGTHS[0], LENGTHS[1]
    );
    println!();

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::F16, 5e-3)] {
        let (q, k, v) = inputs(dtype)?;
        let inputs = AttentionInputs::new(&q, &k, &v).with_mask(&mask);
        let problem = AttentionProblem::new(&inputs, &options)?;
        let (want, ref_time) = timed(1, || {
            wgattn::reference::masked_attention(&inputs, &options).map_err(Into::into)
        })?;
        for path in [ExecutionPath::Staged, ExecutionPath::Fused] {
            // A path the adapter cannot run this shape on is left out of the table.
            if wgattn::resolve_path(&ctx, &problem, path).is_err() {
                continue;
            }
            let options = AttentionOptions {
                path,
                ..options.clone()
            };
            let (got, time) = timed(args.runs, || {
                wgattn::masked_attention(&ctx, &inputs, &options)
                    .with_context(|| format!("{} {dtype} on {adapter}", path.name()))
            })?;
            let error = super::check::max_abs_error(&got.out, &want.out);
            // Never NaN: max_abs_error maps a non-finite mismatch to infinity.
            if error > tolerance {
                failures.push(format!(
                    "{} {dtype}: max error {error:.3e} exceeds {tolerance:.0e}",
                    path.name()
                ));
            }
            rows.push(Row {
                path: path.name(),
                dtype,
                adapter: adapter.clone(),
                error: Some(error),
                time,
            });
        }
        rows.push(Row {
            path: "reference",
            dtype,
            adapter: "CPU, f64".into(),
            error: None,
            time: ref_time,
        });
    }
    print_table(&rows, args.runs);
    println!();
    println!(
        "checked: the GPU kernels' output equals the f64 CPU reference (SEMANTICS.md) within \
         1e-4 in f32 and 5e-3 in f16, for causal attention with GQA and padded keys masked."
    );
    if !failures.is_empty() {
        bail!("demo failed: {}", failures.join("; "));
    }
    Ok(())
}

/// Seeded q, k, v in [-1, 1), rounded to `dtype`.
fn inputs(dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
    let mut rng = SplitMix(0x5eed);
    let mut make = |shape: [usize; 4]| {
        let data: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.uniform())
            .collect();
        Tensor::from_f32_as(shape, &data, dtype)
    };
    Ok((
        make([BATCH, Q_HEADS, SEQ, HEAD_DIM])?,
        make([BATCH, KV_HEADS, SEQ, HEAD_DIM])?,
        make([BATCH, KV_HEADS, SEQ, HEAD_DIM])?,
    ))
}

/// Runs `f` once to warm up (pipelines, buffers), then `runs` times; the last result and the
/// median time.
fn timed<T>(runs: u32, mut f: impl FnMut() -> Result<T>) -> Result<(T, Duration)> {
    let mut result = f()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        result = f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok((result, times[times.len() / 2]))
}

fn print_table(rows: &[Row], runs: u32) {
    let adapter_width = rows.iter().map(|r| r.adapter.len()).max().unwrap_or(0);
    println!(
        "{:<10} {:<5} {:<adapter_width$}  {:>16}  {:>16}",
        "path",
        "dtype",
        "adapter",
        "max |err| vs ref",
        format!("ms (median of {runs})")
    );
    for r in rows {
        let error = r.error.map_or("-".into(), |e| format!("{e:.2e}"));
        println!(
            "{:<10} {:<5} {:<adapter_width$}  {:>16}  {:>16.3}",
            r.path,
            r.dtype.name(),
            r.adapter,
            error,
            r.time.as_secs_f64() * 1e3
        );
    }
}

/// Tiny seeded generator, so the demo prints the same numbers every time.
struct SplitMix(u64);

impl SplitMix {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}
