//! Requests larger than the binding limits, split over batch entries and heads.
//!
//! Rows of attention never meet across batch entries or heads, so a request over a binding
//! limit ([`crate::Tuning::max_binding_bytes`], or the device's) runs as several smaller
//! requests, one submission each, and the results are stitched back on the host. A unit of
//! work is one batch entry and a contiguous range of key/value heads with all their query
//! heads; when one key/value head with its query heads is still too big, its query heads are
//! split into contiguous ranges that share it. The key and query axes are never split. What
//! one batch entry and one query head still exceeds fails with [`Error::ExceedsLimit`].

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use half::{bf16, f16};

use crate::attention::run_whole;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::Wait;
use crate::output::AttentionOutput;
use crate::problem::{
    mask_layout, AttentionInputs, AttentionOptions, AttentionProblem, ExecutionPath, Layout,
    RowBounds,
};
use crate::tensor::{filled, BoolMask, DType, Mask, Tensor, TensorData};
use crate::{fused, staged};

/// One sub-problem: a range of batch entries, of key/value heads and of query heads (indices
/// into the whole problem). The query heads are those of the key/value heads, or a part of
/// one key/value head's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub batches: Range<usize>,
    pub kv_heads: Range<usize>,
    pub q_heads: Range<usize>,
}

/// The sub-problems to run instead of `p` on `path`, or `None` when `p` fits whole.
pub(crate) fn plan(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    path: ExecutionPath,
) -> Result<Option<Vec<Part>>> {
    let mask_shape = inputs.mask.map(Mask::shape);
    let fits = |sub: &AttentionProblem| match path {
        ExecutionPath::Fused => fused::fits(ctx, sub),
        _ => staged::check_limits(ctx, sub).map(|_| ()),
    };
    partition(p, mask_shape, fits)
}

