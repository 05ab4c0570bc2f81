//! Client-level rounds through secure aggregation (issue 15): the server learns only the sum
//! of the surviving clients' quantised updates (SecAgg+, `crate::secagg`), and under
//! distributed DP not even that without noise, because every client adds a share of it.
//!
//! `aggregation` in `[federated.client_level]`:
//! - `plain`: the server receives every clipped update and adds N(0, z²C²) (issue 14);
//! - `secagg`: clients quantise their updates (`secagg::quantise`) and mask them; the server
//!   unmasks the sum, maps it back and adds the same central Gaussian. Each update is clipped
//!   to a C' slightly under C such that it is still within C once rounded, so the Gaussian's
//!   booked sensitivity holds and the ledger is the plain run's;
//! - `secagg_distributed_dp`: each client also adds a Skellam (or discrete Gaussian) share
//!   calibrated to the fewest survivors the round accepts, n_min; the server adds nothing. A
//!   round with fewer than n_min survivors is aborted before unmasking. The ledger
//!   (`privacy::distributed`) books each round with its realised survivors.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::round::{ClientReply, InProcess, RoundOutcome, RoundRequest, Server, Transport};
use crate::error::{Error, Result};
use crate::mechanism::shares::ShareNoise;
use crate::model::DpModule;
use crate::privacy::distributed::{DistributedMechanism, DistributedRound, clip_within};
use crate::real::Real;
use crate::real::real;
use crate::sampling::secure_rng::secure_rng;
use crate::secagg::messages::{NeighbourKeys, SharesForHolder, UnmaskRequest};
use crate::secagg::quantise::{Quantiser, padded_dim, scale_for_bits};
use crate::secagg::server::Inbox;
use crate::secagg::{Client, Graph, RoundParams, crypto};
use crate::train::SumValue;

/// How a client-level run aggregates the clients' updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The server sees each clipped update and adds central noise.
    #[default]
    Plain,
    /// Secure aggregation; the server sees the sum only and adds central noise.
    Secagg,
    /// Secure aggregation with the clients' noise shares; the server adds nothing.
    SecaggDistributedDp,
    /// The clients' noised, quantised updates encrypted under a committee's threshold key
    /// (`crate::he`); the server adds ciphertexts and t committee members decrypt the sum.
    HeThreshold,
}

impl Aggregation {
    /// The name in configs.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Plain => "plain",
            Aggregation::Secagg => "secagg",
            Aggregation::SecaggDistributedDp => "secagg_distributed_dp",
            Aggregation::HeThreshold => "he_threshold",
        }
    }

    /// Whether the clients' noise shares are the noise (distributed DP).
    pub fn distributed(self) -> bool {
        matches!(
            self,
            Aggregation::SecaggDistributedDp | Aggregation::HeThreshold
        )
    }
}

/// `[federated.client_level.he]`: the decryption committee of `he_threshold`. The
/// quantisation (β, wrap probability, n_min, the noise's mechanism) is read from
/// `[federated.client_level.secagg]`; its `bits` does not apply (the plaintext modulus
/// t = 8,380,417 sets the range).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeConfig {
    /// n: committee members holding key shares. Default 3.
    #[serde(default = "default_committee")]
    pub committee: u32,
    /// t: members needed to decrypt; fewer learn nothing. Default 2.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// λ: statistical security of the decryption shares' flooding, 40 to 128. Default 40.
    #[serde(default = "default_lambda")]
    pub lambda: u32,
}

fn default_committee() -> u32 {
    3
}

fn default_threshold() -> u32 {
    2
}

fn default_lambda() -> u32 {
    40
}

impl Default for HeConfig {
    fn default() -> Self {
        HeConfig {
            committee: default_committee(),
            threshold: default_threshold(),
            lambda: default_lambda(),
        }
    }
}

/// Values per block of the rotation under homomorphic aggregation: one ciphertext's.
pub fn he_block(dim: usize) -> usize {
    padded_dim(dim.max(1)).min(crate::he::DEGREE)
}

