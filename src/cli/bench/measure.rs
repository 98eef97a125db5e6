//! Timing one request: seeded inputs, the warm-up and timed calls, the figures. Both the
//! one-shape `wgattn bench` and the suites measure through [`Prepared::run`].
//!
//! Each timed call is one whole `masked_attention` (upload, every kernel, read-back), measured
//! by the wall clock.

use std::time::{Duration, Instant};

use crate::cli::check::Agreement;
use anyhow::{anyhow, Result};
use wgattn::{
    AttentionInputs, AttentionOptions, AttentionProblem, BlockMask, Context, DType, ExecutionPath,
    GpuInputs, GpuTensor, KernelTime, MaskMods, Tensor,
};

/// Which implementation is timed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPath {
    /// The f64 CPU reference (`wgattn::reference::masked_attention`).
    Reference,
    /// The GPU, four kernels materializing the scores.
    Staged,
    /// The GPU, one tiled online-softmax pass.
    Fused,
}

impl BenchPath {
    pub fn name(self) -> &'static str {
        match self {
            BenchPath::Reference => "reference",
            BenchPath::Staged => "staged",
            BenchPath::Fused => "fused",
        }
    }

    /// The GPU path, or `None` for the CPU reference.
    pub fn gpu_path(self) -> Option<ExecutionPath> {
        match self {
            BenchPath::Reference => None,
            BenchPath::Staged => Some(ExecutionPath::Staged),
            BenchPath::Fused => Some(ExecutionPath::Fused),
        }
    }
}

/// Every size of a request; tensors are built in `bhsd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub v_dim: usize,
}

/// What to time: a path, a shape, the structured masks and the element type.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub path: BenchPath,
    pub shape: Shape,
    pub dtype: DType,
    pub causal: bool,
    /// Keys to the left of the diagonal; -1 = unbounded.
    pub window_left: i64,
    /// Keys to the right of the diagonal; -1 = unbounded.
    pub window_right: i64,
    /// `c` of the softcap `c * tanh(s / c)`; 0 = none.
    pub softcap: f32,
    /// Valid keys per batch entry (ONNX `nonpad_kv_seqlen`): a key-padding mask.
    pub kv_lengths: Option<Vec<i64>>,
    /// Structured and user-defined masks, and words naming them for the tables.
    pub mods: Option<(MaskMods, String)>,
    /// Build the block mask once, before the timed calls, and reuse it in each.
    pub reuse_block_mask: bool,
    /// Keep q, k, v on the device: upload them once, then time each call recorded into an
    /// encoder (`wgattn::record_attention`), submitted and waited for, with `out` left there.
    pub resident: bool,
}

impl Request {
    fn options(&self) -> AttentionOptions {
        AttentionOptions {
            causal: self.causal,
            window_left: self.window_left,
            window_right: self.window_right,
            softcap: self.softcap,
            path: self.path.gpu_path().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// The masks in words: `none`, `causal`, `causal + window (left 4, right unbounded)`,
    /// `key lengths [12]`.
    pub fn mask_description(&self) -> String {
        let side = |w: i64| {
            if w < 0 {
                "unbounded".to_string()
            } else {
                w.to_string()
            }
        };
        let mut parts = Vec::new();
        if self.causal {
            parts.push("causal".to_string());
        }
        if self.window_left >= 0 || self.window_right >= 0 {
            parts.push(format!(
                "window (left {}, right {})",
                side(self.window_left),
                side(self.window_right)
            ));
        }
        if let Some(lengths) = &self.kv_lengths {
            parts.push(format!("key lengths {lengths:?}"));
        }
        if self.softcap > 0.0 {
            parts.push(format!("softcap {}", self.softcap));
        }
        if let Some((_, words)) = &self.mods {
            parts.push(words.clone());
        }
        if self.reuse_block_mask {
            parts.push("block mask reused".into());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }
}

/// How many calls to make: `warmup` untimed ones, then timed ones until `max_iters` are done,
/// or until at least `min_iters` are done and the timed calls add up to `budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iterations {
    pub warmup: usize,
    pub min_iters: usize,
    pub max_iters: usize,
    pub budget: Duration,
}

impl Iterations {
    /// Exactly `iters` timed calls after `warmup` untimed ones.
    pub fn fixed(warmup: usize, iters: usize) -> Iterations {
        Iterations {
            warmup,
            min_iters: iters,
            max_iters: iters,
            budget: Duration::ZERO,
        }
    }
}

/// What a finished run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Dense FLOPs of one call, `2·B·Hq·Lq·Lt·(D + Dv)`.
    pub flops: f64,
    /// The time of each timed call, sorted.
    pub times: Vec<Duration>,
    /// The engine's peak GPU allocation over the calls (0 for the reference).
    pub gpu_bytes: u64,
    /// The device time of each timed call's kernels, sorted: timestamp queries, where the
    /// adapter offers them and every call reported one (empty otherwise).
    pub gpu_times: Vec<Duration>,
    /// Each kernel's device time in each timed call (summed over its passes), in the order
    /// the calls ran the kernels; empty where `gpu_times` is.
    pub gpu_kernels: Vec<KernelTimes>,
}

/// One kernel's device times over the timed calls.
#[derive(Clone, Debug, Default)]
pub struct KernelTimes {
    pub kernel: String,
    /// The specializations its passes ran (pipeline labels), each once, in order.
    pub variants: Vec<String>,
    /// Its time in each call, sorted.
    pub times: Vec<Duration>,
}

impl Measured {
    /// The middle time (the mean of the two middle ones for an even count).
    pub fn median(&self) -> Duration {
        median(&self.times).unwrap_or_default()
    }

