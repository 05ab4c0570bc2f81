//! The messages of a SecAgg+ round and their byte encoding.
//!
//! Every message is `tag (1 byte) ‖ round (u64 LE) ‖ body`, with counts before lists and
//! fixed-size fields, so a decoder checks each length before it reads: a truncated,
//! oversized or mistagged message is refused with an error naming what was expected, never
//! a panic (`tests/it/secagg.rs` fuzzes the decoders).

use crate::error::{Error, Result};

/// A public key on the wire (X25519, 32 bytes).
pub type PublicKeyBytes = [u8; 32];

/// Stage 1, client → server: the client's two public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseKeys {
    /// The round.
    pub round: u64,
    /// The sender.
    pub client: u32,
    /// Its key for encrypting shares to it.
    pub cipher_key: PublicKeyBytes,
    /// Its key for pairwise masks.
    pub mask_key: PublicKeyBytes,
}

/// Stage 1, server → client: the keys of the client's neighbours that advertised theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourKeys {
    /// The round.
    pub round: u64,
    /// (neighbour, cipher key, mask key), ascending by neighbour.
    pub keys: Vec<(u32, PublicKeyBytes, PublicKeyBytes)>,
}

/// Stage 2, client → server: the client's shares, each sealed for its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShares {
    /// The round.
    pub round: u64,
    /// The sender (the owner of the secrets).
    pub client: u32,
    /// (holder, ciphertext), ascending by holder.
    pub shares: Vec<(u32, Vec<u8>)>,
}

/// Stage 2, server → client: the ciphertexts addressed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharesForHolder {
    /// The round.
    pub round: u64,
    /// (owner, ciphertext), ascending by owner: exactly the neighbours that finished stage 2.
    pub shares: Vec<(u32, Vec<u8>)>,
}

/// Stage 3, client → server: the masked input, `words` values mod 2^b, packed b bits each
/// on the wire (2.5 bytes per value at b = 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The round.
    pub round: u64,
    /// The sender.
    pub client: u32,
    /// b: each value is below 2^b.
    pub bits: u32,
    /// y_u = x_u + PRG(b_u) + Σ ±p_uv mod 2^b.
    pub values: Vec<u32>,
}

/// Stage 4, server → client: who sent a masked input and who dropped after stage 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// The round.
    pub round: u64,
    /// Clients whose masked input arrived (their self-mask seeds are reconstructed).
    pub survivors: Vec<u32>,
    /// Clients that finished stage 2 but sent no masked input (their mask keys are
    /// reconstructed).
    pub dropped: Vec<u32>,
}

/// One Shamir share of a 32-byte secret: the holder's x-coordinate and the share's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The owner of the secret.
    pub owner: u32,
    /// The share (encoding of the secret-sharing crate, fixed length).
    pub bytes: Vec<u8>,
}

/// Stage 4, client → server: shares of survivors' self-mask seeds and of dropped clients'
/// mask keys, never both for one owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskShares {
    /// The round.
    pub round: u64,
    /// The sender (the holder).
    pub client: u32,
    /// Shares of the self-mask seed b_u of survivors u.
    pub seed_shares: Vec<Share>,
    /// Shares of the mask key s_u of dropped clients u.
    pub key_shares: Vec<Share>,
}

const TAG_ADVERTISE: u8 = 1;
const TAG_NEIGHBOURS: u8 = 2;
const TAG_SHARES: u8 = 3;
const TAG_FOR_HOLDER: u8 = 4;
const TAG_MASKED: u8 = 5;
const TAG_UNMASK_REQUEST: u8 = 6;
const TAG_UNMASK_SHARES: u8 = 7;

/// The most entries any list of a message may claim (a count above it is refused before
/// anything is allocated).
const MAX_ENTRIES: u32 = 1 << 24;
/// The longest ciphertext or share accepted.
const MAX_BYTES: u32 = 1 << 12;

/// Writes a message.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8, round: u64) -> Self {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&round.to_le_bytes());
        Writer(bytes)
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn key(&mut self, key: &PublicKeyBytes) {
        self.0.extend_from_slice(key);
    }
    fn blob(&mut self, bytes: &[u8]) {
        self.u32(bytes.len() as u32);
        self.0.extend_from_slice(bytes);
    }
    fn count(&mut self, n: usize) {
        self.u32(n as u32);
    }
}

