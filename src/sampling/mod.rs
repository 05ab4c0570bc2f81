//! Batch sampling, exactly as the accountant assumes.
//!
//! [`PoissonSampler`]: every example is in each batch independently with probability q
//! (Abadi et al. 2016; the analysis of Mironov, Talwar & Zhang 2019 that `privacy` uses).
//! Batches vary in size and may be empty; an empty batch is still a step (noise only).
//! Shuffle-and-slice batching is *not* offered: its privacy is not what the Poisson analysis
//! reports (Chua et al. 2024, "How private are DP-SGD implementations?").

pub mod secure_rng;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};
use secure_rng::{SecureRng, secure_rng};

/// Draws Poisson-sampled batches of indices into a data set of `dataset_size` examples.
#[derive(Debug)]
pub struct PoissonSampler {
    sample_rate: f64,
    dataset_size: usize,
    /// `ln(1 − q)`, the scale of the geometric gaps between included examples.
    ln_keep: f64,
    source: Source,
}

/// Where a sampler's randomness comes from.
#[derive(Debug)]
enum Source {
    /// Fast mode: a seeded stream (reproducible, resumable by word position).
    Seeded(ChaCha20Rng),
    /// Secure mode: the OS-seeded generator, and the expected batch size B (q = B/N exactly).
    Secure(SecureRng, u64),
}

impl PoissonSampler {
    /// A sampler with rate `sample_rate` ∈ (0, 1], seeded (fast, reproducible mode).
    pub fn new(sample_rate: f64, dataset_size: usize, seed: u64) -> Result<Self> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(Error::invalid(
                "sample_rate",
                sample_rate,
                "a probability in (0, 1]",
            ));
        }
        if dataset_size == 0 {
            return Err(Error::invalid(
                "dataset_size",
                dataset_size,
                "at least one example",
            ));
        }
        Ok(PoissonSampler {
            sample_rate,
            dataset_size,
            ln_keep: (-sample_rate).ln_1p(),
            source: Source::Seeded(ChaCha20Rng::seed_from_u64(seed)),
        })
    }

    /// The secure mode's sampler for expected batch size B over N examples: every example
    /// is included when a uniform integer below N, from an OS-seeded CSPRNG, is below B,
    /// which is Bernoulli(B/N) exactly (no floating point). Costs N draws per batch; not
    /// reproducible and not resumable at the same stream (a resumed run draws afresh).
    pub fn secure(expected_batch_size: usize, dataset_size: usize) -> Result<Self> {
        let mut sampler =
            PoissonSampler::with_expected_batch_size(expected_batch_size, dataset_size, 0)?;
        sampler.source = Source::Secure(secure_rng()?, expected_batch_size as u64);
        Ok(sampler)
    }

    /// The sampler for an expected batch size B over N examples: q = B/N.
    pub fn with_expected_batch_size(
        expected_batch_size: usize,
        dataset_size: usize,
        seed: u64,
    ) -> Result<Self> {
        if expected_batch_size == 0 || expected_batch_size > dataset_size {
            return Err(Error::invalid(
                "expected_batch_size",
                expected_batch_size,
                format!("a whole number from 1 to the data set size ({dataset_size})"),
            ));
        }
        PoissonSampler::new(
            expected_batch_size as f64 / dataset_size as f64,
            dataset_size,
            seed,
        )
    }

    /// Where the sampler's random stream stands (for checkpoints): with the seed, it
    /// resumes the same sequence of batches ([`PoissonSampler::seek`]).
    pub fn position(&self) -> u128 {
        match &self.source {
            Source::Seeded(rng) => rng.get_word_pos(),
            Source::Secure(..) => 0,
        }
    }

    /// Moves the random stream to `position` (from [`PoissonSampler::position`]).
    pub fn seek(&mut self, position: u128) {
        if let Source::Seeded(rng) = &mut self.source {
            rng.set_word_pos(position);
        }
    }

    /// q, the probability that an example is in a batch.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// q·N: divide the noisy sum by this, never by a batch's realised size.
    pub fn expected_batch_size(&self) -> f64 {
        self.sample_rate * self.dataset_size as f64
    }

    /// The next batch: increasing indices, each included with probability q independently.
    ///
    /// # Privacy
    /// Inclusion is i.i.d. Bernoulli(q), drawn by skipping geometric gaps: the gap before
    /// the next included example is `⌊ln U / ln(1−q)⌋` with U uniform on (0, 1], whose law
    /// is P(gap = k) = (1−q)^k q, exactly the waiting time of Bernoulli(q) trials. Cost is
    /// O(batch) rather than O(N). Secure mode draws Bernoulli(B/N) for every example
    /// instead ([`PoissonSampler::secure`]).
    pub fn sample(&mut self) -> Vec<usize> {
        if self.sample_rate == 1.0 {
            return (0..self.dataset_size).collect();
        }
        let capacity = (self.expected_batch_size() * 1.2) as usize + 8;
        let (n, ln_keep) = (self.dataset_size, self.ln_keep);
        let rng = match &mut self.source {
            Source::Seeded(rng) => rng,
            Source::Secure(rng, expected) => {
                let n = self.dataset_size as u64;
                return (0..self.dataset_size)
                    .filter(|_| uniform_below(rng, n) < *expected)
                    .collect();
            }
        };
        let mut batch = Vec::with_capacity(capacity);
        let mut position = 0usize;
        loop {
            // 1 − [0, 1) is (0, 1]: ln U is finite.
            let u: f64 = 1.0 - rng.random::<f64>();
            let gap = (u.ln() / ln_keep).floor();
            if gap >= (n - position) as f64 {
                break;
            }
            position += gap as usize;
            batch.push(position);
            position += 1;
            if position >= n {
                break;
            }
        }
        batch
    }
}

