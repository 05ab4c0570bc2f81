//! A whole client-level DP-FedAvg run: rounds of sampled clients over a [`Transport`], each
//! round accounted before it runs, the noise calibrated to a target ε, the model evaluated
//! after every round.
//!
//! The ledger holds one `PoissonSampled(q, Gaussian(z))` per round (or its
//! `NoAmplification` form for a fixed number of clients), composed by the chosen
//! accountant; a round that would bring ε above the budget is not run.

use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::{AdaptiveClipper, AdaptiveClippingConfig, gradient_noise_multiplier};
use crate::model::DpModule;
use crate::privacy::{
    Accountant, AccountantKind, AccountantSettings, DpEvent, Ledger, PrivacyBudget, PrivacySpent,
    calibrate_scale,
};
use crate::train::trainer::{derive_seed, evaluate};
use crate::train::{
    GaussianPrivatizer, Privatizer, SecurePrivatizer, ServerOptimizerConfig, Update,
};

use super::checkpoint::{FederatedCheckpoint, FederatedState};
use super::clients::{ClientSampler, ClientSampling};
use super::he::{IntegerAggregator, ThresholdHe, he_round};
use super::round::{Server, Transport};
use super::secure::{
    Aggregation, HeConfig, SecAggConfig, SecurePlan, he_padded_dim, he_scale, secure_round,
};
use crate::privacy::distributed::{DistributedLedger, DistributedRound, calibrate_local_stddev};
use crate::secagg::quantise::{padded_dim, scale_for_bits};

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
    /// Adaptive clipping of the update norm (Andrew et al. 2021): C follows a quantile of
    /// the clients' update norms, starting at `clip_norm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_clipping: Option<AdaptiveClippingConfig>,
    /// Secure mode: clients sampled from the OS-seeded CSPRNG and the server's noise a
    /// discrete Gaussian on a grid (as `privacy.secure_noise` in training), accounted at
    /// integer Rényi orders. A resumed secure run draws fresh randomness. Default false.
    #[serde(default)]
    pub secure_noise: bool,
    /// False: plain FedAvg, no clipping, no noise, no guarantee (the non-private ceiling
    /// to compare a private run against). Default true.
    #[serde(default = "private_by_default")]
    pub private: bool,
    /// How the updates are aggregated (issue 15): `plain` (default: the server sees each
    /// clipped update), `secagg` (secure aggregation, central noise after unmasking) or
    /// `secagg_distributed_dp` (secure aggregation of the clients' noised updates; z then
    /// means the total noise over C at n_min survivors: each client adds σ = zC/√n_min).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Secure aggregation's settings (`[federated.client_level.secagg]`; defaults when
    /// absent). Under `he_threshold` its quantisation and noise settings apply, not `bits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg: Option<SecAggConfig>,
    /// The decryption committee under `aggregation = "he_threshold"`
    /// (`[federated.client_level.he]`; defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub he: Option<HeConfig>,
}

fn private_by_default() -> bool {
    true
}

/// One round's row of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRecord {
    /// The round, from 1.
    pub round: u64,
    /// Clients (or silos) asked.
    pub sampled: usize,
    /// Clients whose update arrived.
    pub survivors: usize,
    /// C of the round (client-level; it moves under adaptive clipping).
    pub clip_norm: f64,
    /// Mean test loss after the round.
    pub test_loss: f64,
    /// Test accuracy after the round.
    pub test_accuracy: f64,
    /// ε at δ after the round (the worst silo's under silo-level DP).
    pub epsilon: f64,
    /// Seconds the round took, without the evaluation.
    pub seconds: f64,
}

/// The header of metrics.csv.
pub const METRICS_HEADER: &str =
    "round,sampled,survivors,clip_norm,test_loss,test_accuracy,epsilon,seconds";

