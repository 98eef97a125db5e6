//! A GPU result held to the CPU reference: the per-dtype tolerances that `wgattn plan` writes
//! beside its expected values and `wgattn bench --check` applies, and the largest error.

use wgattn::{DType, Tensor};

/// `|got - want| <= atol + rtol * |want|`, per dtype of the expected values (the test
/// suite's tolerances): a few f32 ulps over sums of up to ~1000 terms, else two ulps of
/// the dtype (one rounding may land on the other side).
pub fn tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => (2e-5, 2e-4),
        DType::F16 => (2e-3, 2e-3),
        DType::BF16 => (1.6e-2, 1.6e-2),
    }
}

/// Largest `|got - want|`; infinite when a value is non-finite where the other is not.
pub fn max_abs_error(got: &Tensor, want: &Tensor) -> f64 {
    got.to_f64_vec()
        .iter()
        .zip(want.to_f64_vec())
        .map(|(&a, b)| error(a, b))
        .fold(0.0, f64::max)
}

fn error(a: f64, b: f64) -> f64 {
    match (a.is_finite(), b.is_finite()) {
        (true, true) => (a - b).abs(),
        _ if a == b || (a.is_nan() && b.is_nan()) => 0.0,
        _ => f64::INFINITY,
    }
}

/// How a result agrees with the reference under [`tolerance`].
#[derive(Clone, Debug)]
pub struct Agreement {
    /// Largest `|got - want|` (infinite: a non-finite value where the reference has a
    /// finite one, or the other way round).
    pub max_abs_error: f64,
    /// Elements outside the tolerance.
    pub violations: usize,
    /// Elements compared.
    pub elements: usize,
    pub atol: f64,
    pub rtol: f64,
}

impl Agreement {
    /// Holds `got` to `want` (the reference's `out`, same shape) with `want`'s dtype's
    /// tolerance.
    pub fn of(got: &Tensor, want: &Tensor) -> Agreement {
        let (atol, rtol) = tolerance(want.dtype());
        let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
        let mut max_abs_error: f64 = 0.0;
        let mut violations = 0;
        for (&a, &b) in got.iter().zip(&want) {
            let e = error(a, b);
            max_abs_error = max_abs_error.max(e);
            // A finite reference bounds the error; equal non-finite values pass (e = 0).
            if e > atol + rtol * if b.is_finite() { b.abs() } else { 0.0 } {
                violations += 1;
            }
        }
        violations += got.len().abs_diff(want.len());
        Agreement {
            max_abs_error,
            violations,
            elements: want.len(),
            atol,
            rtol,
        }
    }

    pub fn passed(&self) -> bool {
        self.violations == 0
    }

    /// "agrees" or "DISAGREES", for a table.
    pub fn verdict(&self) -> &'static str {
        if self.passed() {
            "agrees"
        } else {
            "DISAGREES"
        }
    }

    /// The largest error and the elements over the tolerance, in words.
    pub fn describe(&self) -> String {
        format!(
            "max |err| {:.3e}, {} of {} elements over {:.0e} + {:.0e}·|ref|",
            self.max_abs_error, self.violations, self.elements, self.atol, self.rtol
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_elements_outside_the_tolerance() {
        let want = Tensor::from_f32([1, 1, 1, 4], vec![1.0, -2.0, 0.5, f32::NEG_INFINITY]).unwrap();
        let near =
            Tensor::from_f32([1, 1, 1, 4], vec![1.0001, -2.0, 0.5, f32::NEG_INFINITY]).unwrap();
        let a = Agreement::of(&near, &want);
        assert!(a.passed(), "{}", a.describe());
        assert!(a.max_abs_error > 0.0);
        let off = Tensor::from_f32([1, 1, 1, 4], vec![1.01, -2.0, f32::NAN, 0.0]).unwrap();
        let a = Agreement::of(&off, &want);
        assert_eq!(a.violations, 3, "{}", a.describe());
        assert!(a.max_abs_error.is_infinite());
        assert_eq!(a.verdict(), "DISAGREES");
    }
}
