//! The accountant a run chooses: RDP, PLD or PRV, over the same ledger.
//!
//! [`Accountant`] is what the trainer, the planner, calibration and the commands hold. It
//! records steps into a [`Ledger`] (unchanged whichever accountant is chosen) and answers
//! ε at δ by the chosen method:
//! - **rdp** ([`RdpAccountant`]): Rényi DP at dp_accounting's orders, composed incrementally
//!   (microseconds a step); the only one for secure-mode (discrete Gaussian) steps;
//! - **pld** ([`super::pld`]): the pessimistic connect-the-dots PLD at interval Δ, an upper
//!   bound at its discretisation, 10-20% below RDP at DP-SGD settings;
//! - **prv** ([`super::prv`]): the PRV accountant's `eps_upper` (its estimate and lower
//!   bound are reported beside it).
//!
//! PLD and PRV recompute from the ledger when asked (milliseconds for a constant σ), so a
//! budget check looks ahead: [`Accountant::steps_that_fit`] finds how many of the planned
//! steps fit at once, by bisection, and the trainer takes them without asking again.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::accountant::{PrivacySpent, RdpAccountant};
use super::conversion::check_delta;
use super::event::DpEvent;
use super::ledger::{Ledger, Mechanism, PrivacyEvent};
use super::pld::{self, DEFAULT_DISCRETIZATION_INTERVAL, PldSpent};
use super::prv::{self, DEFAULT_DELTA_ERROR, DEFAULT_EPS_ERROR, PrvSpent};
use crate::error::{Error, Result};

/// Which accountant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountantKind {
    /// Rényi DP (Mironov 2017; Mironov, Talwar & Zhang 2019).
    Rdp,
    /// Privacy loss distributions (Doroshenko et al. 2022's connect-the-dots).
    #[default]
    Pld,
    /// Privacy random variables (Gopi, Lee & Wutschitz 2021), `eps_upper`.
    Prv,
}

impl AccountantKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [AccountantKind; 3] = [
        AccountantKind::Rdp,
        AccountantKind::Pld,
        AccountantKind::Prv,
    ];

    /// The name in configs, flags and JSON.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
            AccountantKind::Prv => "prv",
        }
    }
}

impl FromStr for AccountantKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            "prv" => Ok(AccountantKind::Prv),
            other => Err(Error::invalid("accountant", other, "one of rdp, pld, prv")),
        }
    }
}

/// An accountant and its numerical settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccountantSettings {
    /// Which accountant.
    pub kind: AccountantKind,
    /// PLD: the discretisation interval Δ of the privacy loss.
    pub discretization_interval: f64,
    /// PRV: the ε error bound.
    pub eps_error: f64,
    /// PRV: the δ error bound.
    pub delta_error: f64,
}

impl AccountantSettings {
    /// `kind` with the customary settings (Δ = 1e-4; PRV errors 0.01 and 1e-9).
    pub fn new(kind: AccountantKind) -> Self {
        AccountantSettings {
            kind,
            discretization_interval: DEFAULT_DISCRETIZATION_INTERVAL,
            eps_error: DEFAULT_EPS_ERROR,
            delta_error: DEFAULT_DELTA_ERROR,
        }
    }

    /// The RDP accountant (the only one for secure-mode steps).
    pub fn rdp() -> Self {
        AccountantSettings::new(AccountantKind::Rdp)
    }

    /// With another PLD interval.
    pub fn with_discretization_interval(mut self, interval: f64) -> Self {
        self.discretization_interval = interval;
        self
    }

    /// Checks the numerical settings.
    pub fn validate(&self) -> Result<()> {
        pld::check_interval(self.discretization_interval)?;
        prv::check_errors(self.eps_error, self.delta_error)
    }

    /// A one-line description for reports and tables.
    pub fn describe(&self) -> String {
        match self.kind {
            AccountantKind::Rdp => {
                "RDP (dp_accounting orders, Balle et al. 2020 conversion)".into()
            }
            AccountantKind::Pld => format!(
                "PLD (pessimistic connect-the-dots, interval {:e}, add-or-remove)",
                self.discretization_interval
            ),
            AccountantKind::Prv => format!(
                "PRV (eps_upper, eps_error {}, delta_error {:e})",
                self.eps_error, self.delta_error
            ),
        }
    }
}