impl RoundRecord {
    /// The row of metrics.csv (floats written to round-trip exactly).
    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{:?},{:?},{:?},{:?},{:.4}",
            self.round,
            self.sampled,
            self.survivors,
            self.clip_norm,
            self.test_loss,
            self.test_accuracy,
            self.epsilon,
            self.seconds
        )
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct FederatedRecord {
    /// One row per round.
    pub rounds: Vec<RoundRecord>,
    /// Client-level: every round's event, in ledger form; silo-level: the worst silo's.
    pub ledger: Ledger,
    /// ε at δ of the ledger.
    pub spent: PrivacySpent,
    /// z (client-level) or σ of each silo step (silo-level), calibrated or given.
    pub noise_multiplier: f64,
    /// Silo-level: each silo's ε at δ, in the partition's order.
    pub silo_epsilons: Vec<f64>,
    /// Under `secagg_distributed_dp`: every released round as booked (`ledger` is then
    /// empty and `spent` is this ledger's ε).
    pub distributed_ledger: Option<DistributedLedger>,
    /// Why the run stopped before its last round, if it did.
    pub stopped_early: Option<String>,
    /// Seconds spent in the rounds (evaluation included), over all sessions of the run.
    pub wall_seconds: f64,
}

/// z: `given`, or the smallest whose `event(z)` meets `target` at δ (exactly one of them).
pub(crate) fn resolve_noise(
    given: Option<f64>,
    target: Option<f64>,
    delta: f64,
    settings: AccountantSettings,
    key: &str,
    event: impl Fn(f64) -> DpEvent,
) -> Result<f64> {
    match (given, target) {
        (Some(z), None) => {
            crate::privacy::rdp::check_step(1.0, z).map_err(|_| {
                Error::invalid(
                    format!("{key}.noise_multiplier"),
                    z,
                    "a finite number above 0",
                )
            })?;
            Ok(z)
        }
        (None, Some(target)) => {
            let calibration = calibrate_scale(target, delta, |z| {
                let mut accountant = Accountant::new(settings)?;
                accountant.compose_event(&event(z))?;
                Ok(accountant.epsilon(delta)?.epsilon)
            })?;
            Ok(calibration.noise_multiplier)
        }
        _ => Err(Error::invalid(
            format!("{key}.noise_multiplier / {key}.target_epsilon"),
            "both or neither",
            "exactly one of them",
        )),
    }
}

impl ClientLevelConfig {
    /// The secure aggregation settings (defaults when the table is absent).
    pub fn secagg(&self) -> SecAggConfig {
        self.secagg.clone().unwrap_or_default()
    }

    /// The committee's settings (defaults when the table is absent).
    pub fn he(&self) -> HeConfig {
        self.he.unwrap_or_default()
    }

    /// The most clients a round is likely to sample: 4 standard deviations above the
    /// expected number under Poisson sampling (the scale is set for it; a homomorphic round
    /// with more is aborted), the fixed number otherwise.
    fn large_round(&self, population: usize) -> u64 {
        let expected = self.sampling.sample_rate(population) * population as f64;
        match self.sampling {
            ClientSampling::Fixed { .. } => expected.round() as u64,
            ClientSampling::Poisson { .. } => (expected + 4.0 * expected.sqrt()).ceil() as u64,
        }
    }

    /// Under distributed DP: n_min, the template of a round at n_min survivors
    /// (without σ and s) and the scale at σ for the largest likely round; None otherwise.
    fn distributed_template(
        &self,
        population: usize,
        dim: usize,
    ) -> Option<(u64, DistributedRound, u64)> {
        if !self.aggregation.distributed() {
            return None;
        }
        let secagg = self.secagg();
        let expected = self.sampling.sample_rate(population) * population as f64;
        let n_min = secagg.min_survivors_for(expected);
        // The scale shrinks as more clients share the 2^b values; calibrate at a round
        // 4 standard deviations above the expected size (each round is checked again
        // against the budget with its own scale before it runs).
        let large = match self.aggregation {
            Aggregation::HeThreshold => self.large_round(population),
            _ => (expected + 4.0 * expected.sqrt()).ceil() as u64,
        };
        let dim = match self.aggregation {
            Aggregation::HeThreshold => he_padded_dim(dim),
            _ => padded_dim(dim),
        };
        Some((
            n_min,
            DistributedRound {
                mechanism: secagg.mechanism,
                l2_clip: self.clip_norm,
                dim: dim as u64,
                beta: secagg.beta,
                clients: n_min,
                local_stddev: 1.0,
                scale: 1.0,
            },
            large.max(n_min),
        ))
    }