/// Splits `p` into the fewest contiguous parts that `fits` accepts: whole batch entries if one
/// fits, else ranges of key/value heads of one batch entry, else ranges of one key/value
/// head's query heads. Parts of one level differ in size by at most one (so a later part
/// reuses the buffers of an earlier one). Every part is judged with its own batch entries'
/// bounds (the fused kernels' key splits follow the widest key range, so a long entry needs
/// more than a short one). `fits` fails with `ExceedsLimit` for a shape over a limit; any
/// other error is passed on.
fn partition(
    p: &AttentionProblem,
    mask_shape: Option<&[usize]>,
    fits: impl Fn(&AttentionProblem) -> Result<()>,
) -> Result<Option<Vec<Part>>> {
    if over_limit(fits(p))?.is_none() {
        return Ok(None);
    }
    let group = p.group();
    // What a part needs follows from its sizes and the distinct bounds of its batch entries:
    // each such combination is judged once.
    let judged = RefCell::new(HashMap::new());
    let probe = |batches: Range<usize>, nkv: usize, nq: usize| -> Result<Option<Error>> {
        let mut distinct: Vec<RowBounds> = p.bounds[batches.clone()].to_vec();
        distinct.sort_unstable_by_key(|b| (b.lo, b.hi, b.kv_len, b.offset));
        distinct.dedup();
        let key = (batches.len(), nkv, nq, distinct);
        if let Some(known) = judged.borrow().get(&key) {
            return Ok(Option::clone(known));
        }
        let verdict = over_limit(fits(&sub_problem(p, mask_shape, batches, nkv, nq)?))?;
        judged.borrow_mut().insert(key, verdict.clone());
        Ok(verdict)
    };
    // A part of one batch entry, for whichever entry: the first refusal, if any.
    let mut seen = HashSet::new();
    let entries: Vec<usize> = (0..p.batch).filter(|&b| seen.insert(p.bounds[b])).collect();
    let every_entry = |nkv: usize, nq: usize| -> Result<Option<Error>> {
        for &b in &entries {
            if let Some(e) = probe(b..b + 1, nkv, nq)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    };

    if let Some(batches) = fewest(p.batch, |r| probe(r, p.kv_heads, p.q_heads))? {
        return Ok(Some(
            batches
                .into_iter()
                .map(|b| Part {
                    batches: b,
                    kv_heads: 0..p.kv_heads,
                    q_heads: 0..p.q_heads,
                })
                .collect(),
        ));
    }
    if let Some(kv_ranges) = fewest(p.kv_heads, |r| every_entry(r.len(), r.len() * group))? {
        let parts = (0..p.batch).flat_map(|b| {
            kv_ranges.iter().map(move |kv| Part {
                batches: b..b + 1,
                kv_heads: kv.clone(),
                q_heads: kv.start * group..kv.end * group,
            })
        });
        return Ok(Some(parts.collect()));
    }
    if let Some(q_ranges) = fewest(group, |r| every_entry(1, r.len()))? {
        let parts = (0..p.batch).flat_map(|b| {
            let q_ranges = &q_ranges;
            (0..p.kv_heads).flat_map(move |kv| {
                q_ranges.iter().map(move |q| Part {
                    batches: b..b + 1,
                    kv_heads: kv..kv + 1,
                    q_heads: kv * group + q.start..kv * group + q.end,
                })
            })
        });
        return Ok(Some(parts.collect()));
    }
    // Even one batch entry and one query head is over a limit: name that binding.
    let mut e = every_entry(1, 1)?.unwrap_or(Error::Gpu(
        "splitting over batch and heads found no part that fits".into(),
    ));
    if p.batch * p.q_heads > 1 {
        if let Error::ExceedsLimit { what, .. } = &mut e {
            what.push_str(" for one batch entry and one query head, the smallest split");
        }
    }
    Err(e)
}

/// `Ok(None)` when the shape fits, `Ok(Some(e))` when it is over a limit, else the error.
fn over_limit(r: Result<()>) -> Result<Option<Error>> {
    match r {
        Ok(()) => Ok(None),
        Err(e @ Error::ExceedsLimit { .. }) => Ok(Some(e)),
        Err(e) => Err(e),
    }
}

/// The fewest contiguous ranges covering `0..n`, sizes differing by at most one, each of which
/// `over` finds within the limits (`Ok(None)`); `None` when even ranges of one are not.
fn fewest(
    n: usize,
    over: impl Fn(Range<usize>) -> Result<Option<Error>>,
) -> Result<Option<Vec<Range<usize>>>> {
    'parts: for parts in 1..=n {
        let (small, extra) = (n / parts, n % parts);
        let mut start = 0;
        let ranges: Vec<Range<usize>> = (0..parts)
            .map(|i| {
                let len = small + (i < extra) as usize;
                start += len;
                start - len..start
            })
            .collect();
        for r in &ranges {
            if over(r.clone())?.is_some() {
                continue 'parts;
            }
        }
        return Ok(Some(ranges));
    }
    Ok(None)
}

/// The shape of a part of the batch entries `batches`, `nkv` key/value heads and `nq` query
/// heads: what the limit checks read.
fn sub_problem(
    p: &AttentionProblem,
    mask_shape: Option<&[usize]>,
    batches: Range<usize>,
    nkv: usize,
    nq: usize,
) -> Result<AttentionProblem> {
    let nb = batches.len();
    let mask = match (p.mask, mask_shape) {
        (Some((kind, _)), Some(shape)) => {
            let [b, h, i, j] = pad4(shape);
            let sliced = [if b > 1 { nb } else { 1 }, if h > 1 { nq } else { 1 }, i, j];
            let target = [nb, nq, p.q_len, p.total_len()];
            Some((
                kind,
                mask_layout("mask", &sliced[4 - shape.len()..], target)?,
            ))
        }
        _ => None,
    };
    Ok(AttentionProblem {
        batch: nb,
        q_heads: nq,
        kv_heads: nkv,
        q_len: p.q_len,
        k_len: p.k_len,
        past_len: p.past_len,
        head_dim: p.head_dim,
        v_dim: p.v_dim,
        dtype: p.dtype,
        layout: p.layout,
        has_past: p.has_past,
        scale: p.scale,
        softcap: p.softcap,
        mask,
        bounds: p.bounds[batches].to_vec(),
        returns: p.returns,
        // The mods decide the fused kernel's configuration (a block mask takes one query row
        // per decode workgroup, and no long decode blocks) and add tables to bind.
        mods: p.mods.clone(),
    })
}

