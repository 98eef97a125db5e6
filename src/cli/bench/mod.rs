//! `wgattn bench`: time one attention shape on one path, with seeded random inputs; or a
//! whole grid of them into a report you can share (`--suite`, see `suite.rs`), compare two
//! reports (`--compare`) and plot one (`--plot`).
//!
//! Each timed call is one whole `masked_attention` (upload, every kernel, read-back), measured
//! by the wall clock. The rate is the dense FLOP count over the median time, so a mask that lets
//! the engine skip tiles shows as a higher rate. With `--json` the result, or the refusal, is one
//! JSON object on one line of stdout, for scripts that build tables.

mod compare;
mod measure;
mod plot;
mod progress;
mod record;
mod report;
mod suite;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;
use wgattn::{Context, DType};

use super::check::Agreement;
pub use measure::BenchPath;
use measure::{ms, Iterations, Measured, Prepared, Request, Shape};
use record::{Figures, RequestFields};
use suite::SuiteName;

/// The options that describe the one shape, which `--suite`, `--compare` and `--plot` refuse.
const ONE_SHAPE: [&str; 23] = [
    "check",
    "documents",
    "mask_mod",
    "score_mod",
    "alibi",
    "prefix_len",
    "reuse_block_mask",
    "resident",
    "batch",
    "q_heads",
    "kv_heads",
    "q_len",
    "kv_len",
    "head_dim",
    "v_dim",
    "causal",
    "window_left",
    "window_right",
    "softcap",
    "dtype",
    "iters",
    "warmup",
    "json",
];

/// The options that pick a mode other than one shape (`--path`), a suite, or a plot: an
/// option of one mode conflicts with those naming the others.
const NOT_ONE_SHAPE: [&str; 3] = ["suite", "compare", "plot"];
/// See [`NOT_ONE_SHAPE`].
const NOT_SUITE: [&str; 3] = ["path", "compare", "plot"];
/// See [`NOT_ONE_SHAPE`].
const NOT_PLOT: [&str; 3] = ["path", "suite", "compare"];

