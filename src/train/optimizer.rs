//! The DP optimizer: clip → sum → noise → scale, then the inner optimizer's step
//! (Abadi et al. 2016, Alg. 1; the same order as Opacus's `DPOptimizer.pre_step`).
//!
//! One logical step takes the Poisson batch's indices, processes them in physical chunks of
//! at most `max_physical_batch` (virtual batches: the clipped sums accumulate across
//! chunks), adds noise once, divides by the *expected* batch size q·N, and hands the result
//! to the inner optimizer as its gradients. The inner optimizer sees only privatised
//! gradients, so its update (momentum, Adam moments) is post-processing.

use super::canaries::GradientCanaries;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::{
    ClippingConfig, ClippingMode, GaussianNoise, SecureNoise, clip_factor_of, per_layer_clip_norms,
};
use crate::model::{DpModule, PerExample, TracedPass, training_batch};
use crate::real::{Real, real};

/// The inner optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD, optionally with (heavy-ball) momentum: v ← μv + g, θ ← θ − lr·v.
    Sgd {
        /// Learning rate.
        learning_rate: f64,
        /// Momentum μ ∈ [0, 1).
        #[serde(default)]
        momentum: f64,
    },
    /// Adam (Kingma & Ba 2015), bias-corrected, no weight decay.
    Adam {
        /// Learning rate.
        learning_rate: f64,
        /// β₁.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂.
        #[serde(default = "default_beta2")]
        beta2: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}

fn default_beta2() -> f64 {
    0.999
}

impl OptimizerConfig {
    /// The learning rate.
    pub fn learning_rate(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { learning_rate, .. }
            | OptimizerConfig::Adam { learning_rate, .. } => *learning_rate,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let lr = self.learning_rate();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::invalid(
                "training.optimizer.learning_rate",
                lr,
                "a finite number above 0",
            ));
        }
        match *self {
            OptimizerConfig::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                Err(Error::invalid(
                    "training.optimizer.momentum",
                    momentum,
                    "a number in [0, 1)",
                ))
            }
            OptimizerConfig::Adam { beta1, beta2, .. }
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) =>
            {
                Err(Error::invalid(
                    "training.optimizer.beta1/beta2",
                    format!("{beta1}/{beta2}"),
                    "numbers in [0, 1)",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// SGD with momentum (candle's SGD has none).
struct SgdMomentum {
    vars: Vec<Var>,
    velocity: Vec<Option<Tensor>>,
    learning_rate: f64,
    momentum: f64,
}

impl SgdMomentum {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, velocity) in self.vars.iter().zip(&mut self.velocity) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let direction = match velocity.take() {
                Some(v) if self.momentum > 0.0 => ((v * self.momentum)? + g)?,
                _ => g.clone(),
            };
            var.set(&(var.as_tensor() - (&direction * self.learning_rate)?)?)?;
            if self.momentum > 0.0 {
                *velocity = Some(direction);
            }
        }
        Ok(())
    }
}

/// Adam (Kingma & Ba 2015) with bias correction, written here so that its moments can be
/// saved in checkpoints (candle's AdamW keeps them private).
struct Adam {
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: u64,
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    fn new(vars: Vec<Var>, learning_rate: f64, beta1: f64, beta2: f64) -> Result<Self> {
        let zeros = |v: &Var| -> Result<Tensor> { Ok(v.as_tensor().zeros_like()?) };
        Ok(Adam {
            first: vars.iter().map(zeros).collect::<Result<_>>()?,
            second: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            steps: 0,
            learning_rate,
            beta1,
            beta2,
            eps: 1e-8,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for ((var, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            *m = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (update * self.learning_rate)?)?)?;
        }
        Ok(())
    }
}

enum Inner {
    Sgd(SgdMomentum),
    Adam(Box<Adam>),
}

/// The inner optimizer's state, for checkpoints: named tensors and Adam's step count.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// `velocity.<i>` (SGD with momentum), `adam_m.<i>` and `adam_v.<i>` (Adam).
    pub tensors: Vec<(String, Tensor)>,
    /// Adam's steps so far (0 for SGD).
    pub steps: u64,
}

