//! White-box gradient canaries for privacy audits (Steinke, Nasr & Jagielski 2023, §6.2:
//! "Dirac canaries").
//!
//! Each canary k is an extra example whose per-example gradient, before clipping, is
//! C·e_{j_k}: a spike on one parameter coordinate j_k (distinct for every canary), of norm C
//! (clipping leaves it at C·min(1, C/(C + 1e-6))). An *included* canary joins each step like
//! any training example, with probability q (Poisson, its own seeded stream); an excluded one
//! never does. The DP optimizer adds the sampled canaries' gradients to the clipped sum
//! before the noise, then [`GradientCanaries::after_noise`] records, per canary, the released
//! noisy sum at j_k minus the data's own clipped sum there (which the auditor can compute:
//! the non-canary data and the trajectory are known). Summed over the steps that score is
//! (times sampled)·C + Gaussian noise for an included canary and pure noise for an excluded
//! one; scored step by step with the likelihood ratio of the sampled Gaussian (see
//! [`GradientCanaries::after_noise`]), the strongest test there is against this mechanism.
//!
//! This lives beside the optimizer because it acts inside a DP step; `audit` chooses the
//! canaries and turns the scores into a lower bound on ε.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};
use crate::real::Real;

/// Canaries inserted as per-example gradients, and their scores.
#[derive(Debug, Clone)]
pub struct GradientCanaries {
    /// (parameter tensor index, element index) of each canary's coordinate.
    coordinates: Vec<(usize, usize)>,
    /// Whether each canary is in the training set.
    included: Vec<bool>,
    /// Each step's sampling probability q.
    sample_rate: f64,
    /// The stream that samples included canaries into steps.
    rng: ChaCha20Rng,
    /// Per canary: this step's data sum at its coordinate (a value of the model's dtype,
    /// held exactly).
    pending: Vec<f64>,
    /// Per canary, Σ over steps of the log-likelihood ratio of "sampled" against "not" for
    /// x_t = released noisy sum − data clipped sum at its coordinate (see `after_noise`).
    scores: Vec<f64>,
    /// The magnitude of a canary's clipped gradient in the current step (rounded to the
    /// model's dtype).
    magnitude: f64,
    /// How many steps sampled each canary.
    times_sampled: Vec<u64>,
}

impl GradientCanaries {
    /// Canaries at `coordinates` (distinct), `included` or not, sampled at rate
    /// `sample_rate` from a stream seeded with `seed`.
    pub fn new(
        coordinates: Vec<(usize, usize)>,
        included: Vec<bool>,
        sample_rate: f64,
        seed: u64,
    ) -> Result<Self> {
        if coordinates.len() != included.len() {
            return Err(Error::invalid(
                "canaries",
                coordinates.len(),
                format!("one inclusion flag per canary ({} given)", included.len()),
            ));
        }
        let m = coordinates.len();
        Ok(GradientCanaries {
            coordinates,
            included,
            sample_rate,
            rng: ChaCha20Rng::seed_from_u64(seed),
            pending: vec![0.0; m],
            scores: vec![0.0; m],
            magnitude: 0.0,
            times_sampled: vec![0; m],
        })
    }

    /// Adds the sampled included canaries' clipped gradients to the step's clipped sums
    /// (`sums[p][e]`, one vector per parameter tensor) and remembers the data's part.
    pub fn before_noise<T: Real>(&mut self, sums: &mut [Vec<T>], clip_norm: f64, private: bool) {
        let magnitude = T::of(match private {
            // The clip factor the optimizer would apply to a gradient of norm C.
            true => clip_norm * (clip_norm / (clip_norm + 1e-6)).min(1.0),
            false => clip_norm,
        });
        self.magnitude = magnitude.wide();
        for (k, &(p, e)) in self.coordinates.iter().enumerate() {
            self.pending[k] = sums[p][e].wide();
            if self.included[k] && self.rng.random::<f64>() < self.sample_rate {
                sums[p][e] += magnitude;
                self.times_sampled[k] += 1;
            }
        }
    }

    /// Records the released noisy sums at the canaries' coordinates; `noise_std` is the
    /// step's noise standard deviation σ·C (0 without noise).
    ///
    /// The score of a step is the log-likelihood ratio of x = released − data part under
    /// "the canary is in the dataset" (x ~ (1 − q)·N(0, s²) + q·N(g, s²), g its clipped
    /// magnitude, s = σC) against "it is not" (x ~ N(0, s²)):
    /// ln(1 − q + q·exp((2xg − g²)/(2s²))), the Neyman-Pearson test of one step; summed
    /// over steps, the optimal test of the whole run. Without noise it is x itself.
    pub fn after_noise<T: Real>(&mut self, sums: &[Vec<T>], noise_std: f64) {
        let g = self.magnitude;
        let q = self.sample_rate;
        for (k, &(p, e)) in self.coordinates.iter().enumerate() {
            // The difference in T, as the released value was formed.
            let x = (sums[p][e] - T::of(self.pending[k])).wide();
            self.scores[k] += match noise_std > 0.0 {
                true => {
                    let u = (2.0 * x * g - g * g) / (2.0 * noise_std * noise_std);
                    crate::privacy::numerics::log_add((1.0 - q).ln(), q.ln() + u)
                }
                false => x,
            };
        }
    }

    /// The score of each canary (higher: more likely included).
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }

    /// How many steps sampled each canary (0 for excluded ones).
    pub fn times_sampled(&self) -> &[u64] {
        &self.times_sampled
    }

    /// Whether each canary is included.
    pub fn included(&self) -> &[bool] {
        &self.included
    }

    /// The coordinates, (parameter tensor, element).
    pub fn coordinates(&self) -> &[(usize, usize)] {
        &self.coordinates
    }
}