/// The shape and options to time (tensors are built in `bhsd`), or the suite to run, or the
/// reports to compare or plot.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Implementation to time (one shape).
    #[arg(
        long,
        value_enum,
        required_unless_present_any = NOT_ONE_SHAPE,
        conflicts_with_all = NOT_ONE_SHAPE
    )]
    pub path: Option<BenchPath>,
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
    /// Softcap `c`: scores become `c * tanh(s / c)` (Gemma 2 uses 50); 0 = none.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub softcap: f32,
    /// Packed documents: N equal segments, each attending only to itself (a segment mask).
    #[arg(long, value_name = "N")]
    pub documents: Option<usize>,
    /// A user mask_mod: the body of `fn mask_mod(b: u32, h: u32, q: u32, k: u32) -> bool` in
    /// WGSL, e.g. `'return k <= q;'`.
    #[arg(long, value_name = "WGSL")]
    pub mask_mod: Option<String>,
    /// A user score_mod: the body of
    /// `fn score_mod(s: f32, b: u32, h: u32, q: u32, k: u32) -> f32` in WGSL.
    #[arg(long, value_name = "WGSL")]
    pub score_mod: Option<String>,
    /// ALiBi with the paper's slopes (one-sided).
    #[arg(long)]
    pub alibi: bool,
    /// Prefix-LM: bidirectional inside the first P keys, causal after.
    #[arg(long, value_name = "P")]
    pub prefix_len: Option<i64>,
    /// Build the block mask once before the timed calls and reuse it (`wgattn::block_mask`).
    #[arg(long)]
    pub reuse_block_mask: bool,
    /// Keep q, k and v on the device: upload them once, then time each call as an app that
    /// holds its tensors (a KV cache) there pays per step: `record_attention` into a fresh
    /// encoder, submit, wait (no upload, no read-back of `out`). Staged or fused.
    #[arg(long)]
    pub resident: bool,
    /// After the timed calls, run the path once more on the same inputs and hold `out` to the
    /// f64 CPU reference (`|err| <= atol + rtol·|ref|`, the test suite's tolerances per dtype):
    /// the table and the JSON (`check_*`) say how close; a disagreement fails the command.
    /// Staged or fused; the reference takes a while on large shapes.
    #[arg(long)]
    pub check: bool,
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
    /// How the decode kernel lays a split's keys over its invocations: `auto` (the engine's
    /// choice: a subgroup per key on GPUs, a key per invocation on CPU adapters),
    /// `subgroup-keys` (where subgroups allow) or `key-per-invocation`. The JSON's
    /// `gpu_kernels[].variants` name the one that ran (`lanes8`: a subgroup per key).
    #[arg(long, value_enum, value_name = "LAYOUT", default_value = "auto")]
    pub decode_layout: DecodeLayout,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = crate::cli::tuning::parse_tuning,
        help = concat!(
            crate::cli::tuning::help!(),
            " `--without` and `--decode-layout` apply on top; the JSON's \
             `gpu_kernels[].variants` name what ran."
        )
    )]
    pub tuning: Option<wgattn::Tuning>,
    /// Run a fixed grid of cases instead of one shape, write the JSON report (`--report`) and
    /// print a Markdown table: `standard` (prefill L 256-4096 and decode Lt 1024-8192, masks
    /// none/causal/padding/window, f32/f16, fused/staged/reference; decode also with
    /// `--resident` inputs) or `smoke` (a tiny grid).
    #[arg(
        long,
        value_enum,
        value_name = "NAME",
        conflicts_with_all = [&ONE_SHAPE[..], &["compare", "plot"]].concat()
    )]
    pub suite: Option<SuiteName>,
    /// Where `--suite` writes its JSON report [default: wgattn-bench.json].
    #[arg(
        long,
        value_name = "FILE",
        requires = "suite",
        conflicts_with_all = NOT_SUITE
    )]
    pub report: Option<PathBuf>,
    /// With `--suite`: write its GPU cases as one execution plan for `web/` instead of running
    /// them; the page's timing mode (`mode=time`) runs it and offers the report in the format
    /// `--compare` reads. Inputs over 64 KiB are left to the page to fill with random values.
    #[arg(
        long,
        value_name = "PLAN.json",
        requires = "suite",
        conflicts_with = "report"
    )]
    pub emit_plan: Option<PathBuf>,
    /// With `--emit-plan`: plan for WebGPU's default limits and no optional features.
    #[arg(long, requires = "emit_plan")]
    pub webgpu_limits: bool,
    /// Compare two reports case by case (times, GFLOP/s, B/A) as a Markdown table.
    #[arg(
        long,
        num_args = 2,
        value_names = ["A.json", "B.json"],
        conflicts_with_all = [&ONE_SHAPE[..], &["plot", "without", "decode_layout", "tuning"]].concat()
    )]
    pub compare: Option<Vec<PathBuf>>,
    /// Plot a report's prefill throughput against sequence length, one line per path and
    /// dtype, as SVG (`-o`).
    #[arg(
        long,
        value_name = "REPORT.json",
        conflicts_with_all = [&ONE_SHAPE[..], &["without", "decode_layout", "tuning"]].concat()
    )]
    pub plot: Option<PathBuf>,
    /// The figure `--plot` writes, an `.svg` [default: bench.svg].
    #[arg(
        short = 'o',
        long,
        value_name = "FILE",
        requires = "plot",
        conflicts_with_all = NOT_PLOT
    )]
    pub output: Option<PathBuf>,
    /// The mask whose prefill cases `--plot` draws: none, causal, padding or window
    /// [default: none].
    #[arg(
        long,
        value_name = "MASK",
        requires = "plot",
        conflicts_with_all = NOT_PLOT
    )]
    pub plot_mask: Option<String>,
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

/// `--decode-layout`: the decode kernel's layout ([`wgattn::Tuning::decode_subgroup_keys`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeLayout {
    Auto,
    SubgroupKeys,
    KeyPerInvocation,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    s.parse()
        .map_err(|_| "expected f32, f16 or bf16".to_string())
}

impl BenchArgs {
    /// The one-shape request on `path`, defaults filled in.
    fn request(&self, path: BenchPath) -> Request {
        Request {
            path,
            shape: Shape {
                batch: self.batch,
                q_heads: self.q_heads,
                kv_heads: self.kv_heads.unwrap_or(self.q_heads),
                q_len: self.q_len,
                kv_len: self.kv_len.unwrap_or(self.q_len),
                head_dim: self.head_dim,
                v_dim: self.v_dim.unwrap_or(self.head_dim),
            },
            dtype: self.dtype,
            causal: self.causal,
            window_left: self.window_left,
            window_right: self.window_right,
            softcap: self.softcap,
            kv_lengths: None,
            mods: self.mods(),
            reuse_block_mask: self.reuse_block_mask,
            resident: self.resident,
        }
    }

