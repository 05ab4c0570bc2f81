//! One round of client-level DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018, Alg. 1),
//! transport-agnostic: server-send → client-compute → server-aggregate.
//!
//! The server's state and the clients' replies are plain values ([`RoundRequest`],
//! [`ClientReply`]); a [`Transport`] carries them. [`InProcess`] runs the clients as virtual
//! clients in one process (the simulation every test uses) and assumes nothing the network
//! transport could not do: it sees only the request, answers only with the reply.
//!
//! The server side reuses the DP step's stages: the sum of the clipped client updates goes
//! through a [`Privatizer`] (N(0, z²C²)) and an [`Update`] whose divisor is the *expected*
//! number of clients qN (never the realised one) and whose inner optimizer is the server
//! optimizer (FedAvg, FedAvgM, FedAdam) stepping on the pseudo-gradient −Δ.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use candle_core::{Tensor, Var};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::{ClippingConfig, clip_factor_of};
use crate::model::DpModule;
use crate::real::real;
use crate::train::dist::lock;
use crate::train::{
    DpOptimizer, DpSettings, NoiseMode, OptimizerConfig, Privatizer, SumValue, Sums, Update,
};

use super::partition::Partition;

/// What the server sends to every client of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRequest {
    /// The round's number, from 1.
    pub round: u64,
    /// The global model's parameters, in the module's order.
    pub params: Sums,
    /// C: each client clips its whole update to this L2 norm (infinite under silo-level
    /// DP, where no update is clipped as a whole).
    pub clip_norm: f64,
}

/// What a client sends back: its update clipped to C.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientReply {
    /// Δ_k · min(1, C / (‖Δ_k‖ + 1e-6)), Δ_k = local − global parameters.
    pub update: Sums,
    /// Whether ‖Δ_k‖ ≤ C before clipping: the bit adaptive clipping counts (Andrew et al.
    /// 2021), which the server cannot tell from the clipped update.
    pub within_clip: bool,
}

/// Carries a round's request to the sampled clients and their replies back.
pub trait Transport {
    /// Sends `request` to each of `clients` (indices into the partition) and returns each
    /// one's reply or why it has none (failed, timed out): a client without a reply is
    /// dropped from the round, which still completes.
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, Result<ClientReply>)>;

    /// The same clients reached through secure aggregation's stages
    /// ([`super::secure::SecureTransport`]), if this transport runs them (None: it does not,
    /// and a run asking for secure aggregation refuses to start).
    fn secure(&mut self) -> Option<&mut dyn super::secure::SecureTransport> {
        None
    }
}

/// A client's local training: E epochs of minibatch SGD (or any inner optimizer) over its
/// own examples, non-private (the privacy is client-level, from the server's noise).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTraining {
    /// Local epochs E.
    pub epochs: usize,
    /// Local minibatch size.
    pub batch_size: usize,
    /// The local optimizer (fresh each round).
    pub optimizer: OptimizerConfig,
}

/// Virtual clients in one process: modules whose parameters are set to the request's
/// before each client trains, the clients' data as index sets into one training set.
///
/// With W modules, a round's clients are trained on W threads at once (contiguous shares
/// of the round's clients, one module each); the replies come back in the clients' order
/// and each client's training depends only on the request, its data and its seed, so the
/// round's result is the same for any W.
pub struct InProcess<'a, M> {
    /// The modules the clients train, one per worker thread (their parameters are
    /// overwritten by each request); at least one.
    pub modules: Vec<M>,
    /// The training set the partition indexes.
    pub data: &'a Dataset,
    /// Each client's examples.
    pub partition: &'a Partition,
    /// How clients train.
    pub local: LocalTraining,
    /// Seeds the clients' minibatch order (per round and client).
    pub seed: u64,
}