/// The padded dimension under homomorphic aggregation: a multiple of [`he_block`].
pub fn he_padded_dim(dim: usize) -> usize {
    dim.div_ceil(he_block(dim)) * he_block(dim)
}

/// The scale s under homomorphic aggregation of `clients` uploads: each client's every
/// coordinate must stay within B = ⌊(t − 1)/2 / clients⌋ (so that no sum can wrap mod t, and
/// a client whose vector does not is refused), with probability about 1 − p. After the
/// block rotation a coordinate has standard deviation at most √(c²/block + σ²)·s plus the
/// rounding's 1/2, so k of them must fit B, k = [`wrap_stddevs`]`(p, d)`:
/// s = √((B/k)² − 1/4) / √(c²/block + σ²).
pub fn he_scale(clients: u64, clip: f64, dim: usize, sigma: f64, wrap: f64) -> Result<f64> {
    let bound = crate::he::Bfv::value_bound(clients) as f64;
    let k = crate::secagg::quantise::wrap_stddevs(wrap, he_padded_dim(dim));
    let room = (bound / k).powi(2) - 0.25;
    let spread = clip * clip / he_block(dim) as f64 + sigma * sigma;
    if !(room > 0.0 && spread > 0.0) {
        return Err(Error::invalid(
            "federated.client_level.he",
            format!("{clients} clients per round"),
            "few enough that each client's values have room below (t − 1)/2 / clients",
        ));
    }
    Ok(room.sqrt() / spread.sqrt())
}

/// `[federated.client_level.secagg]`: the settings of secure aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecAggConfig {
    /// b: the sum lives in Z_{2^b} (Kairouz et al. 2021 find 16 bits match central DP);
    /// 2.5 bytes per parameter on the wire at 20. Default 20.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// β of conditional rounding. Default e^{−1/2} (Kairouz et al. 2021).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// The probability the sum may wrap around somewhere (sets the scale). Default 1e-4.
    #[serde(default = "default_wrap")]
    pub wrap_probability: f64,
    /// n_min: a round with fewer survivors is aborted before unmasking (nothing released);
    /// the distributed noise is calibrated to it. Default ⌈0.8 × expected clients⌉, at
    /// least 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_survivors: Option<u64>,
    /// The clients' noise shares under `secagg_distributed_dp`. Default skellam.
    #[serde(default = "default_mechanism")]
    pub mechanism: DistributedMechanism,
    /// Simulation only: the probability that a virtual client goes silent at each stage
    /// of the protocol (keys, shares, masked input, unmasking). Default 0.
    #[serde(default)]
    pub simulated_dropout: f64,
    /// Simulation only: clients that fail for good at a stage of a round (a silo whose
    /// machine dies), to replay a real federation's failures. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub simulated_failures: Vec<SimulatedFailure>,
}

/// A stage of a secure round, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Training, then the client's public keys.
    Keys,
    /// The sealed shares of the client's secrets.
    Shares,
    /// The masked input.
    MaskedInput,
    /// The shares that unmask the sum.
    Unmask,
}

impl Stage {
    /// The name in configs and Flower message types.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Keys => "keys",
            Stage::Shares => "shares",
            Stage::MaskedInput => "masked_input",
            Stage::Unmask => "unmask",
        }
    }
}

/// `{ client, round, stage }`: from `stage` of `round` on, `client` (an index into the
/// partition) sends nothing, in this round and every later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedFailure {
    /// The client, an index into the partition (clients.csv's row).
    pub client: usize,
    /// The round it fails in, from 1.
    pub round: u64,
    /// The first stage it misses.
    pub stage: Stage,
}

impl SimulatedFailure {
    /// Whether the failure silences its client at `stage` of `round`.
    pub fn silences(&self, round: u64, stage: Stage) -> bool {
        round > self.round || (round == self.round && stage >= self.stage)
    }
}

fn default_bits() -> u32 {
    20
}

fn default_beta() -> f64 {
    (-0.5f64).exp()
}

