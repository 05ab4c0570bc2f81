//! The server's side of a SecAgg+ round: it routes the clients' messages stage by stage and
//! finally unmasks the sum of the survivors' inputs mod 2^b.
//!
//! Each `collect_*` takes the messages that arrived in a stage as (sender, bytes): `sender`
//! is the id the transport authenticated. A message that does not decode, belongs to another
//! round (a replay), names another sender, comes from a client outside the round or twice
//! from one client, or does not fit the stage drops its sender with the reason logged
//! ([`Server::dropped`]); the round goes on while enough clients survive, and aborts with
//! [`Error::Aborted`] (revealing no sum) when a secret it needs has fewer than t shares.

use std::collections::{BTreeMap, BTreeSet};

use super::client::MASK_LABEL;
use super::crypto::{self, Transcript};
use super::graph::{Graph, RoundParams};
use super::messages::{
    AdvertiseKeys, EncryptedShares, MaskedInput, NeighbourKeys, PublicKeyBytes, SharesForHolder,
    UnmaskRequest, UnmaskShares,
};
use crate::error::{Error, Result};

/// A stage's incoming messages: (authenticated sender, bytes).
pub type Inbox = Vec<(u32, Vec<u8>)>;

/// The server of one round.
pub struct Server {
    params: RoundParams,
    transcript: Transcript,
    graph: Graph,
    keys: BTreeMap<u32, (PublicKeyBytes, PublicKeyBytes)>,
    /// U2's sealed shares: owner → (holder, ciphertext).
    shares: BTreeMap<u32, Vec<(u32, Vec<u8>)>>,
    masked: BTreeMap<u32, Vec<u32>>,
    request: Option<UnmaskRequest>,
    dropped: Vec<(u32, String)>,
    /// Secrets reconstructed so far: (owner, true for a self-mask seed / false for a key).
    reconstructed: Vec<(u32, bool)>,
}

impl Server {
    /// The server of the round of `params`.
    pub fn new(params: &RoundParams) -> Result<Self> {
        Ok(Server {
            params: params.clone(),
            transcript: Transcript::of(params),
            graph: Graph::new(params)?,
            keys: BTreeMap::new(),
            shares: BTreeMap::new(),
            masked: BTreeMap::new(),
            request: None,
            dropped: Vec::new(),
            reconstructed: Vec::new(),
        })
    }

    /// The round's neighbour graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Every client dropped so far, with why (for the run's report).
    pub fn dropped(&self) -> &[(u32, String)] {
        &self.dropped
    }

    /// The secrets reconstructed at unmasking: (owner, true for its self-mask seed, false
    /// for its mask key).
    pub fn reconstructed(&self) -> &[(u32, bool)] {
        &self.reconstructed
    }

    fn drop_client(&mut self, client: u32, why: String) {
        tracing::info!(
            "secure aggregation round {}: client {client} dropped: {why}",
            self.params.round
        );
        self.dropped.push((client, why));
    }

    /// Decodes each message of `inbox`, keeping those that are well formed, of this round,
    /// from the sender they name, from a client `eligible` to send, and the first from it.
    fn admit<M>(
        &mut self,
        inbox: Inbox,
        decode: fn(&[u8]) -> Result<M>,
        header: fn(&M) -> (u64, Option<u32>),
        eligible: impl Fn(u32) -> bool,
    ) -> BTreeMap<u32, M> {
        let mut admitted = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for (sender, bytes) in inbox {
            if !seen.insert(sender) {
                admitted.remove(&sender);
                self.drop_client(sender, "sent twice in one stage".into());
                continue;
            }
            if !self.params.has_client(sender) || !eligible(sender) {
                self.drop_client(sender, "not a client of this stage of the round".into());
                continue;
            }
            let message = match decode(&bytes) {
                Ok(message) => message,
                Err(e) => {
                    self.drop_client(sender, e.to_string());
                    continue;
                }
            };
            let (round, named) = header(&message);
            if round != self.params.round {
                self.drop_client(
                    sender,
                    format!(
                        "a message of round {round} (replayed?) in round {}",
                        self.params.round
                    ),
                );
                continue;
            }
            if named.is_some_and(|named| named != sender) {
                self.drop_client(sender, format!("a message naming client {named:?}"));
                continue;
            }
            admitted.insert(sender, message);
        }
        admitted
    }

