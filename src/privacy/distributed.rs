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

/// Δ₂ of a vector of L2 norm ≤ x (in integer units) after stochastic rounding in d
/// dimensions (Kairouz, Liu & Steinke 2021, Thm. 1): x + √d unconditionally (β = 0), and
/// with conditional rounding at β > 0, min(x + √d, sqrt(x² + d/4 + √(2 ln 1/β)(x + √d/2))).
/// The quantiser (`secagg::quantise`) re-draws the rounding until the vector meets exactly
/// this bound, so what is booked is what is enforced.
pub fn rounded_l2_bound(x: f64, dim: u64, beta: f64) -> f64 {
    let d = dim as f64;
    let plain = x + d.sqrt();
    match beta > 0.0 {
        true => plain.min(
            (x * x + d / 4.0 + (2.0 * (1.0 / beta).ln()).sqrt() * (x + d.sqrt() / 2.0)).sqrt(),
        ),
        false => plain,
    }
}

/// The largest scaled clip x whose rounded bound [`rounded_l2_bound`]`(x, d, β)` is at
/// most `bound` (bisection to 1e-12 relative, rounding down): secure aggregation with
/// *central* noise clips each update to x/s so that, after rounding, it still has norm ≤ C
/// and the Gaussian's booked sensitivity C holds. Errors when even x = 0 exceeds it.
pub fn clip_within(bound: f64, dim: u64, beta: f64) -> Result<f64> {
    if rounded_l2_bound(0.0, dim, beta) >= bound {
        return Err(Error::invalid(
            "secure_aggregation.bits",
            "too few",
            format!("a scale at which rounding {dim} values leaves room for the clip"),
        ));
    }
    let (mut lo, mut hi) = (0.0, bound);
    while hi - lo > 1e-12 * bound {
        let mid = 0.5 * (lo + hi);
        match rounded_l2_bound(mid, dim, beta) <= bound {
            true => lo = mid,
            false => hi = mid,
        }
    }
    Ok(lo)
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
        let l2 = rounded_l2_bound(self.l2_clip * self.scale, self.dim, self.beta);
        (l2, l2 * (self.dim as f64).sqrt().min(l2))
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

/// The CSV header of a distributed-DP ledger (one booked round per row, in order).
pub const DISTRIBUTED_LEDGER_HEADER: [&str; 9] = [
    "round",
    "sample_rate",
    "mechanism",
    "l2_clip",
    "dim",
    "beta",
    "clients",
    "local_stddev",
    "scale",
];

/// One round as booked: its number, the clients' sampling rate q and what it enforced and
/// added, with `clients` the survivors whose noise shares were actually summed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistributedEntry {
    /// The federated round (from 1).
    pub round: u64,
    /// q: each client joined the round independently with this probability.
    pub sample_rate: f64,
    /// The round's mechanism and parameters.
    #[serde(flatten)]
    pub params: DistributedRound,
}

/// The rounds of a run with distributed DP, in order: its privacy cost is a function of
/// this list alone (written as `ledger.csv` of a `secagg_distributed_dp` run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistributedLedger {
    entries: Vec<DistributedEntry>,
}