    /// The mods the options ask for, and words naming them.
    fn mods(&self) -> Option<(wgattn::MaskMods, String)> {
        let mut mods = wgattn::MaskMods::default();
        let mut words = Vec::new();
        let (b, lq) = (self.batch, self.q_len);
        let lt = self.kv_len.unwrap_or(lq);
        if let Some(n) = self.documents {
            let n = n.max(1);
            let doc = |j: usize| (j * n / lt.max(1)) as i64;
            let kv: Vec<i64> = (0..b).flat_map(|_| (0..lt).map(doc)).collect();
            let q: Vec<i64> = (0..b)
                .flat_map(|_| (0..lq).map(|i| doc((lt + i).saturating_sub(lq))))
                .collect();
            mods.segments = Some(wgattn::Segments { q, kv });
            words.push(format!("{n} documents"));
        }
        if let Some(p) = self.prefix_len {
            mods.prefix_lengths = Some(vec![p; b]);
            words.push(format!("prefix-LM {p}"));
        }
        if self.alibi {
            mods.alibi = Some(wgattn::Alibi::default());
            words.push("ALiBi".into());
        }
        if let Some(src) = &self.mask_mod {
            mods.mask_mod = Some(src.clone());
            words.push(format!("mask_mod `{src}`"));
        }
        if let Some(src) = &self.score_mod {
            mods.score_mod = Some(src.clone());
            words.push(format!("score_mod `{src}`"));
        }
        (!words.is_empty()).then(|| (mods, words.join(" + ")))
    }

    /// `--tuning`'s choices, with what `--without` names turned off and `--decode-layout`'s
    /// choice unless `auto`.
    fn tuning(&self) -> wgattn::Tuning {
        let mut tuning = self.tuning.unwrap_or(wgattn::Tuning::AUTO);
        for (fallback, field) in [
            (Fallback::ShaderF16, &mut tuning.shader_f16),
            (Fallback::Subgroups, &mut tuning.subgroups),
            (Fallback::MappedUploads, &mut tuning.mapped_uploads),
        ] {
            if self.without.contains(&fallback) {
                *field = Some(false);
            }
        }
        match self.decode_layout {
            DecodeLayout::Auto => {}
            DecodeLayout::SubgroupKeys => tuning.decode_subgroup_keys = Some(true),
            DecodeLayout::KeyPerInvocation => tuning.decode_subgroup_keys = Some(false),
        }
        tuning
    }
}

/// The adapter a figure was measured on: its name and backend.
struct Adapter {
    name: String,
    backend: String,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if let Some(name) = args.suite {
        if let Some(plan) = &args.emit_plan {
            return suite::emit_plan(name, plan, args.webgpu_limits);
        }
        let report = args
            .report
            .as_deref()
            .unwrap_or(Path::new("wgattn-bench.json"));
        return suite::run(name, report, args.tuning());
    }
    if let Some(reports) = &args.compare {
        let [a, b] = reports.as_slice() else {
            bail!("--compare takes two reports, got {}", reports.len());
        };
        return compare::compare(a, b);
    }
    if let Some(report) = &args.plot {
        let mask = args.plot_mask.as_deref().unwrap_or("none");
        let out = args.output.as_deref().unwrap_or(Path::new("bench.svg"));
        return plot::plot(report, mask, out);
    }
    let Some(path) = args.path else {
        bail!("give --path (one shape), --suite, --compare or --plot");
    };
    one_shape(args, path)
}

/// `wgattn bench --path ...`: one table or one `--json` line.
fn one_shape(args: &BenchArgs, path: BenchPath) -> Result<()> {
    let request = args.request(path);
    let mut adapter = None;
    let outcome = measure_one(args, &request, &mut adapter);
    match (outcome, adapter) {
        (Ok((m, check)), Some(adapter)) => {
            if args.json {
                let line = one_shape_json(args, &request, Some(&adapter), Ok((&m, &check)));
                println!("{line}");
            } else {
                print_table(args, &request, &adapter, &m, check.as_ref());
            }
            match check {
                Some(a) if !a.passed() => bail!(
                    "the {} path disagrees with the CPU reference: {}",
                    request.path.name(),
                    a.describe()
                ),
                _ => Ok(()),
            }
        }
        (Ok(_), None) => bail!("internal error: a measurement without an adapter"),
        (Err(e), adapter) => {
            if args.json {
                let message = super::errors::one_line(&format!("{e:#}"));
                let line = one_shape_json(args, &request, adapter.as_ref(), Err(&message));
                println!("{line}");
            }
            Err(e)
        }
    }
}

