//! The training loop: Poisson batches, DP steps, the ledger of every step taken, and an
//! evaluation on the test set at the end of each epoch.
//!
//! Steps are ⌈E·N/B⌉ (as `dptrain account --epochs` counts them); epoch k ends after step
//! ⌈k·N/B⌉. With a target ε the noise schedule's scale is calibrated before the first step
//! (`schedule::plan`), and each step, at its own σ, is checked against the budget before it
//! is taken: a run never spends more than its budget, whatever its schedule does.

use std::collections::VecDeque;
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::checkpoint::{Checkpoint, CheckpointState, parse_position};
use super::optimizer::{DpOptimizer, DpSettings, NoiseMode};
use super::planning::RunPlan;
use super::settings::{PrivacyConfig, TrainingConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::grad_sample::with_values;
use crate::mechanism::{AdaptiveClipper, gradient_noise_multiplier};
use crate::model::{DpModule, Model, ModelConfig, dataset_batch, summed_cross_entropy};
use crate::privacy::{
    Accountant, AccountantKind, AccountantSettings, Ledger, PrivacyEvent, PrivacySpent,
};
use crate::real::{Real, real};
use crate::sampling::PoissonSampler;
use crate::schedule::{Plateau, ShapeKind};

pub use super::epoch::EpochRecord;

/// Everything a finished run produced.
pub struct TrainingRecord<M = Model> {
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
    pub model: M,
}

/// Independent seeds for init, sampling and noise from one run seed (SplitMix64).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed.wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mean loss and accuracy of `model` on `data`, in chunks of 1000 examples.
pub fn evaluate(model: &dyn DpModule, data: &Dataset) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for chunk in (0..data.len()).collect::<Vec<_>>().chunks(EVALUATION_CHUNK) {
        let (chunk_loss, hits) = evaluate_chunk(model, data, chunk)?;
        loss += chunk_loss;
        correct += hits;
    }
    let n = data.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

/// Examples evaluated at once.
pub(crate) const EVALUATION_CHUNK: usize = 1000;

/// The summed loss and the correct predictions of `model` on the examples `chunk`.
fn evaluate_chunk(model: &dyn DpModule, data: &Dataset, chunk: &[usize]) -> Result<(f64, usize)> {
    evaluate_chunk_logits(model, data, chunk).map(|(loss, hits, _)| (loss, hits))
}

/// [`evaluate_chunk`] with the chunk's logits (`dptrain evaluate` reads the confusion
/// matrix and scores from the very logits the figures come from).
pub(crate) fn evaluate_chunk_logits(
    model: &dyn DpModule,
    data: &Dataset,
    chunk: &[usize],
) -> Result<(f64, usize, Tensor)> {
    let (x, y) = dataset_batch(data, chunk)?;
    let logits = model.forward(&x)?;
    // Read as f64 whatever the model's dtype (exact for f32).
    let loss = summed_cross_entropy(&logits, &y)?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    let predicted = logits.argmax(1)?;
    let hits: Tensor = predicted
        .eq(&y)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?;
    Ok((loss, hits.to_scalar::<f32>()? as usize, logits))
}

/// [`evaluate`] spread over a distributed run's ranks: rank r evaluates the chunks
/// k ≡ r (mod W), and the chunks' losses are added on the grid 2^-32, so every rank gets
/// the same figures for any W.
pub fn evaluate_distributed(
    model: &dyn DpModule,
    data: &Dataset,
    dist: &super::dist::Distributed,
) -> Result<(f64, f64)> {
    let scale = 2f64.powi(super::dist::FIXED_POINT_BITS);
    // Σ loss on the grid, correct predictions, chunks whose loss is not finite or too large.
    let mut sums = [0i64; 3];
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices
        .chunks(EVALUATION_CHUNK)
        .skip(dist.rank())
        .step_by(dist.ranks())
    {
        let (loss, hits) = evaluate_chunk(model, data, chunk)?;
        let fixed = (loss * scale).round();
        // NaN or beyond 2^52 (an exploded loss): counted, reported as infinite.
        match fixed.abs() <= 2f64.powi(52) {
            true => sums[0] += fixed as i64,
            false => sums[2] += 1,
        }
        sums[1] += hits as i64;
    }
    dist.collective().all_reduce_sum(&mut sums)?;
    let n = data.len().max(1) as f64;
    let loss = match sums[2] {
        0 => sums[0] as f64 / scale,
        _ => f64::INFINITY,
    };
    Ok((loss / n, sums[1] as f64 / n))
}

/// A digest of what a rank trains: the config's text, the training set's size and labels,
/// and the seed (ranks that differ in any would take different steps).
fn run_digest(config_text: &str, train: &Dataset, seed: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(config_text.as_bytes());
    hash.update((train.len() as u64).to_le_bytes());
    for label in &train.labels {
        hash.update(label.to_le_bytes());
    }
    hash.update(seed.to_le_bytes());
    let digest = hash.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
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
pub fn binary_metrics(model: &dyn DpModule, data: &Dataset) -> Result<Option<BinaryMetrics>> {
    if data.classes != 2 || data.is_empty() {
        return Ok(None);
    }
    let mut scores = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1000) {
        let (x, _) = dataset_batch(data, chunk)?;
        let logits = model
            .forward(&x)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec2::<f64>()?;
        scores.extend(logits.iter().map(|l| l[1] - l[0]));
    }
    Ok(binary_from_scores(&scores, &data.labels))
}

/// [`BinaryMetrics`] of the scores logit₁ − logit₀ of examples with binary `labels` (None
/// when one class is absent or there are no examples).
pub(crate) fn binary_from_scores(scores: &[f64], labels: &[u32]) -> Option<BinaryMetrics> {
    let n = scores.len() as f64;
    Some(BinaryMetrics {
        auc: auc(scores, labels)?,
        // argmax picks class 0 on a tie, as `evaluate` does.
        predicted_positive_rate: scores.iter().filter(|&&s| s > 0.0).count() as f64 / n,
        positive_rate: labels.iter().filter(|&&l| l == 1).count() as f64 / n,
    })
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
    /// This process's rank of a run spread over several (`--dist mpi`, `super::dist`):
    /// every rank trains the same run and ends with the same model.
    pub distributed: Option<super::dist::Distributed>,
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
    hooks: Hooks,
) -> Result<TrainingRecord> {
    // The privacy and training settings are checked once, when the run plans itself.
    let model = Model::for_data(model_config, train, derive_seed(seed, 1))?;
    // Issue 28 §3.6: refuse, by layer, activations too large for a pass.
    model.check_activations(training.max_physical_batch.min(train.len()))?;
    let splits = Splits {
        train,
        test,
        validation,
    };
    train_module(model, splits, privacy, training, seed, hooks)
}

/// The data of a run: the private training set, the test set evaluated after each epoch,
/// and an optional public validation split that a plateau noise schedule watches.
#[derive(Debug, Clone, Copy)]
pub struct Splits<'a> {
    /// Private training examples.
    pub train: &'a Dataset,
    /// Evaluated after each epoch.
    pub test: &'a Dataset,
    /// Public validation data (plateau schedules).
    pub validation: Option<&'a Dataset>,
}