impl DistributedLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Books one round (validated).
    pub fn push(&mut self, entry: DistributedEntry) -> Result<()> {
        entry.params.validate()?;
        if !(entry.sample_rate > 0.0 && entry.sample_rate <= 1.0) {
            return Err(Error::invalid(
                "distributed ledger sample_rate",
                entry.sample_rate,
                "a rate in (0, 1]",
            ));
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The booked rounds.
    pub fn entries(&self) -> &[DistributedEntry] {
        &self.entries
    }

    /// The total RDP at [`orders`]: the sum over rounds (rounds with equal parameters are
    /// computed once).
    pub fn rdp(&self) -> Vec<f64> {
        let mut total = vec![0.0; orders().len()];
        let mut cache: Vec<(DistributedEntry, Vec<f64>)> = Vec::new();
        for entry in &self.entries {
            let same = |e: &DistributedEntry| {
                e.sample_rate == entry.sample_rate && e.params == entry.params
            };
            let rdp = match cache.iter().find(|(e, _)| same(e)) {
                Some((_, rdp)) => rdp.clone(),
                None => {
                    let rdp = entry.params.sampled_rdp(entry.sample_rate);
                    cache.push((*entry, rdp.clone()));
                    rdp
                }
            };
            total.iter_mut().zip(rdp).for_each(|(t, r)| *t += r);
        }
        total
    }

    /// (ε, best order) at δ of every booked round (0 for an empty ledger).
    pub fn epsilon(&self, delta: f64) -> Result<(f64, u32)> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(Error::invalid("delta", delta, "a number in (0, 1)"));
        }
        Ok(epsilon_of(&self.rdp(), delta))
    }

    /// The ledger as CSV (floats written so they read back bit for bit).
    pub fn to_csv(&self) -> String {
        let mut out = DISTRIBUTED_LEDGER_HEADER.join(",");
        out.push('\n');
        for e in &self.entries {
            let p = &e.params;
            let mechanism = match p.mechanism {
                DistributedMechanism::Skellam => "skellam",
                DistributedMechanism::DiscreteGaussian => "discrete_gaussian",
            };
            out.push_str(&format!(
                "{},{:?},{mechanism},{:?},{},{:?},{},{:?},{:?}\n",
                e.round,
                e.sample_rate,
                p.l2_clip,
                p.dim,
                p.beta,
                p.clients,
                p.local_stddev,
                p.scale
            ));
        }
        out
    }

    /// Writes the ledger atomically.
    pub fn write_csv(&self, path: &std::path::Path) -> Result<()> {
        crate::fs::write_atomic(path, self.to_csv().as_bytes())
    }

    /// Whether `bytes` start with this ledger's header (as opposed to the Gaussian ledger's).
    pub fn is_one(bytes: &[u8]) -> bool {
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(first).trim() == DISTRIBUTED_LEDGER_HEADER.join(",")
    }

    /// Parses ledger CSV; errors name `path`, the line and the column.
    pub fn parse_csv(bytes: &[u8], path: &std::path::Path) -> Result<Self> {
        let error = |line: usize, message: String| Error::Parse {
            path: path.to_path_buf(),
            location: format!("line {line}"),
            message,
        };
        let text =
            std::str::from_utf8(bytes).map_err(|e| error(1, format!("not UTF-8 text ({e})")))?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(&DISTRIBUTED_LEDGER_HEADER.join(",")) {
            return Err(error(
                1,
                format!(
                    "expected the header {}",
                    DISTRIBUTED_LEDGER_HEADER.join(",")
                ),
            ));
        }
        let mut ledger = DistributedLedger::new();
        for (i, line) in lines.enumerate() {
            let at = i + 2;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != DISTRIBUTED_LEDGER_HEADER.len() {
                return Err(error(
                    at,
                    format!(
                        "{} fields, expected {}",
                        fields.len(),
                        DISTRIBUTED_LEDGER_HEADER.len()
                    ),
                ));
            }
            let number = |k: usize| -> Result<f64> {
                fields[k].parse::<f64>().map_err(|_| {
                    error(
                        at,
                        format!(
                            "{} = {:?} is not a number",
                            DISTRIBUTED_LEDGER_HEADER[k], fields[k]
                        ),
                    )
                })
            };
            let whole = |k: usize| -> Result<u64> {
                fields[k].parse::<u64>().map_err(|_| {
                    error(
                        at,
                        format!(
                            "{} = {:?} is not a whole number",
                            DISTRIBUTED_LEDGER_HEADER[k], fields[k]
                        ),
                    )
                })
            };
            let mechanism = match fields[2] {
                "skellam" => DistributedMechanism::Skellam,
                "discrete_gaussian" => DistributedMechanism::DiscreteGaussian,
                other => {
                    return Err(error(
                        at,
                        format!("mechanism = {other:?}, expected skellam or discrete_gaussian"),
                    ));
                }
            };
            let entry = DistributedEntry {
                round: whole(0)?,
                sample_rate: number(1)?,
                params: DistributedRound {
                    mechanism,
                    l2_clip: number(3)?,
                    dim: whole(4)?,
                    beta: number(5)?,
                    clients: whole(6)?,
                    local_stddev: number(7)?,
                    scale: number(8)?,
                },
            };
            ledger.push(entry).map_err(|e| error(at, e.to_string()))?;
        }
        Ok(ledger)
    }

    /// Reads a ledger file.
    pub fn read_csv(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_csv(&bytes, path)
    }
}

