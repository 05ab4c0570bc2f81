//! Threshold decryption by a committee: t of n members decrypt the aggregate, fewer learn
//! nothing, and each decryption share is flooded so that repeated rounds do not leak the key.
//!
//! **Key generation** (no dealer; Mouchet, Bertrand and Hubaux, "An efficient threshold
//! access-structure for RLWE-based multiparty homomorphic encryption", J. Cryptology 2023,
//! eprint 2022/780). Member j draws a secret s_j and noise e_j (centred binomial), publishes
//! p_j = e_j − a·s_j for a public a, and Shamir-shares s_j (Shamir 1979, degree t − 1, per
//! coefficient and per prime qᵢ) to the members. Member k keeps σ_k = Σ_j f_j(k), a share of
//! s = Σ_j s_j; the public key is (Σ_j p_j, a) = (e − a·s, a).
//!
//! **Decryption of (c₀, c₁)** by a set S of exactly t members: member k sends
//! d_k = λ_k^S·σ_k·c₁ + E_k, λ_k^S the Lagrange coefficient at 0 (applied before the
//! noise, so the noise is never multiplied), E_k uniform on [−B, B]. Then
//! c₀ + Σ d_k = ⌊Q/t⌉·m + e + Σ E_k, which decodes to m while t·B + |e| < Q/(2t).
//!
//! **Flooding** (Asharov et al., Eurocrypt 2012, smudging lemma): the revealed noise
//! e + E_k is within statistical distance |e|/(2B) of E_k alone per coefficient, so over the
//! D coefficients a key ever decrypts it is within D·B_e/(2B) ≤ 2^−λ when
//! B = 2^λ·D·B_e. B_e bounds the aggregate's noise with failure 2^−64 (Hoeffding, below).
//! D is therefore a per-key budget: each member counts the coefficients it has decrypted and
//! refuses beyond it; the committee then makes a new key (the next epoch).

use fhe::bfv::{Ciphertext, Encoding, Plaintext, PublicKey, SecretKey};
use fhe::proto::bfv::PublicKey as PublicKeyProto;
use fhe_math::rq::traits::TryConvertFrom;
use fhe_math::rq::{Poly, Representation};
use fhe_traits::{DeserializeParametrized, FheDecoder, FheDecrypter};
use prost::Message;
use rand::{CryptoRng, Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use super::bfv::{Bfv, CBD_VARIANCE, CiphertextSum, DEGREE, MODULI, PLAINTEXT, WIRE_VERSION};
use crate::error::{Error, Result};

/// Magic of a decryption share.
const SHARE_MAGIC: &[u8; 4] = b"DPHS";
/// Header of a share: magic, version, parameter id, epoch, member, set (bitmask), chunk,
/// chunks, digest of the sum.
const SHARE_HEADER: usize = 4 + 2 + 8 + 4 + 4 + 8 + 4 + 4 + 32;
/// Members at most (the set travels as a 64-bit mask).
pub const MAX_MEMBERS: u32 = 64;
/// The failure probability of the noise bound B_e: 2^−64.
const NOISE_FAILURE_LN: f64 = 64.0 * std::f64::consts::LN_2 + std::f64::consts::LN_2;

/// The committee's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitteeSpec {
    /// n: members, each holding a key share.
    pub members: u32,
    /// t: members needed to decrypt (fewer learn nothing).
    pub threshold: u32,
    /// λ: statistical security of the flooding (at least 40).
    pub lambda: u32,
    /// K: the most uploads one decryption sums (sets the noise bound B_e).
    pub max_clients: u64,
    /// The fewest uploads a member agrees to decrypt the sum of (at least 2: one upload
    /// alone is one client's update).
    pub min_clients: u64,
}

impl CommitteeSpec {
    /// Checks the ranges; `key` names the config table in errors.
    pub fn validate(&self, key: &str) -> Result<()> {
        if !(2..=MAX_MEMBERS).contains(&self.members) {
            return Err(Error::invalid(
                format!("{key}.committee"),
                self.members,
                format!("2 to {MAX_MEMBERS} members"),
            ));
        }
        if !(2..=self.members).contains(&self.threshold) {
            return Err(Error::invalid(
                format!("{key}.threshold"),
                self.threshold,
                format!("2 to the committee size {}", self.members),
            ));
        }
        if !(40..=128).contains(&self.lambda) {
            return Err(Error::invalid(
                format!("{key}.lambda"),
                self.lambda,
                "40 to 128 bits of statistical security",
            ));
        }
        if self.min_clients < 2 || self.min_clients > self.max_clients {
            return Err(Error::invalid(
                format!("{key}.min_clients"),
                self.min_clients,
                format!("2 to the most clients summed ({})", self.max_clients),
            ));
        }
        Ok(())
    }

