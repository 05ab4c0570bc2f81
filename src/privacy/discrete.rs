//! Rényi DP of the Poisson-subsampled *discrete* Gaussian (the secure noise mode).
//!
//! Secure mode adds N_Z(0, σ_g²) per coordinate to the clipped sum rounded to a grid
//! (`mechanism::secure_noise`), with σ_g at least σ times the sum's L2 sensitivity in grid
//! units Δ_g. At every **integer** order α ≥ 2 its RDP is at most the sampled Gaussian's
//! integer-order value A_α(q, σ) (Mironov, Talwar & Zhang 2019, Sec. 3.2), so we account it
//! with that formula and leave the fractional orders out (+∞), whose series is proven for the
//! continuous Gaussian only. The proof, in three steps:
//!
//! Let P = N_Z(0, σ_g²)^d and Q = N_Z(v, σ_g²)^d for an integer shift v with ‖v‖ ≤ Δ_g (the
//! rounded sums of two neighbouring batches, after conditioning on the rest of the batch as
//! in the continuous analysis), M = (1−q)P + qQ, and r = Q/P.
//!
//! 1. *Removal, D_α(M‖P).* E_P[(M/P)^α] = Σ_k C(α,k)(1−q)^(α−k) q^k E_P[r^k] (binomial
//!    expansion, integer α), and for an integer shift
//!    E_P[r^k] = exp(k(k−1)‖v‖²/(2σ_g²)) exactly: completing the square leaves
//!    Σ_x exp(−(x − kv)²/(2σ_g²)), the same normaliser, because kv is an integer vector.
//!    (Canonne, Kamath & Steinke 2020, Prop. 5 is the case q = 1.) With ‖v‖/σ_g ≤ 1/σ every
//!    term is at most the continuous Gaussian's: D_α(M‖P) ≤ log(A_α(q, σ))/(α−1).
//! 2. *Symmetry.* T(x) = v − x maps P to Q and Q to P, so r(Tx) = 1/r(x), and for any f,
//!    E_P[f(r)] = E_P[r·f(1/r)]. The addition direction is
//!    D_α(P‖M): E_P[(M/P)^(1−α)] = E_P[(1−q+qr)^(1−α)], so
//!    E_P[(1−q+qr)^α] − E_P[(1−q+qr)^(1−α)] = E_P[ψ(r)·1{r>1}] with, for r ≥ 1,
//!    a = 1−q+qr, b = (1−q)r+q, ψ(r) = a^α − a^(1−α) + r^(1−α)b^α − r^α b^(1−α).
//! 3. *ψ ≥ 0.* With k = α − ½ and S(y) = y^k − y^(−k): ψ = √a·S(a) − √(rb)·S(r/b), and
//!    a ≥ r/b ≥ 1 (a·b ≥ r, i.e. q(1−q)(r−1)² ≥ 0). S(a)/S(r/b) = sinh(k ln a)/sinh(k ln(r/b))
//!    is non-decreasing in k (x ↦ x·coth(kx) increases), so ψ ≥ 0 for all α ≥ 2 once it
//!    holds at α = 2, k = 3/2. There, with t = q(r−1), a = 1+t, b = r−t:
//!    a·r·b·ψ = a³rb − rb + ab³ − ar³ = t³(r+1)(r−1−t) ≥ 0 since 0 ≤ t ≤ r−1.
//!    So the addition direction never exceeds the removal direction: the accounted value
//!    bounds both. (The test `psi_is_never_negative` checks ψ on a grid; the test in
//!    `tests/it/accounting_discrete.rs` computes both divergences of a one-dimensional
//!    subsampled discrete Gaussian by direct summation.)

use super::ledger::Mechanism;
use super::rdp::{Orders, RdpScratch, poisson_gaussian_rdp_selected};
use crate::error::Result;

