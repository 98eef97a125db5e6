//! Masks beyond the mask tensor: structured masks computed in the kernels from small index
//! tensors (segments, prefix-LM, ALiBi, token classes, modalities) and user WGSL `mask_mod` /
//! `score_mod` snippets with auxiliary tensors. None of them ever materializes `Lq x Lt`.
//!
//! Every mask given combines with every other and with the engine's own (causal, window, key
//! lengths, mask tensor): a position is allowed only if all allow it. `q` and `k` below are
//! the row index in the query block (`0..Lq`) and the index into the keys attended (`0..Lt`,
//! past cache first); `p = q + offset` is the query's position, with the causal offset of
//! `SEMANTICS.md` (`P` with a cache, `kv_len[b] - Lq` with key lengths, `causal_offset` when
//! given, else 0).
//!
//! | mask | allows `(b, h, q, k)` iff / adds |
//! |---|---|
//! | [`Segments`] | `q_segment[b, q] == kv_segment[b, k]` |
//! | prefix-LM ([`MaskMods::prefix_lengths`]) | `k < prefix[b]` or `k <= p` |
//! | [`Alibi`] | adds `-slope[h] * (p - k)` (one-sided) or `-slope[h] * abs(p - k)` |
//! | [`TokenFilter`] | the token at key `k` is not blocked |
//! | [`Modalities`] | `allow[m_q, m_k]` and, if `causal[m_q]`, `k <= p` |
//! | `mask_mod` | the snippet returns `true` |
//! | `score_mod` | replaces the score `s` (after scale and softcap) by the snippet's value |
//!
//! ```
//! use wgattn::{masked_attention, AttentionInputs, AttentionOptions, Context, MaskMods, Tensor};
//!
//! # fn main() -> wgattn::Result<()> {
//! let ctx = Context::new()?;
//! let q = Tensor::from_f32([1, 1, 6, 4], (0..24).map(|x| x as f32 * 0.1).collect())?;
//! // Two documents packed in one sequence, each attending causally to itself only.
//! let mods = MaskMods {
//!     mask_mod: Some("return aux_doc[q] == aux_doc[k] && k <= q;".into()),
//!     aux: vec![wgattn::Aux::i32("doc", vec![0, 0, 0, 1, 1, 1])],
//!     ..Default::default()
//! };
//! let inputs = AttentionInputs::new(&q, &q, &q).with_mods(&mods);
//! let out = masked_attention(&ctx, &inputs, &AttentionOptions::default())?;
//! assert_eq!(out.out.shape(), &[1, 1, 6, 4]);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use crate::error::{Error, Result};

/// Structured and user-defined masks of one call (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskMods {
    /// Packed sequences: a query sees a key only in its own segment.
    pub segments: Option<Segments>,
    /// Prefix-LM, `[B]`: bidirectional inside the first `prefix[b]` keys, causal after.
    /// Each `0 <= prefix[b] <= Lt`.
    pub prefix_lengths: Option<Vec<i64>>,
    /// ALiBi position bias, computed in the kernel.
    pub alibi: Option<Alibi>,
    /// Blocks keys by their token id (a mask that follows the input).
    pub token_filter: Option<TokenFilter>,
    /// Which modality may attend which.
    pub modalities: Option<Modalities>,
    /// The body of `fn mask_mod(b: u32, h: u32, q: u32, k: u32) -> bool` in WGSL.
    pub mask_mod: Option<String>,
    /// The body of `fn score_mod(s: f32, b: u32, h: u32, q: u32, k: u32) -> f32` in WGSL.
    /// `minus_infinity()` returns `-inf` (removes the key; WGSL has no infinite constant).
    pub score_mod: Option<String>,
    /// Read-only tensors the snippets see as `aux_<name>: array<i32 | u32 | f32>`.
    pub aux: Vec<Aux>,
}

/// Segment (document) ids of queries `[B, Lq]` and keys `[B, Lt]`; any values that fit in i32.
#[derive(Clone, Debug, PartialEq)]
pub struct Segments {
    /// `q_segment [B, Lq]`.
    pub q: Vec<i64>,
    /// `kv_segment [B, Lt]`.
    pub kv: Vec<i64>,
}