    pub fn min(&self) -> Duration {
        self.times[0]
    }

    pub fn max(&self) -> Duration {
        self.times[self.times.len() - 1]
    }

    /// The middle device time of the kernels, where measured.
    pub fn gpu_median(&self) -> Option<Duration> {
        median(&self.gpu_times)
    }

    /// Each kernel's middle device time, in the order the calls ran them.
    pub fn gpu_kernel_medians(&self) -> Vec<(&KernelTimes, Duration)> {
        self.gpu_kernels
            .iter()
            .filter_map(|k| Some((k, median(&k.times)?)))
            .collect()
    }

    /// Dense GFLOP/s over the median.
    pub fn gflops(&self) -> f64 {
        self.flops / self.median().as_secs_f64() / 1e9
    }
}

/// The middle of sorted `times` (the mean of the two middle ones for an even count).
fn median(times: &[Duration]) -> Option<Duration> {
    let n = times.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(times[n / 2]),
        _ => Some((times[n / 2 - 1] + times[n / 2]) / 2),
    }
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

/// A request with its inputs built and checked by the library, ready to time.
pub struct Prepared {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv_lengths: Option<Vec<i64>>,
    mods: Option<MaskMods>,
    reuse_block_mask: bool,
    resident: bool,
    options: AttentionOptions,
    problem: AttentionProblem,
    gpu_path: Option<ExecutionPath>,
}

impl Prepared {
    /// Builds seeded inputs for `request` and validates the whole request.
    pub fn new(request: &Request) -> Result<Prepared> {
        let (q, k, v) = inputs(&request.shape, request.dtype)?;
        let options = request.options();
        let kv_lengths = request.kv_lengths.clone();
        let mods = request.mods.as_ref().map(|(m, _)| m.clone());
        let mut attention = AttentionInputs::new(&q, &k, &v);
        if let Some(lengths) = &kv_lengths {
            attention = attention.with_kv_lengths(lengths);
        }
        if let Some(m) = &mods {
            attention = attention.with_mods(m);
            let snippet = m.mask_mod.is_some() || m.score_mod.is_some();
            if snippet && request.path == BenchPath::Reference {
                return Err(anyhow!(
                    "the CPU reference runs mask_mod / score_mod only as Rust closures \
                     (wgattn::reference::masked_attention_with): time staged or fused"
                ));
            }
        }
        let problem = AttentionProblem::new(&attention, &options)?;
        Ok(Prepared {
            q,
            k,
            v,
            kv_lengths,
            mods,
            reuse_block_mask: request.reuse_block_mask,
            resident: request.resident,
            options,
            problem,
            gpu_path: request.path.gpu_path(),
        })
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        let mut inputs = AttentionInputs::new(&self.q, &self.k, &self.v);
        if let Some(lengths) = &self.kv_lengths {
            inputs = inputs.with_kv_lengths(lengths);
        }
        if let Some(m) = &self.mods {
            inputs = inputs.with_mods(m);
        }
        inputs
    }

