//! Secure noise: the clipped sum rounded to a grid plus discrete Gaussian noise, sampled
//! exactly with integer arithmetic (Canonne, Kamath & Steinke 2020, "The discrete Gaussian
//! for differential privacy"), from an OS-seeded CSPRNG ([`crate::sampling::secure_rng`]).
//!
//! # What it protects against
//! Floating-point Gaussian samplers leak through the low bits of their output: the set of
//! values a sampler can produce around x depends on x, so a released noisy value can reveal
//! which input it came from (Mironov 2012, "On significance of the least significant bits
//! for differential privacy"; Jin et al. 2022, "Are we there yet? Timing and floating-point
//! attacks on differential privacy systems"). Here every noisy coordinate is an integer
//! number of grid steps γ, drawn from the exact discrete Gaussian; the conversion back to
//! floating point happens after the noise (post-processing), so no bit of the output depends
//! on the input except through the integer-valued mechanism.
//!
//! # The grid and the noise
//! For d coordinates, clip norm C and noise multiplier σ:
//! - γ = C/2^k with 2^k ≥ 1000·√d where the variance limit allows (k is lowered, never
//!   below 2^k ≥ 100·√d, when σ is so large that σ_g² would exceed
//!   [`discrete_gaussian::MAX_SIGMA2`]);
//! - each coordinate of the clipped sum is rounded to the nearest multiple of γ. Rounding
//!   moves each coordinate by at most γ/2, so two neighbouring sums (L2 distance ≤ C) round
//!   to integer vectors at most Δ_g = 2^k·(1 + [`CLIP_SLACK`]) + √d apart, in grid units
//!   (the slack covers the f32 clip factors, whose products we test to stay within
//!   C·(1 + 1e-6), and the f64 scaling);
//! - N_Z(0, σ_g²) is added per coordinate with σ_g² = ⌈(σ·Δ_g)²⌉ (rounded up: more noise),
//!   so σ_g/Δ_g ≥ σ: the step is accounted as a sampled Gaussian of multiplier σ at integer
//!   orders (`privacy::discrete` proves the bound).
//!
//! The price is the factor Δ_g/2^k ≈ 1 + √d/2^k ≤ 1.001 on the noise.
//!
//! # Limits
//! - Timing: the samplers are rejection samplers whose running time depends on the values
//!   drawn (CKS 2020, Sec. 5; Jin et al. 2022 time such loops). An observer who can time
//!   individual steps learns about the noise, not directly about the data, but the
//!   guarantee assumes the adversary sees only the released model.
//! - The clipped sum itself is computed in f32 (as in every DP-SGD library); its rounding
//!   error is not part of the analysis. The noise is what the attacks above exploit.
//! - Batches come from the same CSPRNG with exact Bernoulli(B/N) draws
//!   (`sampling::PoissonSampler::secure`); the accountant uses q = B/N rounded to f64.

use rayon::prelude::*;

use super::discrete_gaussian::{self, MAX_SIGMA2};
use super::noise::NOISE_CHUNK;
use crate::error::{Error, Result};
use crate::sampling::secure_rng::{SecureRng, child, secure_rng};

/// Relative slack on the clip norm in the sensitivity (f32 clipping and f64 scaling).
pub const CLIP_SLACK: f64 = 1e-5;

/// The grid and the noise of one step, in grid units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Grid steps per clip norm: γ = C / 2^k.
    pub k: u32,
    /// The grid step γ.
    pub step: f64,
    /// Grid steps per unit of gradient, 2^k / C.
    pub per_unit: f64,
    /// The sum's L2 sensitivity in grid steps, Δ_g = 2^k·(1 + slack) + √d.
    pub sensitivity: f64,
    /// The discrete Gaussian's variance σ_g² = ⌈(σ·Δ_g)²⌉, in grid steps squared.
    pub variance: u128,
}

