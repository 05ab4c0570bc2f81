//! The privacy loss distribution (PLD) accountant of the Poisson-subsampled Gaussian.
//!
//! For one step with sample rate q and noise multiplier σ the worst case reduces to a pair of
//! one-dimensional distributions (Koskela, Jälkö & Honkela 2020; Zhu, Dong & Wang 2022):
//! with μ₀ = N(0, σ²), μ₁ = N(1, σ²) and the mixture M = (1 − q)μ₀ + qμ₁,
//! - **remove** (the neighbour lacks the record): P = M, Q = μ₀,
//!   loss ℓ(x) = ln(1 − q + q·e^((2x − 1)/(2σ²))), increasing in x, bounded below by ln(1 − q);
//! - **add** (the neighbour has one more): P = μ₀, Q = M, loss −ℓ(x), bounded above by
//!   −ln(1 − q).
//!
//! Each direction is discretised by the pessimistic **connect-the-dots** rule (Doroshenko,
//! Ghazi, Kamath, Kumar & Manurangsi 2022, "Connect the Dots: Tighter Discrete Approximations
//! of Privacy Loss Distributions", Algorithm 1) on the grid iΔ: the P-mass of the outcomes
//! whose loss lies in (iΔ, (i+1)Δ] is split between the two end points so that both its P-
//! and its Q-mass are kept:
//!   to iΔ: (e^((i+1)Δ)·b − a)/(e^Δ − 1),   to (i+1)Δ: the rest of a,
//! with a, b the interval's P- and Q-masses (both computed from Gaussian tails, not from
//! differences of δ values, which would lose eight digits at Δ = 1e-4). The result dominates
//! the continuous pair: its δ(ε) is the linear interpolation of the true one in e^ε, at
//! least the true δ(ε) everywhere (their Theorem 3.3). The P-mass below the lowest grid
//! point goes to that point; above the top, e^(ε_top)·Q goes to the top point and the rest
//! to +∞. The grid covers the outcomes x ∈ [−σ·z, 1 + σ·z], z = 9.8 (tails below e^−50,
//! dp_accounting's `log_mass_truncation_bound`), and the tails themselves are placed as
//! said, so nothing is dropped.
//!
//! Steps compose by FFT ([`super::loss_grid::compose`]); ε is the larger of the two
//! directions (add-or-remove adjacency). The result is an upper bound on the true ε *at its
//! discretisation*: every output names its interval.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use super::conversion::check_delta;
use super::ledger::{Ledger, Mechanism, PrivacyEvent};
use super::loss_grid::{LossGrid, compose};
use crate::error::{Error, Result};

/// dp_accounting's default `value_discretization_interval`.
pub const DEFAULT_DISCRETIZATION_INTERVAL: f64 = 1e-4;

/// Outcomes further than this many σ from both means carry less than e^−50 of the mass.
pub(crate) const TAIL_SIGMAS: f64 = 9.8;

/// The direction of the add-or-remove neighbouring relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The neighbouring data set lacks the record: P = mixture, Q = N(0, σ²).
    Remove,
    /// The neighbouring data set has one more record: P = N(0, σ²), Q = mixture.
    Add,
}

/// The dominating pair of one Poisson-subsampled Gaussian step in one direction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubsampledGaussian {
    sample_rate: f64,
    noise_multiplier: f64,
    direction: Direction,
}

/// Lower and upper tail of N(0, 1) at t: (Φ(t), Φ̄(t)), each accurate where it is small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tails {
    /// erfc(|t|/√2)/2: the smaller of Φ(t) and Φ̄(t).
    small: f64,
    /// The sign of t (true when t ≥ 0).
    upper: bool,
}

impl Tails {
    fn at(t: f64) -> Tails {
        Tails {
            small: 0.5 * libm::erfc(t.abs() * std::f64::consts::FRAC_1_SQRT_2),
            upper: t >= 0.0,
        }
    }

    /// The N(0, 1) mass of (s, t] for s ≤ t, without cancellation in the tails.
    fn mass_between(s: Tails, t: Tails) -> f64 {
        match (s.upper, t.upper) {
            // Both in the upper half: Φ̄(s) − Φ̄(t).
            (true, true) => (s.small - t.small).max(0.0),
            // Both in the lower half: Φ(t) − Φ(s).
            (false, false) => (t.small - s.small).max(0.0),
            // Across 0: 1 − Φ(s) − Φ̄(t).
            (false, true) => (1.0 - s.small - t.small).max(0.0),
            (true, false) => 0.0,
        }
    }
}

