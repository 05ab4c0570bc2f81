//! Stage 2 of the DP step: the privatizer adds noise to a clipped sum (Abadi et al. 2016,
//! Alg. 1, "add noise"), once per logical step, from its own stream.
//!
//! - [`GaussianPrivatizer`]: N(0, (σC)²) per coordinate from seeded ChaCha12 streams (fast
//!   mode, `mechanism::noise`); as a *share* of W parties, N(0, (σC)²/W), so that the W
//!   shares summed (an MPI all-reduce, a secure aggregation) carry the full noise.
//! - [`SecurePrivatizer`]: the sum rounded to a grid plus discrete Gaussian noise from an
//!   OS-seeded CSPRNG (secure mode, `mechanism::secure_noise`).
//! - [`NoNoise`]: the non-private baseline.
//!
//! Skellam and distributed discrete Gaussian shares (secure aggregation) implement the same
//! trait. Noise that does not depend on the data may be drawn ahead
//! ([`Privatizer::draw_ahead`]) while the clipped-sum stage runs, on a thread it leaves
//! idle; the values are the same as when drawn after it.

use candle_core::DType;

use super::clipped_sum::{SumValue, Sums};
use crate::error::{Error, Result};
use crate::mechanism::{GaussianNoise, SecureNoise};
use crate::real::real;

/// Adds one step's noise to a clipped sum.
pub trait Privatizer: Send {
    /// A short name for reports and errors (`gaussian`, `gaussian share of 4`, ...).
    fn name(&self) -> String;

    /// This step's noise for parameters of `sizes` in `dtype`, drawn before the sum exists,
    /// when it does not depend on the sum (None otherwise). Advances the stream exactly as
    /// [`Privatizer::privatize`] would.
    fn draw_ahead(&mut self, sizes: &[usize], dtype: DType) -> Result<Option<Sums>>;

    /// Adds this step's noise to `sums`: `ahead` (from [`Privatizer::draw_ahead`] for this
    /// very step) when given, else drawn now.
    ///
    /// # Privacy
    /// With `sums` of L2 sensitivity C, the result is the Gaussian (or discrete Gaussian)
    /// mechanism of noise multiplier σ, or one share of it (see each implementation).
    fn privatize(&mut self, sums: &mut Sums, ahead: Option<Sums>) -> Result<()>;

    /// The standard deviation of the noise this privatizer adds to each coordinate (σC, or
    /// σC/√W for a share).
    fn noise_std(&self) -> f64;

    /// Sets σ and C for the next steps (schedules, adaptive clipping).
    fn set_noise(&mut self, noise_multiplier: f64, clip_norm: f64) -> Result<()>;

    /// The position of the noise stream, for checkpoints (0 when a resumed run draws fresh
    /// randomness anyway).
    fn position(&self) -> u64;

    /// Continues from [`Privatizer::position`]: a resumed run never reuses noise.
    fn seek(&mut self, position: u64);
}

fn check_noise_multiplier(noise_multiplier: f64) -> Result<()> {
    if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
        return Err(Error::invalid(
            "noise_multiplier",
            noise_multiplier,
            "a finite number above 0",
        ));
    }
    Ok(())
}

/// Gaussian noise from seeded streams (fast mode), whole or as a share of `parties`.
#[derive(Debug, Clone)]
pub struct GaussianPrivatizer {
    noise: GaussianNoise,
    parties: u32,
}

impl GaussianPrivatizer {
    /// N(0, (σC)²) per coordinate, stream seeded by `seed`.
    pub fn new(noise_multiplier: f64, clip_norm: f64, seed: u64) -> Result<Self> {
        GaussianPrivatizer::share(noise_multiplier, clip_norm, 1, seed)
    }

    /// One of `parties` shares: N(0, (σC)²/W) per coordinate. The sum of W independent
    /// shares is N(0, (σC)²): the Gaussian mechanism at σ, if every party adds its share
    /// (a party that adds none lowers the noise: the caller must trust the others).
    pub fn share(noise_multiplier: f64, clip_norm: f64, parties: u32, seed: u64) -> Result<Self> {
        check_noise_multiplier(noise_multiplier)?;
        if parties == 0 {
            return Err(Error::invalid("parties", 0, "at least 1"));
        }
        Ok(GaussianPrivatizer {
            noise: GaussianNoise::new(share_std(noise_multiplier, clip_norm, parties), seed)?,
            parties,
        })
    }
}