impl<M: DpModule + Sync> InProcess<'_, M> {
    /// The clipped update of `client` for `request`, trained on `module`.
    fn compute(&self, module: &M, request: &RoundRequest, client: usize) -> Result<ClientReply> {
        let examples = self.partition.clients.get(client).ok_or_else(|| {
            Error::Tensor(format!(
                "client {client} of a partition of {}",
                self.partition.len()
            ))
        })?;
        let params = module.parameters();
        set_params(&params, &request.params)?;
        let local = self.local;
        let mut optimizer = DpOptimizer::new(
            module,
            DpSettings {
                optimizer: local.optimizer,
                clipping: ClippingConfig::default(),
                noise_multiplier: 0.0,
                expected_batch_size: local.batch_size as f64,
                max_physical_batch: local.batch_size.max(1),
                private: false,
                noise: NoiseMode::Seeded(0),
            },
        )?;
        let mut order = examples.clone();
        let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(
            self.seed ^ request.round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ client as u64,
        );
        for _ in 0..local.epochs {
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
            for batch in order.chunks(local.batch_size.max(1)) {
                optimizer.step(module, self.data, batch)?;
            }
        }
        let (update, norm) = real!(
            request.params.dtype(),
            "client update",
            |T| clipped_delta::<T>(&params, &request.params, request.clip_norm)
        )?;
        Ok(ClientReply {
            update,
            within_clip: norm <= request.clip_norm,
        })
    }
}

impl<M: DpModule + Sync> Transport for InProcess<'_, M> {
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, Result<ClientReply>)> {
        self.exchange_then(request, clients, &|_, reply| Ok(reply))
            .into_iter()
            .zip(clients)
            .map(|(reply, &client)| (client, reply))
            .collect()
    }
}

impl<M: DpModule + Sync> InProcess<'_, M> {
    /// Trains `clients` on `request` and hands each reply, with its position in `clients`,
    /// to `then` (a client's own work after training: sealing its upload, say). The results
    /// come back in the clients' order.
    ///
    /// Training keeps [`InProcess`]'s contiguous shares (one module per thread), but `then`
    /// runs on whichever thread is free: a thread whose share is done takes the others'
    /// finished replies, as clients on their own machines would seal while others still
    /// train. Each call depends only on its reply, so the result is the same for any W.
    pub fn exchange_then<R: Send>(
        &self,
        request: &RoundRequest,
        clients: &[usize],
        then: &(dyn Fn(usize, ClientReply) -> Result<R> + Sync),
    ) -> Vec<Result<R>> {
        let Some(first) = self.modules.first() else {
            let none = || Error::Usage("InProcess clients without a module".into());
            return clients.iter().map(|_| Err(none())).collect();
        };
        if self.modules.len() == 1 || clients.len() < 2 {
            return clients
                .iter()
                .enumerate()
                .map(|(at, &client)| then(at, self.compute(first, request, client)?))
                .collect();
        }
        let share = clients.len().div_ceil(self.modules.len());
        let parts = clients.chunks(share).count();
        let results = Mutex::new((0..clients.len()).map(|_| None).collect::<Vec<_>>());
        let queue = Mutex::new(Finishing {
            replies: VecDeque::new(),
            training: parts,
        });
        let ready = Condvar::new();
        let store = |at: usize, result: Result<R>| lock(&results)[at] = Some(result);
        std::thread::scope(|scope| {
            let mut threads = Vec::with_capacity(parts);
            for (k, (part, module)) in clients.chunks(share).zip(&self.modules).enumerate() {
                let (queue, ready, store) = (&queue, &ready, &store);
                threads.push(scope.spawn(move || {
                    // Counts this thread out of training even if it panics, so that no
                    // other thread waits for it forever.
                    let _trained = TrainingDone { queue, ready };
                    for (j, &client) in part.iter().enumerate() {
                        match self.compute(module, request, client) {
                            Ok(reply) => {
                                lock(queue).replies.push_back((k * share + j, reply));
                                ready.notify_one();
                            }
                            Err(e) => store(k * share + j, Err(e)),
                        }
                    }
                    drop(_trained);
                    while let Some((at, reply)) = next_reply(queue, ready) {
                        store(at, then(at, reply));
                    }
                }));
            }
            // A thread that panicked leaves its clients without a result (an error below).
            for thread in threads {
                let _ = thread.join();
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(Error::Usage("its training thread panicked".into())))
            })
            .collect()
    }
}

/// The replies trained and not yet finished, and how many threads still train.
struct Finishing {
    replies: VecDeque<(usize, ClientReply)>,
    training: usize,
}

/// Marks a thread's training done when dropped (also when it panics).
struct TrainingDone<'a> {
    queue: &'a Mutex<Finishing>,
    ready: &'a Condvar,
}