/// ln(e^ℓ − (1 − q)) for ℓ > ln(1 − q), without cancellation.
fn ln_exp_minus(loss: f64, sample_rate: f64) -> f64 {
    if loss < 1.0 {
        (loss.exp_m1() + sample_rate).ln()
    } else {
        loss + (-(1.0 - sample_rate) * (-loss).exp()).ln_1p()
    }
}

impl SubsampledGaussian {
    pub(crate) fn new(event: &PrivacyEvent, direction: Direction) -> Self {
        SubsampledGaussian {
            sample_rate: event.sample_rate,
            noise_multiplier: event.noise_multiplier,
            direction,
        }
    }

    /// The removal loss ℓ(x) = ln(1 − q + q e^((2x−1)/(2σ²))).
    fn removal_loss(&self, x: f64) -> f64 {
        let s2 = self.noise_multiplier * self.noise_multiplier;
        let (q, u) = (self.sample_rate, (2.0 * x - 1.0) / (2.0 * s2));
        match q >= 1.0 {
            true => u,
            false => super::numerics::log_add((1.0 - q).ln(), q.ln() + u),
        }
    }

    /// The privacy loss of outcome x in this direction.
    pub(crate) fn loss(&self, x: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.removal_loss(x),
            Direction::Add => -self.removal_loss(x),
        }
    }

    /// The x with removal loss ℓ (−∞ at or below ln(1 − q)).
    pub(crate) fn removal_x(&self, loss: f64) -> f64 {
        let q = self.sample_rate;
        let s2 = self.noise_multiplier * self.noise_multiplier;
        if q >= 1.0 {
            return s2 * loss + 0.5;
        }
        if loss <= (1.0 - q).ln() {
            return f64::NEG_INFINITY;
        }
        s2 * (ln_exp_minus(loss, q) - q.ln()) + 0.5
    }

    /// The outcome whose loss is ℓ in this direction.
    #[cfg(test)]
    fn x_of(&self, loss: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.removal_x(loss),
            Direction::Add => self.removal_x(-loss),
        }
    }

    /// The outcomes outside [low, high] have P- and Q-mass below e^−50.
    pub(crate) fn outcome_range(&self) -> (f64, f64) {
        let z = TAIL_SIGMAS * self.noise_multiplier;
        (-z, 1.0 + z)
    }

    /// The range of losses over [`Self::outcome_range`], lowest first.
    pub(crate) fn loss_range(&self) -> (f64, f64) {
        let (low, high) = self.outcome_range();
        let (a, b) = (self.loss(low), self.loss(high));
        (a.min(b), a.max(b))
    }

    /// The Gaussian tails at x of N(0, σ²) and N(1, σ²).
    fn tails_at(&self, x: f64) -> (Tails, Tails) {
        let s = self.noise_multiplier;
        (Tails::at(x / s), Tails::at((x - 1.0) / s))
    }

    /// (P-mass, Q-mass) of the outcomes between the tails `a` and `b` (in x order, a below b).
    fn masses(&self, a: (Tails, Tails), b: (Tails, Tails)) -> (f64, f64) {
        let g0 = Tails::mass_between(a.0, b.0);
        let g1 = Tails::mass_between(a.1, b.1);
        let q = self.sample_rate;
        let mixture = (1.0 - q) * g0 + q * g1;
        match self.direction {
            Direction::Remove => (mixture, g0),
            Direction::Add => (g0, mixture),
        }
    }

    /// (P-mass, Q-mass) of the outcomes whose loss is in (lo, hi], one pair per gap of
    /// the loss points whose outcome tails are `xs` (in increasing loss order), plus the
    /// masses below the first and above the last point.
    pub(crate) fn interval_masses(&self, xs: &[(Tails, Tails)]) -> IntervalMasses {
        let minus = self.tails_at(f64::NEG_INFINITY);
        let plus = self.tails_at(f64::INFINITY);
        // Loss increasing in x (remove) or decreasing (add): order the end points in x.
        let between = |lo: (Tails, Tails), hi: (Tails, Tails)| match self.direction {
            Direction::Remove => self.masses(lo, hi),
            Direction::Add => self.masses(hi, lo),
        };
        let (first, last) = (xs[0], xs[xs.len() - 1]);
        let (below, above) = match self.direction {
            Direction::Remove => (self.masses(minus, first), self.masses(last, plus)),
            Direction::Add => (self.masses(first, plus), self.masses(minus, last)),
        };
        let gaps = xs.windows(2).map(|w| between(w[0], w[1])).collect();
        IntervalMasses { below, gaps, above }
    }
}

