//! `wgattn mask`: which positions a mask allows, per batch entry and head, drawn as a PNG or
//! printed as text, without running attention (`wgattn::reference::allowed`).
//!
//! The mask comes from flags (a shape, the structured masks, key lengths) or from a case file
//! (its shape, mask tensor, key lengths and options; flags override the options and lengths).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use wgattn::{AttentionInputs, AttentionOptions, AttentionProblem, Layout, Tensor};

use super::case_file::Case;
use super::options::{parse_layout, MaskFlags, OptionValues};
use super::picture::figure::{Figure, Key, Panel, Pooling};
use super::picture::viridis::viridis;
use super::result_file::{check_output_dir, write_atomically};
use super::summary;

/// The most positions (`B * Hq * Lq * Lt`) drawn, so a typo cannot exhaust memory.
const MAX_POSITIONS: usize = 1 << 28;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)
    .args(["output", "ascii"])))]
pub struct MaskArgs {
    /// Draw this case file's mask: its shape, mask tensor, key lengths and options.
    #[arg(long, value_name = "CASE")]
    pub case: Option<PathBuf>,
    #[command(flatten)]
    pub masks: MaskFlags,
    /// Per-batch key lengths, comma-separated (ONNX nonpad_kv_seqlen); replaces a case's.
    #[arg(long, value_name = "LIST", value_parser = parse_lengths)]
    pub kv_lengths: Option<KvLengths>,
    /// Query length Lq (default: the key length).
    #[arg(long, value_name = "L", conflicts_with = "case")]
    pub q_len: Option<usize>,
    /// Number of new keys Lk (default: Lq, or the largest --kv-lengths).
    #[arg(long, value_name = "L", conflicts_with = "case")]
    pub kv_len: Option<usize>,
    /// Cached keys P before the new ones (then Lt = P + Lk and the causal offset is P).
    #[arg(long, value_name = "P", conflicts_with = "case")]
    pub past_len: Option<usize>,
    /// Batch size B (default: the number of --kv-lengths, else 1).
    #[arg(long, value_name = "B", conflicts_with = "case")]
    pub batch: Option<usize>,
    /// Query heads H (default 1).
    #[arg(long, value_name = "H", conflicts_with = "case")]
    pub heads: Option<usize>,
    /// Memory order of the case file's q, k, v: bhsd or bshd (overrides its metadata).
    #[arg(long, value_name = "LAYOUT", value_parser = parse_layout, requires = "case")]
    pub layout: Option<Layout>,
    /// Segment (document) id of every key, comma-separated (Lt of them); each query takes
    /// the id of its position (the last Lq keys). The same for every batch entry.
    #[arg(long, value_name = "LIST", value_parser = parse_lengths, conflicts_with = "case")]
    pub segments: Option<KvLengths>,
    /// Prefix-LM: bidirectional inside the first P keys, causal after (every batch entry).
    #[arg(long, value_name = "P", conflicts_with = "case")]
    pub prefix_len: Option<i64>,
    /// Token id of every key, comma-separated (Lt of them), for --blocked-ids.
    #[arg(long, value_name = "LIST", value_parser = parse_lengths, requires = "blocked_ids",
          conflicts_with = "case")]
    pub token_ids: Option<KvLengths>,
    /// Token ids no query may attend, comma-separated.
    #[arg(long, value_name = "LIST", value_parser = parse_lengths, requires = "token_ids")]
    pub blocked_ids: Option<KvLengths>,
    /// A WGSL mask_mod body, e.g. 'return (q / 4u) == (k / 4u);' (evaluated on the GPU).
    #[arg(long, value_name = "WGSL", conflicts_with = "case")]
    pub mask_mod: Option<String>,
    /// Picture to write (PNG).
    #[arg(short, long, value_name = "PNG")]
    pub output: Option<PathBuf>,
    /// Print the mask on stdout: `#` allowed, `.` masked, one block per batch entry and head.
    #[arg(long)]
    pub ascii: bool,
    /// Largest side of one panel, in pixels; a longer axis is max-pooled to fit.
    #[arg(long, value_name = "PX", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub panel_size: u32,
}

/// `--kv-lengths 5,3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvLengths(pub Vec<i64>);