    /// The clients' noise under `secagg_distributed_dp` for a model of `dim` parameters:
    /// (z, σ = zC/√n_min), z given or calibrated so that every round at n_min survivors
    /// meets the target ε.
    pub fn distributed_noise(&self, population: usize, dim: usize) -> Result<Option<(f64, f64)>> {
        let Some((n_min, template, large)) = self.distributed_template(population, dim) else {
            return Ok(None);
        };
        let secagg = self.secagg();
        let c = self.clip_norm;
        let root = (n_min as f64).sqrt();
        let he = self.aggregation == Aggregation::HeThreshold;
        let scale_of = |sigma: f64| match he {
            true => he_scale(large, c, dim, sigma, secagg.wrap_probability),
            false => scale_for_bits(secagg.bits, large, c, dim, sigma, secagg.wrap_probability),
        };
        let sigma = match (self.noise_multiplier, self.target_epsilon) {
            (Some(z), None) if z > 0.0 && z.is_finite() => z * c / root,
            (None, Some(target)) => calibrate_local_stddev(
                &template,
                n_min,
                self.distributed_rate(population),
                self.rounds,
                self.delta,
                target,
                &scale_of,
            )?,
            _ => {
                return Err(Error::invalid(
                    "federated.client_level.noise_multiplier / target_epsilon",
                    "both, neither or a bad z",
                    "exactly one of them (z finite and above 0)",
                ));
            }
        };
        Ok(Some((sigma * root / c, sigma)))
    }

    /// q of the distributed ledger: the Poisson rate, or 1 (no amplification) for a fixed
    /// number of clients per round.
    fn distributed_rate(&self, population: usize) -> f64 {
        match self.sampling {
            ClientSampling::Poisson { .. } => self.sampling.sample_rate(population),
            ClientSampling::Fixed { .. } => 1.0,
        }
    }

    /// The accountant of the run.
    pub fn accountant(&self) -> AccountantSettings {
        AccountantSettings::new(self.accountant.unwrap_or(AccountantKind::Rdp))
    }

