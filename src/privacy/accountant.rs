//! The RDP accountant: a ledger of steps plus their composed Rényi DP.
//!
//! Composition of RDP is additive per order (Mironov 2017, Prop. 1), so the accountant keeps
//! the running sum of every step's RDP curve; ε at any δ is then one pass over the orders.
//! The state is the ledger (saved with runs) and the orders; the composed curve is derived.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use super::conversion::{Conversion, epsilon_from_rdp};
use super::ledger::{Ledger, PrivacyEvent};
use super::rdp::{Orders, RdpScratch, poisson_gaussian_rdp_into};
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
#[derive(Debug, Clone)]
pub struct RdpAccountant {
    orders: Orders,
    conversion: Conversion,
    ledger: Ledger,
    /// Σ over the ledger of steps × RDP of the step, per order.
    rdp: Vec<f64>,
    /// The RDP curve of the last (q, σ) seen, so a run of equal steps costs O(orders) each.
    last_step: Option<(u64, u64, Vec<f64>)>,
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
        let rdp = vec![0.0; orders.len()];
        RdpAccountant {
            orders,
            conversion,
            ledger: Ledger::new(),
            rdp,
            last_step: None,
        }
    }

    /// An accountant that has spent what `ledger` records.
    pub fn from_ledger(ledger: &Ledger, orders: Orders, conversion: Conversion) -> Result<Self> {
        let rdp = ledger_rdp(ledger, &orders)?;
        Ok(RdpAccountant {
            orders,
            conversion,
            ledger: ledger.clone(),
            rdp,
            last_step: None,
        })
    }

    /// Records one block of steps.
    pub fn compose(&mut self, event: PrivacyEvent) -> Result<()> {
        let step_rdp = self.step_rdp(event.sample_rate, event.noise_multiplier)?;
        let count = event.steps as f64;
        for (total, &r) in self.rdp.iter_mut().zip(&step_rdp) {
            *total += count * r;
        }
        self.last_step = Some((
            event.sample_rate.to_bits(),
            event.noise_multiplier.to_bits(),
            step_rdp,
        ));
        self.ledger.push(event);
        Ok(())
    }

    /// Records every block of `ledger`, in order (in parallel for long ledgers).
    pub fn compose_ledger(&mut self, ledger: &Ledger) -> Result<()> {
        let rdp = ledger_rdp(ledger, &self.orders)?;
        for (total, r) in self.rdp.iter_mut().zip(rdp) {
            *total += r;
        }
        self.ledger.extend(ledger);
        Ok(())
    }

    /// ε at `delta` for everything composed so far.
    ///
    /// # Privacy
    /// An upper bound on the ε of the composed steps (RDP composition, Mironov 2017 Prop. 1;
    /// conversion as [`epsilon_from_rdp`]).
    pub fn epsilon(&self, delta: f64) -> Result<PrivacySpent> {
        self.spent(&self.rdp, delta, self.ledger.steps())
    }

    /// ε at `delta` if `event` were composed next; the accountant is not changed.
    pub fn epsilon_after(&mut self, event: PrivacyEvent, delta: f64) -> Result<PrivacySpent> {
        let step_rdp = self.step_rdp(event.sample_rate, event.noise_multiplier)?;
        let count = event.steps as f64;
        let rdp: Vec<f64> = self
            .rdp
            .iter()
            .zip(&step_rdp)
            .map(|(total, r)| total + count * r)
            .collect();
        let spent = self.spent(&rdp, delta, self.ledger.steps() + event.steps);
        self.last_step = Some((
            event.sample_rate.to_bits(),
            event.noise_multiplier.to_bits(),
            step_rdp,
        ));
        spent
    }

    /// The composed RDP, one value per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
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

    fn spent(&self, rdp: &[f64], delta: f64, steps: u64) -> Result<PrivacySpent> {
        let best = epsilon_from_rdp(self.orders.values(), rdp, delta, self.conversion)?;
        Ok(PrivacySpent {
            epsilon: best.epsilon,
            delta,
            order: best.order,
            steps,
        })
    }

    fn step_rdp(&mut self, sample_rate: f64, noise_multiplier: f64) -> Result<Vec<f64>> {
        if let Some((q, s, rdp)) = &self.last_step
            && *q == sample_rate.to_bits()
            && *s == noise_multiplier.to_bits()
        {
            return Ok(rdp.clone());
        }
        let mut out = vec![0.0; self.orders.len()];
        poisson_gaussian_rdp_into(
            sample_rate,
            noise_multiplier,
            &self.orders,
            &mut RdpScratch::default(),
            &mut out,
        )?;
        Ok(out)
    }
}

/// The composed RDP of a ledger, one value per order: Σ steps × RDP(q, σ).
///
/// Each distinct (q, σ) is evaluated once; distinct steps are evaluated in parallel, and
/// the sum is taken in ledger order, so the result does not depend on the thread count.
pub fn ledger_rdp(ledger: &Ledger, orders: &Orders) -> Result<Vec<f64>> {
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
            poisson_gaussian_rdp_into(q, sigma, orders, scratch, out)
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
        assert_eq!(one_by_one.rdp(), at_once.rdp());
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