/// Validates, builds the inputs, runs the warm-up and the timed calls, then with `--check`
/// one more call held to the reference. `adapter` is filled in as soon as a GPU context
/// exists, so a refusal can still name it (the CPU reference names itself once it has run).
fn measure_one(
    args: &BenchArgs,
    request: &Request,
    adapter: &mut Option<Adapter>,
) -> Result<(Measured, Option<Agreement>)> {
    validate(args, &request.shape)?;
    if request.resident && request.path.gpu_path().is_none() {
        bail!("--resident keeps tensors on the GPU: time --path staged or fused");
    }
    if args.check && request.path.gpu_path().is_none() {
        bail!("--check holds a GPU path to the CPU reference: give --path staged or fused");
    }
    let prepared = Prepared::new(request)?;
    let iterations = Iterations::fixed(args.warmup, args.iters);
    if request.path.gpu_path().is_none() {
        let m = prepared.run(&iterations, None)?;
        *adapter = Some(Adapter {
            name: "CPU (f64 reference)".into(),
            backend: "none".into(),
        });
        return Ok((m, None));
    }
    let ctx = Context::new()?;
    ctx.set_tuning(args.tuning());
    let info = ctx.adapter_info();
    *adapter = Some(Adapter {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
    });
    let measured = prepared.run(&iterations, Some(&ctx))?;
    let check = match args.check {
        true => Some(prepared.check(&ctx)?),
        false => None,
    };
    Ok((measured, check))
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

fn print_table(
    args: &BenchArgs,
    request: &Request,
    adapter: &Adapter,
    m: &Measured,
    check: Option<&Agreement>,
) {
    let s = &request.shape;
    let rows = [
        ("path", request.path.name().to_string()),
        ("adapter", format!("{} ({})", adapter.name, adapter.backend)),
        (
            "shape",
            format!(
                "B {}, Hq {}, Hkv {}, Lq {}, Lt {}, D {}, Dv {}, {}",
                s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.head_dim, s.v_dim, args.dtype
            ),
        ),
        ("mask", request.mask_description()),
        (
            "calls",
            format!("{} timed after {} warm-up", args.iters, args.warmup),
        ),
        (
            "inputs",
            if request.resident {
                "resident: uploaded once; each call records, submits and waits".into()
            } else {
                "uploaded by each call, out read back".to_string()
            },
        ),
        ("median ms", format!("{:.3}", ms(m.median()))),
        (
            "GPU median ms",
            match m.gpu_median() {
                Some(t) => format!("{:.3} (the kernels alone: timestamp queries)", ms(t)),
                None if request.path.gpu_path().is_some() => "- (no timestamp queries)".into(),
                None => "- (CPU)".into(),
            },
        ),
        (
            "GPU kernels ms",
            match m.gpu_kernel_medians() {
                k if k.is_empty() => "-".into(),
                k => k
                    .iter()
                    .map(|(k, t)| format!("{} {:.3}", k.kernel, ms(*t)))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        ),
        (
            "kernel variants",
            match m
                .gpu_kernels
                .iter()
                .flat_map(|k| &k.variants)
                .collect::<Vec<_>>()
            {
                v if v.is_empty() => "-".into(),
                v => v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; "),
            },
        ),
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
            if request.path.gpu_path().is_some() {
                format!("{:.2}", m.gpu_bytes as f64 / (1u64 << 20) as f64)
            } else {
                "- (CPU)".into()
            },
        ),
        (
            "vs reference",
            check.map_or("- (no --check)".into(), |a| {
                format!("{}: {}", a.verdict(), a.describe())
            }),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
}

/// The one `--json` line: the request, then the adapter (when one was reached) and the
/// figures, or the error.
#[derive(Serialize)]
struct OneShapeLine<'a> {
    #[serde(flatten)]
    request: RequestFields,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    figures: Option<Figures>,
    /// `--check`: `check_passed`, `check_max_abs_error`, `check_violations`, ...
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    check: Option<CheckFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `--check`'s figures in the JSON line (`check_max_abs_error` is `null` when infinite).
#[derive(Serialize)]
struct CheckFields {
    check_passed: bool,
    check_max_abs_error: f64,
    check_violations: usize,
    check_elements: usize,
    check_atol: f64,
    check_rtol: f64,
}

impl CheckFields {
    fn of(a: &Agreement) -> CheckFields {
        CheckFields {
            check_passed: a.passed(),
            check_max_abs_error: a.max_abs_error,
            check_violations: a.violations,
            check_elements: a.elements,
            check_atol: a.atol,
            check_rtol: a.rtol,
        }
    }
}

fn one_shape_json(
    args: &BenchArgs,
    request: &Request,
    adapter: Option<&Adapter>,
    outcome: std::result::Result<(&Measured, &Option<Agreement>), &str>,
) -> String {
    let line = OneShapeLine {
        request: RequestFields::new(request, request.mask_description(), args.iters, args.warmup),
        adapter: adapter.map(|a| a.name.as_str()),
        backend: adapter.map(|a| a.backend.as_str()),
        figures: outcome.ok().map(|(m, _)| Figures::of(m)),
        check: outcome
            .ok()
            .and_then(|(_, c)| c.as_ref())
            .map(CheckFields::of),
        error: outcome.err(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
