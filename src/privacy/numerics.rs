//! Log-space special functions for the accountant.
//!
//! Privacy losses are sums of terms that range over hundreds of orders of magnitude, so they
//! are computed as logarithms. These helpers are pure and `f64` throughout.

/// `log(exp(a) + exp(b))` without overflow; `-inf` stands for zero.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    if small == f64::NEG_INFINITY {
        return large;
    }
    // exp(small) + exp(large) = exp(large) * (1 + exp(small - large)).
    (small - large).exp().ln_1p() + large
}

/// `log(exp(x) − 1)` for x > 0, accurate for tiny and huge x.
pub fn ln_expm1(x: f64) -> f64 {
    if x > 1.0 {
        x + (-(-x).exp()).ln_1p()
    } else {
        x.exp_m1().ln()
    }
}

/// `log |Γ(x)|`, as scipy's `gammaln` (poles give `+inf`).
pub fn ln_abs_gamma(x: f64) -> f64 {
    libm::lgamma_r(x).0
}

/// `log |binomial(n, k)|` for real `n` and `k`, through `log |Γ|`.
pub fn ln_abs_binomial(n: f64, k: f64) -> f64 {
    ln_abs_gamma(n + 1.0) - ln_abs_gamma(k + 1.0) - ln_abs_gamma(n - k + 1.0)
}

/// Above this argument `erfc` comes close to the subnormal range; the asymptotic series
/// is used instead (its truncation error there is below 1e-16 relative).
const ERFC_ASYMPTOTIC_FROM: f64 = 26.0;

/// `log(erfc(x))`, accurate for every finite `x`, including where `erfc(x)` underflows.
///
/// For `x < 26` this is `ln(erfc(x))` with musl's `erfc` (error below 1 ulp). Beyond, the
/// asymptotic expansion (Abramowitz & Stegun 7.1.23)
/// `erfc(x) = exp(-x²) / (x √π) · Σ_k (-1)^k (2k-1)!! / (2x²)^k`, truncated after six terms.
pub fn ln_erfc(x: f64) -> f64 {
    if x < ERFC_ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let u = 1.0 / (2.0 * x * x);
    // Horner form of 1 - u + 3u² - 15u³ + 105u⁴ - 945u⁵.
    let series = 1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + u * (105.0 + u * -945.0))));
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_add_matches_direct_sum_and_handles_zero() {
        let (a, b) = (0.3_f64, -1.7_f64);
        let direct = (a.exp() + b.exp()).ln();
        assert!((log_add(a, b) - direct).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 2.5), 2.5);
        assert_eq!(log_add(2.5, f64::NEG_INFINITY), 2.5);
        // Far apart: no overflow, the larger wins.
        assert_eq!(log_add(1000.0, -1000.0), 1000.0);
    }

    #[test]
    fn ln_erfc_is_continuous_across_the_asymptotic_switch() {
        // Both branches at the switch agree to near machine precision.
        let below = libm::erfc(ERFC_ASYMPTOTIC_FROM).ln();
        let above = {
            let x = ERFC_ASYMPTOTIC_FROM;
            let u = 1.0 / (2.0 * x * x);
            let series = 1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + u * (105.0 + u * -945.0))));
            -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
        };
        assert!(
            (below - above).abs() / below.abs() < 1e-14,
            "{below} vs {above}"
        );
    }

    #[test]
    fn ln_erfc_matches_closed_values() {
        // erfc(0) = 1, erfc(-inf) = 2; erfc(1) = 0.157299207050285130658... (A&S table 7.1).
        assert_eq!(ln_erfc(0.0), 0.0);
        assert!((ln_erfc(-40.0) - 2f64.ln()).abs() < 1e-16);
        assert!((ln_erfc(1.0) - 0.157_299_207_050_285_13_f64.ln()).abs() < 1e-15);
        // Deep tail, where erfc underflows: mpmath gives log erfc(100) = -10005.17758512266433.
        let deep = ln_erfc(100.0);
        assert!((deep - -10_005.177_585_122_664).abs() < 1e-9, "{deep}");
        assert!(deep.is_finite());
    }

    #[test]
    fn ln_expm1_is_accurate_at_both_ends() {
        assert!((ln_expm1(1e-12) - (1e-12f64 + 5e-25).ln()).abs() < 1e-15);
        assert!((ln_expm1(2.0) - (2f64.exp() - 1.0).ln()).abs() < 1e-15);
        assert_eq!(ln_expm1(800.0), 800.0);
    }

    #[test]
    fn ln_abs_binomial_matches_integer_binomials_and_gamma_signs() {
        assert!((ln_abs_binomial(10.0, 3.0) - 120f64.ln()).abs() < 1e-13);
        // binomial(1.5, 3) = 1.5 * 0.5 * (-0.5) / 6 = -0.0625.
        assert!((ln_abs_binomial(1.5, 3.0) - 0.0625f64.ln()).abs() < 1e-14);
    }
}
