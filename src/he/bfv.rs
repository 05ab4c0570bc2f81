//! The BFV parameter set, the clients' encryption of an integer vector, the aggregator's
//! ciphertext sum, and their wire format.
//!
//! BFV (Brakerski 2012; Fan and Vercauteren, eprint 2012/144) through the `fhe` crate
//! (pinned at 0.1.1). One parameter set: ring degree n = 4096, ciphertext modulus
//! Q = q₀·q₁ ≈ 2^109 (54 and 55 bits; 109 bits is the HomomorphicEncryption.org 128-bit
//! limit at n = 4096), plaintext modulus t = 8,380,417 (prime, ≈ 2^23), coefficient
//! ("poly") encoding: one ciphertext carries 4,096 integers mod t, and ciphertexts add
//! coefficient-wise. A message m is stored as ⌊Q·m/t⌉ plus noise e; it decrypts while
//! |e| < Q/(2t) ≈ 2^85.
//!
//! Sums are mod t. Nothing here reduces a value silently: [`Bfv::encrypt`] refuses any value
//! beyond the bound the caller gives (at most (t − 1)/2 divided by the clients summed), so
//! a sum of that many inputs can never wrap.

use std::sync::Arc;

use fhe::bfv::{BfvParameters, BfvParametersBuilder, Ciphertext, Encoding, Plaintext, PublicKey};
use fhe_math::rq::traits::TryConvertFrom;
use fhe_math::rq::{Context, Poly, Representation};
use fhe_math::zq::Modulus;
use fhe_traits::{FheEncoder, FheEncrypter};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// n: the ring degree, values per ciphertext.
pub const DEGREE: usize = 4096;
/// q₀, q₁: the ciphertext modulus's primes (≡ 1 mod 2n, so the NTT exists).
pub const MODULI: [u64; 2] = [0x3f_ffff_fffd_6001, 0x7f_ffff_fffb_4001];
/// t: the plaintext modulus (prime, below q₀ as `fhe` 0.1.1 needs).
pub const PLAINTEXT: u64 = 8_380_417;
/// The variance of `fhe`'s centred binomial noise and secret keys (its default): every
/// coefficient lies in [−2·10, 2·10].
pub const CBD_VARIANCE: usize = 10;
/// Version of the ciphertext upload and decryption-share formats.
pub const WIRE_VERSION: u16 = 1;

/// Magic of an encrypted update.
const UPLOAD_MAGIC: &[u8; 4] = b"DPHC";
/// Header of an upload: magic, version, parameter id, epoch, values, chunks.
const UPLOAD_HEADER: usize = 4 + 2 + 8 + 4 + 4 + 4;

/// The parameter set and what every party derives from it.
#[derive(Debug, Clone)]
pub struct Bfv {
    pub(crate) par: Arc<BfvParameters>,
    pub(crate) ctx: Arc<Context>,
    pub(crate) moduli: [Modulus; 2],
    id: [u8; 8],
}

impl Bfv {
    /// Builds the parameter set and checks what `fhe` does not: t < q₀ (a larger t builds
    /// and then decrypts wrongly).
    pub fn new() -> Result<Self> {
        let par = BfvParametersBuilder::new()
            .set_degree(DEGREE)
            .set_moduli(&MODULI)
            .set_plaintext_modulus(PLAINTEXT)
            .set_variance(CBD_VARIANCE)
            .build_arc()
            .map_err(|e| Error::Usage(format!("BFV parameters: {e}")))?;
        if PLAINTEXT >= MODULI[0] {
            return Err(Error::invalid(
                "BFV plaintext modulus",
                PLAINTEXT,
                "below the first ciphertext prime",
            ));
        }
        let ctx = par
            .context_at_level(0)
            .map_err(|e| Error::Usage(format!("BFV context: {e}")))?
            .clone();
        let modulus =
            |q: u64| Modulus::new(q).map_err(|e| Error::Usage(format!("BFV modulus {q:#x}: {e}")));
        let mut hash = Sha256::new();
        hash.update(b"dptrain BFV poly encoding, CBD 10");
        hash.update((DEGREE as u64).to_le_bytes());
        for q in MODULI.iter().chain([&PLAINTEXT]) {
            hash.update(q.to_le_bytes());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash.finalize()[..8]);
        Ok(Bfv {
            moduli: [modulus(MODULI[0])?, modulus(MODULI[1])?],
            par,
            ctx,
            id,
        })
    }

    /// The parameter set's id (the first 8 bytes of a SHA-256 of n, the moduli and t): every
    /// message carries it, and one made under other parameters is refused.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    /// Q/(2t): decryption is exact while the noise stays below this.
    pub fn noise_ceiling(&self) -> f64 {
        MODULI[0] as f64 * MODULI[1] as f64 / (2.0 * PLAINTEXT as f64)
    }

