//! A client's side of a SecAgg+ round, stage by stage (Bonawitz et al. 2017, Fig. 4; Bell et
//! al. 2020, Alg. 2 restricted to the neighbour graph):
//!
//! 1. [`Client::new`]: two X25519 key pairs (one to seal shares, one for pairwise masks) and a
//!    self-mask seed b_u, all fresh; the public keys go to the server.
//! 2. [`Client::share_keys`]: Shamir shares (threshold t) of b_u and of the mask key s_u for
//!    each neighbour that advertised keys, each sealed for its holder.
//! 3. [`Client::masked_input`]: y_u = x_u + PRG(b_u) + Σ_v ±PRG(s_uv) mod 2^b over the
//!    neighbours whose shares arrived (+ when u < v, − otherwise, so pairs cancel).
//! 4. [`Client::unmask`]: for each neighbour, the share of b_v if v sent its masked input,
//!    or of s_v if it dropped after stage 2; never both for one v, whatever it is asked.

use std::collections::BTreeMap;

use rand_core_10::SeedableRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::crypto::{self, SHARE_BYTES, Secret, Transcript};
use super::graph::{Graph, RoundParams};
use super::messages::{
    AdvertiseKeys, EncryptedShares, MaskedInput, NeighbourKeys, PublicKeyBytes, Share,
    SharesForHolder, UnmaskRequest, UnmaskShares,
};
use crate::error::{Error, Result};

/// The HKDF label of pairwise mask seeds.
pub const MASK_LABEL: &[u8] = b"mask";
/// The HKDF label of share-sealing keys.
const SEAL_LABEL: &[u8] = b"seal";

/// Where a client is in the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Advertised,
    Shared,
    Masked,
    Done,
}

/// What a holder released about one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Released {
    Seed,
    Key,
}

/// The shares a holder keeps for one owner: (share of b_v, share of s_v).
type HeldShares = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// One client of one round.
pub struct Client {
    params: RoundParams,
    transcript: Transcript,
    id: u32,
    neighbours: Vec<u32>,
    cipher_secret: StaticSecret,
    mask_secret: StaticSecret,
    mask_secret_bytes: Secret,
    self_seed: Secret,
    rng: chacha20::ChaCha20Rng,
    /// Stage 1's keys of the neighbours that advertised them.
    keys: BTreeMap<u32, (PublicKeyBytes, PublicKeyBytes)>,
    /// Stage 2's shares held for each owner: (share of b_v, share of s_v).
    held: BTreeMap<u32, HeldShares>,
    /// Stage 2's sealing key with each neighbour (the same key opens what it sends back).
    seal_keys: BTreeMap<u32, Secret>,
    released: BTreeMap<u32, Released>,
    stage: Stage,
    /// Tests only: a shift of the pairwise mask shared with a peer (the same at both ends),
    /// to realise another equally likely draw of that uniform mask.
    #[cfg(test)]
    pub(super) mask_shift: BTreeMap<u32, Vec<u32>>,
}

impl Client {
    /// Client `id` of the round of `params` on `graph`, its secrets drawn from a ChaCha20
    /// stream seeded by `seed` (32 bytes from [`crypto::os_seed`] in deployment; fixed in
    /// tests). Returns the client and its stage-1 message.
    pub fn new(
        params: &RoundParams,
        graph: &Graph,
        id: u32,
        seed: &[u8; 32],
    ) -> Result<(Client, AdvertiseKeys)> {
        params.validate()?;
        if !params.has_client(id) {
            return Err(Error::invalid(
                "secagg client",
                id,
                format!("an id below the round's {} clients", params.clients),
            ));
        }
        let mut rng = chacha20::ChaCha20Rng::from_seed(*seed);
        let mut draw = || {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand_core_10::Rng::fill_bytes(&mut rng, bytes.as_mut());
            bytes
        };
        let (cipher_secret, cipher_key) = crypto::key_pair(&draw());
        let mask_secret_bytes = draw();
        let (mask_secret, mask_key) = crypto::key_pair(&mask_secret_bytes);
        let self_seed = draw();
        let client = Client {
            params: params.clone(),
            transcript: Transcript::of(params),
            id,
            neighbours: graph.neighbours(id).to_vec(),
            cipher_secret,
            mask_secret,
            mask_secret_bytes,
            self_seed,
            rng,
            keys: BTreeMap::new(),
            held: BTreeMap::new(),
            seal_keys: BTreeMap::new(),
            released: BTreeMap::new(),
            stage: Stage::Advertised,
            #[cfg(test)]
            mask_shift: BTreeMap::new(),
        };
        let message = AdvertiseKeys {
            round: params.round,
            client: id,
            cipher_key,
            mask_key,
        };
        Ok((client, message))
    }