impl Grid {
    /// The grid for `dimension` coordinates, clip norm `clip_norm` and multiplier σ.
    pub fn new(dimension: usize, clip_norm: f64, noise_multiplier: f64) -> Result<Grid> {
        if dimension == 0 {
            return Err(Error::invalid("dimension", 0, "at least one coordinate"));
        }
        if !(clip_norm > 0.0 && clip_norm.is_finite()) {
            return Err(Error::invalid(
                "clip_norm",
                clip_norm,
                "a finite number above 0",
            ));
        }
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(Error::invalid(
                "noise_multiplier",
                noise_multiplier,
                "a finite number above 0",
            ));
        }
        let root_d = (dimension as f64).sqrt();
        let finest = (1000.0 * root_d).log2().ceil() as u32;
        let coarsest = (100.0 * root_d).log2().ceil() as u32;
        for k in (coarsest..=finest).rev() {
            let scale = (1u64 << k) as f64;
            let sensitivity = scale * (1.0 + CLIP_SLACK) + root_d;
            // ⌈·⌉ of a value computed in f64, nudged up so that rounding cannot lose noise.
            let variance = ((noise_multiplier * sensitivity).powi(2) * (1.0 + 1e-12)).ceil();
            if variance <= MAX_SIGMA2 as f64 {
                return Ok(Grid {
                    k,
                    step: clip_norm / scale,
                    per_unit: scale / clip_norm,
                    sensitivity,
                    variance: (variance as u128).max(1),
                });
            }
        }
        Err(Error::invalid(
            "privacy.noise_multiplier",
            noise_multiplier,
            format!(
                "at most {:.1} in secure noise mode for a model of {dimension} parameters \
                 (the discrete Gaussian's variance is limited to 2^48 grid steps squared)",
                (MAX_SIGMA2 as f64).sqrt() / ((100.0 * root_d).log2().ceil().exp2() + root_d)
            ),
        ))
    }
}

/// Discrete Gaussian noise on a grid for the clipped sums of one model (`dimension`
/// coordinates in all), from a CSPRNG seeded by the operating system.
pub struct SecureNoise {
    rng: SecureRng,
    dimension: usize,
    grid: Grid,
}

impl std::fmt::Debug for SecureNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureNoise")
            .field("dimension", &self.dimension)
            .field("grid", &self.grid)
            .finish_non_exhaustive()
    }
}

impl SecureNoise {
    /// Noise for `dimension` coordinates at clip norm C and multiplier σ.
    pub fn new(dimension: usize, clip_norm: f64, noise_multiplier: f64) -> Result<Self> {
        Ok(SecureNoise {
            rng: secure_rng()?,
            dimension,
            grid: Grid::new(dimension, clip_norm, noise_multiplier)?,
        })
    }

    /// Changes C and σ (schedules); the grid follows.
    pub fn set(&mut self, clip_norm: f64, noise_multiplier: f64) -> Result<()> {
        self.grid = Grid::new(self.dimension, clip_norm, noise_multiplier)?;
        Ok(())
    }