/// The per-client noise σ (unscaled) that spends at most `target` ε at δ over `rounds`
/// rounds with clients sampled at q, each round summing at least `min_clients` shares
/// (more survivors only add noise, so ε can only fall): the smallest σ on a bisection in
/// log space, to 1e-6 relative. `round` gives everything else (its `local_stddev` and
/// `clients` are replaced); `scale_of(σ)` is the quantisation scale that σ implies.
pub fn calibrate_local_stddev(
    round: &DistributedRound,
    min_clients: u64,
    sample_rate: f64,
    rounds: u64,
    delta: f64,
    target: f64,
    scale_of: &dyn Fn(f64) -> Result<f64>,
) -> Result<f64> {
    let epsilon_at = |sigma: f64| -> Result<f64> {
        let r = DistributedRound {
            local_stddev: sigma,
            clients: min_clients,
            scale: scale_of(sigma)?,
            ..*round
        };
        Ok(epsilon(&r, sample_rate, rounds, delta)?.0)
    };
    if !(target > 0.0 && target.is_finite()) {
        return Err(Error::invalid(
            "target_epsilon",
            target,
            "a finite number above 0",
        ));
    }
    let (mut lo, mut hi) = (1e-6 * round.l2_clip, round.l2_clip);
    let mut grown = 0;
    while epsilon_at(hi)? > target {
        lo = hi;
        hi *= 2.0;
        grown += 1;
        if grown > 60 {
            return Err(Error::invalid(
                "target_epsilon",
                target,
                "an ε some finite noise reaches",
            ));
        }
    }
    while hi / lo > 1.0 + 1e-6 {
        let mid = (lo * hi).sqrt();
        match epsilon_at(mid)? > target {
            true => lo = mid,
            false => hi = mid,
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn round(clients: u64) -> DistributedRound {
        DistributedRound {
            mechanism: DistributedMechanism::Skellam,
            l2_clip: 0.5,
            dim: 1 << 17,
            beta: (-0.5f64).exp(),
            clients,
            local_stddev: 0.06,
            scale: 4000.0,
        }
    }

    /// More survivors sum more shares: ε can only fall, so calibrating to the fewest
    /// accepted is safe.
    #[test]
    fn more_survivors_never_cost_more() {
        let eps = |n| epsilon(&round(n), 0.035, 100, 1e-5).unwrap().0;
        assert!(eps(100) > eps(120), "{} {}", eps(100), eps(120));
        assert!(eps(120) > eps(200));
    }

    /// The calibrated σ meets the target and 1% less noise does not.
    #[test]
    fn calibration_meets_the_target_and_no_less_noise_does() {
        let r = round(100);
        let scale_of = |_sigma: f64| Ok(4000.0);
        let sigma = calibrate_local_stddev(&r, 100, 0.035, 100, 1e-5, 2.0, &scale_of).unwrap();
        let at = |s: f64| {
            let r = DistributedRound {
                local_stddev: s,
                ..r
            };
            epsilon(&r, 0.035, 100, 1e-5).unwrap().0
        };
        assert!(at(sigma) <= 2.0, "{}", at(sigma));
        assert!(at(sigma * 0.99) > 2.0);
    }

    /// Bad ledger text is refused naming the file, the line and the field.
    #[test]
    fn bad_ledgers_are_refused_by_line_and_field() {
        let header = DISTRIBUTED_LEDGER_HEADER.join(",");
        let path = Path::new("ledger.csv");
        let cases = [
            (
                format!("{header}\n1,0.1,laplace,1,8,0.5,10,0.1,100\n"),
                "mechanism",
            ),
            (
                format!("{header}\n1,0.1,skellam,1,8,0.5,ten,0.1,100\n"),
                "clients",
            ),
            (
                format!("{header}\n1,0.1,skellam,1,8,0.5,10,NaN,100\n"),
                "local_stddev",
            ),
            (
                format!("{header}\n1,1.5,skellam,1,8,0.5,10,0.1,100\n"),
                "sample_rate",
            ),
            (format!("{header}\n1,0.1,skellam\n"), "fields"),
            ("round,q\n".to_string(), "header"),
        ];
        for (text, what) in cases {
            let err = DistributedLedger::parse_csv(text.as_bytes(), path).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("ledger.csv"), "{message}");
            assert!(message.contains(what), "{what}: {message}");
        }
    }
}