/// Uniform on {0, …, n−1}, n ≥ 1, by rejection: values below 2^64 mod n are redrawn, so
/// the accepted range is a whole number of copies of {0, …, n−1}. Integers only (the
/// secure sampler and the discrete Gaussian use it).
pub(crate) fn uniform_below(rng: &mut impl RngCore, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n;
    loop {
        let r = rng.next_u64();
        if r >= threshold {
            return r % n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |z| above this has probability below 1e-6 under the null (two-sided normal).
    const Z_1E6: f64 = 4.892;

    #[test]
    fn inclusion_rate_is_q_for_every_position() {
        let (n, q) = (200, 0.05);
        check_inclusion_rates(PoissonSampler::new(q, n, 7).unwrap(), n, q);
    }

    #[test]
    fn secure_inclusion_rate_is_q_for_every_position() {
        // B/N = 10/200 = 0.05, from the OS-seeded generator (a fresh stream each run; the
        // bounds hold at the same 1e-6 false-failure rate).
        let sampler = PoissonSampler::secure(10, 200).unwrap();
        assert_eq!(sampler.sample_rate(), 0.05);
        check_inclusion_rates(sampler, 200, 0.05);
    }

    fn check_inclusion_rates(mut sampler: PoissonSampler, n: usize, q: f64) {
        let steps = 20_000;
        let mut counts = vec![0u32; n];
        let mut sizes = Vec::with_capacity(steps);
        for _ in 0..steps {
            let batch = sampler.sample();
            assert!(batch.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
            for &i in &batch {
                counts[i] += 1;
            }
            sizes.push(batch.len() as f64);
        }
        // Overall rate: a binomial(n·steps, q) count.
        let total: f64 = counts.iter().map(|&c| f64::from(c)).sum();
        let trials = (n * steps) as f64;
        let z = (total - trials * q) / (trials * q * (1.0 - q)).sqrt();
        assert!(z.abs() < Z_1E6, "overall z = {z}");
        // Every position: a Bonferroni-corrected bound (n tests at 1e-6 together).
        let per = steps as f64;
        let bound = 6.0; // P(|Z| > 6) ≈ 2e-9, times 200 positions < 1e-6.
        for (i, &c) in counts.iter().enumerate() {
            let z = (f64::from(c) - per * q) / (per * q * (1.0 - q)).sqrt();
            assert!(z.abs() < bound, "position {i}: z = {z}");
        }
        // Batch sizes: mean n·q, variance n·q·(1−q) (binomial), checked loosely.
        let mean = sizes.iter().sum::<f64>() / steps as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / steps as f64;
        assert!(
            (mean - n as f64 * q).abs() < Z_1E6 * (n as f64 * q * (1.0 - q) / steps as f64).sqrt()
        );
        assert!(
            (var / (n as f64 * q * (1.0 - q)) - 1.0).abs() < 0.1,
            "variance {var}"
        );
    }

    #[test]
    fn empty_batches_happen_at_their_rate() {
        // P(empty) = (1 − q)^n = 0.9^10 ≈ 0.3487.
        let mut sampler = PoissonSampler::new(0.1, 10, 3).unwrap();
        let steps = 20_000;
        let empty = (0..steps).filter(|_| sampler.sample().is_empty()).count() as f64;
        let p = 0.9f64.powi(10);
        let z = (empty - steps as f64 * p) / (steps as f64 * p * (1.0 - p)).sqrt();
        assert!(z.abs() < Z_1E6, "z = {z}");
    }

    #[test]
    fn same_seed_same_batches_and_full_rate_takes_everything() {
        let mut a = PoissonSampler::with_expected_batch_size(256, 60_000, 42).unwrap();
        let mut b = PoissonSampler::with_expected_batch_size(256, 60_000, 42).unwrap();
        assert_eq!(a.sample_rate(), 256.0 / 60_000.0);
        assert!((a.expected_batch_size() - 256.0).abs() < 1e-9);
        for _ in 0..10 {
            assert_eq!(a.sample(), b.sample());
        }
        let mut all = PoissonSampler::new(1.0, 5, 0).unwrap();
        assert_eq!(all.sample(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(PoissonSampler::new(0.0, 10, 0).is_err());
        assert!(PoissonSampler::new(1.1, 10, 0).is_err());
        assert!(PoissonSampler::new(0.5, 0, 0).is_err());
        assert!(PoissonSampler::with_expected_batch_size(11, 10, 0).is_err());
        assert!(PoissonSampler::with_expected_batch_size(0, 10, 0).is_err());
    }
}