    /// B_e: a bound on the noise of a sum of K fresh public-key encryptions under the
    /// committee's key, exceeded with probability at most 2^−64 per coefficient.
    ///
    /// A fresh ciphertext's noise is u·e + e₁ + e₂·s (u, e₁, e₂ fresh, |·| ≤ 2v; e and s the
    /// key's, sums of n members' draws, |·| ≤ 2v·n). Each coefficient is a sum of 2·degree
    /// independent zero-mean products bounded by c = (2v)²·n per client, plus |e₁| ≤ 2v;
    /// Hoeffding: P(|Σ| ≥ c·√(2m·ln(2/p))) ≤ p for m = 2·degree·K terms.
    pub fn noise_bound(&self) -> f64 {
        let v = 2.0 * CBD_VARIANCE as f64;
        let c = v * v * f64::from(self.members);
        let m = 2.0 * DEGREE as f64 * self.max_clients as f64;
        c * (2.0 * m * NOISE_FAILURE_LN).sqrt() + v * self.max_clients as f64
    }

    /// The flooding plan: the key's budget D (coefficients a member decrypts under one key)
    /// and the flooding bound B = 2^λ·D·B_e, the largest D such that
    /// t·B + B_e + K·t_plain stays below half the decryption ceiling Q/(2t) (a factor 2 of
    /// margin). Errors when not even one ciphertext fits.
    pub fn flooding(&self, bfv: &Bfv) -> Result<Flooding> {
        let noise = self.noise_bound();
        let ceiling =
            bfv.noise_ceiling() / 2.0 - noise - self.max_clients as f64 * PLAINTEXT as f64;
        let per_coefficient = f64::from(self.threshold) * 2f64.powi(self.lambda as i32) * noise;
        let budget = (ceiling / per_coefficient).floor();
        if budget.is_nan() || budget < DEGREE as f64 {
            return Err(Error::invalid(
                "he committee",
                format!(
                    "λ = {}, threshold {}, {} clients",
                    self.lambda, self.threshold, self.max_clients
                ),
                "settings whose flooded decryption fits the noise ceiling Q/(2t) ≈ 2^85 \
                 (lower λ, the threshold or the clients per round)",
            ));
        }
        let budget = budget.min(2f64.powi(52)) as u64;
        let bound = 2f64.powi(self.lambda as i32) * budget as f64 * noise;
        Ok(Flooding {
            budget,
            bound: bound.ceil() as u128,
        })
    }
}

/// A key's flooding plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flooding {
    /// D: coefficients each member may decrypt under one key.
    pub budget: u64,
    /// B: each share's flooding noise is uniform on [−B, B].
    pub bound: u128,
}

/// The committee's public key of one epoch.
#[derive(Debug, Clone)]
pub struct CommitteeKey {
    /// The epoch (uploads and shares carry it).
    pub epoch: u32,
    pub(crate) key: PublicKey,
}