    /// The execution plan of this request on `ctx` (`wgattn bench --suite --emit-plan`).
    pub fn plan(&self, ctx: &Context) -> Result<wgattn::plan::Plan> {
        let path = self
            .gpu_path
            .ok_or_else(|| anyhow!("the CPU reference has no execution plan"))?;
        let options = AttentionOptions {
            path,
            ..self.options.clone()
        };
        Ok(wgattn::plan::plan(ctx, &self.inputs(), &options)?)
    }

    /// Dense FLOPs of one call.
    pub fn flops(&self) -> f64 {
        self.problem.dense_flops()
    }

    /// Times the calls `iterations` asks for. A GPU path needs `ctx`. A shape the path cannot
    /// take on the device fails before any call (the fused path) or at the first, before
    /// anything is uploaded (the staged path's binding limits).
    pub fn run(&self, iterations: &Iterations, ctx: Option<&Context>) -> Result<Measured> {
        let inputs = self.inputs();
        let flops = self.flops();
        if self.gpu_path.is_none() {
            let (times, _) = timed(
                iterations,
                || Ok(wgattn::reference::masked_attention(&inputs, &self.options)?),
                |_| None::<()>,
            )?;
            return Ok(Measured {
                flops,
                times,
                gpu_bytes: 0,
                gpu_times: Vec::new(),
                gpu_kernels: Vec::new(),
            });
        }
        let ctx = ctx.ok_or_else(|| anyhow!("internal error: a GPU path without a context"))?;
        if let Some(path) = self.gpu_path {
            wgattn::resolve_path(ctx, &self.problem, path)?;
        }
        ctx.trim_memory();
        if self.resident {
            return self.run_resident(iterations, ctx);
        }
        let block_mask: Option<BlockMask> = if self.reuse_block_mask {
            Some(wgattn::block_mask(ctx, &inputs, &self.options)?)
        } else {
            None
        };
        let inputs = match &block_mask {
            Some(bm) => inputs.with_block_mask(bm),
            None => inputs,
        };
        // Device time beside the wall time (a resolve and a 1 KiB read-back per call).
        ctx.set_gpu_timing(true);
        let timed_calls = timed(
            iterations,
            || Ok(wgattn::masked_attention(ctx, &inputs, &self.options)?),
            |out| out.gpu_time.map(|t| (t, out.gpu_kernels.clone())),
        );
        ctx.set_gpu_timing(false);
        let (times, gpu) = timed_calls?;
        let (gpu_times, gpu_kernels) = device_figures(gpu);
        Ok(Measured {
            flops,
            times,
            gpu_bytes: ctx.memory().peak_bytes,
            gpu_times,
            gpu_kernels,
        })
    }
}

impl Prepared {
    /// `--check`: one more call of the GPU path on the same inputs (uploaded, `out` read
    /// back), held to the f64 CPU reference.
    pub fn check(&self, ctx: &Context) -> Result<Agreement> {
        if self
            .mods
            .as_ref()
            .is_some_and(|m| m.mask_mod.is_some() || m.score_mod.is_some())
        {
            return Err(anyhow!(
                "--check needs the CPU reference, which runs mask_mod / score_mod only as Rust \
                 closures: check those snippets through wgattn::reference::masked_attention_with"
            ));
        }
        let inputs = self.inputs();
        let got = wgattn::masked_attention(ctx, &inputs, &self.options)?;
        let want = wgattn::reference::masked_attention(&inputs, &self.options)?;
        Ok(Agreement::of(&got.out, &want.out))
    }