    /// z: the given one, or the smallest whose `rounds` rounds meet the target ε (0 for a
    /// non-private run).
    pub fn noise_multiplier(&self, population: usize) -> Result<f64> {
        self.sampling.validate(population)?;
        if self.rounds == 0 {
            return Err(Error::invalid(
                "federated.client_level.rounds",
                0,
                "a whole number at least 1",
            ));
        }
        if !self.private {
            if self.noise_multiplier.is_some()
                || self.target_epsilon.is_some()
                || self.adaptive_clipping.is_some()
            {
                return Err(Error::invalid(
                    "federated.client_level.private",
                    false,
                    "true, or no noise_multiplier, target_epsilon or adaptive_clipping (a \
                     non-private run has neither noise nor clipping)",
                ));
            }
            return Ok(0.0);
        }
        if self.aggregation != Aggregation::Plain {
            self.secagg().validate("federated.client_level.secagg")?;
            if self.adaptive_clipping.is_some() {
                return Err(Error::invalid(
                    "federated.client_level.aggregation",
                    self.aggregation.name(),
                    "plain with adaptive_clipping (under secure aggregation the server \
                     cannot count the updates within C yet), or no adaptive_clipping",
                ));
            }
            if self.aggregation.distributed() && self.secure_noise {
                return Err(Error::invalid(
                    "federated.client_level.secure_noise",
                    true,
                    format!(
                        "false under {} (the clients' shares are the noise, drawn from a \
                         CSPRNG already)",
                        self.aggregation.name()
                    ),
                ));
            }
            if self.aggregation == Aggregation::HeThreshold {
                let he = self.he();
                crate::he::CommitteeSpec {
                    members: he.committee,
                    threshold: he.threshold,
                    lambda: he.lambda,
                    max_clients: 2,
                    min_clients: 2,
                }
                .validate("federated.client_level.he")?;
            } else if self.he.is_some() {
                return Err(Error::invalid(
                    "federated.client_level.he",
                    "given",
                    "nothing unless aggregation = \"he_threshold\"",
                ));
            }
        }
        if self.secure_noise && self.adaptive_clipping.is_some() {
            return Err(Error::invalid(
                "federated.client_level.secure_noise",
                true,
                "false with adaptive_clipping (its count noise is not drawn in secure mode \
                 yet), or no adaptive_clipping",
            ));
        }
        let rounds = self.rounds;
        resolve_noise(
            self.noise_multiplier,
            self.target_epsilon,
            self.delta,
            self.accountant(),
            "federated.client_level",
            |z| DpEvent::SelfComposed {
                event: Box::new(self.round_event(population, z)),
                count: rounds,
            },
        )
    }

    /// The aggregation plan of a run of `population` clients on a model of `dim`
    /// parameters, seeded from `seed` unless in secure mode (None: plain aggregation).
    /// Server and clients compute it alike from the same config.
    pub fn secure_plan(
        &self,
        population: usize,
        dim: usize,
        seed: u64,
    ) -> Result<Option<SecurePlan>> {
        if self.aggregation == Aggregation::Plain {
            return Ok(None);
        }
        let secagg = self.secagg();
        let expected_clients = self.sampling.sample_rate(population) * population as f64;
        let local_stddev = self
            .distributed_noise(population, dim)?
            .map_or(0.0, |(_, sigma)| sigma);
        Ok(Some(SecurePlan {
            aggregation: self.aggregation,
            min_survivors: secagg.min_survivors_for(expected_clients),
            config: secagg,
            clip_norm: self.clip_norm,
            dim,
            local_stddev,
            seed: (!self.secure_noise).then(|| derive_seed(seed, 7)),
        }))
    }

    /// One round's event at z: `PoissonSampled(q, Gaussian(z))`, or its discrete Gaussian
    /// in secure mode (or either without amplification for fixed-size sampling).
    pub fn round_event(&self, population: usize, z: f64) -> DpEvent {
        let noise = match self.secure_noise {
            true => DpEvent::DiscreteGaussian {
                noise_multiplier: z,
            },
            false => DpEvent::Gaussian {
                noise_multiplier: z,
            },
        };
        self.sampling.round_event_of(population, noise)
    }
}

/// A federated run, one round at a time, checkpointable after any round: client-level
/// ([`ClientLevelRun`]) or silo-level ([`super::SiloLevelRun`]).
pub trait FederatedRun {
    /// The noise multiplier: z of every round (client-level, the gradient's and the count's
    /// together under adaptive clipping), σ of every silo step (silo-level).
    fn noise_multiplier(&self) -> f64;

    /// The rounds finished so far.
    fn rounds(&self) -> &[RoundRecord];

    /// Runs the next round and evaluates on `test`; None once the planned rounds are done
    /// or the budget stops the run.
    fn next_round(&mut self, test: &Dataset) -> Result<Option<RoundRecord>>;

    /// The checkpoint after the rounds so far; `config` is the run's config text.
    fn checkpoint(&self, config: String) -> Result<FederatedCheckpoint>;

