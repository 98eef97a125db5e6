//! Attention throughput per path: `reference` (CPU, f64), `staged` (four WGSL kernels through
//! a materialized `[B, Hq, Lq, Lt]` intermediate) and `fused` (one tiled online-softmax pass).
//!
//! Every benchmark sets `Throughput::Elements(dense FLOPs)`, `2·B·Hq·Lq·Lt·(D + Dv)`, so
//! criterion's "elem/s" reads as FLOP/s. A GPU call reads its result back, so the timed region
//! includes the upload, the GPU work and the read-back.
//!
//! ```text
//! cargo bench --bench attention                 # full run (a few minutes on lavapipe)
//! cargo bench --bench attention -- --test       # run each case once, no timing
//! cargo bench --bench attention -- staged/      # one group
//! ```
//!
//! Before timing, each case runs once on every path and each GPU output is checked against the
//! reference, so a broken kernel fails the bench instead of being timed.

use std::hint::black_box;
use std::time::Duration;

use anyhow::{bail, Context as _};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use wgattn::{
    masked_attention, masks, reference, AttentionInputs, AttentionOptions, AttentionProblem,
    Context, DType, ExecutionPath, Mask, Tensor,
};

/// The GPU paths benchmarked, each a criterion group of its name.
const GPU_PATHS: [ExecutionPath; 2] = [ExecutionPath::Staged, ExecutionPath::Fused];

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: [usize; 4], dtype: DType) -> anyhow::Result<Tensor> {
        let data: Vec<f32> = (0..shape.iter().product())
            .map(|_| self.uniform())
            .collect();
        Ok(Tensor::from_f32_as(shape, &data, dtype)?)
    }
}

/// One benchmarked problem.
struct Case {
    name: &'static str,
    dtype: DType,
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    len: usize,
    dim: usize,
    causal: bool,
    /// Right padding per batch entry as an HF `attention_mask`, if any.
    padded_len: Option<&'static [usize]>,
}

const CASES: &[Case] = &[
    // Almost no arithmetic: the fixed cost of one call (validation, upload, four dispatches,
    // read-back).
    Case {
        name: "f32_b1_h1_l8_d64_overhead",
        dtype: DType::F32,
        batch: 1,
        q_heads: 1,
        kv_heads: 1,
        len: 8,
        dim: 64,
        causal: false,
        padded_len: None,
    },
    Case {
        name: "f32_b1_h4_l128_d64",
        dtype: DType::F32,
        batch: 1,
        q_heads: 4,
        kv_heads: 4,
        len: 128,
        dim: 64,
        causal: false,
        padded_len: None,
    },
    Case {
        name: "f32_b1_h4_l128_d64_causal",
        dtype: DType::F32,
        batch: 1,
        q_heads: 4,
        kv_heads: 4,
        len: 128,
        dim: 64,
        causal: true,
        padded_len: None,
    },
    Case {
        name: "f32_b2_h4_l128_d64_causal_padmask",
        dtype: DType::F32,
        batch: 2,
        q_heads: 4,
        kv_heads: 4,
        len: 128,
        dim: 64,
        causal: true,
        padded_len: Some(&[128, 97]),
    },
    Case {
        name: "f32_b1_h8_l256_d64_causal",
        dtype: DType::F32,
        batch: 1,
        q_heads: 8,
        kv_heads: 8,
        len: 256,
        dim: 64,
        causal: true,
        padded_len: None,
    },
    Case {
        name: "f32_b1_hq8_hkv2_l256_d64_causal_gqa",
        dtype: DType::F32,
        batch: 1,
        q_heads: 8,
        kv_heads: 2,
        len: 256,
        dim: 64,
        causal: true,
        padded_len: None,
    },
    Case {
        name: "f16_b1_h4_l128_d64_causal",
        dtype: DType::F16,
        batch: 1,
        q_heads: 4,
        kv_heads: 4,
        len: 128,
        dim: 64,
        causal: true,
        padded_len: None,
    },
];

/// A case's tensors and options, built once.
struct Prepared {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Mask>,
    options: AttentionOptions,
}