impl Default for AccountantSettings {
    fn default() -> Self {
        AccountantSettings::new(AccountantKind::default())
    }
}

/// ε of a ledger under each accountant, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpsilonUnderAll {
    /// RDP's ε.
    pub rdp: f64,
    /// PLD's ε and its interval (None for secure-mode ledgers).
    pub pld: Option<PldSpent>,
    /// PRV's bounds (None for secure-mode ledgers).
    pub prv: Option<PrvSpent>,
}

/// ε at δ of `ledger` under all three accountants (PLD and PRV only for Gaussian steps).
pub fn epsilon_under_all(ledger: &Ledger, delta: f64) -> Result<EpsilonUnderAll> {
    let rdp = RdpAccountant::from_ledger(
        ledger,
        super::rdp::Orders::dp_accounting_default(),
        super::conversion::Conversion::Improved,
    )?
    .epsilon(delta)?
    .epsilon;
    let gaussian = ledger
        .events()
        .iter()
        .all(|e| e.mechanism == Mechanism::Gaussian);
    if !gaussian {
        return Ok(EpsilonUnderAll {
            rdp,
            pld: None,
            prv: None,
        });
    }
    let pld = pld::pld_epsilon(ledger, delta, DEFAULT_DISCRETIZATION_INTERVAL)?;
    // The PRV's mesh shrinks with the steps; a ledger too long for it gets no PRV column.
    let prv = prv::prv_epsilon(ledger, delta, DEFAULT_EPS_ERROR, DEFAULT_DELTA_ERROR).ok();
    Ok(EpsilonUnderAll {
        rdp,
        pld: Some(pld),
        prv,
    })
}

/// An accountant over a ledger.
#[derive(Debug, Clone)]
pub enum Accountant {
    /// Incremental RDP.
    Rdp(RdpAccountant),
    /// PLD or PRV, recomputed from the ledger when asked (and cached until it changes).
    Grid {
        /// Which and how.
        settings: AccountantSettings,
        /// Every step composed.
        ledger: Ledger,
        /// The last answer: (δ bits, what was spent).
        cache: Option<(u64, PrivacySpent)>,
    },
}

impl Accountant {
    /// An accountant with nothing spent.
    pub fn new(settings: AccountantSettings) -> Result<Self> {
        settings.validate()?;
        Ok(match settings.kind {
            AccountantKind::Rdp => Accountant::Rdp(RdpAccountant::default()),
            _ => Accountant::Grid {
                settings,
                ledger: Ledger::new(),
                cache: None,
            },
        })
    }

    /// An accountant that has spent what `ledger` records.
    pub fn from_ledger(settings: AccountantSettings, ledger: &Ledger) -> Result<Self> {
        let mut accountant = Accountant::new(settings)?;
        accountant.compose_ledger(ledger)?;
        Ok(accountant)
    }

    /// Which accountant.
    pub fn kind(&self) -> AccountantKind {
        match self {
            Accountant::Rdp(_) => AccountantKind::Rdp,
            Accountant::Grid { settings, .. } => settings.kind,
        }
    }

    /// Records one block of steps. PLD and PRV refuse secure-mode steps.
    pub fn compose(&mut self, event: PrivacyEvent) -> Result<()> {
        match self {
            Accountant::Rdp(rdp) => rdp.compose(event),
            Accountant::Grid {
                settings,
                ledger,
                cache,
            } => {
                pld::refuse_discrete(settings.kind.name(), &event)?;
                ledger.push(event);
                *cache = None;
                Ok(())
            }
        }
    }

    /// Records an event tree ([`DpEvent::blocks`]); an event this accountant cannot account
    /// is an error naming the event and the accountant, and nothing is recorded.
    pub fn compose_event(&mut self, event: &DpEvent) -> Result<()> {
        let blocks = event.blocks()?;
        if let Accountant::Grid { settings, .. } = self {
            for block in &blocks {
                pld::refuse_discrete(settings.kind.name(), block)?;
            }
        }
        for block in blocks {
            self.compose(block)?;
        }
        Ok(())
    }

