//! The privacy random variable (PRV) accountant (Gopi, Lee & Wutschitz 2021, "Numerical
//! Composition of Differential Privacy", NeurIPS), with its two-sided error bounds.
//!
//! The PRV of a step is its privacy loss Y = ln(P(o)/Q(o)) for o ~ P (the same object as a
//! PLD, [`super::pld`]); δ(ε) = E[(1 − e^(ε−ΣY))₊] for the composition. Unlike the
//! pessimistic PLD, the PRV accountant discretises *without bias* and bounds the error:
//! 1. each step's Y is rounded to the centre c_i = i·h of its cell ((i−½)h, (i+½)h], and
//!    the whole grid is shifted by s so that the discrete mean equals the true one (the
//!    in-cell first moment comes from the cell's P- and Q-masses a, b: ∫(ℓ − c)dP =
//!    a − e^c·b + r, 0 ≤ r ≤ a·h²/8·e^(h/2));
//! 2. the rounding errors Z_t = Ỹ_t − Y_t are then independent, of mean zero (up to the
//!    remainder r, a drift of at most k·h²/8·e^(h/2) over k steps) and each within an
//!    interval of length h, so by Hoeffding |ΣZ_t| ≤ h·√(k/2·ln(2/δ_H)) except with
//!    probability δ_H. With ε_err = that bound plus the drift, and δ_fail = δ_H plus the
//!    tails (outcomes beyond ±9.8σ, sent to +∞ or the lowest cell) and the FFT window's
//!    truncation: δ(ε + ε_err) − δ_fail ≤ δ̃(ε) ≤ δ(ε − ε_err) + δ_fail (the coupling
//!    argument of their Section 5, written out here), hence
//!    - `eps_upper` = ε̃(δ − δ_fail) + ε_err ≥ the true ε,
//!    - `eps_low` = ε̃(δ + δ_fail) − ε_err ≤ the true ε,
//!    - `eps_estimate` = ε̃(δ).
//!
//! The mesh h is chosen from the requested `eps_error` and `delta_error` (the same two
//! parameters prv_accountant takes): h = eps_error / √(k/2·ln(4/delta_error)), δ_H = delta_error/2. Composition is the
//! same FFT as the PLD's. Both directions of add-or-remove are composed and each bound is the
//! larger of the two (prv_accountant 0.2.0 composes the remove direction only; for this
//! mechanism the add direction was never the larger on the reference grid).

use rayon::prelude::*;
use serde::Serialize;

use super::conversion::check_delta;
use super::ledger::{Ledger, PrivacyEvent};
use super::loss_grid::{LossGrid, MAX_GRID_POINTS, TAIL_MASS_TRUNCATION, compose};
use super::pld::{Direction, SharedTails, SubsampledGaussian, Tails, distinct_gaussian_steps};
use crate::error::{Error, Result};

/// prv_accountant's customary `eps_error`.
pub const DEFAULT_EPS_ERROR: f64 = 0.01;

/// prv_accountant's customary `delta_error`.
pub const DEFAULT_DELTA_ERROR: f64 = 1e-9;

/// ε at δ from the PRV accountant, with its error bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrvSpent {
    /// The claim: `eps_upper`, an upper bound on the true ε.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// A lower bound on the true ε.
    pub eps_low: f64,
    /// The estimate ε̃(δ).
    pub eps_estimate: f64,
    /// An upper bound on the true ε.
    pub eps_upper: f64,
    /// The ε error bound actually achieved (≤ the requested one).
    pub eps_error: f64,
    /// The δ error bound actually used.
    pub delta_error: f64,
    /// The mesh h of the discretisation.
    pub mesh: f64,
    /// The number of steps composed.
    pub steps: u64,
}

/// The composed PRVs of a ledger, both directions.
#[derive(Debug, Clone)]
pub struct ComposedPrv {
    remove: LossGrid,
    add: LossGrid,
    eps_error: f64,
    delta_error: f64,
    mesh: f64,
    steps: u64,
}

