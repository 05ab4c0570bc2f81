//! From Rényi DP to (ε, δ)-DP.
//!
//! A mechanism that is (α, r_α)-RDP at every tracked order α is (ε, δ)-DP for the smallest
//! ε any order allows. The default conversion is the one dp_accounting uses (Balle, Barthe,
//! Gaboardi, Hsu & Sato 2020, "Hypothesis testing interpretations and Rényi differential
//! privacy", Prop. 12 in arXiv:1905.09982v4; also Asoodeh et al. 2021, Eq. 20), with the KL
//! bound `δ ≥ sqrt(1 − e^−r)` for small r. [`Conversion::Classic`] is Mironov 2017, Prop. 3,
//! which older tools (TF Privacy's `compute_dp_sgd_privacy`) report.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How RDP is turned into (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conversion {
    /// Balle et al. 2020, Prop. 12: `ε = r + log((α−1)/α) − (log δ + log α)/(α−1)`
    /// (dp_accounting's `compute_epsilon`). Tighter; the default.
    #[default]
    Improved,
    /// Mironov 2017, Prop. 3: `ε = r + log(1/δ)/(α−1)`.
    Classic,
}

/// The best (ε, order) found for a δ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpsilonAtOrder {
    /// ε, at least 0; +∞ when no order gives a finite bound.
    pub epsilon: f64,
    /// The order that gives it (the first one on ties).
    pub order: f64,
}

/// The best (δ, order) found for an ε.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeltaAtOrder {
    /// δ in [0, 1].
    pub delta: f64,
    /// The order that gives it (the first one on ties).
    pub order: f64,
}

/// Checks δ ∈ (0, 1).
pub fn check_delta(delta: f64) -> Result<()> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(Error::invalid("delta", delta, "a probability in (0, 1)"))
    }
}

/// Checks that a target ε is finite and above 0.
pub fn check_target_epsilon(target_epsilon: f64) -> Result<()> {
    if target_epsilon > 0.0 && target_epsilon.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            "target_epsilon",
            target_epsilon,
            "a finite number above 0",
        ))
    }
}

/// The smallest ε over the orders for which the composed mechanism is (ε, δ)-DP.
///
/// `rdp[i]` is the RDP at `orders[i]`; +∞ entries are skipped.
///
/// # Privacy
/// Given valid RDP upper bounds, the result is a valid ε for `delta` (Balle et al. 2020,
/// Prop. 12, or Mironov 2017, Prop. 3). Orders at or below 1.01 are skipped by the improved
/// conversion (numerically unstable there), as in dp_accounting.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<EpsilonAtOrder> {
    check_delta(delta)?;
    assert_eq!(orders.len(), rdp.len(), "one RDP value per order");
    let mut best = EpsilonAtOrder {
        epsilon: f64::INFINITY,
        order: orders[0],
    };
    for (&alpha, &r) in orders.iter().zip(rdp) {
        let epsilon = epsilon_at_order(alpha, r, delta, conversion);
        // `<` keeps the first order on ties; NaN never wins.
        if epsilon < best.epsilon {
            best = EpsilonAtOrder {
                epsilon,
                order: alpha,
            };
        }
    }
    best.epsilon = best.epsilon.max(0.0);
    Ok(best)
}

/// ε at one order before the final clamp at 0 (it may be negative): what
/// [`epsilon_from_rdp`] minimises. `delta` must be valid.
pub fn epsilon_at_order(alpha: f64, r: f64, delta: f64, conversion: Conversion) -> f64 {
    match conversion {
        Conversion::Improved => {
            if r < 0.0 || below_kl_threshold(r, delta) {
                // r < 0 only from rounding; the KL bound gives δ ≥ sqrt(1 − e^−r).
                0.0
            } else if alpha > 1.01 {
                // Evaluated left to right as dp_accounting does, for identical rounding.
                r + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
            } else {
                f64::INFINITY
            }
        }
        Conversion::Classic => r - delta.ln() / (alpha - 1.0),
    }
}

/// A lower bound on [`epsilon_at_order`] over every RDP value `r >= r_lower`.
///
/// Both conversions are non-decreasing in r except for the improved one's jump from 0 (KL
/// branch) to `r + offset` at the KL threshold, where the offset may be negative; below the
/// threshold the bound is therefore `min(0, offset)`.
pub fn epsilon_at_order_lower_bound(
    alpha: f64,
    r_lower: f64,
    delta: f64,
    conversion: Conversion,
) -> f64 {
    match conversion {
        Conversion::Improved => {
            let offset = if alpha > 1.01 {
                improved_offset(alpha, delta)
            } else {
                f64::INFINITY
            };
            if r_lower >= 0.0 && !below_kl_threshold(r_lower, delta) {
                r_lower + offset
            } else {
                offset.min(0.0)
            }
        }
        Conversion::Classic => epsilon_at_order(alpha, r_lower.max(0.0), delta, conversion),
    }
}