    /// Records every block of `ledger`, in order.
    pub fn compose_ledger(&mut self, other: &Ledger) -> Result<()> {
        match self {
            Accountant::Rdp(rdp) => rdp.compose_ledger(other),
            Accountant::Grid { .. } => {
                for &event in other.events() {
                    self.compose(event)?;
                }
                Ok(())
            }
        }
    }

    /// Every step composed so far.
    pub fn ledger(&self) -> &Ledger {
        match self {
            Accountant::Rdp(rdp) => rdp.ledger(),
            Accountant::Grid { ledger, .. } => ledger,
        }
    }

    /// ε at δ for everything composed so far (`order` is 0 for PLD and PRV: they have none).
    ///
    /// # Privacy
    /// An upper bound on the ledger's ε: RDP as [`RdpAccountant::epsilon`]; PLD at its
    /// interval ([`pld::ledger_pld`]); PRV's `eps_upper` ([`prv::ledger_prv`]).
    pub fn epsilon(&mut self, delta: f64) -> Result<PrivacySpent> {
        match self {
            Accountant::Rdp(rdp) => rdp.epsilon(delta),
            Accountant::Grid {
                settings,
                ledger,
                cache,
            } => {
                if let Some((bits, spent)) = cache
                    && *bits == delta.to_bits()
                {
                    return Ok(*spent);
                }
                let spent = grid_epsilon(settings, ledger, delta)?;
                *cache = Some((delta.to_bits(), spent));
                Ok(spent)
            }
        }
    }

    /// ε at δ if the first `count` of `planned` were composed next (ledger unchanged).
    pub fn epsilon_after_planned(
        &mut self,
        planned: &[PrivacyEvent],
        delta: f64,
    ) -> Result<PrivacySpent> {
        match self {
            Accountant::Rdp(rdp) => {
                let mut copy = rdp.clone();
                for &event in planned {
                    copy.compose(event)?;
                }
                copy.epsilon(delta)
            }
            Accountant::Grid {
                settings, ledger, ..
            } => {
                let mut extended = ledger.clone();
                for &event in planned {
                    pld::refuse_discrete(settings.kind.name(), &event)?;
                    extended.push(event);
                }
                grid_epsilon(settings, &extended, delta)
            }
        }
    }

    /// How many of the `planned` steps, taken in order from now, keep ε at δ within
    /// `target_epsilon`; with the ε after the first step that does not fit (NaN when all
    /// fit).
    ///
    /// RDP checks only the first planned step (one incremental check a step, as before);
    /// PLD and PRV check all at once and bisect when they do not all fit, so a run asks
    /// again only when its steps leave the plan.
    ///
    /// # Privacy
    /// Every returned prefix has ε ≤ `target_epsilon` by this accountant, evaluated (not
    /// interpolated): the bisection keeps the invariant "the lower end fits".
    pub fn steps_that_fit(
        &mut self,
        planned: &[PrivacyEvent],
        target_epsilon: f64,
        delta: f64,
    ) -> Result<(usize, f64)> {
        check_delta(delta)?;
        let Some(&first) = planned.first() else {
            return Ok((0, f64::NAN));
        };
        if let Accountant::Rdp(rdp) = self {
            let after = rdp.epsilon_after(first, delta)?;
            return Ok(match after.epsilon <= target_epsilon {
                true => (1, f64::NAN),
                false => (0, after.epsilon),
            });
        }
        let all = self.epsilon_after_planned(planned, delta)?.epsilon;
        if all <= target_epsilon {
            return Ok((planned.len(), f64::NAN));
        }
        // fits(lo) and !fits(hi), with the ε at hi.
        let (mut lo, mut hi, mut at_hi) = (0usize, planned.len(), all);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let epsilon = self.epsilon_after_planned(&planned[..mid], delta)?.epsilon;
            if epsilon <= target_epsilon {
                lo = mid;
            } else {
                (hi, at_hi) = (mid, epsilon);
            }
        }
        Ok((lo, at_hi))
    }
}

