//! Scratch check (2026-12-07): the fused prefill kernel, the decode kernel and the staged path
//! against each other (and the f64 reference where it is quick) on one shape of seeded inputs.
//! Copy to `examples/` and run:
//!
//! ```text
//! cp benchmarks/2026-12-07-loop-limit-check.rs examples/loop_limit_check.rs
//! cargo run --release --example loop_limit_check -- HQ HKV LQ LT D [CAUSAL]
//! ```
//!
//! With `NOLIMIT=1` the engine's bound on loop trips per invocation is off
//! (`max_loop_trips = u64::MAX`, the configuration before it); add
//! `WGATTN_SHADER_DIR=DIR` with the `attend_values.wgsl` of `9407165` for the staged path before.
use wgattn::{
    masked_attention, reference, AttentionInputs, AttentionOptions, Context, ExecutionPath, Tensor,
    Tuning,
};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    })
}

fn main() -> anyhow::Result<()> {
    let ctx = Context::new()?;
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(args.len() >= 5, "usage: HQ HKV LQ LT D [CAUSAL]");
    let (hq, hkv, lq, lt, d) = (args[0], args[1], args[2], args[3], args[4]);
    let limit = std::env::var_os("NOLIMIT").map(|_| u64::MAX);
    let mut s = 12345u64;
    let mut fill = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let q = Tensor::from_f32([1, hq, lq, d], fill(hq * lq * d))?;
    let k = Tensor::from_f32([1, hkv, lt, d], fill(hkv * lt * d))?;
    let v = Tensor::from_f32([1, hkv, lt, d], fill(hkv * lt * d))?;
    let inputs = AttentionInputs::new(&q, &k, &v);
    let mut o = AttentionOptions {
        causal: args.get(5) == Some(&1),
        path: ExecutionPath::Staged,
        ..Default::default()
    };
    ctx.set_tuning(Tuning {
        max_loop_trips: limit,
        ..Tuning::AUTO
    });
    let staged = masked_attention(&ctx, &inputs, &o)?.out.to_f32_vec();
    if hq * lq * lt * d < 2_000_000_000 {
        let r = reference::masked_attention(&inputs, &o)?.out.to_f32_vec();
        println!("max |staged - reference| = {:e}", max_diff(&staged, &r));
    }
    o.path = ExecutionPath::Fused;
    for (kernel, max_q) in [("prefill", 0usize), ("decode", 1 << 20)] {
        ctx.set_tuning(Tuning {
            decode_max_q: Some(max_q),
            max_loop_trips: limit,
            ..Tuning::AUTO
        });
        let fused = masked_attention(&ctx, &inputs, &o)?.out.to_f32_vec();
        println!(
            "max |fused {kernel} - staged| = {:e}",
            max_diff(&fused, &staged)
        );
    }
    Ok(())
}