/// Runs each part on `path`, one submission after the other (so the GPU holds one part's
/// buffers at a time), and stitches the results into tensors of the whole problem's shapes.
pub(crate) async fn run(
    ctx: &Context,
    p: &AttentionProblem,
    inputs: &AttentionInputs<'_>,
    options: &AttentionOptions,
    path: ExecutionPath,
    parts: &[Part],
    wait: Wait,
) -> Result<AttentionOutput> {
    // Every element is written by some part; poisoning shows one that was not.
    let fill = if ctx.poison_outputs() { f32::NAN } else { 0.0 };
    let score_shape = p.score_shape();
    let stitch = |asked: bool, what: &str, shape: &[usize]| {
        asked
            .then(|| Stitch::new(what, shape, p.dtype, fill))
            .transpose()
    };
    let mut out = Stitch::new("out", &p.out_shape(), p.dtype, fill)?;
    let mut scores = stitch(p.returns.scores, "scores", &score_shape)?;
    let mut logits = stitch(p.returns.logits, "logits", &score_shape)?;
    let mut probs = stitch(p.returns.probs, "probs", &score_shape)?;
    let present_shape = |dim| [p.batch, p.kv_heads, p.total_len(), dim];
    let mut present_k = stitch(p.has_past, "present_k", &present_shape(p.head_dim))?;
    let mut present_v = stitch(p.has_past, "present_v", &present_shape(p.v_dim))?;
    let options = AttentionOptions {
        path,
        ..options.clone()
    };

    // Known only when every part reports its own.
    let mut gpu_time = Some(std::time::Duration::ZERO);
    let mut gpu_kernels = Vec::new();
    for part in parts {
        let sliced = Sliced::new(p, inputs, part)?;
        let sub_inputs = sliced.inputs();
        let mut sub = AttentionProblem::new(&sub_inputs, &options)?;
        // The user's snippets see the whole request's batch entries and heads.
        if let Some(m) = sub.mods.as_mut() {
            m.batch_offset = part.batches.start;
            m.head_offset = part.q_heads.start;
        }
        let r = run_whole(ctx, &sub, &sub_inputs, path, wait).await?;
        gpu_time = gpu_time.zip(r.gpu_time).map(|(a, b)| a + b);
        gpu_kernels.extend(r.gpu_kernels);
        let (b, kv, q) = (part.batches.start, part.kv_heads.start, part.q_heads.start);
        let out_at = match p.layout {
            Layout::Bhsd => [b, q, 0, 0],
            Layout::Bshd => [b, 0, q, 0],
        };
        out.paste(&r.out, out_at)?;
        for (whole, piece) in [
            (&mut scores, &r.scores),
            (&mut logits, &r.logits),
            (&mut probs, &r.probs),
        ] {
            paste(whole, piece, [b, q, 0, 0])?;
        }
        // Parts that share a key/value head write the same present rows.
        paste(&mut present_k, &r.present_k, [b, kv, 0, 0])?;
        paste(&mut present_v, &r.present_v, [b, kv, 0, 0])?;
    }

    let finish = |s: Option<Stitch>| s.map(Stitch::finish).transpose();
    Ok(AttentionOutput {
        out: out.finish()?,
        present_k: finish(present_k)?,
        present_v: finish(present_v)?,
        scores: finish(scores)?,
        logits: finish(logits)?,
        probs: finish(probs)?,
        gpu_kernels: if gpu_time.is_some() {
            gpu_kernels
        } else {
            Vec::new()
        },
        gpu_time,
    })
}

/// Pastes a part's optional result into the whole one; both must be present or absent.
fn paste(whole: &mut Option<Stitch>, piece: &Option<Tensor>, at: [usize; 4]) -> Result<()> {
    match (whole, piece) {
        (Some(w), Some(t)) => w.paste(t, at),
        (None, None) => Ok(()),
        _ => Err(Error::Gpu(
            "a split part returned a different set of results than asked for".into(),
        )),
    }
}

/// The inputs of one part, copied out of the whole request.
struct Sliced<'a> {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    past: Option<(Tensor, Tensor)>,
    kv_lengths: Option<&'a [i64]>,
    mask: Option<Mask>,
    mods: Option<crate::MaskMods>,
}

