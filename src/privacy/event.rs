//! Privacy events as a tree, in the shape of dp_accounting's `DpEvent` (Google's
//! `dp_accounting/dp_event.py`): what a mechanism did, stated so that any accountant can
//! read it.
//!
//! The leaves are noise mechanisms ([`DpEvent::Gaussian`], [`DpEvent::DiscreteGaussian`]);
//! the inner nodes say how they were applied: on a Poisson sample
//! ([`DpEvent::PoissonSampled`]), repeated ([`DpEvent::SelfComposed`]), one after another
//! ([`DpEvent::Composed`]), or on a sample that was *not* drawn by Poisson sampling
//! ([`DpEvent::NoAmplification`]: accounted as if every example took part).
//!
//! All three accountants compose events commutatively, so every tree they can account has a
//! normal form: a list of blocks, each `steps` repetitions of one (possibly
//! Poisson-subsampled) Gaussian or discrete Gaussian query ([`DpEvent::blocks`]). That list
//! is what the [`Ledger`] keeps and what ledger.csv stores; [`Ledger::to_event`] gives the
//! tree back. A tree without a normal form (sampling inside sampling, a subsampled
//! repetition) is refused by name: no accountant here has a proof for it.
//!
//! Skellam and the distributed discrete Gaussian (secure aggregation) will be leaves of
//! their own; an accountant that cannot account a leaf says so by its name.

use serde::{Deserialize, Serialize};

use super::ledger::{Ledger, Mechanism, PrivacyEvent};
use crate::error::{Error, Result};

/// A privacy event (dp_accounting's `DpEvent` vocabulary).
///
/// Noise multipliers are in units of the query's L2 sensitivity (the noise standard
/// deviation divided by it), as everywhere in dptrain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DpEvent {
    /// The Gaussian mechanism (continuous noise): `GaussianDpEvent`.
    Gaussian {
        /// σ: noise standard deviation over the L2 sensitivity.
        noise_multiplier: f64,
    },
    /// The discrete Gaussian mechanism on a grid (Canonne, Kamath & Steinke 2020), the
    /// noise of secure mode: `DiscreteGaussianDpEvent` (with the sensitivity folded into σ).
    DiscreteGaussian {
        /// σ: noise standard deviation over the L2 sensitivity, in grid units.
        noise_multiplier: f64,
    },
    /// `event` run on a Poisson sample: each record included independently with
    /// probability `sample_rate` (`PoissonSampledDpEvent`).
    PoissonSampled {
        /// q ∈ (0, 1].
        sample_rate: f64,
        /// What ran on the sample.
        event: Box<DpEvent>,
    },
    /// `event` repeated `count` times (`SelfComposedDpEvent`).
    SelfComposed {
        /// What was repeated.
        event: Box<DpEvent>,
        /// How many times, at least 1.
        count: u64,
    },
    /// The events in order (`ComposedDpEvent`).
    Composed {
        /// The parts.
        events: Vec<DpEvent>,
    },
    /// `event` ran on a sample drawn by a scheme other than Poisson sampling (a fixed
    /// number of clients, whoever was online, shuffling): no accountant here may claim
    /// amplification for it, so every sampling inside is accounted at rate 1. The nominal
    /// rate is kept for the report.
    NoAmplification {
        /// How the sample was drawn, in words (for the report).
        sampling: String,
        /// What ran on it (usually a `PoissonSampled` stating the nominal rate).
        event: Box<DpEvent>,
    },
}

