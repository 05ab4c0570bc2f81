//! The training loop: Poisson batches, DP steps, the ledger of every step taken, and an
//! evaluation on the test set at the end of each epoch.
//!
//! Steps are ⌈E·N/B⌉ (as `dptrain account --epochs` counts them); epoch k ends after step
//! ⌈k·N/B⌉. With a target ε the noise schedule's scale is calibrated before the first step
//! (`schedule::plan`), and each step, at its own σ, is checked against the budget before it
//! is taken: a run never spends more than its budget, whatever its schedule does.

use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::checkpoint::{Checkpoint, CheckpointState, parse_position};
use super::optimizer::{DpOptimizer, DpSettings, NoiseMode};
use super::settings::{PrivacyConfig, TrainingConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::grad_sample::with_values;
use crate::mechanism::{AdaptiveClipper, gradient_noise_multiplier};
use crate::model::{Model, ModelConfig, dataset_batch, summed_cross_entropy};
use crate::privacy::{
    Accountant, AccountantKind, AccountantSettings, Ledger, PrivacyBudget, PrivacyEvent,
    PrivacySpent, epochs_to_steps,
};
use crate::sampling::PoissonSampler;
use crate::schedule::plan::{self, NoiseSpec};
use crate::schedule::{Plateau, ShapeKind, Timeline};

pub use super::epoch::EpochRecord;

/// Everything a finished run produced.
pub struct TrainingRecord {
    /// One row per epoch.
    pub epochs: Vec<EpochRecord>,
    /// Every step actually taken.
    pub ledger: Ledger,
    /// ε at δ of the ledger (None for a non-private run).
    pub spent: Option<PrivacySpent>,
    /// The accountant that calibrated, checked the budget and gave `spent`.
    pub accountant: AccountantSettings,
    /// σ of the first step (calibrated or given; 0 when non-private).
    pub noise_multiplier: f64,
    /// q = B/N.
    pub sample_rate: f64,
    /// Steps taken.
    pub steps: u64,
    /// Steps planned.
    pub planned_steps: u64,
    /// Why training stopped early, if it did.
    pub stopped_early: Option<String>,
    /// Seconds of training (data loading excluded).
    pub wall_seconds: f64,
    /// The trained model.
    pub model: Model,
}

/// Independent seeds for init, sampling and noise from one run seed (SplitMix64).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed.wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean loss and accuracy of `model` on `data`, in chunks of 1000 examples.
pub fn evaluate(model: &Model, data: &Dataset) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1000) {
        let (x, y) = dataset_batch(data, chunk)?;
        let logits = model.forward(&x)?;
        loss += f64::from(summed_cross_entropy(&logits, &y)?.to_scalar::<f32>()?);
        let predicted = logits.argmax(1)?;
        let hits: Tensor = predicted
            .eq(&y)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?;
        correct += hits.to_scalar::<f32>()? as usize;
    }
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// Binary classification figures of a model on a data set with classes 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BinaryMetrics {
    /// Area under the ROC curve of the score logit₁ − logit₀ (ties count half).
    pub auc: f64,
    /// Share of examples predicted positive.
    pub predicted_positive_rate: f64,
    /// Share of examples that are positive (the base rate; always-negative scores 1 − it).
    pub positive_rate: f64,
}

