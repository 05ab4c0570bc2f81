//! A whole client-level DP-FedAvg run: rounds of sampled clients over a [`Transport`], each
//! round accounted before it runs, the noise calibrated to a target ε, the model evaluated
//! after every round.
//!
//! The ledger holds one `PoissonSampled(q, Gaussian(z))` per round (or its
//! `NoAmplification` form for a fixed number of clients), composed by the chosen
//! accountant; a round that would bring ε above the budget is not run.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::DpModule;
use crate::privacy::{
    Accountant, AccountantKind, AccountantSettings, DpEvent, Ledger, PrivacyBudget, PrivacySpent,
    calibrate_scale,
};
use crate::train::trainer::{derive_seed, evaluate};
use crate::train::{GaussianPrivatizer, ServerOptimizerConfig, Update};

use super::clients::{ClientSampler, ClientSampling};
use super::round::{Server, Transport};

/// The privacy and schedule of a client-level run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLevelConfig {
    /// Rounds to run.
    pub rounds: u64,
    /// How clients join a round.
    pub sampling: ClientSampling,
    /// C: each client's whole update is clipped to this L2 norm.
    pub clip_norm: f64,
    /// z, given directly (exclusive with `target_epsilon`).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// ε to calibrate z to (exclusive with `noise_multiplier`).
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// The accountant (default RDP, the one dp_accounting's federated tutorials use).
    #[serde(default)]
    pub accountant: Option<AccountantKind>,
    /// The server optimizer.
    pub server_optimizer: ServerOptimizerConfig,
}

/// One round's row of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundRecord {
    /// The round, from 1.
    pub round: u64,
    /// Clients sampled.
    pub sampled: usize,
    /// Clients whose update arrived.
    pub survivors: usize,
    /// Mean test loss after the round.
    pub test_loss: f64,
    /// Test accuracy after the round.
    pub test_accuracy: f64,
    /// ε at δ after the round.
    pub epsilon: f64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct FederatedRecord {
    /// One row per round.
    pub rounds: Vec<RoundRecord>,
    /// Every round's event, in ledger form.
    pub ledger: Ledger,
    /// ε at δ of the ledger.
    pub spent: PrivacySpent,
    /// z (calibrated or given).
    pub noise_multiplier: f64,
    /// Why the run stopped before its last round, if it did.
    pub stopped_early: Option<String>,
}

impl ClientLevelConfig {
    /// The accountant of the run.
    pub fn accountant(&self) -> AccountantSettings {
        AccountantSettings::new(self.accountant.unwrap_or(AccountantKind::Rdp))
    }

    /// z: the given one, or the smallest whose `rounds` rounds meet the target ε.
    pub fn noise_multiplier(&self, population: usize) -> Result<f64> {
        self.sampling.validate(population)?;
        if self.rounds == 0 {
            return Err(Error::invalid(
                "federated.rounds",
                0,
                "a whole number at least 1",
            ));
        }
        match (self.noise_multiplier, self.target_epsilon) {
            (Some(z), None) => {
                crate::privacy::rdp::check_step(1.0, z).map_err(|_| {
                    Error::invalid("federated.noise_multiplier", z, "a finite number above 0")
                })?;
                Ok(z)
            }
            (None, Some(target)) => {
                let settings = self.accountant();
                let rounds = self.rounds;
                let calibration = calibrate_scale(target, self.delta, |z| {
                    let event = DpEvent::SelfComposed {
                        event: Box::new(self.sampling.round_event(population, z)),
                        count: rounds,
                    };
                    let mut accountant = Accountant::new(settings)?;
                    accountant.compose_event(&event)?;
                    Ok(accountant.epsilon(self.delta)?.epsilon)
                })?;
                Ok(calibration.noise_multiplier)
            }
            _ => Err(Error::invalid(
                "federated.noise_multiplier / federated.target_epsilon",
                "both or neither",
                "exactly one of them",
            )),
        }
    }
}

/// Runs client-level DP-FedAvg: `global` is the server's model, `transport` reaches the
/// `population` clients, `test` is evaluated after each round; `seed` drives the client
/// sample and the server's noise.
///
/// # Privacy
/// Each round is composed into the accountant only after [`PrivacyBudget::admits_event`]
/// says it fits the budget (the target ε, when one is given), and before it runs; the
/// server's noise is N(0, z²C²) on the sum of updates clipped to C, divided by the
/// expected number of clients.
pub fn run_client_level(
    global: &dyn DpModule,
    transport: &mut dyn Transport,
    population: usize,
    test: &Dataset,
    config: &ClientLevelConfig,
    seed: u64,
) -> Result<FederatedRecord> {
    let z = config.noise_multiplier(population)?;
    let settings = config.accountant();
    let mut accountant = Accountant::new(settings)?;
    let budget = match config.target_epsilon {
        Some(target) => Some(PrivacyBudget::new(target, config.delta)?),
        None => None,
    };
    let params = global.parameters();
    let expected_clients = config.sampling.sample_rate(population) * population as f64;
    let mut server = Server::new(
        params.clone(),
        config.clip_norm,
        Box::new(GaussianPrivatizer::new(
            z,
            config.clip_norm,
            derive_seed(seed, 3),
        )?),
        Update::new(expected_clients, config.server_optimizer.build(&params)?)?,
    )?;
    let mut sampler = ClientSampler::new(config.sampling, population, Some(derive_seed(seed, 2)))?;
    let round_event = config.sampling.round_event(population, z);
    let mut rounds = Vec::new();
    let mut stopped_early = None;
    for round in 1..=config.rounds {
        if let Some(budget) = budget
            && !budget.admits_event(&mut accountant, &round_event)?
        {
            stopped_early = Some(format!(
                "round {round} would exceed the budget ε = {}",
                budget.target_epsilon
            ));
            break;
        }
        accountant.compose_event(&round_event)?;
        let clients = sampler.sample();
        let outcome = server.run_round(transport, &clients)?;
        let (test_loss, test_accuracy) = evaluate(global, test)?;
        rounds.push(RoundRecord {
            round,
            sampled: outcome.sampled,
            survivors: outcome.survivors,
            test_loss,
            test_accuracy,
            epsilon: accountant.epsilon(config.delta)?.epsilon,
        });
    }
    Ok(FederatedRecord {
        rounds,
        ledger: accountant.ledger().clone(),
        spent: accountant.epsilon(config.delta)?,
        noise_multiplier: z,
        stopped_early,
    })
}