impl Prepared {
    fn new(case: &Case, seed: u64) -> anyhow::Result<Self> {
        let mut rng = Rng::new(seed);
        let (b, l, d) = (case.batch, case.len, case.dim);
        let q = rng.tensor([b, case.q_heads, l, d], case.dtype)?;
        let k = rng.tensor([b, case.kv_heads, l, d], case.dtype)?;
        let v = rng.tensor([b, case.kv_heads, l, d], case.dtype)?;
        let mask = match case.padded_len {
            None => None,
            Some(real) => {
                let hf: Vec<i64> = real
                    .iter()
                    .flat_map(|&n| (0..l).map(move |j| (j < n) as i64))
                    .collect();
                Some(masks::from_hf_attention_mask(&hf, b, l)?)
            }
        };
        let options = AttentionOptions {
            causal: case.causal,
            ..Default::default()
        };
        Ok(Prepared {
            q,
            k,
            v,
            mask,
            options,
        })
    }

    /// The case's options on one GPU path.
    fn on(&self, path: ExecutionPath) -> AttentionOptions {
        AttentionOptions {
            path,
            ..self.options.clone()
        }
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        let inputs = AttentionInputs::new(&self.q, &self.k, &self.v);
        match &self.mask {
            Some(m) => inputs.with_mask(m),
            None => inputs,
        }
    }
}

/// Runs every path once and compares each GPU `out` with the reference, so only correct
/// kernels get timed.
fn check(ctx: &Context, case: &Case, prep: &Prepared) -> anyhow::Result<()> {
    let inputs = prep.inputs();
    let want = reference::masked_attention(&inputs, &prep.options)
        .with_context(|| format!("{}: reference", case.name))?
        .out
        .to_f64_vec();
    // f16 out is rounded once: half an ulp at |x| < 1 is below 5e-4; f32 accumulates in f32.
    let tol = match case.dtype {
        DType::F32 => 1e-4,
        DType::F16 | DType::BF16 => 4e-3,
    };
    for path in GPU_PATHS {
        let what = format!("{} on the {} path", case.name, path.name());
        let got = masked_attention(ctx, &inputs, &prep.on(path))
            .with_context(|| what.clone())?
            .out
            .to_f64_vec();
        if got.len() != want.len() {
            bail!(
                "{what}: out has {} elements, want {}",
                got.len(),
                want.len()
            );
        }
        let bad = got.iter().zip(&want).enumerate().find(|(_, (a, b))| {
            let err = (*a - *b).abs();
            err.is_nan() || err > tol
        });
        if let Some((i, (a, b))) = bad {
            bail!("{what}: out[{i}] = {a}, reference = {b} (tolerance {tol})");
        }
    }
    Ok(())
}

/// Few samples, each one call or a handful: a full run stays within minutes on a software
/// adapter. Flat sampling avoids linear sampling's 55-call minimum per benchmark.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn main() -> anyhow::Result<()> {
    let ctx = Context::new().context(
        "the GPU benchmarks need an adapter; without a GPU install the software Vulkan \
         driver (apt-get install -y mesa-vulkan-drivers)",
    )?;
    let info = ctx.adapter_info();
    eprintln!(
        "adapter: {} ({:?}, driver {} {})",
        info.name, info.backend, info.driver, info.driver_info
    );

    let mut prepared = Vec::with_capacity(CASES.len());
    for (seed, case) in CASES.iter().enumerate() {
        let prep = Prepared::new(case, seed as u64 + 1)?;
        let problem = AttentionProblem::new(&prep.inputs(), &prep.options)?;
        check(&ctx, case, &prep)?;
        prepared.push((case, prep, problem.dense_flops() as u64));
    }

    let mut c = Criterion::default().configure_from_args();

    let mut group = c.benchmark_group("reference");
    configure(&mut group);
    for (case, prep, flops) in &prepared {
        group.throughput(Throughput::Elements(*flops));
        let inputs = prep.inputs();
        group.bench_function(case.name, |b| {
            b.iter(|| {
                reference::masked_attention(black_box(&inputs), black_box(&prep.options))
                    .expect("checked before timing")
            })
        });
    }
    group.finish();

    for path in GPU_PATHS {
        let mut group = c.benchmark_group(path.name());
        configure(&mut group);
        for (case, prep, flops) in &prepared {
            group.throughput(Throughput::Elements(*flops));
            let inputs = prep.inputs();
            let options = prep.on(path);
            group.bench_function(case.name, |b| {
                b.iter(|| {
                    masked_attention(&ctx, black_box(&inputs), black_box(&options))
                        .expect("checked before timing")
                })
            });
        }
        group.finish();
    }

    c.final_summary();
    Ok(())
}
