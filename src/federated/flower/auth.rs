//! A SuperNode's identity on the Fleet API (flwr 1.42): an ECDSA P-384 key, and the three
//! headers every request carries, with or without SuperNode authentication.
//!
//! - `flwr-public-key`: base64 of the key's SubjectPublicKeyInfo PEM (64-character lines,
//!   a final newline, as Python's `cryptography` writes it; RegisterNode and ActivateNode
//!   send the same PEM bytes in their body);
//! - `flwr-timestamp`: the time in ISO 8601 with microseconds and a UTC offset;
//! - `flwr-signature`: base64 of the DER ECDSA signature of the timestamp's bytes, hashed
//!   with SHA-256 (not the curve's usual SHA-384). The SuperLink accepts timestamps from
//!   5 s ahead to 300 s behind its clock.
//!
//! The signature covers the timestamp only, so a captured header triple can be replayed for
//! about five minutes: use TLS (the README's federation section).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A node's key pair.
pub struct NodeKey {
    signing: SigningKey,
    public_pem: String,
}

impl NodeKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 48]);
        loop {
            getrandom::fill(bytes.as_mut())
                .map_err(|e| Error::Usage(format!("the OS random source failed: {e}")))?;
            // A uniform 384-bit string is a valid scalar unless it is 0 or ≥ n (≈ 2^-190).
            if let Ok(signing) = SigningKey::from_slice(bytes.as_ref()) {
                return Self::from_signing(signing);
            }
        }
    }

    /// A key from a PKCS#8 PEM file's text.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            Error::invalid("Flower node key", e, "a P-384 private key in PKCS#8 PEM")
        })?;
        Self::from_signing(signing)
    }

    fn from_signing(signing: SigningKey) -> Result<Self> {
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Usage(format!("encoding the node's public key: {e}")))?;
        Ok(NodeKey {
            signing,
            public_pem,
        })
    }

    /// The public key as SubjectPublicKeyInfo PEM (RegisterNode's and ActivateNode's
    /// `public_key`).
    pub fn public_pem(&self) -> &[u8] {
        self.public_pem.as_bytes()
    }

    /// The three authentication headers of a request made at `timestamp`
    /// ([`timestamp_now`]).
    pub fn headers(&self, timestamp: &str) -> Result<[(&'static str, String); 3]> {
        let signature: Signature = self
            .signing
            .sign_prehash(&Sha256::digest(timestamp.as_bytes()))
            .map_err(|e| Error::Usage(format!("signing the request's timestamp: {e}")))?;
        Ok([
            (
                "flwr-public-key",
                STANDARD.encode(self.public_pem.as_bytes()),
            ),
            ("flwr-timestamp", timestamp.to_string()),
            (
                "flwr-signature",
                STANDARD.encode(signature.to_der().as_bytes()),
            ),
        ])
    }
}

/// Whether `signature` (the `flwr-signature` header) is `public_key`'s (the
/// `flwr-public-key` header) over `timestamp`, as the SuperLink checks it.
pub fn verify_headers(public_key: &str, timestamp: &str, signature: &str) -> Result<()> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::invalid(
            format!("Flower header {what}"),
            e.to_string(),
            "a valid value",
        )
    };
    let pem = STANDARD
        .decode(public_key)
        .map_err(|e| bad("flwr-public-key", &e))?;
    let pem = String::from_utf8(pem).map_err(|e| bad("flwr-public-key", &e))?;
    let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| bad("flwr-public-key", &e))?;
    let der = STANDARD
        .decode(signature)
        .map_err(|e| bad("flwr-signature", &e))?;
    let signature = Signature::from_der(&der).map_err(|e| bad("flwr-signature", &e))?;
    key.verify_prehash(&Sha256::digest(timestamp.as_bytes()), &signature)
        .map_err(|e| bad("flwr-signature", &e))
}

/// Now, as `datetime.now(UTC).isoformat()` writes it: `2026-12-06T03:21:41.981931+00:00`.
pub fn timestamp_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    iso_timestamp(since.as_secs(), since.subsec_micros())
}

