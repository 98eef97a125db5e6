//! `wgattn heatmap`: a case's attention probabilities drawn as one heatmap per query head
//! (keys across, queries down), masked positions in grey.
//!
//! The probabilities come from the GPU (staged path, `probs` returned); which positions are
//! masked comes from the masks themselves (`wgattn::reference::allowed`), since an allowed
//! key's probability can underflow to 0 too.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use wgattn::{AttentionProblem, Context, ExecutionPath, Returns};

use super::case_file::Case;
use super::options::OptionFlags;
use super::picture::figure::{Figure, Key, Panel, Pooling};
use super::result_file::{check_output_dir, write_atomically};
use super::summary;

/// Options given here override the case file's metadata.
#[derive(clap::Args, Debug)]
pub struct HeatmapArgs {
    /// Case file (safetensors), as `wgattn run` reads it.
    #[arg(value_name = "CASE")]
    pub case: PathBuf,
    /// Picture to write (PNG).
    #[arg(short, long, value_name = "PNG")]
    pub output: PathBuf,
    /// Batch entry to draw.
    #[arg(long, value_name = "B", default_value_t = 0)]
    pub batch: usize,
    /// Query heads to draw: `all` or a comma-separated list such as `0,3`.
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = parse_heads)]
    pub heads: Heads,
    /// Query rows to draw, `A..B` (B excluded; either end may be left out).
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    pub query_range: Option<QueryRange>,
    /// Largest side of one head's heatmap, in pixels; a longer axis is max-pooled to fit.
    #[arg(long, value_name = "PX", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub panel_size: u32,
    /// Top of the colour scale; larger values saturate (default: the largest probability drawn).
    #[arg(long, value_name = "P", value_parser = parse_vmax)]
    pub vmax: Option<f32>,
    #[command(flatten)]
    pub options: OptionFlags,
}

/// Which query heads to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heads {
    All,
    List(Vec<usize>),
}

impl Heads {
    /// The head indices, each checked against `Hq`.
    pub fn resolve(&self, q_heads: usize) -> Result<Vec<usize>> {
        match self {
            Heads::All => Ok((0..q_heads).collect()),
            Heads::List(list) => {
                if let Some(&h) = list.iter().find(|&&h| h >= q_heads) {
                    bail!(
                        "--heads: head {h} is out of range: the case has Hq={q_heads} (heads 0..{})",
                        q_heads - 1
                    );
                }
                Ok(list.clone())
            }
        }
    }
}

fn parse_heads(s: &str) -> Result<Heads, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(Heads::All);
    }
    s.split(',')
        .map(|h| h.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map(Heads::List)
        .map_err(|_| "expected all or a comma-separated list of head indices such as 0,3".into())
}

/// `A..B`, either end optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryRange {
    pub start: Option<usize>,
    pub end: Option<usize>,
}

impl QueryRange {
    /// The rows `start..end`, checked against `Lq`.
    pub fn resolve(range: Option<QueryRange>, q_len: usize) -> Result<std::ops::Range<usize>> {
        let r = range.unwrap_or(QueryRange {
            start: None,
            end: None,
        });
        let (start, end) = (r.start.unwrap_or(0), r.end.unwrap_or(q_len));
        if start >= end || end > q_len {
            bail!(
                "--query-range {start}..{end} is not a non-empty range inside the case's \
                 queries 0..{q_len}"
            );
        }
        Ok(start..end)
    }
}

fn parse_range(s: &str) -> Result<QueryRange, String> {
    let bad = || format!("expected A..B with row indices, such as 0..16 (got {s:?})");
    let (a, b) = s.trim().split_once("..").ok_or_else(bad)?;
    let end_of = |x: &str| -> Result<Option<usize>, String> {
        let x = x.trim();
        if x.is_empty() {
            Ok(None)
        } else {
            x.parse().map(Some).map_err(|_| bad())
        }
    };
    Ok(QueryRange {
        start: end_of(a)?,
        end: end_of(b)?,
    })
}

fn parse_vmax(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a number above 0".into()),
    }
}

