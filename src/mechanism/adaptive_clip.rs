//! Adaptive quantile clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially
//! private learning with adaptive clipping", Alg. 1 with the geometric update).
//!
//! After each step the clip norm C moves towards the γ-quantile of the per-example gradient
//! norms, estimated privately:
//! - b_i = 1[‖g_i‖ ≤ C], the *unclipped* norm against the C of the step (a sign error here
//!   shrinks C without end);
//! - b̄ = (Σ_i (b_i − ½) + N(0, σ_b²)) / (q·N) + ½, clamped to [0, 1]: the fraction of
//!   examples within C (the −½ centring halves the count's sensitivity to ½);
//! - C ← C · exp(−η (b̄ − γ)): C grows when fewer than γ are within it, shrinks otherwise.
//!
//! Privacy: the count is a second Gaussian query on the same Poisson sample, of
//! sensitivity ½ and noise σ_b, so noise multiplier z_c = 2σ_b. With the gradient sum noised
//! at z_Δ, the pair costs one Gaussian step at z with z⁻² = z_Δ⁻² + z_c⁻² (Thm. 1 of the
//! paper). So a run planned at z noises its gradients at z_Δ = (z⁻² − (2σ_b)⁻²)^(−½), which
//! exists only when z < 2σ_b; otherwise the configuration is refused.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of adaptive clipping (defaults of the paper and design.md section 5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveClippingConfig {
    /// γ: the quantile of the gradient norms C tracks (default 0.5, the median).
    #[serde(default = "default_quantile")]
    pub target_quantile: f64,
    /// η: the step size of the geometric update (default 0.2).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// σ_b: the standard deviation of the count's noise (default: expected batch / 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_noise: Option<f64>,
}

fn default_quantile() -> f64 {
    0.5
}

fn default_learning_rate() -> f64 {
    0.2
}

impl Default for AdaptiveClippingConfig {
    fn default() -> Self {
        AdaptiveClippingConfig {
            target_quantile: default_quantile(),
            learning_rate: default_learning_rate(),
            count_noise: None,
        }
    }
}

impl AdaptiveClippingConfig {
    /// σ_b for an expected batch size q·N.
    pub fn count_noise_std(&self, expected_batch_size: f64) -> f64 {
        self.count_noise.unwrap_or(expected_batch_size / 20.0)
    }

    /// Checks γ ∈ (0, 1), η > 0 and σ_b > 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_quantile > 0.0 && self.target_quantile < 1.0) {
            return Err(Error::invalid(
                "privacy.adaptive_clipping.target_quantile",
                self.target_quantile,
                "a number in (0, 1)",
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::invalid(
                "privacy.adaptive_clipping.learning_rate",
                self.learning_rate,
                "a finite number above 0",
            ));
        }
        if let Some(sigma) = self.count_noise
            && !(sigma > 0.0 && sigma.is_finite())
        {
            return Err(Error::invalid(
                "privacy.adaptive_clipping.count_noise",
                sigma,
                "a finite number above 0",
            ));
        }
        Ok(())
    }
}

/// z_Δ = (z⁻² − (2σ_b)⁻²)^(−½): the gradient's share of a total noise multiplier z when
/// the count is noised at σ_b. Refused unless z < 2σ_b.
pub fn gradient_noise_multiplier(total: f64, count_noise_std: f64) -> Result<f64> {
    let count = 2.0 * count_noise_std;
    // NaN totals are refused too.
    if total.is_nan() || total >= count {
        return Err(Error::invalid(
            "privacy.adaptive_clipping.count_noise",
            count_noise_std,
            format!(
                "σ_b above z/2 = {} (the noise multiplier z = {total} must stay below 2σ_b, or \
                 nothing is left for the gradients)",
                total / 2.0
            ),
        ));
    }
    Ok((total.powi(-2) - count.powi(-2)).powf(-0.5))
}