impl Drop for TrainingDone<'_> {
    fn drop(&mut self) {
        lock(self.queue).training -= 1;
        self.ready.notify_all();
    }
}

/// The next reply to finish, waiting while some thread still trains; None when all is done.
fn next_reply(queue: &Mutex<Finishing>, ready: &Condvar) -> Option<(usize, ClientReply)> {
    let mut state = lock(queue);
    loop {
        if let Some(reply) = state.replies.pop_front() {
            return Some(reply);
        }
        if state.training == 0 {
            return None;
        }
        state = ready
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

/// The parameters' values as [`Sums`] in their dtype.
pub fn read_params(params: &[Var]) -> Result<Sums> {
    let dtype = params
        .first()
        .map_or(candle_core::DType::F32, |p| p.dtype());
    real!(dtype, "parameters", |T| Ok(T::wrap(
        params
            .iter()
            .map(|p| Ok(p.as_tensor().flatten_all()?.to_vec1::<T>()?))
            .collect::<Result<Vec<_>>>()?
    )))
}

/// Sets every parameter to `values`.
pub fn set_params(params: &[Var], values: &Sums) -> Result<()> {
    real!(values.dtype(), "parameters", |T| {
        let values = values.values::<T>("parameters")?;
        if values.len() != params.len() {
            return Err(Error::Tensor(format!(
                "{} parameter tensors sent for a model of {}",
                values.len(),
                params.len()
            )));
        }
        for (var, v) in params.iter().zip(values.iter()) {
            if v.len() != var.elem_count() {
                return Err(Error::Tensor(format!(
                    "a parameter of {} values sent for one of {}",
                    v.len(),
                    var.elem_count()
                )));
            }
            var.set(&Tensor::from_slice(v, var.shape(), var.device())?)?;
        }
        Ok(())
    })
}

/// The L2 norm of all values, in f64.
fn l2_norm<T: SumValue>(values: &[Vec<T>]) -> f64 {
    values
        .iter()
        .flatten()
        .map(|v| v.wide() * v.wide())
        .sum::<f64>()
        .sqrt()
}

/// (local − global) scaled to L2 norm at most C (McMahan et al. 2018, ClipFn), and the norm
/// before clipping.
fn clipped_delta<T: SumValue>(
    params: &[Var],
    global: &Sums,
    clip_norm: f64,
) -> Result<(Sums, f64)> {
    let global = global.values::<T>("client update")?;
    let mut delta: Vec<Vec<T>> = Vec::with_capacity(params.len());
    for (var, g) in params.iter().zip(global.iter()) {
        let mut local = var.as_tensor().flatten_all()?.to_vec1::<T>()?;
        local.iter_mut().zip(g).for_each(|(l, g)| *l -= *g);
        delta.push(local);
    }
    let norm = l2_norm(&delta);
    // A factor of exactly 1 (most updates within C) leaves the values as they are.
    let factor = T::of(clip_factor_of(norm, clip_norm));
    if factor != T::one() {
        delta.iter_mut().flatten().for_each(|v| *v *= factor);
    }
    Ok((T::wrap(delta), norm))
}

/// What the server did in a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    /// Clients sampled.
    pub sampled: usize,
    /// Clients whose update arrived (the others were dropped).
    pub survivors: usize,
    /// Survivors whose update was within C before clipping.
    pub within_clip: usize,
    /// Why each dropped client was dropped.
    pub dropped: Vec<(usize, String)>,
}

/// The server of client-level DP-FedAvg: global parameters, the privatizer and the server
/// update.
pub struct Server {
    params: Vec<Var>,
    /// C for client-level DP; None for silo-level DP (the silos' own steps are private).
    clip_norm: Option<f64>,
    privatizer: Box<dyn Privatizer>,
    update: Update,
    round: u64,
    /// Silo-level: each silo's weight in the average (None: a plain sum).
    weights: Option<Vec<f64>>,
}

impl Server {
    /// A server for `params` (the global model) with clip norm C, a privatizer adding
    /// N(0, z²C²) to the sum, and an update dividing by the expected clients qN.
    pub fn new(
        params: Vec<Var>,
        clip_norm: f64,
        privatizer: Box<dyn Privatizer>,
        update: Update,
    ) -> Result<Self> {
        ClippingConfig {
            clip_norm,
            ..ClippingConfig::default()
        }
        .validate()?;
        Ok(Server {
            params,
            clip_norm: Some(clip_norm),
            privatizer,
            update,
            round: 0,
            weights: None,
        })
    }

    /// The server of plain (non-private) FedAvg: no clip, no noise, the sum divided by
    /// the expected clients as in the private run it is compared with.
    pub fn non_private(params: Vec<Var>, update: Update) -> Self {
        Server {
            params,
            clip_norm: Some(f64::INFINITY),
            privatizer: Box::new(crate::train::NoNoise),
            update,
            round: 0,
            weights: None,
        }
    }

    /// The server of silo-level DP: the average of the silos' updates weighted by
    /// `weights` (one per silo, e.g. its number of examples; renormalised over the silos
    /// that replied), stepped by `server_optimizer`. The silos' own DP-SGD steps are what is
    /// private; the average is post-processing.
    pub fn averaging(
        params: Vec<Var>,
        weights: Vec<f64>,
        server_optimizer: &crate::train::ServerOptimizerConfig,
    ) -> Result<Self> {
        if weights.is_empty() || weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(Error::invalid(
                "silo weights",
                format!("{weights:?}"),
                "one finite weight above 0 per silo",
            ));
        }
        let update = Update::new(1.0, server_optimizer.build(&params)?)?;
        Ok(Server {
            params,
            clip_norm: None,
            privatizer: Box::new(crate::train::NoNoise),
            update,
            round: 0,
            weights: Some(weights),
        })
    }

    /// Rounds completed.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// C of the next rounds, and the noise multiplier of the sum (adaptive clipping moves
    /// both). Silo-level servers clip nothing and refuse.
    pub fn set_clip_and_noise(&mut self, clip_norm: f64, noise_multiplier: f64) -> Result<()> {
        if self.clip_norm.is_none() {
            return Err(Error::Usage(
                "a silo-level server neither clips nor adds noise".into(),
            ));
        }
        self.clip_norm = Some(clip_norm);
        self.privatizer.set_noise(noise_multiplier, clip_norm)
    }

    /// The server's state for a checkpoint: rounds done, the noise stream's position and
    /// the server optimizer's state.
    pub fn state(&self) -> (u64, u64, crate::train::OptimizerState) {
        (
            self.round,
            self.privatizer.position(),
            self.update.inner().state(),
        )
    }

    /// Restores [`Server::state`] (the parameters are restored by the caller).
    pub fn restore(
        &mut self,
        round: u64,
        noise_position: u64,
        optimizer: &crate::train::OptimizerState,
    ) -> Result<()> {
        self.round = round;
        self.privatizer.seek(noise_position);
        self.update.inner_mut().restore(&self.params, optimizer)
    }

    /// The global parameters.
    pub fn params(&self) -> &[Var] {
        &self.params
    }

    /// One round with the sampled `clients` over `transport`.
    ///
    /// # Privacy
    /// Each reply is re-clipped to C here too (a client cannot exceed it), so the sum has
    /// sensitivity C for adding or removing one client's whole data; N(0, z²C²) is added
    /// once; the result is divided by qN, public. With Poisson-sampled clients that is
    /// `PoissonSampled(q, Gaussian(z))`, whoever drops out (a dropped client is one not
    /// sampled, which the analysis covers).
    pub fn run_round(
        &mut self,
        transport: &mut dyn Transport,
        clients: &[usize],
    ) -> Result<RoundOutcome> {
        let request = self.request()?;
        let global = request.params.clone();
        let replies = transport.exchange(&request, clients);
        let sizes = global.sizes();
        let mut sum = Sums::zeros(&sizes, global.dtype())?;
        let mut total_weight = 0.0;
        let mut outcome = RoundOutcome {
            sampled: clients.len(),
            survivors: 0,
            within_clip: 0,
            dropped: Vec::new(),
        };
        for (client, reply) in replies {
            let (update, within_clip) = match reply {
                Ok(reply) if reply.update.sizes() == sizes => (reply.update, reply.within_clip),
                Ok(_) => {
                    outcome
                        .dropped
                        .push((client, "an update of the wrong shape".into()));
                    continue;
                }
                Err(e) => {
                    outcome.dropped.push((client, e.to_string()));
                    continue;
                }
            };
            let clip_norm = self.clip_norm.unwrap_or(f64::INFINITY);
            let weight = match &self.weights {
                Some(weights) => match weights.get(client) {
                    Some(w) => *w,
                    None => {
                        outcome
                            .dropped
                            .push((client, "a reply from an unknown silo".into()));
                        continue;
                    }
                },
                None => 1.0,
            };
            let added = real!(sum.dtype(), "aggregate", |T| add_clipped::<T>(
                &mut sum, update, clip_norm, weight
            ))?;
            if !added {
                outcome
                    .dropped
                    .push((client, "an update with a non-finite value".into()));
                continue;
            }
            outcome.survivors += 1;
            outcome.within_clip += usize::from(within_clip);
            total_weight += weight;
        }
        // Silo-level: the weighted mean over the silos that replied (post-processing of
        // their private updates). Client-level: the sum, divided by qN in `Update`.
        let scale = match (&self.weights, total_weight > 0.0) {
            (Some(_), true) => -1.0 / total_weight,
            _ => -1.0,
        };
        real!(sum.dtype(), "aggregate", |T| scale_all::<T>(
            &mut sum, scale
        ))?;
        self.step_on(sum)?;
        Ok(outcome)
    }

    /// What the next round sends to its clients: the global parameters and C.
    pub fn request(&self) -> Result<RoundRequest> {
        Ok(RoundRequest {
            round: self.round + 1,
            params: read_params(&self.params)?,
            clip_norm: self.clip_norm.unwrap_or(f64::INFINITY),
        })
    }

    /// Ends a round with the sum of the survivors' updates (clipped to C), from secure
    /// aggregation: the privatizer's noise is added (none under distributed DP, where the
    /// clients added it) and the server optimizer steps, as in [`Server::run_round`].
    pub fn finish_with_sum(&mut self, mut sum: Sums) -> Result<()> {
        real!(sum.dtype(), "aggregate", |T| scale_all::<T>(&mut sum, -1.0))?;
        self.step_on(sum)
    }

    /// Ends a round that released nothing (secure aggregation aborted): the model stays.
    pub fn skip_round(&mut self) {
        self.round += 1;
    }

    /// The server optimizer steps on the pseudo-gradient −(Σ Δ + Z)/(qN) from `minus_sum`
    /// = −Σ Δ; Z is symmetric, so it is drawn onto −Σ Δ.
    fn step_on(&mut self, mut minus_sum: Sums) -> Result<()> {
        let ahead = self
            .privatizer
            .draw_ahead(&minus_sum.sizes(), minus_sum.dtype())?;
        self.privatizer.privatize(&mut minus_sum, ahead)?;
        self.update.apply(&self.params, minus_sum)?;
        self.round += 1;
        Ok(())
    }
}

