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
        let id = parameter_id(&ntt_of_x(&ctx)?);
        Ok(Bfv {
            moduli: [modulus(MODULI[0])?, modulus(MODULI[1])?],
            par,
            ctx,
            id,
        })
    }

    /// The parameter set's id (the first 8 bytes of a SHA-256 of n, the moduli, t and the
    /// NTT's slot order): every message carries it, and one made under other parameters is refused.
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
            .map(|&q| DEGREE * residue_bits(q) as usize / 8)
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

    /// Appends `poly` (NTT form): per prime qᵢ, its 4,096 residues in ⌈log₂ qᵢ⌉ bits each,
    /// least significant bit first.
    pub(crate) fn write_poly(&self, poly: &Poly, out: &mut Vec<u8>) {
        let coefficients = poly.coefficients();
        for (row, q) in coefficients.outer_iter().zip(MODULI) {
            let bits = residue_bits(q);
            let (mut acc, mut held) = (0u128, 0u32);
            for &r in row.iter() {
                acc |= u128::from(r) << held;
                held += bits;
                if held >= 64 {
                    out.extend_from_slice(&(acc as u64).to_le_bytes());
                    acc >>= 64;
                    held -= 64;
                }
            }
            out.extend_from_slice(&(acc as u64).to_le_bytes()[..held.div_ceil(8) as usize]);
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
        let mut residues = vec![0u64; 2 * DEGREE];
        unpack_poly(bytes, &mut residues, what)?;
        Poly::try_convert_from(residues, &self.ctx, false, Representation::Ntt)
            .map_err(|e| Error::invalid(what, e, "a polynomial of the parameter set"))
    }

    /// Checks an upload's header (magic, version, parameter id, epoch) and length; returns
    /// the number of values and the ciphertexts' bytes.
    fn upload_body<'b>(&self, bytes: &'b [u8], epoch: u32) -> Result<(usize, &'b [u8])> {
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
        Ok((values, &bytes[UPLOAD_HEADER..]))
    }
}

/// Unpacks one polynomial's residues (q₀'s 4,096, then q₁'s) into `out` (2·4,096 words),
/// checking each against its prime.
fn unpack_poly(bytes: &[u8], out: &mut [u64], what: &'static str) -> Result<()> {
    const BITS: [u32; 2] = [residue_bits(MODULI[0]), residue_bits(MODULI[1])];
    let split = DEGREE * BITS[0] as usize / 8;
    let (low, high) = out.split_at_mut(DEGREE);
    let bad = unpack_row::<{ BITS[0] as usize }>(&bytes[..split], low, MODULI[0])
        | unpack_row::<{ BITS[1] as usize }>(&bytes[split..], high, MODULI[1]);
    match bad {
        true => Err(Error::invalid(
            what,
            "a residue out of range",
            format!(
                "{DEGREE} residues below their primes {:#x}, {:#x}",
                MODULI[0], MODULI[1]
            ),
        )),
        false => Ok(()),
    }
}

/// Unpacks 4,096 residues of `BITS` bits (least significant first) from `row`; true when
/// one is not below `q`. Eight residues take exactly `BITS` bytes, so each group of eight
/// is a fixed pattern of unaligned 8-byte loads and shifts (BITS + 7 ≤ 64), which the
/// compiler unrolls; the last group reads through a zero-padded copy.
fn unpack_row<const BITS: usize>(row: &[u8], out: &mut [u64], q: u64) -> bool {
    let mask = (1u64 << BITS) - 1;
    let mut bad = false;
    let mut group = |bytes: &[u8], out: &mut [u64]| {
        for (i, r) in out.iter_mut().enumerate() {
            let offset = i * BITS;
            let at = offset / 8;
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            *r = (word >> (offset % 8)) & mask;
            bad |= *r >= q;
        }
    };
    let groups = out.len() / 8;
    for (g, out) in out.chunks_exact_mut(8).enumerate().take(groups - 1) {
        group(&row[g * BITS..g * BITS + BITS + 8], out);
    }
    let mut tail = [0u8; 72];
    tail[..BITS].copy_from_slice(&row[(groups - 1) * BITS..groups * BITS]);
    group(&tail, &mut out[(groups - 1) * 8..]);
    bad
}

