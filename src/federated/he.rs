//! Client-level rounds through homomorphic aggregation (issue 17): each client quantises its
//! clipped update exactly as under secure aggregation (`secagg::quantise`, blocks of 4,096),
//! adds its Skellam or discrete Gaussian noise share, and encrypts the integers under the
//! committee's threshold key (`crate::he`). The server adds the ciphertexts without reading
//! them; t committee members decrypt the sum, which is already noised. The ledger books each
//! round as distributed DP with its realised survivors, as `secagg_distributed_dp` does.
//!
//! The server's side is behind [`IntegerAggregator`]: [`ThresholdHe`] encrypts; a scheme
//! can be swapped without touching the rounds. [`PlainIntegers`] sums the same integers in
//! the clear: the reference a homomorphic run must equal bit for bit, and the baseline of
//! its cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::round::{ClientReply, RoundOutcome, Server};
use super::secure::{
    HeConfig, HeSetup, SecureOutcome, SecurePlan, SecureTransport, abort_round, release_round,
    update_values,
};
use crate::error::{Error, Result};
use crate::he::{Bfv, CiphertextSum, CommitteeKey, CommitteeSpec, Member};
use crate::secagg::server::Inbox;

/// The client's side of an [`IntegerAggregator`]: seals one client's integers.
pub trait Sealer: Sync {
    /// Seals `values`, refusing any with |v| > `bound` (the sum could wrap).
    fn seal(&self, values: &[i64], bound: i64, rng: &mut ChaCha20Rng) -> Result<Vec<u8>>;
}

/// What a round's aggregation costs, summed over the run.
#[derive(Debug, Default)]
pub struct AggregationCost {
    /// Nanoseconds the clients spent sealing (all clients together).
    pub seal_nanos: AtomicU64,
    /// Bytes the clients uploaded.
    pub upload_bytes: AtomicU64,
    /// Uploads sealed.
    pub uploads: AtomicU64,
    /// Nanoseconds the server spent summing.
    pub sum_nanos: AtomicU64,
    /// Nanoseconds the committee spent on decryption shares (all members together).
    pub share_nanos: AtomicU64,
    /// Decryption shares made (one per member per decryption).
    pub shares: AtomicU64,
    /// Nanoseconds the combiner spent.
    pub combine_nanos: AtomicU64,
    /// New committee keys made after the first (a key's flooding budget ran out).
    pub rekeys: AtomicU64,
}

impl AggregationCost {
    fn add(counter: &AtomicU64, start: Instant) {
        counter.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Milliseconds per event of `nanos` over `count` events (0 with none).
    pub fn per(nanos: &AtomicU64, count: &AtomicU64) -> f64 {
        match count.load(Ordering::Relaxed) {
            0 => 0.0,
            n => nanos.load(Ordering::Relaxed) as f64 / n as f64 / 1e6,
        }
    }
}

/// The server's side of a homomorphic round: sums sealed uploads and has the sum opened.
pub trait IntegerAggregator: Send {
    /// Readies a round of `clients` uploads of `values` integers (a new committee key when
    /// the current one's flooding budget cannot cover the decryption). Errors when the round
    /// cannot be aggregated (more clients than the committee's noise bound allows).
    fn begin_round(&mut self, values: usize, clients: u64) -> Result<()>;
    /// The clients' side.
    fn sealer(&self) -> &dyn Sealer;
    /// Checks and sums the uploads (a malformed or repeated one is dropped with its reason)
    /// and, when at least `min` were summed, opens the sum: the integer sum and the ids
    /// summed. With fewer than `min`, nothing is opened: Ok(None).
    fn open_sum(&mut self, uploads: &Inbox, values: usize, min: u64) -> Result<Opened>;
    /// What it cost so far.
    fn cost(&self) -> &AggregationCost;
}

/// The result of [`IntegerAggregator::open_sum`].
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The sum, None when fewer than the minimum uploads were valid (nothing opened).
    pub sum: Option<Vec<i64>>,
    /// Ids of the uploads summed.
    pub summed: Vec<u32>,
    /// Ids of the uploads refused, and why.
    pub refused: Vec<(u32, String)>,
}

/// Homomorphic aggregation under a t-of-n committee key (`crate::he`), the committee run in
/// process. Members take turns (each decryption's set starts one member further), so the
/// flooding budget wears evenly; a new key is made when a member's would run out.
pub struct ThresholdHe {
    bfv: Bfv,
    spec: CommitteeSpec,
    key: CommitteeKey,
    members: Vec<Member>,
    decryptions: u64,
    cost: AggregationCost,
}

impl std::fmt::Debug for ThresholdHe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThresholdHe")
            .field("spec", &self.spec)
            .field("epoch", &self.key.epoch)
            .finish_non_exhaustive()
    }
}