/// ALiBi: adds `-slope[h] * (p - k)` (one-sided, for causal attention) or
/// `-slope[h] * |p - k|` (symmetric) to the logits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alibi {
    /// One slope per query head; `None` = the geometric sequence of the ALiBi paper
    /// ([`alibi_slopes`]).
    pub slopes: Option<Vec<f32>>,
    /// `|p - k|` instead of `p - k`.
    pub symmetric: bool,
}

/// The token id of every key `[B, Lt]` (each in `0..2^31`) and which tokens are blocked.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenFilter {
    /// `kv_token_ids [B, Lt]`.
    pub kv_token_ids: Vec<i64>,
    /// The blocked set.
    pub blocked: BlockedTokens,
}

/// Which token ids a [`TokenFilter`] blocks.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockedTokens {
    /// These ids (any order, repeats allowed).
    Ids(Vec<i64>),
    /// Tokens whose class `class_of[id]` is in `blocked`; every key's id must be below
    /// `class_of.len()`.
    Classes {
        /// The class of each token id.
        class_of: Vec<u32>,
        /// The blocked classes.
        blocked: Vec<u32>,
    },
}

/// Modality ids of queries `[B, Lq]` and keys `[B, Lt]` (each `< M`), the allow matrix
/// `[M, M]` (`allow[m_q * M + m_k]`: may a query of `m_q` see a key of `m_k`) and a causal
/// flag per query modality `[M]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Modalities {
    /// `modality_q [B, Lq]`.
    pub q: Vec<u32>,
    /// `modality_kv [B, Lt]`.
    pub kv: Vec<u32>,
    /// `modality_allow [M, M]`, row = query modality.
    pub allow: Vec<bool>,
    /// `[M]`: queries of this modality see only keys `k <= p`.
    pub causal: Vec<bool>,
}

/// A named auxiliary tensor for the snippets (read as a flat array).
#[derive(Clone, Debug, PartialEq)]
pub struct Aux {
    /// The name after `aux_`: ASCII letters, digits and `_`.
    pub name: String,
    /// The elements.
    pub data: AuxData,
}

impl Aux {
    /// An i32 tensor `aux_<name>`.
    pub fn i32(name: &str, data: Vec<i32>) -> Self {
        Aux {
            name: name.to_string(),
            data: AuxData::I32(data),
        }
    }

    /// A u32 tensor `aux_<name>`.
    pub fn u32(name: &str, data: Vec<u32>) -> Self {
        Aux {
            name: name.to_string(),
            data: AuxData::U32(data),
        }
    }

    /// An f32 tensor `aux_<name>`.
    pub fn f32(name: &str, data: Vec<f32>) -> Self {
        Aux {
            name: name.to_string(),
            data: AuxData::F32(data),
        }
    }
}

/// The elements of an [`Aux`] tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum AuxData {
    /// `array<i32>`.
    I32(Vec<i32>),
    /// `array<u32>`.
    U32(Vec<u32>),
    /// `array<f32>`.
    F32(Vec<f32>),
}

impl AuxData {
    fn wgsl_type(&self) -> &'static str {
        match self {
            AuxData::I32(_) => "i32",
            AuxData::U32(_) => "u32",
            AuxData::F32(_) => "f32",
        }
    }

    /// The elements as little-endian words (at least one, so a binding is never empty).
    pub(crate) fn words(&self) -> Vec<u32> {
        let mut w: Vec<u32> = match self {
            AuxData::I32(v) => v.iter().map(|&x| x as u32).collect(),
            AuxData::U32(v) => v.clone(),
            AuxData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        };
        if w.is_empty() {
            w.push(0);
        }
        w
    }
}

