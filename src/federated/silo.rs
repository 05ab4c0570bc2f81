//! Silo-level DP (cross-silo federated learning): every silo runs dptrain's own DP-SGD step
//! (clipped sum → privatizer → update) on its data for its local steps, with its own
//! Poisson sampler, noise stream and ledger; the server averages the silos' updates.
//!
//! The unit of privacy is one example of one silo: each silo's ε is that of its own ledger
//! (q per step, one Poisson-subsampled Gaussian per local step, over all rounds), and the
//! run's guarantee is the worst silo's ([`worst_epsilon`]). A silo's state between rounds
//! is plain values ([`SiloState`]), so that a network transport can keep it on the silo.

use std::time::Instant;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::ClippingConfig;
use crate::model::DpModule;
use crate::privacy::{Accountant, AccountantSettings, DpEvent, Ledger, PrivacyEvent, PrivacySpent};
use crate::real::real;
use crate::sampling::PoissonSampler;
use crate::train::trainer::evaluate;
use crate::train::{DpOptimizer, DpSettings, NoiseMode, OptimizerConfig, SumValue, Sums};

use super::checkpoint::{FederatedCheckpoint, FederatedState, SiloCheckpoint};
use super::partition::Partition;
use super::round::{ClientReply, RoundRequest, Transport, read_params, set_params};
use super::run::{FederatedRecord, FederatedRun};

/// How each silo trains in a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiloTraining {
    /// DP-SGD steps per round.
    pub local_steps: u64,
    /// q: each silo samples each of its examples with this probability per step (Poisson),
    /// an expected batch of q·N_silo; the same q for every silo gives every silo the same
    /// ledger.
    pub sample_rate: f64,
    /// σ of each local step.
    pub noise_multiplier: f64,
    /// Per-example clipping.
    pub clipping: ClippingConfig,
    /// The local optimizer (fresh each round).
    pub optimizer: OptimizerConfig,
}

/// What a silo keeps between rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SiloState {
    /// Every step it took.
    pub ledger: Ledger,
    /// Its Poisson sampler's position.
    pub sampler_position: u128,
    /// Its noise stream's position.
    pub noise_position: u64,
}

/// Silos in one process, each with its state.
pub struct Silos<'a, M> {
    /// The module the silos train (its parameters are overwritten by each request).
    pub module: M,
    /// The training set the partition indexes.
    pub data: &'a Dataset,
    /// Each silo's examples.
    pub partition: &'a Partition,
    /// How silos train.
    pub training: SiloTraining,
    /// Seeds each silo's sampler and noise streams.
    pub seed: u64,
    /// Each silo's state.
    pub states: Vec<SiloState>,
}

impl<'a, M: DpModule> Silos<'a, M> {
    /// Silos with nothing spent.
    pub fn new(
        module: M,
        data: &'a Dataset,
        partition: &'a Partition,
        training: SiloTraining,
        seed: u64,
    ) -> Result<Self> {
        let q = training.sample_rate;
        for (silo, examples) in partition.clients.iter().enumerate() {
            if !(q > 0.0 && q <= 1.0 && q * examples.len() as f64 >= 1.0) {
                return Err(Error::invalid(
                    "federated.silo_level.sample_rate",
                    q,
                    format!(
                        "a rate in (0, 1] giving every silo an expected batch of at least one \
                         example (silo {silo}, `{}`, has {})",
                        partition.names[silo],
                        examples.len()
                    ),
                ));
            }
        }
        let state = SiloState {
            ledger: Ledger::new(),
            sampler_position: 0,
            noise_position: 0,
        };
        Ok(Silos {
            module,
            data,
            partition,
            training,
            seed,
            states: vec![state; partition.len()],
        })
    }

    /// Each silo's ε at δ by `settings`, in order.
    pub fn epsilons(&self, settings: AccountantSettings, delta: f64) -> Result<Vec<PrivacySpent>> {
        self.states
            .iter()
            .map(|s| Accountant::from_ledger(settings, &s.ledger)?.epsilon(delta))
            .collect()
    }