impl ComposedPrv {
    /// ε at δ with its bounds; δ must exceed the δ error.
    pub fn epsilon(&self, delta: f64) -> Result<PrvSpent> {
        check_delta(delta)?;
        if delta <= self.delta_error || delta + self.delta_error >= 1.0 {
            return Err(Error::invalid(
                "delta",
                delta,
                format!(
                    "a δ with δ ± delta_error in (0, 1) (delta_error = {:e})",
                    self.delta_error
                ),
            ));
        }
        let at = |d: f64| {
            self.remove
                .epsilon_for_delta(d)
                .max(self.add.epsilon_for_delta(d))
        };
        let eps_upper = at(delta - self.delta_error) + self.eps_error;
        let eps_low = at(delta + self.delta_error) - self.eps_error;
        Ok(PrvSpent {
            epsilon: eps_upper,
            delta,
            eps_low,
            eps_estimate: at(delta),
            eps_upper,
            eps_error: self.eps_error,
            delta_error: self.delta_error,
            mesh: self.mesh,
            steps: self.steps,
        })
    }
}

/// Checks the PRV error parameters.
pub fn check_errors(eps_error: f64, delta_error: f64) -> Result<()> {
    if !(eps_error > 0.0 && eps_error < 10.0) {
        return Err(Error::invalid(
            "eps_error",
            eps_error,
            "a number in (0, 10) (prv_accountant's customary value is 0.01)",
        ));
    }
    if !(delta_error > 0.0 && delta_error < 0.01) {
        return Err(Error::invalid(
            "delta_error",
            delta_error,
            "a number in (0, 0.01) (prv_accountant's customary value is 1e-9)",
        ));
    }
    Ok(())
}

/// The cell index range [lower, upper] of one step's losses in `direction`.
fn cell_range(event: &PrivacyEvent, direction: Direction, mesh: f64) -> Result<(i64, i64)> {
    let (lowest, highest) = SubsampledGaussian::new(event, direction).loss_range();
    let lower = (lowest / mesh).floor();
    let upper = (highest / mesh).ceil().max(lower);
    let cells = upper - lower + 1.0;
    if cells > MAX_GRID_POINTS as f64 {
        return Err(Error::invalid(
            "eps_error",
            mesh,
            format!(
                "a larger eps_error or fewer steps: one step at q = {}, σ = {} needs {cells} \
                 cells of width {mesh:e}",
                event.sample_rate, event.noise_multiplier
            ),
        ));
    }
    Ok((lower as i64, upper as i64))
}

/// One step's PRVs (remove, add) on the cell-centred grid of mesh `mesh`, mean-corrected,
/// each with the P-mass of its tails (outcomes whose cell is outside the grid).
fn step_prvs(event: &PrivacyEvent, mesh: f64) -> Result<[(LossGrid, f64); 2]> {
    let (rlo, rhi) = cell_range(event, Direction::Remove, mesh)?;
    let (alo, ahi) = cell_range(event, Direction::Add, mesh)?;
    // Cell edges (j − ½)h; the add direction's edge (i − ½)h is the removal loss
    // (1 − i − ½)h.
    let shared = SharedTails::new(
        event,
        mesh,
        -0.5 * mesh,
        rlo.min(-ahi),
        (rhi + 1).max(1 - alo),
    );
    let remove: Vec<_> = (rlo..=rhi + 1).map(|j| shared.at(j)).collect();
    let add: Vec<_> = (alo..=ahi + 1).map(|i| shared.at(1 - i)).collect();
    Ok([
        cells(event, Direction::Remove, mesh, rlo, &remove),
        cells(event, Direction::Add, mesh, alo, &add),
    ])
}

/// One direction's PRV on the cells centred at (lower + j)·h, with edge tails `edges`.
fn cells(
    event: &PrivacyEvent,
    direction: Direction,
    mesh: f64,
    lower: i64,
    edges: &[(Tails, Tails)],
) -> (LossGrid, f64) {
    let pair = SubsampledGaussian::new(event, direction);
    let masses = pair.interval_masses(edges);
    let mut probs: Vec<f64> = masses.gaps.iter().map(|&(a, _)| a).collect();
    // In-cell first moments about the centres: a − e^c·b (see the module).
    let (mut moment, mut mass) = (0.0, 0.0);
    for (j, &(a, b)) in masses.gaps.iter().enumerate() {
        let centre = (lower + j as i64) as f64 * mesh;
        let scaled = match b > 0.0 {
            true => (centre + b.ln()).exp(),
            false => 0.0,
        };
        moment += a - scaled;
        mass += a;
    }
    let shift = match mass > 0.0 {
        true => (moment / mass).clamp(-0.5 * mesh, 0.5 * mesh),
        false => 0.0,
    };
    // Tails: the lowest outcomes join the lowest cell (a counted failure), the highest go to
    // +∞.
    probs[0] += masses.below.0;
    let tails = masses.below.0 + masses.above.0;
    (
        LossGrid {
            step: mesh,
            lower,
            offset: shift,
            probs,
            infinity_mass: masses.above.0,
        },
        tails,
    )
}