/// True where the KL bound δ ≥ sqrt(1 − e^−r) already gives ε = 0.
fn below_kl_threshold(r: f64, delta: f64) -> bool {
    delta * delta + (-r).exp_m1() > 0.0
}

/// `log(1 − 1/α) − log(δα)/(α − 1)`: Balle et al. 2020, Prop. 12, less the RDP.
fn improved_offset(alpha: f64, delta: f64) -> f64 {
    (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
}

/// The smallest δ over the orders for which the composed mechanism is (ε, δ)-DP.
///
/// # Privacy
/// Inverse of [`epsilon_from_rdp`]'s improved conversion (dp_accounting's `compute_delta`):
/// `log δ = (α−1)(r − ε + log(1 − 1/α)) − log α`, and the KL bound `δ ≤ sqrt(1 − e^−r)`.
pub fn delta_from_rdp(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<DeltaAtOrder> {
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(Error::invalid(
            "epsilon",
            epsilon,
            "a finite number at least 0",
        ));
    }
    assert_eq!(orders.len(), rdp.len(), "one RDP value per order");
    let mut best = (f64::INFINITY, orders[0]);
    for (&alpha, &r) in orders.iter().zip(rdp) {
        let mut ln_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if alpha > 1.01 {
            let bound = (alpha - 1.0) * (r - epsilon + (-1.0 / alpha).ln_1p()) - alpha.ln();
            ln_delta = ln_delta.min(bound);
        }
        if ln_delta < best.0 {
            best = (ln_delta, alpha);
        }
    }
    Ok(DeltaAtOrder {
        delta: best.0.exp().min(1.0),
        order: best.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_mechanism_epsilon_matches_the_formula_at_one_order() {
        // One order, r = α/(2σ²): ε = r + log1p(−1/α) − log(δα)/(α−1).
        let (alpha, r, delta) = (8.0, 0.5, 1e-5);
        let e = epsilon_from_rdp(&[alpha], &[r], delta, Conversion::Improved).unwrap();
        let expected = r + (1.0 - 1.0 / alpha).ln() - (delta * alpha).ln() / (alpha - 1.0);
        assert!((e.epsilon - expected).abs() < 1e-14);
        let c = epsilon_from_rdp(&[alpha], &[r], delta, Conversion::Classic).unwrap();
        assert!((c.epsilon - (r + (1e5f64).ln() / 7.0)).abs() < 1e-14);
        assert!(e.epsilon < c.epsilon, "the improved bound is tighter");
    }

    #[test]
    fn delta_inverts_epsilon() {
        let orders = [2.0, 4.0, 8.0, 16.0, 32.0];
        let rdp: Vec<f64> = orders.iter().map(|a| a * 0.01).collect();
        for delta in [1e-3, 1e-5, 1e-9] {
            let e = epsilon_from_rdp(&orders, &rdp, delta, Conversion::Improved).unwrap();
            let d = delta_from_rdp(&orders, &rdp, e.epsilon).unwrap();
            assert!(((d.delta - delta) / delta).abs() < 1e-9, "{d:?} vs {delta}");
            assert_eq!(d.order, e.order);
        }
    }

    #[test]
    fn tiny_rdp_gives_zero_epsilon_through_the_kl_bound() {
        let e = epsilon_from_rdp(&[2.0], &[1e-12], 1e-5, Conversion::Improved).unwrap();
        assert_eq!(e.epsilon, 0.0);
    }

    #[test]
    fn infinite_rdp_everywhere_gives_infinite_epsilon() {
        let e =
            epsilon_from_rdp(&[2.0, 3.0], &[f64::INFINITY; 2], 1e-5, Conversion::Improved).unwrap();
        assert_eq!(e.epsilon, f64::INFINITY);
    }

    #[test]
    fn bad_delta_and_epsilon_are_refused() {
        for delta in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(epsilon_from_rdp(&[2.0], &[1.0], delta, Conversion::Improved).is_err());
        }
        assert!(delta_from_rdp(&[2.0], &[1.0], -1.0).is_err());
        assert!(delta_from_rdp(&[2.0], &[1.0], f64::NAN).is_err());
    }
}