    /// One silo's round: `local_steps` DP-SGD steps from the request's parameters; the
    /// reply is the (noised, hence private) change of the parameters.
    ///
    /// # Privacy
    /// Each step is `DpOptimizer::step` on a Poisson sample of the silo's own examples at
    /// rate q, recorded in the silo's ledger as it is taken; the update released is
    /// post-processing of those steps.
    fn compute(&mut self, request: &RoundRequest, silo: usize) -> Result<ClientReply> {
        let examples = self
            .partition
            .clients
            .get(silo)
            .ok_or_else(|| Error::Tensor(format!("silo {silo} of {}", self.partition.len())))?;
        let training = self.training;
        let params = self.module.parameters();
        set_params(&params, &request.params)?;
        let silo_seed = crate::train::trainer::derive_seed(self.seed, 100 + silo as u64);
        let mut dp = DpOptimizer::new(
            &self.module,
            DpSettings {
                optimizer: training.optimizer,
                clipping: training.clipping,
                noise_multiplier: training.noise_multiplier,
                expected_batch_size: training.sample_rate * examples.len() as f64,
                max_physical_batch: 1024,
                private: true,
                noise: NoiseMode::Seeded(silo_seed),
            },
        )?;
        let state = &mut self.states[silo];
        dp.seek_noise(state.noise_position);
        let mut sampler = PoissonSampler::new(
            training.sample_rate,
            examples.len(),
            crate::train::trainer::derive_seed(silo_seed, 1),
        )?;
        sampler.seek(state.sampler_position);
        let step = PrivacyEvent::new(sampler.sample_rate(), training.noise_multiplier, 1)?;
        for _ in 0..training.local_steps {
            let batch: Vec<usize> = sampler.sample().iter().map(|&i| examples[i]).collect();
            dp.step(&self.module, self.data, &batch)?;
            state.ledger.push(step);
        }
        state.sampler_position = sampler.position();
        state.noise_position = dp.state().1;
        let update = real!(request.params.dtype(), "silo update", |T| delta::<T>(
            &read_params(&params)?,
            &request.params
        ))?;
        Ok(ClientReply {
            update,
            within_clip: true,
        })
    }
}

/// local − global.
fn delta<T: SumValue>(local: &Sums, global: &Sums) -> Result<Sums> {
    let (mut local, mut global) = (local.clone(), global.clone());
    let local = local.values_mut::<T>("silo update")?;
    let global = global.values_mut::<T>("silo update")?;
    Ok(T::wrap(
        local
            .iter()
            .zip(global.iter())
            .map(|(l, g)| l.iter().zip(g).map(|(l, g)| *l - *g).collect())
            .collect(),
    ))
}

impl<M: DpModule> Transport for Silos<'_, M> {
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, Result<ClientReply>)> {
        clients
            .iter()
            .map(|&silo| (silo, self.compute(request, silo)))
            .collect()
    }
}

/// The run's guarantee under silo-level DP: the largest ε of any silo.
pub fn worst_epsilon(epsilons: &[PrivacySpent]) -> Option<PrivacySpent> {
    epsilons
        .iter()
        .copied()
        .max_by(|a, b| a.epsilon.total_cmp(&b.epsilon))
}

/// The privacy and schedule of a silo-level run (`[federated.silo_level]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiloLevelConfig {
    /// Rounds to run.
    pub rounds: u64,
    /// DP-SGD steps each silo takes per round.
    pub local_steps: u64,
    /// q of every silo's Poisson sample (an expected batch of q·N_silo).
    pub sample_rate: f64,
    /// Per-example clip norm C of the silos' steps.
    pub clip_norm: f64,
    /// σ of each silo step, given directly (exclusive with `target_epsilon`).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// Each silo's ε to calibrate σ to (exclusive with `noise_multiplier`).
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// δ of each silo.
    pub delta: f64,
    /// The accountant (default RDP).
    #[serde(default)]
    pub accountant: Option<crate::privacy::AccountantKind>,
    /// Each silo's optimizer (fresh each round).
    pub optimizer: OptimizerConfig,
    /// The server optimizer on the silos' weighted mean update.
    pub server_optimizer: crate::train::ServerOptimizerConfig,
}

impl SiloLevelConfig {
    /// The accountant of every silo.
    pub fn accountant(&self) -> AccountantSettings {
        AccountantSettings::new(
            self.accountant
                .unwrap_or(crate::privacy::AccountantKind::Rdp),
        )
    }