/// The ALiBi paper's slopes for `heads` heads: `2^(-8 (h + 1) / n)` for `n` a power of two;
/// otherwise those of the next lower power of two followed by every other slope of twice
/// that many (as in the reference implementation and HF's BLOOM).
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (0..n).map(|i| start.powi(i as i32 + 1)).collect()
    }
    if heads == 0 {
        return Vec::new();
    }
    let closest = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let mut s = pow2(closest);
    if closest < heads {
        s.extend(
            pow2(2 * closest)
                .into_iter()
                .step_by(2)
                .take(heads - closest),
        );
    }
    s.into_iter().map(|x| x as f32).collect()
}

/// Which mods a problem has: what the kernels are specialized on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModFlags {
    /// [`Segments`].
    pub segments: bool,
    /// Prefix-LM.
    pub prefix: bool,
    /// [`Alibi`].
    pub alibi: bool,
    /// [`TokenFilter`].
    pub tokens: bool,
    /// [`Modalities`].
    pub modality: bool,
    /// A user `mask_mod`.
    pub user_mask: bool,
    /// A user `score_mod`.
    pub user_score: bool,
    /// The fused kernel reads a block mask (tiles classified empty / full / partial).
    pub block_mask: bool,
}

impl ModFlags {
    /// Whether any mod is present.
    pub fn any(self) -> bool {
        self.segments
            || self.prefix
            || self.alibi
            || self.tokens
            || self.modality
            || self.user_mask
            || self.user_score
    }

    /// Whether any mod can disallow a position (what a block mask classifies).
    pub fn masks(self) -> bool {
        self.segments || self.prefix || self.tokens || self.modality || self.user_mask
    }

    pub(crate) fn defines(self) -> Vec<&'static str> {
        let mut d = Vec::new();
        for (on, name) in [
            (self.any(), "MODS"),
            (self.segments, "MOD_SEGMENTS"),
            (self.prefix, "MOD_PREFIX"),
            (self.alibi, "MOD_ALIBI"),
            (self.tokens, "MOD_TOKENS"),
            (self.modality, "MOD_MODALITY"),
            (self.user_mask, "MOD_USER_MASK"),
            (self.user_score, "MOD_USER_SCORE"),
            (self.user_mask || self.user_score, "MOD_USER"),
            (self.block_mask, "BLOCK_MASK"),
        ] {
            if on {
                d.push(name);
            }
        }
        d
    }

    pub(crate) fn label(self) -> String {
        let mut s = String::new();
        for (on, name) in [
            (self.segments, " segments"),
            (self.prefix, " prefix"),
            (self.alibi, " alibi"),
            (self.tokens, " tokens"),
            (self.modality, " modality"),
            (self.user_mask, " mask_mod"),
            (self.user_score, " score_mod"),
            (self.block_mask, " blockmask"),
        ] {
            if on {
                s.push_str(name);
            }
        }
        s
    }
}

/// The validated mods of a problem: flags, the user module and what the block mask may
/// broadcast over.
#[derive(Clone, Debug, PartialEq)]
pub struct ModsInfo {
    /// Which mods are present.
    pub flags: ModFlags,
    /// The generated WGSL of the user's snippets and aux bindings (`None` without snippets).
    pub user: Option<Arc<str>>,
    /// Number of aux tensors (bindings of group 1, where the snippets are included).
    pub aux_count: usize,
    /// `M`, the number of modalities.
    pub modalities: usize,
    /// Whether the mask may differ between batch entries / query heads (a block mask is
    /// computed per entry / head only then).
    pub per_batch: bool,
    /// See `per_batch`.
    pub per_head: bool,
    /// The first batch entry of this problem in the caller's request (0, except for a part
    /// of a request split over the binding limits): added to `b` before a snippet sees it.
    pub batch_offset: usize,
    /// The first query head, likewise added to `h`.
    pub head_offset: usize,
    /// Words of the mods' tables that do not grow with batch entries or heads (blocked
    /// tokens or the class table, `modality_allow` and `modality_causal`), which the binding
    /// limits count.
    pub(crate) fixed_table_words: usize,
}

impl ModsInfo {
    /// The aux tensors a kernel that includes the user's snippets binds (none without
    /// snippets).
    pub(crate) fn snippet_aux(&self) -> usize {
        if self.user.is_some() {
            self.aux_count
        } else {
            0
        }
    }
}