fn default_wrap() -> f64 {
    1e-4
}

fn default_mechanism() -> DistributedMechanism {
    DistributedMechanism::Skellam
}

impl Default for SecAggConfig {
    fn default() -> Self {
        SecAggConfig {
            bits: default_bits(),
            beta: default_beta(),
            wrap_probability: default_wrap(),
            min_survivors: None,
            mechanism: default_mechanism(),
            simulated_dropout: 0.0,
            simulated_failures: Vec::new(),
        }
    }
}

impl SecAggConfig {
    /// Checks the settings; `key` names the table in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        if !(2..=32).contains(&self.bits) {
            return Err(Error::invalid(format!("{key}.bits"), self.bits, "2 to 32"));
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err(Error::invalid(
                format!("{key}.beta"),
                self.beta,
                "a number in (0, 1)",
            ));
        }
        if !(self.wrap_probability > 0.0 && self.wrap_probability < 1.0) {
            return Err(Error::invalid(
                format!("{key}.wrap_probability"),
                self.wrap_probability,
                "a probability in (0, 1)",
            ));
        }
        if let Some(n) = self.min_survivors
            && n < 3
        {
            return Err(Error::invalid(
                format!("{key}.min_survivors"),
                n,
                "at least 3 (a sum of fewer clients is too close to one client's update)",
            ));
        }
        if !(0.0..1.0).contains(&self.simulated_dropout) {
            return Err(Error::invalid(
                format!("{key}.simulated_dropout"),
                self.simulated_dropout,
                "a probability in [0, 1)",
            ));
        }
        if let Some(failure) = self.simulated_failures.iter().find(|f| f.round == 0) {
            return Err(Error::invalid(
                format!("{key}.simulated_failures.round"),
                failure.round,
                "a round from 1",
            ));
        }
        Ok(())
    }

    /// n_min for `expected_clients` per round.
    pub fn min_survivors_for(&self, expected_clients: f64) -> u64 {
        self.min_survivors
            .unwrap_or_else(|| ((0.8 * expected_clients).ceil() as u64).max(3))
    }
}

/// The public setup of one secure round, known to the server and every client of it.
#[derive(Debug, Clone)]
pub struct SecureSetup {
    /// SecAgg+'s parameters (clients 0..n are the round's sampled clients in order).
    pub params: RoundParams,
    /// How an update becomes a vector over Z_{2^b}.
    pub quantiser: Quantiser,
    /// Each client's noise share (distributed DP), None with central noise.
    pub noise: Option<ShareNoise>,
    /// Seeds the clients' randomised rounding (client i's generator from this and i), in
    /// reproducible runs with central noise; None: each client draws from the OS (secure
    /// mode, and always under distributed DP, where the rounding and the noise share come
    /// from one generator the server must not know).
    pub rounding_seed: Option<[u8; 32]>,
}

/// The public setup of one homomorphic round.
#[derive(Debug, Clone)]
pub struct HeSetup {
    /// How an update becomes integers (padded to a multiple of 4,096, block rotation).
    pub quantiser: Quantiser,
    /// Each client's noise share.
    pub noise: ShareNoise,
    /// B: the largest |value| a client may send; the sum of the round's clients cannot
    /// wrap mod t. A client whose noised vector exceeds it sends nothing.
    pub bound: i64,
}