impl DpEvent {
    /// The event's kind as dp_accounting names it, for errors and reports.
    pub fn name(&self) -> &'static str {
        match self {
            DpEvent::Gaussian { .. } => "Gaussian",
            DpEvent::DiscreteGaussian { .. } => "DiscreteGaussian",
            DpEvent::PoissonSampled { .. } => "PoissonSampled",
            DpEvent::SelfComposed { .. } => "SelfComposed",
            DpEvent::Composed { .. } => "Composed",
            DpEvent::NoAmplification { .. } => "NoAmplification",
        }
    }

    /// `steps` Poisson-subsampled Gaussian steps: the DP-SGD step of Abadi et al. 2016.
    pub fn poisson_gaussian(sample_rate: f64, noise_multiplier: f64, steps: u64) -> DpEvent {
        DpEvent::SelfComposed {
            event: Box::new(DpEvent::PoissonSampled {
                sample_rate,
                event: Box::new(DpEvent::Gaussian { noise_multiplier }),
            }),
            count: steps,
        }
    }

    /// The normal form: blocks of repeated single queries, in order, that every accountant
    /// composes to the same privacy loss as the tree.
    ///
    /// # Privacy
    /// Exact rewrites only: composition is commutative for RDP, PLD and PRV alike, so
    /// `SelfComposed(Composed(a, b), n)` becomes `n` of `a` and `n` of `b`; Gaussians
    /// composed on the same Poisson sample are one Gaussian with σ⁻² = Σ σᵢ⁻² (the
    /// concatenated query; Andrew et al. 2021, Thm. 1, for adaptive clipping's count);
    /// `NoAmplification` sets every sample rate inside it to 1 and keeps the nominal one
    /// beside it. Anything else (a sample of a sample, a subsampled repetition, mixed
    /// noise on one sample) is an error naming the event.
    pub fn blocks(&self) -> Result<Vec<PrivacyEvent>> {
        let mut out = Vec::new();
        self.collect_blocks(1, &mut out)?;
        Ok(out)
    }

    fn collect_blocks(&self, repeat: u64, out: &mut Vec<PrivacyEvent>) -> Result<()> {
        match self {
            DpEvent::Gaussian { .. } | DpEvent::DiscreteGaussian { .. } => {
                out.push(single_query(1.0, std::slice::from_ref(self))?.repeated(repeat)?);
            }
            DpEvent::PoissonSampled { sample_rate, event } => {
                let queries: &[DpEvent] = match event.as_ref() {
                    DpEvent::Composed { events } => events,
                    leaf => std::slice::from_ref(leaf),
                };
                out.push(single_query(*sample_rate, queries)?.repeated(repeat)?);
            }
            DpEvent::SelfComposed { event, count } => {
                if *count == 0 {
                    return Err(Error::invalid(
                        "SelfComposed.count",
                        0,
                        "a whole number at least 1",
                    ));
                }
                let repeat = repeat.checked_mul(*count).ok_or_else(|| {
                    Error::invalid(
                        "SelfComposed.count",
                        count,
                        "a total number of repetitions that fits in 64 bits",
                    )
                })?;
                event.collect_blocks(repeat, out)?;
            }
            DpEvent::Composed { events } => {
                for event in events {
                    event.collect_blocks(repeat, out)?;
                }
            }
            DpEvent::NoAmplification { event, .. } => {
                let mut inner = Vec::new();
                event.collect_blocks(repeat, &mut inner)?;
                out.extend(inner.into_iter().map(PrivacyEvent::without_amplification));
            }
        }
        Ok(())
    }
}

/// One query (a leaf, or Gaussians composed on one sample) at sample rate `sample_rate`.
fn single_query(sample_rate: f64, queries: &[DpEvent]) -> Result<PrivacyEvent> {
    let mut mechanism = None;
    let mut sigmas = Vec::with_capacity(queries.len());
    for query in queries {
        let (kind, noise_multiplier) = match query {
            DpEvent::Gaussian { noise_multiplier } => (Mechanism::Gaussian, *noise_multiplier),
            DpEvent::DiscreteGaussian { noise_multiplier } => {
                (Mechanism::DiscreteGaussian, *noise_multiplier)
            }
            other => {
                return Err(Error::Unaccountable {
                    event: format!("a {} event inside PoissonSampled", other.name()),
                    reason: "the accountants have a proof for a Poisson-subsampled Gaussian \
                             or discrete Gaussian (or several Gaussians of one kind on the same \
                             sample) only; put the sampling inside, e.g. \
                             SelfComposed(PoissonSampled(Gaussian), n)"
                        .into(),
                });
            }
        };
        if mechanism.is_some_and(|m| m != kind) {
            return Err(Error::Unaccountable {
                event: "Gaussian and DiscreteGaussian composed on one Poisson sample".into(),
                reason: "their combination has no proven bound here; record them as separate \
                         steps"
                    .into(),
            });
        }
        mechanism = Some(kind);
        super::rdp::check_step(sample_rate, noise_multiplier)?;
        sigmas.push(noise_multiplier);
    }
    let Some(mechanism) = mechanism else {
        return Err(Error::Unaccountable {
            event: "an empty Composed event inside PoissonSampled".into(),
            reason: "nothing was released on the sample; leave the event out".into(),
        });
    };
    // σ⁻² = Σ σᵢ⁻²: the queries together are one Gaussian query of the concatenation. One
    // query keeps its σ bit for bit ((σ⁻²)^(-1/2) can be off in the last bit, and a ledger
    // read from dp_accounting's events must account as the same steps given as numbers).
    let total = match sigmas.as_slice() {
        [one] => *one,
        many => many.iter().map(|s| s.powi(-2)).sum::<f64>().powf(-0.5),
    };
    let event = PrivacyEvent::new(sample_rate, total, 1)?.with_mechanism(mechanism);
    match (queries, mechanism) {
        // Adaptive clipping's shape: the gradient sum and the count, in that order.
        ([_, DpEvent::Gaussian { noise_multiplier }], Mechanism::Gaussian) => {
            event.with_count_query(*noise_multiplier)
        }
        _ => Ok(event),
    }
}

