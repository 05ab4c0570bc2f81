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
use super::discrete::step_rdp_selected;
use super::ledger::Mechanism;
use super::ledger::{Ledger, PrivacyEvent};
use super::rdp::{Orders, RdpScratch, poisson_gaussian_rdp_lower_bound};
use crate::error::Result;

/// What a run has spent: ε at δ, the order that gave it and the steps behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrivacySpent {
    /// ε, rounded toward more privacy loss by the conversion's upper bounds.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The Rényi order that gave the smallest ε (0 from PLD and PRV, which have none).
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
    /// Σ over every block but the last of steps × RDP of the step, per order; valid where
    /// `known`. The composed RDP is `before_last + last.steps × last_curve`: summed block
    /// by block in ledger order, exactly as [`ledger_rdp`] does, so the ε of a run equals
    /// the ε recomputed from its saved ledger, bit for bit.
    before_last: Vec<f64>,
    known: Vec<bool>,
    /// The RDP curve of the last block's step.
    last_curve: Option<StepCurve>,
    /// The curve of the last step asked about that is not the last block's (budget checks).
    other_curve: Option<StepCurve>,
    /// Σ over the ledger of steps × the Pinsker lower bound of the step.
    rdp_lower_bound: f64,
}

/// One step's RDP at the orders where `known`.
#[derive(Debug, Clone)]
struct StepCurve {
    sample_rate: u64,
    noise_multiplier: u64,
    mechanism: Mechanism,
    rdp: Vec<f64>,
    known: Vec<bool>,
}

impl StepCurve {
    fn is_for(&self, event: &PrivacyEvent) -> bool {
        self.sample_rate == event.sample_rate.to_bits()
            && self.noise_multiplier == event.noise_multiplier.to_bits()
            && self.mechanism == event.mechanism
    }