/// Validates everything (case, batch, heads, rows, output directory) before the GPU runs.
pub fn heatmap(args: &HeatmapArgs) -> Result<()> {
    check_output_dir(&args.output)?;
    let case = Case::read(&args.case)?;
    let mut options = args.options.values(None).or(case.options.clone()).resolve();
    options.returns = Returns {
        probs: true,
        ..Default::default()
    };
    options.path = ExecutionPath::Staged;
    let inputs = case.inputs();
    let in_case = || format!("case file {}", args.case.display());
    let p = AttentionProblem::new(&inputs, &options).with_context(in_case)?;
    let b = args.batch;
    if b >= p.batch {
        bail!(
            "--batch {b} is out of range: the case has B={} (batch entries 0..{})",
            p.batch,
            p.batch - 1
        );
    }
    let heads = args.heads.resolve(p.q_heads)?;
    let rows = QueryRange::resolve(args.query_range, p.q_len)?;
    let ctx = Context::new()?;
    // A WGSL mask_mod runs on the GPU only.
    let allowed = if inputs.mods.is_some_and(|m| m.mask_mod.is_some()) {
        wgattn::allowed_positions(&ctx, &inputs, &options)
    } else {
        wgattn::reference::allowed(&inputs, &options)
    }
    .with_context(in_case)?;

    let probs = wgattn::masked_attention(&ctx, &inputs, &options)
        .with_context(in_case)?
        .probs
        .ok_or_else(|| anyhow!("the staged path returned no probabilities"))?
        .to_f32_vec();

    let lt = p.total_len();
    let pooling = Pooling::new(rows.len(), lt, args.panel_size as usize);
    let group = p.group();
    let panels: Vec<Panel> = heads
        .iter()
        .map(|&h| {
            let row0 = (b * p.q_heads + h) * p.q_len + rows.start;
            let cells = pooling.pool(rows.len(), lt, |r, c| {
                let at = (row0 + r) * lt + c;
                allowed[at].then_some(probs[at])
            });
            let head = if group > 1 {
                format!("head {h} (kv head {})", h / group)
            } else {
                format!("head {h}")
            };
            let drawn = &allowed[row0 * lt..(row0 + rows.len()) * lt];
            let label = head + &summary::unseeing_rows(drawn, lt, rows.start);
            Panel { label, cells }
        })
        .collect();
    let drawn_max = panels
        .iter()
        .flat_map(|panel| panel.cells.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    let (vmax, vmax_why) = match args.vmax {
        Some(v) => (v, "--vmax"),
        None if drawn_max > 0.0 => (drawn_max, "the largest drawn"),
        None => (1.0, "nothing above 0 drawn"),
    };

    let heads_text = match &args.heads {
        Heads::All if p.q_heads == 1 => "head 0".to_string(),
        Heads::All => format!("all {} heads", p.q_heads),
        Heads::List(list) => format!(
            "head{} {}",
            if list.len() > 1 { "s" } else { "" },
            list.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut subtitle = vec![
        summary::shape(&p),
        summary::masks(&p, &inputs, &options),
        format!(
            "{}; colours 0 to {} ({vmax_why})",
            summary::scale(&p),
            summary::short(vmax)
        ),
    ];
    if let Some(note) = pooling.note() {
        subtitle.push(format!(
            "{note}: a cell shows the largest probability it covers"
        ));
    }
    let figure = Figure {
        title: format!(
            "attention probabilities: batch {b}, {heads_text}, queries {}..{}",
            rows.start, rows.end
        ),
        subtitle,
        rows: rows.len(),
        cols: lt,
        first_row: rows.start,
        pooling,
        panels,
        key: Key::Colorbar {
            vmax,
            label: "probability".into(),
        },
        grid_lines: false,
    };
    write_atomically(&args.output, &figure.to_png()?)?;
    println!(
        "wrote {} ({} panel{}{})",
        args.output.display(),
        heads.len(),
        if heads.len() > 1 { "s" } else { "" },
        pooling.note().map(|n| format!(", {n}")).unwrap_or_default()
    );
    Ok(())
}
