//! A hard privacy budget: a target (ε, δ) that no step may push the run past.
//!
//! The trainer asks before every step whether it still fits; the answer comes from the
//! accountant's composed RDP plus that one step, never from a plan.

use serde::{Deserialize, Serialize};

use super::accountant::{PrivacySpent, RdpAccountant};
use super::conversion::{check_delta, check_target_epsilon};
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

/// The answer to "may this step be taken?".
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetCheck {
    /// True when the step keeps ε within the target.
    pub fits: bool,
    /// What the run would have spent after the step.
    pub after: PrivacySpent,
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

    /// Whether composing `event` next keeps the accountant within the budget.
    ///
    /// # Privacy
    /// `fits` is true only if the ε of the ledger plus `event`, computed by the accountant,
    /// is at most the target.
    pub fn check(
        &self,
        accountant: &mut RdpAccountant,
        event: PrivacyEvent,
    ) -> Result<BudgetCheck> {
        let after = accountant.epsilon_after(event, self.delta)?;
        Ok(BudgetCheck {
            fits: after.epsilon <= self.target_epsilon,
            after,
        })
    }

    /// Whether what the accountant has spent is within the budget.
    pub fn is_within(&self, accountant: &mut RdpAccountant) -> Result<bool> {
        Ok(accountant.epsilon(self.delta)?.epsilon <= self.target_epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_steps_exactly_up_to_the_last_that_fits() {
        let budget = PrivacyBudget::new(1.0, 1e-5).unwrap();
        let step = PrivacyEvent::new(0.01, 2.0, 1).unwrap();
        let mut accountant = RdpAccountant::default();
        let mut taken = 0;
        while budget.check(&mut accountant, step).unwrap().fits {
            accountant.compose(step).unwrap();
            taken += 1;
        }
        assert!(budget.is_within(&mut accountant).unwrap());
        // One more would overspend, and the accountant agrees from scratch.
        let mut over = RdpAccountant::default();
        over.compose(PrivacyEvent::new(0.01, 2.0, taken + 1).unwrap())
            .unwrap();
        assert!(over.epsilon(1e-5).unwrap().epsilon > 1.0);
        let mut exact = RdpAccountant::default();
        exact
            .compose(PrivacyEvent::new(0.01, 2.0, taken).unwrap())
            .unwrap();
        assert!(exact.epsilon(1e-5).unwrap().epsilon <= 1.0);
        assert!(taken > 100, "{taken}");
    }

    #[test]
    fn bad_budgets_are_refused() {
        assert!(PrivacyBudget::new(0.0, 1e-5).is_err());
        assert!(PrivacyBudget::new(f64::INFINITY, 1e-5).is_err());
        assert!(PrivacyBudget::new(1.0, 1.0).is_err());
    }
}