/// Words of the mods' tables for a problem of `d`'s sizes: what [`append_tables`] writes
/// before the block mask.
pub(crate) fn table_words(info: &ModsInfo, d: &Dims) -> u64 {
    let f = info.flags;
    let (b, lq, lt) = (d.batch as u64, d.q_len as u64, d.total_len as u64);
    let per_entry = [
        (f.segments, lq + lt),
        (f.prefix, 1),
        (f.tokens, 2 * lt),
        (f.modality, lq + lt),
    ];
    let per_batch: u64 = per_entry.iter().filter(|(on, _)| *on).map(|(_, n)| n).sum();
    let alibi = if f.alibi { d.q_heads as u64 } else { 0 };
    b * per_batch + alibi + info.fixed_table_words as u64
}

/// [`ModsInfo::fixed_table_words`] of `mods`.
fn fixed_table_words(mods: &MaskMods) -> usize {
    let tokens = mods.token_filter.as_ref().map_or(0, |t| match &t.blocked {
        BlockedTokens::Ids(ids) => blocked_ids(ids).len(),
        BlockedTokens::Classes { class_of, .. } => class_of.len() + class_flags(class_of),
    });
    let modalities = mods
        .modalities
        .as_ref()
        .map_or(0, |m| m.allow.len() + m.causal.len());
    tokens + modalities
}

