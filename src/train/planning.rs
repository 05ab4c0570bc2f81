//! The plan of a run, resolved once from its config before any training: what
//! `dptrain account CONFIG` prints, and what the trainer's `Run` reads at every step (the
//! sampling rate, the step count, the calibrated noise, the accountant, the budget).

use super::settings::{PrivacyConfig, TrainingConfig};
use crate::error::{Error, Result};
use crate::mechanism::gradient_noise_multiplier;
use crate::privacy::{AccountantSettings, Mechanism, PrivacyBudget, PrivacyEvent, epochs_to_steps};
use crate::schedule::plan::{self, NoiseSpec, Plan};
use crate::schedule::{Schedule, Timeline};

/// A run's resolved plan: sampling, time line, and for a private run the calibrated noise
/// plan, the accountant and the budget. Built once ([`RunPlan::resolve`]); every check of
/// the privacy config happens there.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// False for the non-private baseline (then `plan` is None and `scale` 0).
    pub private: bool,
    /// q = B/N.
    pub sample_rate: f64,
    /// q·N, the public divisor of the noised sum.
    pub expected_batch_size: f64,
    /// Steps and epochs.
    pub timeline: Timeline,
    /// The count query's noise multiplier 2σ_b with adaptive clipping.
    pub count_noise_multiplier: Option<f64>,
    /// The noise distribution the accountant is told about.
    pub mechanism: Mechanism,
    /// The accountant that calibrates, checks the budget and reports.
    pub accountant: AccountantSettings,
    /// The hard budget (the max or target ε at δ), if any.
    pub budget: Option<PrivacyBudget>,
    /// σ per step and ε per epoch (private runs).
    pub plan: Option<Plan>,
}

impl RunPlan {
    /// Checks `privacy` and `training` and plans a run on `dataset_size` training examples:
    /// the schedule's scale calibrated to the target ε, or the given noise multiplier and
    /// the ε it will spend.
    pub fn resolve(
        privacy: &PrivacyConfig,
        training: &TrainingConfig,
        dataset_size: usize,
    ) -> Result<RunPlan> {
        privacy.validate()?;
        training.validate()?;
        let (sample_rate, steps) = epochs_to_steps(
            training.epochs,
            dataset_size as u64,
            training.expected_batch_size as u64,
        )?;
        let timeline = Timeline {
            steps,
            steps_per_epoch: dataset_size as f64 / training.expected_batch_size as f64,
        };
        let expected_batch_size = sample_rate * dataset_size as f64;
        let count_noise_multiplier = match privacy.private {
            true => privacy
                .adaptive_clipping
                .map(|a| 2.0 * a.count_noise_std(expected_batch_size)),
            false => None,
        };
        let mut resolved = RunPlan {
            private: privacy.private,
            sample_rate,
            expected_batch_size,
            timeline,
            count_noise_multiplier,
            mechanism: privacy.mechanism(),
            accountant: privacy.accountant(),
            budget: None,
            plan: None,
        };
        if !privacy.private {
            return Ok(resolved);
        }
        check_step_count(training.epochs, steps)?;
        let spec = resolved.noise_spec(&privacy.noise_schedule);
        // The count annotation does not change ε: search without it, then check the split.
        let search = NoiseSpec {
            count_noise_multiplier: None,
            ..spec
        };
        let scale = match (privacy.target_epsilon, privacy.noise_multiplier) {
            (Some(target), _) => plan::calibrate(&search, target, privacy.delta)?.scale,
            (None, Some(sigma)) => sigma,
            (None, None) => unreachable!("validated above: a private run has one of them"),
        };
        if let Some(adaptive) = privacy.adaptive_clipping {
            // Every step's σ must leave room for the gradients (z < 2σ_b).
            let largest = (0..steps)
                .map(|s| plan::planned_noise_multiplier(&spec, scale, s))
                .fold(scale, f64::max);
            gradient_noise_multiplier(largest, adaptive.count_noise_std(expected_batch_size))?;
        }
        resolved.plan = Some(plan::plan(&spec, scale, privacy.delta)?);
        resolved.budget = match privacy.max_epsilon.or(privacy.target_epsilon) {
            Some(max) => Some(PrivacyBudget::new(max, privacy.delta)?),
            None => None,
        };
        Ok(resolved)
    }

    /// The calibrated scale of the noise schedule (σ of a constant schedule; 0 when
    /// non-private).
    pub fn scale(&self) -> f64 {
        self.plan.as_ref().map_or(0.0, |p| p.scale)
    }

    /// How the accountant sees the steps of this run under `schedule`.
    pub fn noise_spec<'s>(&self, schedule: &'s Schedule) -> NoiseSpec<'s> {
        NoiseSpec {
            schedule,
            sample_rate: self.sample_rate,
            timeline: self.timeline,
            count_noise_multiplier: self.count_noise_multiplier,
            mechanism: self.mechanism,
            accountant: self.accountant,
        }
    }

    /// The ledger entry of one step at total noise multiplier `sigma`.
    pub fn step_event(&self, schedule: &Schedule, sigma: f64) -> Result<PrivacyEvent> {
        plan::step_event(&self.noise_spec(schedule), sigma)
    }
}

/// The most steps a run may plan: calibration walks every step at each scale it tries, so a
/// typo of extra zeros in `training.epochs` is refused at once instead of running for hours.
pub const MAX_PLANNED_STEPS: u64 = 1_000_000;

/// The most epochs a run may plan: the plan gives ε after each epoch, one accountant query
/// each (tens of milliseconds for PLD on long ledgers).
pub const MAX_PLANNED_EPOCHS: f64 = 1000.0;

fn check_step_count(epochs: f64, steps: u64) -> Result<()> {
    if epochs > MAX_PLANNED_EPOCHS {
        return Err(Error::invalid(
            "training.epochs",
            epochs,
            format!(
                "at most {MAX_PLANNED_EPOCHS} epochs in a private run's plan (its ε is \
                 accounted after each)"
            ),
        ));
    }
    if steps > MAX_PLANNED_STEPS {
        return Err(Error::invalid(
            "training.epochs",
            format!("a plan of {steps} steps"),
            format!(
                "at most {MAX_PLANNED_STEPS} steps (epochs × training examples / \
                 expected_batch_size); fewer epochs or a larger batch"
            ),
        ));
    }
    Ok(())
}

/// The plan of a private run on `dataset_size` training examples ([`RunPlan::resolve`]);
/// a non-private config is an error (it spends nothing: nothing to plan).
pub fn plan_run(
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    dataset_size: usize,
) -> Result<RunPlan> {
    if !privacy.private {
        return Err(Error::invalid(
            "privacy.private",
            false,
            "a private run (a non-private baseline spends no privacy: nothing to plan)",
        ));
    }
    RunPlan::resolve(privacy, training, dataset_size)
}