fn parse_lengths(s: &str) -> Result<KvLengths, String> {
    s.split(',')
        .map(|x| x.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map(KvLengths)
        .map_err(|_| "expected a comma-separated list of integers such as 5,3".into())
}

/// The tensors a mask needs: real ones from a case, or zeros of head size 1 for a spec.
struct Source {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    past: Option<(Tensor, Tensor)>,
    mask: Option<wgattn::Mask>,
    kv_lengths: Option<Vec<i64>>,
    mods: Option<wgattn::MaskMods>,
    file_options: OptionValues,
    from_case: bool,
}

impl Source {
    fn from_case(case: Case, layout: Option<Layout>) -> Source {
        let past = case.past_k.zip(case.past_v);
        Source {
            q: case.q,
            k: case.k,
            v: case.v,
            past,
            mask: case.mask,
            kv_lengths: case.kv_lengths,
            mods: case.mods,
            file_options: OptionValues {
                layout: layout.or(case.options.layout),
                ..case.options
            },
            from_case: true,
        }
    }

    fn from_flags(args: &MaskArgs) -> Result<Source> {
        let lengths = args.kv_lengths.as_ref().map(|l| l.0.clone());
        let longest = lengths
            .as_ref()
            .and_then(|l| l.iter().copied().max())
            .map(|m| m.max(0) as usize);
        let past = args.past_len.unwrap_or(0);
        let (q_len, k_len) = match (args.q_len, args.kv_len) {
            (Some(q), Some(k)) => (q, k),
            (Some(q), None) => (q, longest.map_or(q, |m| m.saturating_sub(past))),
            (None, Some(k)) => (k + past, k),
            (None, None) => match longest {
                Some(m) => (m, m.saturating_sub(past)),
                None => bail!(
                    "no shape: give --q-len and/or --kv-len (or --kv-lengths, or --case FILE)"
                ),
            },
        };
        let batch = args
            .batch
            .unwrap_or_else(|| lengths.as_ref().map_or(1, Vec::len));
        let heads = args.heads.unwrap_or(1);
        check_positions(batch, heads, q_len, past + k_len)?;
        let zeros = |shape: [usize; 4]| Tensor::from_f32(shape, vec![0.0; shape.iter().product()]);
        Ok(Source {
            q: zeros([batch, heads, q_len, 1])?,
            k: zeros([batch, 1, k_len, 1])?,
            v: zeros([batch, 1, k_len, 1])?,
            past: match args.past_len {
                Some(p) => Some((zeros([batch, 1, p, 1])?, zeros([batch, 1, p, 1])?)),
                None => None,
            },
            mask: None,
            kv_lengths: lengths,
            mods: flag_mods(args, batch, q_len, past + k_len)?,
            file_options: OptionValues::default(),
            from_case: false,
        })
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        AttentionInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            past_k: self.past.as_ref().map(|p| &p.0),
            past_v: self.past.as_ref().map(|p| &p.1),
            kv_lengths: self.kv_lengths.as_deref(),
            mask: self.mask.as_ref(),
            mods: self.mods.as_ref(),
            block_mask: None,
        }
    }
}

/// The mods the flags ask for, the same for every batch entry.
fn flag_mods(
    args: &MaskArgs,
    batch: usize,
    q_len: usize,
    total: usize,
) -> Result<Option<wgattn::MaskMods>> {
    let mut mods = wgattn::MaskMods::default();
    let per_key = |what: &str, list: &KvLengths| -> Result<Vec<i64>> {
        if list.0.len() != total {
            bail!(
                "--{what} has {} ids; it needs one per key (Lt = {total})",
                list.0.len()
            );
        }
        Ok((0..batch).flat_map(|_| list.0.iter().copied()).collect())
    };
    if let Some(s) = &args.segments {
        let kv = per_key("segments", s)?;
        let q = (0..batch)
            .flat_map(|_| s.0[total.saturating_sub(q_len)..].iter().copied())
            .collect();
        mods.segments = Some(wgattn::Segments { q, kv });
    }
    if let Some(p) = args.prefix_len {
        mods.prefix_lengths = Some(vec![p; batch]);
    }
    if let (Some(ids), Some(blocked)) = (&args.token_ids, &args.blocked_ids) {
        mods.token_filter = Some(wgattn::TokenFilter {
            kv_token_ids: per_key("token-ids", ids)?,
            blocked: wgattn::BlockedTokens::Ids(blocked.0.clone()),
        });
    }
    mods.mask_mod = args.mask_mod.clone();
    Ok((mods != wgattn::MaskMods::default()).then_some(mods))
}

fn check_positions(batch: usize, heads: usize, q_len: usize, total: usize) -> Result<()> {
    let n = [batch, heads, q_len, total]
        .iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x));
    match n {
        Some(n) if n <= MAX_POSITIONS => Ok(()),
        _ => bail!(
            "B={batch} x H={heads} x Lq={q_len} x Lt={total} positions are too many to draw \
             (at most {MAX_POSITIONS})"
        ),
    }
}

/// One block of the picture or the text: a batch entry and a head, or all of its heads when
/// they allow the same positions.
struct Block {
    label: String,
    /// Row-major `Lq x Lt`.
    allowed: Vec<bool>,
}