/// Trains any [`DpModule`] (a config's model, the builder's, a private candle model) with
/// DP-SGD: the same plan, budget checks, schedules, checkpoints and records as [`train`].
/// `seed` drives sampling and noise (the module arrives initialised).
pub fn train_module<M: DpModule>(
    module: M,
    splits: Splits,
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    seed: u64,
    hooks: Hooks,
) -> Result<TrainingRecord<M>> {
    let mut run = Run::new(module, splits, privacy, training, seed, hooks)?;
    while run.progress.steps < run.planned_steps() {
        if !run.schedule_step()? {
            break;
        }
        run.take_step()?;
        if run.at_epoch_end() {
            if !run.end_epoch()? {
                break;
            }
        } else if run.interrupted() {
            run.stop_interrupted()?;
            break;
        }
    }
    run.finish()
}

/// A run in progress: what is fixed before the first step, and the state carried from
/// step to step. Each phase of a step is one method.
struct Run<'a, 'h, M> {
    module: M,
    splits: Splits<'a>,
    privacy: &'a PrivacyConfig,
    training: &'a TrainingConfig,
    hooks: Hooks<'h>,
    /// Sampling, steps, the calibrated noise, the accountant and the budget, resolved once.
    plan: RunPlan,
    plateau_schedule: bool,
    accountant: Accountant,
    /// Planned steps already known to fit the budget (PLD and PRV check many at once).
    fitting: VecDeque<PrivacyEvent>,
    clipper: Option<AdaptiveClipper>,
    sampler: PoissonSampler,
    optimizer: DpOptimizer,
    progress: Progress,
    /// σ and C of the step last taken.
    sigma: f64,
    clip_norm: f64,
    start: Instant,
    stopped_early: Option<String>,
}

