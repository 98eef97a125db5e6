//! `wgattn bench`: time one attention shape on one path, with seeded random inputs.
//!
//! Each timed call is one whole `masked_attention` (upload, every kernel, read-back), measured
//! by the wall clock. The rate is the dense FLOP count over the median time, so a mask that lets
//! the engine skip tiles shows as a higher rate. With `--json` the result, or the refusal, is one
//! JSON object on one line of stdout, for scripts that build tables.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use wgattn::{
    AttentionInputs, AttentionOptions, AttentionProblem, Context, DType, ExecutionPath, Tensor,
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
    fn name(self) -> &'static str {
        match self {
            BenchPath::Reference => "reference",
            BenchPath::Staged => "staged",
            BenchPath::Fused => "fused",
        }
    }

    /// The GPU path, or `None` for the CPU reference.
    fn gpu_path(self) -> Option<ExecutionPath> {
        match self {
            BenchPath::Reference => None,
            BenchPath::Staged => Some(ExecutionPath::Staged),
            BenchPath::Fused => Some(ExecutionPath::Fused),
        }
    }
}

/// The shape and options to time; tensors are built in `bhsd`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Implementation to time.
    #[arg(long, value_enum)]
    pub path: BenchPath,
    /// Batch size B.
    #[arg(long, value_name = "B", default_value_t = 1)]
    pub batch: usize,
    /// Query heads Hq.
    #[arg(long, value_name = "H", default_value_t = 8)]
    pub q_heads: usize,
    /// Key/value heads Hkv (default: Hq); Hq must be a multiple.
    #[arg(long, value_name = "H")]
    pub kv_heads: Option<usize>,
    /// Query length Lq.
    #[arg(long, value_name = "L", default_value_t = 512)]
    pub q_len: usize,
    /// Key/value length Lt (default: Lq).
    #[arg(long, value_name = "L")]
    pub kv_len: Option<usize>,
    /// Head dimension D of queries and keys.
    #[arg(long, value_name = "D", default_value_t = 64)]
    pub head_dim: usize,
    /// Head dimension Dv of values (default: D).
    #[arg(long, value_name = "DV")]
    pub v_dim: Option<usize>,
    /// Causal mask (query i sees keys j <= i).
    #[arg(long)]
    pub causal: bool,
    /// Sliding window, keys to the left of the diagonal; -1 = unbounded.
    #[arg(long, value_name = "W", default_value_t = -1, allow_negative_numbers = true)]
    pub window_left: i64,
    /// Sliding window, keys to the right of the diagonal; -1 = unbounded.
    #[arg(long, value_name = "W", default_value_t = -1, allow_negative_numbers = true)]
    pub window_right: i64,
    /// Element type of q, k, v and out: f32, f16 or bf16.
    #[arg(long, value_name = "DTYPE", default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// Timed calls; the median, min and max are reported.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub iters: usize,
    /// Untimed calls before the timed ones (pipelines, buffers).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub warmup: usize,
    /// Print one JSON object on one line instead of the table (also on failure).
    #[arg(long)]
    pub json: bool,
    /// Optional device features to leave unused (comma-separated: `shader-f16`, `subgroups`,
    /// `mapped-uploads`), to time the fallback paths on an adapter that has them.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_enum)]
    pub without: Vec<Fallback>,
}

/// An optional feature `--without` turns off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// Hardware f16 loads in the fused kernels.
    #[value(name = "shader-f16")]
    ShaderF16,
    /// Subgroup reductions.
    Subgroups,
    /// Mapped storage-buffer uploads on unified-memory adapters.
    #[value(name = "mapped-uploads")]
    MappedUploads,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    s.parse()
        .map_err(|_| "expected f32, f16 or bf16".to_string())
}

/// Every size of the request, defaults filled in.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
    v_dim: usize,
}

impl Shape {
    fn of(args: &BenchArgs) -> Shape {
        Shape {
            batch: args.batch,
            q_heads: args.q_heads,
            kv_heads: args.kv_heads.unwrap_or(args.q_heads),
            q_len: args.q_len,
            kv_len: args.kv_len.unwrap_or(args.q_len),
            head_dim: args.head_dim,
            v_dim: args.v_dim.unwrap_or(args.head_dim),
        }
    }
}