    /// Continues from `checkpoint` (of this run's config): the next round is the one after
    /// its last, drawn exactly as the uninterrupted run would have drawn it.
    fn resume(&mut self, checkpoint: &FederatedCheckpoint) -> Result<()>;

    /// The record of the run so far.
    fn finish(&mut self) -> Result<FederatedRecord>;
}

/// Homomorphic aggregation's server side and the clients' reproducibility seed.
type HeState = (Box<dyn IntegerAggregator>, Option<[u8; 32]>);

/// A client-level DP-FedAvg run, one round at a time: the server, the client sampler, the
/// accountant and the rounds so far, checkpointable after any round.
pub struct ClientLevelRun<'a> {
    global: &'a dyn DpModule,
    transport: &'a mut dyn Transport,
    config: ClientLevelConfig,
    z: f64,
    accountant: Accountant,
    budget: Option<PrivacyBudget>,
    server: Server,
    sampler: ClientSampler,
    clipper: Option<AdaptiveClipper>,
    round_event: DpEvent,
    /// Secure aggregation's plan (None: plain aggregation).
    secure: Option<SecurePlan>,
    /// Homomorphic aggregation's server side and the clients' reproducibility seed (None in
    /// runs from configs: the clients draw from the OS).
    he: Option<HeState>,
    /// Distributed DP: the rounds booked so far and their sampling rate.
    distributed: Option<(DistributedLedger, f64)>,
    rounds: Vec<RoundRecord>,
    stopped_early: Option<String>,
    wall_seconds: f64,
}

impl<'a> ClientLevelRun<'a> {
    /// A run of `config` on `global` (the server's model) whose `transport` reaches the
    /// `population` clients; `seed` drives the client sample, the server's noise and the
    /// count noise of adaptive clipping.
    pub fn new(
        global: &'a dyn DpModule,
        transport: &'a mut dyn Transport,
        population: usize,
        config: &ClientLevelConfig,
        seed: u64,
    ) -> Result<Self> {
        let mut z = config.noise_multiplier(population)?;
        let params = global.parameters();
        let dim: usize = params.iter().map(|p| p.elem_count()).sum();
        let distributed_noise = config.distributed_noise(population, dim)?;
        if let Some((distributed_z, _)) = distributed_noise {
            z = distributed_z;
        }
        let accountant = Accountant::new(config.accountant())?;
        let budget = match config.target_epsilon {
            Some(target) => Some(PrivacyBudget::new(target, config.delta)?),
            None => None,
        };
        let expected_clients = config.sampling.sample_rate(population) * population as f64;
        let clipper = match config.adaptive_clipping {
            Some(adaptive) => Some(AdaptiveClipper::new(
                adaptive,
                config.clip_norm,
                expected_clients,
                derive_seed(seed, 4),
            )?),
            None => None,
        };
        // Adaptive clipping spends part of z on the count (Andrew et al. 2021, Thm. 1).
        let gradient_z = match &clipper {
            Some(clipper) => gradient_noise_multiplier(z, clipper.count_noise_std())?,
            None => z,
        };
        let update = Update::new(expected_clients, config.server_optimizer.build(&params)?)?;
        let privatizer: Box<dyn Privatizer> = match config.secure_noise {
            true => Box::new(SecurePrivatizer::new(
                params.iter().map(|p| p.elem_count()).sum(),
                gradient_z,
                config.clip_norm,
            )?),
            false => Box::new(GaussianPrivatizer::new(
                gradient_z,
                config.clip_norm,
                derive_seed(seed, 3),
            )?),
        };
        // Distributed DP: the clients' shares are the noise; the server adds none.
        let privatizer: Box<dyn Privatizer> = match distributed_noise {
            Some(_) => Box::new(crate::train::NoNoise),
            None => privatizer,
        };
        let server = match config.private {
            true => Server::new(params.clone(), config.clip_norm, privatizer, update)?,
            false => Server::non_private(params.clone(), update),
        };
        if config.aggregation != Aggregation::Plain && transport.secure().is_none() {
            return Err(Error::Usage(format!(
                "aggregation = \"{}\" needs a transport that runs secure aggregation's stages",
                config.aggregation.name()
            )));
        }
        let secure = config.secure_plan(population, dim, seed)?;
        let he: Option<HeState> = match &secure {
            Some(plan) if plan.aggregation == Aggregation::HeThreshold => Some((
                Box::new(ThresholdHe::new(
                    config.he(),
                    config.large_round(population),
                    plan.min_survivors,
                )?),
                None,
            )),
            _ => None,
        };
        let distributed = distributed_noise.map(|_| {
            (
                DistributedLedger::new(),
                config.distributed_rate(population),
            )
        });
        let sampler_seed = (!config.secure_noise).then(|| derive_seed(seed, 2));
        Ok(ClientLevelRun {
            global,
            transport,
            config: config.clone(),
            z,
            accountant,
            budget,
            server,
            sampler: ClientSampler::new(config.sampling, population, sampler_seed)?,
            clipper,
            round_event: config.round_event(population, z),
            secure,
            he,
            distributed,
            rounds: Vec::new(),
            stopped_early: None,
            wall_seconds: 0.0,
        })
    }
}