/// The blocked token ids the kernels search: those in `0..2^31`, sorted, without repeats.
fn blocked_ids(ids: &[i64]) -> Vec<u32> {
    let mut sorted: Vec<u32> = ids
        .iter()
        .filter(|&&x| (0..=i32::MAX as i64).contains(&x))
        .map(|&x| x as u32)
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Entries of the blocked-class flags: one per class up to the largest in `class_of`.
fn class_flags(class_of: &[u32]) -> usize {
    class_of.iter().copied().max().unwrap_or(0) as usize + 1
}

/// Sizes the mods are checked against.
pub(crate) struct Dims {
    pub batch: usize,
    pub q_heads: usize,
    pub q_len: usize,
    pub total_len: usize,
}

fn shape_error(what: &str, expected: String, got: usize) -> Error {
    Error::ShapeMismatch {
        what: what.to_string(),
        expected,
        got: format!("{got} elements"),
    }
}

fn check_len(what: &str, len: usize, dims: &[usize], names: &str) -> Result<()> {
    let n: usize = dims.iter().product();
    if len != n {
        return Err(shape_error(
            what,
            format!("{names} = {dims:?} = {n} elements"),
            len,
        ));
    }
    Ok(())
}

/// Checks every mod against the problem's sizes and compiles the snippets (on the host,
/// with naga) so a bad one is an error naming its line.
pub(crate) fn validate(mods: &MaskMods, d: &Dims) -> Result<ModsInfo> {
    let bq = [d.batch, d.q_len];
    let bk = [d.batch, d.total_len];
    let mut flags = ModFlags::default();
    if let Some(s) = &mods.segments {
        check_len("q_segment", s.q.len(), &bq, "[B, Lq]")?;
        check_len("kv_segment", s.kv.len(), &bk, "[B, Lt]")?;
        for (what, ids) in [("q_segment", &s.q), ("kv_segment", &s.kv)] {
            if let Some(&bad) = ids.iter().find(|&&x| i32::try_from(x).is_err()) {
                return Err(Error::InvalidOption {
                    name: what,
                    value: bad.to_string(),
                    reason: "segment ids must fit in i32",
                });
            }
        }
        flags.segments = true;
    }
    if let Some(prefix) = &mods.prefix_lengths {
        check_len("prefix_len", prefix.len(), &[d.batch], "[B]")?;
        if let Some(&bad) = prefix
            .iter()
            .find(|&&x| x < 0 || x as u64 > d.total_len as u64)
        {
            return Err(Error::InvalidOption {
                name: "prefix_len",
                value: bad.to_string(),
                reason: "a prefix length is in 0..=Lt",
            });
        }
        flags.prefix = true;
    }
    if let Some(alibi) = &mods.alibi {
        if let Some(slopes) = &alibi.slopes {
            check_len("alibi_slopes", slopes.len(), &[d.q_heads], "[Hq]")?;
            if let Some(bad) = slopes.iter().find(|s| !s.is_finite()) {
                return Err(Error::InvalidOption {
                    name: "alibi_slopes",
                    value: bad.to_string(),
                    reason: "ALiBi slopes must be finite",
                });
            }
        }
        flags.alibi = true;
    }
    if let Some(t) = &mods.token_filter {
        check_len("kv_token_ids", t.kv_token_ids.len(), &bk, "[B, Lt]")?;
        if let Some(&bad) = t
            .kv_token_ids
            .iter()
            .find(|&&x| !(0..=i32::MAX as i64).contains(&x))
        {
            return Err(Error::InvalidOption {
                name: "kv_token_ids",
                value: bad.to_string(),
                reason: "token ids are in 0..2^31",
            });
        }
        if let BlockedTokens::Classes { class_of, .. } = &t.blocked {
            if let Some(&bad) = t
                .kv_token_ids
                .iter()
                .find(|&&x| x as u64 >= class_of.len() as u64)
            {
                return Err(Error::InvalidOption {
                    name: "kv_token_ids",
                    value: bad.to_string(),
                    reason: "a token id has no entry in the class table",
                });
            }
        }
        flags.tokens = true;
    }
    let mut modalities = 0;
    if let Some(m) = &mods.modalities {
        let count = m.causal.len();
        if count == 0 || count > 1 << 16 {
            return Err(Error::InvalidOption {
                name: "modality_causal",
                value: count.to_string(),
                reason: "one causal flag per modality, 1 to 65536 modalities",
            });
        }
        check_len("modality_allow", m.allow.len(), &[count, count], "[M, M]")?;
        check_len("modality_q", m.q.len(), &bq, "[B, Lq]")?;
        check_len("modality_kv", m.kv.len(), &bk, "[B, Lt]")?;
        for (what, ids) in [("modality_q", &m.q), ("modality_kv", &m.kv)] {
            if let Some(&bad) = ids.iter().find(|&&x| x as usize >= count) {
                return Err(Error::InvalidOption {
                    name: what,
                    value: bad.to_string(),
                    reason: "a modality id must be below M, the length of modality_causal",
                });
            }
        }
        modalities = count;
        flags.modality = true;
    }
    for (i, a) in mods.aux.iter().enumerate() {
        let ok = !a.name.is_empty()
            && a.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !a.name.starts_with("__");
        if !ok {
            return Err(Error::InvalidOption {
                name: "aux name",
                value: a.name.clone(),
                reason: "aux tensor names are ASCII letters, digits and _ (not starting with __)",
            });
        }
        if mods.aux[..i].iter().any(|b| b.name == a.name) {
            return Err(Error::InvalidOption {
                name: "aux name",
                value: a.name.clone(),
                reason: "two aux tensors have this name",
            });
        }
    }
    flags.user_mask = mods.mask_mod.is_some();
    flags.user_score = mods.score_mod.is_some();
    if !(mods.aux.is_empty() || flags.user_mask || flags.user_score) {
        return Err(Error::InvalidCombination(
            "aux tensors are only read by a mask_mod or score_mod",
        ));
    }
    let user = if flags.user_mask || flags.user_score {
        let (text, starts) = user_module(mods);
        check_snippets(mods, &text, starts)?;
        Some(Arc::from(text))
    } else {
        None
    };
    // A block mask broadcasts over batch entries (heads) when no mask-mod reads `b` (`h`).
    let user_reads = |name: &str| {
        mods.mask_mod
            .as_deref()
            .is_some_and(|body| mentions(body, name))
    };
    Ok(ModsInfo {
        flags,
        user,
        aux_count: mods.aux.len(),
        modalities,
        per_batch: flags.segments
            || flags.prefix
            || flags.tokens
            || flags.modality
            || user_reads("b"),
        per_head: user_reads("h"),
        batch_offset: 0,
        head_offset: 0,
        fixed_table_words: fixed_table_words(mods),
    })
}

/// The mods of the batch entries `batches` and query heads `heads` of a request (a part of a
/// split one): per-batch tables cut to those entries, ALiBi slopes to those heads (the
/// default ones computed for all `q_heads` first); the snippets and aux tensors whole (they
/// see the request's indices through the offsets in [`ModsInfo`]).
pub(crate) fn slice(
    mods: &MaskMods,
    q_len: usize,
    total_len: usize,
    q_heads: usize,
    batches: std::ops::Range<usize>,
    heads: std::ops::Range<usize>,
) -> MaskMods {
    fn rows<T: Clone>(v: &[T], len: usize, b: &std::ops::Range<usize>) -> Vec<T> {
        v.get(b.start * len..b.end * len)
            .map(<[T]>::to_vec)
            .unwrap_or_default()
    }
    let mut m = mods.clone();
    if let Some(s) = &mut m.segments {
        s.q = rows(&s.q, q_len, &batches);
        s.kv = rows(&s.kv, total_len, &batches);
    }
    if let Some(p) = &mut m.prefix_lengths {
        *p = rows(p, 1, &batches);
    }
    if let Some(a) = &mut m.alibi {
        let all = a.slopes.clone().unwrap_or_else(|| alibi_slopes(q_heads));
        a.slopes = Some(
            all.get(heads.clone())
                .map(<[f32]>::to_vec)
                .unwrap_or_default(),
        );
    }
    if let Some(t) = &mut m.token_filter {
        t.kv_token_ids = rows(&t.kv_token_ids, total_len, &batches);
    }
    if let Some(md) = &mut m.modalities {
        md.q = rows(&md.q, q_len, &batches);
        md.kv = rows(&md.kv, total_len, &batches);
    }
    m
}

/// Whether identifier `name` occurs in WGSL `source` outside comments.
fn mentions(source: &str, name: &str) -> bool {
    let code = strip_comments(source);
    let mut word = String::new();
    for c in code.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if word == name {
                return true;
            }
            word.clear();
        }
    }
    false
}