impl<'a> Sliced<'a> {
    fn new(p: &AttentionProblem, inputs: &AttentionInputs<'a>, part: &Part) -> Result<Self> {
        let (b, kv, q) = (&part.batches, &part.kv_heads, &part.q_heads);
        // `[B, H, S, X]` in the layout of q, k, v: the head axis second or third.
        let heads = |t: &Tensor, h: &Range<usize>| {
            let [_, s1, s2, s3] = pad4(t.shape());
            match p.layout {
                Layout::Bhsd => slice(t, [b.clone(), h.clone(), 0..s2, 0..s3]),
                Layout::Bshd => slice(t, [b.clone(), 0..s1, h.clone(), 0..s3]),
            }
        };
        let past = match (inputs.past_k, inputs.past_v) {
            (Some(pk), Some(pv)) => {
                let bhsd = |t: &Tensor| {
                    let [_, _, s2, s3] = pad4(t.shape());
                    slice(t, [b.clone(), kv.clone(), 0..s2, 0..s3])
                };
                Some((bhsd(pk)?, bhsd(pv)?))
            }
            _ => None,
        };
        let mask = match inputs.mask {
            None => None,
            Some(m) => {
                // Right-aligned broadcasting: only axes longer than 1 are sliced.
                let [mb, mh, mi, mj] = pad4(m.shape());
                let ranges = [
                    if mb > 1 { b.clone() } else { 0..1 },
                    if mh > 1 { q.clone() } else { 0..1 },
                    0..mi,
                    0..mj,
                ];
                Some(match m {
                    Mask::Bool(bm) => Mask::Bool(BoolMask::new(
                        box_shape(bm.shape().len(), &ranges),
                        take_box(bm.data(), pad4(bm.shape()), &ranges),
                    )?),
                    Mask::Additive(t) => Mask::Additive(slice(t, ranges)?),
                })
            }
        };
        Ok(Sliced {
            q: heads(inputs.q, q)?,
            k: heads(inputs.k, kv)?,
            v: heads(inputs.v, kv)?,
            past,
            kv_lengths: inputs
                .kv_lengths
                .map(|l| {
                    l.get(b.clone()).ok_or(Error::ShapeMismatch {
                        what: "kv_lengths".into(),
                        expected: format!("at least {} entries", b.end),
                        got: format!("[{}]", l.len()),
                    })
                })
                .transpose()?,
            mask,
            mods: inputs.mods.map(|m| {
                crate::mods::slice(m, p.q_len, p.total_len(), p.q_heads, b.clone(), q.clone())
            }),
        })
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        AttentionInputs {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            past_k: self.past.as_ref().map(|p| &p.0),
            past_v: self.past.as_ref().map(|p| &p.1),
            kv_lengths: self.kv_lengths,
            mask: self.mask.as_ref(),
            mods: self.mods.as_ref(),
            // Each part classifies its own tiles.
            block_mask: None,
        }
    }
}

/// A shape of rank 1 to 4 padded with leading 1s to rank 4.
fn pad4(shape: &[usize]) -> [usize; 4] {
    let mut full = [1; 4];
    let rank = shape.len().min(4);
    full[4 - rank..].copy_from_slice(&shape[shape.len() - rank..]);
    full
}

/// The shape of a box cut from a tensor of `rank`: the last `rank` lengths of the ranges.
fn box_shape(rank: usize, ranges: &[Range<usize>; 4]) -> Vec<usize> {
    ranges[4 - rank.min(4)..].iter().map(|r| r.len()).collect()
}

/// The box `ranges` of a tensor of rank 1 to 4 (padded to 4), as a tensor of the same rank.
fn slice(t: &Tensor, ranges: [Range<usize>; 4]) -> Result<Tensor> {
    let shape = pad4(t.shape());
    let data = match t.data() {
        TensorData::F32(v) => TensorData::F32(take_box(v, shape, &ranges)),
        TensorData::F16(v) => TensorData::F16(take_box(v, shape, &ranges)),
        TensorData::BF16(v) => TensorData::BF16(take_box(v, shape, &ranges)),
    };
    Tensor::new(box_shape(t.shape().len(), &ranges), data)
}