/// The clip norm and the private quantile estimate that moves it.
#[derive(Debug, Clone)]
pub struct AdaptiveClipper {
    config: AdaptiveClippingConfig,
    clip_norm: f64,
    count_noise_std: f64,
    expected_batch_size: f64,
    rng: ChaCha12Rng,
}

impl AdaptiveClipper {
    /// Starts at `initial_clip_norm`, for an expected batch q·N, with the count noise drawn
    /// from a ChaCha12 stream seeded by `seed`.
    pub fn new(
        config: AdaptiveClippingConfig,
        initial_clip_norm: f64,
        expected_batch_size: f64,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        Ok(AdaptiveClipper {
            config,
            clip_norm: initial_clip_norm,
            count_noise_std: config.count_noise_std(expected_batch_size),
            expected_batch_size,
            rng: ChaCha12Rng::seed_from_u64(seed),
        })
    }

    /// (C, the count noise stream's position), for checkpoints.
    pub fn state(&self) -> (f64, u128) {
        (self.clip_norm, self.rng.get_word_pos())
    }

    /// Restores [`AdaptiveClipper::state`].
    pub fn restore(&mut self, (clip_norm, position): (f64, u128)) {
        self.clip_norm = clip_norm;
        self.rng.set_word_pos(position);
    }

    /// C for the next step.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// σ_b.
    pub fn count_noise_std(&self) -> f64 {
        self.count_noise_std
    }

    /// z_c = 2σ_b, the count query's noise multiplier (for the ledger).
    pub fn count_noise_multiplier(&self) -> f64 {
        2.0 * self.count_noise_std
    }

    /// The update after a step: `within` examples of the `batch` had ‖g_i‖ ≤ C (unclipped
    /// norms; non-finite norms count as outside). Returns the private estimate b̄.
    ///
    /// # Privacy
    /// The only use of the private counts is through Σ(b_i − ½) + N(0, σ_b²), which is what
    /// the ledger accounts (with the gradient sum) at the step's total multiplier.
    pub fn update(&mut self, within: usize, batch: usize) -> f64 {
        let centred = within as f64 - 0.5 * batch as f64;
        let noise: f64 = self.rng.sample::<f64, _>(StandardNormal) * self.count_noise_std;
        let fraction = ((centred + noise) / self.expected_batch_size + 0.5).clamp(0.0, 1.0);
        self.clip_norm *=
            (-self.config.learning_rate * (fraction - self.config.target_quantile)).exp();
        fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_share_recombines_to_the_total() {
        let (z, sigma_b) = (1.2, 12.8);
        let z_delta = gradient_noise_multiplier(z, sigma_b).unwrap();
        assert!(z_delta > z);
        let recombined = (z_delta.powi(-2) + (2.0 * sigma_b).powi(-2)).powf(-0.5);
        assert!((recombined - z).abs() < 1e-12);
    }

    #[test]
    fn a_count_noise_of_half_the_multiplier_or_less_is_refused() {
        for sigma_b in [0.5, 0.4, 0.1] {
            let message = gradient_noise_multiplier(1.0, sigma_b)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains("privacy.adaptive_clipping.count_noise")
                    && message.contains("z/2 = 0.5"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_clip_norm_grows_when_most_are_clipped_and_shrinks_when_few_are() {
        let config = AdaptiveClippingConfig {
            count_noise: Some(1e-9),
            ..AdaptiveClippingConfig::default()
        };
        let mut clipper = AdaptiveClipper::new(config, 1.0, 100.0, 0).unwrap();
        clipper.update(10, 100); // 90% above C
        assert!(clipper.clip_norm() > 1.0, "{}", clipper.clip_norm());
        let mut clipper = AdaptiveClipper::new(config, 1.0, 100.0, 0).unwrap();
        clipper.update(90, 100); // 10% above C
        assert!(clipper.clip_norm() < 1.0, "{}", clipper.clip_norm());
        // Closed form: b̄ = 0.9, C = exp(−0.2·(0.9 − 0.5)).
        assert!((clipper.clip_norm() - (-0.08f64).exp()).abs() < 1e-9);
    }
}