/// σC/√W (σC for one party, exactly).
fn share_std(noise_multiplier: f64, clip_norm: f64, parties: u32) -> f64 {
    match parties {
        1 => noise_multiplier * clip_norm,
        w => noise_multiplier * clip_norm / f64::from(w).sqrt(),
    }
}

impl Privatizer for GaussianPrivatizer {
    fn name(&self) -> String {
        match self.parties {
            1 => "gaussian".into(),
            w => format!("gaussian share of {w}"),
        }
    }

    fn draw_ahead(&mut self, sizes: &[usize], dtype: DType) -> Result<Option<Sums>> {
        let mut draws = Sums::zeros(sizes, dtype)?;
        real!(dtype, "noise", |T| {
            for draw in draws.values_mut::<T>("noise")? {
                self.noise.add_to(draw);
            }
            Ok(())
        })?;
        Ok(Some(draws))
    }

    fn privatize(&mut self, sums: &mut Sums, ahead: Option<Sums>) -> Result<()> {
        let draws = match ahead {
            Some(draws) => draws,
            None => {
                let Some(draws) = self.draw_ahead(&sums.sizes(), sums.dtype())? else {
                    unreachable!("Gaussian noise is always drawn ahead");
                };
                draws
            }
        };
        real!(sums.dtype(), "noise", |T| add(
            sums.values_mut::<T>("noise")?,
            draws
        ))
    }

    fn noise_std(&self) -> f64 {
        self.noise.noise_std()
    }

    fn set_noise(&mut self, noise_multiplier: f64, clip_norm: f64) -> Result<()> {
        check_noise_multiplier(noise_multiplier)?;
        self.noise
            .set_noise_std(share_std(noise_multiplier, clip_norm, self.parties))
    }

    fn position(&self) -> u64 {
        self.noise.calls()
    }

    fn seek(&mut self, position: u64) {
        self.noise.set_calls(position);
    }
}

/// sums += draws, value by value.
fn add<T: SumValue>(sums: &mut [Vec<T>], draws: Sums) -> Result<()> {
    let draws = T::unwrap(draws)
        .ok_or_else(|| Error::Tensor("noise drawn in another precision than the sums".into()))?;
    if draws.len() != sums.len() || draws.iter().zip(&*sums).any(|(d, s)| d.len() != s.len()) {
        return Err(Error::Tensor(
            "noise drawn for other parameter sizes than the sums".into(),
        ));
    }
    for (sum, draw) in sums.iter_mut().zip(draws) {
        for (v, z) in sum.iter_mut().zip(draw) {
            *v += z;
        }
    }
    Ok(())
}

/// Secure mode: the sum rounded to a grid and discrete Gaussian noise from an OS-seeded
/// CSPRNG (`mechanism::secure_noise`).
#[derive(Debug)]
pub struct SecurePrivatizer {
    noise: SecureNoise,
}

impl SecurePrivatizer {
    /// Noise for a model of `dimension` coordinates in all (one grid for the whole model:
    /// the sensitivity bound is on all of it), at clip norm C and multiplier σ.
    pub fn new(dimension: usize, noise_multiplier: f64, clip_norm: f64) -> Result<Self> {
        check_noise_multiplier(noise_multiplier)?;
        Ok(SecurePrivatizer {
            noise: SecureNoise::new(dimension, clip_norm, noise_multiplier)?,
        })
    }
}

impl Privatizer for SecurePrivatizer {
    fn name(&self) -> String {
        "discrete gaussian".into()
    }

    /// Secure noise rounds the sum itself to its grid: it cannot be drawn early.
    fn draw_ahead(&mut self, _sizes: &[usize], _dtype: DType) -> Result<Option<Sums>> {
        Ok(None)
    }

    fn privatize(&mut self, sums: &mut Sums, ahead: Option<Sums>) -> Result<()> {
        if ahead.is_some() {
            return Err(Error::Tensor(
                "secure noise depends on the sum and is never drawn ahead".into(),
            ));
        }
        real!(sums.dtype(), "secure noise", |T| {
            for sum in sums.values_mut::<T>("secure noise")? {
                self.noise.add_to(sum)?;
            }
            Ok(())
        })
    }

