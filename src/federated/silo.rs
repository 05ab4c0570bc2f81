//! Silo-level DP (cross-silo federated learning): every silo runs dptrain's own DP-SGD step
//! (clipped sum → privatizer → update) on its data for its local steps, with its own
//! Poisson sampler, noise stream and ledger; the server averages the silos' updates.
//!
//! The unit of privacy is one example of one silo: each silo's ε is that of its own ledger
//! (q = B/N_silo, one Poisson-subsampled Gaussian per local step, over all rounds), and the
//! run's guarantee is the worst silo's ([`worst_epsilon`]). A silo's state between rounds
//! is plain values ([`SiloState`]), so that a network transport can keep it on the silo.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::ClippingConfig;
use crate::model::DpModule;
use crate::privacy::{Accountant, AccountantSettings, Ledger, PrivacyEvent, PrivacySpent};
use crate::real::real;
use crate::sampling::PoissonSampler;
use crate::train::{DpOptimizer, DpSettings, NoiseMode, OptimizerConfig, SumValue, Sums};

use super::partition::Partition;
use super::round::{ClientReply, RoundRequest, Transport, read_params, set_params};

/// How each silo trains in a round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiloTraining {
    /// DP-SGD steps per round.
    pub local_steps: u64,
    /// Expected (Poisson) batch size B of a silo's step; q = B / N_silo.
    pub expected_batch_size: usize,
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
        for (silo, examples) in partition.clients.iter().enumerate() {
            if training.expected_batch_size == 0 || training.expected_batch_size > examples.len() {
                return Err(Error::invalid(
                    "federated.silo.expected_batch_size",
                    training.expected_batch_size,
                    format!(
                        "a whole number from 1 to the smallest silo's examples (silo {silo} \
                         has {})",
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
    /// q = B/N_silo, recorded in the silo's ledger as it is taken; the update released is
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
                expected_batch_size: training.expected_batch_size as f64,
                max_physical_batch: 1024,
                private: true,
                noise: NoiseMode::Seeded(silo_seed),
            },
        )?;
        let state = &mut self.states[silo];
        dp.seek_noise(state.noise_position);
        let mut sampler = PoissonSampler::with_expected_batch_size(
            training.expected_batch_size,
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
        Ok(ClientReply { update })
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