/// RDP of one Poisson-subsampled step of `mechanism` at the selected orders (all when
/// `None`; the others are left alone): the sampled Gaussian's value, except that the
/// discrete Gaussian's fractional orders are +∞ (not proven; see the module).
///
/// # Privacy
/// An upper bound on the step's RDP at every order, both neighbouring directions.
pub fn step_rdp_selected(
    mechanism: Mechanism,
    sample_rate: f64,
    noise_multiplier: f64,
    orders: &Orders,
    selected: Option<&[bool]>,
    scratch: &mut RdpScratch,
    out: &mut [f64],
) -> Result<()> {
    match mechanism {
        Mechanism::Gaussian => poisson_gaussian_rdp_selected(
            sample_rate,
            noise_multiplier,
            orders,
            selected,
            scratch,
            out,
        ),
        Mechanism::DiscreteGaussian => {
            let integer: Vec<bool> = orders
                .values()
                .iter()
                .enumerate()
                .map(|(i, &alpha)| selected.is_none_or(|s| s[i]) && alpha.fract() == 0.0)
                .collect();
            poisson_gaussian_rdp_selected(
                sample_rate,
                noise_multiplier,
                orders,
                Some(&integer),
                scratch,
                out,
            )?;
            for (i, &alpha) in orders.values().iter().enumerate() {
                if selected.is_none_or(|s| s[i]) && alpha.fract() != 0.0 {
                    out[i] = f64::INFINITY;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ψ(r)/a^α from the module's step 2, in logs to avoid overflow.
    fn psi_scaled(q: f64, alpha: f64, r: f64) -> f64 {
        let (a, b) = (1.0 - q + q * r, (1.0 - q) * r + q);
        let term = |log: f64| (log - alpha * a.ln()).exp();
        1.0 - term((1.0 - alpha) * a.ln()) + term((1.0 - alpha) * r.ln() + alpha * b.ln())
            - term(alpha * r.ln() + (1.0 - alpha) * b.ln())
    }

    #[test]
    fn psi_is_never_negative() {
        // The inequality of step 3, on a grid of q, integer α and r (up to e^8).
        for q in [1e-4, 1e-3, 0.01, 0.034, 0.1, 0.3, 0.5, 0.9, 0.99, 1.0] {
            for alpha in (2..=64).chain([128, 256]) {
                for i in 1..=800 {
                    let r = (i as f64 * 0.01).exp();
                    let psi = psi_scaled(q, f64::from(alpha), r);
                    assert!(psi > -1e-12, "ψ = {psi} at q {q}, α {alpha}, r {r}");
                }
            }
        }
        // The identity behind α = 2: a·r·b·ψ = t³(r+1)(r−1−t).
        for (q, r) in [(0.1f64, 3.0f64), (0.5, 1.5), (0.9, 10.0)] {
            let (a, b, t) = (1.0 - q + q * r, (1.0 - q) * r + q, q * (r - 1.0));
            let psi = a * a - 1.0 / a + b * b / r - r * r / b;
            let closed = t * t * t * (r + 1.0) * (r - 1.0 - t);
            assert!((a * r * b * psi - closed).abs() < 1e-9 * closed.abs().max(1.0));
        }
    }

    #[test]
    fn discrete_steps_use_integer_orders_only() {
        let orders = Orders::new(vec![1.5, 2.0, 2.5, 3.0, 64.0]).unwrap();
        let mut gaussian = vec![0.0; 5];
        let mut discrete = vec![0.0; 5];
        let mut scratch = RdpScratch::default();
        step_rdp_selected(
            Mechanism::Gaussian,
            0.01,
            1.2,
            &orders,
            None,
            &mut scratch,
            &mut gaussian,
        )
        .unwrap();
        step_rdp_selected(
            Mechanism::DiscreteGaussian,
            0.01,
            1.2,
            &orders,
            None,
            &mut scratch,
            &mut discrete,
        )
        .unwrap();
        for (i, &alpha) in orders.values().iter().enumerate() {
            if alpha.fract() == 0.0 {
                assert_eq!(discrete[i], gaussian[i], "order {alpha}");
            } else {
                assert!(discrete[i].is_infinite(), "order {alpha}");
                assert!(gaussian[i].is_finite(), "order {alpha}");
            }
        }
    }
}
