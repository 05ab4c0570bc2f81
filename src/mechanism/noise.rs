//! Gaussian noise for the clipped sum.
//!
//! Fast mode: ChaCha12 streams (the generator of rand's `StdRng`; 12 rounds keep a wide
//! security margin and draw 1.6x faster than 20, which mattered for the mlp's 407,050
//! coordinates per step) seeded from the config feed `rand_distr`'s standard normal
//! (ziggurat), scaled by σ·C. Call k draws from ChaCha stream k; its j-th chunk of
//! [`NOISE_CHUNK`] coordinates starts at word 2⁴⁰·j of that stream, so no two coordinates of
//! any two calls share random words, and chunks are drawn in parallel with the same result
//! for any thread count. Reproducible from the seed; **not hardened against the
//! floating-point attacks** on textbook samplers (Mironov 2012, "On significance of the
//! least significant bits for differential privacy"; Jin et al. 2022): the low bits of
//! floating-point Gaussian samples can leak. Reports say so. The secure mode
//! ([`super::secure_noise`]: a discrete Gaussian on a grid, Canonne, Kamath & Steinke 2020)
//! is.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::real::Real;

/// Coordinates per independently drawn chunk.
pub const NOISE_CHUNK: usize = 16_384;

/// Words of the ChaCha stream set aside per chunk (a ziggurat draw takes 2 words, rarely
/// more; 2⁴⁰ can never be used up).
const CHUNK_WORDS: u128 = 1 << 40;

/// A stream of N(0, noise_std²) values, one fresh draw per coordinate per call.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    noise_std: f64,
    seed: u64,
    /// Calls so far: call k uses ChaCha stream k.
    calls: u64,
}

impl GaussianNoise {
    /// Noise of standard deviation `noise_std` = σ·C (≥ 0, finite), seeded.
    pub fn new(noise_std: f64, seed: u64) -> Result<Self> {
        if !(noise_std >= 0.0 && noise_std.is_finite()) {
            return Err(Error::invalid(
                "noise_std",
                noise_std,
                "a finite number at least 0",
            ));
        }
        Ok(GaussianNoise {
            noise_std,
            seed,
            calls: 0,
        })
    }

    /// Calls so far (for checkpoints: call k draws from stream k, so a resumed run sets
    /// this back and never reuses a stream).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Continues after `calls` calls (from [`GaussianNoise::calls`]).
    pub fn set_calls(&mut self, calls: u64) {
        self.calls = calls;
    }

    /// The standard deviation σ·C.
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }

    /// Changes σ·C (noise schedules); the stream continues.
    pub fn set_noise_std(&mut self, noise_std: f64) -> Result<()> {
        GaussianNoise::new(noise_std, self.seed)?;
        self.noise_std = noise_std;
        Ok(())
    }

    /// Adds an independent N(0, noise_std²) draw to every value.
    ///
    /// # Privacy
    /// With `values` the sum of per-example gradients clipped to C and `noise_std` = σ·C,
    /// this is the Gaussian mechanism of noise multiplier σ (fast mode caveats above).
    pub fn add_to<T: Real>(&mut self, values: &mut [T]) {
        let (seed, stream, std) = (self.seed, self.calls, T::of(self.noise_std));
        self.calls += 1;
        let fill = |(chunk, values): (usize, &mut [T])| {
            let mut rng = ChaCha12Rng::seed_from_u64(seed);
            rng.set_stream(stream);
            rng.set_word_pos(chunk as u128 * CHUNK_WORDS);
            for v in values.iter_mut() {
                *v += T::standard_normal(&mut rng) * std;
            }
        };
        if values.len() <= NOISE_CHUNK {
            values.chunks_mut(NOISE_CHUNK).enumerate().for_each(fill);
        } else {
            values
                .par_chunks_mut(NOISE_CHUNK)
                .enumerate()
                .for_each(fill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_requested_standard_deviation() {
        let (std, n) = (2.5, 200_000);
        let mut noise = GaussianNoise::new(std, 11).unwrap();
        let mut values = vec![0.0f32; n];
        noise.add_to(&mut values);
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        // Mean: N(0, std²/n); variance: approx N(std², 2std⁴/n). Bounds at |z| < 4.9 (1e-6).
        assert!(mean.abs() < 4.9 * std / (n as f64).sqrt(), "mean {mean}");
        let z = (var - std * std) / (std * std * (2.0 / n as f64).sqrt());
        assert!(z.abs() < 4.9, "variance {var}, z = {z}");
    }

    #[test]
    fn draws_are_fresh_each_call_and_reproducible_by_seed() {
        let mut a = GaussianNoise::new(1.0, 5).unwrap();
        let mut b = GaussianNoise::new(1.0, 5).unwrap();
        let (mut x, mut y) = (vec![0.0f32; 8], vec![0.0f32; 8]);
        a.add_to(&mut x);
        b.add_to(&mut y);
        assert_eq!(x, y);
        let mut again = vec![0.0f32; 8];
        a.add_to(&mut again);
        assert_ne!(x, again, "never the same noise twice");
    }

    #[test]
    fn chunks_and_calls_draw_independent_values() {
        // Two calls, and two chunks of one call, never line up: equal values at the same
        // offset happen by chance with probability about 1e-7 each.
        let mut noise = GaussianNoise::new(1.0, 3).unwrap();
        let mut first = vec![0.0f32; 2 * NOISE_CHUNK];
        let mut second = first.clone();
        noise.add_to(&mut first);
        noise.add_to(&mut second);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x == y).count();
        assert!(same(&first, &second) <= 2, "calls repeat");
        let (chunk0, chunk1) = first.split_at(NOISE_CHUNK);
        assert!(same(chunk0, chunk1) <= 2, "chunks repeat");
        // Same seed, same values, whatever the thread count (chunks are fixed by index).
        let mut again = vec![0.0f32; 2 * NOISE_CHUNK];
        GaussianNoise::new(1.0, 3).unwrap().add_to(&mut again);
        assert_eq!(again, first);
    }

    #[test]
    fn bad_standard_deviations_are_refused() {
        assert!(GaussianNoise::new(-1.0, 0).is_err());
        assert!(GaussianNoise::new(f64::NAN, 0).is_err());
    }
}