/// One member: its index (1..=n), its share of the epoch's secret key, the coefficients it
/// has decrypted under it.
pub struct Member {
    index: u32,
    epoch: u32,
    spec: CommitteeSpec,
    flooding: Flooding,
    /// σ_k mod q₀ and mod q₁ (coefficient form).
    share: Zeroizing<Vec<u64>>,
    issued: u64,
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("index", &self.index)
            .field("epoch", &self.epoch)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// A rand 0.9 CSPRNG seeded from the OS (`fhe` takes rand 0.9 generators).
pub fn os_rng() -> Result<ChaCha20Rng> {
    Ok(ChaCha20Rng::from_seed(*crate::secagg::crypto::os_seed()?))
}

/// x mod q for a signed x.
fn residue(x: i128, q: u64) -> u64 {
    x.rem_euclid(i128::from(q)) as u64
}

/// Runs the committee's key generation for epoch `epoch` (the members' messages exchanged
/// in process): the public key and the n members with their shares. Each member's own
/// secret s_j is dropped (zeroised) once shared.
pub fn generate<R: RngCore + CryptoRng>(
    bfv: &Bfv,
    spec: CommitteeSpec,
    epoch: u32,
    rng: &mut R,
) -> Result<(CommitteeKey, Vec<Member>)> {
    spec.validate("he")?;
    let flooding = spec.flooding(bfv)?;
    let n = spec.members as usize;
    let t = spec.threshold as usize;
    let mut crs = [0u8; 32];
    rng.fill_bytes(&mut crs);
    let a = Poly::random_from_seed(&bfv.ctx, Representation::Ntt, crs);
    let mut p0 = Poly::zero(&bfv.ctx, Representation::Ntt);
    let mut shares: Vec<Zeroizing<Vec<u64>>> = (0..n)
        .map(|_| Zeroizing::new(vec![0u64; 2 * DEGREE]))
        .collect();
    let mut coefficients = vec![0u64; t];
    for _ in 0..n {
        let s = Zeroizing::new(
            fhe_util::sample_vec_cbd(DEGREE, CBD_VARIANCE, rng)
                .map_err(|e| Error::Usage(format!("HE key generation: {e}")))?,
        );
        let e = Zeroizing::new(
            fhe_util::sample_vec_cbd(DEGREE, CBD_VARIANCE, rng)
                .map_err(|e| Error::Usage(format!("HE key generation: {e}")))?,
        );
        let to_ntt = |values: &[i64]| -> Result<Poly> {
            let mut poly =
                Poly::try_convert_from(values, &bfv.ctx, false, Representation::PowerBasis)
                    .map_err(|e| Error::Usage(format!("HE key generation: {e}")))?;
            poly.change_representation(Representation::Ntt);
            Ok(poly)
        };
        let s_ntt = Zeroizing::new(to_ntt(&s)?);
        p0 += &to_ntt(&e)?;
        p0 -= &(&a * s_ntt.as_ref());
        // Shamir shares of every coefficient of s_j, per prime: f(x) = s + r₁x + … + r_{t−1}x^{t−1}.
        for (m, (q, modulus)) in MODULI.iter().zip(&bfv.moduli).enumerate() {
            for (i, &secret) in s.iter().enumerate() {
                coefficients[0] = residue(i128::from(secret), *q);
                for c in coefficients.iter_mut().skip(1) {
                    *c = rng.random_range(0..*q);
                }
                for (k, share) in shares.iter_mut().enumerate() {
                    let x = (k + 1) as u64;
                    // Horner's rule.
                    let value = coefficients
                        .iter()
                        .rev()
                        .fold(0u64, |acc, &c| modulus.add(modulus.mul(acc, x), c));
                    let slot = &mut share[m * DEGREE + i];
                    *slot = modulus.add(*slot, value);
                }
            }
        }
        coefficients.iter_mut().for_each(|c| *c = 0);
    }
    let ct = Ciphertext::new(vec![p0, a], &bfv.par)
        .map_err(|e| Error::Usage(format!("HE public key: {e}")))?;
    let proto = PublicKeyProto {
        c: Some((&ct).into()),
    };
    let key = PublicKey::from_bytes(&proto.encode_to_vec(), &bfv.par)
        .map_err(|e| Error::Usage(format!("HE public key: {e}")))?;
    let members = shares
        .into_iter()
        .enumerate()
        .map(|(k, share)| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            Member {
                index: k as u32 + 1,
                epoch,
                spec,
                flooding,
                share,
                issued: 0,
                rng: ChaCha20Rng::from_seed(seed),
            }
        })
        .collect();
    Ok((CommitteeKey { epoch, key }, members))
}

/// λ_k^S mod q: the Lagrange coefficient of member k at 0 for the set S.
fn lagrange(modulus: &fhe_math::zq::Modulus, set: &[u32], k: u32) -> Result<u64> {
    let mut value = 1u64;
    for &j in set.iter().filter(|&&j| j != k) {
        let denominator = modulus.sub(u64::from(j), u64::from(k));
        let inverse = modulus
            .inv(denominator)
            .ok_or_else(|| Error::invalid("he decryption set", j, "distinct members"))?;
        value = modulus.mul(value, modulus.mul(u64::from(j), inverse));
    }
    Ok(value)
}

/// The set as a 64-bit mask (bit k − 1 for member k), checked: exactly `threshold`
/// distinct members in 1..=`members`.
fn set_mask(set: &[u32], spec: &CommitteeSpec) -> Result<u64> {
    let mut mask = 0u64;
    for &k in set {
        if k == 0 || k > spec.members || mask & (1 << (k - 1)) != 0 {
            return Err(Error::invalid(
                "he decryption set",
                format!("{set:?}"),
                format!("distinct members in 1..={}", spec.members),
            ));
        }
        mask |= 1 << (k - 1);
    }
    if set.len() != spec.threshold as usize {
        return Err(Error::invalid(
            "he decryption set",
            format!("{} members", set.len()),
            format!("exactly the threshold, {}", spec.threshold),
        ));
    }
    Ok(mask)
}