fn blocks(p: &AttentionProblem, allowed: &[bool], kv_lengths: Option<&[i64]>) -> Vec<Block> {
    let lt = p.total_len();
    let plane = p.q_len * lt;
    let block = |label: String, allowed: &[bool]| Block {
        label: label + &summary::unseeing_rows(allowed, lt, 0),
        allowed: allowed.to_vec(),
    };
    let mut out = Vec::new();
    for b in 0..p.batch {
        let head = |h: usize| {
            let start = (b * p.q_heads + h) * plane;
            &allowed[start..start + plane]
        };
        let batch = match kv_lengths {
            Some(l) => format!("batch {b} (kv_len {})", l[b]),
            None => format!("batch {b}"),
        };
        if p.q_heads > 1 && (1..p.q_heads).all(|h| head(h) == head(0)) {
            let label = format!("{batch}, heads 0-{} alike", p.q_heads - 1);
            out.push(block(label, head(0)));
            continue;
        }
        for h in 0..p.q_heads {
            out.push(block(format!("{batch}, head {h}"), head(h)));
        }
    }
    out
}

/// Reads or builds the mask, then prints and/or draws it.
pub fn mask(args: &MaskArgs) -> Result<()> {
    if let Some(out) = &args.output {
        check_output_dir(out)?;
    }
    let source = match &args.case {
        Some(path) => {
            let mut s = Source::from_case(Case::read(path)?, args.layout);
            if let Some(l) = &args.kv_lengths {
                s.kv_lengths = Some(l.0.clone());
            }
            s
        }
        None => Source::from_flags(args)?,
    };
    let options: AttentionOptions = args
        .masks
        .values()
        .or(source.file_options.clone())
        .resolve();
    let inputs = source.inputs();
    let context = || match &args.case {
        Some(path) => format!("case file {}", path.display()),
        None => "mask".to_string(),
    };
    let p = AttentionProblem::new(&inputs, &options).with_context(context)?;
    check_positions(p.batch, p.q_heads, p.q_len, p.total_len())?;
    // A WGSL mask_mod runs on the GPU only; everything else is drawn from the CPU reference.
    let allowed = if inputs.mods.is_some_and(|m| m.mask_mod.is_some()) {
        let ctx = wgattn::Context::new()?;
        wgattn::allowed_positions(&ctx, &inputs, &options)
    } else {
        wgattn::reference::allowed(&inputs, &options)
    }
    .with_context(context)?;
    let blocks = blocks(&p, &allowed, inputs.kv_lengths);

    let shape = if source.from_case {
        summary::shape(&p)
    } else {
        let mut s = format!(
            "B={} H={} Lq={} Lt={}",
            p.batch,
            p.q_heads,
            p.q_len,
            p.total_len()
        );
        if p.has_past {
            s += &format!(" (P={} cached + Lk={})", p.past_len, p.k_len);
        }
        s
    };
    let masks = summary::masks(&p, &inputs, &options);
    if args.ascii {
        print_ascii(&p, &shape, &masks, &blocks)?;
    }
    if let Some(out) = &args.output {
        let pooling = Pooling::new(p.q_len, p.total_len(), args.panel_size as usize);
        let lt = p.total_len();
        let panels = blocks
            .iter()
            .map(|block| Panel {
                label: block.label.clone(),
                cells: pooling.pool(p.q_len, lt, |r, c| block.allowed[r * lt + c].then_some(1.0)),
            })
            .collect();
        let mut subtitle = vec![shape, masks];
        if let Some(note) = pooling.note() {
            subtitle.push(format!(
                "{note}: a cell is allowed if any position it covers is"
            ));
        }
        let figure = Figure {
            title: "allowed positions (keys across, queries down)".into(),
            subtitle,
            rows: p.q_len,
            cols: lt,
            first_row: 0,
            pooling,
            panels,
            key: Key::Legend {
                colour: viridis(1.0),
                label: "allowed".into(),
            },
            grid_lines: true,
        };
        write_atomically(out, &figure.to_png()?)?;
        if !args.ascii {
            let plural = if blocks.len() > 1 { "s" } else { "" };
            println!("wrote {} ({} panel{plural})", out.display(), blocks.len());
        }
    }
    Ok(())
}

/// A header line, then per block its label and one line per query: `#` allowed, `.` masked.
fn print_ascii(p: &AttentionProblem, shape: &str, masks: &str, blocks: &[Block]) -> Result<()> {
    let lt = p.total_len();
    let mut text = format!("{shape}; {masks} (# allowed, . masked; keys across, queries down)\n");
    for block in blocks {
        text += &format!("\n{}:\n", block.label);
        for row in block.allowed.chunks(lt) {
            text.extend(row.iter().map(|&a| if a { '#' } else { '.' }));
            text.push('\n');
        }
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}
