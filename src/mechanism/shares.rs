//! Noise shares of distributed DP: what each client adds to its quantised update before
//! secure aggregation, so that only the sum of the shares, never one client, protects the
//! others (the accounting is `privacy::distributed`).
//!
//! - **Skellam** (Agarwal, Kairouz & Liu 2021, "The Skellam Mechanism for Differentially
//!   Private Federated Learning"): Poisson(λ) − Poisson(λ) per coordinate, variance 2λ; a
//!   sum of n shares is exactly Skellam of variance 2nλ. The Poisson draws are rand_distr's
//!   (Knuth's product method below λ = 12, Hörmann's PTRS rejection above), fed by a
//!   CSPRNG.
//! - **Discrete Gaussian** (Kairouz, Liu & Steinke 2021): N_Z(0, σ²) per coordinate with an
//!   integer σ², the exact sampler of Canonne, Kamath & Steinke 2020
//!   ([`super::discrete_gaussian::sample`]).

use rand::RngCore;
use rand_distr::{Distribution, Poisson};

use super::discrete_gaussian::{self, MAX_SIGMA2};
use crate::error::{Error, Result};

/// One client's noise share per coordinate, in integer units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShareNoise {
    /// Skellam: Poisson(λ) − Poisson(λ), variance 2λ.
    Skellam {
        /// λ of each Poisson, σ²/2.
        lambda: f64,
    },
    /// N_Z(0, σ²) with σ² a whole number.
    DiscreteGaussian {
        /// σ², rounded up to a whole number (the σ booked is this one).
        sigma2: u128,
    },
}

impl ShareNoise {
    /// The share of integer standard deviation at least `sigma` (> 0) for `mechanism`.
    pub fn with_stddev(skellam: bool, sigma: f64) -> Result<Self> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(Error::invalid(
                "distributed noise σ (integer units)",
                sigma,
                "a finite number above 0",
            ));
        }
        match skellam {
            true => Ok(ShareNoise::Skellam {
                lambda: sigma * sigma / 2.0,
            }),
            false => {
                let sigma2 = (sigma * sigma).ceil();
                if sigma2 > MAX_SIGMA2 as f64 {
                    return Err(Error::invalid(
                        "distributed noise σ² (integer units)",
                        sigma2,
                        format!("at most {MAX_SIGMA2} (fewer bits or a smaller scale)"),
                    ));
                }
                Ok(ShareNoise::DiscreteGaussian {
                    sigma2: sigma2 as u128,
                })
            }
        }
    }

    /// The share's standard deviation in integer units, as booked: √(2λ) for Skellam, σ
    /// (the scale parameter, ≥ the true standard deviation) for the discrete Gaussian.
    pub fn stddev(&self) -> f64 {
        match *self {
            ShareNoise::Skellam { lambda } => (2.0 * lambda).sqrt(),
            ShareNoise::DiscreteGaussian { sigma2 } => (sigma2 as f64).sqrt(),
        }
    }

    /// Adds one fresh share to every value, drawing from `rng` (a CSPRNG: the share is the
    /// privacy of every other client in the sum).
    pub fn add_to(&self, values: &mut [i64], rng: &mut impl RngCore) -> Result<()> {
        match *self {
            ShareNoise::Skellam { lambda } => {
                let poisson = Poisson::new(lambda).map_err(|e| {
                    Error::invalid("Skellam λ", lambda, format!("a valid Poisson rate ({e})"))
                })?;
                for v in values.iter_mut() {
                    let up: f64 = poisson.sample(rng);
                    let down: f64 = poisson.sample(rng);
                    *v += up as i64 - down as i64;
                }
            }
            ShareNoise::DiscreteGaussian { sigma2 } => {
                for v in values.iter_mut() {
                    *v += discrete_gaussian::sample(rng, sigma2)? as i64;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Mean 0 and variance 2λ (Skellam) or ≈ σ² (discrete Gaussian at σ ≫ 1), within 5
    /// standard errors over 200,000 draws.
    #[test]
    fn shares_have_mean_zero_and_the_booked_variance() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for (skellam, sigma) in [(true, 40.0), (true, 1.3), (false, 25.0)] {
            let noise = ShareNoise::with_stddev(skellam, sigma).unwrap();
            let n = 200_000;
            let mut values = vec![0i64; n];
            noise.add_to(&mut values, &mut rng).unwrap();
            let mean = values.iter().sum::<i64>() as f64 / n as f64;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / (n as f64 - 1.0);
            let want = noise.stddev().powi(2);
            assert!(want >= sigma * sigma - 1e-9);
            assert!(mean.abs() < 5.0 * (want / n as f64).sqrt(), "{mean}");
            // Var of the sample variance ≈ 2σ⁴/n (kurtosis ≈ 3 here).
            let se = want * (2.0 / n as f64).sqrt();
            assert!((var - want).abs() < 5.0 * se, "{skellam}: {var} vs {want}");
        }
    }

    #[test]
    fn bad_stddevs_are_refused() {
        assert!(ShareNoise::with_stddev(true, 0.0).is_err());
        assert!(ShareNoise::with_stddev(false, f64::NAN).is_err());
        assert!(ShareNoise::with_stddev(false, 1e30).is_err());
    }
}