/// AUC of `scores` for binary `labels`: the probability that a random positive example
/// scores above a random negative one, ties counted half (Mann-Whitney U over average
/// ranks). None when one class is absent.
pub fn auc(scores: &[f64], labels: &[u32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut positives) = (0.0f64, 0usize);
    let mut i = 0;
    while i < order.len() {
        // A block of tied scores gets the average of its ranks (1-based).
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] == 1 {
                rank_sum += average_rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// [`BinaryMetrics`] of `model` on `data` (two classes), in chunks of 1000 examples.
pub fn binary_metrics(model: &Model, data: &Dataset) -> Result<Option<BinaryMetrics>> {
    if data.classes != 2 || data.is_empty() {
        return Ok(None);
    }
    let mut scores = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1000) {
        let (x, _) = dataset_batch(data, chunk)?;
        let logits = model.forward(&x)?.to_vec2::<f32>()?;
        scores.extend(logits.iter().map(|l| f64::from(l[1]) - f64::from(l[0])));
    }
    let n = data.len() as f64;
    let Some(auc) = auc(&scores, &data.labels) else {
        return Ok(None);
    };
    Ok(Some(BinaryMetrics {
        auc,
        // argmax picks class 0 on a tie, as `evaluate` does.
        predicted_positive_rate: scores.iter().filter(|&&s| s > 0.0).count() as f64 / n,
        positive_rate: data.labels.iter().filter(|&&l| l == 1).count() as f64 / n,
    }))
}

/// Trains `model_config` on `train` with DP-SGD, evaluating on `test` after each epoch;
/// `validation` (public) feeds a plateau noise schedule; `on_epoch` sees each metrics row as
/// it is made.
#[allow(clippy::too_many_arguments)]
pub fn train(
    train: &Dataset,
    test: &Dataset,
    validation: Option<&Dataset>,
    model_config: &ModelConfig,
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainingRecord> {
    train_observed(
        train,
        test,
        validation,
        model_config,
        privacy,
        training,
        seed,
        Hooks {
            on_epoch: Some(on_epoch),
            ..Hooks::default()
        },
    )
}

/// Receives each epoch's checkpoint (to save it); an error stops training.
pub type CheckpointSink<'a> = &'a mut dyn FnMut(&Checkpoint) -> Result<()>;

/// Observers and controls of a training run ([`train_observed`]).
#[derive(Default)]
pub struct Hooks<'a> {
    /// Sees each metrics row as it is made.
    pub on_epoch: Option<&'a mut dyn FnMut(&EpochRecord)>,
    /// Called with (steps taken, steps planned) after every step (progress bars).
    pub on_step: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Receives a checkpoint at the end of every epoch (to save it).
    pub on_checkpoint: Option<CheckpointSink<'a>>,
    /// Continue from this checkpoint instead of starting afresh.
    pub resume: Option<Checkpoint>,
    /// Stop after this epoch, as if interrupted (tests of resuming).
    pub stop_after_epoch: Option<usize>,
    /// The run config's text, stored in checkpoints.
    pub config_text: String,
    /// When set (by a Ctrl-C handler), the run checkpoints after the current step and stops.
    pub interrupt: Option<&'a std::sync::atomic::AtomicBool>,
    /// White-box audit canaries, inserted as per-example gradients in every step.
    pub canaries: Option<&'a mut super::GradientCanaries>,
}

/// [`train`] with [`Hooks`]: progress, checkpoints, resuming.
#[allow(clippy::too_many_arguments)]
pub fn train_observed(
    train: &Dataset,
    test: &Dataset,
    validation: Option<&Dataset>,
    model_config: &ModelConfig,
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    seed: u64,
    mut hooks: Hooks,
) -> Result<TrainingRecord> {
    privacy.validate()?;
    training.validate()?;
    let n = train.len();
    let (sample_rate, planned_steps) = epochs_to_steps(
        training.epochs,
        n as u64,
        training.expected_batch_size as u64,
    )?;
    let expected_batch = sample_rate * n as f64;
    let timeline = Timeline {
        steps: planned_steps,
        steps_per_epoch: n as f64 / training.expected_batch_size as f64,
    };
    let schedule = &privacy.noise_schedule;
    let plateau_schedule = schedule.kind == ShapeKind::Plateau;
    if plateau_schedule && validation.is_none() {
        return Err(Error::invalid(
            "privacy.noise_schedule.kind",
            "plateau",
            "a public validation split to watch (data.validation > 0 with \
             data.validation_public = true), or another schedule",
        ));
    }
    let mut clipper = match (privacy.private, privacy.adaptive_clipping) {
        (true, Some(config)) => Some(AdaptiveClipper::new(
            config,
            privacy.clip_norm,
            expected_batch,
            derive_seed(seed, 4),
        )?),
        _ => None,
    };
    let spec = NoiseSpec {
        schedule,
        sample_rate,
        timeline,
        count_noise_multiplier: clipper.as_ref().map(|c| c.count_noise_multiplier()),
        mechanism: privacy.mechanism(),
        accountant: privacy.accountant(),
    };
    // The same calibration `dptrain account CONFIG` prints.
    let scale = match privacy.private {
        true => super::planning::plan_run(privacy, training, n)?.plan.scale,
        false => 0.0,
    };
    tracing::debug!(
        sample_rate,
        planned_steps,
        noise_scale = scale,
        "planned: the noise schedule's scale is calibrated before the first step"
    );
    let budget = match privacy.max_epsilon.or(privacy.target_epsilon) {
        Some(max) if privacy.private => Some(PrivacyBudget::new(max, privacy.delta)?),
        _ => None,
    };
    let mut accountant = Accountant::new(privacy.accountant())?;
    // Planned steps already known to fit the budget (PLD and PRV check many at once).
    let mut fitting: std::collections::VecDeque<PrivacyEvent> = Default::default();
    let model = Model::for_data(model_config, train, derive_seed(seed, 1))?;
    // Secure mode: batches and noise from OS-seeded CSPRNGs; `seed` then only initialises
    // the model (public: it depends on no data).
    let (mut sampler, noise) = match privacy.secure_noise && privacy.private {
        true => (
            PoissonSampler::secure(training.expected_batch_size, n)?,
            NoiseMode::Secure,
        ),
        false => (
            PoissonSampler::new(sample_rate, n, derive_seed(seed, 2))?,
            NoiseMode::Seeded(derive_seed(seed, 3)),
        ),
    };
    let mut optimizer = DpOptimizer::new(
        &model,
        DpSettings {
            optimizer: training.optimizer,
            clipping: privacy.clipping(),
            noise_multiplier: if privacy.private { scale } else { 0.0 },
            expected_batch_size: expected_batch,
            max_physical_batch: training.max_physical_batch,
            private: privacy.private,
            noise,
        },
    )?;
    let start = Instant::now();
    let mut stopped_early = None;
    let (mut sigma, mut clip_norm) = (0.0, privacy.clip_norm);
    let Progress {
        mut steps,
        mut epoch,
        mut recorded_step,
        wall_offset,
        mut epochs,
        mut epoch_loss,
        mut epoch_examples,
        mut epoch_nonfinite,
        mut plateau,
    } = match hooks.resume.take() {
        Some(resumed) => restore(
            resumed,
            &model,
            &mut optimizer,
            &mut sampler,
            clipper.as_mut(),
            &mut accountant,
        )?,
        None => Progress::default(),
    };
    // Evaluates and records the state after `steps` steps.
    let record_epoch = |epoch: usize,
                        steps: u64,
                        (train_loss, nonfinite_examples): (f64, u64),
                        (sigma, clip_norm): (f64, f64),
                        accountant: &mut Accountant|
     -> Result<EpochRecord> {
        let (test_loss, test_accuracy) = evaluate(&model, test)?;
        if !test_loss.is_finite() {
            return Err(Error::Tensor(format!(
                "after step {steps} the test loss is {test_loss}: training diverged (lower the \
                 learning rate); the last good checkpoint is kept"
            )));
        }
        let epsilon = match privacy.private {
            true => accountant.epsilon(privacy.delta)?.epsilon,
            false => 0.0,
        };
        let record = EpochRecord {
            epoch,
            step: steps,
            train_loss,
            test_loss,
            test_accuracy,
            epsilon,
            noise_multiplier: sigma,
            clip_norm,
            nonfinite_examples,
            wall_seconds: wall_offset + start.elapsed().as_secs_f64(),
        };
        Ok(record)
    };
    while steps < planned_steps {
        // This step's σ and C: schedules are functions of the step (public); a plateau and
        // adaptive clipping depend only on public validation data and released estimates.
        sigma = match plateau_schedule {
            true => scale * plateau.factor,
            false => scale * schedule.factor(steps, &timeline),
        };
        clip_norm = match &clipper {
            Some(clipper) => clipper.clip_norm(),
            None => privacy.clip_norm * privacy.clip_schedule.factor(steps, &timeline),
        };
        if privacy.private {
            // The step about to be taken, as the accountant sees it.
            let event = plan::step_event(&spec, sigma)?;
            if let Some(budget) = &budget {
                if fitting.front().is_none_or(|next| !next.same_step(&event)) {
                    // Ask again: the steps from here to the end of the plan, at the current
                    // plateau factor (exactly the steps to come unless a plateau moves).
                    // RDP checks one step at a time (microseconds): only this one.
                    let horizon = match accountant.kind() {
                        AccountantKind::Rdp => steps + 1,
                        _ => planned_steps,
                    };
                    let planned: Vec<PrivacyEvent> = std::iter::once(Ok(event))
                        .chain((steps + 1..horizon).map(|t| {
                            let sigma_t = match plateau_schedule {
                                true => sigma,
                                false => scale * schedule.factor(t, &timeline),
                            };
                            plan::step_event(&spec, sigma_t)
                        }))
                        .collect::<Result<_>>()?;
                    let (fit, after) =
                        accountant.steps_that_fit(&planned, budget.target_epsilon, budget.delta)?;
                    if fit == 0 {
                        tracing::warn!(
                            step = steps + 1,
                            epsilon = after,
                            "the next step would overspend the budget: stopping"
                        );
                        stopped_early = Some(format!(
                            "step {} would spend ε = {:.4} > budget {}",
                            steps + 1,
                            after,
                            budget.target_epsilon
                        ));
                        break;
                    }
                    fitting = planned.into_iter().take(fit).collect();
                }
                fitting.pop_front();
            }
            let gradient_sigma = match &clipper {
                Some(clipper) => gradient_noise_multiplier(sigma, clipper.count_noise_std())?,
                None => sigma,
            };
            optimizer.set_noise_and_clip(gradient_sigma, clip_norm)?;
            accountant.compose(event)?;
        }
        optimizer.set_learning_rate(
            training.optimizer.learning_rate() * training.lr_schedule.factor(steps, &timeline),
        );
        let batch = sampler.sample();
        let stats =
            optimizer.step_with_canaries(&model, train, &batch, hooks.canaries.as_deref_mut())?;
        if let Some(clipper) = &mut clipper {
            clipper.update(
                stats.batch_size - stats.clipped - stats.nonfinite,
                stats.batch_size,
            );
        }
        steps += 1;
        epoch_nonfinite += stats.nonfinite as u64;
        // A non-finite parameter means the run has diverged: stop before the next
        // checkpoint could overwrite the last good one.
        // (A scan of the parameters' storage in place: no copy on this per-step path.)
        let mut bad = None;
        for p in model.parameters() {
            bad = bad.or(with_values(p.as_tensor(), "parameter check", |v| {
                v.iter().copied().find(|x| !x.is_finite())
            })?);
        }
        if let Some(bad) = bad {
            return Err(Error::Tensor(format!(
                "after step {steps} a parameter is {bad}: training diverged (lower the \
                 learning rate); the last good checkpoint is kept"
            )));
        }
        if let Some(on_step) = hooks.on_step.as_mut() {
            on_step(steps, planned_steps);
        }
        epoch_loss += stats.loss_sum;
        epoch_examples += stats.batch_size;
        let at_epoch_end = steps == timeline.epoch_end(epoch as u64).min(planned_steps);
        if at_epoch_end {
            let train_loss = epoch_loss / epoch_examples.max(1) as f64;
            let record = record_epoch(
                epoch,
                steps,
                (train_loss, epoch_nonfinite),
                (sigma, clip_norm),
                &mut accountant,
            )?;
            if let Some(on_epoch) = hooks.on_epoch.as_mut() {
                on_epoch(&record);
            }
            epochs.push(record);
            if let (true, Some(validation)) = (plateau_schedule, validation) {
                plateau.observe(schedule, evaluate(&model, validation)?.0);
            }
            recorded_step = steps;
            if let Some(save) = hooks.on_checkpoint.as_mut() {
                // At an epoch's end the next epoch starts with empty sums.
                let checkpoint = snapshot(
                    Snapshot {
                        model: &model,
                        optimizer: &optimizer,
                        sampler: &sampler,
                        clipper: clipper.as_ref(),
                        ledger: accountant.ledger(),
                        epochs: &epochs,
                        plateau,
                        config: &hooks.config_text,
                    },
                    (steps, epoch + 1),
                    wall_offset + start.elapsed().as_secs_f64(),
                    (0.0, 0, 0),
                );
                save(&checkpoint)?;
            }
            if hooks.stop_after_epoch == Some(epoch) && steps < planned_steps {
                stopped_early = Some(format!("stopped after epoch {epoch}, as asked"));
                break;
            }
            epoch += 1;
            (epoch_loss, epoch_examples, epoch_nonfinite) = (0.0, 0, 0);
        } else if hooks
            .interrupt
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::SeqCst))
        {
            // Interrupted within an epoch: save everything, including the epoch's sums.
            if let Some(save) = hooks.on_checkpoint.as_mut() {
                save(&snapshot(
                    Snapshot {
                        model: &model,
                        optimizer: &optimizer,
                        sampler: &sampler,
                        clipper: clipper.as_ref(),
                        ledger: accountant.ledger(),
                        epochs: &epochs,
                        plateau,
                        config: &hooks.config_text,
                    },
                    (steps, epoch),
                    wall_offset + start.elapsed().as_secs_f64(),
                    (epoch_loss, epoch_examples as u64, epoch_nonfinite),
                ))?;
            }
            stopped_early = Some(format!(
                "interrupted after step {steps}; continue with --resume"
            ));
            // The state at the interruption is what the checkpoint holds; no metrics row
            // for a partial epoch (the resumed run makes it).
            recorded_step = steps;
            break;
        }
    }
    if stopped_early.is_some() && recorded_step != steps {
        let train_loss = epoch_loss / epoch_examples.max(1) as f64;
        let record = record_epoch(
            epoch,
            steps,
            (train_loss, epoch_nonfinite),
            (sigma, clip_norm),
            &mut accountant,
        )?;
        if let Some(on_epoch) = hooks.on_epoch.as_mut() {
            on_epoch(&record);
        }
        epochs.push(record);
    }
    let spent = if privacy.private {
        Some(accountant.epsilon(privacy.delta)?)
    } else {
        None
    };
    Ok(TrainingRecord {
        epochs,
        ledger: accountant.ledger().clone(),
        spent,
        accountant: privacy.accountant(),
        noise_multiplier: if privacy.private { scale } else { 0.0 },
        sample_rate,
        steps,
        planned_steps,
        stopped_early,
        wall_seconds: wall_offset + start.elapsed().as_secs_f64(),
        model,
    })
}