/// The clients of a secure round, stage by stage: the server's messages out, the clients'
/// answers back as bytes (what a network would carry). A client that fails or goes silent
/// is simply absent from the answer.
pub trait SecureTransport {
    /// Stage 1: the clients train on `request`, quantise their update, add their noise share
    /// and answer with their public keys. `clients[i]` is SecAgg+ client i.
    fn begin(&mut self, request: &RoundRequest, setup: &SecureSetup, clients: &[usize]) -> Inbox;
    /// Stage 2: each client's neighbours' keys in; sealed shares out.
    fn share_keys(&mut self, keys: &BTreeMap<u32, NeighbourKeys>) -> Inbox;
    /// Stage 3: the shares each client holds in; masked inputs out.
    fn masked_input(&mut self, held: &BTreeMap<u32, SharesForHolder>) -> Inbox;
    /// Stage 4: the unmask request in; the survivors' shares out.
    fn unmask(&mut self, request: &UnmaskRequest) -> Inbox;
    /// Homomorphic aggregation's one stage: the clients train on `request`, quantise their
    /// update, add their noise share and seal the integers with `sealer` (encrypt under the
    /// committee's key); the sealed uploads out. `client_seed` (tests and benchmarks only)
    /// makes the rounding and the noise reproducible; None draws them from the OS.
    fn sealed_updates(
        &mut self,
        request: &RoundRequest,
        setup: &HeSetup,
        sealer: &dyn super::he::Sealer,
        clients: &[usize],
        client_seed: Option<[u8; 32]>,
    ) -> Inbox;
}

/// [`InProcess`] virtual clients that also run secure aggregation's client side: each keeps
/// its SecAgg+ state and its quantised, noised input between stages, and (in simulation)
/// goes silent at a stage with probability `dropout`, or for good as `failures` say.
pub struct SecureInProcess<'a, M> {
    /// The clients' training.
    pub inner: InProcess<'a, M>,
    dropout: f64,
    dropout_rng: ChaCha8Rng,
    failures: Vec<SimulatedFailure>,
    /// The round under way and its clients (partition indices, by SecAgg+ id).
    round: (u64, Vec<usize>),
    clients: BTreeMap<u32, SecureClient>,
}

impl<'a, M> SecureInProcess<'a, M> {
    /// Secure rounds over `inner`'s clients; each goes silent at each stage with
    /// probability `dropout` (a seeded simulation of unreliable clients).
    pub fn new(inner: InProcess<'a, M>, dropout: f64, seed: u64) -> Self {
        SecureInProcess {
            inner,
            dropout,
            dropout_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5ec_a99),
            failures: Vec::new(),
            round: (0, Vec::new()),
            clients: BTreeMap::new(),
        }
    }

    /// The same, with clients that fail for good as `failures` say.
    pub fn with_failures(mut self, failures: &[SimulatedFailure]) -> Self {
        self.failures = failures.to_vec();
        self
    }

    /// The clients' training on `request`: the replies that arrived, by position in
    /// `clients` (the round's protocol ids).
    fn trained(&mut self, request: &RoundRequest, clients: &[usize]) -> Vec<(u32, ClientReply)>
    where
        M: DpModule + Sync,
    {
        self.inner
            .exchange(request, clients)
            .into_iter()
            .enumerate()
            .filter_map(|(i, (_, reply))| Some((i as u32, reply.ok()?)))
            .collect()
    }

    /// Whether client `id` of the round answers at `stage` (simulated dropout and
    /// failures).
    fn stays(&mut self, id: u32, stage: Stage) -> bool {
        let draw = self.dropout == 0.0 || self.dropout_rng.random::<f64>() >= self.dropout;
        let (round, clients) = &self.round;
        let client = clients.get(id as usize).copied();
        draw && !self
            .failures
            .iter()
            .any(|f| Some(f.client) == client && f.silences(*round, stage))
    }
}

impl<M: DpModule + Sync> Transport for SecureInProcess<'_, M> {
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, Result<ClientReply>)> {
        self.inner.exchange(request, clients)
    }

    fn secure(&mut self) -> Option<&mut dyn SecureTransport> {
        Some(self)
    }
}

/// A client's update as one vector of f32 (what the quantiser takes).
pub(crate) fn update_values(reply: &ClientReply) -> Vec<f32> {
    reply
        .update
        .to_f64()
        .into_iter()
        .flatten()
        .map(|v| v as f32)
        .collect()
}

/// One client's side of a secure round between stages: its SecAgg+ state and its input
/// over Z_{2^b} (quantised, with its noise share under distributed DP). The virtual
/// clients of [`SecureInProcess`] and a Flower node (`dptrain fl node`) both run it.
pub struct SecureClient {
    client: Client,
    input: Vec<u32>,
}