impl ClientLevelRun<'_> {
    /// Under `he_threshold`: replaces the server's aggregation (e.g. by
    /// [`super::he::PlainIntegers`], the reference a homomorphic run must equal) and, with
    /// `client_seed`, draws the clients' rounding, noise and rotation from it instead of the
    /// OS. For tests and benchmarks: a seeded run's noise is known to whoever knows the seed.
    pub fn replace_he_aggregation(
        &mut self,
        aggregator: Option<Box<dyn IntegerAggregator>>,
        client_seed: Option<[u8; 32]>,
    ) -> Result<()> {
        let Some((current, seed)) = &mut self.he else {
            return Err(Error::Usage(
                "the run does not aggregate homomorphically (aggregation = \"he_threshold\")"
                    .into(),
            ));
        };
        if let Some(aggregator) = aggregator {
            *current = aggregator;
        }
        *seed = client_seed;
        Ok(())
    }

    /// Under `he_threshold`: what the aggregation has cost so far.
    pub fn he_cost(&self) -> Option<&super::he::AggregationCost> {
        self.he.as_ref().map(|(aggregator, _)| aggregator.cost())
    }
}

impl FederatedRun for ClientLevelRun<'_> {
    /// z, the noise multiplier of every round (the gradient's and the count's together
    /// under adaptive clipping).
    fn noise_multiplier(&self) -> f64 {
        self.z
    }

    fn rounds(&self) -> &[RoundRecord] {
        &self.rounds
    }

    /// Runs the next round and evaluates on `test`; None once the planned rounds are done
    /// or the budget stops the run.
    ///
    /// # Privacy
    /// Client-level: the round is composed into the accountant only after
    /// [`PrivacyBudget::admits_event`] says it fits the budget, and before it runs; the
    /// server's noise is N(0, z_Δ²C²) on the sum of updates clipped to C (z_Δ = z without
    /// adaptive clipping), divided by the expected number of clients.
    fn next_round(&mut self, test: &Dataset) -> Result<Option<RoundRecord>> {
        let round = self.rounds.len() as u64 + 1;
        if round > self.config.rounds || self.stopped_early.is_some() {
            return Ok(None);
        }
        if self.config.private
            && self.distributed.is_none()
            && let Some(budget) = self.budget
            && !budget.admits_event(&mut self.accountant, &self.round_event)?
        {
            self.stopped_early = Some(format!(
                "round {round} would exceed the budget ε = {}",
                budget.target_epsilon
            ));
            return Ok(None);
        }
        let start = Instant::now();
        let clip_norm = match &self.clipper {
            Some(clipper) => {
                let gradient_z = gradient_noise_multiplier(self.z, clipper.count_noise_std())?;
                self.server
                    .set_clip_and_noise(clipper.clip_norm(), gradient_z)?;
                clipper.clip_norm()
            }
            None if self.config.private => self.config.clip_norm,
            None => f64::INFINITY,
        };
        if self.config.private && self.distributed.is_none() {
            self.accountant.compose_event(&self.round_event)?;
        }
        let clients = self.sampler.sample();
        // Distributed DP: the round is checked against the budget at its worst case (n_min
        // shares summed, its own scale) before it runs, and booked with its realised
        // survivors after.
        if let (Some((ledger, q)), Some(plan), Some(budget)) =
            (&self.distributed, &self.secure, self.budget)
        {
            let mut tentative = ledger.clone();
            if let Some(worst) = plan.booked(clients.len() as u64, plan.min_survivors)? {
                tentative.push(crate::privacy::distributed::DistributedEntry {
                    round,
                    sample_rate: *q,
                    params: worst,
                })?;
            }
            if tentative.epsilon(budget.delta)?.0 > budget.target_epsilon {
                self.stopped_early = Some(format!(
                    "round {round} would exceed the budget ε = {}",
                    budget.target_epsilon
                ));
                return Ok(None);
            }
        }
        let outcome = match &self.secure {
            None => self.server.run_round(self.transport, &clients)?,
            Some(plan) => {
                let transport = self.transport.secure().ok_or_else(|| {
                    Error::Usage("the transport no longer runs secure aggregation".into())
                })?;
                let secure = match &mut self.he {
                    Some((aggregator, seed)) => he_round(
                        &mut self.server,
                        transport,
                        &clients,
                        plan,
                        aggregator.as_mut(),
                        *seed,
                    )?,
                    None => secure_round(&mut self.server, transport, &clients, plan)?,
                };
                if let (Some(booked), Some((ledger, q))) = (secure.booked, &mut self.distributed) {
                    ledger.push(crate::privacy::distributed::DistributedEntry {
                        round,
                        sample_rate: *q,
                        params: booked,
                    })?;
                }
                secure.outcome
            }
        };
        if let Some(clipper) = &mut self.clipper {
            clipper.update(outcome.within_clip, outcome.survivors);
        }
        let seconds = start.elapsed().as_secs_f64();
        let (test_loss, test_accuracy) = evaluate(self.global, test)?;
        let record = RoundRecord {
            round,
            sampled: outcome.sampled,
            survivors: outcome.survivors,
            clip_norm,
            test_loss,
            test_accuracy,
            epsilon: match (&self.distributed, self.config.private) {
                (Some((ledger, _)), _) => ledger.epsilon(self.config.delta)?.0,
                (None, true) => self.accountant.epsilon(self.config.delta)?.epsilon,
                (None, false) => f64::INFINITY,
            },
            seconds,
        };
        self.rounds.push(record);
        self.wall_seconds += start.elapsed().as_secs_f64();
        Ok(Some(record))
    }

    fn checkpoint(&self, config: String) -> Result<FederatedCheckpoint> {
        let (_, noise_position, optimizer) = self.server.state();
        let mut state = FederatedState::new(config);
        state.rounds = self.rounds.clone();
        state.ledger = self.accountant.ledger().clone();
        state.distributed_ledger = self.distributed.as_ref().map(|(l, _)| l.to_csv());
        state.sampler_position = self.sampler.position().to_string();
        state.noise_position = noise_position;
        state.clipper = self.clipper.as_ref().map(|c| {
            let (clip, position) = c.state();
            (clip, position.to_string())
        });
        state.optimizer_steps = optimizer.steps;
        state.wall_seconds = self.wall_seconds;
        Ok(FederatedCheckpoint {
            state,
            params: snapshot(self.server.params())?,
            optimizer,
        })
    }

    fn resume(&mut self, checkpoint: &FederatedCheckpoint) -> Result<()> {
        let state = &checkpoint.state;
        restore_params(self.server.params(), &checkpoint.params)?;
        self.server.restore(
            state.rounds.len() as u64,
            state.noise_position,
            &checkpoint.optimizer,
        )?;
        self.sampler
            .seek(FederatedCheckpoint::position(&state.sampler_position));
        match (&mut self.clipper, &state.clipper) {
            (Some(clipper), Some((clip, position))) => {
                clipper.restore((*clip, FederatedCheckpoint::position(position)))
            }
            (None, None) => {}
            _ => {
                return Err(Error::Usage(
                    "the checkpoint and the config disagree on adaptive clipping".into(),
                ));
            }
        }
        self.accountant = Accountant::from_ledger(self.config.accountant(), &state.ledger)?;
        match (&mut self.distributed, &state.distributed_ledger) {
            (Some((ledger, _)), Some(text)) => {
                *ledger = DistributedLedger::parse_csv(
                    text.as_bytes(),
                    std::path::Path::new("checkpoint/state.json"),
                )?;
            }
            (None, None) => {}
            _ => {
                return Err(Error::Usage(
                    "the checkpoint and the config disagree on distributed DP".into(),
                ));
            }
        }
        self.rounds = state.rounds.clone();
        self.wall_seconds = state.wall_seconds;
        Ok(())
    }

    fn finish(&mut self) -> Result<FederatedRecord> {
        let spent = match (&self.distributed, self.config.private) {
            (Some((ledger, _)), _) => {
                let (epsilon, order) = ledger.epsilon(self.config.delta)?;
                PrivacySpent {
                    epsilon,
                    delta: self.config.delta,
                    order: f64::from(order),
                    steps: ledger.entries().len() as u64,
                }
            }
            (None, true) => self.accountant.epsilon(self.config.delta)?,
            (None, false) => PrivacySpent {
                epsilon: f64::INFINITY,
                delta: self.config.delta,
                order: 0.0,
                steps: 0,
            },
        };
        Ok(FederatedRecord {
            spent,
            ledger: self.accountant.ledger().clone(),
            rounds: self.rounds.clone(),
            noise_multiplier: self.z,
            silo_epsilons: Vec::new(),
            distributed_ledger: self.distributed.as_ref().map(|(l, _)| l.clone()),
            stopped_early: self.stopped_early.clone(),
            wall_seconds: self.wall_seconds,
        })
    }
}