    /// `--resident`: q, k and v uploaded once into buffers of the bench's own (counted in
    /// `gpu_bytes` beside the engine's buffers of a call), then each call is what an app keeping its tensors
    /// (a KV cache) on the device pays per step: record into a fresh encoder, submit, wait.
    /// `out` stays on the device; the device time comes from `RecordedAttention::gpu_time`.
    fn run_resident(&self, iterations: &Iterations, ctx: &Context) -> Result<Measured> {
        use wgpu::util::DeviceExt;
        if self.reuse_block_mask {
            return Err(anyhow!(
                "--resident records with wgattn::record_attention, which takes no reused block mask"
            ));
        }
        let device = ctx.device();
        let upload = |t: &Tensor| {
            let mut bytes = t.to_le_bytes();
            bytes.resize(bytes.len().max(16).next_multiple_of(16), 0);
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("wgattn bench resident input"),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let (q, k, v) = (upload(&self.q), upload(&self.k), upload(&self.v));
        let out_shape = self.problem.out_shape();
        let out_bytes = out_shape.iter().product::<usize>() * self.problem.dtype.size();
        let out = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgattn bench resident out"),
            size: out_bytes.max(16).next_multiple_of(16) as u64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let own_bytes = q.size() + k.size() + v.size() + out.size();
        let dtype = self.problem.dtype;
        let mut inputs = GpuInputs::new(
            GpuTensor::new(&q, self.q.shape(), dtype),
            GpuTensor::new(&k, self.k.shape(), dtype),
            GpuTensor::new(&v, self.v.shape(), dtype),
        );
        inputs.kv_lengths = self.kv_lengths.as_deref();
        inputs.mods = self.mods.as_ref();
        let out_tensor = GpuTensor::new(&out, &out_shape, dtype);
        // Device time beside the wall time, read back after each timed call's wait.
        ctx.set_gpu_timing(true);
        let timed_calls = timed(
            iterations,
            || {
                let mut encoder = device.create_command_encoder(&Default::default());
                let recorded = wgattn::record_attention(
                    ctx,
                    &mut encoder,
                    &inputs,
                    &self.options,
                    &out_tensor,
                )?;
                ctx.queue().submit([encoder.finish()]);
                device.poll(wgpu::PollType::wait_indefinitely())?;
                Ok(recorded)
            },
            |recorded| Some((recorded.gpu_bytes(), recorded.gpu_time())),
        );
        ctx.set_gpu_timing(false);
        let (times, figures) = timed_calls?;
        let engine_bytes = figures.iter().flatten().map(|(b, _)| *b).max().unwrap_or(0);
        let (gpu_times, gpu_kernels) = device_figures(
            figures
                .into_iter()
                .map(|f| f.and_then(|(_, t)| t))
                .collect(),
        );
        Ok(Measured {
            flops: self.flops(),
            times,
            gpu_bytes: engine_bytes + own_bytes,
            gpu_times,
            gpu_kernels,
        })
    }
}

/// The device times of the timed calls, sorted, and each kernel's: every call's, or none.
fn device_figures(
    gpu: Vec<Option<(Duration, Vec<KernelTime>)>>,
) -> (Vec<Duration>, Vec<KernelTimes>) {
    let gpu: Vec<(Duration, Vec<KernelTime>)> =
        gpu.into_iter().collect::<Option<_>>().unwrap_or_default();
    let mut times: Vec<Duration> = gpu.iter().map(|(t, _)| *t).collect();
    times.sort();
    (times, per_kernel(&gpu))
}

/// Seeded q `[B, Hq, Lq, D]`, k `[B, Hkv, Lt, D]`, v `[B, Hkv, Lt, Dv]`, uniform in (-1, 1).
fn inputs(s: &Shape, dtype: DType) -> Result<(Tensor, Tensor, Tensor)> {
    let mut rng = SplitMix64(0x5eed_be4c);
    let mut make = |what: &str, shape: [usize; 4]| -> Result<Tensor> {
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| anyhow!("{what} {shape:?} has too many elements to address"))?;
        let mut data = Vec::new();
        data.try_reserve_exact(n)
            .map_err(|_| anyhow!("{what} {shape:?}: cannot allocate {n} elements on the host"))?;
        data.extend((0..n).map(|_| rng.uniform()));
        Ok(Tensor::from_f32_as(shape, &data, dtype)?)
    };
    Ok((
        make("q", [s.batch, s.q_heads, s.q_len, s.head_dim])?,
        make("k", [s.batch, s.kv_heads, s.kv_len, s.head_dim])?,
        make("v", [s.batch, s.kv_heads, s.kv_len, s.v_dim])?,
    ))
}

/// Each kernel's time in each call (its passes summed: a split request runs one per part),
/// sorted, kernels in the order they first ran, with the variants they ran.
fn per_kernel(calls: &[(Duration, Vec<KernelTime>)]) -> Vec<KernelTimes> {
    let mut out: Vec<KernelTimes> = Vec::new();
    for (_, kernels) in calls {
        let mut this_call: Vec<(&str, Duration)> = Vec::new();
        for k in kernels {
            match this_call.iter_mut().find(|(name, _)| *name == k.kernel) {
                Some((_, t)) => *t += k.time,
                None => this_call.push((&k.kernel, k.time)),
            }
            let at = match out.iter().position(|o| o.kernel == k.kernel) {
                Some(at) => at,
                None => {
                    out.push(KernelTimes {
                        kernel: k.kernel.clone(),
                        ..KernelTimes::default()
                    });
                    out.len() - 1
                }
            };
            if !out[at].variants.contains(&k.variant) {
                out[at].variants.push(k.variant.clone());
            }
        }
        for (name, t) in this_call {
            if let Some(o) = out.iter_mut().find(|o| o.kernel == name) {
                o.times.push(t);
            }
        }
    }
    for o in &mut out {
        o.times.sort();
    }
    out
}

/// The warm-up calls, then the timed ones: the wall time of each, sorted, and each one's GPU
/// figures (`gpu_time` of its output) in call order. Outputs are dropped outside the timed
/// region.
fn timed<T, G>(
    iterations: &Iterations,
    mut f: impl FnMut() -> Result<T>,
    gpu_time: impl Fn(&T) -> Option<G>,
) -> Result<(Vec<Duration>, Vec<Option<G>>)> {
    for _ in 0..iterations.warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iterations.min_iters);
    let mut gpu_times = Vec::with_capacity(iterations.min_iters);
    let mut total = Duration::ZERO;
    while times.len() < iterations.max_iters.max(1)
        && (times.len() < iterations.min_iters || total < iterations.budget)
    {
        let start = Instant::now();
        let out = f()?;
        let elapsed = start.elapsed();
        gpu_times.push(gpu_time(&out));
        drop(out);
        times.push(elapsed);
        total += elapsed;
    }
    times.sort();
    Ok((times, gpu_times))
}