/// Reads a message, checking every length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], tag: u8, what: &'static str) -> Result<(Self, u64)> {
        let mut reader = Reader { bytes, at: 0, what };
        let found = reader.take(1)?[0];
        if found != tag {
            return Err(reader.error(format!("tag {found}, expected {tag}")));
        }
        let round = u64::from_le_bytes(reader.array()?);
        Ok((reader, round))
    }
    fn error(&self, message: String) -> Error {
        Error::Malformed {
            what: self.what,
            message: format!("{message} (at byte {} of {})", self.at, self.bytes.len()),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error(format!("truncated: {n} more bytes expected")))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn count(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u32()?;
        let left = self.bytes.len() - self.at;
        if n > MAX_ENTRIES || (n as usize).saturating_mul(item_bytes) > left {
            return Err(self.error(format!(
                "a list of {n} entries of at least {item_bytes} bytes in {left} bytes"
            )));
        }
        Ok(n as usize)
    }
    fn blob(&mut self) -> Result<Vec<u8>> {
        let n = self.u32()?;
        if n > MAX_BYTES {
            return Err(self.error(format!("a field of {n} bytes (at most {MAX_BYTES})")));
        }
        Ok(self.take(n as usize)?.to_vec())
    }
    fn finish<T>(self, value: T) -> Result<T> {
        if self.at != self.bytes.len() {
            return Err(self.error(format!(
                "{} bytes after the end of the message",
                self.bytes.len() - self.at
            )));
        }
        Ok(value)
    }
}

fn ascending(ids: impl Iterator<Item = u32>, what: &'static str) -> Result<()> {
    let mut last: Option<u32> = None;
    for id in ids {
        if last.is_some_and(|l| l >= id) {
            return Err(Error::Malformed {
                what,
                message: format!("client ids not strictly ascending at {id}"),
            });
        }
        last = Some(id);
    }
    Ok(())
}

impl AdvertiseKeys {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG_ADVERTISE, self.round);
        w.u32(self.client);
        w.key(&self.cipher_key);
        w.key(&self.mask_key);
        w.0
    }

    /// Parses [`AdvertiseKeys::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_ADVERTISE, "AdvertiseKeys")?;
        let value = AdvertiseKeys {
            round,
            client: r.u32()?,
            cipher_key: r.array()?,
            mask_key: r.array()?,
        };
        r.finish(value)
    }
}

impl NeighbourKeys {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG_NEIGHBOURS, self.round);
        w.count(self.keys.len());
        for (id, cipher, mask) in &self.keys {
            w.u32(*id);
            w.key(cipher);
            w.key(mask);
        }
        w.0
    }

    /// Parses [`NeighbourKeys::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_NEIGHBOURS, "NeighbourKeys")?;
        let n = r.count(68)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            keys.push((r.u32()?, r.array()?, r.array()?));
        }
        ascending(keys.iter().map(|k| k.0), "NeighbourKeys")?;
        r.finish(NeighbourKeys { round, keys })
    }
}

fn encode_pairs(tag: u8, round: u64, client: Option<u32>, pairs: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new(tag, round);
    if let Some(client) = client {
        w.u32(client);
    }
    w.count(pairs.len());
    for (id, bytes) in pairs {
        w.u32(*id);
        w.blob(bytes);
    }
    w.0
}

fn decode_pairs(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<(u32, Vec<u8>)>> {
    let n = r.count(8)?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((r.u32()?, r.blob()?));
    }
    ascending(pairs.iter().map(|p| p.0), what)?;
    Ok(pairs)
}

impl EncryptedShares {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode_pairs(TAG_SHARES, self.round, Some(self.client), &self.shares)
    }

    /// Parses [`EncryptedShares::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_SHARES, "EncryptedShares")?;
        let client = r.u32()?;
        let shares = decode_pairs(&mut r, "EncryptedShares")?;
        r.finish(EncryptedShares {
            round,
            client,
            shares,
        })
    }
}