/// The Gaussian tails at the outcomes of the removal losses j·step + shift, j in [lo, hi],
/// computed once for both directions: the add direction's loss ℓ is the removal loss −ℓ at
/// the same outcome, so its grid reuses these (half the `erfc` calls).
pub(crate) struct SharedTails {
    lo: i64,
    tails: Vec<(Tails, Tails)>,
}

impl SharedTails {
    /// Tails for removal-loss indices `lo..=hi` of `event`.
    pub(crate) fn new(event: &PrivacyEvent, step: f64, shift: f64, lo: i64, hi: i64) -> Self {
        let pair = SubsampledGaussian::new(event, Direction::Remove);
        let tails = (lo..=hi)
            .map(|j| pair.tails_at(pair.removal_x(j as f64 * step + shift)))
            .collect();
        SharedTails { lo, tails }
    }

    /// The tails at removal-loss index j.
    pub(crate) fn at(&self, j: i64) -> (Tails, Tails) {
        self.tails[(j - self.lo) as usize]
    }
}

/// The masses of [`SubsampledGaussian::interval_masses`].
pub(crate) struct IntervalMasses {
    /// (P, Q) of the losses at or below the first point.
    pub below: (f64, f64),
    /// (P, Q) of the losses in each gap.
    pub gaps: Vec<(f64, f64)>,
    /// (P, Q) of the losses above the last point.
    pub above: (f64, f64),
}

/// e^ε·b without overflow where b is tiny and ε large.
fn scaled(epsilon: f64, mass: f64) -> f64 {
    if mass <= 0.0 {
        0.0
    } else if epsilon < 700.0 {
        epsilon.exp() * mass
    } else {
        (epsilon + mass.ln()).exp()
    }
}

/// The grid index range [lower, upper] of one step's losses in `direction`.
fn grid_range(event: &PrivacyEvent, direction: Direction, interval: f64) -> Result<(i64, i64)> {
    let (lowest, highest) = SubsampledGaussian::new(event, direction).loss_range();
    let lower = (lowest / interval).floor();
    let upper = (highest / interval).ceil().max(lower + 1.0);
    let points = upper - lower + 1.0;
    if points > super::loss_grid::MAX_GRID_POINTS as f64 {
        return Err(Error::invalid(
            "discretization_interval",
            interval,
            format!(
                "a coarser interval: one step at q = {}, σ = {} spans losses {lowest:.3} to \
                 {highest:.3}, {points} grid points",
                event.sample_rate, event.noise_multiplier
            ),
        ));
    }
    Ok((lower as i64, upper as i64))
}

/// The pessimistic connect-the-dots PLDs of one step, (remove, add) (see the module).
pub(crate) fn step_plds(event: &PrivacyEvent, interval: f64) -> Result<(LossGrid, LossGrid)> {
    let (rlo, rhi) = grid_range(event, Direction::Remove, interval)?;
    let (alo, ahi) = grid_range(event, Direction::Add, interval)?;
    // Add loss i·Δ is removal loss −i·Δ.
    let shared = SharedTails::new(event, interval, 0.0, rlo.min(-ahi), rhi.max(-alo));
    let remove: Vec<(Tails, Tails)> = (rlo..=rhi).map(|j| shared.at(j)).collect();
    let add: Vec<(Tails, Tails)> = (alo..=ahi).map(|i| shared.at(-i)).collect();
    Ok((
        connect_the_dots(event, Direction::Remove, interval, rlo, &remove),
        connect_the_dots(event, Direction::Add, interval, alo, &add),
    ))
}