    /// The current grid.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// Rounds every value (a part of the clipped sum) to the grid and adds an independent
    /// N_Z(0, σ_g²) draw in grid units; the result is converted back to f32 afterwards.
    ///
    /// # Privacy
    /// With `values` (together with the other parts of the same step's sum, all on this
    /// grid) the sum of per-example gradients clipped to C, this is the discrete Gaussian
    /// mechanism of the module's doc: accounted as multiplier σ at integer orders.
    pub fn add_to<T: crate::real::Real>(&mut self, values: &mut [T]) -> Result<()> {
        let grid = self.grid;
        // One generator per chunk, keyed in order from the OS-seeded one.
        let generators: Vec<_> = values
            .chunks(NOISE_CHUNK)
            .map(|_| child(&mut self.rng))
            .collect();
        values
            .par_chunks_mut(NOISE_CHUNK)
            .zip(generators)
            .try_for_each(|(chunk, mut rng)| {
                for v in chunk.iter_mut() {
                    let scaled = v.wide() * grid.per_unit;
                    if !scaled.is_finite() || scaled.abs() > 2f64.powi(62) {
                        return Err(Error::invalid(
                            "clipped sum",
                            v.wide(),
                            "a finite value (secure noise rounds it to the grid)",
                        ));
                    }
                    let on_grid = scaled.round() as i64;
                    // |noise| < 2^31: σ_g ≤ 2^24 and draws beyond 64σ_g never happen
                    // (discrete_gaussian::MAX_SIGMA2).
                    let noise = discrete_gaussian::sample(&mut rng, grid.variance)? as i64;
                    *v = T::of(on_grid.saturating_add(noise) as f64 * grid.step);
                }
                Ok(())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_never_gives_less_noise_than_sigma_times_the_sensitivity() {
        for (d, c, sigma) in [
            (26_010usize, 1.0, 1.93),
            (407_050, 1.0, 0.74),
            (7_850, 0.01, 4.8),
            (1, 3.0, 0.5),
            (407_050, 1.0, 15.0),
        ] {
            let grid = Grid::new(d, c, sigma).unwrap();
            let root_d = (d as f64).sqrt();
            let scale = (1u64 << grid.k) as f64;
            // The premise of the accounting: σ_g ≥ σ·Δ_g, Δ_g ≥ C/γ + √d (C slightly padded).
            assert!(grid.sensitivity >= scale * (1.0 + CLIP_SLACK) + root_d);
            assert!(grid.variance as f64 >= (sigma * grid.sensitivity).powi(2));
            assert_eq!(grid.step * scale, c);
            assert!(grid.variance <= MAX_SIGMA2);
            // Fine enough: the rounding costs at most 1% more noise (0.1% when σ allows).
            assert!(root_d / scale <= 0.01, "d {d}, σ {sigma}: k = {}", grid.k);
            if sigma < 5.0 {
                assert!(scale >= 1000.0 * root_d, "d {d}, σ {sigma}: k = {}", grid.k);
            }
        }
        // A σ so large that even the coarsest grid's variance overflows is refused.
        let err = Grid::new(407_050, 1.0, 1e4).unwrap_err().to_string();
        assert!(err.contains("privacy.noise_multiplier"), "{err}");
        assert!(Grid::new(0, 1.0, 1.0).is_err());
        assert!(Grid::new(10, 0.0, 1.0).is_err());
        assert!(Grid::new(10, 1.0, f64::NAN).is_err());
    }

    #[test]
    fn noise_lies_on_the_grid_with_the_right_spread() {
        // A zero sum: the output is γ·(an integer), its variance (σ_g·γ)² ≈ (σC)²(1 + ρ)².
        let (d, c, sigma) = (50_000usize, 0.5, 1.5);
        let mut noise = SecureNoise::new(d, c, sigma).unwrap();
        let grid = noise.grid();
        let mut values = vec![0.0f32; d];
        noise.add_to(&mut values).unwrap();
        for &v in &values[..1000] {
            let units = f64::from(v) * grid.per_unit;
            // f32 keeps 24 bits: multiples of γ up to 2^24 steps are exact.
            if units.abs() < (1u64 << 24) as f64 {
                assert_eq!(units, units.round(), "{v} is not on the grid");
            }
        }
        let n = d as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
        let target = grid.variance as f64 * grid.step * grid.step;
        assert!(mean.abs() < 4.9 * (target / n).sqrt(), "mean {mean}");
        let z = (var - target) / (target * (2.0 / n).sqrt());
        assert!(z.abs() < 4.9, "variance {var} vs {target}: z = {z}");
        // σ_g·γ against σ·C: only the rounding allowance and the slack apart.
        let ratio = (target.sqrt() / (sigma * c)) - 1.0;
        assert!((0.0..0.0015).contains(&ratio), "{ratio}");
    }

    #[test]
    fn sums_are_rounded_to_the_grid_before_the_noise() {
        // With the noise removed by averaging many draws, the output centres on the input
        // rounded to the nearest grid point.
        let mut noise = SecureNoise::new(1, 1.0, 1e-4).unwrap();
        let grid = noise.grid();
        let x = 0.123_456_7f32;
        let draws = 20_000;
        let mut total = 0.0f64;
        for _ in 0..draws {
            let mut v = [x];
            noise.add_to(&mut v).unwrap();
            total += f64::from(v[0]);
        }
        let rounded = (f64::from(x) * grid.per_unit).round() * grid.step;
        let spread = (grid.variance as f64).sqrt() * grid.step / (draws as f64).sqrt();
        assert!(
            (total / draws as f64 - rounded).abs() < 4.9 * spread + 1e-9,
            "{} vs {rounded}",
            total / draws as f64
        );
    }

    #[test]
    fn a_non_finite_sum_is_an_error_not_noise() {
        let mut noise = SecureNoise::new(3, 1.0, 1.0).unwrap();
        assert!(noise.add_to(&mut [0.0, f32::NAN, 1.0]).is_err());
        assert!(noise.add_to(&mut [f32::INFINITY]).is_err());
    }
}
