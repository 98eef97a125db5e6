//! Shared test helpers: the one GPU context, seeded random inputs, the tolerance check, and
//! cases run on both paths and compared; [`browser`] for the tests in headless Chromium; with
//! the `cli` feature, [`cli`] for the tests of the binary.
#![allow(dead_code)]

pub mod browser;
#[cfg(feature = "cli")]
pub mod cli;
pub mod embed;
pub mod mods;

use std::sync::OnceLock;

use wgattn::{
    reference, AttentionInputs, AttentionOptions, AttentionOutput, BoolMask, Context, DType,
    ExecutionPath, Layout, Mask, Returns, Tensor,
};

/// The shared GPU context. Without an adapter this fails the test (never skips), saying how to
/// get the software one.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| tuned_context(wgattn::Tuning::AUTO))
}

/// A fresh context with poisoned outputs and `tuning` (a tuning is per context, and tests run
/// in parallel), for the tests that force configurations; fails like [`ctx`] without an
/// adapter.
pub fn tuned_context(tuning: wgattn::Tuning) -> Context {
    match Context::new() {
        Ok(c) => {
            c.set_poison_outputs(true);
            c.set_tuning(tuning);
            c
        }
        Err(e) => panic!(
            "GPU tests need an adapter and found none: {e}. Install the software Vulkan driver \
             (apt-get install mesa-vulkan-drivers) or run on a machine with a GPU."
        ),
    }
}

/// A second context whose every query length takes the decode kernel with a subgroup per key
/// (its GPU layout, which CPU adapters do not choose themselves), for the tests that hold
/// each kernel layout to the reference. Where subgroups are missing (GL) it is the decode
/// kernel's other layout.
pub fn subgroup_keys_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        tuned_context(wgattn::Tuning {
            decode_max_q: Some(1 << 20),
            decode_subgroup_keys: Some(true),
            ..wgattn::Tuning::AUTO
        })
    })
}

/// SplitMix64: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bool(&mut self, p_true: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p_true
    }
}

/// A tensor of uniform values in [-amp, amp), rounded to `dtype`.
pub fn random(rng: &mut Rng, shape: &[usize], dtype: DType, amp: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform() * amp).collect();
    Tensor::from_f32_as(shape.to_vec(), &data, dtype).unwrap()
}

/// Tolerances for comparing a GPU result with the f64 reference, per dtype of the output.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

impl Tol {
    /// f32 arithmetic against f64: a few ulps of f32 over sums of up to ~1000 terms.
    pub fn for_dtype(dtype: DType) -> Tol {
        match dtype {
            DType::F32 => Tol {
                atol: 2e-5,
                rtol: 2e-4,
            },
            // One f16 rounding (2^-11 relative) may land on the other side: allow 2 ulps.
            DType::F16 => Tol {
                atol: 2e-3,
                rtol: 2e-3,
            },
            // One bf16 rounding (2^-8 relative) may land on the other side: allow 2 ulps.
            DType::BF16 => Tol {
                atol: 1.6e-2,
                rtol: 1.6e-2,
            },
        }
    }

    pub fn scaled(self, factor: f64) -> Tol {
        Tol {
            atol: self.atol * factor,
            rtol: self.rtol * factor,
        }
    }

    /// `|got - want| <= atol + rtol * |want|`; a non-finite value must match in place.
    pub fn holds(self, got: f64, want: f64) -> bool {
        if got.is_finite() && want.is_finite() {
            (got - want).abs() <= self.atol + self.rtol * want.abs()
        } else {
            (got.is_nan() && want.is_nan()) || got == want
        }
    }
}