/// Multiplies every value of `sums` by `scale`.
fn scale_all<T: SumValue>(sums: &mut Sums, scale: f64) -> Result<()> {
    let scale = T::of(scale);
    sums.values_mut::<T>("aggregate")?
        .iter_mut()
        .flatten()
        .for_each(|v| *v *= scale);
    Ok(())
}

/// sum += weight · update · min(1, C/(‖update‖ + 1e-6)): the server's own clip of a reply.
/// False (and nothing added) when the update holds a non-finite value.
fn add_clipped<T: SumValue>(
    sum: &mut Sums,
    mut update: Sums,
    clip_norm: f64,
    weight: f64,
) -> Result<bool> {
    let update = update.values_mut::<T>("client update")?;
    let norm = l2_norm(update);
    if !norm.is_finite() {
        return Ok(false);
    }
    // A reply already within C (every honest one) is added unchanged.
    let factor = match (norm <= clip_norm, weight == 1.0) {
        (true, true) => T::one(),
        (true, false) => T::of(weight),
        (false, _) => T::of(weight * clip_factor_of(norm, clip_norm)),
    };
    for (acc, values) in sum
        .values_mut::<T>("aggregate")?
        .iter_mut()
        .zip(update.iter())
    {
        for (a, v) in acc.iter_mut().zip(values) {
            *a += *v * factor;
        }
    }
    Ok(true)
}