    /// σ: the given one, or the smallest whose `rounds × local_steps` steps at q meet each
    /// silo's target ε.
    pub fn noise_multiplier(&self) -> Result<f64> {
        const KEY: &str = "federated.silo_level";
        if self.rounds == 0 || self.local_steps == 0 {
            return Err(Error::invalid(
                format!("{KEY}.rounds / local_steps"),
                format!("{} / {}", self.rounds, self.local_steps),
                "whole numbers at least 1",
            ));
        }
        if !(self.sample_rate > 0.0 && self.sample_rate <= 1.0) {
            return Err(Error::invalid(
                format!("{KEY}.sample_rate"),
                self.sample_rate,
                "a rate in (0, 1]",
            ));
        }
        let steps = self.rounds * self.local_steps;
        let q = self.sample_rate;
        super::run::resolve_noise(
            self.noise_multiplier,
            self.target_epsilon,
            self.delta,
            self.accountant(),
            KEY,
            |sigma| DpEvent::SelfComposed {
                event: Box::new(DpEvent::PoissonSampled {
                    sample_rate: q,
                    event: Box::new(DpEvent::Gaussian {
                        noise_multiplier: sigma,
                    }),
                }),
                count: steps,
            },
        )
    }

    /// The silos' training of a round at σ.
    pub fn training(&self, noise_multiplier: f64) -> SiloTraining {
        SiloTraining {
            local_steps: self.local_steps,
            sample_rate: self.sample_rate,
            noise_multiplier,
            clipping: ClippingConfig {
                clip_norm: self.clip_norm,
                ..ClippingConfig::default()
            },
            optimizer: self.optimizer,
        }
    }
}

/// A silo-level run, one round at a time: the silos (with their states), the averaging
/// server and the rounds so far, checkpointable after any round.
pub struct SiloLevelRun<'a, M> {
    global: &'a dyn DpModule,
    silos: Silos<'a, M>,
    server: super::round::Server,
    config: SiloLevelConfig,
    sigma: f64,
    budget: Option<crate::privacy::PrivacyBudget>,
    rounds: Vec<super::run::RoundRecord>,
    stopped_early: Option<String>,
    wall_seconds: f64,
}

impl<'a, M: DpModule> SiloLevelRun<'a, M> {
    /// A run of `config`: `global` is the server's model, `module` the silos' working copy,
    /// `partition` the silos' examples of `data`; `seed` drives every silo's streams.
    pub fn new(
        global: &'a dyn DpModule,
        module: M,
        data: &'a Dataset,
        partition: &'a Partition,
        config: &SiloLevelConfig,
        seed: u64,
    ) -> Result<Self> {
        let sigma = config.noise_multiplier()?;
        let silos = Silos::new(module, data, partition, config.training(sigma), seed)?;
        // The weighted mean by the silos' sizes, which the published manifest states.
        let weights = partition.clients.iter().map(|c| c.len() as f64).collect();
        let server = super::round::Server::averaging(
            global.parameters(),
            weights,
            &config.server_optimizer,
        )?;
        let budget = match config.target_epsilon {
            Some(target) => Some(crate::privacy::PrivacyBudget::new(target, config.delta)?),
            None => None,
        };
        Ok(SiloLevelRun {
            global,
            silos,
            server,
            config: config.clone(),
            sigma,
            budget,
            rounds: Vec::new(),
            stopped_early: None,
            wall_seconds: 0.0,
        })
    }
}

