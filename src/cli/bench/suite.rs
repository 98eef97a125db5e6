//! `wgattn bench --suite NAME`: a fixed grid of cases, timed on one adapter, written as a JSON
//! report (`report.rs`) and printed as a Markdown table.
//!
//! # The grids
//!
//! Every grid is the product, block by block, of lengths × masks × dtypes × paths (fused,
//! staged, reference), with seeded inputs in `bhsd`.
//!
//! **`standard`** (110 cases):
//!
//! - `prefill`: B = 1, H = 8, D = 64, Lq = Lt = L in {256, 1024, 4096}; masks `none`,
//!   `causal`, `padding` (key lengths 3L/4, not causal) and `window` (causal, 256 keys to the
//!   left); f32 and f16.
//! - `decode`: B = 1, H = 32, D = 128, Lq = 1, Lt in {1024, 8192}; masks `none`, `padding`
//!   (key lengths 3Lt/4); f32 and f16.
//! - `decode_gqa`: as `decode` with Hkv = 8, Lt = 8192, no mask.
//! - `decode_resident`: as `decode`, no mask, fused and staged, with q, k and v kept on the
//!   device (`--resident`: each call records, submits and waits; what a KV cache held on the
//!   GPU costs per step, without the per-call upload that dominates `decode` on a discrete
//!   card).
//!
//! **`smoke`** (a few seconds on a software adapter, for tests and CI): `prefill` at H = 2,
//! D = 16, L in {16, 64}, the four masks (window 8); `decode` at H = 4, D = 16, Lt = 64;
//! `decode_gqa` with Hkv = 2; `decode_resident` at Lt = 64; and `limit`, a staged case whose
//! f32 scores (256 MiB) exceed the binding limit of software adapters and WebGPU's default.
//!
//! # What does not run
//!
//! In `standard`, the CPU reference runs only up to B·Hq·Lq·Lt = 8·1024² scores (prefill
//! L = 1024, about a second a call on one core) and the staged path up to 8·2048² (its f32
//! scores buffer is then 128 MiB); longer cases are `skipped` with that reason, so the suite
//! stays within minutes on a software adapter. A case the engine refuses or fails (the staged
//! path over the device's binding limit, as smoke's `limit` on a software adapter) is an
//! `error` case with the engine's message.
//!
//! # Calls per case
//!
//! `standard`: one warm-up call, then timed calls until they add up to 2 s (at least 1, at
//! most 30). `smoke`: one warm-up, two timed.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use wgattn::{Context, DType};

use super::measure::{BenchPath, Iterations, Prepared, Request, Shape};
use super::progress::Progress;
use super::record::{Figures, RequestFields};
use super::report::{
    AdapterRecord, CaseRecord, Host, IterationsRecord, Report, Status, FORMAT, FORMAT_VERSION,
};
use crate::cli::errors::one_line;
use crate::cli::result_file;

/// The grids `--suite` knows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteName {
    /// Prefill L 256–4096 and decode Lt 1024–8192, four masks, f32/f16, three paths.
    Standard,
    /// A tiny grid of every kind of case, seconds on a software adapter (tests, CI).
    Smoke,
}

