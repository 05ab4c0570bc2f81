//! The RDP accountant: a ledger of steps plus their composed Rényi DP.
//!
//! Composition of RDP is additive per order (Mironov 2017, Prop. 1), so the accountant keeps
//! the running sum of every step's RDP curve; ε at any δ is then one pass over the orders.
//! The state is the ledger (saved with runs) and the orders; the composed curve is derived.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use super::conversion::{
    Conversion, check_delta, epsilon_at_order, epsilon_at_order_lower_bound, epsilon_from_rdp,
};
use super::ledger::{Ledger, PrivacyEvent};
use super::rdp::{
    Orders, RdpScratch, poisson_gaussian_rdp_lower_bound, poisson_gaussian_rdp_selected,
};
use crate::error::Result;

/// What a run has spent: ε at δ, the order that gave it and the steps behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrivacySpent {
    /// ε, rounded toward more privacy loss by the conversion's upper bounds.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The Rényi order that gave the smallest ε.
    pub order: f64,
    /// The number of steps composed.
    pub steps: u64,
}

/// Composes Poisson-subsampled Gaussian steps under Rényi DP.
///
/// ```
/// use dptrain::privacy::{RdpAccountant, PrivacyEvent};
/// let mut accountant = RdpAccountant::default();
/// // MNIST, batch 256, σ = 1.1, 60 epochs (TF Privacy's tutorial): ε ≈ 2.60 at δ = 1e-5.
/// accountant.compose(PrivacyEvent::new(256.0 / 60000.0, 1.1, 14063).unwrap()).unwrap();
/// let spent = accountant.epsilon(1e-5).unwrap();
/// assert!((spent.epsilon - 2.5967).abs() < 1e-3);
/// ```
///
/// # Which orders are computed
/// The cheap integer orders (up to [`EAGER_MAX_ORDER`](super::rdp::EAGER_MAX_ORDER)) are
/// composed for every step. Another order is composed only when it could give the smallest
/// ε: its RDP is at least that of the eager order below it (RDP is non-decreasing in α)
/// and at least a Pinsker bound ([`poisson_gaussian_rdp_lower_bound`]); if even that lower
/// bound converts to an ε above the best one found, the order cannot be the minimiser and
/// is skipped. The result (ε and best order) is the same as evaluating every order; the
/// fractional orders, whose series are the expensive part, are mostly skipped.
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Orders,
    conversion: Conversion,
    ledger: Ledger,
    /// Σ over the ledger of steps × RDP of the step, per order; valid where `known`.
    rdp: Vec<f64>,
    known: Vec<bool>,
    /// Σ over the ledger of steps × the Pinsker lower bound of the step.
    rdp_lower_bound: f64,
    /// The RDP curve of the last (q, σ) seen, so a run of equal steps costs O(orders) each.
    last_step: Option<StepCurve>,
}

/// One step's RDP at the orders where `known`.
#[derive(Debug, Clone)]
struct StepCurve {
    sample_rate: u64,
    noise_multiplier: u64,
    rdp: Vec<f64>,
    known: Vec<bool>,
}

impl Default for RdpAccountant {
    /// dp_accounting's default orders and the improved conversion.
    fn default() -> Self {
        RdpAccountant::new(Orders::dp_accounting_default(), Conversion::Improved)
    }
}

impl RdpAccountant {
    /// An accountant with nothing spent.
    pub fn new(orders: Orders, conversion: Conversion) -> Self {
        let known = (0..orders.len()).map(|i| orders.is_eager(i)).collect();
        RdpAccountant {
            rdp: vec![0.0; orders.len()],
            known,
            orders,
            conversion,
            ledger: Ledger::new(),
            rdp_lower_bound: 0.0,
            last_step: None,
        }
    }

    /// An accountant that has spent what `ledger` records.
    pub fn from_ledger(ledger: &Ledger, orders: Orders, conversion: Conversion) -> Result<Self> {
        let mut accountant = RdpAccountant::new(orders, conversion);
        accountant.compose_ledger(ledger)?;
        Ok(accountant)
    }