fn grid_epsilon(
    settings: &AccountantSettings,
    ledger: &Ledger,
    delta: f64,
) -> Result<PrivacySpent> {
    let epsilon = match settings.kind {
        AccountantKind::Pld => {
            pld::pld_epsilon(ledger, delta, settings.discretization_interval)?.epsilon
        }
        AccountantKind::Prv => {
            prv::prv_epsilon(ledger, delta, settings.eps_error, settings.delta_error)?.eps_upper
        }
        AccountantKind::Rdp => unreachable!("RDP is incremental"),
    };
    Ok(PrivacySpent {
        epsilon,
        delta,
        order: 0.0,
        steps: ledger.steps(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_that_fit_agree_with_stepping_one_at_a_time() {
        let step = PrivacyEvent::new(0.01, 1.5, 1).unwrap();
        let planned = vec![step; 3000];
        for kind in AccountantKind::ALL {
            let mut accountant = Accountant::new(AccountantSettings::new(kind)).unwrap();
            let (fit, after) = accountant.steps_that_fit(&planned, 1.0, 1e-5).unwrap();
            let fit = match kind {
                // RDP answers one step at a time: walk.
                AccountantKind::Rdp => {
                    let mut taken = 0;
                    while accountant
                        .steps_that_fit(&planned[taken..], 1.0, 1e-5)
                        .unwrap()
                        .0
                        == 1
                    {
                        accountant.compose(step).unwrap();
                        taken += 1;
                    }
                    taken
                }
                _ => {
                    assert!(after > 1.0);
                    fit
                }
            };
            let mut exact = Accountant::new(AccountantSettings::new(kind)).unwrap();
            exact
                .compose(PrivacyEvent::new(0.01, 1.5, fit as u64).unwrap())
                .unwrap();
            assert!(exact.epsilon(1e-5).unwrap().epsilon <= 1.0, "{kind:?}");
            exact.compose(step).unwrap();
            assert!(exact.epsilon(1e-5).unwrap().epsilon > 1.0, "{kind:?}");
            assert!(fit > 300 && fit < 3000, "{kind:?}: {fit}");
        }
    }

    #[test]
    fn pld_and_prv_refuse_discrete_gaussian_steps() {
        let secure = PrivacyEvent::new(0.01, 1.0, 10)
            .unwrap()
            .with_mechanism(Mechanism::DiscreteGaussian);
        for kind in [AccountantKind::Pld, AccountantKind::Prv] {
            let mut accountant = Accountant::new(AccountantSettings::new(kind)).unwrap();
            let err = accountant.compose(secure).unwrap_err().to_string();
            assert!(err.contains("rdp for secure-mode"), "{err}");
        }
        let mut rdp = Accountant::new(AccountantSettings::rdp()).unwrap();
        rdp.compose(secure).unwrap();
    }

    #[test]
    fn event_trees_are_accounted_by_every_accountant_or_refused_by_name() {
        let tree = DpEvent::Composed {
            events: vec![
                DpEvent::poisson_gaussian(0.01, 1.2, 300),
                DpEvent::SelfComposed {
                    event: Box::new(DpEvent::Composed {
                        events: vec![DpEvent::poisson_gaussian(0.02, 2.0, 1)],
                    }),
                    count: 50,
                },
            ],
        };
        let mut flat = Ledger::new();
        flat.push(PrivacyEvent::new(0.01, 1.2, 300).unwrap());
        flat.push(PrivacyEvent::new(0.02, 2.0, 50).unwrap());
        for kind in AccountantKind::ALL {
            let mut from_tree = Accountant::new(AccountantSettings::new(kind)).unwrap();
            from_tree.compose_event(&tree).unwrap();
            let mut from_blocks =
                Accountant::from_ledger(AccountantSettings::new(kind), &flat).unwrap();
            assert_eq!(
                from_tree.epsilon(1e-5).unwrap(),
                from_blocks.epsilon(1e-5).unwrap(),
                "{kind:?}"
            );
        }
        let discrete = DpEvent::SelfComposed {
            event: Box::new(DpEvent::PoissonSampled {
                sample_rate: 0.01,
                event: Box::new(DpEvent::DiscreteGaussian {
                    noise_multiplier: 1.0,
                }),
            }),
            count: 10,
        };
        for kind in [AccountantKind::Pld, AccountantKind::Prv] {
            let mut accountant = Accountant::new(AccountantSettings::new(kind)).unwrap();
            let err = accountant.compose_event(&discrete).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "cannot account a DiscreteGaussian event with the {} accountant",
                    kind.name()
                )),
                "{err}"
            );
            assert!(accountant.ledger().is_empty());
        }
        let mut rdp = Accountant::new(AccountantSettings::rdp()).unwrap();
        rdp.compose_event(&discrete).unwrap();
    }

    #[test]
    fn a_federated_rounds_event_matches_dp_accounting() {
        // dp-accounting 0.6.0's RDP accountant on SelfComposedDpEvent(PoissonSampledDpEvent(
        // 120/3383, GaussianDpEvent(1.2)), 100) at δ = 1e-5: the value issue 14 quotes
        // (TensorFlow Federated's EMNIST tutorial setting).
        let rounds = DpEvent::SelfComposed {
            event: Box::new(DpEvent::PoissonSampled {
                sample_rate: 120.0 / 3383.0,
                event: Box::new(DpEvent::Gaussian {
                    noise_multiplier: 1.2,
                }),
            }),
            count: 100,
        };
        let mut rdp = Accountant::new(AccountantSettings::rdp()).unwrap();
        rdp.compose_event(&rounds).unwrap();
        let epsilon = rdp.epsilon(1e-5).unwrap().epsilon;
        assert!((epsilon - 1.9861145998784593).abs() < 1e-9, "{epsilon}");
        // The same rounds without amplification (Flower 1.42's only mode):
        // SelfComposed(Gaussian(1.2), 100) is 72.97959602875132 by dp-accounting 0.6.0
        // (shared/docs/federated.md §6.4).
        let unamplified = DpEvent::NoAmplification {
            sampling: "120 of 3383 clients, fixed".into(),
            event: Box::new(rounds),
        };
        let mut rdp = Accountant::new(AccountantSettings::rdp()).unwrap();
        rdp.compose_event(&unamplified).unwrap();
        let epsilon = rdp.epsilon(1e-5).unwrap().epsilon;
        assert!((epsilon - 72.97959602875132).abs() < 1e-9, "{epsilon}");
    }

    #[test]
    fn steps_without_amplification_cost_what_the_unsampled_gaussian_costs() {
        let unamplified = DpEvent::NoAmplification {
            sampling: "a fixed 10 of 100 clients".into(),
            event: Box::new(DpEvent::poisson_gaussian(0.1, 5.0, 20)),
        };
        for kind in AccountantKind::ALL {
            let settings = AccountantSettings::new(kind);
            let mut accountant = Accountant::new(settings).unwrap();
            accountant.compose_event(&unamplified).unwrap();
            let without = accountant.epsilon(1e-5).unwrap().epsilon;
            let mut full = Accountant::new(settings).unwrap();
            full.compose(PrivacyEvent::new(1.0, 5.0, 20).unwrap())
                .unwrap();
            assert_eq!(without, full.epsilon(1e-5).unwrap().epsilon, "{kind:?}");
            let mut amplified = Accountant::new(settings).unwrap();
            amplified
                .compose(PrivacyEvent::new(0.1, 5.0, 20).unwrap())
                .unwrap();
            assert!(
                amplified.epsilon(1e-5).unwrap().epsilon < 0.5 * without,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn unknown_accountants_and_bad_intervals_are_refused() {
        let err = "moments".parse::<AccountantKind>().unwrap_err().to_string();
        assert!(
            err.contains("moments") && err.contains("rdp, pld, prv"),
            "{err}"
        );
        for bad in [0.0, -1e-4, f64::NAN, 2.0] {
            let settings = AccountantSettings::default().with_discretization_interval(bad);
            assert!(Accountant::new(settings).is_err());
        }
    }
}