/// The PRVs of every distinct step of `ledger`, composed, with the mesh from the error
/// targets.
///
/// # Privacy
/// [`ComposedPrv::epsilon`]'s `eps_upper` is an upper bound and `eps_low` a lower bound on
/// the ledger's true ε for add-or-remove adjacency, by the argument of the module (Gopi,
/// Lee & Wutschitz 2021, Section 5). Continuous Gaussian steps only.
pub fn ledger_prv(ledger: &Ledger, eps_error: f64, delta_error: f64) -> Result<ComposedPrv> {
    check_errors(eps_error, delta_error)?;
    let distinct = distinct_gaussian_steps(ledger, "prv")?;
    let steps = ledger.steps().max(1) as f64;
    let hoeffding_delta = 0.5 * delta_error;
    let spread = (steps / 2.0 * (2.0 / hoeffding_delta).ln()).sqrt();
    // The mesh whose Hoeffding bound plus mean drift stays within eps_error.
    let mut mesh = eps_error / spread;
    let achieved = |h: f64| h * spread + steps * h * h / 8.0 * (0.5 * h).exp();
    while achieved(mesh) > eps_error {
        mesh *= 0.999;
    }
    let grids: Vec<[(LossGrid, f64); 2]> = distinct
        .par_iter()
        .map(|(event, _)| step_prvs(event, mesh))
        .collect::<Result<_>>()?;
    let compose_direction = |side: usize| -> Result<(LossGrid, f64)> {
        let tails: f64 = grids
            .iter()
            .zip(&distinct)
            .map(|(g, (_, n))| g[side].1 * *n as f64)
            .sum();
        let blocks: Vec<(&LossGrid, u64)> = grids
            .iter()
            .zip(&distinct)
            .map(|(g, (_, n))| (&g[side].0, *n))
            .collect();
        Ok((compose(mesh, &blocks)?, tails))
    };
    let (remove, add) = rayon::join(|| compose_direction(0), || compose_direction(1));
    let ((remove, tails_remove), (add, tails_add)) = (remove?, add?);
    let failure = hoeffding_delta + tails_remove.max(tails_add) + TAIL_MASS_TRUNCATION;
    if failure > delta_error {
        return Err(Error::invalid(
            "delta_error",
            delta_error,
            format!("a larger δ error: the tails alone need {failure:e}"),
        ));
    }
    Ok(ComposedPrv {
        remove,
        add,
        eps_error: achieved(mesh),
        delta_error,
        mesh,
        steps: ledger.steps(),
    })
}

/// ε at δ of `ledger` under the PRV accountant.
pub fn prv_epsilon(
    ledger: &Ledger,
    delta: f64,
    eps_error: f64,
    delta_error: f64,
) -> Result<PrvSpent> {
    ledger_prv(ledger, eps_error, delta_error)?.epsilon(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_bracket_the_gaussian_closed_form() {
        // q = 1, 10 steps of σ = 2: a Gaussian with μ = √10/2 (Dong, Roth & Su 2019),
        // δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2).
        let mut ledger = Ledger::new();
        ledger.push(PrivacyEvent::new(1.0, 2.0, 10).unwrap());
        let mu = 10f64.sqrt() / 2.0;
        let phi = |t: f64| 0.5 * libm::erfc(-t / std::f64::consts::SQRT_2);
        let delta_of = |eps: f64| phi(-eps / mu + mu / 2.0) - eps.exp() * phi(-eps / mu - mu / 2.0);
        // Bisection for the exact ε at δ = 1e-5.
        let (mut lo, mut hi) = (0.0, 20.0);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if delta_of(mid) > 1e-5 {
                lo = mid
            } else {
                hi = mid
            }
        }
        let spent = prv_epsilon(&ledger, 1e-5, 0.01, 1e-9).unwrap();
        assert!(
            spent.eps_low <= hi && hi <= spent.eps_upper,
            "{spent:?} vs {hi}"
        );
        assert!((spent.eps_estimate - hi).abs() < 0.005, "{spent:?} vs {hi}");
        assert!(spent.eps_error <= 0.01);
    }
}