impl SuiteName {
    fn name(self) -> &'static str {
        match self {
            SuiteName::Standard => "standard",
            SuiteName::Smoke => "smoke",
        }
    }

    fn iterations(self) -> Iterations {
        match self {
            SuiteName::Standard => Iterations {
                warmup: 1,
                min_iters: 1,
                max_iters: 30,
                budget: Duration::from_secs(2),
            },
            SuiteName::Smoke => Iterations::fixed(1, 2),
        }
    }

    fn blocks(self) -> Vec<Block> {
        use GridMask::*;
        const ALL_PATHS: &[BenchPath] =
            &[BenchPath::Fused, BenchPath::Staged, BenchPath::Reference];
        const GPU_PATHS: &[BenchPath] = &[BenchPath::Fused, BenchPath::Staged];
        const DTYPES: &[DType] = &[DType::F32, DType::F16];
        match self {
            SuiteName::Standard => vec![
                Block {
                    group: "prefill",
                    heads: (8, 8),
                    head_dim: 64,
                    decode: false,
                    lens: &[256, 1024, 4096],
                    masks: &[None, Causal, Padding, Window(256)],
                    dtypes: DTYPES,
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode",
                    heads: (32, 32),
                    head_dim: 128,
                    decode: true,
                    lens: &[1024, 8192],
                    masks: &[None, Padding],
                    dtypes: DTYPES,
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode_gqa",
                    heads: (32, 8),
                    head_dim: 128,
                    decode: true,
                    lens: &[8192],
                    masks: &[None],
                    dtypes: DTYPES,
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode_resident",
                    heads: (32, 32),
                    head_dim: 128,
                    decode: true,
                    lens: &[1024, 8192],
                    masks: &[None],
                    dtypes: DTYPES,
                    paths: GPU_PATHS,
                    resident: true,
                },
            ],
            SuiteName::Smoke => vec![
                Block {
                    group: "prefill",
                    heads: (2, 2),
                    head_dim: 16,
                    decode: false,
                    lens: &[16, 64],
                    masks: &[None, Causal, Padding, Window(8)],
                    dtypes: DTYPES,
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode",
                    heads: (4, 4),
                    head_dim: 16,
                    decode: true,
                    lens: &[64],
                    masks: &[None, Padding],
                    dtypes: &[DType::F32],
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode_gqa",
                    heads: (4, 2),
                    head_dim: 16,
                    decode: true,
                    lens: &[64],
                    masks: &[None],
                    dtypes: &[DType::F16],
                    paths: ALL_PATHS,
                    resident: false,
                },
                Block {
                    group: "decode_resident",
                    heads: (4, 4),
                    head_dim: 16,
                    decode: true,
                    lens: &[64],
                    masks: &[None],
                    dtypes: &[DType::F32],
                    paths: GPU_PATHS,
                    resident: true,
                },
                Block {
                    group: "limit",
                    heads: (1, 1),
                    head_dim: 4,
                    decode: false,
                    lens: &[8192],
                    masks: &[None],
                    dtypes: &[DType::F32],
                    paths: &[BenchPath::Staged, BenchPath::Reference],
                    resident: false,
                },
            ],
        }
    }

    /// Every case of the grid, in order.
    pub fn cells(self) -> Vec<Cell> {
        self.blocks().iter().flat_map(Block::cells).collect()
    }
}

/// The masks a grid combines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GridMask {
    None,
    Causal,
    /// Key lengths of 3/4 of the keys, not causal.
    Padding,
    /// Causal, and this many keys to the left of the diagonal.
    Window(i64),
}

impl GridMask {
    fn name(self) -> &'static str {
        match self {
            GridMask::None => "none",
            GridMask::Causal => "causal",
            GridMask::Padding => "padding",
            GridMask::Window(_) => "window",
        }
    }
}

/// One block of a grid: a group of shapes, every combination of its lists.
struct Block {
    group: &'static str,
    /// (Hq, Hkv).
    heads: (usize, usize),
    head_dim: usize,
    /// Lq = 1 and `lens` are key lengths; otherwise Lq = Lt = each of `lens`.
    decode: bool,
    lens: &'static [usize],
    masks: &'static [GridMask],
    dtypes: &'static [DType],
    paths: &'static [BenchPath],
    /// Inputs kept on the device (`Request::resident`).
    resident: bool,
}