/// What one logical step did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepStats {
    /// Examples in the Poisson batch (private; for monitoring only, never for scaling).
    pub batch_size: usize,
    /// Σ of the examples' losses.
    pub loss_sum: f64,
    /// Examples whose gradient norm exceeded C (were scaled down).
    pub clipped: usize,
    /// Examples whose gradient was not finite (contributed nothing).
    pub nonfinite: usize,
}

/// Everything a [`DpOptimizer`] needs besides the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSettings {
    /// The inner optimizer.
    pub optimizer: OptimizerConfig,
    /// Clip norm C and mode.
    pub clipping: ClippingConfig,
    /// σ: the noise standard deviation is σ·C.
    pub noise_multiplier: f64,
    /// q·N: the sum is divided by this.
    pub expected_batch_size: f64,
    /// Largest chunk processed at once (virtual batches).
    pub max_physical_batch: usize,
    /// False for the non-private baseline (no clipping, no noise).
    pub private: bool,
    /// Where the noise comes from.
    pub noise: NoiseMode,
}

/// Where a DP step's noise comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// Fast mode: seeded ChaCha12 streams and floating-point Gaussians (reproducible;
    /// `mechanism::noise`).
    Seeded(u64),
    /// Secure mode: discrete Gaussian noise on a grid from an OS-seeded CSPRNG
    /// (`mechanism::secure_noise`).
    Secure,
}

/// The noise source of a [`DpOptimizer`].
enum Noise {
    Fast(GaussianNoise),
    Secure(Box<SecureNoise>),
}

/// DP-SGD around an inner optimizer.
pub struct DpOptimizer {
    inner: Inner,
    params: Vec<Var>,
    clipping: ClippingConfig,
    noise: Noise,
    noise_multiplier: f64,
    expected_batch_size: f64,
    max_physical_batch: usize,
    private: bool,
    /// Seed of the current step's dropout masks (model randomness, not privacy noise).
    mask_seed: u64,
    /// The parameters' dtype: the whole step (norms, factors, sums, noise) runs in it.
    dtype: DType,
}