/// `source` with `//` and (nested) `/* */` comments blanked, newlines kept.
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut depth = 0;
    let mut line_comment = false;
    while let Some(c) = chars.next() {
        if line_comment {
            if c == '\n' {
                line_comment = false;
                out.push('\n');
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('*')) => {
                chars.next();
                depth += 1;
            }
            ('*', Some('/')) if depth > 0 => {
                chars.next();
                depth -= 1;
            }
            ('/', Some('/')) if depth == 0 => line_comment = true,
            ('\n', _) => out.push('\n'),
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

/// Group 1 bindings of the aux tensors and the two snippet functions, and the line (1-based)
/// of the module where each snippet's body starts.
fn user_module(mods: &MaskMods) -> (String, [usize; 2]) {
    let mut text = String::new();
    for (i, a) in mods.aux.iter().enumerate() {
        text.push_str(&format!(
            "@group(1) @binding({i}) var<storage, read> aux_{}: array<{}>;\n",
            a.name,
            a.data.wgsl_type()
        ));
    }
    let mut starts = [0; 2];
    let line = |t: &str| t.lines().count() + 1;
    if let Some(body) = &mods.mask_mod {
        text.push_str("fn mask_mod(b: u32, h: u32, q: u32, k: u32) -> bool {\n");
        starts[0] = line(&text);
        text.push_str(body);
        text.push_str("\n}\n");
    }
    if let Some(body) = &mods.score_mod {
        text.push_str("fn score_mod(s: f32, b: u32, h: u32, q: u32, k: u32) -> f32 {\n");
        starts[1] = line(&text);
        text.push_str(body);
        text.push_str("\n}\n");
    }
    (text, starts)
}

/// Compiles the snippets in a module of their own (the aux bindings, the two functions and
/// an entry point calling them) and reports naga's first error at its line in the snippet.
fn check_snippets(mods: &MaskMods, user: &str, starts: [usize; 2]) -> Result<()> {
    let mut text = user.to_string();
    // What the kernels give the snippets besides their arguments (after them, so the lines of
    // the snippets keep their numbers).
    text.push_str("fn minus_infinity() -> f32 {\n    return 0.0;\n}\n");
    text.push_str("@compute @workgroup_size(1)\nfn main() {\n");
    if mods.mask_mod.is_some() {
        text.push_str("    _ = mask_mod(0u, 0u, 0u, 0u);\n");
    }
    if mods.score_mod.is_some() {
        text.push_str("    _ = score_mod(0.0, 0u, 0u, 0u, 0u);\n");
    }
    text.push_str("}\n");
    let located = |line: Option<u32>, message: String| {
        let line = line.map(|l| l as usize).unwrap_or(0);
        // Which snippet the line falls in: the later start at or before it.
        let mut which = None;
        for (name, start, body) in [
            ("mask_mod", starts[0], &mods.mask_mod),
            ("score_mod", starts[1], &mods.score_mod),
        ] {
            if let Some(body) = body {
                let end = start + body.lines().count().max(1);
                if start > 0 && line >= start && line <= end {
                    which = Some((name, line - start + 1));
                }
            }
        }
        let (snippet, at) = match which {
            Some((name, l)) => (name, Some(l)),
            None => (
                if mods.mask_mod.is_some() {
                    "mask_mod"
                } else {
                    "score_mod"
                },
                None,
            ),
        };
        Error::InvalidSnippet {
            snippet,
            line: at,
            message,
        }
    };
    let module = match naga::front::wgsl::parse_str(&text) {
        Ok(m) => m,
        Err(e) => {
            let line = e.location(&text).map(|l| l.line_number);
            return Err(located(line, e.message().to_string()));
        }
    };
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    );
    if let Err(e) = validator.validate(&module) {
        // The innermost span (the expression, not the whole function) names the line.
        let line = e
            .spans()
            .map(|(span, _)| span.location(&text))
            .min_by_key(|l| l.length)
            .map(|l| l.line_number);
        let mut message = e.as_inner().to_string();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e.as_inner());
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        return Err(located(line, message));
    }
    Ok(())
}