    /// Records one block of steps.
    pub fn compose(&mut self, event: PrivacyEvent) -> Result<()> {
        let curve = self.step_curve(event)?;
        let count = event.steps as f64;
        for ((total, &r), &known) in self.rdp.iter_mut().zip(&curve.rdp).zip(&self.known) {
            if known {
                *total += count * r;
            }
        }
        self.rdp_lower_bound +=
            count * poisson_gaussian_rdp_lower_bound(event.sample_rate, event.noise_multiplier);
        self.ledger.push(event);
        Ok(())
    }

    /// Records every block of `ledger`, in order (in parallel for long ledgers).
    pub fn compose_ledger(&mut self, ledger: &Ledger) -> Result<()> {
        let rdp = ledger_rdp_selected(ledger, &self.orders, Some(&self.known))?;
        for ((total, r), &known) in self.rdp.iter_mut().zip(rdp).zip(&self.known) {
            if known {
                *total += r;
            }
        }
        for event in ledger.events() {
            self.rdp_lower_bound += event.steps as f64
                * poisson_gaussian_rdp_lower_bound(event.sample_rate, event.noise_multiplier);
        }
        self.ledger.extend(ledger);
        Ok(())
    }

    /// ε at `delta` for everything composed so far.
    ///
    /// # Privacy
    /// An upper bound on the ε of the composed steps (RDP composition, Mironov 2017 Prop. 1;
    /// conversion as [`epsilon_from_rdp`]): the minimum over all orders, exactly as if every
    /// order had been composed (see the type's documentation).
    pub fn epsilon(&mut self, delta: f64) -> Result<PrivacySpent> {
        self.resolve(delta, None)
    }

    /// ε at `delta` if `event` were composed next; the ledger is not changed.
    pub fn epsilon_after(&mut self, event: PrivacyEvent, delta: f64) -> Result<PrivacySpent> {
        self.resolve(delta, Some(event))
    }

    /// The composed RDP at every order (computing the orders skipped so far).
    pub fn rdp(&mut self) -> Result<&[f64]> {
        let missing: Vec<bool> = self.known.iter().map(|k| !k).collect();
        self.learn(&missing)?;
        Ok(&self.rdp)
    }

    /// The orders tracked.
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// Every step composed so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The conversion to (ε, δ) in use.
    pub fn conversion(&self) -> Conversion {
        self.conversion
    }

    /// The best ε over all orders for the ledger plus `extra`, composing skipped orders
    /// only where their lower bound could beat the best known ε.
    fn resolve(&mut self, delta: f64, extra: Option<PrivacyEvent>) -> Result<PrivacySpent> {
        check_delta(delta)?;
        let extra_curve = extra.map(|e| self.step_curve(e)).transpose()?;
        let combined = |this: &Self, index: usize| -> f64 {
            let mut r = this.rdp[index];
            if let (Some(curve), Some(event)) = (&extra_curve, extra) {
                r += event.steps as f64 * curve.rdp[index];
            }
            r
        };
        let mut lower_bound = self.rdp_lower_bound;
        if let Some(e) = extra {
            lower_bound += e.steps as f64
                * poisson_gaussian_rdp_lower_bound(e.sample_rate, e.noise_multiplier);
        }
        // Rounding margin: the bounds hold exactly; these guard against last-bit effects.
        let lower_bound = lower_bound * (1.0 - 1e-9);
        let orders = self.orders.clone();
        let alphas = orders.values();
        let best_known = (0..alphas.len())
            .filter(|&i| self.known[i])
            .map(|i| epsilon_at_order(alphas[i], combined(self, i), delta, self.conversion))
            .fold(f64::INFINITY, f64::min);
        let eager: Vec<(f64, f64)> = orders
            .eager_sorted()
            .iter()
            .map(|&j| (alphas[j], combined(self, j)))
            .collect();
        let candidates: Vec<bool> = (0..alphas.len())
            .map(|i| {
                if self.known[i] {
                    return false;
                }
                let r_lower = rdp_lower_bound(alphas[i], &eager).max(lower_bound);
                let bound =
                    epsilon_at_order_lower_bound(alphas[i], r_lower, delta, self.conversion);
                bound <= best_known + 1e-9 * (1.0 + best_known.abs())
            })
            .collect();
        if candidates.iter().any(|&c| c) {
            self.learn(&candidates)?;
        }
        // The extra step's curve, now also at the orders just learned.
        let extra_curve = extra.map(|e| self.step_curve(e)).transpose()?;
        let extra_steps = extra.map_or(0, |e| e.steps);
        let (known_orders, known_rdp): (Vec<f64>, Vec<f64>) = (0..alphas.len())
            .filter(|&i| self.known[i])
            .map(|i| {
                let extra_rdp = extra_curve
                    .as_ref()
                    .map_or(0.0, |c| extra_steps as f64 * c.rdp[i]);
                (alphas[i], self.rdp[i] + extra_rdp)
            })
            .unzip();
        let best = epsilon_from_rdp(&known_orders, &known_rdp, delta, self.conversion)?;
        Ok(PrivacySpent {
            epsilon: best.epsilon,
            delta,
            order: best.order,
            steps: self.ledger.steps() + extra_steps,
        })
    }