    /// Fills the orders in `wanted` that are missing.
    fn complete(&mut self, orders: &Orders, wanted: &[bool]) -> Result<()> {
        let missing: Vec<bool> = wanted
            .iter()
            .zip(&self.known)
            .map(|(&w, &have)| w && !have)
            .collect();
        if missing.iter().any(|&m| m) {
            step_rdp_selected(
                self.mechanism,
                f64::from_bits(self.sample_rate),
                f64::from_bits(self.noise_multiplier),
                orders,
                Some(&missing),
                &mut RdpScratch::default(),
                &mut self.rdp,
            )?;
            for (have, m) in self.known.iter_mut().zip(missing) {
                *have |= m;
            }
        }
        Ok(())
    }
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
            before_last: vec![0.0; orders.len()],
            known,
            orders,
            conversion,
            ledger: Ledger::new(),
            last_curve: None,
            other_curve: None,
            rdp_lower_bound: 0.0,
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
        let merges = self
            .ledger
            .events()
            .last()
            .is_some_and(|last| last.same_step(&event));
        if !merges {
            let curve = self.curve_for(event)?;
            // The old last block joins the prefix.
            for i in 0..self.before_last.len() {
                if self.known[i] {
                    self.before_last[i] = self.total(i);
                }
            }
            self.last_curve = Some(curve);
        }
        self.rdp_lower_bound += event.steps as f64
            * poisson_gaussian_rdp_lower_bound(event.sample_rate, event.noise_multiplier);
        self.ledger.push(event);
        Ok(())
    }

    /// Records every block of `ledger`, in order (in parallel for long ledgers).
    pub fn compose_ledger(&mut self, ledger: &Ledger) -> Result<()> {
        for event in ledger.events() {
            self.rdp_lower_bound += event.steps as f64
                * poisson_gaussian_rdp_lower_bound(event.sample_rate, event.noise_multiplier);
        }
        self.ledger.extend(ledger);
        self.last_curve = None;
        let known = self.known.clone();
        self.recompute(&known)
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

    /// ε at `delta` if `event` were composed next; the ledger is not changed. Equal, bit
    /// for bit, to [`RdpAccountant::epsilon`] after [`RdpAccountant::compose`]`(event)`.
    pub fn epsilon_after(&mut self, event: PrivacyEvent, delta: f64) -> Result<PrivacySpent> {
        self.resolve(delta, Some(event))
    }

    /// The composed RDP at every order (computing the orders skipped so far).
    pub fn rdp(&mut self) -> Result<Vec<f64>> {
        let missing: Vec<bool> = self.known.iter().map(|k| !k).collect();
        self.learn(&missing)?;
        Ok((0..self.orders.len()).map(|i| self.total(i)).collect())
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

    /// The composed RDP at order `i` (known orders only).
    fn total(&self, i: usize) -> f64 {
        match (&self.last_curve, self.ledger.events().last()) {
            (Some(curve), Some(last)) => self.before_last[i] + last.steps as f64 * curve.rdp[i],
            _ => self.before_last[i],
        }
    }

    /// The composed RDP at order `i` after `extra`, computed as composing it would.
    fn total_after(&self, i: usize, extra: Option<(&PrivacyEvent, &StepCurve)>) -> f64 {
        match extra {
            None => self.total(i),
            Some((event, curve)) => match (&self.last_curve, self.ledger.events().last()) {
                (Some(last_curve), Some(last)) if last.same_step(event) => {
                    self.before_last[i] + (last.steps + event.steps) as f64 * last_curve.rdp[i]
                }
                _ => self.total(i) + event.steps as f64 * curve.rdp[i],
            },
        }
    }

    /// The best ε over all orders for the ledger plus `extra`, composing skipped orders
    /// only where their lower bound could beat the best known ε.
    fn resolve(&mut self, delta: f64, extra: Option<PrivacyEvent>) -> Result<PrivacySpent> {
        check_delta(delta)?;
        let orders = self.orders.clone();
        let alphas = orders.values();
        let extra_curve = extra.map(|e| self.curve_for(e)).transpose()?;
        let extra_pair = extra.as_ref().zip(extra_curve.as_ref());
        let mut lower_bound = self.rdp_lower_bound;
        if let Some(e) = extra {
            lower_bound += e.steps as f64
                * poisson_gaussian_rdp_lower_bound(e.sample_rate, e.noise_multiplier);
        }
        // Rounding margin: the bounds hold exactly; these guard against last-bit effects.
        let lower_bound = lower_bound * (1.0 - 1e-9);
        let best_known = (0..alphas.len())
            .filter(|&i| self.known[i])
            .map(|i| {
                epsilon_at_order(
                    alphas[i],
                    self.total_after(i, extra_pair),
                    delta,
                    self.conversion,
                )
            })
            .fold(f64::INFINITY, f64::min);
        let eager: Vec<(f64, f64)> = orders
            .eager_sorted()
            .iter()
            .map(|&j| (alphas[j], self.total_after(j, extra_pair)))
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
        let extra_curve = extra.map(|e| self.curve_for(e)).transpose()?;
        let extra_pair = extra.as_ref().zip(extra_curve.as_ref());
        let (known_orders, known_rdp): (Vec<f64>, Vec<f64>) = (0..alphas.len())
            .filter(|&i| self.known[i])
            .map(|i| (alphas[i], self.total_after(i, extra_pair)))
            .unzip();
        let best = epsilon_from_rdp(&known_orders, &known_rdp, delta, self.conversion)?;
        Ok(PrivacySpent {
            epsilon: best.epsilon,
            delta,
            order: best.order,
            steps: self.ledger.steps() + extra.map_or(0, |e| e.steps),
        })
    }

    /// Composes the ledger at the orders in `wanted` that are not known yet.
    fn learn(&mut self, wanted: &[bool]) -> Result<()> {
        let new: Vec<bool> = wanted
            .iter()
            .zip(&self.known)
            .map(|(&w, &k)| w && !k)
            .collect();
        if new.iter().any(|&n| n) {
            self.recompute(&new)?;
            for (known, n) in self.known.iter_mut().zip(new) {
                *known |= n;
            }
        }
        Ok(())
    }

    /// Recomputes `before_last` and the last block's curve at the `selected` orders from
    /// the ledger.
    fn recompute(&mut self, selected: &[bool]) -> Result<()> {
        let events = self.ledger.events();
        let Some((last, prefix)) = events.split_last() else {
            return Ok(());
        };
        let before = events_rdp(prefix, &self.orders, Some(selected))?;
        for (i, &s) in selected.iter().enumerate() {
            if s {
                self.before_last[i] = before[i];
            }
        }
        let mut curve = match self.last_curve.take() {
            Some(curve) if curve.is_for(last) => curve,
            _ => StepCurve::empty(last, self.orders.len()),
        };
        let wanted: Vec<bool> = self
            .known
            .iter()
            .zip(selected)
            .map(|(&k, &s)| k || s)
            .collect();
        curve.complete(&self.orders, &wanted)?;
        self.last_curve = Some(curve);
        Ok(())
    }

    /// The curve of `event`'s step at every known order, from the caches when possible.
    fn curve_for(&mut self, event: PrivacyEvent) -> Result<StepCurve> {
        let known = self.known.clone();
        let cached = match (&mut self.last_curve, &mut self.other_curve) {
            (Some(c), _) if c.is_for(&event) => c,
            (_, Some(c)) if c.is_for(&event) => c,
            (_, other) => other.insert(StepCurve::empty(&event, known.len())),
        };
        cached.complete(&self.orders, &known)?;
        Ok(cached.clone())
    }
}

impl StepCurve {
    fn empty(event: &PrivacyEvent, width: usize) -> StepCurve {
        StepCurve {
            sample_rate: event.sample_rate.to_bits(),
            noise_multiplier: event.noise_multiplier.to_bits(),
            mechanism: event.mechanism,
            rdp: vec![0.0; width],
            known: vec![false; width],
        }
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
    events_rdp(ledger.events(), orders, selected)
}

/// [`ledger_rdp_selected`] over a slice of blocks.
fn events_rdp(
    events: &[PrivacyEvent],
    orders: &Orders,
    selected: Option<&[bool]>,
) -> Result<Vec<f64>> {
    let mut index_of: HashMap<(u64, u64, Mechanism), usize> = HashMap::new();
    let mut distinct: Vec<(f64, f64, Mechanism)> = Vec::new();
    let slots: Vec<usize> = events
        .iter()
        .map(|e| {
            let key = (
                e.sample_rate.to_bits(),
                e.noise_multiplier.to_bits(),
                e.mechanism,
            );
            *index_of.entry(key).or_insert_with(|| {
                distinct.push((e.sample_rate, e.noise_multiplier, e.mechanism));
                distinct.len() - 1
            })
        })
        .collect();
    let width = orders.len();
    let mut curves = vec![0.0; distinct.len() * width];
    curves
        .par_chunks_mut(width)
        .zip(distinct.par_iter())
        .try_for_each_init(RdpScratch::default, |scratch, (out, &(q, sigma, m))| {
            step_rdp_selected(m, q, sigma, orders, selected, scratch, out)
        })?;
    let mut total = vec![0.0; width];
    for (event, &slot) in events.iter().zip(&slots) {
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
        assert_eq!(
            one_by_one.epsilon(1e-5).unwrap(),
            at_once.epsilon(1e-5).unwrap()
        );
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