    /// The client's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn expect(&self, stage: Stage, round: u64, what: &str) -> Result<()> {
        if self.stage != stage {
            return Err(Error::Usage(format!(
                "client {}: {what} out of order (at {:?})",
                self.id, self.stage
            )));
        }
        if round != self.params.round {
            return Err(Error::Malformed {
                what: "round",
                message: format!(
                    "client {}: {what} of round {round} in round {}",
                    self.id, self.params.round
                ),
            });
        }
        Ok(())
    }

    /// Stage 2: shares of b_u and s_u for every neighbour in `keys`, sealed for each.
    ///
    /// # Privacy
    /// Any t holders reconstruct a secret; fewer learn nothing of it (Shamir). Each share
    /// travels sealed under a key only the owner and its holder can derive.
    pub fn share_keys(&mut self, keys: &NeighbourKeys) -> Result<EncryptedShares> {
        self.expect(Stage::Advertised, keys.round, "neighbour keys")?;
        for (v, cipher, mask) in &keys.keys {
            if !self.neighbours.contains(v) {
                return Err(Error::Malformed {
                    what: "NeighbourKeys",
                    message: format!("client {v} is not a neighbour of client {}", self.id),
                });
            }
            self.keys.insert(*v, (*cipher, *mask));
        }
        // The holders: the neighbours that advertised keys, and the client itself (Bonawitz
        // et al. share among all of U1, the sharer included).
        let mut holders: Vec<u32> = self.keys.keys().copied().collect();
        holders.push(self.id);
        holders.sort_unstable();
        let threshold = self.params.threshold as usize;
        if holders.len() < threshold {
            return Err(Error::Aborted(format!(
                "client {} has {} holders for its shares (itself included), {threshold} needed",
                self.id,
                holders.len()
            )));
        }
        let seed_shares = crypto::split(&self.self_seed, threshold, holders.len(), &mut self.rng)?;
        let key_shares = crypto::split(
            &self.mask_secret_bytes,
            threshold,
            holders.len(),
            &mut self.rng,
        )?;
        let mut shares = Vec::with_capacity(holders.len());
        for (i, &v) in holders.iter().enumerate() {
            if v == self.id {
                self.held.insert(
                    v,
                    (
                        Zeroizing::new(seed_shares[i].to_vec()),
                        Zeroizing::new(key_shares[i].to_vec()),
                    ),
                );
                continue;
            }
            let mut plaintext = Zeroizing::new(Vec::with_capacity(8 + 2 * SHARE_BYTES));
            plaintext.extend_from_slice(&self.id.to_le_bytes());
            plaintext.extend_from_slice(&v.to_le_bytes());
            plaintext.extend_from_slice(&seed_shares[i]);
            plaintext.extend_from_slice(&key_shares[i]);
            let key = crypto::agree(
                &self.cipher_secret,
                &self.keys[&v].0,
                SEAL_LABEL,
                &self.transcript,
                self.id,
                v,
            )?;
            shares.push((
                v,
                crypto::seal(&key, &self.transcript, self.id, v, &plaintext)?,
            ));
            self.seal_keys.insert(v, key);
        }
        self.stage = Stage::Shared;
        Ok(EncryptedShares {
            round: self.params.round,
            client: self.id,
            shares,
        })
    }

    /// Stage 3: opens the shares held for each neighbour that finished stage 2, and masks
    /// `input` (values mod 2^b) with the self mask and a pairwise mask per such neighbour.
    ///
    /// # Privacy
    /// y_u is uniform on Z_{2^b}^m to anyone without b_u or all of u's pairwise keys: the
    /// self mask hides it from the server alone, the pairwise masks from the server that
    /// learns b_u at unmasking.
    pub fn masked_input(&mut self, held: &SharesForHolder, input: &[u32]) -> Result<MaskedInput> {
        self.expect(Stage::Shared, held.round, "shares")?;
        if input.len() != self.params.words {
            return Err(Error::invalid(
                "secagg input",
                input.len(),
                format!("{} values", self.params.words),
            ));
        }
        let modulus = self.params.modulus_mask();
        if let Some(v) = input.iter().find(|&&v| v > modulus) {
            return Err(Error::invalid(
                "secagg input",
                v,
                format!("values below 2^{}", self.params.bits),
            ));
        }
        for (owner, ciphertext) in &held.shares {
            let Some(key) = self.seal_keys.get(owner) else {
                return Err(Error::Malformed {
                    what: "SharesForHolder",
                    message: format!("shares from client {owner}, which is not a holder's peer"),
                });
            };
            let plaintext = crypto::open(key, &self.transcript, *owner, self.id, ciphertext)?;
            if plaintext.len() != 8 + 2 * SHARE_BYTES
                || plaintext[..4] != owner.to_le_bytes()
                || plaintext[4..8] != self.id.to_le_bytes()
            {
                return Err(Error::Malformed {
                    what: "sealed share",
                    message: format!("from client {owner}: wrong length or ids"),
                });
            }
            self.held.insert(
                *owner,
                (
                    Zeroizing::new(plaintext[8..8 + SHARE_BYTES].to_vec()),
                    Zeroizing::new(plaintext[8 + SHARE_BYTES..].to_vec()),
                ),
            );
        }
        let mut values = input.to_vec();
        crypto::apply_mask(&mut values, &self.self_seed, true);
        for &v in self.held.keys().filter(|&&v| v != self.id) {
            let seed = crypto::agree(
                &self.mask_secret,
                &self.keys[&v].1,
                MASK_LABEL,
                &self.transcript,
                self.id,
                v,
            )?;
            crypto::apply_mask(&mut values, &seed, self.id < v);
            #[cfg(test)]
            if let Some(shift) = self.mask_shift.get(&v) {
                for (value, s) in values.iter_mut().zip(shift) {
                    *value = match self.id < v {
                        true => value.wrapping_add(*s),
                        false => value.wrapping_sub(*s),
                    };
                }
            }
        }
        values.iter_mut().for_each(|v| *v &= modulus);
        self.stage = Stage::Masked;
        Ok(MaskedInput {
            round: self.params.round,
            client: self.id,
            bits: self.params.bits,
            values,
        })
    }

    /// Stage 4: the shares the server needs, never a seed share and a key share of one
    /// owner (a request asking for both, now or across calls, is refused).
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskShares> {
        self.expect(Stage::Masked, request.round, "unmask request")?;
        if request
            .survivors
            .iter()
            .any(|s| request.dropped.binary_search(s).is_ok())
        {
            return Err(Error::Malformed {
                what: "UnmaskRequest",
                message: "a client listed both as survivor and as dropped".into(),
            });
        }
        if request.survivors.binary_search(&self.id).is_err() {
            return Err(Error::Malformed {
                what: "UnmaskRequest",
                message: format!("client {} sent its input but is not a survivor", self.id),
            });
        }
        if request.survivors.len() < self.params.threshold as usize {
            return Err(Error::Aborted(format!(
                "{} survivors, fewer than the threshold {}",
                request.survivors.len(),
                self.params.threshold
            )));
        }
        let mut seed_shares = Vec::new();
        let mut key_shares = Vec::new();
        for (owner, (seed_share, key_share)) in &self.held {
            let wanted = match (
                request.survivors.binary_search(owner).is_ok(),
                request.dropped.binary_search(owner).is_ok(),
            ) {
                (true, _) => Released::Seed,
                (false, true) => Released::Key,
                (false, false) => continue,
            };
            match self.released.get(owner) {
                Some(before) if *before != wanted => {
                    return Err(Error::Malformed {
                        what: "UnmaskRequest",
                        message: format!(
                            "client {owner}'s {} share asked for after its {} share was \
                             released",
                            name(wanted),
                            name(*before)
                        ),
                    });
                }
                _ => {}
            }
            self.released.insert(*owner, wanted);
            let (list, share) = match wanted {
                Released::Seed => (&mut seed_shares, seed_share),
                Released::Key => (&mut key_shares, key_share),
            };
            list.push(Share {
                owner: *owner,
                bytes: share.to_vec(),
            });
        }
        self.stage = Stage::Done;
        Ok(UnmaskShares {
            round: self.params.round,
            client: self.id,
            seed_shares,
            key_shares,
        })
    }
}

fn name(released: Released) -> &'static str {
    match released {
        Released::Seed => "self-mask seed",
        Released::Key => "mask key",
    }
}