impl DpOptimizer {
    /// A DP optimizer for `model`'s trainable parameters. `private = false` gives the
    /// non-private baseline through the same code path (factors 1, no noise).
    pub fn new(model: &dyn DpModule, settings: DpSettings) -> Result<Self> {
        let DpSettings {
            optimizer,
            clipping,
            noise_multiplier,
            expected_batch_size,
            max_physical_batch,
            private,
            noise,
        } = settings;
        optimizer.validate()?;
        clipping.validate()?;
        let mask_seed = match noise {
            NoiseMode::Seeded(seed) => seed ^ 0x6d61_736b_7365_6564,
            NoiseMode::Secure => 0,
        };
        if private && !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(Error::invalid(
                "noise_multiplier",
                noise_multiplier,
                "a finite number above 0",
            ));
        }
        if !(expected_batch_size > 0.0 && expected_batch_size.is_finite()) {
            return Err(Error::invalid(
                "expected_batch_size",
                expected_batch_size,
                "a number above 0",
            ));
        }
        if max_physical_batch == 0 {
            return Err(Error::invalid(
                "training.max_physical_batch",
                0,
                "at least 1",
            ));
        }
        let params = model.parameters();
        let inner = match optimizer {
            OptimizerConfig::Sgd {
                learning_rate,
                momentum,
            } => Inner::Sgd(SgdMomentum {
                velocity: vec![None; params.len()],
                vars: params.clone(),
                learning_rate,
                momentum,
            }),
            OptimizerConfig::Adam {
                learning_rate,
                beta1,
                beta2,
            } => Inner::Adam(Box::new(Adam::new(
                params.clone(),
                learning_rate,
                beta1,
                beta2,
            )?)),
        };
        let noise = match (noise, private) {
            (NoiseMode::Seeded(seed), true) => Noise::Fast(GaussianNoise::new(
                noise_multiplier * clipping.clip_norm,
                seed,
            )?),
            (NoiseMode::Seeded(seed), false) => Noise::Fast(GaussianNoise::new(0.0, seed)?),
            (NoiseMode::Secure, true) => {
                // One grid for the whole model: the sensitivity bound is on all of it.
                let dimension = params.iter().map(|p| p.elem_count()).sum();
                Noise::Secure(Box::new(SecureNoise::new(
                    dimension,
                    clipping.clip_norm,
                    noise_multiplier,
                )?))
            }
            (NoiseMode::Secure, false) => {
                return Err(Error::invalid(
                    "privacy.secure_noise",
                    true,
                    "a private run (a non-private baseline adds no noise)",
                ));
            }
        };
        let dtype = params.first().map_or(DType::F32, |p| p.dtype());
        if let Some(other) = params.iter().find(|p| p.dtype() != dtype) {
            return Err(Error::Tensor(format!(
                "the module's parameters mix {dtype:?} and {:?}: one precision per model",
                other.dtype()
            )));
        }
        Ok(DpOptimizer {
            inner,
            params,
            clipping,
            noise,
            noise_multiplier,
            expected_batch_size,
            max_physical_batch,
            private,
            mask_seed,
            dtype,
        })
    }

    /// The noise multiplier σ of the next step.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// Sets the gradient noise multiplier and the clip norm of the next steps (schedules,
    /// adaptive clipping): noise of standard deviation `noise_multiplier · clip_norm` on the
    /// sum of gradients clipped to `clip_norm`.
    pub fn set_noise_and_clip(&mut self, noise_multiplier: f64, clip_norm: f64) -> Result<()> {
        let clipping = ClippingConfig {
            clip_norm,
            ..self.clipping
        };
        clipping.validate()?;
        if self.private {
            if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
                return Err(Error::invalid(
                    "noise_multiplier",
                    noise_multiplier,
                    "a finite number above 0",
                ));
            }
            match &mut self.noise {
                Noise::Fast(noise) => noise.set_noise_std(noise_multiplier * clip_norm)?,
                Noise::Secure(noise) => noise.set(clip_norm, noise_multiplier)?,
            }
        }
        self.clipping = clipping;
        self.noise_multiplier = noise_multiplier;
        Ok(())
    }

    /// Sets the learning rate (learning-rate schedules cost no privacy).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        match &mut self.inner {
            Inner::Sgd(sgd) => sgd.learning_rate = learning_rate,
            Inner::Adam(adam) => adam.learning_rate = learning_rate,
        }
    }

    /// The inner optimizer's state and the noise stream's position, for checkpoints.
    pub fn state(&self) -> (OptimizerState, u64) {
        let state = match &self.inner {
            Inner::Sgd(sgd) => OptimizerState {
                tensors: sgd
                    .velocity
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_ref().map(|v| (format!("velocity.{i}"), v.clone())))
                    .collect(),
                steps: 0,
            },
            Inner::Adam(adam) => OptimizerState {
                tensors: adam
                    .first
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (format!("adam_m.{i}"), m.clone()))
                    .chain(
                        adam.second
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (format!("adam_v.{i}"), v.clone())),
                    )
                    .collect(),
                steps: adam.steps,
            },
        };
        let calls = match &self.noise {
            Noise::Fast(noise) => noise.calls(),
            // Nothing to resume: a secure run draws fresh OS randomness.
            Noise::Secure(_) => 0,
        };
        (state, calls)
    }

    /// Restores [`DpOptimizer::state`]; errors if a tensor is missing or misshapen.
    pub fn restore(&mut self, state: &OptimizerState, noise_calls: u64) -> Result<()> {
        let find = |name: String, like: &Var| -> Result<Option<Tensor>> {
            match state.tensors.iter().find(|(n, _)| *n == name) {
                Some((_, t)) if t.dims() == like.dims() => Ok(Some(t.clone())),
                Some((_, t)) => Err(Error::Tensor(format!(
                    "checkpoint: {name} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    like.dims()
                ))),
                None => Ok(None),
            }
        };
        match &mut self.inner {
            Inner::Sgd(sgd) => {
                for (i, (velocity, var)) in sgd.velocity.iter_mut().zip(&sgd.vars).enumerate() {
                    *velocity = find(format!("velocity.{i}"), var)?;
                }
            }
            Inner::Adam(adam) => {
                for (i, var) in adam.vars.iter().enumerate() {
                    let missing = || Error::Tensor(format!("checkpoint: Adam moment {i} missing"));
                    adam.first[i] = find(format!("adam_m.{i}"), var)?.ok_or_else(missing)?;
                    adam.second[i] = find(format!("adam_v.{i}"), var)?.ok_or_else(missing)?;
                }
                adam.steps = state.steps;
            }
        }
        if let Noise::Fast(noise) = &mut self.noise {
            noise.set_calls(noise_calls);
        }
        Ok(())
    }

    /// One logical DP-SGD step on the examples `indices` of `data` (a Poisson batch; may be
    /// empty).
    ///
    /// # Privacy
    /// Every example's gradient is scaled to norm at most C (flat) or C/√L per layer, so the
    /// sum has L2 sensitivity C under add/remove-one; N(0, (σC)²) is added once per
    /// coordinate; the result is divided by the expected batch size, a public constant.
    pub fn step(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
    ) -> Result<StepStats> {
        self.step_with_canaries(model, data, indices, None)
    }

    /// [`DpOptimizer::step`] with white-box audit canaries: their gradients join the clipped
    /// sum before the noise, and their released values are recorded after it.
    pub fn step_with_canaries(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
        canaries: Option<&mut GradientCanaries>,
    ) -> Result<StepStats> {
        // The step runs on a rayon worker: the parallel kernels inside it then start on the
        // current thread instead of each waking the pool from outside (tens of µs apiece,
        // a fifth of the logreg's step).
        rayon::scope(|_| self.step_in_pool(model, data, indices, canaries))
    }

    fn step_in_pool(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
        canaries: Option<&mut GradientCanaries>,
    ) -> Result<StepStats> {
        real!(self.dtype, "DP step", |T| self
            .step_typed::<T>(model, data, indices, canaries))
    }

    fn step_typed<T: Real>(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
        mut canaries: Option<&mut GradientCanaries>,
    ) -> Result<StepStats> {
        let mut sums: Vec<Vec<T>> = self
            .params
            .iter()
            .map(|p| vec![T::zero(); p.elem_count()])
            .collect();
        let mut stats = StepStats {
            batch_size: indices.len(),
            ..StepStats::default()
        };
        // Seeded noise does not depend on the data: it is drawn while the traced passes
        // run (on a thread they leave idle: a gather, a sort, a serial loop), into buffers
        // of the parameters' sizes, from the same streams as after them (the same values).
        let early_noise = match (&self.noise, self.private) {
            (Noise::Fast(noise), true) => Some(noise.clone()),
            _ => None,
        };
        let sizes: Vec<usize> = sums.iter().map(Vec::len).collect();
        let this = &*self;
        let (passes, early_noise) = rayon::join(
            || -> Result<()> {
                for chunk in indices.chunks(this.max_physical_batch) {
                    this.accumulate::<T>(model, data, chunk, &mut sums, &mut stats)?;
                }
                Ok(())
            },
            || {
                early_noise.map(|mut noise| {
                    let draws: Vec<Vec<T>> = sizes
                        .iter()
                        .map(|&len| {
                            let mut draw = vec![T::zero(); len];
                            noise.add_to(&mut draw);
                            draw
                        })
                        .collect();
                    (noise, draws)
                })
            },
        );
        passes?;
        // Each step draws new dropout masks (the same for an example in any chunk).
        self.mask_seed = self.mask_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        if let Some(canaries) = canaries.as_deref_mut() {
            canaries.before_noise(&mut sums, self.clipping.clip_norm, self.private);
        }
        if let Some((noise, draws)) = early_noise {
            // The stream advanced as if the draws had been made here.
            self.noise = Noise::Fast(noise);
            for (sum, draw) in sums.iter_mut().zip(draws) {
                for (v, z) in sum.iter_mut().zip(draw) {
                    *v += z;
                }
            }
        } else if let (true, Noise::Secure(noise)) = (self.private, &mut self.noise) {
            // Secure noise rounds the sum itself to its grid: it cannot be drawn early.
            for sum in sums.iter_mut() {
                noise.add_to(sum)?;
            }
        }
        if let Some(canaries) = canaries {
            let noise_std = match self.private {
                true => self.noise_multiplier * self.clipping.clip_norm,
                false => 0.0,
            };
            canaries.after_noise(&sums, noise_std);
        }
        let mut grads = GradStore::default();
        for (param, mut sum) in self.params.iter().zip(sums) {
            let scale = T::of(1.0 / self.expected_batch_size);
            sum.iter_mut().for_each(|v| *v *= scale);
            let grad = Tensor::from_vec(sum, param.shape(), &Device::Cpu)?;
            grads.insert(param.as_tensor(), grad);
        }
        match &mut self.inner {
            Inner::Sgd(sgd) => sgd.step(&grads)?,
            Inner::Adam(adam) => adam.step(&grads)?,
        }
        Ok(stats)
    }

    /// Adds one physical chunk's clipped per-example gradients to `sums`.
    fn accumulate<T: Real>(
        &self,
        model: &dyn DpModule,
        data: &Dataset,
        chunk: &[usize],
        sums: &mut [Vec<T>],
        stats: &mut StepStats,
    ) -> Result<()> {
        let (x, labels) = training_batch(data, chunk)?;
        let ids = chunk.iter().map(|&i| i as u64).collect();
        let TracedPass { loss_sum, layers } =
            model.traced_pass(&x, &labels, ids, self.mask_seed)?;
        stats.loss_sum += loss_sum;
        let batch = chunk.len();
        // Per-example norms are needed only to clip (the baseline skips them).
        let per_example: Vec<PerExample> = if self.private {
            layers
                .iter()
                .map(|layer| layer.per_example(batch))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        // Clip factors per layer (the same vector for every layer under flat clipping),
        // computed in T and handed to the layers as f64 (exact).
        let per_layer_factors: Vec<Vec<f64>> = if !self.private {
            vec![vec![1.0; batch]; layers.len()]
        } else {
            match self.clipping.mode {
                ClippingMode::Flat => {
                    let c = T::of(self.clipping.clip_norm);
                    let factors: Vec<f64> = (0..batch)
                        .map(|i| {
                            let norm = per_example
                                .iter()
                                .map(|n| T::of(n.sq_norms[i]))
                                .sum::<T>()
                                .sqrt();
                            stats.clipped += usize::from(norm.is_finite() && norm > c);
                            stats.nonfinite += usize::from(!norm.is_finite());
                            clip_factor_of(norm, c).wide()
                        })
                        .collect();
                    vec![factors; layers.len()]
                }
                ClippingMode::PerLayer => {
                    let bounds = per_layer_clip_norms(self.clipping.clip_norm, layers.len());
                    per_example
                        .iter()
                        .zip(bounds)
                        .map(|(pe, bound)| {
                            pe.sq_norms
                                .iter()
                                .map(|&n| clip_factor_of(T::of(n).sqrt(), T::of(bound)).wide())
                                .collect()
                        })
                        .collect()
                }
            }
        };
        let mut param = 0;
        for (index, (layer, factors)) in layers.iter().zip(per_layer_factors).enumerate() {
            let Some(trace) = &layer.trace else {
                // Not in this pass: its per-example gradients, and so its sums, are zero.
                param += layer.layer.params().len();
                continue;
            };
            let sums_of_layer =
                layer
                    .layer
                    .clipped_sums(trace, per_example.get(index), &factors)?;
            for sum in sums_of_layer {
                let acc = sums.get_mut(param).ok_or_else(|| {
                    Error::Tensor(format!(
                        "{}: more parameter sums than the module's parameters",
                        layer.path
                    ))
                })?;
                let values = sum.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>()?;
                if values.len() != acc.len() {
                    return Err(Error::Tensor(format!(
                        "{}: a clipped sum of {} values for a parameter of {}",
                        layer.path,
                        values.len(),
                        acc.len()
                    )));
                }
                for (acc, v) in acc.iter_mut().zip(values) {
                    *acc += v;
                }
                param += 1;
            }
        }
        if param != sums.len() {
            return Err(Error::Tensor(format!(
                "the traced layers cover {param} of the module's {} parameters",
                sums.len()
            )));
        }
        Ok(())
    }
}