/// What a finished run measured.
struct Measured {
    adapter: String,
    backend: String,
    flops: f64,
    times: Vec<Duration>,
    gpu_bytes: u64,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let shape = Shape::of(args);
    let mut adapter = None;
    match measure(args, &shape, &mut adapter) {
        Ok(m) => {
            if args.json {
                println!("{}", result_json(args, &shape, &m));
            } else {
                print_table(args, &shape, &m);
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                let message = super::errors::one_line(&format!("{e:#}"));
                println!("{}", error_json(args, &shape, adapter.as_ref(), &message));
            }
            Err(e)
        }
    }
}

/// Validates, builds the inputs, runs the warm-up and the timed calls. `adapter` is filled in
/// as soon as a GPU context exists, so a refusal can still name it.
fn measure(
    args: &BenchArgs,
    shape: &Shape,
    adapter: &mut Option<(String, String)>,
) -> Result<Measured> {
    validate(args, shape)?;
    let (q, k, v) = inputs(shape, args.dtype)?;
    let inputs = AttentionInputs::new(&q, &k, &v);
    let options = AttentionOptions {
        causal: args.causal,
        window_left: args.window_left,
        window_right: args.window_right,
        path: args.path.gpu_path().unwrap_or_default(),
        ..Default::default()
    };
    let problem = AttentionProblem::new(&inputs, &options)?;
    let flops = problem.dense_flops();

    let Some(path) = args.path.gpu_path() else {
        let times = timed(args, || {
            wgattn::reference::masked_attention(&inputs, &options)
        })?;
        return Ok(Measured {
            adapter: "CPU (f64 reference)".into(),
            backend: "none".into(),
            flops,
            times,
            gpu_bytes: 0,
        });
    };

    let ctx = Context::new()?;
    let off = |f| args.without.contains(&f).then_some(false);
    ctx.set_tuning(wgattn::Tuning {
        shader_f16: off(Fallback::ShaderF16),
        subgroups: off(Fallback::Subgroups),
        mapped_uploads: off(Fallback::MappedUploads),
        ..wgattn::Tuning::AUTO
    });
    let info = ctx.adapter_info();
    let names = (info.name.clone(), format!("{:?}", info.backend));
    *adapter = Some(names.clone());
    // Fails here, before any warm-up, when the path cannot take the shape on this device.
    wgattn::resolve_path(&ctx, &problem, path)?;
    ctx.trim_memory();
    let times = timed(args, || wgattn::masked_attention(&ctx, &inputs, &options))?;
    Ok(Measured {
        adapter: names.0,
        backend: names.1,
        flops,
        times,
        gpu_bytes: ctx.memory().peak_bytes,
    })
}

/// The checks the library cannot make because they come before a tensor exists.
fn validate(args: &BenchArgs, s: &Shape) -> Result<()> {
    if args.iters < 1 {
        bail!("--iters must be at least 1, got {}", args.iters);
    }
    for (name, n) in [
        ("--batch", s.batch),
        ("--q-heads", s.q_heads),
        ("--kv-heads", s.kv_heads),
        ("--q-len", s.q_len),
        ("--kv-len", s.kv_len),
        ("--head-dim", s.head_dim),
        ("--v-dim", s.v_dim),
    ] {
        if n < 1 {
            bail!("{name} must be at least 1, got {n}");
        }
    }
    if !s.q_heads.is_multiple_of(s.kv_heads) {
        bail!(
            "--q-heads ({}) must be a multiple of --kv-heads ({})",
            s.q_heads,
            s.kv_heads
        );
    }
    Ok(())
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

/// `warmup` untimed calls, then `iters` timed ones; the time of each, sorted. The output is
/// dropped outside the timed region.
fn timed<T>(args: &BenchArgs, mut f: impl FnMut() -> wgattn::Result<T>) -> Result<Vec<Duration>> {
    for _ in 0..args.warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let start = Instant::now();
        let out = f()?;
        times.push(start.elapsed());
        drop(out);
    }
    times.sort();
    Ok(times)
}

fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

impl Measured {
    /// The middle time (the mean of the two middle ones for an even count).
    fn median(&self) -> Duration {
        let n = self.times.len();
        if n % 2 == 1 {
            self.times[n / 2]
        } else {
            (self.times[n / 2 - 1] + self.times[n / 2]) / 2
        }
    }

    fn min(&self) -> Duration {
        self.times[0]
    }

    fn max(&self) -> Duration {
        self.times[self.times.len() - 1]
    }

    /// Dense GFLOP/s over the median.
    fn gflops(&self) -> f64 {
        self.flops / self.median().as_secs_f64() / 1e9
    }
}