impl Block {
    fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &dtype in self.dtypes {
            for &len in self.lens {
                for &mask in self.masks {
                    for &path in self.paths {
                        cells.push(self.cell(dtype, len, mask, path));
                    }
                }
            }
        }
        cells
    }

    fn cell(&self, dtype: DType, len: usize, mask: GridMask, path: BenchPath) -> Cell {
        let (q_len, len_key) = if self.decode { (1, "lt") } else { (len, "l") };
        let id = format!(
            "{}_{}_{len_key}{len}_{}_{}",
            self.group,
            dtype.name(),
            mask.name(),
            path.name()
        );
        let (causal, window_left) = match mask {
            GridMask::Causal => (true, -1),
            GridMask::Window(w) => (true, w),
            GridMask::None | GridMask::Padding => (false, -1),
        };
        let kv_lengths = (mask == GridMask::Padding).then(|| vec![(len * 3 / 4) as i64]);
        Cell {
            id,
            group: self.group,
            mask: mask.name(),
            request: Request {
                path,
                shape: Shape {
                    batch: 1,
                    q_heads: self.heads.0,
                    kv_heads: self.heads.1,
                    q_len,
                    kv_len: len,
                    head_dim: self.head_dim,
                    v_dim: self.head_dim,
                },
                dtype,
                causal,
                window_left,
                window_right: -1,
                softcap: 0.0,
                kv_lengths,
                mods: None,
                reuse_block_mask: false,
                resident: self.resident,
            },
        }
    }
}

/// One case of a grid, before it runs.
#[derive(Clone, Debug)]
pub struct Cell {
    pub id: String,
    pub group: &'static str,
    pub mask: &'static str,
    pub request: Request,
}

/// How far a suite runs the slow paths, in scores (B·Hq·Lq·Lt, what the reference's time and
/// the staged path's memory grow with); `None`: no cap.
#[derive(Clone, Copy, Debug)]
struct Caps {
    reference: Option<u128>,
    staged: Option<u128>,
}

impl SuiteName {
    fn caps(self) -> Caps {
        match self {
            // Prefill L = 1024 and L = 2048 at H = 8.
            SuiteName::Standard => Caps {
                reference: Some(8 * 1024 * 1024),
                staged: Some(8 * 2048 * 2048),
            },
            // The `limit` case must reach the engine, which refuses it where the binding limit
            // is 128 MiB (and runs it in milliseconds where it is larger).
            SuiteName::Smoke => Caps {
                reference: Some(8 * 1024 * 1024),
                staged: None,
            },
        }
    }
}

impl Cell {
    /// Why the suite does not run this case under `caps`, if it does not.
    fn skip_reason(&self, caps: Caps) -> Option<String> {
        let s = &self.request.shape;
        let scores = [s.batch, s.q_heads, s.q_len, s.kv_len]
            .iter()
            .map(|&n| n as u128)
            .product::<u128>();
        let cap = match self.request.path {
            BenchPath::Reference => caps.reference,
            BenchPath::Staged => caps.staged,
            BenchPath::Fused => None,
        }?;
        (scores > cap).then(|| {
            format!(
                "the suite runs the {} path up to {cap} scores (B·Hq·Lq·Lt); this case has {scores}",
                self.request.path.name()
            )
        })
    }

    /// Runs the case: its figures, or why there are none. Never fails: a failure is the case's
    /// `error`.
    fn run(&self, ctx: &Context, iterations: &Iterations, caps: Caps) -> CaseRecord {
        let outcome = match self.skip_reason(caps) {
            Some(reason) => Ok(Err(reason)),
            None => Prepared::new(&self.request)
                .and_then(|prepared| prepared.run(iterations, Some(ctx)))
                .map(Ok),
        };
        let (status, figures, error, skipped, iters) = match outcome {
            Ok(Ok(m)) => (Status::Ok, Some(Figures::of(&m)), None, None, m.times.len()),
            Ok(Err(reason)) => (Status::Skipped, None, None, Some(reason), 0),
            Err(e) => (
                Status::Error,
                None,
                Some(one_line(&format!("{e:#}"))),
                None,
                0,
            ),
        };
        let warmup = if status == Status::Ok {
            iterations.warmup
        } else {
            0
        };
        CaseRecord {
            id: self.id.clone(),
            group: self.group.into(),
            request: RequestFields::new(&self.request, self.mask.into(), iters, warmup),
            status,
            figures,
            error,
            skipped,
        }
    }
}

