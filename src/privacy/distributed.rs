//! Accounting of distributed DP under secure aggregation: every client adds a share of the
//! noise to its quantised update, and only the sum of the shares protects anyone.
//!
//! Two mechanisms, both in the integer domain after quantisation at scale s (docs/
//! distributed-dp-accounting.md gives every formula with its source):
//! - **Skellam** (Agarwal, Kairouz & Liu 2021): each client adds Sk(σ_int²/2, σ_int²/2) per
//!   coordinate; the sum of n shares is exactly Skellam of variance μ = nσ_int², and
//!   ε(α) = αΔ₂²/(2μ) + min(((2α − 1)Δ₂² + 6Δ₁)/(4μ²), 3Δ₁/(2μ)).
//! - **Distributed discrete Gaussian** (Kairouz, Liu & Steinke 2021, Thm. 1 / Prop. 14): each
//!   client adds N_Z(0, σ_int²); the sum is close to a discrete Gaussian up to the slack
//!   τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ_int² k/(k+1)), and ε(α) is the least of three bounds.
//!
//! Rounding inflates the sensitivity (Kairouz et al. 2021, Thm. 1): Δ₂ = min(cs + √d,
//! sqrt((cs)² + d/4 + √(2 ln 1/β)(cs + √d/2))) with conditional rounding (β > 0), and
//! Δ₁ = Δ₂ min(√d, Δ₂). Poisson subsampling of clients uses Zhu & Wang 2019's general
//! upper bound at integer orders 2..=128 and 256; rounds compose by adding RDP; the
//! conversion to (ε, δ) is Balle et al. 2020 Thm. 21. The reference vectors
//! (`tests/data/distributed_dp_vectors.csv`) come from an independent Python script
//! (`scripts/reference/distributed_dp_accounting.py`) cross-checked against
//! google-research/federated's `distributed_dp/accounting_utils.py`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The noise every client adds to its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributedMechanism {
    /// Skellam shares (Agarwal et al. 2021).
    Skellam,
    /// Discrete Gaussian shares (Kairouz et al. 2021).
    DiscreteGaussian,
}

/// One round of distributed DP, as booked: what was enforced and added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistributedRound {
    /// The shares' mechanism.
    pub mechanism: DistributedMechanism,
    /// c: each client's update clipped to this L2 norm (before scaling).
    pub l2_clip: f64,
    /// d: the padded dimension (a power of two for the Hadamard rotation).
    pub dim: u64,
    /// β of conditional stochastic rounding (0: unconditional).
    pub beta: f64,
    /// n: the noise shares summed (the round's survivors).
    pub clients: u64,
    /// σ: each client's noise standard deviation before scaling.
    pub local_stddev: f64,
    /// s: the quantisation scale (integer = round(s · value)).
    pub scale: f64,
}

/// The orders of the accounting: 2..=128 and 256 (integers only: Zhu & Wang's bound).
pub fn orders() -> Vec<u32> {
    (2..=128).chain(std::iter::once(256)).collect()
}