/// The parts of a running training a checkpoint copies.
struct Snapshot<'a> {
    model: &'a Model,
    optimizer: &'a DpOptimizer,
    sampler: &'a PoissonSampler,
    clipper: Option<&'a AdaptiveClipper>,
    ledger: &'a Ledger,
    epochs: &'a [EpochRecord],
    plateau: Plateau,
    config: &'a str,
}

/// A checkpoint after `steps` steps, before epoch `next_epoch`, with the epoch's sums so far
/// (loss, examples, non-finite examples).
fn snapshot(
    parts: Snapshot,
    (steps, next_epoch): (u64, usize),
    wall_seconds: f64,
    (epoch_loss, epoch_examples, epoch_nonfinite): (f64, u64, u64),
) -> Checkpoint {
    let (optimizer_state, noise_calls) = parts.optimizer.state();
    Checkpoint {
        state: CheckpointState {
            format: 1,
            config: parts.config.to_string(),
            steps,
            next_epoch,
            epochs: parts.epochs.to_vec(),
            ledger: parts.ledger.clone(),
            sampler_position: parts.sampler.position().to_string(),
            noise_calls,
            clipper: parts.clipper.map(|c| {
                let (clip, position) = c.state();
                (clip, position.to_string())
            }),
            plateau: parts.plateau,
            wall_seconds,
            optimizer_steps: optimizer_state.steps,
            epoch_loss,
            epoch_examples,
            epoch_nonfinite,
        },
        params: parts
            .model
            .parameters()
            .iter()
            .map(|v| v.as_tensor().clone())
            .collect(),
        optimizer: optimizer_state,
    }
}

