//! The random source of the secure noise mode (batches and noise): ChaCha20 seeded from the operating system
//! (getrandom, through rand's `OsRng`) and reseeded from it after every
//! [`RESEED_BYTES`] of output, as rand's `ThreadRng` does. Nothing about it is written to
//! disk or derived from a config: a secure run's batches and noise cannot be replayed, even
//! by someone holding its run directory.

use rand::SeedableRng;
use rand::rngs::{OsRng, ReseedingRng};
use rand_chacha::{ChaCha20Core, ChaCha20Rng};

use crate::error::{Error, Result};

/// Output after which the generator takes a fresh key from the operating system.
pub const RESEED_BYTES: u64 = 64 * 1024;

/// A cryptographically secure generator, seeded and reseeded by the operating system.
pub type SecureRng = ReseedingRng<ChaCha20Core, OsRng>;

/// A fresh [`SecureRng`]; errors if the operating system has no randomness to give.
pub fn secure_rng() -> Result<SecureRng> {
    ReseedingRng::new(RESEED_BYTES, OsRng).map_err(|e| {
        Error::Usage(format!(
            "secure noise: the operating system's random source failed ({e}); no seeded \
             fallback is used in secure mode"
        ))
    })
}

/// An independent ChaCha20 generator keyed from `parent` (one per parallel noise chunk).
pub fn child(parent: &mut SecureRng) -> ChaCha20Rng {
    ChaCha20Rng::from_rng(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn two_generators_never_agree() {
        // Seeded by the OS: two generators (and two children) share no output.
        let (mut a, mut b) = (secure_rng().unwrap(), secure_rng().unwrap());
        let (x, y): (Vec<u64>, Vec<u64>) = (0..4).map(|_| (a.next_u64(), b.next_u64())).unzip();
        assert_ne!(x, y);
        let (mut c, mut d) = (child(&mut a), child(&mut a));
        assert_ne!(c.next_u64(), d.next_u64());
    }
}