/// Copies of the parameters' values.
pub(crate) fn snapshot(params: &[candle_core::Var]) -> Result<Vec<Tensor>> {
    params.iter().map(|p| Ok(p.as_tensor().copy()?)).collect()
}

/// Sets the parameters to a checkpoint's tensors, checking count and shapes.
pub(crate) fn restore_params(params: &[candle_core::Var], saved: &[Tensor]) -> Result<()> {
    if saved.len() != params.len() {
        return Err(Error::Tensor(format!(
            "checkpoint: {} parameter tensors for a model of {}",
            saved.len(),
            params.len()
        )));
    }
    for (var, t) in params.iter().zip(saved) {
        if var.dims() != t.dims() {
            return Err(Error::Tensor(format!(
                "checkpoint: a parameter of shape {:?} for one of {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Runs client-level DP-FedAvg to the end: `global` is the server's model, `transport`
/// reaches the `population` clients, `test` is evaluated after each round; `seed` drives
/// the client sample and the server's noise. See [`ClientLevelRun::next_round`].
pub fn run_client_level(
    global: &dyn DpModule,
    transport: &mut dyn Transport,
    population: usize,
    test: &Dataset,
    config: &ClientLevelConfig,
    seed: u64,
) -> Result<FederatedRecord> {
    let mut run = ClientLevelRun::new(global, transport, population, config, seed)?;
    while run.next_round(test)?.is_some() {}
    run.finish()
}
