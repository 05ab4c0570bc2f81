//! The cryptographic primitives of a round, each from a well-kept crate: X25519 key
//! agreement (`x25519-dalek`), HKDF-SHA256 bound to the round's transcript (`hkdf`), ChaCha20
//! keystreams for masks (`chacha20`), ChaCha20-Poly1305 for shares in transit
//! (`chacha20poly1305`), Shamir sharing over GF(2^8) byte by byte (`vsss-rs`), and secrets
//! wiped on drop (`zeroize`). Randomness comes from the operating system (`getrandom`)
//! or, in tests, from a ChaCha20 stream with a fixed seed.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::graph::RoundParams;
use crate::error::{Error, Result};

/// A 32-byte secret, wiped when dropped.
pub type Secret = Zeroizing<[u8; 32]>;

/// The hash of a round's public parameters: every derived key is bound to it, so no key,
/// mask or ciphertext of one round serves in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript(pub [u8; 32]);

impl Transcript {
    /// SHA-256 of the domain and every parameter, fixed-width.
    pub fn of(params: &RoundParams) -> Self {
        let digest = Sha256::new()
            .chain_update(b"dptrain secagg+ v1")
            .chain_update(params.round.to_le_bytes())
            .chain_update(params.clients.to_le_bytes())
            .chain_update(params.degree.to_le_bytes())
            .chain_update(params.threshold.to_le_bytes())
            .chain_update((params.words as u64).to_le_bytes())
            .chain_update(params.bits.to_le_bytes())
            .chain_update(params.graph_seed)
            .finalize();
        Transcript(digest.into())
    }
}

/// 32 bytes from the operating system's generator.
pub fn os_seed() -> Result<Secret> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| {
        Error::Usage(format!(
            "the operating system's random generator failed: {e}"
        ))
    })?;
    Ok(seed)
}

/// An X25519 key pair from 32 secret bytes (clamped inside the key agreement).
pub fn key_pair(secret: &[u8; 32]) -> (StaticSecret, [u8; 32]) {
    let secret = StaticSecret::from(*secret);
    let public = PublicKey::from(&secret).to_bytes();
    (secret, public)
}

/// X25519(secret, peer) → HKDF-SHA256 with `label`, the transcript and the two client ids in
/// ascending order: the same 32-byte key on both sides. A low-order peer key (an all-zero
/// shared secret) is refused.
pub fn agree(
    secret: &StaticSecret,
    peer: &[u8; 32],
    label: &[u8],
    transcript: &Transcript,
    a: u32,
    b: u32,
) -> Result<Secret> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(Error::Malformed {
            what: "public key",
            message: "a low-order point (the key agreement would be all zeros)".into(),
        });
    }
    let (lo, hi) = (a.min(b), a.max(b));
    let mut info = Vec::with_capacity(label.len() + 40);
    info.extend_from_slice(label);
    info.extend_from_slice(&transcript.0);
    info.extend_from_slice(&lo.to_le_bytes());
    info.extend_from_slice(&hi.to_le_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(b"dptrain secagg+ salt"), shared.as_bytes())
        .expand(&info, key.as_mut())
        .map_err(|_| Error::Usage("HKDF output of 32 bytes refused".into()))?;
    Ok(key)
}

/// Adds (`add`) or subtracts the ChaCha20 keystream of `seed` (zero nonce; one key per pair
/// and round), read as little-endian u32 words, to `acc` with wrapping arithmetic: a mask
/// uniform on Z_{2^32}, so on Z_{2^b} after reduction.
pub fn apply_mask(acc: &mut [u32], seed: &[u8; 32], add: bool) {
    let mut cipher = ChaCha20::new(&(*seed).into(), &[0u8; 12].into());
    let mut block = [0u8; 4096];
    for chunk in acc.chunks_mut(1024) {
        let bytes = &mut block[..4 * chunk.len()];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        for (v, w) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            *v = match add {
                true => v.wrapping_add(word),
                false => v.wrapping_sub(word),
            };
        }
    }
}

/// The AEAD key, nonce and associated data of the share sealed by `sender` for `receiver`:
/// the key is shared by the pair, the nonce is the direction (so the two directions never
/// reuse a nonce), the associated data binds the transcript and both ids.
fn share_cipher(
    key: &[u8; 32],
    transcript: &Transcript,
    sender: u32,
    receiver: u32,
) -> (ChaCha20Poly1305, Nonce, Vec<u8>) {
    let cipher = ChaCha20Poly1305::new(&Key::from(*key));
    let mut nonce = [0u8; 12];
    nonce[0] = u8::from(sender > receiver);
    let mut aad = transcript.0.to_vec();
    aad.extend_from_slice(&sender.to_le_bytes());
    aad.extend_from_slice(&receiver.to_le_bytes());
    (cipher, Nonce::from(nonce), aad)
}

/// Seals `plaintext` from `sender` to `receiver` under their pair key.
pub fn seal(
    key: &[u8; 32],
    transcript: &Transcript,
    sender: u32,
    receiver: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let (cipher, nonce, aad) = share_cipher(key, transcript, sender, receiver);
    cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Usage("sealing a share failed".into()))
}

/// Opens what `sender` sealed for `receiver`; an error if it fails authentication.
pub fn open(
    key: &[u8; 32],
    transcript: &Transcript,
    sender: u32,
    receiver: u32,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let (cipher, nonce, aad) = share_cipher(key, transcript, sender, receiver);
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Malformed {
            what: "sealed share",
            message: format!("from client {sender} to {receiver}: fails authentication"),
        })
}

/// The length of one share of a 32-byte secret: a 1-byte x-coordinate and 32 bytes.
pub const SHARE_BYTES: usize = 33;

/// Shamir shares of `secret` for `holders` holders (x = 1..=holders, in order), any
/// `threshold` of which reconstruct it; fewer reveal nothing about it.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    holders: usize,
    rng: &mut chacha20::ChaCha20Rng,
) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    vsss_rs::Gf256::split_bytes(threshold, holders, &secret[..], rng)
        .map(|shares| shares.into_iter().map(Zeroizing::new).collect())
        .map_err(|e| {
            Error::Usage(format!(
                "Shamir sharing {threshold} of {holders} refused: {e:?}"
            ))
        })
}

/// The secret of `shares` (at least `threshold` distinct ones; checked here, because the
/// combination of fewer returns a wrong secret without an error).
pub fn combine(shares: &[Vec<u8>], threshold: usize) -> Result<Secret> {
    let mut xs: Vec<u8> = shares.iter().filter_map(|s| s.first().copied()).collect();
    xs.sort_unstable();
    xs.dedup();
    if xs.len() < threshold || shares.iter().any(|s| s.len() != SHARE_BYTES) {
        return Err(Error::Aborted(format!(
            "{} distinct shares of {SHARE_BYTES} bytes, {threshold} needed",
            xs.len()
        )));
    }
    let bytes = Zeroizing::new(
        vsss_rs::Gf256::combine_bytes(shares)
            .map_err(|e| Error::Aborted(format!("Shamir reconstruction failed: {e:?}")))?,
    );
    let mut secret = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(Error::Aborted(format!(
            "a reconstructed secret of {} bytes",
            bytes.len()
        )));
    }
    secret.copy_from_slice(&bytes);
    Ok(secret)
}
