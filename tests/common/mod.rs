//! Shared test helpers: the one GPU context, seeded random inputs, the tolerance check.
#![allow(dead_code)]

use std::sync::OnceLock;

use wgattn::{Context, DType, Tensor};

/// The shared GPU context. Without an adapter this fails the test (never skips), saying how to
/// get the software one.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| match Context::new() {
        Ok(c) => {
            c.set_poison_outputs(true);
            c
        }
        Err(e) => panic!(
            "GPU tests need an adapter and found none: {e}. Install the software Vulkan driver \
             (apt-get install mesa-vulkan-drivers) or run on a machine with a GPU."
        ),
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
        let ok = if a.is_finite() && b.is_finite() {
            (a - b).abs() <= tol.atol + tol.rtol * b.abs()
        } else {
            (a.is_nan() && b.is_nan()) || a == b
        };
        if !ok {
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