/// The members of a mask, ascending.
fn mask_members(mask: u64) -> Vec<u32> {
    (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| b + 1)
        .collect()
}

impl Member {
    /// The member's index in 1..=n.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The key epoch of its share.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Coefficients it may still decrypt under this key.
    pub fn remaining(&self) -> u64 {
        self.flooding.budget - self.issued
    }

    /// The member's decryption shares of `sum` for the set `set` (exactly t members, this
    /// one among them), one per ciphertext, each bound to the sum's digest. Refuses a sum of
    /// fewer than `min_clients` uploads, another epoch, and a decryption past the key's
    /// flooding budget.
    pub fn decryption_shares(
        &mut self,
        bfv: &Bfv,
        sum: &CiphertextSum,
        set: &[u32],
    ) -> Result<Vec<Vec<u8>>> {
        let mask = set_mask(set, &self.spec)?;
        if !set.contains(&self.index) {
            return Err(Error::invalid(
                "he decryption set",
                format!("{set:?}"),
                format!("a set with member {}", self.index),
            ));
        }
        if sum.epoch() != self.epoch {
            return Err(Error::invalid(
                "he decryption",
                format!("epoch {}", sum.epoch()),
                format!("the member's epoch {}", self.epoch),
            ));
        }
        if sum.clients() < self.spec.min_clients {
            return Err(Error::invalid(
                "he decryption",
                format!("a sum of {} uploads", sum.clients()),
                format!("at least {} (min_clients)", self.spec.min_clients),
            ));
        }
        let chunks = sum.ciphertexts().len();
        let cost = (chunks * DEGREE) as u64;
        if cost > self.remaining() {
            return Err(Error::Aborted(format!(
                "he member {}: decrypting {cost} more coefficients would pass the key's \
                 flooding budget ({} left of {}); the committee needs a new key",
                self.index,
                self.remaining(),
                self.flooding.budget
            )));
        }
        self.issued += cost;
        let scaled = self.scaled_share(bfv, set, self.index)?;
        let digest = sum.digest();
        let mut out = Vec::with_capacity(chunks);
        for (chunk, ct) in sum.ciphertexts().iter().enumerate() {
            let mut d = &*scaled * &ct[1];
            d += &self.flood(bfv)?;
            let mut bytes = Vec::with_capacity(SHARE_HEADER + bfv.poly_bytes());
            bytes.extend_from_slice(SHARE_MAGIC);
            bytes.extend_from_slice(&WIRE_VERSION.to_le_bytes());
            bytes.extend_from_slice(&bfv.id());
            bytes.extend_from_slice(&self.epoch.to_le_bytes());
            bytes.extend_from_slice(&self.index.to_le_bytes());
            bytes.extend_from_slice(&mask.to_le_bytes());
            bytes.extend_from_slice(&(chunk as u32).to_le_bytes());
            bytes.extend_from_slice(&(chunks as u32).to_le_bytes());
            bytes.extend_from_slice(&digest);
            bfv.write_poly(&d, &mut bytes);
            out.push(bytes);
        }
        Ok(out)
    }

    /// λ_k^S·σ_k in NTT form (`as_member` = k; the tests use another k to show that a
    /// wrong set does not decrypt).
    fn scaled_share(&self, bfv: &Bfv, set: &[u32], as_member: u32) -> Result<Zeroizing<Poly>> {
        let mut scaled = Zeroizing::new(vec![0u64; 2 * DEGREE]);
        for (m, modulus) in bfv.moduli.iter().enumerate() {
            let lambda = lagrange(modulus, set, as_member)?;
            for (out, &s) in scaled[m * DEGREE..(m + 1) * DEGREE]
                .iter_mut()
                .zip(&self.share[m * DEGREE..(m + 1) * DEGREE])
            {
                *out = modulus.mul(s, lambda);
            }
        }
        let mut poly =
            Poly::try_convert_from(&scaled[..], &bfv.ctx, false, Representation::PowerBasis)
                .map_err(|e| Error::Usage(format!("HE share: {e}")))?;
        poly.change_representation(Representation::Ntt);
        Ok(Zeroizing::new(poly))
    }

