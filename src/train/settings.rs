//! The settings of a training run that the trainer owns: privacy (target or noise, δ,
//! clipping) and optimisation (epochs, batch, optimizer).

use serde::{Deserialize, Serialize};

use super::OptimizerConfig;
use crate::error::{Error, Result};
use crate::mechanism::{AdaptiveClippingConfig, ClippingConfig, ClippingMode};
use crate::privacy::conversion::{check_delta, check_target_epsilon};
use crate::privacy::{AccountantKind, AccountantSettings, Mechanism};
use crate::schedule::{Role, Schedule, ShapeKind};

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
    /// How σ evolves (its initial value is calibrated to the target, or is
    /// `noise_multiplier`); default constant.
    #[serde(default)]
    pub noise_schedule: Schedule,
    /// How C evolves from `clip_norm` (not with adaptive clipping); default constant.
    #[serde(default)]
    pub clip_schedule: Schedule,
    /// Adaptive quantile clipping, starting from `clip_norm` (flat clipping only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_clipping: Option<AdaptiveClippingConfig>,
    /// A hard budget: no step is taken that would bring ε above it (default: the target ε;
    /// with a given `noise_multiplier`, no budget unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epsilon: Option<f64>,
    /// Secure noise mode: batches and noise from a CSPRNG seeded by the operating system
    /// (no seed accepted, runs are not reproducible), noise drawn as a discrete Gaussian on
    /// a grid with integer arithmetic (`mechanism::secure_noise`), ε accounted at integer
    /// orders. Default false (fast, seeded mode).
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure_noise: bool,
    /// The accountant that calibrates the noise and checks the budget: `rdp`, `pld` or
    /// `prv` (default `pld`; secure-mode runs are accounted by `rdp` only). The ledger is
    /// the same whichever is chosen, and privacy.md gives ε under all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accountant: Option<AccountantKind>,
    /// The PLD accountant's discretisation interval Δ (default 1e-4, dp_accounting's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discretization_interval: Option<f64>,
}

fn is_false(value: &bool) -> bool {
    !*value
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
    /// How the learning rate evolves over the steps, with an optional linear warm-up
    /// (costs no privacy: post-processing). E.g. `{ kind = "cosine", end = 0.0 }`
    /// (Loshchilov & Hutter 2017, no restarts).
    #[serde(default)]
    pub lr_schedule: Schedule,
    /// Parts each step's batch is cut into when the run is spread over ranks (`--dist`,
    /// `train::dist`; default 8, at least the number of ranks). The parts, not the ranks,
    /// fix the rounding, so the run ends the same bit for bit on any number of ranks that
    /// is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist_parts: Option<usize>,
}

fn default_physical_batch() -> usize {
    1024
}

impl PrivacyConfig {
    /// The noise distribution the accountant is told about.
    pub fn mechanism(&self) -> Mechanism {
        match self.secure_noise {
            true => Mechanism::DiscreteGaussian,
            false => Mechanism::Gaussian,
        }
    }

    /// The accountant of the run: the configured one (default PLD), RDP in secure mode.
    pub fn accountant(&self) -> AccountantSettings {
        let kind = match (self.secure_noise, self.accountant) {
            (true, _) => AccountantKind::Rdp,
            (false, kind) => kind.unwrap_or_default(),
        };
        let settings = AccountantSettings::new(kind);
        match self.discretization_interval {
            Some(interval) => settings.with_discretization_interval(interval),
            None => settings,
        }
    }

    /// The clipping settings.
    pub fn clipping(&self) -> ClippingConfig {
        ClippingConfig {
            mode: self.clipping,
            clip_norm: self.clip_norm,
        }
    }

    /// Checks δ, C, the schedules, and that exactly one of target ε and σ is given for a
    /// private run.
    pub fn validate(&self) -> Result<()> {
        check_delta(self.delta)?;
        self.clipping().validate()?;
        self.noise_schedule
            .validate(Role::Noise, "privacy.noise_schedule")?;
        self.clip_schedule
            .validate(Role::ClipNorm, "privacy.clip_schedule")?;
        if let Some(adaptive) = &self.adaptive_clipping {
            adaptive.validate()?;
            if self.clip_schedule.kind != ShapeKind::Constant {
                return Err(Error::invalid(
                    "privacy.clip_schedule",
                    format!("{:?}", self.clip_schedule.kind).to_lowercase(),
                    "a constant clip schedule with adaptive clipping (C is adapted instead)",
                ));
            }
            if self.clipping != ClippingMode::Flat {
                return Err(Error::invalid(
                    "privacy.clipping",
                    "per_layer",
                    "flat clipping with adaptive clipping",
                ));
            }
        }
        if self.secure_noise && self.adaptive_clipping.is_some() {
            return Err(Error::invalid(
                "privacy.adaptive_clipping",
                "set",
                "no adaptive clipping with privacy.secure_noise = true (its count query \
                 still uses floating-point noise)",
            ));
        }
        if let Some(interval) = self.discretization_interval {
            crate::privacy::pld::check_interval(interval).map_err(|_| {
                Error::invalid(
                    "privacy.discretization_interval",
                    interval,
                    "a number in (0, 1] (the PLD accountant's default is 1e-4)",
                )
            })?;
        }
        if self.secure_noise
            && let Some(kind @ (AccountantKind::Pld | AccountantKind::Prv)) = self.accountant
        {
            return Err(Error::invalid(
                "privacy.accountant",
                kind.name(),
                "rdp with privacy.secure_noise = true (PLD and PRV are proven for the \
                 continuous Gaussian only; secure-mode steps keep their integer-order RDP)",
            ));
        }
        if let Some(max) = self.max_epsilon {
            check_target_epsilon(max).map_err(|_| {
                Error::invalid("privacy.max_epsilon", max, "a finite number above 0")
            })?;
        }
        match (self.private, self.target_epsilon, self.noise_multiplier) {
            (true, Some(_), Some(_)) => Err(Error::invalid(
                "privacy.target_epsilon / privacy.noise_multiplier",
                "both",
                "one of them: a target ε (the noise is calibrated) or a noise multiplier \
                 (from the command line, remove the other: --set privacy.target_epsilon=none \
                 or --set privacy.noise_multiplier=none)",
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
    /// Checks epochs, batch sizes, the optimizer and the learning-rate schedule.
    pub fn validate(&self) -> Result<()> {
        self.lr_schedule
            .validate(Role::LearningRate, "training.lr_schedule")?;
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