/// The NTT of the polynomial X, residues per prime: slot k holds X evaluated at the k-th
/// root of unity of the NTT's order. Residues travel in NTT form, and that order is the NTT
/// implementation's choice (fhe-math's native NTT and tfhe-ntt's differ), so this
/// fingerprints the wire layout.
fn ntt_of_x(ctx: &Arc<Context>) -> Result<Vec<u64>> {
    let mut x = vec![0u64; 2 * DEGREE];
    x[1] = 1;
    x[DEGREE + 1] = 1;
    let mut x = Poly::try_convert_from(x, ctx, false, Representation::PowerBasis)
        .map_err(|e| Error::Usage(format!("BFV NTT fingerprint: {e}")))?;
    x.change_representation(Representation::Ntt);
    Ok(x.coefficients().iter().copied().collect())
}

/// The parameter set's id: the first 8 bytes of a SHA-256 of the encoding, n, the moduli,
/// t and the NTT's slot order ([`ntt_of_x`]). Parties built with another NTT layout get
/// another id and refuse each other's messages instead of decrypting garbage.
fn parameter_id(ntt_of_x: &[u64]) -> [u8; 8] {
    let mut hash = Sha256::new();
    hash.update(b"dptrain BFV poly encoding, CBD 10");
    hash.update((DEGREE as u64).to_le_bytes());
    for q in MODULI.iter().chain([&PLAINTEXT]) {
        hash.update(q.to_le_bytes());
    }
    for r in ntt_of_x {
        hash.update(r.to_le_bytes());
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash.finalize()[..8]);
    id
}