impl SecureClient {
    /// Stage 1 after training: client `id` of the round quantises its update (rounding
    /// from `setup.rounding_seed` when given, else from the OS), adds its noise share, and
    /// answers with its encoded public keys.
    pub fn begin(
        reply: &ClientReply,
        setup: &SecureSetup,
        graph: &Graph,
        id: u32,
    ) -> Result<(Self, Vec<u8>)> {
        let update = update_values(reply);
        let mut rng: Box<dyn rand::RngCore> = match setup.rounding_seed {
            Some(seed) => Box::new(rand_chacha::ChaCha20Rng::from_seed(client_rounding_seed(
                &seed, id,
            ))),
            None => Box::new(secure_rng()?),
        };
        let mut rounded = setup.quantiser.round(&update, &mut rng)?;
        if let Some(noise) = &setup.noise {
            if setup.rounding_seed.is_some() {
                return Err(Error::Usage(
                    "a noise share drawn from a seed the server knows protects nothing; \
                     distributed DP draws the clients' rounding and noise from the OS"
                        .into(),
                ));
            }
            noise.add_to(&mut rounded, &mut rng)?;
        }
        let input = setup.quantiser.wrap(&rounded);
        let (client, keys) = Client::new(&setup.params, graph, id, &*crypto::os_seed()?)?;
        Ok((SecureClient { client, input }, keys.encode()))
    }

    /// Stage 2: the neighbours' keys in, the encoded sealed shares out.
    pub fn share_keys(&mut self, keys: &NeighbourKeys) -> Result<Vec<u8>> {
        Ok(self.client.share_keys(keys)?.encode())
    }

    /// Stage 3: the shares this client holds in, its encoded masked input out.
    pub fn masked_input(&mut self, held: &SharesForHolder) -> Result<Vec<u8>> {
        Ok(self.client.masked_input(held, &self.input)?.encode())
    }

    /// Stage 4: the unmask request in, the encoded shares that unmask the sum out.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<Vec<u8>> {
        Ok(self.client.unmask(request)?.encode())
    }
}

/// A client after stage 1: its state and its encoded keys.
type Begun = (SecureClient, Vec<u8>);

/// Client `id`'s rounding seed in a round whose rounding seed is `seed`.
fn client_rounding_seed(seed: &[u8; 32], id: u32) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"dptrain secagg rounding");
    hash.update(seed);
    hash.update(id.to_le_bytes());
    hash.finalize().into()
}