    /// Composes the ledger at the orders in `wanted` that are not known yet.
    fn learn(&mut self, wanted: &[bool]) -> Result<()> {
        let new: Vec<bool> = wanted
            .iter()
            .zip(&self.known)
            .map(|(&w, &k)| w && !k)
            .collect();
        if !new.iter().any(|&n| n) {
            return Ok(());
        }
        let rdp = ledger_rdp_selected(&self.ledger, &self.orders, Some(&new))?;
        for (i, &n) in new.iter().enumerate() {
            if n {
                self.rdp[i] = rdp[i];
                self.known[i] = true;
            }
        }
        Ok(())
    }

    /// The RDP curve of `event`'s step at every known order (cached for the last step).
    fn step_curve(&mut self, event: PrivacyEvent) -> Result<StepCurve> {
        let (q, sigma) = (event.sample_rate, event.noise_multiplier);
        let mut curve = match self.last_step.take() {
            Some(curve)
                if curve.sample_rate == q.to_bits()
                    && curve.noise_multiplier == sigma.to_bits() =>
            {
                curve
            }
            _ => StepCurve {
                sample_rate: q.to_bits(),
                noise_multiplier: sigma.to_bits(),
                rdp: vec![0.0; self.orders.len()],
                known: vec![false; self.orders.len()],
            },
        };
        let missing: Vec<bool> = self
            .known
            .iter()
            .zip(&curve.known)
            .map(|(&needed, &have)| needed && !have)
            .collect();
        if missing.iter().any(|&m| m) {
            poisson_gaussian_rdp_selected(
                q,
                sigma,
                &self.orders,
                Some(&missing),
                &mut RdpScratch::default(),
                &mut curve.rdp,
            )?;
            for (have, m) in curve.known.iter_mut().zip(missing) {
                *have |= m;
            }
        }
        self.last_step = Some(curve.clone());
        Ok(curve)
    }
}

/// A lower bound on the RDP at order `alpha` from the RDP at the eager orders
/// (`eager`: (order, RDP) pairs by increasing order), valid for any pair of distributions.
///
/// Two facts about Rényi divergence (van Erven & Harremoës 2014, "Rényi divergence and
/// Kullback-Leibler divergence", Thm. 3 and Cor. 2): D_α is non-decreasing in α, and
/// f(α) = (α − 1)·D_α is convex in α. Convexity puts f above every secant line outside the
/// secant's interval, so the secants of the two eager pairs nearest to `alpha` (left and
/// right) bound f(α) from below; monotonicity gives D_α ≥ D at the eager order below.
/// Composed RDP is a sum of such curves, so both facts hold for it too. Our eager orders
/// are exact (integer orders) and our other orders are upper bounds, so the bound holds for
/// what we compute. A relative margin of 1e-9 absorbs rounding.
pub fn rdp_lower_bound(alpha: f64, eager: &[(f64, f64)]) -> f64 {
    let f = |(order, rdp): (f64, f64)| (order - 1.0) * rdp;
    let secant = |a: (f64, f64), b: (f64, f64)| {
        let (fa, fb) = (f(a), f(b));
        (fa + (alpha - a.0) * (fb - fa) / (b.0 - a.0)) / (alpha - 1.0)
    };
    let below = eager.partition_point(|&(order, _)| order < alpha);
    let mut bound: f64 = 0.0;
    if below >= 1 {
        bound = bound.max(eager[below - 1].1);
    }
    if below >= 2 {
        bound = bound.max(secant(eager[below - 2], eager[below - 1]));
    }
    if below + 1 < eager.len() {
        bound = bound.max(secant(eager[below], eager[below + 1]));
    }
    if bound.is_nan() {
        return 0.0;
    }
    bound * (1.0 - 1e-9)
}