impl<'a, 'h, M: DpModule> Run<'a, 'h, M> {
    /// Plans the run (sampling rate, steps, calibrated σ, budget), builds the sampler, the
    /// noise and the optimizer, and restores a checkpoint when resuming.
    fn new(
        module: M,
        splits: Splits<'a>,
        privacy: &'a PrivacyConfig,
        training: &'a TrainingConfig,
        seed: u64,
        mut hooks: Hooks<'h>,
    ) -> Result<Self> {
        let n = splits.train.len();
        let plan = RunPlan::resolve(privacy, training, n)?;
        let plateau_schedule = privacy.noise_schedule.kind == ShapeKind::Plateau;
        if plateau_schedule && splits.validation.is_none() {
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
                plan.expected_batch_size,
                derive_seed(seed, 4),
            )?),
            _ => None,
        };
        // The same calibration `dptrain account CONFIG` prints.
        let scale = plan.scale();
        tracing::debug!(
            sample_rate = plan.sample_rate,
            planned_steps = plan.timeline.steps,
            noise_scale = scale,
            "planned: the noise schedule's scale is calibrated before the first step"
        );
        let mut accountant = Accountant::new(plan.accountant)?;
        // Secure mode: batches and noise from OS-seeded CSPRNGs; `seed` then drives nothing
        // private.
        let (mut sampler, noise) = match privacy.secure_noise && privacy.private {
            true => (
                PoissonSampler::secure(training.expected_batch_size, n)?,
                NoiseMode::Secure,
            ),
            false => (
                PoissonSampler::new(plan.sample_rate, n, derive_seed(seed, 2))?,
                NoiseMode::Seeded(derive_seed(seed, 3)),
            ),
        };
        let mut optimizer = DpOptimizer::new(
            &module,
            DpSettings {
                optimizer: training.optimizer,
                clipping: privacy.clipping(),
                noise_multiplier: scale,
                expected_batch_size: plan.expected_batch_size,
                max_physical_batch: training.max_physical_batch,
                private: privacy.private,
                noise,
            },
        )?;
        if let Some(dist) = hooks.distributed.take() {
            if privacy.secure_noise && privacy.private {
                return Err(Error::invalid(
                    "privacy.secure_noise",
                    true,
                    "seeded noise in a distributed run (every rank adds the same draw; \
                     secure mode's comes from each machine's operating system)",
                ));
            }
            if hooks.canaries.is_some() {
                return Err(Error::Usage(
                    "audit canaries in a distributed run: audit with one process".into(),
                ));
            }
            dist.check_same("run", run_digest(&hooks.config_text, splits.train, seed))?;
            optimizer.distribute(dist)?;
        }
        let progress = match hooks.resume.take() {
            Some(resumed) => restore(
                resumed,
                &module,
                &mut optimizer,
                &mut sampler,
                clipper.as_mut(),
                &mut accountant,
            )?,
            None => Progress::default(),
        };
        Ok(Run {
            module,
            splits,
            privacy,
            training,
            hooks,
            plan,
            plateau_schedule,
            accountant,
            fitting: VecDeque::new(),
            clipper,
            sampler,
            optimizer,
            progress,
            sigma: 0.0,
            clip_norm: privacy.clip_norm,
            start: Instant::now(),
            stopped_early: None,
        })
    }

    /// σ of step `t` (0-based) under the schedule; a plateau holds its current factor.
    fn sigma_at(&self, t: u64) -> f64 {
        let scale = self.plan.scale();
        match self.plateau_schedule {
            true => scale * self.progress.plateau.factor,
            false => scale * self.privacy.noise_schedule.factor(t, &self.plan.timeline),
        }
    }

    /// The ledger entry of a step at total noise multiplier `sigma`.
    fn step_event(&self, sigma: f64) -> Result<PrivacyEvent> {
        self.plan.step_event(&self.privacy.noise_schedule, sigma)
    }

    fn planned_steps(&self) -> u64 {
        self.plan.timeline.steps
    }

    /// Sets the next step's σ, C and learning rate, and composes the step into the
    /// accountant if it fits the budget; false (and the reason kept) if it does not.
    ///
    /// Schedules are functions of the step (public); a plateau and adaptive clipping depend
    /// only on public validation data and released estimates.
    fn schedule_step(&mut self) -> Result<bool> {
        let steps = self.progress.steps;
        self.sigma = self.sigma_at(steps);
        self.clip_norm = match &self.clipper {
            Some(clipper) => clipper.clip_norm(),
            None => {
                self.privacy.clip_norm
                    * self
                        .privacy
                        .clip_schedule
                        .factor(steps, &self.plan.timeline)
            }
        };
        if self.privacy.private {
            let event = self.step_event(self.sigma)?;
            if !self.fits_budget(event)? {
                return Ok(false);
            }
            let gradient_sigma = match &self.clipper {
                Some(clipper) => gradient_noise_multiplier(self.sigma, clipper.count_noise_std())?,
                None => self.sigma,
            };
            self.optimizer
                .set_noise_and_clip(gradient_sigma, self.clip_norm)?;
            self.accountant.compose(event)?;
        }
        self.optimizer.set_learning_rate(
            self.training.optimizer.learning_rate()
                * self.training.lr_schedule.factor(steps, &self.plan.timeline),
        );
        Ok(true)
    }

    /// Whether the step `event` (the next one) keeps ε within the budget.
    fn fits_budget(&mut self, event: PrivacyEvent) -> Result<bool> {
        let Some(budget) = self.plan.budget else {
            return Ok(true);
        };
        let steps = self.progress.steps;
        if self
            .fitting
            .front()
            .is_none_or(|next| !next.same_step(&event))
        {
            // Ask again: the steps from here to the end of the plan, at the current plateau
            // factor (exactly the steps to come unless a plateau moves). RDP checks one step
            // at a time (microseconds): only this one.
            let horizon = match self.accountant.kind() {
                AccountantKind::Rdp => steps + 1,
                _ => self.planned_steps(),
            };
            let planned: Vec<PrivacyEvent> = std::iter::once(Ok(event))
                .chain((steps + 1..horizon).map(|t| self.step_event(self.sigma_at(t))))
                .collect::<Result<_>>()?;
            let admission = budget.admit(&mut self.accountant, &planned)?;
            let fit = admission.steps;
            if fit == 0 {
                let after = admission.refused_at_epsilon.unwrap_or(f64::NAN);
                tracing::warn!(
                    step = steps + 1,
                    epsilon = after,
                    "the next step would overspend the budget: stopping"
                );
                self.stopped_early = Some(format!(
                    "step {} would spend ε = {:.4} > budget {}",
                    steps + 1,
                    after,
                    budget.target_epsilon
                ));
                return Ok(false);
            }
            self.fitting = planned.into_iter().take(fit).collect();
        }
        self.fitting.pop_front();
        Ok(true)
    }

    /// Samples a Poisson batch and takes the DP step on it; stops the run (an error) if a
    /// parameter became non-finite.
    fn take_step(&mut self) -> Result<()> {
        let batch = self.sampler.sample();
        let stats = self.optimizer.step_with_canaries(
            &self.module,
            self.splits.train,
            &batch,
            self.hooks.canaries.as_deref_mut(),
        )?;
        if let Some(clipper) = &mut self.clipper {
            clipper.update(
                stats.batch_size - stats.clipped - stats.nonfinite,
                stats.batch_size,
            );
        }
        let progress = &mut self.progress;
        progress.steps += 1;
        progress.epoch_nonfinite += stats.nonfinite as u64;
        progress.epoch_loss += stats.loss_sum;
        progress.epoch_examples += stats.batch_size;
        let steps = progress.steps;
        // A non-finite parameter means the run has diverged: stop before the next
        // checkpoint could overwrite the last good one.
        // (A scan of the parameters' storage in place: no copy on this per-step path.)
        let mut bad = None;
        for p in self.module.parameters() {
            bad = bad.or(real!(p.dtype(), "parameter check", |T| with_values(
                p.as_tensor(),
                "parameter check",
                |v: &[T]| v.iter().find(|x| !x.is_finite()).map(|x| x.wide())
            ))?);
        }
        if let Some(bad) = bad {
            return Err(Error::Tensor(format!(
                "after step {steps} a parameter is {bad}: training diverged (lower the \
                 learning rate); the last good checkpoint is kept"
            )));
        }
        let planned = self.planned_steps();
        if let Some(on_step) = self.hooks.on_step.as_mut() {
            on_step(steps, planned);
        }
        Ok(())
    }

    fn at_epoch_end(&self) -> bool {
        let progress = &self.progress;
        progress.steps
            == self
                .plan
                .timeline
                .epoch_end(progress.epoch as u64)
                .min(self.planned_steps())
    }

    fn interrupted(&self) -> bool {
        self.hooks
            .interrupt
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Evaluates and records the state after the steps taken, and hands the row to
    /// `on_epoch`.
    fn record_epoch(&mut self) -> Result<()> {
        let progress = &self.progress;
        let steps = progress.steps;
        let (test_loss, test_accuracy) = self.evaluate(self.splits.test)?;
        if !test_loss.is_finite() {
            return Err(Error::Tensor(format!(
                "after step {steps} the test loss is {test_loss}: training diverged (lower the \
                 learning rate); the last good checkpoint is kept"
            )));
        }
        let epsilon = match self.privacy.private {
            true => self.accountant.epsilon(self.privacy.delta)?.epsilon,
            false => 0.0,
        };
        let record = EpochRecord {
            epoch: progress.epoch,
            step: steps,
            train_loss: progress.epoch_loss / progress.epoch_examples.max(1) as f64,
            test_loss,
            test_accuracy,
            epsilon,
            noise_multiplier: self.sigma,
            clip_norm: self.clip_norm,
            nonfinite_examples: progress.epoch_nonfinite,
            wall_seconds: self.wall_seconds(),
        };
        if let Some(on_epoch) = self.hooks.on_epoch.as_mut() {
            on_epoch(&record);
        }
        let progress = &mut self.progress;
        progress.epochs.push(record);
        progress.recorded_step = steps;
        Ok(())
    }

    /// Loss and accuracy on `data`, spread over the ranks of a distributed run.
    fn evaluate(&self, data: &Dataset) -> Result<(f64, f64)> {
        match self.optimizer.distributed() {
            Some(dist) => evaluate_distributed(&self.module, data, dist),
            None => evaluate(&self.module, data),
        }
    }

    fn wall_seconds(&self) -> f64 {
        self.progress.wall_offset + self.start.elapsed().as_secs_f64()
    }

    /// The end of an epoch: its row, the plateau's observation, the checkpoint. False when
    /// the run is to stop here (as asked by `stop_after_epoch`).
    fn end_epoch(&mut self) -> Result<bool> {
        self.record_epoch()?;
        if let (true, Some(validation)) = (self.plateau_schedule, self.splits.validation) {
            let loss = self.evaluate(validation)?.0;
            self.progress
                .plateau
                .observe(&self.privacy.noise_schedule, loss);
        }
        let epoch = self.progress.epoch;
        // At an epoch's end the next epoch starts with empty sums.
        self.save_checkpoint(epoch + 1, (0.0, 0, 0))?;
        if self.hooks.stop_after_epoch == Some(epoch) && self.progress.steps < self.planned_steps()
        {
            self.stopped_early = Some(format!("stopped after epoch {epoch}, as asked"));
            return Ok(false);
        }
        let progress = &mut self.progress;
        progress.epoch += 1;
        (
            progress.epoch_loss,
            progress.epoch_examples,
            progress.epoch_nonfinite,
        ) = (0.0, 0, 0);
        Ok(true)
    }

    /// Interrupted within an epoch: saves everything, including the epoch's sums so far.
    /// No metrics row for a partial epoch (the resumed run makes it).
    fn stop_interrupted(&mut self) -> Result<()> {
        let progress = &self.progress;
        let sums = (
            progress.epoch_loss,
            progress.epoch_examples as u64,
            progress.epoch_nonfinite,
        );
        self.save_checkpoint(progress.epoch, sums)?;
        let steps = self.progress.steps;
        self.stopped_early = Some(format!(
            "interrupted after step {steps}; continue with --resume"
        ));
        // The state at the interruption is what the checkpoint holds.
        self.progress.recorded_step = steps;
        Ok(())
    }

    /// Hands a checkpoint of the state now, before epoch `next_epoch` with the epoch's sums
    /// (loss, examples, non-finite examples), to `on_checkpoint`.
    fn save_checkpoint(&mut self, next_epoch: usize, sums: (f64, u64, u64)) -> Result<()> {
        let Some(save) = self.hooks.on_checkpoint.as_mut() else {
            return Ok(());
        };
        let progress = &self.progress;
        let (optimizer_state, noise_calls) = self.optimizer.state();
        let (epoch_loss, epoch_examples, epoch_nonfinite) = sums;
        let checkpoint = Checkpoint {
            state: CheckpointState {
                format: 1,
                config: self.hooks.config_text.clone(),
                steps: progress.steps,
                next_epoch,
                epochs: progress.epochs.clone(),
                ledger: self.accountant.ledger().clone(),
                sampler_position: self.sampler.position().to_string(),
                noise_calls,
                clipper: self.clipper.as_ref().map(|c| {
                    let (clip, position) = c.state();
                    (clip, position.to_string())
                }),
                plateau: progress.plateau,
                wall_seconds: progress.wall_offset + self.start.elapsed().as_secs_f64(),
                optimizer_steps: optimizer_state.steps,
                epoch_loss,
                epoch_examples,
                epoch_nonfinite,
            },
            params: self
                .module
                .parameters()
                .iter()
                .map(|v| v.as_tensor().clone())
                .collect(),
            optimizer: optimizer_state,
        };
        save(&checkpoint)
    }

    /// The record of the run; a run stopped early gets a row for its last, partial epoch.
    fn finish(mut self) -> Result<TrainingRecord<M>> {
        if self.stopped_early.is_some() && self.progress.recorded_step != self.progress.steps {
            self.record_epoch()?;
        }
        let spent = match self.privacy.private {
            true => Some(self.accountant.epsilon(self.privacy.delta)?),
            false => None,
        };
        let wall_seconds = self.wall_seconds();
        Ok(TrainingRecord {
            epochs: self.progress.epochs,
            ledger: self.accountant.ledger().clone(),
            spent,
            accountant: self.plan.accountant,
            noise_multiplier: self.plan.scale(),
            sample_rate: self.plan.sample_rate,
            steps: self.progress.steps,
            planned_steps: self.plan.timeline.steps,
            stopped_early: self.stopped_early,
            wall_seconds,
            model: self.module,
        })
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
    model: &dyn DpModule,
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
pub fn save_model(model: &dyn DpModule, path: &std::path::Path) -> Result<()> {
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