impl<M: DpModule + Sync> SecureTransport for SecureInProcess<'_, M> {
    fn begin(&mut self, request: &RoundRequest, setup: &SecureSetup, clients: &[usize]) -> Inbox {
        self.clients.clear();
        self.round = (request.round, clients.to_vec());
        let Ok(graph) = Graph::new(&setup.params) else {
            return Inbox::new();
        };
        let trained = self.trained(request, clients);
        let prepared: Vec<(u32, Result<Begun>)> = trained
            .par_iter()
            .map(|(id, reply)| (*id, SecureClient::begin(reply, setup, &graph, *id)))
            .collect();
        let mut inbox = Inbox::new();
        for (id, result) in prepared {
            match result {
                Ok((client, keys)) => {
                    self.clients.insert(id, client);
                    if self.stays(id, Stage::Keys) {
                        inbox.push((id, keys));
                    }
                }
                Err(e) => tracing::info!("secure round: client {id} sends nothing: {e}"),
            }
        }
        inbox
    }

    fn share_keys(&mut self, keys: &BTreeMap<u32, NeighbourKeys>) -> Inbox {
        let mut inbox = Inbox::new();
        for (id, message) in keys {
            if !self.stays(*id, Stage::Shares) {
                continue;
            }
            if let Some(client) = self.clients.get_mut(id)
                && let Ok(shares) = client.share_keys(message)
            {
                inbox.push((*id, shares));
            }
        }
        inbox
    }

    fn masked_input(&mut self, held: &BTreeMap<u32, SharesForHolder>) -> Inbox {
        let mut inbox = Inbox::new();
        for (id, message) in held {
            if !self.stays(*id, Stage::MaskedInput) {
                continue;
            }
            if let Some(client) = self.clients.get_mut(id)
                && let Ok(masked) = client.masked_input(message)
            {
                inbox.push((*id, masked));
            }
        }
        inbox
    }

    fn sealed_updates(
        &mut self,
        request: &RoundRequest,
        setup: &HeSetup,
        sealer: &dyn super::he::Sealer,
        clients: &[usize],
        client_seed: Option<[u8; 32]>,
    ) -> Inbox {
        self.clients.clear();
        self.round = (request.round, clients.to_vec());
        // Each client seals right after its training, on whichever thread is free.
        let seal = |at: usize, reply: ClientReply| {
            let seed =
                client_seed.map(|seed| super::he::client_seed(&seed, request.round, at as u32));
            Ok(super::he::seal_update(&reply, setup, sealer, seed))
        };
        let sealed = self.inner.exchange_then(request, clients, &seal);
        let mut inbox = Inbox::new();
        for (id, result) in sealed.into_iter().enumerate() {
            // A client whose training failed sends nothing (and draws no dropout).
            let Ok(result) = result else { continue };
            let id = id as u32;
            match result {
                Ok(upload) if self.stays(id, Stage::Keys) => inbox.push((id, upload)),
                Ok(_) => {}
                Err(e) => tracing::info!("homomorphic round: client {id} sends nothing: {e}"),
            }
        }
        inbox
    }

    fn unmask(&mut self, request: &UnmaskRequest) -> Inbox {
        let mut inbox = Inbox::new();
        for id in &request.survivors {
            if !self.stays(*id, Stage::Unmask) {
                continue;
            }
            if let Some(client) = self.clients.get_mut(id)
                && let Ok(shares) = client.unmask(request)
            {
                inbox.push((*id, shares));
            }
        }
        self.clients.clear();
        inbox
    }
}

/// The aggregation of a client-level run, fixed for the run.
#[derive(Debug, Clone)]
pub struct SecurePlan {
    /// `secagg` or `secagg_distributed_dp`.
    pub aggregation: Aggregation,
    /// The settings.
    pub config: SecAggConfig,
    /// C.
    pub clip_norm: f64,
    /// m: the model's parameter count.
    pub dim: usize,
    /// n_min.
    pub min_survivors: u64,
    /// σ: each client's noise standard deviation (unscaled; 0 with central noise).
    pub local_stddev: f64,
    /// Seeds each round's public randomness (the rotation, the neighbour graph) and, with
    /// central noise, the clients' rounding: a reproducible run. None (secure mode): all
    /// of it from the OS.
    pub seed: Option<u64>,
}

impl SecurePlan {
    /// The scale s of a round of `clients` sampled clients.
    pub fn scale(&self, clients: u64) -> Result<f64> {
        if self.aggregation == Aggregation::HeThreshold {
            return he_scale(
                clients,
                self.clip_norm,
                self.dim,
                self.local_stddev,
                self.config.wrap_probability,
            );
        }
        scale_for_bits(
            self.config.bits,
            clients,
            self.clip_norm,
            self.dim,
            self.local_stddev,
            self.config.wrap_probability,
        )
    }

    /// The round as the distributed ledger books it with `survivors` shares summed, for a
    /// round of `sampled` clients (None with central noise).
    pub fn booked(&self, sampled: u64, survivors: u64) -> Result<Option<DistributedRound>> {
        if !self.aggregation.distributed() {
            return Ok(None);
        }
        let scale = self.scale(sampled)?;
        let noise = self.noise(scale)?;
        Ok(Some(DistributedRound {
            mechanism: self.config.mechanism,
            l2_clip: self.clip_norm,
            dim: self.padded() as u64,
            beta: self.config.beta,
            clients: survivors,
            local_stddev: noise.stddev() / scale,
            scale,
        }))
    }