    /// Stage 1: the clients' public keys in; each client's neighbours' keys out (for the
    /// clients with at least t neighbours that advertised keys).
    pub fn collect_keys(&mut self, inbox: Inbox) -> Result<BTreeMap<u32, NeighbourKeys>> {
        let admitted = self.admit(
            inbox,
            AdvertiseKeys::decode,
            |m| (m.round, Some(m.client)),
            |_| true,
        );
        for (client, message) in admitted {
            self.keys
                .insert(client, (message.cipher_key, message.mask_key));
        }
        let threshold = self.params.threshold as usize;
        let mut out = BTreeMap::new();
        let clients: Vec<u32> = self.keys.keys().copied().collect();
        for u in clients {
            let keys: Vec<_> = self
                .graph
                .neighbours(u)
                .iter()
                .filter_map(|v| self.keys.get(v).map(|(c, m)| (*v, *c, *m)))
                .collect();
            // Its shares go to these neighbours and to itself.
            if keys.len() + 1 < threshold {
                self.drop_client(
                    u,
                    format!(
                        "{} neighbours advertised keys, {} needed to hold its shares",
                        keys.len(),
                        threshold - 1
                    ),
                );
                continue;
            }
            out.insert(
                u,
                NeighbourKeys {
                    round: self.params.round,
                    keys,
                },
            );
        }
        Ok(out)
    }