impl DistributedRound {
    /// Checks every field is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &'static str, v: f64| match v > 0.0 && v.is_finite() {
            true => Ok(()),
            false => Err(Error::invalid(name, v, "a finite number above 0")),
        };
        positive("distributed_dp.l2_clip", self.l2_clip)?;
        positive("distributed_dp.local_stddev", self.local_stddev)?;
        positive("distributed_dp.scale", self.scale)?;
        if !(0.0..1.0).contains(&self.beta) {
            return Err(Error::invalid(
                "distributed_dp.beta",
                self.beta,
                "a number in [0, 1)",
            ));
        }
        if self.dim == 0 || self.clients == 0 {
            return Err(Error::invalid(
                "distributed_dp.dim / clients",
                format!("{} / {}", self.dim, self.clients),
                "whole numbers at least 1",
            ));
        }
        Ok(())
    }

    /// (Δ₂, Δ₁) of one client's rounded, scaled update (Kairouz et al. 2021, Thm. 1).
    pub fn sensitivities(&self) -> (f64, f64) {
        let x = self.l2_clip * self.scale;
        let root_d = (self.dim as f64).sqrt();
        let plain = x + root_d;
        let l2 = match self.beta > 0.0 {
            true => plain.min(
                (x * x
                    + self.dim as f64 / 4.0
                    + (2.0 * (1.0 / self.beta).ln()).sqrt() * (x + root_d / 2.0))
                    .sqrt(),
            ),
            false => plain,
        };
        (l2, l2 * root_d.min(l2))
    }

    /// τ: how far the sum of n discrete Gaussian shares is from one (0 for Skellam).
    pub fn tau(&self) -> f64 {
        match self.mechanism {
            DistributedMechanism::Skellam => 0.0,
            DistributedMechanism::DiscreteGaussian => {
                let s2 = (self.local_stddev * self.scale).powi(2);
                10.0 * (1..self.clients)
                    .map(|k| {
                        let k = k as f64;
                        (-2.0 * std::f64::consts::PI.powi(2) * s2 * k / (k + 1.0)).exp()
                    })
                    .sum::<f64>()
            }
        }
    }

    /// The RDP of one unsampled round at order α.
    pub fn rdp(&self, alpha: f64) -> f64 {
        let (l2, l1) = self.sensitivities();
        let n = self.clients as f64;
        let sigma = self.local_stddev * self.scale;
        match self.mechanism {
            DistributedMechanism::Skellam => {
                let mu = n * sigma * sigma;
                alpha * l2 * l2 / (2.0 * mu)
                    + (((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu))
                        .min(3.0 * l1 / (2.0 * mu))
            }
            DistributedMechanism::DiscreteGaussian => {
                let tau = self.tau();
                let d = self.dim as f64;
                let a = l2 / (n.sqrt() * sigma);
                let b = l1 / (n.sqrt() * sigma);
                (alpha / 2.0 * a * a + tau * d)
                    .min(alpha / 2.0 * (a * a + 2.0 * b * tau + tau * tau * d))
                    .min(alpha / 2.0 * (a + tau * d.sqrt()).powi(2))
            }
        }
    }

    /// The RDP of one round with clients Poisson-sampled at rate q, at each of
    /// [`orders`]: min(Zhu & Wang's general bound, the unsampled RDP); q = 1 is unsampled.
    pub fn sampled_rdp(&self, q: f64) -> Vec<f64> {
        let orders = orders();
        // ε(l) for every integer l up to the largest order (ε(1) is never used).
        let max = *orders.last().unwrap_or(&2) as usize;
        let eps: Vec<f64> = (0..=max).map(|l| self.rdp(l as f64)).collect();
        orders
            .iter()
            .map(|&alpha| {
                let plain = eps[alpha as usize];
                if q >= 1.0 {
                    return plain;
                }
                zhu_wang(alpha, q, &eps).min(plain)
            })
            .collect()
    }
}

/// ln C(n, k) through lgamma.
fn ln_binomial(n: u32, k: u32) -> f64 {
    let lg = |x: f64| libm::lgamma(x);
    lg(f64::from(n) + 1.0) - lg(f64::from(k) + 1.0) - lg(f64::from(n - k) + 1.0)
}

/// Zhu & Wang 2019's general upper bound on the RDP of a Poisson-subsampled mechanism at
/// integer order α, from the mechanism's RDP `eps[l]` at orders l ≤ α (log-sum-exp).
fn zhu_wang(alpha: u32, q: f64, eps: &[f64]) -> f64 {
    let a = f64::from(alpha);
    let ln_q = q.ln();
    let ln_1q = (-q).ln_1p();
    let mut terms = Vec::with_capacity(alpha as usize);
    terms.push((a - 1.0) * ln_1q + (a * q - q + 1.0).ln());
    terms.push(ln_binomial(alpha, 2) + 2.0 * ln_q + (a - 2.0) * ln_1q + eps[2]);
    for l in 3..=alpha {
        let lf = f64::from(l);
        terms.push(
            3f64.ln()
                + ln_binomial(alpha, l)
                + lf * ln_q
                + (a - lf) * ln_1q
                + (lf - 1.0) * eps[l as usize],
        );
    }
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - top).exp()).sum();
    (top + sum.ln()) / (a - 1.0)
}

/// (ε, the order that gave it) at δ for RDP `rdp` at [`orders`] (Balle et al. 2020, Thm. 21).
pub fn epsilon_of(rdp: &[f64], delta: f64) -> (f64, u32) {
    let mut best = (f64::INFINITY, 0u32);
    for (&r, alpha) in rdp.iter().zip(orders()) {
        let a = f64::from(alpha);
        let eps = match delta * delta + (-r).exp_m1() >= 0.0 {
            true => 0.0,
            false => r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0),
        };
        if eps < best.0 {
            best = (eps, alpha);
        }
    }
    (best.0.max(0.0), best.1)
}

/// ε at δ of `steps` rounds of `round` with clients Poisson-sampled at rate q.
pub fn epsilon(round: &DistributedRound, q: f64, steps: u64, delta: f64) -> Result<(f64, u32)> {
    round.validate()?;
    if !(q > 0.0 && q <= 1.0) {
        return Err(Error::invalid("distributed_dp.q", q, "a rate in (0, 1]"));
    }
    let rdp: Vec<f64> = round
        .sampled_rdp(q)
        .iter()
        .map(|r| r * steps as f64)
        .collect();
    Ok(epsilon_of(&rdp, delta))
}