/// Runs `suite` on the environment's adapter, writes the report to `report_path` and prints
/// the Markdown table.
pub fn run(suite: SuiteName, report_path: &Path, tuning: wgattn::Tuning) -> Result<()> {
    // A report that cannot be written is found out before the suite runs, not after.
    result_file::check_output_dir(report_path)?;
    let ctx = Context::new()?;
    ctx.set_tuning(tuning);
    let iterations = suite.iterations();
    let cells = suite.cells();
    let mut progress = Progress::new(cells.len());
    let mut cases = Vec::with_capacity(cells.len());
    for cell in &cells {
        progress.start(&cell.id);
        let case = cell.run(&ctx, &iterations, suite.caps());
        progress.finish(&case.id, &summary(&case));
        cases.push(case);
    }
    progress.close();
    let report = Report {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        wgattn_version: env!("CARGO_PKG_VERSION").into(),
        suite: suite.name().into(),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        host: Host {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        },
        adapter: adapter_record(&ctx),
        iterations: IterationsRecord {
            warmup: iterations.warmup,
            min_iters: iterations.min_iters,
            max_iters: iterations.max_iters,
            budget_s: iterations.budget.as_secs_f64(),
        },
        cases,
    };
    result_file::write_atomically(report_path, report.to_json()?.as_bytes())?;
    print!("{}", markdown(&report));
    eprintln!("wrote {}", report_path.display());
    Ok(())
}

/// Inputs larger than this are left to the page to fill (see `plan::case_json`).
const PLAN_RANDOM_ABOVE: usize = 64 << 10;

/// `wgattn bench --suite NAME --emit-plan PLAN.json`: the suite's GPU cases as one execution
/// plan for `web/`'s timing mode, each with its report fields (`bench`); the cases the page
/// cannot run (the reference, cases the suite skips, requests the engine refuses on the
/// planning device) come along as finished report cases (`bench.unplanned`).
pub fn emit_plan(suite: SuiteName, plan_path: &Path, webgpu_limits: bool) -> Result<()> {
    result_file::check_output_dir(plan_path)?;
    let ctx = crate::cli::plan::context(webgpu_limits.then_some(crate::cli::plan::WebTarget::ANY))?;
    let iterations = suite.iterations();
    let mut cases = Vec::new();
    let mut unplanned = Vec::new();
    for cell in suite.cells() {
        let request = RequestFields::new(&cell.request, cell.mask.into(), 0, 0);
        let finished = |status, error: Option<String>, skipped: Option<String>| CaseRecord {
            id: cell.id.clone(),
            group: cell.group.into(),
            request: request.clone(),
            status,
            figures: None,
            error,
            skipped,
        };
        if cell.request.path == BenchPath::Reference {
            let why = "the browser times the GPU paths only".to_string();
            unplanned.push(finished(Status::Skipped, None, Some(why)));
            continue;
        }
        if cell.request.resident {
            let why = "a plan replays whole calls (no resident inputs)".to_string();
            unplanned.push(finished(Status::Skipped, None, Some(why)));
            continue;
        }
        if let Some(reason) = cell.skip_reason(suite.caps()) {
            unplanned.push(finished(Status::Skipped, None, Some(reason)));
            continue;
        }
        let planned = Prepared::new(&cell.request).and_then(|p| Ok((p.flops(), p.plan(&ctx)?)));
        match planned {
            Ok((flops, plan)) => {
                let mut case =
                    crate::cli::plan::case_json(&cell.id, &plan, None, Some(PLAN_RANDOM_ABOVE))?;
                case["bench"] = serde_json::json!({
                    "id": cell.id,
                    "group": cell.group,
                    "request": request,
                    "dense_flops": flops,
                });
                cases.push(case);
            }
            Err(e) => {
                let why = one_line(&format!("{e:#}"));
                unplanned.push(finished(Status::Error, Some(why), None));
            }
        }
    }
    let planned = cases.len();
    let mut plan = crate::cli::plan::plan_json(&ctx, webgpu_limits, cases);
    plan["bench"] = serde_json::json!({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "wgattn_version": env!("CARGO_PKG_VERSION"),
        "suite": suite.name(),
        "iterations": IterationsRecord {
            warmup: iterations.warmup,
            min_iters: iterations.min_iters,
            max_iters: iterations.max_iters,
            budget_s: iterations.budget.as_secs_f64(),
        },
        "unplanned": unplanned,
    });
    plan["heatmap"] = heatmap_case(&ctx)?;
    let text = serde_json::to_string(&plan)?;
    result_file::write_atomically(plan_path, text.as_bytes())?;
    eprintln!(
        "wrote {planned} planned cases (and {} the page cannot run) to {}",
        plan["bench"]["unplanned"].as_array().map_or(0, Vec::len),
        plan_path.display()
    );
    Ok(())
}