impl<M: DpModule> FederatedRun for SiloLevelRun<'_, M> {
    fn rounds(&self) -> &[super::run::RoundRecord] {
        &self.rounds
    }

    fn noise_multiplier(&self) -> f64 {
        self.sigma
    }

    /// Runs the next round (every silo takes its local steps; the server averages) and
    /// evaluates on `test`; None once the planned rounds are done or a silo's budget stops
    /// the run.
    ///
    /// # Privacy
    /// Each silo's round is `local_steps` Poisson-subsampled Gaussian steps on its own
    /// data, admitted against its budget before any is taken and recorded in its own
    /// ledger; the server's weighted mean is post-processing.
    fn next_round(&mut self, test: &Dataset) -> Result<Option<super::run::RoundRecord>> {
        let round = self.rounds.len() as u64 + 1;
        if round > self.config.rounds || self.stopped_early.is_some() {
            return Ok(None);
        }
        let settings = self.config.accountant();
        if let Some(budget) = self.budget {
            let steps = DpEvent::SelfComposed {
                event: Box::new(DpEvent::PoissonSampled {
                    sample_rate: self.config.sample_rate,
                    event: Box::new(DpEvent::Gaussian {
                        noise_multiplier: self.sigma,
                    }),
                }),
                count: self.config.local_steps,
            };
            for (silo, state) in self.silos.states.iter().enumerate() {
                let mut accountant = Accountant::from_ledger(settings, &state.ledger)?;
                if !budget.admits_event(&mut accountant, &steps)? {
                    self.stopped_early = Some(format!(
                        "round {round} would take silo {silo} (`{}`) above its budget ε = {}",
                        self.silos.partition.names[silo], budget.target_epsilon
                    ));
                    return Ok(None);
                }
            }
        }
        let start = Instant::now();
        let all: Vec<usize> = (0..self.silos.partition.len()).collect();
        let outcome = self.server.run_round(&mut self.silos, &all)?;
        let seconds = start.elapsed().as_secs_f64();
        let (test_loss, test_accuracy) = evaluate(self.global, test)?;
        let epsilons = self.silos.epsilons(settings, self.config.delta)?;
        let record = super::run::RoundRecord {
            round,
            sampled: outcome.sampled,
            survivors: outcome.survivors,
            clip_norm: self.config.clip_norm,
            test_loss,
            test_accuracy,
            epsilon: worst_epsilon(&epsilons).map_or(0.0, |w| w.epsilon),
            seconds,
        };
        self.rounds.push(record);
        self.wall_seconds += start.elapsed().as_secs_f64();
        Ok(Some(record))
    }

    fn checkpoint(&self, config: String) -> Result<FederatedCheckpoint> {
        let (_, _, optimizer) = self.server.state();
        let mut state = FederatedState::new(config);
        state.rounds = self.rounds.clone();
        state.optimizer_steps = optimizer.steps;
        state.wall_seconds = self.wall_seconds;
        state.silos = self
            .silos
            .states
            .iter()
            .map(|s| SiloCheckpoint {
                ledger: s.ledger.clone(),
                sampler_position: s.sampler_position.to_string(),
                noise_position: s.noise_position,
            })
            .collect();
        Ok(FederatedCheckpoint {
            state,
            params: super::run::snapshot(self.server.params())?,
            optimizer,
        })
    }

    fn resume(&mut self, checkpoint: &FederatedCheckpoint) -> Result<()> {
        let state = &checkpoint.state;
        if state.silos.len() != self.silos.states.len() {
            return Err(Error::Usage(format!(
                "the checkpoint holds {} silos, the run has {}",
                state.silos.len(),
                self.silos.states.len()
            )));
        }
        super::run::restore_params(self.server.params(), &checkpoint.params)?;
        self.server
            .restore(state.rounds.len() as u64, 0, &checkpoint.optimizer)?;
        for (silo, saved) in self.silos.states.iter_mut().zip(&state.silos) {
            *silo = SiloState {
                ledger: saved.ledger.clone(),
                sampler_position: FederatedCheckpoint::position(&saved.sampler_position),
                noise_position: saved.noise_position,
            };
        }
        self.rounds = state.rounds.clone();
        self.wall_seconds = state.wall_seconds;
        Ok(())
    }

    /// The record of the run: the worst silo's ledger and ε, every silo's ε.
    fn finish(&mut self) -> Result<FederatedRecord> {
        let settings = self.config.accountant();
        let epsilons = self.silos.epsilons(settings, self.config.delta)?;
        let worst = epsilons
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.epsilon.total_cmp(&b.1.epsilon))
            .map(|(i, _)| i);
        let ledger = worst.map_or_else(Ledger::new, |i| self.silos.states[i].ledger.clone());
        let spent = Accountant::from_ledger(settings, &ledger)?.epsilon(self.config.delta)?;
        Ok(FederatedRecord {
            rounds: self.rounds.clone(),
            ledger,
            spent,
            noise_multiplier: self.sigma,
            silo_epsilons: epsilons.iter().map(|e| e.epsilon).collect(),
            distributed_ledger: None,
            stopped_early: self.stopped_early.clone(),
            wall_seconds: self.wall_seconds,
        })
    }
}
