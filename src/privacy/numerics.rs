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
    if x > 40.0 {
        // log1p(−e^−x) is below 1e-17 here: under half an ulp of x.
        x
    } else if x > 1.0 {
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

/// From this argument on, `log erfc` is computed from its asymptotic expansion: ten terms
/// are accurate to 6e-16 absolute at 10 and better beyond (checked against mpmath).
const ERFC_ASYMPTOTIC_FROM: f64 = 10.0;

/// Coefficients b_k of `log(x √π e^{x²} erfc(x)) = Σ_k b_k u^k`, u = 1/(2x²): the logarithm
/// of the series `Σ_k (−1)^k (2k−1)!! u^k` (Abramowitz & Stegun 7.1.23), derived with
/// exact fractions (b_1 = −1, b_2 = 5/2, b_3 = −37/3, ..., as dp_accounting's comment on
/// the Laurent series of log erfc lists them in powers of 1/x).
const LN_ERFC_TAIL: [f64; 10] = [
    -1.0,
    5.0 / 2.0,
    -37.0 / 3.0,
    353.0 / 4.0,
    -4081.0 / 5.0,
    55205.0 / 6.0,
    -854197.0 / 7.0,
    14876033.0 / 8.0,
    -288018721.0 / 9.0,
    1227782785.0 / 2.0,
];

/// `log(erfc(x))`, accurate for every finite `x`, including where `erfc(x)` underflows.
///
/// For `x < 10` this is `ln(erfc(x))` with musl's `erfc` (error below 1 ulp); beyond, the
/// asymptotic expansion `−x² − log(x √π) + Σ b_k u^k` (one logarithm, no `erfc`), which
/// is both more accurate there and several times cheaper.
pub fn ln_erfc(x: f64) -> f64 {
    if x < ERFC_ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let u = 1.0 / (2.0 * x * x);
    let tail = LN_ERFC_TAIL.iter().rev().fold(0.0, |acc, &b| acc * u + b) * u;
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + tail
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
        // The direct branch just below the switch and the series at it agree closely.
        for x in [ERFC_ASYMPTOTIC_FROM, 12.0, 20.0, 26.0] {
            let direct = libm::erfc(x).ln();
            let series = ln_erfc(x);
            assert!(
                ((direct - series) / direct).abs() < 1e-15,
                "x = {x}: {direct} vs {series}"
            );
        }
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
        // mpmath (30 digits): log erfc(10.5) = -113.178225043149591670...
        assert!((ln_erfc(10.5) - -113.178_225_043_149_6).abs() < 1e-12);
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