/// The structured masks in words.
fn mask_description(args: &BenchArgs) -> String {
    let side = |w: i64| {
        if w < 0 {
            "unbounded".to_string()
        } else {
            w.to_string()
        }
    };
    let mut parts = Vec::new();
    if args.causal {
        parts.push("causal".to_string());
    }
    if args.window_left >= 0 || args.window_right >= 0 {
        parts.push(format!(
            "window (left {}, right {})",
            side(args.window_left),
            side(args.window_right)
        ));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" + ")
    }
}

fn print_table(args: &BenchArgs, s: &Shape, m: &Measured) {
    let rows = [
        ("path", args.path.name().to_string()),
        ("adapter", format!("{} ({})", m.adapter, m.backend)),
        (
            "shape",
            format!(
                "B {}, Hq {}, Hkv {}, Lq {}, Lt {}, D {}, Dv {}, {}",
                s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim, s.v_dim, args.dtype
            ),
        ),
        ("mask", mask_description(args)),
        (
            "calls",
            format!("{} timed after {} warm-up", args.iters, args.warmup),
        ),
        ("median ms", format!("{:.3}", ms(m.median()))),
        ("min ms", format!("{:.3}", ms(m.min()))),
        ("max ms", format!("{:.3}", ms(m.max()))),
        (
            "GFLOP/s",
            format!(
                "{:.3} (dense {:.4e} FLOP over the median)",
                m.gflops(),
                m.flops
            ),
        ),
        (
            "peak GPU MiB",
            if args.path.gpu_path().is_some() {
                format!("{:.2}", m.gpu_bytes as f64 / (1u64 << 20) as f64)
            } else {
                "- (CPU)".into()
            },
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}

/// A JSON object written by hand: keys in insertion order, strings escaped.
struct JsonObject(String);

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject(String::from("{"))
    }

    fn raw(mut self, key: &str, value: &str) -> JsonObject {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "{}:{value}", json_string(key));
        self
    }

    fn str(self, key: &str, value: &str) -> JsonObject {
        let value = json_string(value);
        self.raw(key, &value)
    }

    fn int(self, key: &str, value: impl Into<i128>) -> JsonObject {
        self.raw(key, &value.into().to_string())
    }

    fn bool(self, key: &str, value: bool) -> JsonObject {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A finite number, or `null` (JSON has no NaN or infinity).
    fn num(self, key: &str, value: f64) -> JsonObject {
        if value.is_finite() {
            self.raw(key, &value.to_string())
        } else {
            self.raw(key, "null")
        }
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fields every object has: the request.
fn request_json(args: &BenchArgs, s: &Shape) -> JsonObject {
    JsonObject::new()
        .str("path", args.path.name())
        .int("batch", s.batch as u64)
        .int("q_heads", s.q_heads as u64)
        .int("kv_heads", s.kv_heads as u64)
        .int("q_len", s.q_len as u64)
        .int("kv_len", s.kv_len as u64)
        .int("head_dim", s.head_dim as u64)
        .int("v_dim", s.v_dim as u64)
        .str("dtype", args.dtype.name())
        .bool("causal", args.causal)
        .int("window_left", args.window_left)
        .int("window_right", args.window_right)
        .str("mask", &mask_description(args))
        .int("iters", args.iters as u64)
        .int("warmup", args.warmup as u64)
}

fn result_json(args: &BenchArgs, s: &Shape, m: &Measured) -> String {
    request_json(args, s)
        .str("adapter", &m.adapter)
        .str("backend", &m.backend)
        .num("median_ms", ms(m.median()))
        .num("min_ms", ms(m.min()))
        .num("max_ms", ms(m.max()))
        .num("dense_flops", m.flops)
        .num("gflops", m.gflops())
        .int("gpu_bytes", m.gpu_bytes)
        .finish()
}

fn error_json(
    args: &BenchArgs,
    s: &Shape,
    adapter: Option<&(String, String)>,
    message: &str,
) -> String {
    let mut o = request_json(args, s);
    if let Some((name, backend)) = adapter {
        o = o.str("adapter", name).str("backend", backend);
    }
    o.str("error", message).finish()
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
    fn json_string_escapes_quotes_backslashes_and_controls() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn uniform_is_in_range_and_never_zero() {
        let mut rng = SplitMix64(1);
        for _ in 0..100_000 {
            let x = rng.uniform();
            assert!(x > -1.0 && x < 1.0 && x != 0.0, "{x}");
            assert_ne!(half::f16::from_f32(x).to_f32(), 0.0);
        }
    }
}