    /// d: the padded dimension the round's quantiser rotates.
    pub fn padded(&self) -> usize {
        match self.aggregation {
            Aggregation::HeThreshold => he_padded_dim(self.dim),
            _ => padded_dim(self.dim),
        }
    }

    /// The quantiser and the noise shares of a homomorphic round of `clients` sampled
    /// clients, the rotation's signs from `rotation_seed` (public).
    pub fn he_setup(&self, clients: u64, rotation_seed: [u8; 32]) -> Result<HeSetup> {
        let scale = self.scale(clients)?;
        let quantiser = Quantiser::blocked(
            self.dim,
            he_block(self.dim),
            self.clip_norm,
            scale,
            self.config.beta,
            32,
            rotation_seed,
        )?;
        Ok(HeSetup {
            quantiser,
            noise: self.noise(scale)?,
            bound: crate::he::Bfv::value_bound(clients),
        })
    }

    fn noise(&self, scale: f64) -> Result<ShareNoise> {
        ShareNoise::with_stddev(
            self.config.mechanism == DistributedMechanism::Skellam,
            self.local_stddev * scale,
        )
    }

    /// The public setup of round `round` with `clients` sampled: its public seeds from
    /// the plan's seed, or fresh from the OS.
    pub fn setup(&self, round: u64, clients: u64) -> Result<SecureSetup> {
        let (rotation, graph) = match self.seed {
            Some(seed) => (
                round_seed(seed, round, b"rotation"),
                round_seed(seed, round, b"graph"),
            ),
            None => (*crypto::os_seed()?, *crypto::os_seed()?),
        };
        self.setup_with(round, clients, rotation, graph)
    }

    /// The setup of round `round` with `clients` sampled, the rotation's signs from
    /// `rotation_seed` and the neighbour graph from `graph_seed` (what a client computes
    /// from the seeds the server sends; everything else follows from the plan).
    pub fn setup_with(
        &self,
        round: u64,
        clients: u64,
        rotation_seed: [u8; 32],
        graph_seed: [u8; 32],
    ) -> Result<SecureSetup> {
        let scale = self.scale(clients)?;
        let d = padded_dim(self.dim);
        let (noise, clip) = match self.aggregation {
            Aggregation::SecaggDistributedDp => (Some(self.noise(scale)?), self.clip_norm),
            // Central noise: clip so that the rounded vector stays within C·s.
            _ => (
                None,
                clip_within(self.clip_norm * scale, d as u64, self.config.beta)? / scale,
            ),
        };
        let quantiser = Quantiser::new(
            self.dim,
            clip,
            scale,
            self.config.beta,
            self.config.bits,
            rotation_seed,
        )?;
        let clients = u32::try_from(clients)
            .map_err(|_| Error::invalid("secure round clients", clients, "at most 2^32 − 1"))?;
        let params = RoundParams::recommended(round, clients, d, self.config.bits, graph_seed)?;
        // The rounding is seeded only where no noise share shares its generator.
        let rounding_seed = match (self.seed, &noise) {
            (Some(seed), None) => Some(round_seed(seed, round, b"rounding")),
            _ => None,
        };
        Ok(SecureSetup {
            params,
            quantiser,
            noise,
            rounding_seed,
        })
    }
}

/// The seed of `what` in round `round` of a plan seeded with `seed`.
fn round_seed(seed: u64, round: u64, what: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(b"dptrain secagg round ");
    hash.update(what);
    hash.update(seed.to_le_bytes());
    hash.update(round.to_le_bytes());
    hash.finalize().into()
}

/// What a secure round did.
#[derive(Debug, Clone)]
pub struct SecureOutcome {
    /// Sampled, survivors (clients whose masked input was unmasked in the sum), dropped.
    pub outcome: RoundOutcome,
    /// Why nothing was released, if so (the model did not move).
    pub aborted: Option<String>,
    /// The distributed ledger's entry (distributed DP, a released round).
    pub booked: Option<DistributedRound>,
}