/// Bits of a residue mod q: ⌈log₂ q⌉ (54 and 55 for [`MODULI`]).
const fn residue_bits(q: u64) -> u32 {
    64 - (q - 1).leading_zeros()
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

/// The aggregator's running sum of uploads: it holds no key and reads nothing. The sum is
/// kept as residues and added as each upload is parsed (no polynomial is built per upload).
#[derive(Debug, Clone)]
pub struct CiphertextSum {
    bfv: Bfv,
    epoch: u32,
    values: usize,
    /// Per ciphertext, c₀ then c₁, each q₀'s 4,096 residues then q₁'s (NTT form).
    acc: Vec<u64>,
    scratch: Vec<u64>,
    clients: u64,
    digests: Vec<[u8; 32]>,
    digest: std::sync::OnceLock<[u8; 32]>,
    ciphertexts: std::sync::OnceLock<Vec<Ciphertext>>,
}

impl CiphertextSum {
    /// An empty sum of uploads of `values` integers made under epoch `epoch`'s key.
    pub fn new(bfv: &Bfv, epoch: u32, values: usize) -> Self {
        let words = Bfv::chunks(values) * 4 * DEGREE;
        CiphertextSum {
            bfv: bfv.clone(),
            epoch,
            values,
            acc: vec![0; words],
            scratch: vec![0; words],
            clients: 0,
            digests: Vec::new(),
            digest: std::sync::OnceLock::new(),
            ciphertexts: std::sync::OnceLock::new(),
        }
    }

    /// Adds one upload after checking all of it (header, length, every residue); a bad or
    /// repeated upload is refused and the sum is unchanged.
    pub fn add(&mut self, upload: &[u8]) -> Result<()> {
        let (values, body) = self.bfv.upload_body(upload, self.epoch)?;
        if values != self.values {
            return Err(Error::invalid(
                "HE upload",
                format!("{values} values"),
                format!("{} values", self.values),
            ));
        }
        // A replay repeats the first ciphertext, whose c₁ = u·a + e₂ is fresh and uniform
        // in every encryption: its first kilobyte (about 150 residues) finds repeats at a
        // fraction of hashing the whole upload.
        let c1 = self.bfv.poly_bytes();
        let digest: [u8; 32] = Sha256::digest(&body[c1..c1 + 1024]).into();
        if self.digests.contains(&digest) {
            return Err(Error::invalid(
                "HE upload",
                "a repeat of an upload already summed",
                "one upload per client",
            ));
        }
        let poly = self.bfv.poly_bytes();
        // The first upload is the sum itself: unpacked in place (a refused one leaves
        // residues that the next first upload overwrites).
        let first = self.clients == 0;
        let target = match first {
            true => &mut self.acc,
            false => &mut self.scratch,
        };
        for (bytes, out) in body
            .chunks_exact(poly)
            .zip(target.chunks_exact_mut(2 * DEGREE))
        {
            unpack_poly(bytes, out, "HE upload")?;
        }
        if !first {
            // Rows alternate q₀ and q₁ (c₀'s two rows, then c₁'s).
            let rows = self
                .acc
                .chunks_exact_mut(DEGREE)
                .zip(self.scratch.chunks_exact(DEGREE));
            for (row, (sum, add)) in rows.enumerate() {
                let q = MODULI[row % 2];
                for (s, &a) in sum.iter_mut().zip(add) {
                    let t = *s + a;
                    *s = if t >= q { t - q } else { t };
                }
            }
        }
        self.digests.push(digest);
        self.clients += 1;
        self.digest = std::sync::OnceLock::new();
        self.ciphertexts = std::sync::OnceLock::new();
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
        if self.clients == 0 {
            return &[];
        }
        self.ciphertexts.get_or_init(|| {
            self.acc
                .chunks_exact(4 * DEGREE)
                .map(|ct| {
                    let poly = |words: &[u64]| {
                        Poly::try_convert_from(
                            words.to_vec(),
                            &self.bfv.ctx,
                            false,
                            Representation::Ntt,
                        )
                        .expect("residues below their primes in NTT form")
                    };
                    Ciphertext::new(
                        vec![poly(&ct[..2 * DEGREE]), poly(&ct[2 * DEGREE..])],
                        &self.bfv.par,
                    )
                    .expect("two polynomials of the parameter set")
                })
                .collect()
        })
    }

    /// SHA-256 of the sum's residues: decryption shares are bound to it.
    pub fn digest(&self) -> [u8; 32] {
        *self.digest.get_or_init(|| {
            let mut hash = Sha256::new();
            let mut buffer = [0u8; 8 * 512];
            for words in self.acc.chunks(512) {
                for (bytes, word) in buffer.chunks_exact_mut(8).zip(words) {
                    bytes.copy_from_slice(&word.to_le_bytes());
                }
                hash.update(&buffer[..8 * words.len()]);
            }
            hash.finalize().into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a^e mod q by square-and-multiply in u128 (independent of fhe-math).
    fn pow_mod(a: u64, mut e: u64, q: u64) -> u64 {
        let (mut base, mut acc) = (u128::from(a % q), 1u128);
        while e > 0 {
            if e & 1 == 1 {
                acc = acc * base % u128::from(q);
            }
            base = base * base % u128::from(q);
            e >>= 1;
        }
        acc as u64
    }

    #[test]
    fn the_ntt_fingerprint_holds_every_root_of_x_n_plus_1_and_the_id_follows_their_order() {
        let bfv = Bfv::new().unwrap();
        let x = ntt_of_x(&bfv.ctx).unwrap();
        assert_eq!(x.len(), 2 * DEGREE);
        for (row, q) in x.chunks(DEGREE).zip(MODULI) {
            let mut seen = std::collections::HashSet::new();
            for &w in row {
                // X evaluated at a root w of X^n + 1 (w^n = −1), each of the n roots once.
                assert_eq!(pow_mod(w, DEGREE as u64, q), q - 1);
                assert!(seen.insert(w), "slot value {w} twice");
            }
        }
        assert_eq!(parameter_id(&x), bfv.id());
        let mut swapped = x.clone();
        swapped.swap(0, 1);
        assert_ne!(parameter_id(&swapped), bfv.id());
    }
}