/// The case whose attention probabilities the page draws after timing: small, staged, causal
/// with a window and two documents, returning `probs` and `logits` (masked positions are the
/// `-inf` logits).
fn heatmap_case(ctx: &Context) -> Result<serde_json::Value> {
    let (l, d) = (48usize, 16usize);
    let data =
        |seed: f32| -> Vec<f32> { (0..l * d).map(|i| (i as f32 * 0.61 + seed).sin()).collect() };
    let q = wgattn::Tensor::from_f32([1, 1, l, d], data(0.3))?;
    let k = wgattn::Tensor::from_f32([1, 1, l, d], data(1.7))?;
    let v = wgattn::Tensor::from_f32([1, 1, l, d], data(2.2))?;
    let docs: Vec<i64> = (0..l).map(|j| i64::from(j >= 30)).collect();
    let mods = wgattn::MaskMods {
        segments: Some(wgattn::Segments {
            q: docs.clone(),
            kv: docs,
        }),
        ..Default::default()
    };
    let inputs = wgattn::AttentionInputs::new(&q, &k, &v).with_mods(&mods);
    let options = wgattn::AttentionOptions {
        causal: true,
        window_left: 16,
        scale: Some(0.5),
        returns: wgattn::Returns {
            probs: true,
            logits: true,
            ..Default::default()
        },
        path: wgattn::ExecutionPath::Staged,
        ..Default::default()
    };
    let plan = wgattn::plan::plan(ctx, &inputs, &options)?;
    let expected = wgattn::reference::masked_attention(&inputs, &options)?;
    crate::cli::plan::case_json(
        "heatmap: causal, window 16, two documents",
        &plan,
        Some(&expected),
        None,
    )
}

