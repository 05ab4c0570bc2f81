//! The settings of a training run that the trainer owns: privacy (target or noise, δ,
//! clipping) and optimisation (epochs, batch, optimizer).

use serde::{Deserialize, Serialize};

use super::OptimizerConfig;
use crate::error::{Error, Result};
use crate::mechanism::{ClippingConfig, ClippingMode};
use crate::privacy::conversion::{check_delta, check_target_epsilon};

/// Privacy settings. Exactly one of `target_epsilon` and `noise_multiplier`, unless the run
/// is non-private.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// False trains the non-private baseline through the same code path.
    #[serde(default = "yes")]
    pub private: bool,
    /// ε to calibrate the noise multiplier to, before training.
    pub target_epsilon: Option<f64>,
    /// σ, when given directly (ε is then reported, not targeted).
    pub noise_multiplier: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Clip norm C.
    #[serde(default = "one")]
    pub clip_norm: f64,
    /// Flat or per-layer clipping.
    #[serde(default)]
    pub clipping: ClippingMode,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Passes over the training data (steps = ⌈E·N/B⌉).
    pub epochs: f64,
    /// Expected (Poisson) batch size B; q = B/N.
    pub expected_batch_size: usize,
    /// Largest chunk processed at once; noise is still added once per logical step.
    #[serde(default = "default_physical_batch")]
    pub max_physical_batch: usize,
    /// The inner optimizer.
    pub optimizer: OptimizerConfig,
    /// How the learning rate evolves over the steps (costs no privacy: post-processing).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
}

/// Learning-rate schedules (a first two; the schedule room of issue 4 generalises them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// The configured rate throughout.
    #[default]
    Constant,
    /// lr₀ · (1 + cos(π t/T))/2 at step t of T (Loshchilov & Hutter 2017, no restarts).
    Cosine,
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based) of `steps`, from `base`.
    pub fn rate(&self, base: f64, step: u64, steps: u64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let progress = step as f64 / steps.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

fn default_physical_batch() -> usize {
    1024
}

impl PrivacyConfig {
    /// The clipping settings.
    pub fn clipping(&self) -> ClippingConfig {
        ClippingConfig {
            mode: self.clipping,
            clip_norm: self.clip_norm,
        }
    }

    /// Checks δ, C, and that exactly one of target ε and σ is given for a private run.
    pub fn validate(&self) -> Result<()> {
        check_delta(self.delta)?;
        self.clipping().validate()?;
        match (self.private, self.target_epsilon, self.noise_multiplier) {
            (true, Some(_), Some(_)) => Err(Error::invalid(
                "privacy.target_epsilon / privacy.noise_multiplier",
                "both",
                "one of them: a target ε (the noise is calibrated) or a noise multiplier",
            )),
            (true, None, None) => Err(Error::invalid(
                "privacy.target_epsilon / privacy.noise_multiplier",
                "neither",
                "one of them (or privacy.private = false for a non-private baseline)",
            )),
            (true, Some(e), None) => check_target_epsilon(e),
            (true, None, Some(s)) => crate::privacy::rdp::check_step(1.0, s),
            (false, _, _) => Ok(()),
        }
    }
}

impl TrainingConfig {
    /// Checks epochs, batch sizes and the optimizer.
    pub fn validate(&self) -> Result<()> {
        if !(self.epochs > 0.0 && self.epochs.is_finite()) {
            return Err(Error::invalid(
                "training.epochs",
                self.epochs,
                "a finite number above 0",
            ));
        }
        if self.expected_batch_size == 0 {
            return Err(Error::invalid(
                "training.expected_batch_size",
                0,
                "at least 1",
            ));
        }
        if self.max_physical_batch == 0 {
            return Err(Error::invalid(
                "training.max_physical_batch",
                0,
                "at least 1",
            ));
        }
        self.optimizer.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_matches_its_closed_form() {
        let s = LrSchedule::Cosine;
        assert_eq!(s.rate(2.0, 0, 100), 2.0);
        assert!((s.rate(2.0, 50, 100) - 1.0).abs() < 1e-12);
        assert!((s.rate(2.0, 25, 100) - (1.0 + std::f64::consts::FRAC_1_SQRT_2)).abs() < 1e-12);
        assert!(s.rate(2.0, 99, 100) < 0.001);
        assert_eq!(LrSchedule::Constant.rate(2.0, 99, 100), 2.0);
    }
}