impl ThresholdHe {
    /// The committee of `config` for rounds of at most `max_clients` uploads and at least
    /// `min_clients` (members refuse to decrypt fewer). Runs the known-answer test first.
    pub fn new(config: HeConfig, max_clients: u64, min_clients: u64) -> Result<Self> {
        let bfv = Bfv::new()?;
        crate::he::known_answer_test(&bfv)?;
        let spec = CommitteeSpec {
            members: config.committee,
            threshold: config.threshold,
            lambda: config.lambda,
            max_clients,
            min_clients: min_clients.max(2),
        };
        spec.validate("federated.client_level.he")?;
        let (key, members) = crate::he::generate(&bfv, spec, 0, &mut crate::he::os_rng()?)?;
        Ok(ThresholdHe {
            bfv,
            spec,
            key,
            members,
            decryptions: 0,
            cost: AggregationCost::default(),
        })
    }

    /// The next decryption's set: t members, starting one further each time.
    fn next_set(&self) -> Vec<u32> {
        let n = self.spec.members as u64;
        (0..self.spec.threshold as u64)
            .map(|i| ((self.decryptions + i) % n) as u32 + 1)
            .collect()
    }
}

impl Sealer for ThresholdHe {
    fn seal(&self, values: &[i64], bound: i64, rng: &mut ChaCha20Rng) -> Result<Vec<u8>> {
        let start = Instant::now();
        let upload = self.key.encrypt(&self.bfv, values, bound, rng)?;
        AggregationCost::add(&self.cost.seal_nanos, start);
        self.cost
            .upload_bytes
            .fetch_add(upload.len() as u64, Ordering::Relaxed);
        self.cost.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(upload)
    }
}