fn adapter_record(ctx: &Context) -> AdapterRecord {
    let info = ctx.adapter_info();
    let features = ctx.shader_features();
    let features_used = [
        (features.f16, "shader-f16"),
        (features.subgroups, "subgroups"),
        (features.opaque_loops, "opaque-loops"),
        (ctx.uses_mapped_uploads(), "mapped-uploads"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_string())
    .collect();
    AdapterRecord {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        vendor: info.vendor,
        device: info.device,
        features_used,
    }
}

/// A case in a few words, for the progress lines.
fn summary(case: &CaseRecord) -> String {
    match case.ran() {
        Some(f) => format!(
            "{:.3} ms, {:.3} GFLOP/s ({} calls)",
            f.median_ms, f.gflops, case.request.iters
        ),
        None => case.outcome(),
    }
}

/// `s` for a Markdown table cell (a `|` would end the cell).
pub fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The report as a Markdown table, one row per case.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "## wgattn {} bench, suite `{}`\n\n{}; driver {} {}; {} cases\n\n",
        report.wgattn_version,
        report.suite,
        cell_text(&report.adapter_line()),
        cell_text(&report.adapter.driver),
        cell_text(&report.adapter.driver_info),
        report.cases.len()
    );
    out.push_str(
        "| case | path | dtype | B Hq/Hkv Lq Lt D | mask | calls | median ms | GPU ms | min ms | max ms | GFLOP/s | peak GPU MiB | status |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for case in &report.cases {
        let r = &case.request;
        let shape = format!(
            "{} {}/{} {} {} {}",
            r.batch, r.q_heads, r.kv_heads, r.q_len, r.kv_len, r.head_dim
        );
        let figures = match case.ran() {
            Some(f) => [
                format!("{:.3}", f.median_ms),
                f.gpu_median_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.3}")),
                format!("{:.3}", f.min_ms),
                format!("{:.3}", f.max_ms),
                format!("{:.3}", f.gflops),
                if r.path == "reference" {
                    "-".into()
                } else {
                    format!("{:.2}", f.gpu_bytes as f64 / (1u64 << 20) as f64)
                },
            ],
            None => [
                "-".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            case.id,
            r.path,
            r.dtype,
            shape,
            r.mask,
            r.iters,
            figures.join(" | "),
            cell_text(&case.outcome())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_name_the_case() {
        for suite in [SuiteName::Standard, SuiteName::Smoke] {
            let cells = suite.cells();
            let ids: HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids.len(), cells.len(), "{suite:?}");
            for c in &cells {
                assert!(c.id.starts_with(c.group), "{}", c.id);
                assert!(c.id.ends_with(c.request.path.name()), "{}", c.id);
                assert!(c.id.contains(c.request.dtype.name()), "{}", c.id);
            }
        }
    }

    #[test]
    fn standard_grid_is_the_documented_one() {
        let cells = SuiteName::Standard.cells();
        assert_eq!(cells.len(), 110);
        let ids: HashSet<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        for id in [
            "prefill_f32_l1024_causal_fused",
            "prefill_f16_l4096_window_staged",
            "prefill_f32_l256_padding_reference",
            "decode_f16_lt8192_padding_fused",
            "decode_gqa_f32_lt8192_none_reference",
            "decode_resident_f16_lt8192_none_staged",
        ] {
            assert!(ids.contains(id), "{id}");
        }
        let padding = cells
            .iter()
            .find(|c| c.id == "prefill_f32_l1024_padding_fused")
            .unwrap();
        assert_eq!(padding.request.kv_lengths, Some(vec![768]));
        assert!(!padding.request.causal);
        let window = cells
            .iter()
            .find(|c| c.id == "prefill_f32_l4096_window_fused")
            .unwrap();
        assert!(window.request.causal);
        assert_eq!(window.request.window_left, 256);
        let gqa = cells.iter().find(|c| c.group == "decode_gqa").unwrap();
        assert_eq!(
            (gqa.request.shape.q_heads, gqa.request.shape.kv_heads),
            (32, 8)
        );
        assert_eq!(gqa.request.shape.q_len, 1);
        // Only the resident group keeps its inputs on the device, and only on GPU paths.
        for c in &cells {
            assert_eq!(c.request.resident, c.group == "decode_resident", "{}", c.id);
        }
        assert!(!ids.contains("decode_resident_f32_lt8192_none_reference"));
    }

    #[test]
    fn long_reference_and_staged_cases_are_skipped_with_a_reason() {
        let cells = SuiteName::Standard.cells();
        let skipped = |id: &str| {
            cells
                .iter()
                .find(|c| c.id == id)
                .unwrap_or_else(|| panic!("{id}"))
                .skip_reason(SuiteName::Standard.caps())
        };
        assert!(skipped("prefill_f32_l1024_none_reference").is_none());
        assert!(skipped("prefill_f32_l4096_none_reference")
            .unwrap()
            .contains("reference path up to 8388608 scores (B·Hq·Lq·Lt); this case has 134217728"));
        assert!(skipped("prefill_f32_l1024_none_staged").is_none());
        assert!(skipped("prefill_f32_l4096_none_staged").is_some());
        assert!(skipped("prefill_f32_l4096_none_fused").is_none());
        // Decode is cheap for both: Lq = 1.
        assert!(skipped("decode_f32_lt8192_none_reference").is_none());
    }
}
