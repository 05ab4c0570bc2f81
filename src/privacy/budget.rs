//! A hard privacy budget: a target (ε, δ) that no step may push the run past.
//!
//! [`PrivacyBudget::admit`] is the one budget check of dptrain: the trainer calls it with the
//! steps it plans to take, a federated server with the round it is about to run. The answer
//! comes from the accountant's ledger plus the planned steps, evaluated, never interpolated
//! from a plan.

use serde::{Deserialize, Serialize};

use super::accounting::Accountant;
use super::conversion::{check_delta, check_target_epsilon};
use super::event::DpEvent;
use super::ledger::PrivacyEvent;
use crate::error::Result;

/// A target (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyBudget {
    /// The most ε the run may spend.
    pub target_epsilon: f64,
    /// The δ at which ε is measured.
    pub delta: f64,
}

/// The answer to "may these steps be taken?".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Admission {
    /// How many of the planned steps, taken in order from now, keep ε within the budget.
    pub steps: usize,
    /// The ε after the first step that does not fit (None when all fit).
    pub refused_at_epsilon: Option<f64>,
}

impl PrivacyBudget {
    /// A validated budget: ε > 0 finite, δ ∈ (0, 1).
    pub fn new(target_epsilon: f64, delta: f64) -> Result<Self> {
        check_target_epsilon(target_epsilon)?;
        check_delta(delta)?;
        Ok(PrivacyBudget {
            target_epsilon,
            delta,
        })
    }

    /// How many of `planned` (one step each, in order) fit the budget after what
    /// `accountant` has composed. RDP checks only the first (microseconds a step); PLD and
    /// PRV check all at once and bisect, so a caller asks again only when its steps leave
    /// the plan ([`Accountant::steps_that_fit`]).
    ///
    /// # Privacy
    /// Every admitted prefix has ε ≤ `target_epsilon` at `delta` by this accountant,
    /// computed for exactly those steps.
    pub fn admit(
        &self,
        accountant: &mut Accountant,
        planned: &[PrivacyEvent],
    ) -> Result<Admission> {
        let (steps, after) = accountant.steps_that_fit(planned, self.target_epsilon, self.delta)?;
        Ok(Admission {
            steps,
            refused_at_epsilon: (steps < planned.len()).then_some(after),
        })
    }

    /// Whether `event` (a federated round, a block of steps) may run next: ε of the ledger
    /// composed with all of it stays within the budget. Events the accountant cannot
    /// account are errors naming them.
    ///
    /// # Privacy
    /// True only if the ε of the ledger plus the whole event, computed by the accountant,
    /// is at most the target.
    pub fn admits_event(&self, accountant: &mut Accountant, event: &DpEvent) -> Result<bool> {
        let blocks = event.blocks()?;
        let after = accountant.epsilon_after_planned(&blocks, self.delta)?;
        Ok(after.epsilon <= self.target_epsilon)
    }

    /// Whether what the accountant has spent is within the budget.
    pub fn is_within(&self, accountant: &mut Accountant) -> Result<bool> {
        Ok(accountant.epsilon(self.delta)?.epsilon <= self.target_epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::{AccountantKind, AccountantSettings};

    #[test]
    fn the_budget_admits_steps_exactly_up_to_the_last_that_fits() {
        let budget = PrivacyBudget::new(1.0, 1e-5).unwrap();
        let step = PrivacyEvent::new(0.01, 2.0, 1).unwrap();
        for kind in AccountantKind::ALL {
            let mut accountant = Accountant::new(AccountantSettings::new(kind)).unwrap();
            let mut taken = 0u64;
            loop {
                let planned = vec![step; 4000 - taken as usize];
                let admission = budget.admit(&mut accountant, &planned).unwrap();
                if admission.steps == 0 {
                    assert!(admission.refused_at_epsilon.unwrap() > 1.0);
                    break;
                }
                for _ in 0..admission.steps {
                    accountant.compose(step).unwrap();
                }
                taken += admission.steps as u64;
            }
            assert!(budget.is_within(&mut accountant).unwrap(), "{kind:?}");
            // One more would overspend, and a fresh accountant agrees.
            let mut over = Accountant::new(AccountantSettings::new(kind)).unwrap();
            over.compose(PrivacyEvent::new(0.01, 2.0, taken + 1).unwrap())
                .unwrap();
            assert!(over.epsilon(1e-5).unwrap().epsilon > 1.0, "{kind:?}");
            assert!(taken > 100 && taken < 4000, "{kind:?}: {taken}");
            // A round of the same steps as one event: admitted exactly when it fits.
            let mut fresh = Accountant::new(AccountantSettings::new(kind)).unwrap();
            let round = |n| DpEvent::poisson_gaussian(0.01, 2.0, n);
            assert!(budget.admits_event(&mut fresh, &round(taken)).unwrap());
            assert!(!budget.admits_event(&mut fresh, &round(taken + 1)).unwrap());
        }
    }

    #[test]
    fn bad_budgets_are_refused() {
        assert!(PrivacyBudget::new(0.0, 1e-5).is_err());
        assert!(PrivacyBudget::new(f64::INFINITY, 1e-5).is_err());
        assert!(PrivacyBudget::new(1.0, 1.0).is_err());
    }
}