    /// Stage 2: the clients' sealed shares in; each holder's ciphertexts out.
    pub fn collect_shares(&mut self, inbox: Inbox) -> Result<BTreeMap<u32, SharesForHolder>> {
        let keys: BTreeSet<u32> = self.keys.keys().copied().collect();
        let admitted = self.admit(
            inbox,
            EncryptedShares::decode,
            |m| (m.round, Some(m.client)),
            |c| keys.contains(&c),
        );
        for (owner, message) in admitted {
            let expected: Vec<u32> = self
                .graph
                .neighbours(owner)
                .iter()
                .copied()
                .filter(|v| self.keys.contains_key(v))
                .collect();
            let holders: Vec<u32> = message.shares.iter().map(|(v, _)| *v).collect();
            if holders != expected {
                self.drop_client(
                    owner,
                    format!("shares for {holders:?}, expected its neighbours {expected:?}"),
                );
                continue;
            }
            self.shares.insert(owner, message.shares);
        }
        let mut out: BTreeMap<u32, SharesForHolder> = BTreeMap::new();
        for (owner, shares) in &self.shares {
            for (holder, ciphertext) in shares {
                if self.shares.contains_key(holder) {
                    out.entry(*holder)
                        .or_insert_with(|| SharesForHolder {
                            round: self.params.round,
                            shares: Vec::new(),
                        })
                        .shares
                        .push((*owner, ciphertext.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Stage 3: the masked inputs in; the unmask request out (the same for every survivor).
    pub fn collect_masked(&mut self, inbox: Inbox) -> Result<UnmaskRequest> {
        let sharing: BTreeSet<u32> = self.shares.keys().copied().collect();
        let admitted = self.admit(
            inbox,
            MaskedInput::decode,
            |m| (m.round, Some(m.client)),
            |c| sharing.contains(&c),
        );
        let modulus = self.params.modulus_mask();
        for (client, message) in admitted {
            if message.bits != self.params.bits
                || message.values.len() != self.params.words
                || message.values.iter().any(|&v| v > modulus)
            {
                self.drop_client(
                    client,
                    format!(
                        "a masked input of {} values, expected {} below 2^{}",
                        message.values.len(),
                        self.params.words,
                        self.params.bits
                    ),
                );
                continue;
            }
            self.masked.insert(client, message.values);
        }
        if self.masked.is_empty() {
            return Err(Error::Aborted("no masked input arrived".into()));
        }
        let request = UnmaskRequest {
            round: self.params.round,
            survivors: self.masked.keys().copied().collect(),
            dropped: sharing
                .iter()
                .copied()
                .filter(|c| !self.masked.contains_key(c))
                .collect(),
        };
        self.request = Some(request.clone());
        Ok(request)
    }

    /// Stage 4: the survivors' shares in; the sum of the survivors' inputs mod 2^b out, or
    /// [`Error::Aborted`] if a needed secret has fewer than t shares (no sum is computed).
    ///
    /// # Privacy
    /// The server reconstructs the self-mask seed of every survivor and the mask key of
    /// every client dropped after stage 2, never both for one client (the clients refuse,
    /// and [`Server::reconstructed`] records what was rebuilt).
    pub fn unmask(&mut self, inbox: Inbox) -> Result<Vec<u32>> {
        let Some(request) = self.request.clone() else {
            return Err(Error::Usage("unmask before the masked inputs".into()));
        };
        let survivors: BTreeSet<u32> = request.survivors.iter().copied().collect();
        let admitted = self.admit(
            inbox,
            UnmaskShares::decode,
            |m| (m.round, Some(m.client)),
            |c| survivors.contains(&c),
        );
        let mut seeds: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        let mut keys: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for (holder, message) in admitted {
            // A holder's shares count only for its neighbours, of the kind the request asked.
            // (A survivor holds a share of its own seed too.)
            let holds = |owner: u32| owner == holder || self.graph.linked(holder, owner);
            let fits = message
                .seed_shares
                .iter()
                .all(|s| survivors.contains(&s.owner) && holds(s.owner))
                && message
                    .key_shares
                    .iter()
                    .all(|s| request.dropped.binary_search(&s.owner).is_ok() && holds(s.owner));
            if !fits {
                self.drop_client(
                    holder,
                    "shares of clients it does not hold, or of the wrong kind".into(),
                );
                continue;
            }
            for share in message.seed_shares {
                seeds.entry(share.owner).or_default().push(share.bytes);
            }
            for share in message.key_shares {
                keys.entry(share.owner).or_default().push(share.bytes);
            }
        }
        let threshold = self.params.threshold as usize;
        // Every secret needed must have t shares before any is used: otherwise abort.
        for (kind, owners, got) in [
            ("self-mask seed", &request.survivors, &seeds),
            ("mask key", &request.dropped, &keys),
        ] {
            for owner in owners {
                let have = got.get(owner).map_or(0, Vec::len);
                let needed = match kind {
                    // A dropped client whose masks no survivor used needs no recovery.
                    "mask key"
                        if !self
                            .graph
                            .neighbours(*owner)
                            .iter()
                            .any(|v| survivors.contains(v)) =>
                    {
                        0
                    }
                    _ => threshold,
                };
                if have < needed {
                    return Err(Error::Aborted(format!(
                        "client {owner}'s {kind} has {have} shares, {threshold} needed; no sum \
                         is revealed"
                    )));
                }
            }
        }
        let words = self.params.words;
        let mut sum = vec![0u32; words];
        for values in self.masked.values() {
            for (s, v) in sum.iter_mut().zip(values) {
                *s = s.wrapping_add(*v);
            }
        }
        for owner in &request.survivors {
            let seed = crypto::combine(&seeds[owner], threshold)?;
            self.reconstructed.push((*owner, true));
            crypto::apply_mask(&mut sum, &seed, false);
        }
        for dropped in &request.dropped {
            let users: Vec<u32> = self
                .graph
                .neighbours(*dropped)
                .iter()
                .copied()
                .filter(|v| survivors.contains(v))
                .collect();
            if users.is_empty() {
                continue;
            }
            let secret = crypto::combine(&keys[dropped], threshold)?;
            self.reconstructed.push((*dropped, false));
            let (mask_secret, _) = crypto::key_pair(&secret);
            for u in users {
                let peer = self.keys[&u].1;
                let seed = crypto::agree(
                    &mask_secret,
                    &peer,
                    MASK_LABEL,
                    &self.transcript,
                    u,
                    *dropped,
                )?;
                // Survivor u added +PRG when u < dropped, − otherwise: take it back.
                crypto::apply_mask(&mut sum, &seed, u > *dropped);
            }
        }
        let modulus = self.params.modulus_mask();
        sum.iter_mut().for_each(|v| *v &= modulus);
        Ok(sum)
    }
}