/// Where a run stands: what the loop carries from step to step, and what a checkpoint
/// restores.
struct Progress {
    steps: u64,
    epoch: usize,
    recorded_step: u64,
    wall_offset: f64,
    epochs: Vec<EpochRecord>,
    epoch_loss: f64,
    epoch_examples: usize,
    epoch_nonfinite: u64,
    plateau: Plateau,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            steps: 0,
            epoch: 1,
            recorded_step: 0,
            wall_offset: 0.0,
            epochs: Vec::new(),
            epoch_loss: 0.0,
            epoch_examples: 0,
            epoch_nonfinite: 0,
            plateau: Plateau::default(),
        }
    }
}

/// Puts a checkpoint's parameters, optimizer state, sampler and clipper positions and
/// ledger back, and returns where the run stood.
fn restore(
    resumed: Checkpoint,
    model: &Model,
    optimizer: &mut DpOptimizer,
    sampler: &mut PoissonSampler,
    clipper: Option<&mut AdaptiveClipper>,
    accountant: &mut Accountant,
) -> Result<Progress> {
    let state = resumed.state;
    let params = model.parameters();
    if params.len() != resumed.params.len() {
        return Err(Error::Tensor(format!(
            "checkpoint: {} parameter tensors, the model has {}",
            resumed.params.len(),
            params.len()
        )));
    }
    for (var, saved) in params.iter().zip(&resumed.params) {
        if var.dims() != saved.dims() {
            return Err(Error::Tensor(format!(
                "checkpoint: a parameter of shape {:?}, the model needs {:?}",
                saved.dims(),
                var.dims()
            )));
        }
        var.set(saved)?;
    }
    optimizer.restore(&resumed.optimizer, state.noise_calls)?;
    let here = std::path::Path::new("checkpoint/state.json");
    sampler.seek(parse_position(&state.sampler_position, here)?);
    if let (Some(clipper), Some((clip, position))) = (clipper, &state.clipper) {
        clipper.restore((*clip, parse_position(position, here)?));
    }
    // ε continues from every step already taken; the budget checks include them.
    accountant.compose_ledger(&state.ledger)?;
    Ok(Progress {
        steps: state.steps,
        epoch: state.next_epoch,
        recorded_step: state.steps,
        wall_offset: state.wall_seconds,
        epochs: state.epochs,
        epoch_loss: state.epoch_loss,
        epoch_examples: state.epoch_examples as usize,
        epoch_nonfinite: state.epoch_nonfinite,
        plateau: state.plateau,
    })
}

/// Saves the model's parameters as safetensors, named by layer path (`<path>.weight`,
/// `<path>.bias`; frozen layers too), atomically (temporary file, then rename).
pub fn save_model(model: &Model, path: &std::path::Path) -> Result<()> {
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let io = |source| crate::error::Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Err(e) = candle_core::safetensors::save(&tensors, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, path).map_err(io)
}