/// Where each mod's data lies in the `tables` word array the kernels bind (after the
/// per-batch bounds), as the uniform block carries them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TableOffsets {
    pub q_seg: u32,
    pub kv_seg: u32,
    pub prefix: u32,
    pub alibi: u32,
    pub alibi_symmetric: u32,
    pub ids: u32,
    pub blocked: u32,
    pub n_blocked: u32,
    pub classes: u32,
    pub n_classes: u32,
    pub class_blocked: u32,
    pub key_ok: u32,
    pub mod_q: u32,
    pub mod_kv: u32,
    pub allow: u32,
    pub mod_causal: u32,
    pub modalities: u32,
    pub blocks: u32,
}

/// Appends the mods' data to `words` (which holds the bounds) and says where it went;
/// `key_ok` (`[B, Lt]`, written by the token pass) and `blocks` words are reserved.
pub(crate) fn append_tables(
    words: &mut Vec<u32>,
    mods: &MaskMods,
    d: &Dims,
    block_words: usize,
) -> TableOffsets {
    let mut o = TableOffsets::default();
    let put = |words: &mut Vec<u32>, data: &mut dyn Iterator<Item = u32>| -> u32 {
        let at = words.len() as u32;
        words.extend(data);
        at
    };
    if let Some(s) = &mods.segments {
        o.q_seg = put(words, &mut s.q.iter().map(|&x| x as i32 as u32));
        o.kv_seg = put(words, &mut s.kv.iter().map(|&x| x as i32 as u32));
    }
    if let Some(p) = &mods.prefix_lengths {
        o.prefix = put(words, &mut p.iter().map(|&x| x as u32));
    }
    if let Some(a) = &mods.alibi {
        let slopes = a.slopes.clone().unwrap_or_else(|| alibi_slopes(d.q_heads));
        o.alibi = put(words, &mut slopes.iter().map(|x| x.to_bits()));
        o.alibi_symmetric = a.symmetric as u32;
    }
    if let Some(t) = &mods.token_filter {
        o.ids = put(words, &mut t.kv_token_ids.iter().map(|&x| x as u32));
        match &t.blocked {
            BlockedTokens::Ids(ids) => {
                let sorted = blocked_ids(ids);
                o.n_blocked = sorted.len() as u32;
                o.blocked = put(words, &mut sorted.into_iter());
            }
            BlockedTokens::Classes { class_of, blocked } => {
                o.n_classes = class_of.len() as u32;
                o.classes = put(words, &mut class_of.iter().copied());
                let mut flags = vec![0u32; class_flags(class_of)];
                for &c in blocked {
                    if let Some(f) = flags.get_mut(c as usize) {
                        *f = 1;
                    }
                }
                o.class_blocked = put(words, &mut flags.into_iter());
            }
        }
        o.key_ok = put(words, &mut std::iter::repeat_n(0, d.batch * d.total_len));
    }
    if let Some(m) = &mods.modalities {
        o.mod_q = put(words, &mut m.q.iter().copied());
        o.mod_kv = put(words, &mut m.kv.iter().copied());
        o.allow = put(words, &mut m.allow.iter().map(|&x| x as u32));
        o.mod_causal = put(words, &mut m.causal.iter().map(|&x| x as u32));
        o.modalities = m.causal.len() as u32;
    }
    o.blocks = put(words, &mut std::iter::repeat_n(0, block_words));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_follow_the_paper() {
        let s = alibi_slopes(8);
        let want: Vec<f32> = (1..=8).map(|i| 2f32.powi(-i)).collect();
        assert_eq!(s, want);
        // 12 heads: the 8 of n = 8, then every other of n = 16 (2^-0.5, 2^-1.5, ...).
        let s = alibi_slopes(12);
        assert_eq!(&s[..8], &want[..]);
        let extra: Vec<f32> = [0.5f64, 1.5, 2.5, 3.5]
            .iter()
            .map(|e| 2f64.powf(-e) as f32)
            .collect();
        assert_eq!(&s[8..], &extra[..]);
        assert!(alibi_slopes(0).is_empty());
    }

    #[test]
    fn mentions_ignores_comments_and_longer_words() {
        assert!(mentions("return h == 1u;", "h"));
        assert!(!mentions("return hh == 1u; // h\n /* h */", "h"));
        assert!(!mentions("let bh = 2u;", "b"));
    }

    fn dims() -> Dims {
        Dims {
            batch: 1,
            q_heads: 1,
            q_len: 2,
            total_len: 2,
        }
    }

    #[test]
    fn snippet_errors_name_the_snippet_line() {
        let mods = MaskMods {
            mask_mod: Some("let a = 1u;\nlet c = a + ;\nreturn true;".into()),
            ..Default::default()
        };
        match validate(&mods, &dims()) {
            Err(Error::InvalidSnippet { snippet, line, .. }) => {
                assert_eq!((snippet, line), ("mask_mod", Some(2)));
            }
            other => panic!("{other:?}"),
        }
        // A type error (found by validation, not parsing) in score_mod's third line.
        let mods = MaskMods {
            mask_mod: Some("return true;".into()),
            score_mod: Some("let x = s;\nlet y = 2u;\nreturn x + y;".into()),
            ..Default::default()
        };
        match validate(&mods, &dims()) {
            Err(Error::InvalidSnippet { snippet, line, .. }) => {
                assert_eq!((snippet, line), ("score_mod", Some(3)));
            }
            other => panic!("{other:?}"),
        }
        // An aux tensor that was not given.
        let mods = MaskMods {
            mask_mod: Some("return aux_missing[q] == 0;".into()),
            ..Default::default()
        };
        assert!(matches!(
            validate(&mods, &dims()),
            Err(Error::InvalidSnippet { line: Some(1), .. })
        ));
    }
}