impl IntegerAggregator for ThresholdHe {
    fn begin_round(&mut self, values: usize, clients: u64) -> Result<()> {
        if clients > self.spec.max_clients {
            return Err(Error::Aborted(format!(
                "{clients} clients sampled, more than the {} the committee's noise bound \
                 covers",
                self.spec.max_clients
            )));
        }
        let cost = (Bfv::chunks(values) * crate::he::DEGREE) as u64;
        let set = self.next_set();
        if set
            .iter()
            .any(|&k| self.members[k as usize - 1].remaining() < cost)
        {
            let epoch = self.key.epoch + 1;
            let (key, members) =
                crate::he::generate(&self.bfv, self.spec, epoch, &mut crate::he::os_rng()?)?;
            self.key = key;
            self.members = members;
            self.cost.rekeys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sealer(&self) -> &dyn Sealer {
        self
    }

    fn open_sum(&mut self, uploads: &Inbox, values: usize, min: u64) -> Result<Opened> {
        let start = Instant::now();
        let mut sum = CiphertextSum::new(&self.bfv, self.key.epoch, values);
        let mut opened = Opened::default();
        for (id, upload) in uploads {
            match sum.add(upload) {
                Ok(()) => opened.summed.push(*id),
                Err(e) => opened.refused.push((*id, e.to_string())),
            }
        }
        AggregationCost::add(&self.cost.sum_nanos, start);
        if sum.clients() < min.max(self.spec.min_clients) {
            return Ok(opened);
        }
        let set = self.next_set();
        self.decryptions += 1;
        // The members of the set work independently (in a deployment, on their own
        // machines): one per worker thread here.
        let (bfv, cost) = (&self.bfv, &self.cost);
        let shares = self
            .members
            .par_iter_mut()
            .filter(|member| set.contains(&member.index()))
            .map(|member| {
                let start = Instant::now();
                let share = member.decryption_shares(bfv, &sum, &set);
                AggregationCost::add(&cost.share_nanos, start);
                cost.shares.fetch_add(1, Ordering::Relaxed);
                share
            })
            .collect::<Result<Vec<_>>>()?;
        let start = Instant::now();
        opened.sum = Some(crate::he::combine(&self.bfv, &self.spec, &sum, &shares)?);
        AggregationCost::add(&self.cost.combine_nanos, start);
        Ok(opened)
    }

    fn cost(&self) -> &AggregationCost {
        &self.cost
    }
}

/// The same integers summed in the clear: no protection against the server beyond the
/// noise shares. The reference a homomorphic run must equal, and its cost baseline.
#[derive(Debug, Default)]
pub struct PlainIntegers {
    cost: AggregationCost,
}

impl Sealer for PlainIntegers {
    fn seal(&self, values: &[i64], bound: i64, _rng: &mut ChaCha20Rng) -> Result<Vec<u8>> {
        let start = Instant::now();
        if let Some((at, v)) = values.iter().enumerate().find(|(_, v)| v.abs() > bound) {
            return Err(Error::invalid(
                format!("integer upload value {at}"),
                v,
                format!("|v| ≤ {bound}"),
            ));
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        AggregationCost::add(&self.cost.seal_nanos, start);
        self.cost
            .upload_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.cost.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }
}

impl IntegerAggregator for PlainIntegers {
    fn begin_round(&mut self, _values: usize, _clients: u64) -> Result<()> {
        Ok(())
    }

    fn sealer(&self) -> &dyn Sealer {
        self
    }

    fn open_sum(&mut self, uploads: &Inbox, values: usize, min: u64) -> Result<Opened> {
        let start = Instant::now();
        let mut sum = vec![0i64; values];
        let mut opened = Opened::default();
        for (id, upload) in uploads {
            if upload.len() != 8 * values {
                opened
                    .refused
                    .push((*id, format!("{} bytes, not {}", upload.len(), 8 * values)));
                continue;
            }
            for (s, word) in sum.iter_mut().zip(upload.chunks_exact(8)) {
                *s += i64::from_le_bytes(word.try_into().expect("8 bytes"));
            }
            opened.summed.push(*id);
        }
        AggregationCost::add(&self.cost.sum_nanos, start);
        if opened.summed.len() as u64 >= min {
            opened.sum = Some(sum);
        }
        Ok(opened)
    }

    fn cost(&self) -> &AggregationCost {
        &self.cost
    }
}

/// Client `id`'s seed of round `round` from a run's reproducibility seed (tests and
/// benchmarks only).
pub fn client_seed(seed: &[u8; 32], round: u64, id: u32) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"dptrain he client");
    hash.update(seed);
    hash.update(round.to_le_bytes());
    hash.update(id.to_le_bytes());
    hash.finalize().into()
}

/// A client's work after training: its update quantised (`setup.quantiser`), its noise
/// share added, sealed. Randomness from `seed` when given (reproducible runs), else from a
/// generator the OS seeds.
pub fn seal_update(
    reply: &ClientReply,
    setup: &HeSetup,
    sealer: &dyn Sealer,
    seed: Option<[u8; 32]>,
) -> Result<Vec<u8>> {
    let update = update_values(reply);
    let mut rng = match seed {
        Some(seed) => ChaCha20Rng::from_seed(seed),
        None => crate::he::os_rng()?,
    };
    let mut rounded = setup.quantiser.round(&update, &mut rng)?;
    setup.noise.add_to(&mut rounded, &mut rng)?;
    sealer.seal(&rounded, setup.bound, &mut rng)
}

/// One client-level round of `server` with the sampled `clients` through homomorphic
/// aggregation over `transport`.
///
/// # Privacy
/// The server receives ciphertexts under the committee's key and learns the sum of the
/// summed clients' noised, quantised updates and nothing else (semi-honest; fewer than t
/// members hold no information on the key). A round with fewer than n_min clients sampled,
/// or fewer than n_min valid uploads, is aborted before anything is decrypted. The ledger's
/// entry holds the realised survivors.
pub fn he_round(
    server: &mut Server,
    transport: &mut dyn SecureTransport,
    clients: &[usize],
    plan: &SecurePlan,
    aggregator: &mut dyn IntegerAggregator,
    seed: Option<[u8; 32]>,
) -> Result<SecureOutcome> {
    let mut outcome = RoundOutcome {
        sampled: clients.len(),
        survivors: 0,
        within_clip: 0,
        dropped: Vec::new(),
    };
    let sampled = clients.len() as u64;
    let abort =
        |server: &mut Server, outcome, why| abort_round(server, outcome, "homomorphic", why);
    if sampled < plan.min_survivors {
        let why = format!(
            "{sampled} clients sampled, fewer than the {} the round needs",
            plan.min_survivors
        );
        return abort(server, outcome, why);
    }
    let request = server.request()?;
    let rotation_seed = match seed {
        Some(seed) => client_seed(&seed, request.round, u32::MAX),
        None => *crate::secagg::crypto::os_seed()?,
    };
    let setup = plan.he_setup(sampled, rotation_seed)?;
    let values = setup.quantiser.padded();
    if let Err(e) = aggregator.begin_round(values, sampled) {
        return abort(server, outcome, e.to_string());
    }
    let uploads = transport.sealed_updates(&request, &setup, aggregator.sealer(), clients, seed);
    // A decryption that fails (a member refuses, a share does not check) releases nothing:
    // the round is aborted, the run goes on.
    let opened = match aggregator.open_sum(&uploads, values, plan.min_survivors) {
        Ok(opened) => opened,
        Err(e) => return abort(server, outcome, format!("decryption failed: {e}")),
    };
    let arrived: Vec<u32> = uploads.iter().map(|(id, _)| *id).collect();
    outcome.dropped = (0..sampled as u32)
        .filter(|id| !opened.summed.contains(id))
        .filter_map(|id| {
            let why = match opened.refused.iter().find(|(r, _)| *r == id) {
                Some((_, why)) => why.clone(),
                None if arrived.contains(&id) => "refused".into(),
                None => "sent nothing".into(),
            };
            Some((*clients.get(id as usize)?, why))
        })
        .collect();
    let Some(sum) = opened.sum else {
        let why = format!(
            "{} valid uploads, fewer than the {} the round needs",
            opened.summed.len(),
            plan.min_survivors
        );
        return abort(server, outcome, why);
    };
    let survivors = opened.summed.len() as u64;
    let decoded = setup.quantiser.decode_centred(&sum)?;
    release_round(server, &request, &decoded)?;
    outcome.survivors = survivors as usize;
    Ok(SecureOutcome {
        outcome,
        aborted: None,
        booked: plan.booked(sampled, survivors)?,
    })
}
