//! The privacy plan of a run config, before any training: what `dptrain account CONFIG`
//! prints and what the trainer calibrates.

use super::settings::{PrivacyConfig, TrainingConfig};
use crate::error::{Error, Result};
use crate::mechanism::gradient_noise_multiplier;
use crate::privacy::epochs_to_steps;
use crate::schedule::Timeline;
use crate::schedule::plan::{self, NoiseSpec, Plan};

/// A run's plan: sampling, time line and the noise plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// q = B/N.
    pub sample_rate: f64,
    /// Steps and epochs.
    pub timeline: Timeline,
    /// The count query's noise multiplier 2σ_b with adaptive clipping.
    pub count_noise_multiplier: Option<f64>,
    /// σ per step and ε per epoch.
    pub plan: Plan,
}

/// The plan of a private run on `dataset_size` training examples: the schedule's scale
/// calibrated to the target ε, or the given noise multiplier and the ε it will spend.
pub fn plan_run(
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    dataset_size: usize,
) -> Result<RunPlan> {
    privacy.validate()?;
    training.validate()?;
    if !privacy.private {
        return Err(Error::invalid(
            "privacy.private",
            false,
            "a private run (a non-private baseline spends no privacy: nothing to plan)",
        ));
    }
    let (sample_rate, steps) = epochs_to_steps(
        training.epochs,
        dataset_size as u64,
        training.expected_batch_size as u64,
    )?;
    let timeline = Timeline {
        steps,
        steps_per_epoch: dataset_size as f64 / training.expected_batch_size as f64,
    };
    let expected_batch = sample_rate * dataset_size as f64;
    let count_noise_multiplier = privacy
        .adaptive_clipping
        .map(|a| 2.0 * a.count_noise_std(expected_batch));
    let spec = NoiseSpec {
        schedule: &privacy.noise_schedule,
        sample_rate,
        timeline,
        count_noise_multiplier,
        mechanism: privacy.mechanism(),
        accountant: privacy.accountant(),
    };
    // The count annotation does not change ε: search without it, then check the split.
    let search = NoiseSpec {
        count_noise_multiplier: None,
        ..spec
    };
    let scale = match (privacy.target_epsilon, privacy.noise_multiplier) {
        (Some(target), _) => plan::calibrate(&search, target, privacy.delta)?.scale,
        (None, Some(sigma)) => sigma,
        (None, None) => unreachable!("validated above"),
    };
    if let Some(adaptive) = privacy.adaptive_clipping {
        // Every step's σ must leave room for the gradients (z < 2σ_b).
        let largest = (0..steps)
            .map(|s| plan::planned_noise_multiplier(&spec, scale, s))
            .fold(scale, f64::max);
        gradient_noise_multiplier(largest, adaptive.count_noise_std(expected_batch))?;
    }
    let plan = plan::plan(&spec, scale, privacy.delta)?;
    Ok(RunPlan {
        sample_rate,
        timeline,
        count_noise_multiplier,
        plan,
    })
}