/// The composed RDP of a ledger at every order: Σ steps × RDP(q, σ).
pub fn ledger_rdp(ledger: &Ledger, orders: &Orders) -> Result<Vec<f64>> {
    ledger_rdp_selected(ledger, orders, None)
}

/// [`ledger_rdp`] at the orders where `selected` is true (all when `None`; others are 0).
///
/// Each distinct (q, σ) is evaluated once; distinct steps are evaluated in parallel, and
/// the sum is taken in ledger order, so the result does not depend on the thread count.
pub fn ledger_rdp_selected(
    ledger: &Ledger,
    orders: &Orders,
    selected: Option<&[bool]>,
) -> Result<Vec<f64>> {
    let mut index_of: HashMap<(u64, u64), usize> = HashMap::new();
    let mut distinct: Vec<(f64, f64)> = Vec::new();
    let slots: Vec<usize> = ledger
        .events()
        .iter()
        .map(|e| {
            let key = (e.sample_rate.to_bits(), e.noise_multiplier.to_bits());
            *index_of.entry(key).or_insert_with(|| {
                distinct.push((e.sample_rate, e.noise_multiplier));
                distinct.len() - 1
            })
        })
        .collect();
    let width = orders.len();
    let mut curves = vec![0.0; distinct.len() * width];
    curves
        .par_chunks_mut(width)
        .zip(distinct.par_iter())
        .try_for_each_init(RdpScratch::default, |scratch, (out, &(q, sigma))| {
            poisson_gaussian_rdp_selected(q, sigma, orders, selected, scratch, out)
        })?;
    let mut total = vec![0.0; width];
    for (event, &slot) in ledger.events().iter().zip(&slots) {
        let count = event.steps as f64;
        let curve = &curves[slot * width..(slot + 1) * width];
        for (t, &r) in total.iter_mut().zip(curve) {
            *t += count * r;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_compose_ledger_agree() {
        let mut ledger = Ledger::new();
        for t in 0..50 {
            let sigma = 1.5 * 0.99f64.powi(t);
            ledger.push(PrivacyEvent::new(0.01, sigma, 3).unwrap());
        }
        let mut one_by_one = RdpAccountant::default();
        for &e in ledger.events() {
            one_by_one.compose(e).unwrap();
        }
        let mut at_once = RdpAccountant::default();
        at_once.compose_ledger(&ledger).unwrap();
        assert_eq!(one_by_one.rdp().unwrap(), at_once.rdp().unwrap());
        assert_eq!(one_by_one.ledger(), at_once.ledger());
    }

    #[test]
    fn epsilon_after_matches_composing_and_changes_nothing() {
        let event = PrivacyEvent::new(0.02, 1.2, 100).unwrap();
        let mut accountant = RdpAccountant::default();
        accountant.compose(event).unwrap();
        let before = accountant.epsilon(1e-5).unwrap();
        let predicted = accountant.epsilon_after(event, 1e-5).unwrap();
        assert_eq!(accountant.epsilon(1e-5).unwrap(), before);
        accountant.compose(event).unwrap();
        assert_eq!(accountant.epsilon(1e-5).unwrap(), predicted);
        assert_eq!(predicted.steps, 200);
    }

    #[test]
    fn nothing_spent_is_epsilon_zero() {
        let spent = RdpAccountant::default().epsilon(1e-5).unwrap();
        assert_eq!(spent.epsilon, 0.0);
        assert_eq!(spent.steps, 0);
    }
}