/// Copies the box `ranges` out of a row-major `src` of `shape`.
fn take_box<T: Copy>(src: &[T], shape: [usize; 4], ranges: &[Range<usize>; 4]) -> Vec<T> {
    let [_, n1, n2, n3] = shape;
    let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len()).product());
    for a in ranges[0].clone() {
        for b in ranges[1].clone() {
            for c in ranges[2].clone() {
                let row = ((a * n1 + b) * n2 + c) * n3;
                out.extend_from_slice(&src[row + ranges[3].start..row + ranges[3].end]);
            }
        }
    }
    out
}

/// A whole 4-D result being filled in part by part.
struct Stitch {
    shape: [usize; 4],
    data: TensorData,
}

impl Stitch {
    /// The whole `what` of `shape`, every element `fill` (on the host: the parts' results
    /// are read back there).
    fn new(what: &str, shape: &[usize], dtype: DType, fill: f32) -> Result<Self> {
        let shape = pad4(shape);
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let n = n.unwrap_or(usize::MAX);
        let what = format!("{what} {shape:?} of the split request");
        let data = match dtype {
            DType::F32 => TensorData::F32(filled(&what, n, fill)?),
            DType::F16 => TensorData::F16(filled(&what, n, f16::from_f32(fill))?),
            DType::BF16 => TensorData::BF16(filled(&what, n, bf16::from_f32(fill))?),
        };
        Ok(Stitch { shape, data })
    }

    /// Writes the 4-D `part` with its first element at `at`.
    fn paste(&mut self, part: &Tensor, at: [usize; 4]) -> Result<()> {
        let size = pad4(part.shape());
        if part.shape().len() != 4 || (0..4).any(|i| at[i] + size[i] > self.shape[i]) {
            return Err(Error::ShapeMismatch {
                what: "a split part's result".into(),
                expected: format!("a box of {:?}", self.shape),
                got: format!("{:?} at {at:?}", part.shape()),
            });
        }
        match (&mut self.data, part.data()) {
            (TensorData::F32(w), TensorData::F32(v)) => put_box(w, self.shape, at, v, size),
            (TensorData::F16(w), TensorData::F16(v)) => put_box(w, self.shape, at, v, size),
            (TensorData::BF16(w), TensorData::BF16(v)) => put_box(w, self.shape, at, v, size),
            _ => {
                return Err(Error::DTypeMismatch {
                    what: "a split part's result",
                    expected: self.dtype(),
                    got: part.dtype(),
                })
            }
        }
        Ok(())
    }

    fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
        }
    }

    fn finish(self) -> Result<Tensor> {
        Tensor::new(self.shape.to_vec(), self.data)
    }
}