/// One direction's PLD on the points (lower + j)·Δ whose outcome tails are `xs`.
fn connect_the_dots(
    event: &PrivacyEvent,
    direction: Direction,
    interval: f64,
    lower: i64,
    xs: &[(Tails, Tails)],
) -> LossGrid {
    let pair = SubsampledGaussian::new(event, direction);
    let n = xs.len();
    let loss = |j: usize| (lower + j as i64) as f64 * interval;
    let masses = pair.interval_masses(xs);
    let mut probs = vec![0.0; n];
    probs[0] += masses.below.0;
    let spread = interval.exp_m1();
    for (j, &(a, b)) in masses.gaps.iter().enumerate() {
        let to_low = ((scaled(loss(j + 1), b) - a) / spread).clamp(0.0, a);
        probs[j] += to_low;
        probs[j + 1] += a - to_low;
    }
    let (p_above, q_above) = masses.above;
    let to_top = scaled(loss(n - 1), q_above).min(p_above);
    probs[n - 1] += to_top;
    LossGrid {
        step: interval,
        lower,
        offset: 0.0,
        probs,
        infinity_mass: p_above - to_top,
    }
}

/// The PLD of one step in one direction.
#[cfg(test)]
pub(crate) fn step_pld(
    event: &PrivacyEvent,
    direction: Direction,
    interval: f64,
) -> Result<LossGrid> {
    let (remove, add) = step_plds(event, interval)?;
    Ok(match direction {
        Direction::Remove => remove,
        Direction::Add => add,
    })
}

/// ε at δ from a PLD accountant: the larger of the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PldSpent {
    /// ε, the larger of the remove and add directions.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// ε of the remove direction alone.
    pub epsilon_remove: f64,
    /// ε of the add direction alone.
    pub epsilon_add: f64,
    /// The discretisation interval Δ of the privacy loss.
    pub discretization_interval: f64,
    /// The number of steps composed.
    pub steps: u64,
}

/// The composed PLDs of a ledger, both directions.
#[derive(Debug, Clone)]
pub struct ComposedPld {
    /// The remove direction.
    pub remove: LossGrid,
    /// The add direction.
    pub add: LossGrid,
    /// Δ.
    pub discretization_interval: f64,
    /// Steps composed.
    pub steps: u64,
}

impl ComposedPld {
    /// ε at δ (the larger direction).
    pub fn epsilon(&self, delta: f64) -> Result<PldSpent> {
        check_delta(delta)?;
        let epsilon_remove = self.remove.epsilon_for_delta(delta);
        let epsilon_add = self.add.epsilon_for_delta(delta);
        Ok(PldSpent {
            epsilon: epsilon_remove.max(epsilon_add),
            delta,
            epsilon_remove,
            epsilon_add,
            discretization_interval: self.discretization_interval,
            steps: self.steps,
        })
    }

    /// δ at ε (the larger direction).
    pub fn delta(&self, epsilon: f64) -> f64 {
        self.remove
            .delta_for_epsilon(epsilon)
            .max(self.add.delta_for_epsilon(epsilon))
    }
}

/// Checks Δ: positive and finite, and not so coarse that a grid is meaningless.
pub fn check_interval(interval: f64) -> Result<()> {
    if !(interval > 0.0 && interval <= 1.0) {
        return Err(Error::invalid(
            "discretization_interval",
            interval,
            "a number in (0, 1] (dp_accounting's default is 1e-4)",
        ));
    }
    Ok(())
}

/// PLD and PRV account continuous Gaussian steps only: a secure-mode (discrete Gaussian)
/// step is an error naming `accountant`.
pub(crate) fn refuse_discrete(accountant: &str, event: &PrivacyEvent) -> Result<()> {
    if event.mechanism != Mechanism::Gaussian {
        return Err(Error::Unaccountable {
            event: format!("a DiscreteGaussian event with the {accountant} accountant"),
            reason: "use rdp for secure-mode (discrete Gaussian) steps: PLD and PRV are \
                     proven for the continuous Gaussian only"
                .into(),
        });
    }
    Ok(())
}

/// The distinct Gaussian steps of `ledger` with their total repeat counts, in first-seen
/// order; secure-mode (discrete Gaussian) steps are refused for `accountant` (pld, prv).
pub(crate) fn distinct_gaussian_steps(
    ledger: &Ledger,
    accountant: &str,
) -> Result<Vec<(PrivacyEvent, u64)>> {
    let mut index_of: HashMap<(u64, u64), usize> = HashMap::new();
    let mut distinct: Vec<(PrivacyEvent, u64)> = Vec::new();
    for event in ledger.events() {
        refuse_discrete(accountant, event)?;
        let key = (
            event.sample_rate.to_bits(),
            event.noise_multiplier.to_bits(),
        );
        let slot = *index_of.entry(key).or_insert_with(|| {
            distinct.push((*event, 0));
            distinct.len() - 1
        });
        distinct[slot].1 += event.steps;
    }
    Ok(distinct)
}