/// `|got - want| <= atol + rtol * |want|` everywhere; non-finite values must match in place.
/// On failure, panics with the first bad index, both values and how many are bad.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes differ");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut bad = 0;
    let mut first = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if !tol.holds(a, b) {
            bad += 1;
            first.get_or_insert((i, a, b));
        }
    }
    if let Some((i, a, b)) = first {
        panic!(
            "{what}: {bad} of {} elements differ (shape {:?}, {tol:?}); first at flat index {i}: \
             got {a}, want {b}",
            g.len(),
            got.shape()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Building cases.

/// The sizes of one case. `past: None` means no KV cache; `Some(0)` an empty one.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub lq: usize,
    pub lk: usize,
    pub past: Option<usize>,
    pub d: usize,
    pub dv: usize,
}

impl Dims {
    /// `B, Hq = Hkv = h, Lq, Lk, D = Dv = d`, no cache.
    pub fn new(b: usize, h: usize, lq: usize, lk: usize, d: usize) -> Dims {
        Dims {
            b,
            hq: h,
            hkv: h,
            lq,
            lk,
            past: None,
            d,
            dv: d,
        }
    }

    pub fn heads(self, hq: usize, hkv: usize) -> Dims {
        Dims { hq, hkv, ..self }
    }

    pub fn past(self, p: usize) -> Dims {
        Dims {
            past: Some(p),
            ..self
        }
    }

    pub fn v_dim(self, dv: usize) -> Dims {
        Dims { dv, ..self }
    }

    /// `Lt = P + Lk`.
    pub fn lt(&self) -> usize {
        self.past.unwrap_or(0) + self.lk
    }

    /// `[B, Hq, Lq, Lt]`.
    pub fn score_shape(&self) -> [usize; 4] {
        [self.b, self.hq, self.lq, self.lt()]
    }

    /// `[B, H, S, X]` as the caller passes it in `layout`.
    pub fn shape(layout: Layout, b: usize, h: usize, s: usize, x: usize) -> [usize; 4] {
        match layout {
            Layout::Bhsd => [b, h, s, x],
            Layout::Bshd => [b, s, h, x],
        }
    }
}

/// One request: owned tensors plus options.
#[derive(Clone, Debug)]
pub struct Case {
    pub dims: Dims,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub past: Option<(Tensor, Tensor)>,
    pub kv_lengths: Option<Vec<i64>>,
    pub mask: Option<Mask>,
    pub mods: Option<wgattn::MaskMods>,
    pub opts: AttentionOptions,
}

impl Case {
    /// Fresh uniform inputs in [-1, 1) of `dtype`, in `layout`, with default options.
    pub fn random(rng: &mut Rng, dims: Dims, dtype: DType, layout: Layout) -> Case {
        Case::random_amp(rng, dims, dtype, layout, 1.0)
    }

    /// Like [`Case::random`] with q and k uniform in [-amp, amp) (v stays in [-1, 1)).
    pub fn random_amp(rng: &mut Rng, dims: Dims, dtype: DType, layout: Layout, amp: f32) -> Case {
        let Dims {
            b,
            hq,
            hkv,
            lq,
            lk,
            d,
            dv,
            ..
        } = dims;
        let q = random(rng, &Dims::shape(layout, b, hq, lq, d), dtype, amp);
        let k = random(rng, &Dims::shape(layout, b, hkv, lk, d), dtype, amp);
        let v = random(rng, &Dims::shape(layout, b, hkv, lk, dv), dtype, 1.0);
        let past = dims.past.map(|p| {
            (
                random(rng, &[b, hkv, p, d], dtype, amp),
                random(rng, &[b, hkv, p, dv], dtype, 1.0),
            )
        });
        Case {
            dims,
            q,
            k,
            v,
            past,
            kv_lengths: None,
            mask: None,
            mods: None,
            opts: AttentionOptions {
                layout,
                ..Default::default()
            },
        }
    }

    pub fn with_opts(mut self, f: impl FnOnce(&mut AttentionOptions)) -> Case {
        f(&mut self.opts);
        self
    }

    pub fn with_mask(mut self, mask: Mask) -> Case {
        self.mask = Some(mask);
        self
    }

    pub fn with_kv_lengths(mut self, lengths: Vec<i64>) -> Case {
        self.kv_lengths = Some(lengths);
        self
    }

    /// Runs on the given GPU path.
    pub fn path(self, path: ExecutionPath) -> Case {
        self.with_opts(|o| o.path = path)
    }

    /// Runs on the staged GPU path (four kernels), whatever is asked for.
    pub fn staged(self) -> Case {
        self.path(ExecutionPath::Staged)
    }

    /// Asks for every intermediate.
    pub fn all_returns(self) -> Case {
        self.with_opts(|o| o.returns = ALL_RETURNS)
    }

    pub fn inputs(&self) -> AttentionInputs<'_> {
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

    pub fn dtype(&self) -> DType {
        self.q.dtype()
    }

    /// Runs the GPU staged path; panics with the case's sizes on an error.
    pub fn gpu(&self) -> AttentionOutput {
        wgattn::masked_attention(ctx(), &self.inputs(), &self.opts)
            .unwrap_or_else(|e| panic!("GPU failed on {:?}: {e}", self.dims))
    }

    /// Runs the f64 CPU reference; panics with the case's sizes on an error.
    pub fn reference(&self) -> AttentionOutput {
        reference::masked_attention(&self.inputs(), &self.opts)
            .unwrap_or_else(|e| panic!("reference failed on {:?}: {e}", self.dims))
    }

    /// Runs both paths and compares them with the dtype's tolerances (see [`Tols`]).
    pub fn check(&self) -> (AttentionOutput, AttentionOutput) {
        self.check_with(Tols::for_dtype(self.dtype()))
    }

    /// Runs both paths and compares every output (see [`compare`]).
    pub fn check_with(&self, tols: Tols) -> (AttentionOutput, AttentionOutput) {
        let got = self.gpu();
        let want = self.reference();
        compare(
            &format!("{:?}", self.dims),
            &got,
            &want,
            &self.opts.returns,
            tols,
        );
        (got, want)
    }
}

pub const ALL_RETURNS: Returns = Returns {
    scores: true,
    logits: true,
    probs: true,
};

/// Tolerances of the GPU path against the f64 reference, per quantity.
#[derive(Clone, Copy, Debug)]
pub struct Tols {
    pub out: Tol,
    /// scores and logits (logits are scores plus an exact bias, or `-inf`).
    pub scores: Tol,
    pub probs: Tol,
}

impl Tols {
    /// Each quantity is one f32 computation rounded once to the dtype, so the dtype's
    /// tolerance holds for all of them at the magnitudes of unit-range inputs.
    pub fn for_dtype(dtype: DType) -> Tols {
        let t = Tol::for_dtype(dtype);
        Tols {
            out: t,
            scores: t,
            probs: t,
        }
    }

    pub fn scaled(self, factor: f64) -> Tols {
        Tols {
            out: self.out.scaled(factor),
            scores: self.scores.scaled(factor),
            probs: self.probs.scaled(factor),
        }
    }
}

/// Compares a GPU result with the reference: `out` and each intermediate asked for within
/// `tols` (non-finite values in place), intermediates not asked for absent on both, and
/// `present_k`/`present_v` bit for bit.
pub fn compare(
    what: &str,
    got: &AttentionOutput,
    want: &AttentionOutput,
    returns: &Returns,
    tols: Tols,
) {
    assert_close(&format!("out {what}"), &got.out, &want.out, tols.out);
    let inter = [
        (
            "scores",
            returns.scores,
            &got.scores,
            &want.scores,
            tols.scores,
        ),
        (
            "logits",
            returns.logits,
            &got.logits,
            &want.logits,
            tols.scores,
        ),
        ("probs", returns.probs, &got.probs, &want.probs, tols.probs),
    ];
    for (name, asked, g, w, tol) in inter {
        match (g, w) {
            (Some(g), Some(w)) => {
                assert!(asked, "{name} {what}: returned but not asked for");
                assert_close(&format!("{name} {what}"), g, w, tol);
            }
            (None, None) => assert!(!asked, "{name} {what}: asked for, returned by neither"),
            _ => panic!(
                "{name} {what}: GPU returned {}, reference returned {}",
                g.is_some(),
                w.is_some()
            ),
        }
    }
    assert_bits_eq(
        &format!("present_k {what}"),
        &got.present_k,
        &want.present_k,
    );
    assert_bits_eq(
        &format!("present_v {what}"),
        &got.present_v,
        &want.present_v,
    );
}

/// Two optional tensors with the same shape, dtype and bits.
pub fn assert_bits_eq(what: &str, got: &Option<Tensor>, want: &Option<Tensor>) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => {
            assert_eq!(g.shape(), w.shape(), "{what}: shapes differ");
            assert_eq!(g.dtype(), w.dtype(), "{what}: dtypes differ");
            assert!(g.to_le_bytes() == w.to_le_bytes(), "{what}: bits differ");
        }
        _ => panic!(
            "{what}: got {}, want {}",
            if got.is_some() { "a tensor" } else { "none" },
            if want.is_some() { "a tensor" } else { "none" }
        ),
    }
}