    /// E: uniform on [−B, B] per coefficient (rejection sampling of 128-bit words, from
    /// the member's CSPRNG), in NTT form.
    fn flood(&mut self, bfv: &Bfv) -> Result<Poly> {
        let span = 2 * self.flooding.bound + 1;
        let zone = u128::MAX - (u128::MAX % span);
        let mut residues = vec![0u64; 2 * DEGREE];
        for i in 0..DEGREE {
            let draw = loop {
                let word =
                    (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
                if word < zone {
                    break word % span;
                }
            };
            let value = draw as i128 - self.flooding.bound as i128;
            residues[i] = residue(value, MODULI[0]);
            residues[DEGREE + i] = residue(value, MODULI[1]);
        }
        let mut poly =
            Poly::try_convert_from(residues, &bfv.ctx, false, Representation::PowerBasis)
                .map_err(|e| Error::Usage(format!("HE flooding: {e}")))?;
        poly.change_representation(Representation::Ntt);
        Ok(poly)
    }
}

/// Combines the shares of a set (exactly t members, one share per member per ciphertext)
/// with the sum, and decodes the sum's first `sum.values()` integers (centred mod t).
/// Refuses fewer members than the threshold, shares of another sum, set, epoch or parameter
/// set, and malformed bytes; nothing is decrypted unless every share checks.
pub fn combine(
    bfv: &Bfv,
    spec: &CommitteeSpec,
    sum: &CiphertextSum,
    shares: &[Vec<Vec<u8>>],
) -> Result<Vec<i64>> {
    let what = "he decryption share";
    let chunks = sum.ciphertexts().len();
    if chunks == 0 {
        return Err(Error::invalid(
            "he decryption",
            "an empty sum",
            "at least one upload",
        ));
    }
    if shares.len() < spec.threshold as usize {
        return Err(Error::invalid(
            "he decryption",
            format!("{} members' shares", shares.len()),
            format!("the threshold, {} members", spec.threshold),
        ));
    }
    let digest = sum.digest();
    let mut mask = None;
    let mut seen = Vec::new();
    let mut c0: Vec<Poly> = sum.ciphertexts().iter().map(|ct| ct[0].clone()).collect();
    for member in shares {
        if member.len() != chunks {
            return Err(Error::invalid(
                what,
                format!("{} ciphertexts", member.len()),
                format!("{chunks}, one per ciphertext of the sum"),
            ));
        }
        for (chunk, bytes) in member.iter().enumerate() {
            if bytes.len() != SHARE_HEADER + bfv.poly_bytes() {
                return Err(Error::invalid(
                    what,
                    format!("{} bytes", bytes.len()),
                    format!("{} bytes", SHARE_HEADER + bfv.poly_bytes()),
                ));
            }
            super::bfv::check_header(bytes, SHARE_MAGIC, &bfv.id(), sum.epoch(), what)?;
            let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
            let index = word(18);
            let set = u64::from_le_bytes(bytes[22..30].try_into().expect("8 bytes"));
            if word(30) as usize != chunk || word(34) as usize != chunks {
                return Err(Error::invalid(
                    what,
                    format!("ciphertext {} of {}", word(30), word(34)),
                    format!("ciphertext {chunk} of {chunks}"),
                ));
            }
            if bytes[38..70] != digest {
                return Err(Error::invalid(
                    what,
                    "another sum's share",
                    "a share of this sum",
                ));
            }
            if *mask.get_or_insert(set) != set {
                return Err(Error::invalid(what, "another set's share", "one set"));
            }
            if chunk == 0 {
                if seen.contains(&index)
                    || set & (1u64.checked_shl(index.wrapping_sub(1)).unwrap_or(0)) == 0
                {
                    return Err(Error::invalid(
                        what,
                        format!("member {index}"),
                        "each member of the set once",
                    ));
                }
                seen.push(index);
            }
            let d = bfv.read_poly(&bytes[SHARE_HEADER..], what)?;
            c0[chunk] += &d;
        }
    }
    let set = mask_members(mask.unwrap_or(0));
    set_mask(&set, spec)?;
    if seen.len() != set.len() {
        return Err(Error::invalid(
            "he decryption",
            format!(
                "shares of {} of the set's {} members",
                seen.len(),
                set.len()
            ),
            "every member of the set",
        ));
    }
    // (c₀ + Σ d_k, 0) decrypts under any key to the same plaintext: the key drops out.
    let mut rng = os_rng()?;
    let any_key = SecretKey::random(&bfv.par, &mut rng);
    // The ciphertexts decrypt independently: one per worker thread.
    use rayon::prelude::*;
    let decoded = c0
        .into_par_iter()
        .map(|c0| {
            let ct = Ciphertext::new(
                vec![c0, Poly::zero(&bfv.ctx, Representation::Ntt)],
                &bfv.par,
            )
            .map_err(|e| Error::Usage(format!("HE decryption: {e}")))?;
            let plain: Plaintext = any_key
                .try_decrypt(&ct)
                .map_err(|e| Error::Usage(format!("HE decryption: {e}")))?;
            Vec::<i64>::try_decode(&plain, Encoding::poly())
                .map_err(|e| Error::Usage(format!("HE decoding: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut values = decoded.concat();
    values.truncate(sum.values());
    Ok(values)
}

/// Start-up known-answer test: a 2-of-3 committee from a fixed seed, three uploads at the
/// extremes (±bound, 0, ±1), summed and decrypted by two different sets, must give the
/// integer sum exactly. A parameter set can build and still decrypt wrongly; this refuses it.
pub fn known_answer_test(bfv: &Bfv) -> Result<()> {
    let spec = CommitteeSpec {
        members: 3,
        threshold: 2,
        lambda: 40,
        max_clients: 3,
        min_clients: 2,
    };
    let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
    let (key, mut members) = generate(bfv, spec, 0, &mut rng)?;
    let bound = Bfv::value_bound(3);
    let values = DEGREE + 5;
    let inputs: Vec<Vec<i64>> = (0..3i64)
        .map(|c| {
            (0..values as i64)
                .map(|i| match (i + c) % 4 {
                    0 => bound,
                    1 => -bound,
                    2 => 0,
                    _ => 1 - 2 * (i % 2),
                })
                .collect()
        })
        .collect();
    let mut sum = CiphertextSum::new(bfv, key.epoch, values);
    for input in &inputs {
        sum.add(&bfv.encrypt(&key.key, key.epoch, input, bound, &mut rng)?)?;
    }
    let truth: Vec<i64> = (0..values)
        .map(|i| inputs.iter().map(|v| v[i]).sum())
        .collect();
    for set in [[1u32, 2], [2, 3]] {
        let shares = shares_of(bfv, &mut members, &sum, &set)?;
        if combine(bfv, &spec, &sum, &shares)? != truth {
            return Err(Error::Usage(
                "HE known-answer test failed: the parameter set decrypts a known sum wrongly; \
                 homomorphic aggregation is refused"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The decryption shares of every member of `set` (index k is `members[k − 1]`), in the
/// set's order.
fn shares_of(
    bfv: &Bfv,
    members: &mut [Member],
    sum: &CiphertextSum,
    set: &[u32],
) -> Result<Vec<Vec<Vec<u8>>>> {
    set.iter()
        .map(|&k| members[k as usize - 1].decryption_shares(bfv, sum, set))
        .collect()
}

impl CommitteeKey {
    /// Encrypts `values` for this epoch (see [`Bfv::encrypt`]).
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        bfv: &Bfv,
        values: &[i64],
        bound: i64,
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        bfv.encrypt(&self.key, self.epoch, values, bound, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(members: u32, threshold: u32, max_clients: u64) -> CommitteeSpec {
        CommitteeSpec {
            members,
            threshold,
            lambda: 40,
            max_clients,
            min_clients: 2,
        }
    }

    #[test]
    fn the_known_answer_test_passes() {
        known_answer_test(&Bfv::new().unwrap()).unwrap();
    }

    /// Exactness: 100 randomised trials, 10 and 100 clients, values drawn up to the bound
    /// with the extremes ±bound (±2^15 at 100 clients) planted in every trial.
    #[test]
    fn threshold_decryption_equals_the_integer_sum() {
        let bfv = Bfv::new().unwrap();
        let mut rng = ChaCha20Rng::from_seed([1u8; 32]);
        for trial in 0..100u32 {
            let clients = if trial % 10 == 9 { 100 } else { 10 };
            let spec = spec(3 + trial % 3, 2 + trial % 2, clients);
            let bound = match clients {
                100 => 1 << 15,
                _ => Bfv::value_bound(clients),
            };
            assert!(bound <= Bfv::value_bound(clients));
            let (key, mut members) = generate(&bfv, spec, trial, &mut rng).unwrap();
            let values = 1 + rng.random_range(0..3 * DEGREE);
            let mut sum = CiphertextSum::new(&bfv, trial, values);
            let mut truth = vec![0i64; values];
            for c in 0..clients {
                let input: Vec<i64> = (0..values)
                    .map(|i| match (i + c as usize) % 7 {
                        0 => bound,
                        1 => -bound,
                        _ => rng.random_range(-bound..=bound),
                    })
                    .collect();
                truth.iter_mut().zip(&input).for_each(|(t, v)| *t += v);
                sum.add(&key.encrypt(&bfv, &input, bound, &mut rng).unwrap())
                    .unwrap();
            }
            let mut set: Vec<u32> = (1..=spec.members).collect();
            set.rotate_left(trial as usize % spec.members as usize);
            set.truncate(spec.threshold as usize);
            let shares = shares_of(&bfv, &mut members, &sum, &set).unwrap();
            assert_eq!(
                combine(&bfv, &spec, &sum, &shares).unwrap(),
                truth,
                "trial {trial}"
            );
        }
    }

    fn one_sum(clients: u64) -> (Bfv, CommitteeSpec, CiphertextSum, Vec<Member>, Vec<i64>) {
        let bfv = Bfv::new().unwrap();
        let spec = spec(5, 3, clients);
        let mut rng = ChaCha20Rng::from_seed([2u8; 32]);
        let (key, members) = generate(&bfv, spec, 4, &mut rng).unwrap();
        let mut sum = CiphertextSum::new(&bfv, 4, 100);
        let mut truth = vec![0i64; 100];
        for _ in 0..clients {
            let input: Vec<i64> = (0..100).map(|_| rng.random_range(-1000..=1000)).collect();
            truth.iter_mut().zip(&input).for_each(|(t, v)| *t += v);
            sum.add(&key.encrypt(&bfv, &input, 1000, &mut rng).unwrap())
                .unwrap();
        }
        (bfv, spec, sum, members, truth)
    }

    #[test]
    fn fewer_shares_than_the_threshold_do_not_decrypt() {
        let (bfv, spec, sum, mut members, truth) = one_sum(3);
        let set = [1u32, 3, 5];
        let shares = shares_of(&bfv, &mut members, &sum, &set).unwrap();
        assert_eq!(combine(&bfv, &spec, &sum, &shares).unwrap(), truth);
        // The combiner refuses two shares of a 3-of-5 key…
        let error = combine(&bfv, &spec, &sum, &shares[..2]).unwrap_err();
        assert!(error.to_string().contains("threshold"), "{error}");
        // …members refuse a set of two…
        let error = members[0]
            .decryption_shares(&bfv, &sum, &[1, 3])
            .unwrap_err();
        assert!(
            error.to_string().contains("exactly the threshold"),
            "{error}"
        );
        // …and two shares interpolated as if they were enough give noise, not the sum:
        // t − 1 Shamir shares carry no information about the key.
        let pair = [1u32, 3];
        let mut c0 = sum.ciphertexts()[0][0].clone();
        for &k in &pair {
            let member = &members[k as usize - 1];
            c0 += &(&*member.scaled_share(&bfv, &pair, k).unwrap() * &sum.ciphertexts()[0][1]);
        }
        let ct = Ciphertext::new(
            vec![c0, Poly::zero(&bfv.ctx, Representation::Ntt)],
            &bfv.par,
        )
        .unwrap();
        let any = SecretKey::random(&bfv.par, &mut os_rng().unwrap());
        let decoded =
            Vec::<i64>::try_decode(&any.try_decrypt(&ct).unwrap(), Encoding::poly()).unwrap();
        let right = decoded.iter().zip(&truth).filter(|(a, b)| a == b).count();
        assert!(
            right <= 2,
            "{right} of 100 coordinates right from two shares"
        );
    }

    #[test]
    fn a_value_that_could_wrap_is_refused() {
        let bfv = Bfv::new().unwrap();
        let mut rng = ChaCha20Rng::from_seed([3u8; 32]);
        let (key, _) = generate(&bfv, spec(3, 2, 10), 0, &mut rng).unwrap();
        let bound = Bfv::value_bound(10);
        assert_eq!(bound, 419_020);
        let mut input = vec![0i64; 10];
        input[7] = bound + 1;
        let error = key.encrypt(&bfv, &input, bound, &mut rng).unwrap_err();
        assert!(error.to_string().contains("value 7"), "{error}");
        input[7] = -bound - 1;
        assert!(key.encrypt(&bfv, &input, bound, &mut rng).is_err());
        input[7] = -bound;
        key.encrypt(&bfv, &input, bound, &mut rng).unwrap();
    }

    #[test]
    fn the_flooding_budget_is_enforced() {
        let (bfv, _, sum, mut members, _) = one_sum(3);
        let set = [1u32, 2, 3];
        let member = &mut members[0];
        let budget = member.remaining();
        assert!(budget > 1 << 20, "budget {budget}");
        member.issued = budget - DEGREE as u64 + 1;
        let error = member.decryption_shares(&bfv, &sum, &set).unwrap_err();
        assert!(error.to_string().contains("flooding budget"), "{error}");
    }

    #[test]
    fn a_sum_of_one_upload_is_not_decrypted() {
        let (bfv, _, _, mut members, _) = one_sum(3);
        let mut rng = ChaCha20Rng::from_seed([5u8; 32]);
        let (key, _) = generate(&bfv, spec(5, 3, 3), 4, &mut rng).unwrap();
        let mut single = CiphertextSum::new(&bfv, 4, 10);
        single
            .add(&key.encrypt(&bfv, &[1; 10], 10, &mut rng).unwrap())
            .unwrap();
        let error = members[0]
            .decryption_shares(&bfv, &single, &[1, 2, 3])
            .unwrap_err();
        assert!(error.to_string().contains("min_clients"), "{error}");
    }

    /// Fuzz: every truncation, every single-byte change of the header and random bytes of
    /// an upload and of a share are refused with an error (no panic), and nothing is added
    /// or decrypted.
    #[test]
    fn the_decoders_refuse_malformed_messages() {
        let (bfv, spec, sum, mut members, truth) = one_sum(3);
        let set = [2u32, 4, 5];
        let shares = shares_of(&bfv, &mut members, &sum, &set).unwrap();
        let mut rng = ChaCha20Rng::from_seed([6u8; 32]);
        let (key, mut own) = generate(&bfv, spec, 4, &mut rng).unwrap();
        let upload = key.encrypt(&bfv, &[3; 100], 10, &mut rng).unwrap();
        let mut target = CiphertextSum::new(&bfv, 4, 100);
        let mut mutants: Vec<Vec<u8>> = Vec::new();
        for cut in [0, 3, 10, 25, 26, 1000, upload.len() - 1] {
            mutants.push(upload[..cut].to_vec());
        }
        let mut longer = upload.clone();
        longer.push(0);
        mutants.push(longer);
        for at in 0..26 {
            let mut m = upload.clone();
            m[at] ^= 0x5a;
            mutants.push(m);
        }
        // A residue at its prime (out of range): the first residue's 54 bits all set.
        let mut m = upload.clone();
        m[26..33].iter_mut().for_each(|b| *b = 0xff);
        mutants.push(m);
        for _ in 0..20 {
            let len = rng.random_range(0..upload.len() + 10);
            mutants.push((0..len).map(|_| rng.random()).collect());
        }
        for m in &mutants {
            assert!(target.add(m).is_err());
        }
        assert_eq!(target.clients(), 0);
        target.add(&upload).unwrap();
        assert!(target.add(&upload).is_err(), "a repeated upload is refused");
        // The refused messages left nothing behind: with one more upload the sum decrypts
        // to 3 + 4 everywhere.
        target
            .add(&key.encrypt(&bfv, &[4; 100], 10, &mut rng).unwrap())
            .unwrap();
        let set = [1u32, 2, 3];
        let own_shares = shares_of(&bfv, &mut own, &target, &set).unwrap();
        assert_eq!(
            combine(&bfv, &spec, &target, &own_shares).unwrap(),
            vec![7; 100]
        );

        let share = &shares[0][0];
        let mut bad_shares = Vec::new();
        for cut in [0, 4, 69, 70, share.len() - 1] {
            bad_shares.push(share[..cut].to_vec());
        }
        for at in 0..70 {
            let mut m = share.clone();
            m[at] ^= 0x21;
            bad_shares.push(m);
        }
        for bad in bad_shares {
            let mut tampered = shares.clone();
            tampered[0][0] = bad;
            assert!(combine(&bfv, &spec, &sum, &tampered).is_err());
        }
        let mut repeated = shares.clone();
        repeated[1] = repeated[0].clone();
        assert!(combine(&bfv, &spec, &sum, &repeated).is_err());
        assert_eq!(combine(&bfv, &spec, &sum, &shares).unwrap(), truth);
    }

    #[test]
    fn the_noise_bound_holds_with_room() {
        // At the acceptance's shape (2-of-3, 10 clients) a key lasts 94 cnn rounds of 7
        // ciphertexts; the flooding bound B stays below the ceiling Q/(2t) over t.
        let bfv = Bfv::new().unwrap();
        let spec3 = spec(3, 2, 10);
        let flooding = spec3.flooding(&bfv).unwrap();
        assert!(flooding.budget / (7 * DEGREE as u64) >= 90, "{flooding:?}");
        let total = 2.0 * flooding.bound as f64 + spec3.noise_bound();
        assert!(total < bfv.noise_ceiling() / 2.0, "{total:e}");
        assert!(
            flooding.bound as f64 >= 2f64.powi(40) * flooding.budget as f64 * spec3.noise_bound()
        );
        assert!(
            CommitteeSpec {
                lambda: 64,
                ..spec(3, 3, 100_000)
            }
            .flooding(&bfv)
            .is_err(),
            "a plan that cannot fit is refused"
        );
    }
}