/// The PLDs of every distinct step of `ledger`, in parallel, and their composition.
///
/// # Privacy
/// An upper bound on the hockey-stick divergence of the ledger's composition at every ε, for
/// add-or-remove adjacency (each step's discretisation dominates it, composition and its
/// truncation keep domination: see [`compose`]). Only Gaussian steps: the discrete Gaussian
/// of secure mode is refused (its accounting stays RDP at integer orders).
pub fn ledger_pld(ledger: &Ledger, interval: f64) -> Result<ComposedPld> {
    check_interval(interval)?;
    let distinct = distinct_gaussian_steps(ledger, "pld")?;
    let grids: Vec<(LossGrid, LossGrid)> = distinct
        .par_iter()
        .map(|(event, _)| step_plds(event, interval))
        .collect::<Result<_>>()?;
    let compose_direction = |pick: fn(&(LossGrid, LossGrid)) -> &LossGrid| -> Result<LossGrid> {
        let blocks: Vec<(&LossGrid, u64)> = grids
            .iter()
            .zip(&distinct)
            .map(|(g, (_, n))| (pick(g), *n))
            .collect();
        compose(interval, &blocks)
    };
    let (remove, add) = rayon::join(
        || compose_direction(|g| &g.0),
        || compose_direction(|g| &g.1),
    );
    Ok(ComposedPld {
        remove: remove?,
        add: add?,
        discretization_interval: interval,
        steps: ledger.steps(),
    })
}

/// ε at δ of `ledger` under the PLD accountant with interval Δ.
pub fn pld_epsilon(ledger: &Ledger, delta: f64, interval: f64) -> Result<PldSpent> {
    check_delta(delta)?;
    ledger_pld(ledger, interval)?.epsilon(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(q: f64, sigma: f64) -> PrivacyEvent {
        PrivacyEvent::new(q, sigma, 1).unwrap()
    }

    #[test]
    fn a_step_keeps_its_mass_and_dominates_the_true_delta() {
        // q = 1: the Gaussian mechanism, whose δ(ε) has a closed form (Balle & Wang 2018):
        // δ = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) with μ = 1/σ.
        let sigma = 2.0;
        let g = step_pld(&one(1.0, sigma), Direction::Remove, 1e-3).unwrap();
        assert!((g.total_mass() - 1.0).abs() < 1e-12, "{}", g.total_mass());
        let mu = 1.0 / sigma;
        let phi = |t: f64| 0.5 * libm::erfc(-t / std::f64::consts::SQRT_2);
        for eps in [0.0, 0.1, 0.5, 1.0, 2.0] {
            let exact = phi(-eps / mu + mu / 2.0) - eps.exp() * phi(-eps / mu - mu / 2.0);
            let ours = g.delta_for_epsilon(eps);
            assert!(ours >= exact - 1e-15, "ε {eps}: {ours} < {exact}");
            assert!(ours <= exact * 1.001 + 1e-12, "ε {eps}: {ours} vs {exact}");
        }
    }

    #[test]
    fn the_add_direction_is_bounded_by_minus_log_one_minus_q() {
        let q = 0.01;
        let g = step_pld(&one(q, 1.0), Direction::Add, 1e-4).unwrap();
        let top = g.loss(g.probs.len() - 1);
        assert!(top <= -(1.0f64 - q).ln() + 1e-4 + 1e-12, "{top}");
        assert_eq!(g.infinity_mass, 0.0);
        assert!((g.total_mass() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn inverse_outcome_maps_back() {
        for direction in [Direction::Remove, Direction::Add] {
            let pair = SubsampledGaussian::new(&one(0.02, 0.9), direction);
            for x in [-3.0, -0.5, 0.3, 1.7, 6.0] {
                let back = pair.x_of(pair.loss(x));
                assert!((back - x).abs() < 1e-9, "{direction:?} {x} -> {back}");
            }
        }
    }
}