impl Ledger {
    /// Appends the normal form of `event` ([`DpEvent::blocks`]).
    pub fn push_event(&mut self, event: &DpEvent) -> Result<()> {
        for block in event.blocks()? {
            self.push(block);
        }
        Ok(())
    }

    /// The ledger built from `event`.
    pub fn from_event(event: &DpEvent) -> Result<Ledger> {
        let mut ledger = Ledger::new();
        ledger.push_event(event)?;
        Ok(ledger)
    }

    /// The ledger as one event: the composition of its blocks, in order.
    pub fn to_event(&self) -> DpEvent {
        DpEvent::Composed {
            events: self.events().iter().map(PrivacyEvent::to_event).collect(),
        }
    }
}

impl PrivacyEvent {
    /// The block as an event tree: `SelfComposed(PoissonSampled(q, query), steps)`, the
    /// query a Gaussian, a discrete Gaussian, or the gradient and count Gaussians of
    /// adaptive clipping; wrapped in `NoAmplification` when the sampling was not Poisson.
    pub fn to_event(&self) -> DpEvent {
        let leaf = |noise_multiplier| match self.mechanism {
            Mechanism::Gaussian => DpEvent::Gaussian { noise_multiplier },
            Mechanism::DiscreteGaussian => DpEvent::DiscreteGaussian { noise_multiplier },
        };
        let query = match self.count_noise_multiplier {
            Some(count) => DpEvent::Composed {
                events: vec![
                    leaf(self.gradient_noise_multiplier()),
                    DpEvent::Gaussian {
                        noise_multiplier: count,
                    },
                ],
            },
            None => leaf(self.noise_multiplier),
        };
        let (rate, wrap) = match self.nominal_sample_rate {
            Some(nominal) => (nominal, true),
            None => (self.sample_rate, false),
        };
        let sampled = match rate == 1.0 && !wrap {
            true => query,
            false => DpEvent::PoissonSampled {
                sample_rate: rate,
                event: Box::new(query),
            },
        };
        let repeated = DpEvent::SelfComposed {
            event: Box::new(sampled),
            count: self.steps,
        };
        match wrap {
            true => DpEvent::NoAmplification {
                sampling: "not Poisson".into(),
                event: Box::new(repeated),
            },
            false => repeated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(noise_multiplier: f64) -> Box<DpEvent> {
        Box::new(DpEvent::Gaussian { noise_multiplier })
    }

    #[test]
    fn dp_sgd_steps_become_one_block() {
        let blocks = DpEvent::poisson_gaussian(0.01, 1.1, 500).blocks().unwrap();
        assert_eq!(blocks, vec![PrivacyEvent::new(0.01, 1.1, 500).unwrap()]);
    }

    #[test]
    fn repetitions_multiply_through_composition() {
        let step = DpEvent::Composed {
            events: vec![
                DpEvent::poisson_gaussian(0.1, 2.0, 3),
                DpEvent::Gaussian {
                    noise_multiplier: 5.0,
                },
            ],
        };
        let blocks = DpEvent::SelfComposed {
            event: Box::new(step),
            count: 4,
        }
        .blocks()
        .unwrap();
        assert_eq!(
            blocks,
            vec![
                PrivacyEvent::new(0.1, 2.0, 12).unwrap(),
                PrivacyEvent::new(1.0, 5.0, 4).unwrap(),
            ]
        );
    }

    #[test]
    fn gaussians_on_one_sample_are_one_gaussian_with_the_count_recorded() {
        let event = DpEvent::PoissonSampled {
            sample_rate: 0.02,
            event: Box::new(DpEvent::Composed {
                events: vec![*gaussian(1.2), *gaussian(8.0)],
            }),
        };
        let block = event.blocks().unwrap()[0];
        let total = (1.2f64.powi(-2) + 8.0f64.powi(-2)).powf(-0.5);
        assert!((block.noise_multiplier - total).abs() < 1e-15);
        assert_eq!(block.count_noise_multiplier, Some(8.0));
        assert!((block.gradient_noise_multiplier() - 1.2).abs() < 1e-12);
    }

    #[test]
    fn no_amplification_accounts_at_rate_one_and_keeps_the_nominal_rate() {
        let event = DpEvent::NoAmplification {
            sampling: "10 clients of 100, without replacement".into(),
            event: Box::new(DpEvent::poisson_gaussian(0.1, 1.0, 7)),
        };
        let block = event.blocks().unwrap()[0];
        assert_eq!(block.sample_rate, 1.0);
        assert_eq!(block.nominal_sample_rate, Some(0.1));
        assert_eq!(block.steps, 7);
        // And back: the tree states the nominal rate under the wrapper.
        let back = Ledger::from_event(&event).unwrap().to_event();
        assert_eq!(Ledger::from_event(&back).unwrap().events(), &[block]);
    }

    #[test]
    fn trees_without_a_normal_form_are_refused_by_name() {
        let nested = DpEvent::PoissonSampled {
            sample_rate: 0.1,
            event: Box::new(DpEvent::PoissonSampled {
                sample_rate: 0.5,
                event: gaussian(1.0),
            }),
        };
        let repeated_inside = DpEvent::PoissonSampled {
            sample_rate: 0.1,
            event: Box::new(DpEvent::SelfComposed {
                event: gaussian(1.0),
                count: 3,
            }),
        };
        let mixed = DpEvent::PoissonSampled {
            sample_rate: 0.1,
            event: Box::new(DpEvent::Composed {
                events: vec![
                    *gaussian(1.0),
                    DpEvent::DiscreteGaussian {
                        noise_multiplier: 1.0,
                    },
                ],
            }),
        };
        for (event, name) in [
            (nested, "a PoissonSampled event inside PoissonSampled"),
            (
                repeated_inside,
                "a SelfComposed event inside PoissonSampled",
            ),
            (
                mixed,
                "Gaussian and DiscreteGaussian composed on one Poisson sample",
            ),
        ] {
            let err = event.blocks().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let zero = DpEvent::SelfComposed {
            event: gaussian(1.0),
            count: 0,
        };
        assert!(zero.blocks().is_err());
    }

    #[test]
    fn ledgers_round_trip_through_the_tree() {
        let mut ledger = Ledger::new();
        ledger.push(PrivacyEvent::new(0.004, 0.9, 100).unwrap());
        ledger.push(
            PrivacyEvent::new(0.004, 0.8, 10)
                .unwrap()
                .with_count_query(9.0)
                .unwrap(),
        );
        ledger.push(
            PrivacyEvent::new(0.004, 2.0, 5)
                .unwrap()
                .with_mechanism(Mechanism::DiscreteGaussian),
        );
        ledger.push(PrivacyEvent::new(1.0, 3.0, 2).unwrap());
        let back = Ledger::from_event(&ledger.to_event()).unwrap();
        assert_eq!(back.events().len(), ledger.events().len());
        for (a, b) in back.events().iter().zip(ledger.events()) {
            assert_eq!(a.sample_rate, b.sample_rate);
            assert_eq!(a.steps, b.steps);
            assert_eq!(a.mechanism, b.mechanism);
            assert!((a.noise_multiplier - b.noise_multiplier).abs() < 1e-12 * b.noise_multiplier);
        }
        // And as JSON, the form other tools read.
        let json = serde_json::to_string(&ledger.to_event()).unwrap();
        assert!(json.contains(r#""kind":"poisson_sampled""#), "{json}");
        let parsed: DpEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, ledger.to_event());
    }
}