/// Every tensor of two results is bit-identical.
pub fn assert_same_bits(what: &str, a: &AttentionOutput, b: &AttentionOutput) {
    assert_bits_eq(
        &format!("out {what}"),
        &Some(a.out.clone()),
        &Some(b.out.clone()),
    );
    assert_bits_eq(&format!("scores {what}"), &a.scores, &b.scores);
    assert_bits_eq(&format!("logits {what}"), &a.logits, &b.logits);
    assert_bits_eq(&format!("probs {what}"), &a.probs, &b.probs);
    assert_bits_eq(&format!("present_k {what}"), &a.present_k, &b.present_k);
    assert_bits_eq(&format!("present_v {what}"), &a.present_v, &b.present_v);
}

/// A boolean mask of `shape`, each element `true` with probability `p_true`.
pub fn random_bool_mask(rng: &mut Rng, shape: &[usize], p_true: f64) -> Mask {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| rng.bool(p_true)).collect();
    Mask::Bool(BoolMask::new(shape.to_vec(), data).unwrap())
}

/// An additive mask of `shape` in `dtype`: uniform in [-amp, amp), `-inf` with probability
/// `p_neg_inf`.
pub fn random_additive_mask(
    rng: &mut Rng,
    shape: &[usize],
    dtype: DType,
    amp: f32,
    p_neg_inf: f64,
) -> Mask {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            if rng.bool(p_neg_inf) {
                f32::NEG_INFINITY
            } else {
                rng.uniform() * amp
            }
        })
        .collect();
    Mask::Additive(Tensor::from_f32_as(shape.to_vec(), &data, dtype).unwrap())
}