    /// The largest |value| a client may encrypt when `clients` inputs are summed: K·B ≤
    /// (t − 1)/2, so the centred sum never wraps mod t.
    pub fn value_bound(clients: u64) -> i64 {
        ((PLAINTEXT - 1) / 2 / clients.max(1)) as i64
    }

    /// Ciphertexts needed for `values` integers.
    pub fn chunks(values: usize) -> usize {
        values.div_ceil(DEGREE)
    }

    /// Encrypts `values` under `key` for epoch `epoch`, 4,096 per ciphertext (the last one
    /// padded with zeros), as an upload. Refuses, before encrypting anything, a value with
    /// |v| > `bound` (it could make the sum wrap) and an empty vector.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        key: &PublicKey,
        epoch: u32,
        values: &[i64],
        bound: i64,
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        if values.is_empty() || values.len() > u32::MAX as usize {
            return Err(Error::invalid(
                "HE upload",
                values.len(),
                "1 to 2^32 − 1 values",
            ));
        }
        if let Some((at, v)) = values.iter().enumerate().find(|(_, v)| v.abs() > bound) {
            return Err(Error::invalid(
                format!("HE upload value {at}"),
                v,
                format!("|v| ≤ {bound}, so that the sum cannot wrap mod t = {PLAINTEXT}"),
            ));
        }
        let chunks = Self::chunks(values.len());
        let mut out = Vec::with_capacity(UPLOAD_HEADER + chunks * self.ciphertext_bytes());
        out.extend_from_slice(UPLOAD_MAGIC);
        out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&(values.len() as u32).to_le_bytes());
        out.extend_from_slice(&(chunks as u32).to_le_bytes());
        for chunk in values.chunks(DEGREE) {
            let plain = Plaintext::try_encode(chunk, Encoding::poly(), &self.par)
                .map_err(|e| Error::Usage(format!("BFV encoding: {e}")))?;
            let ct: Ciphertext = key
                .try_encrypt(&plain, rng)
                .map_err(|e| Error::Usage(format!("BFV encryption: {e}")))?;
            self.write_poly(&ct[0], &mut out);
            self.write_poly(&ct[1], &mut out);
        }
        Ok(out)
    }

    /// Bytes of one serialised polynomial (each residue in ⌈log₂ qᵢ⌉ bits).
    pub fn poly_bytes(&self) -> usize {
        MODULI
            .iter()
            .map(|q| DEGREE * (64 - (q - 1).leading_zeros() as usize) / 8)
            .sum()
    }

    /// Bytes of one serialised ciphertext.
    pub fn ciphertext_bytes(&self) -> usize {
        2 * self.poly_bytes()
    }

    /// Bytes of an upload of `values` integers.
    pub fn upload_bytes(&self, values: usize) -> usize {
        UPLOAD_HEADER + Self::chunks(values) * self.ciphertext_bytes()
    }

    /// Appends `poly` (NTT form) residue by residue.
    pub(crate) fn write_poly(&self, poly: &Poly, out: &mut Vec<u8>) {
        let coefficients = poly.coefficients();
        for (row, modulus) in coefficients.outer_iter().zip(&self.moduli) {
            let row: Vec<u64> = row.iter().copied().collect();
            out.extend_from_slice(&modulus.serialize_vec(&row));
        }
    }

    /// Reads one polynomial (NTT form) written by [`Bfv::write_poly`]: the exact length,
    /// every residue below its prime.
    pub(crate) fn read_poly(&self, bytes: &[u8], what: &'static str) -> Result<Poly> {
        if bytes.len() != self.poly_bytes() {
            return Err(Error::invalid(
                what,
                format!("{} bytes", bytes.len()),
                format!("{} bytes", self.poly_bytes()),
            ));
        }
        let mut residues = Vec::with_capacity(2 * DEGREE);
        let mut at = 0;
        for (q, modulus) in MODULI.iter().zip(&self.moduli) {
            let len = DEGREE * (64 - (q - 1).leading_zeros() as usize) / 8;
            let row = modulus.deserialize_vec(&bytes[at..at + len]);
            if row.len() != DEGREE || row.iter().any(|r| r >= q) {
                return Err(Error::invalid(
                    what,
                    "a residue out of range",
                    format!("{DEGREE} residues below {q:#x}"),
                ));
            }
            residues.extend(row);
            at += len;
        }
        Poly::try_convert_from(residues, &self.ctx, false, Representation::Ntt)
            .map_err(|e| Error::invalid(what, e, "a polynomial of the parameter set"))
    }

    /// Reads an upload: its header (magic, version, parameter id, epoch), its length, and
    /// every ciphertext. Returns the ciphertexts and the number of values.
    pub fn read_upload(&self, bytes: &[u8], epoch: u32) -> Result<(Vec<Ciphertext>, usize)> {
        let what = "HE upload";
        if bytes.len() < UPLOAD_HEADER {
            return Err(Error::invalid(
                what,
                format!("{} bytes", bytes.len()),
                format!("at least a {UPLOAD_HEADER}-byte header"),
            ));
        }
        check_header(bytes, UPLOAD_MAGIC, &self.id, epoch, what)?;
        let values = u32::from_le_bytes(bytes[18..22].try_into().expect("4 bytes")) as usize;
        let chunks = u32::from_le_bytes(bytes[22..26].try_into().expect("4 bytes")) as usize;
        if values == 0 || chunks != Self::chunks(values) {
            return Err(Error::invalid(
                what,
                format!("{values} values in {chunks} ciphertexts"),
                "⌈values / 4096⌉ ciphertexts, at least one value",
            ));
        }
        let expected = UPLOAD_HEADER + chunks * self.ciphertext_bytes();
        if bytes.len() != expected {
            return Err(Error::invalid(
                what,
                format!("{} bytes", bytes.len()),
                format!("{expected} bytes for {chunks} ciphertexts"),
            ));
        }
        let poly = self.poly_bytes();
        let cts = bytes[UPLOAD_HEADER..]
            .chunks(2 * poly)
            .map(|ct| {
                let c0 = self.read_poly(&ct[..poly], what)?;
                let c1 = self.read_poly(&ct[poly..], what)?;
                Ciphertext::new(vec![c0, c1], &self.par)
                    .map_err(|e| Error::invalid(what, e, "a BFV ciphertext"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((cts, values))
    }
}

/// Checks magic, version, parameter id and epoch of a message.
pub(crate) fn check_header(
    bytes: &[u8],
    magic: &[u8; 4],
    id: &[u8; 8],
    epoch: u32,
    what: &'static str,
) -> Result<()> {
    if &bytes[..4] != magic {
        return Err(Error::invalid(
            what,
            format!("magic {:?}", String::from_utf8_lossy(&bytes[..4])),
            format!("{:?}", String::from_utf8_lossy(magic)),
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != WIRE_VERSION {
        return Err(Error::invalid(
            what,
            format!("version {version}"),
            format!("version {WIRE_VERSION}"),
        ));
    }
    if &bytes[6..14] != id {
        return Err(Error::invalid(
            what,
            "another parameter set",
            "BFV n = 4096, Q ≈ 2^109, t = 8,380,417",
        ));
    }
    let got = u32::from_le_bytes(bytes[14..18].try_into().expect("4 bytes"));
    if got != epoch {
        return Err(Error::invalid(
            what,
            format!("key epoch {got}"),
            format!("the current epoch {epoch}"),
        ));
    }
    Ok(())
}

/// The aggregator's running sum of uploads: it holds no key and reads nothing.
#[derive(Debug, Clone)]
pub struct CiphertextSum {
    bfv: Bfv,
    epoch: u32,
    values: usize,
    sum: Vec<Ciphertext>,
    clients: u64,
    digests: Vec<[u8; 32]>,
}

impl CiphertextSum {
    /// An empty sum of uploads of `values` integers made under epoch `epoch`'s key.
    pub fn new(bfv: &Bfv, epoch: u32, values: usize) -> Self {
        CiphertextSum {
            bfv: bfv.clone(),
            epoch,
            values,
            sum: Vec::new(),
            clients: 0,
            digests: Vec::new(),
        }
    }

    /// Adds one upload after checking all of it (header, length, residues); a bad or
    /// repeated upload is refused and the sum is unchanged.
    pub fn add(&mut self, upload: &[u8]) -> Result<()> {
        let digest: [u8; 32] = Sha256::digest(upload).into();
        if self.digests.contains(&digest) {
            return Err(Error::invalid(
                "HE upload",
                "a repeat of an upload already summed",
                "one upload per client",
            ));
        }
        let (cts, values) = self.bfv.read_upload(upload, self.epoch)?;
        if values != self.values {
            return Err(Error::invalid(
                "HE upload",
                format!("{values} values"),
                format!("{} values", self.values),
            ));
        }
        match self.sum.is_empty() {
            true => self.sum = cts,
            false => self.sum.iter_mut().zip(&cts).for_each(|(s, c)| *s += c),
        }
        self.digests.push(digest);
        self.clients += 1;
        Ok(())
    }

    /// Uploads summed.
    pub fn clients(&self) -> u64 {
        self.clients
    }

    /// Values per upload.
    pub fn values(&self) -> usize {
        self.values
    }

    /// The key epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The summed ciphertexts (empty before the first upload).
    pub fn ciphertexts(&self) -> &[Ciphertext] {
        &self.sum
    }

    /// SHA-256 of the sum's serialised ciphertexts: decryption shares are bound to it.
    pub fn digest(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(self.sum.len() * self.bfv.ciphertext_bytes());
        for ct in &self.sum {
            self.bfv.write_poly(&ct[0], &mut bytes);
            self.bfv.write_poly(&ct[1], &mut bytes);
        }
        Sha256::digest(&bytes).into()
    }
}