/// SplitMix64, so every run times the same numbers.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (-1, 1) on the odd multiples of 2^-23: never zero, and never zero after
    /// rounding to f16 (whose smallest subnormal is 2^-24) or bf16.
    fn uniform(&mut self) -> f32 {
        let u = (self.next() >> 41) as f32; // 23 bits
        (2.0 * u + 1.0) / (1u32 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_never_zero() {
        let mut rng = SplitMix64(1);
        for _ in 0..100_000 {
            let x = rng.uniform();
            assert!(x > -1.0 && x < 1.0 && x != 0.0, "{x}");
            assert_ne!(half::f16::from_f32(x).to_f32(), 0.0);
        }
    }

    fn count_calls(iterations: Iterations, call: Duration) -> (usize, usize) {
        let mut calls = 0;
        let (times, _) = timed(
            &iterations,
            || {
                calls += 1;
                std::thread::sleep(call);
                Ok(())
            },
            |_| None::<()>,
        )
        .unwrap();
        (calls, times.len())
    }

    #[test]
    fn fixed_iterations_make_exactly_the_calls_asked_for() {
        assert_eq!(count_calls(Iterations::fixed(2, 3), Duration::ZERO), (5, 3));
    }

    #[test]
    fn a_budget_stops_after_min_iters_once_spent() {
        let iterations = Iterations {
            warmup: 1,
            min_iters: 2,
            max_iters: 50,
            budget: Duration::from_millis(5),
        };
        // Each call spends the whole budget: the minimum count decides.
        assert_eq!(count_calls(iterations, Duration::from_millis(6)), (3, 2));
        // Free calls: the maximum count decides.
        let free = Iterations {
            budget: Duration::from_secs(3600),
            ..iterations
        };
        assert_eq!(count_calls(free, Duration::ZERO), (51, 50));
    }

    #[test]
    fn mask_description_names_every_structured_mask() {
        let mut r = Request {
            path: BenchPath::Fused,
            shape: Shape {
                batch: 1,
                q_heads: 1,
                kv_heads: 1,
                q_len: 4,
                kv_len: 4,
                head_dim: 4,
                v_dim: 4,
            },
            dtype: DType::F32,
            causal: false,
            window_left: -1,
            window_right: -1,
            softcap: 0.0,
            kv_lengths: None,
            mods: None,
            reuse_block_mask: false,
            resident: false,
        };
        assert_eq!(r.mask_description(), "none");
        r.causal = true;
        r.window_left = 4;
        assert_eq!(
            r.mask_description(),
            "causal + window (left 4, right unbounded)"
        );
        r.kv_lengths = Some(vec![3]);
        assert!(r.mask_description().ends_with(" + key lengths [3]"));
        r.softcap = 50.0;
        assert!(r
            .mask_description()
            .ends_with(" + key lengths [3] + softcap 50"));
    }
}