/// An additive `mask` with one entry, drawn from `rng`, set to NaN or `+inf` (half the time
/// each): the rows that see a NaN at an allowed key are NaN, those that see `+inf` NaN or
/// one-hot; where another mask disallows the key it is not seen.
pub fn poison_one_entry(rng: &mut Rng, mask: Mask) -> Mask {
    let Mask::Additive(t) = mask else {
        panic!("poison_one_entry takes an additive mask")
    };
    let mut x = t.to_f32_vec();
    let at = rng.below(x.len());
    x[at] = if rng.bool(0.5) {
        f32::NAN
    } else {
        f32::INFINITY
    };
    Mask::Additive(Tensor::from_f32_as(t.shape().to_vec(), &x, t.dtype()).unwrap())
}

/// The mask tensor kinds [`random_mask`] draws (0 is no mask).
pub const MASK_KINDS: [&str; 4] = ["none", "bool", "additive", "additive with NaN or +inf"];

/// A mask shape of rank 1 to 4 for `dims` (right-aligned against `[B, Hq, Lq, Lt]`): each
/// leading axis full where `full` says (`[B, Hq, Lq]`), else 1 (broadcast), then `keys`.
pub fn mask_shape(dims: &Dims, rank: usize, full: [bool; 3], keys: usize) -> Vec<usize> {
    let lengths = [dims.b, dims.hq, dims.lq];
    let mut shape: Vec<usize> = (4 - rank..3)
        .map(|axis| if full[axis] { lengths[axis] } else { 1 })
        .collect();
    shape.push(keys);
    shape
}

/// A random mask tensor of [`MASK_KINDS`]`[kind]` (1 to 3): boolean, `true` with probability
/// `p_true`; additive in `dtype`, within +-3 and `-inf` a fifth of the time; or additive
/// with one NaN or `+inf` entry ([`poison_one_entry`]).
pub fn random_mask(rng: &mut Rng, kind: usize, shape: &[usize], dtype: DType, p_true: f64) -> Mask {
    match kind {
        1 => random_bool_mask(rng, shape, p_true),
        2 => random_additive_mask(rng, shape, dtype, 3.0, 0.2),
        _ => {
            let mask = random_additive_mask(rng, shape, dtype, 3.0, 0.2);
            poison_one_entry(rng, mask)
        }
    }
}

/// Flat `[B, Hq, Lq, X]` row index of `(b, h, i)`.
pub fn row_of(dims: &Dims, b: usize, h: usize, i: usize) -> usize {
    (b * dims.hq + h) * dims.lq + i
}