impl SharesForHolder {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode_pairs(TAG_FOR_HOLDER, self.round, None, &self.shares)
    }

    /// Parses [`SharesForHolder::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_FOR_HOLDER, "SharesForHolder")?;
        let shares = decode_pairs(&mut r, "SharesForHolder")?;
        r.finish(SharesForHolder { round, shares })
    }
}

impl MaskedInput {
    /// The bytes on the wire: the values packed `bits` bits each, least significant first
    /// (values above 2^b − 1 lose their high bits: the client reduces them first).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG_MASKED, self.round);
        w.u32(self.client);
        w.u32(self.bits);
        w.count(self.values.len());
        let bits = self.bits.clamp(1, 32);
        let packed = pack(&self.values, bits);
        w.0.extend_from_slice(&packed);
        w.0
    }

    /// Parses [`MaskedInput::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_MASKED, "MaskedInput")?;
        let client = r.u32()?;
        let bits = r.u32()?;
        if !(1..=32).contains(&bits) {
            return Err(r.error(format!("{bits} bits per value (1 to 32)")));
        }
        let n = r.u32()? as usize;
        let length = n
            .checked_mul(bits as usize)
            .map(|b| b.div_ceil(8))
            .filter(|&len| len <= bytes.len())
            .ok_or_else(|| r.error(format!("{n} values of {bits} bits")))?;
        let values = unpack(r.take(length)?, n, bits);
        r.finish(MaskedInput {
            round,
            client,
            bits,
            values,
        })
    }
}

/// `values` packed `bits` bits each, least significant first, through a 64-bit
/// accumulator (values are masked to `bits` bits).
fn pack(values: &[u32], bits: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut filled) = (0u64, 0u32);
    for &v in values {
        acc |= (u64::from(v) & mask) << filled;
        filled += bits;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    out
}

/// The `n` values of `bits` bits packed in `bytes` by [`pack`] (`bytes` holds at least
/// ⌈n·bits/8⌉ bytes).
fn unpack(bytes: &[u8], n: usize, bits: u32) -> Vec<u32> {
    let mask = (1u64 << bits) - 1;
    let mut values = Vec::with_capacity(n);
    let (mut acc, mut filled) = (0u64, 0u32);
    let mut next = bytes.iter();
    for _ in 0..n {
        while filled < bits {
            acc |= u64::from(*next.next().unwrap_or(&0)) << filled;
            filled += 8;
        }
        values.push((acc & mask) as u32);
        acc >>= bits;
        filled -= bits;
    }
    values
}

impl UnmaskRequest {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG_UNMASK_REQUEST, self.round);
        for list in [&self.survivors, &self.dropped] {
            w.count(list.len());
            list.iter().for_each(|&id| w.u32(id));
        }
        w.0
    }

    /// Parses [`UnmaskRequest::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_UNMASK_REQUEST, "UnmaskRequest")?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.count(4)?;
            for _ in 0..n {
                list.push(r.u32()?);
            }
            ascending(list.iter().copied(), "UnmaskRequest")?;
        }
        let [survivors, dropped] = lists;
        r.finish(UnmaskRequest {
            round,
            survivors,
            dropped,
        })
    }
}

impl UnmaskShares {
    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG_UNMASK_SHARES, self.round);
        w.u32(self.client);
        for list in [&self.seed_shares, &self.key_shares] {
            w.count(list.len());
            for share in list {
                w.u32(share.owner);
                w.blob(&share.bytes);
            }
        }
        w.0
    }

    /// Parses [`UnmaskShares::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut r, round) = Reader::new(bytes, TAG_UNMASK_SHARES, "UnmaskShares")?;
        let client = r.u32()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.count(8)?;
            for _ in 0..n {
                list.push(Share {
                    owner: r.u32()?,
                    bytes: r.blob()?,
                });
            }
            ascending(list.iter().map(|s| s.owner), "UnmaskShares")?;
        }
        let [seed_shares, key_shares] = lists;
        r.finish(UnmaskShares {
            round,
            client,
            seed_shares,
            key_shares,
        })
    }
}