/// Unix time `seconds` + `micros` in ISO 8601, UTC, microseconds.
pub fn iso_timestamp(seconds: u64, micros: u32) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Hinnant's algorithm,
/// "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flwr 1.42.0's own headers for a fixed key (cryptography's signer, random nonce).
    const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDAAAAAAAAAAAAEjRWeJ\nq83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze+hZANiAARBSEwj5zM5\ntOkfOOFltWBjR//vtUcyZonmtUl1tL53NF6QmP/0gfZipCezvt6ndUyTB6PT9r6f\nD7fCCGpEFsnFXKkynR3cx91jWwXlVzO02aLf4cqK3q0jRmdJBMsIPx0=\n-----END PRIVATE KEY-----\n";
    const PUBLIC_HEADER: &str = "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KTUhZd0VBWUhLb1pJemowQ0FRWUZLNEVFQUNJRFlnQUVRVWhNSStjek9iVHBIempoWmJWZ1kwZi83N1ZITW1hSgo1clZKZGJTK2R6UmVrSmovOUlIMllxUW5zNzdlcDNWTWt3ZWowL2ErbncrM3dnaHFSQmJKeFZ5cE1wMGQzTWZkClkxc0Y1VmN6dE5taTMrSEtpdDZ0STBablNRVExDRDhkCi0tLS0tRU5EIFBVQkxJQyBLRVktLS0tLQo=";
    const TIMESTAMP: &str = "2026-12-06T03:21:41.981931+00:00";
    const SIGNATURE: &str = "MGUCMHPbqA57w/w+9L41vOW++h7GA05oYgbGwPssKVsHozkRIio0b2K+H2YUbP+hmn0EdwIxALFtLm3SrobWwIx9FUFXlh58kgQy9p/KUYLy+YUqIkoO7vMbnsTUSS25Q3MSUkEOqw==";

    #[test]
    fn headers_match_flowers_and_verify_as_the_superlink_verifies_them() {
        let key = NodeKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
        let headers = key.headers(TIMESTAMP).unwrap();
        assert_eq!(headers[0], ("flwr-public-key", PUBLIC_HEADER.to_string()));
        assert_eq!(headers[1].1, TIMESTAMP);
        // Flower's signature verifies under our reading, and ours does too.
        verify_headers(PUBLIC_HEADER, TIMESTAMP, SIGNATURE).unwrap();
        verify_headers(&headers[0].1, TIMESTAMP, &headers[2].1).unwrap();
        // Another timestamp, another key or a SHA-384 signature does not.
        assert!(
            verify_headers(PUBLIC_HEADER, "2026-12-06T03:21:42.981931+00:00", SIGNATURE).is_err()
        );
        let other = NodeKey::generate().unwrap();
        let theirs = other.headers(TIMESTAMP).unwrap();
        assert!(verify_headers(PUBLIC_HEADER, TIMESTAMP, &theirs[2].1).is_err());
        use p384::ecdsa::signature::Signer;
        let sha384: Signature = key.signing.sign(TIMESTAMP.as_bytes());
        let sha384 = STANDARD.encode(sha384.to_der().as_bytes());
        assert!(verify_headers(PUBLIC_HEADER, TIMESTAMP, &sha384).is_err());
        assert!(verify_headers("not base64!", TIMESTAMP, SIGNATURE).is_err());
    }

    #[test]
    fn timestamps_are_written_as_python_writes_them() {
        // 2026-12-06T03:21:41 UTC is unix 1796527301 (and two dates around leap days).
        assert_eq!(iso_timestamp(1_796_527_301, 981_931), TIMESTAMP);
        assert_eq!(
            iso_timestamp(951_782_400, 0),
            "2000-02-29T00:00:00.000000+00:00"
        );
        assert_eq!(iso_timestamp(0, 5), "1970-01-01T00:00:00.000005+00:00");
        assert_eq!(
            iso_timestamp(4_107_542_399, 999_999),
            "2100-02-28T23:59:59.999999+00:00"
        );
        let now = timestamp_now();
        assert!(
            now.starts_with("20") && now.ends_with("+00:00") && now.len() == 32,
            "{now}"
        );
    }
}