/// Writes the row-major box `src` of `size` into `dst` of `shape` at `at`.
fn put_box<T: Copy>(dst: &mut [T], shape: [usize; 4], at: [usize; 4], src: &[T], size: [usize; 4]) {
    let [_, n1, n2, n3] = shape;
    let mut rows = src.chunks_exact(size[3].max(1));
    for a in at[0]..at[0] + size[0] {
        for b in at[1]..at[1] + size[1] {
            for c in at[2]..at[2] + size[2] {
                let start = ((a * n1 + b) * n2 + c) * n3 + at[3];
                if let Some(row) = rows.next() {
                    dst[start..start + size[3]].copy_from_slice(row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Returns;

    /// A problem of the given sizes (f32, bhsd, no mask).
    fn problem(
        b: usize,
        hq: usize,
        hkv: usize,
        lq: usize,
        lk: usize,
        d: usize,
    ) -> AttentionProblem {
        let t = |shape: [usize; 4]| Tensor::from_f32(shape, vec![0.5; shape.iter().product()]);
        let q = t([b, hq, lq, d]).unwrap();
        let k = t([b, hkv, lk, d]).unwrap();
        let v = t([b, hkv, lk, d]).unwrap();
        AttentionProblem::new(
            &AttentionInputs::new(&q, &k, &v),
            &AttentionOptions::default(),
        )
        .unwrap()
    }

    /// A limit on the staged scores' elements, `B·Hq·Lq·Lt`.
    fn scores_at_most(n: usize) -> impl Fn(&AttentionProblem) -> Result<()> {
        move |p| {
            if p.score_len() <= n {
                Ok(())
            } else {
                Err(Error::ExceedsLimit {
                    what: format!("scores {:?}", p.score_shape()),
                    limit: "test",
                    requested: p.score_len() as u64,
                    max: n as u64,
                })
            }
        }
    }

    fn part(b: Range<usize>, kv: Range<usize>, q: Range<usize>) -> Part {
        Part {
            batches: b,
            kv_heads: kv,
            q_heads: q,
        }
    }

    #[test]
    fn a_problem_that_fits_is_not_split() {
        let p = problem(3, 4, 2, 5, 7, 8);
        assert_eq!(
            partition(&p, None, scores_at_most(3 * 4 * 35)).unwrap(),
            None
        );
    }

    #[test]
    fn batches_split_into_fewest_balanced_parts() {
        // One batch entry is 4 heads x 35 = 140 elements; 2 entries fit in 300, so 5 entries
        // take 3 parts of 2, 2, 1.
        let p = problem(5, 4, 2, 5, 7, 8);
        let parts = partition(&p, None, scores_at_most(300)).unwrap().unwrap();
        assert_eq!(
            parts,
            vec![
                part(0..2, 0..2, 0..4),
                part(2..4, 0..2, 0..4),
                part(4..5, 0..2, 0..4)
            ]
        );
    }

    #[test]
    fn kv_heads_split_with_their_query_heads() {
        // Hq = 6, Hkv = 3 (group 2): one kv head is 2 x 35 = 70 elements; 2 kv heads fit in
        // 150, so each batch entry takes parts of kv heads 0..2 and 2..3.
        let p = problem(2, 6, 3, 5, 7, 8);
        let parts = partition(&p, None, scores_at_most(150)).unwrap().unwrap();
        assert_eq!(
            parts,
            vec![
                part(0..1, 0..2, 0..4),
                part(0..1, 2..3, 4..6),
                part(1..2, 0..2, 0..4),
                part(1..2, 2..3, 4..6)
            ]
        );
    }

    #[test]
    fn query_heads_of_one_group_split_sharing_their_kv_head() {
        // Hq = 6, Hkv = 2 (group 3): one query head is 35 elements, a group 105; 2 heads fit
        // in 80, so each group takes parts of 2 and 1 query heads.
        let p = problem(1, 6, 2, 5, 7, 8);
        let parts = partition(&p, None, scores_at_most(80)).unwrap().unwrap();
        assert_eq!(
            parts,
            vec![
                part(0..1, 0..1, 0..2),
                part(0..1, 0..1, 2..3),
                part(0..1, 1..2, 3..5),
                part(0..1, 1..2, 5..6)
            ]
        );
    }

    #[test]
    fn every_batch_range_is_judged_with_its_own_bounds() {
        // A limit on batch entries x their longest key length: entries of 1, 1, 7 and 7 keys
        // take 0..2 (2), 2..3 (7) and 3..4 (7) under 7, where judging each range of two by
        // the first two entries' bounds would have let 2..4 (14) through.
        let t = |shape: [usize; 4]| Tensor::from_f32(shape, vec![0.5; shape.iter().product()]);
        let (q, k, v) = (t([4, 1, 3, 8]), t([4, 1, 7, 8]), t([4, 1, 7, 8]));
        let (q, k, v) = (q.unwrap(), k.unwrap(), v.unwrap());
        let lengths = [1, 1, 7, 7];
        let inputs = AttentionInputs::new(&q, &k, &v).with_kv_lengths(&lengths);
        let p = AttentionProblem::new(&inputs, &AttentionOptions::default()).unwrap();
        let fits = |sub: &AttentionProblem| {
            let longest = sub.bounds.iter().map(|b| b.kv_len).max().unwrap_or(0);
            let requested = (sub.batch * longest as usize) as u64;
            if requested <= 7 {
                Ok(())
            } else {
                Err(Error::ExceedsLimit {
                    what: "entries x keys".into(),
                    limit: "test",
                    requested,
                    max: 7,
                })
            }
        };
        assert_eq!(
            partition(&p, None, fits).unwrap().unwrap(),
            vec![
                part(0..2, 0..1, 0..1),
                part(2..3, 0..1, 0..1),
                part(3..4, 0..1, 0..1)
            ]
        );
    }

    #[test]
    fn one_unit_over_the_limit_fails_naming_it() {
        let p = problem(2, 2, 1, 5, 7, 8);
        let e = partition(&p, None, scores_at_most(34)).unwrap_err();
        match e {
            Error::ExceedsLimit {
                what,
                requested,
                max,
                ..
            } => {
                assert!(what.starts_with("scores [1, 1, 5, 7]"), "{what}");
                assert!(what.contains("smallest split"), "{what}");
                assert_eq!((requested, max), (35, 34));
            }
            e => panic!("expected ExceedsLimit, got {e:?}"),
        }
        // A single unit keeps the message of an unsplit request.
        let one = problem(1, 1, 1, 5, 7, 8);
        let e = partition(&one, None, scores_at_most(34)).unwrap_err();
        assert_eq!(e, scores_at_most(34)(&one).unwrap_err());
    }

    #[test]
    fn other_errors_pass_through() {
        let p = problem(2, 2, 1, 5, 7, 8);
        let e = partition(&p, None, |_| Err(Error::Gpu("boom".into()))).unwrap_err();
        assert_eq!(e, Error::Gpu("boom".into()));
    }

    #[test]
    fn sub_problem_slices_only_mask_axes_longer_than_one() {
        let t = |shape: [usize; 4]| Tensor::from_f32(shape, vec![0.5; shape.iter().product()]);
        let (q, k, v) = (t([3, 4, 5, 8]), t([3, 2, 7, 8]), t([3, 2, 7, 8]));
        let (q, k, v) = (q.unwrap(), k.unwrap(), v.unwrap());
        for (shape, len) in [
            (vec![3, 1, 1, 7], 7),
            (vec![3, 4, 5, 7], 2 * 5 * 7),
            (vec![4, 5, 7], 2 * 5 * 7),
            (vec![5, 6], 30),
        ] {
            let mask = Mask::Bool(
                BoolMask::new(shape.clone(), vec![true; shape.iter().product()]).unwrap(),
            );
            let inputs = AttentionInputs::new(&q, &k, &v).with_mask(&mask);
            let opts = AttentionOptions {
                returns: Returns::default(),
                ..Default::default()
            };
            let p = AttentionProblem::new(&inputs, &opts).unwrap();
            let sub = sub_problem(&p, Some(&shape), 0..1, 1, 2).unwrap();
            assert_eq!(sub.mask.map(|(_, l)| l.len), Some(len), "{shape:?}");
            assert_eq!(sub.score_shape(), vec![1, 2, 5, 7]);
        }
    }

    #[test]
    fn boxes_cut_and_paste_back() {
        let shape = [2, 3, 4, 5];
        let src: Vec<f32> = (0..120).map(|x| x as f32).collect();
        let whole = Tensor::from_f32(shape, src.clone()).unwrap();
        let mut stitch = Stitch::new("out", &shape, DType::F32, f32::NAN).unwrap();
        for (b, h) in [(0..1, 0..2), (0..1, 2..3), (1..2, 0..3)] {
            let piece = slice(&whole, [b.clone(), h.clone(), 0..4, 0..5]).unwrap();
            assert_eq!(piece.shape(), &[1, h.len(), 4, 5]);
            stitch.paste(&piece, [b.start, h.start, 0, 0]).unwrap();
        }
        assert_eq!(stitch.finish().unwrap(), whole);
        let piece = slice(&whole, [0..1, 0..1, 0..4, 0..5]).unwrap();
        let mut small = Stitch::new("out", &[1, 1, 4, 5], DType::F32, 0.0).unwrap();
        assert!(small.paste(&piece, [0, 1, 0, 0]).is_err());
    }

    #[test]
    fn a_whole_result_the_host_cannot_hold_is_an_error() {
        // 2^60 f16 elements, and a count that overflows: errors, not an abort.
        for shape in [[1 << 20, 1 << 20, 1 << 20, 1], [1 << 40, 1 << 40, 1, 1]] {
            match Stitch::new("probs", &shape, DType::F16, 0.0) {
                Err(Error::HostOutOfMemory { what, .. }) => assert!(what.contains("probs")),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("allocated {shape:?}"),
            }
        }
    }
}