    fn noise_std(&self) -> f64 {
        let grid = self.noise.grid();
        (grid.variance as f64).sqrt() / grid.per_unit
    }

    fn set_noise(&mut self, noise_multiplier: f64, clip_norm: f64) -> Result<()> {
        check_noise_multiplier(noise_multiplier)?;
        self.noise.set(clip_norm, noise_multiplier)
    }

    /// Nothing to resume: a secure run draws fresh OS randomness.
    fn position(&self) -> u64 {
        0
    }

    fn seek(&mut self, _position: u64) {}
}

/// The non-private baseline: no noise.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNoise;

impl Privatizer for NoNoise {
    fn name(&self) -> String {
        "none".into()
    }

    fn draw_ahead(&mut self, _sizes: &[usize], _dtype: DType) -> Result<Option<Sums>> {
        Ok(None)
    }

    fn privatize(&mut self, _sums: &mut Sums, _ahead: Option<Sums>) -> Result<()> {
        Ok(())
    }

    fn noise_std(&self) -> f64 {
        0.0
    }

    fn set_noise(&mut self, _noise_multiplier: f64, _clip_norm: f64) -> Result<()> {
        Ok(())
    }

    fn position(&self) -> u64 {
        0
    }

    fn seek(&mut self, _position: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_drawn_ahead_equals_noise_drawn_after() {
        let sizes = [5usize, 70_000];
        let mut ahead = GaussianPrivatizer::new(1.3, 0.7, 42).unwrap();
        let mut after = ahead.clone();
        let base = |dtype| {
            let mut sums = Sums::zeros(&sizes, dtype).unwrap();
            if let Sums::F32(v) = &mut sums {
                v[1].iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = i as f32 * 1e-3);
            }
            sums
        };
        let (mut a, mut b) = (base(DType::F32), base(DType::F32));
        let draws = ahead.draw_ahead(&sizes, DType::F32).unwrap();
        ahead.privatize(&mut a, draws).unwrap();
        after.privatize(&mut b, None).unwrap();
        assert_eq!(a, b);
        assert_eq!(ahead.position(), 2);
        assert_eq!(after.position(), 2);
    }

    #[test]
    fn w_shares_carry_the_full_variance() {
        let (sigma, clip, parties) = (1.5, 2.0, 4u32);
        let share = GaussianPrivatizer::share(sigma, clip, parties, 7).unwrap();
        assert!((share.noise_std() * f64::from(parties).sqrt() - sigma * clip).abs() < 1e-12);
        // Measured: the sum of 4 shares from independent streams has variance (σC)².
        let n = 100_000;
        let mut total = Sums::zeros(&[n], DType::F64).unwrap();
        for seed in 0..parties {
            let mut party =
                GaussianPrivatizer::share(sigma, clip, parties, 100 + u64::from(seed)).unwrap();
            party.privatize(&mut total, None).unwrap();
        }
        let Sums::F64(v) = total else { unreachable!() };
        let var = v[0].iter().map(|x| x * x).sum::<f64>() / n as f64;
        // 1e-6 two-sided: the sample variance of 1e5 normals is within 2.5% of the truth.
        assert!((var / (sigma * clip).powi(2) - 1.0).abs() < 0.025, "{var}");
    }

    #[test]
    fn a_privatizer_refuses_sums_of_another_shape_or_precision() {
        let mut noise = GaussianPrivatizer::new(1.0, 1.0, 1).unwrap();
        let draws = noise.draw_ahead(&[3], DType::F32).unwrap();
        let mut sums = Sums::zeros(&[4], DType::F32).unwrap();
        assert!(noise.privatize(&mut sums, draws).is_err());
        let draws = noise.draw_ahead(&[4], DType::F64).unwrap();
        assert!(noise.privatize(&mut sums, draws).is_err());
        assert!(GaussianPrivatizer::new(0.0, 1.0, 1).is_err());
        assert!(GaussianPrivatizer::share(1.0, 1.0, 0, 1).is_err());
    }
}