/// One client-level round of `server` with the sampled `clients` through secure
/// aggregation over `transport`.
///
/// # Privacy
/// The server receives public keys, sealed shares, masked inputs and unmasking shares; it
/// learns the survivors' sum mod 2^b and nothing else (semi-honest model: a secret needs t
/// shares, the masks are uniform). A round with fewer than n_min clients sampled, or fewer
/// than n_min survivors, is aborted before the sum is computed. Under distributed DP the sum
/// carries every survivor's noise share; the entry booked holds the realised survivors.
pub fn secure_round(
    server: &mut Server,
    transport: &mut dyn SecureTransport,
    clients: &[usize],
    plan: &SecurePlan,
) -> Result<SecureOutcome> {
    let mut outcome = RoundOutcome {
        sampled: clients.len(),
        survivors: 0,
        within_clip: 0,
        dropped: Vec::new(),
    };
    let sampled = clients.len() as u64;
    let abort = |server: &mut Server, outcome, why| abort_round(server, outcome, "secure", why);
    if sampled < plan.min_survivors {
        let why = format!(
            "{sampled} clients sampled, fewer than the {} the round needs",
            plan.min_survivors
        );
        return abort(server, outcome, why);
    }
    let request = server.request()?;
    let setup = plan.setup(request.round, sampled)?;
    let mut secagg = crate::secagg::Server::new(&setup.params)?;
    let keys = secagg.collect_keys(transport.begin(&request, &setup, clients))?;
    let held = secagg.collect_shares(transport.share_keys(&keys))?;
    let unmask = match secagg.collect_masked(transport.masked_input(&held)) {
        Ok(unmask) => unmask,
        Err(e) => return abort(server, outcome, e.to_string()),
    };
    let survivors = unmask.survivors.len() as u64;
    outcome.dropped = secagg
        .dropped()
        .iter()
        .filter_map(|(id, why)| Some((*clients.get(*id as usize)?, why.clone())))
        .collect();
    if survivors < plan.min_survivors {
        let why = format!(
            "{survivors} masked inputs arrived, fewer than the {} the round needs",
            plan.min_survivors
        );
        return abort(server, outcome, why);
    }
    let sum = match secagg.unmask(transport.unmask(&unmask)) {
        Ok(sum) => sum,
        Err(e) => return abort(server, outcome, e.to_string()),
    };
    let values = setup.quantiser.decode(&sum)?;
    release_round(server, &request, &values)?;
    outcome.survivors = survivors as usize;
    Ok(SecureOutcome {
        outcome,
        aborted: None,
        booked: plan.booked(sampled, survivors)?,
    })
}

/// Ends a `kind` round that releases nothing (the model stays), with the reason.
pub(crate) fn abort_round(
    server: &mut Server,
    outcome: RoundOutcome,
    kind: &str,
    why: String,
) -> Result<SecureOutcome> {
    tracing::info!("{kind} round {} aborted: {why}", server.round() + 1);
    server.skip_round();
    Ok(SecureOutcome {
        outcome,
        aborted: Some(why),
        booked: None,
    })
}

/// Steps the server with a round's decoded sum `values` (the model's parameters in order,
/// cut to their sizes).
pub(crate) fn release_round(
    server: &mut Server,
    request: &RoundRequest,
    values: &[f64],
) -> Result<()> {
    let sizes = request.params.sizes();
    let sum = real!(request.params.dtype(), "aggregate sum", |T| Ok(T::wrap(
        split(values, &sizes)
            .map(|part| part.iter().map(|&v| T::of(v)).collect())
            .collect()
    )))?;
    server.finish_with_sum(sum)
}

/// `values` cut into consecutive pieces of `sizes`.
fn split<'v>(values: &'v [f64], sizes: &'v [usize]) -> impl Iterator<Item = &'v [f64]> + 'v {
    sizes.iter().scan(0usize, move |at, &size| {
        let part = &values[*at..*at + size];
        *at += size;
        Some(part)
    })
}
