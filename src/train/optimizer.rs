//! The DP optimizer: the composition of the three stages of the DP step (Abadi et al.
//! 2016, Alg. 1; the same order as Opacus's `DPOptimizer.pre_step`):
//!
//! 1. [`ClippedSum`]: traced passes over physical chunks of the Poisson batch (virtual
//!    batches), per-example norms, clip factors, per-parameter sums, audit canaries;
//! 2. a [`Privatizer`]: noise once per logical step, drawn while stage 1 runs when it does
//!    not depend on the data;
//! 3. [`Update`]: ÷ the *expected* batch size q·N, then the inner optimizer, which sees only
//!    privatised gradients (its momentum or Adam moments are post-processing).
//!
//! Federated clients, MPI ranks and secure aggregation call the stages one by one; a test
//! (tests/it/dp_step.rs) checks that doing so by hand gives [`DpOptimizer::step`]'s
//! parameters bit for bit.

use candle_core::Var;

use super::canaries::GradientCanaries;
use super::clipped_sum::{ClippedSum, StepStats, Sums};
use super::dist::{Distributed, FixedSums};
use super::inner::{OptimizerConfig, OptimizerState, Update};
use super::privatizer::{GaussianPrivatizer, NoNoise, Privatizer, SecurePrivatizer};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::ClippingConfig;
use crate::model::DpModule;

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

/// DP-SGD around an inner optimizer: [`ClippedSum`] → [`Privatizer`] → [`Update`].
pub struct DpOptimizer {
    params: Vec<Var>,
    clipped_sum: ClippedSum,
    privatizer: Box<dyn Privatizer>,
    update: Update,
    noise_multiplier: f64,
    private: bool,
    /// Set when the step is spread over ranks ([`DpOptimizer::distribute`]).
    dist: Option<DistState>,
}

/// A distributed optimizer's group and clip norms.
struct DistState {
    dist: Distributed,
    /// C'/C: examples are clipped below C to pay for the fixed-point rounding.
    clip_factor: f64,
    /// C, the sensitivity the noise is calibrated to (and the grid's unit).
    clip_norm: f64,
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
        let params = model.parameters();
        let mask_seed = match noise {
            NoiseMode::Seeded(seed) => seed ^ 0x6d61_736b_7365_6564,
            NoiseMode::Secure => 0,
        };
        let clipped_sum =
            ClippedSum::new(&params, clipping, max_physical_batch, private, mask_seed)?;
        let update = Update::new(expected_batch_size, optimizer.build(&params)?)?;
        let privatizer: Box<dyn Privatizer> = match (noise, private) {
            (NoiseMode::Seeded(seed), true) => Box::new(GaussianPrivatizer::new(
                noise_multiplier,
                clipping.clip_norm,
                seed,
            )?),
            (NoiseMode::Seeded(_), false) => Box::new(NoNoise),
            (NoiseMode::Secure, true) => Box::new(SecurePrivatizer::new(
                params.iter().map(|p| p.elem_count()).sum(),
                noise_multiplier,
                clipping.clip_norm,
            )?),
            (NoiseMode::Secure, false) => {
                return Err(Error::invalid(
                    "privacy.secure_noise",
                    true,
                    "a private run (a non-private baseline adds no noise)",
                ));
            }
        };
        Ok(DpOptimizer::from_stages(
            params,
            clipped_sum,
            privatizer,
            update,
            noise_multiplier,
            private,
        ))
    }

    /// A DP optimizer from its stages (the parameters those stages were made for).
    pub fn from_stages(
        params: Vec<Var>,
        clipped_sum: ClippedSum,
        privatizer: Box<dyn Privatizer>,
        update: Update,
        noise_multiplier: f64,
        private: bool,
    ) -> Self {
        DpOptimizer {
            params,
            clipped_sum,
            privatizer,
            update,
            noise_multiplier,
            private,
            dist: None,
        }
    }

    /// Spreads every following step over `dist`'s ranks (`super::dist`): each rank computes
    /// its parts of the batch, the ranks add their fixed-point sums, and every rank adds
    /// the same noise. Examples are clipped to C' slightly below C from now on, so that the
    /// rounded sum keeps sensitivity C. Every rank's optimizer must be built alike, with
    /// the same seeded noise (the trainer refuses secure mode, whose noise comes from each
    /// machine's operating system).
    pub fn distribute(&mut self, dist: Distributed) -> Result<()> {
        let clip_norm = self.clipped_sum.clipping().clip_norm;
        let clip_factor = dist.clip_factor(self.clipped_sum.sizes().iter().sum());
        self.clipped_sum.set_clip_norm(clip_norm * clip_factor)?;
        self.dist = Some(DistState {
            dist,
            clip_factor,
            clip_norm,
        });
        Ok(())
    }

    /// The group of a distributed optimizer.
    pub fn distributed(&self) -> Option<&Distributed> {
        self.dist.as_ref().map(|state| &state.dist)
    }

    /// The parameters it trains, in order.
    pub fn params(&self) -> &[Var] {
        &self.params
    }

    /// Stage 1.
    pub fn clipped_sum(&self) -> &ClippedSum {
        &self.clipped_sum
    }

    /// Stage 2.
    pub fn privatizer(&self) -> &dyn Privatizer {
        self.privatizer.as_ref()
    }

    /// Stage 3.
    pub fn update(&self) -> &Update {
        &self.update
    }

    /// The noise multiplier σ of the next step.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// Sets the gradient noise multiplier and the clip norm of the next steps (schedules,
    /// adaptive clipping): noise of standard deviation `noise_multiplier · clip_norm` on the
    /// sum of gradients clipped to `clip_norm`.
    pub fn set_noise_and_clip(&mut self, noise_multiplier: f64, clip_norm: f64) -> Result<()> {
        ClippingConfig {
            clip_norm,
            ..self.clipped_sum.clipping()
        }
        .validate()?;
        if self.private {
            if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
                return Err(Error::invalid(
                    "noise_multiplier",
                    noise_multiplier,
                    "a finite number above 0",
                ));
            }
            self.privatizer.set_noise(noise_multiplier, clip_norm)?;
        }
        match &mut self.dist {
            Some(state) => {
                self.clipped_sum
                    .set_clip_norm(clip_norm * state.clip_factor)?;
                state.clip_norm = clip_norm;
            }
            None => self.clipped_sum.set_clip_norm(clip_norm)?,
        }
        self.noise_multiplier = noise_multiplier;
        Ok(())
    }

    /// Sets the learning rate (learning-rate schedules cost no privacy).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.update.inner_mut().set_learning_rate(learning_rate);
    }

    /// The inner optimizer's state and the noise stream's position, for checkpoints.
    pub fn state(&self) -> (OptimizerState, u64) {
        (self.update.inner().state(), self.privatizer.position())
    }

    /// Continues the noise stream after `calls` draws (a silo resuming its own stream in
    /// the next round: noise is never reused).
    pub fn seek_noise(&mut self, calls: u64) {
        self.privatizer.seek(calls);
    }

    /// Restores [`DpOptimizer::state`]; errors if a tensor is missing or misshapen.
    pub fn restore(&mut self, state: &OptimizerState, noise_calls: u64) -> Result<()> {
        self.update.inner_mut().restore(&self.params, state)?;
        self.privatizer.seek(noise_calls);
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
        if self.dist.is_some() {
            if canaries.is_some() {
                return Err(Error::Usage(
                    "audit canaries in a distributed run: audit with one process".into(),
                ));
            }
            return self.step_distributed(model, data, indices);
        }
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
        mut canaries: Option<&mut GradientCanaries>,
    ) -> Result<StepStats> {
        // Noise that does not depend on the data is drawn while the traced passes run (on
        // a thread they leave idle: a gather, a sort, a serial loop), from the same stream
        // as after them (the same values).
        let (clipped_sum, privatizer) = (&mut self.clipped_sum, &mut self.privatizer);
        let (sizes, dtype) = (clipped_sum.sizes().to_vec(), clipped_sum.dtype());
        let (summed, ahead) = rayon::join(
            || clipped_sum.compute(model, data, indices, canaries.as_deref_mut()),
            || privatizer.draw_ahead(&sizes, dtype),
        );
        let (mut sums, stats) = summed?;
        self.privatizer.privatize(&mut sums, ahead?)?;
        if let Some(canaries) = canaries {
            let noise_std = match self.private {
                true => self.noise_multiplier * self.clipped_sum.clipping().clip_norm,
                false => 0.0,
            };
            match &sums {
                Sums::F32(values) => canaries.after_noise(values, noise_std),
                Sums::F64(values) => canaries.after_noise(values, noise_std),
            }
        }
        self.update.apply(&self.params, sums)?;
        Ok(stats)
    }

    /// One step spread over the ranks of [`DpOptimizer::distribute`]: this rank's parts
    /// of `indices` (the whole Poisson batch, the same on every rank) are clipped, summed
    /// and rounded to the grid while the noise is drawn; one all-reduce (on the calling
    /// thread, which MPI requires) adds the ranks' integers; then the noise and the update,
    /// the same on every rank.
    ///
    /// # Privacy
    /// The reduced sum has L2 sensitivity C (`super::dist`: examples clipped to C'); the
    /// noise N(0, (σC)²) is added once, as in [`DpOptimizer::step`].
    fn step_distributed(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
    ) -> Result<StepStats> {
        let Some(state) = &self.dist else {
            return Err(Error::Usage("a distributed step without a group".into()));
        };
        let (clipped_sum, privatizer) = (&mut self.clipped_sum, &mut self.privatizer);
        let (sizes, dtype) = (clipped_sum.sizes().to_vec(), clipped_sum.dtype());
        let parts = state.dist.my_parts(indices);
        let (fixed, ahead) = rayon::scope(|_| {
            rayon::join(
                || -> Result<FixedSums> {
                    let mut fixed = FixedSums::new(&sizes, state.clip_norm)?;
                    clipped_sum.compute_parts(model, data, &parts, &mut |sums, stats| {
                        fixed.add_part(&sums, &stats)
                    })?;
                    Ok(fixed)
                },
                || privatizer.draw_ahead(&sizes, dtype),
            )
        });
        let mut fixed = fixed?;
        state.dist.collective().all_reduce_sum(fixed.values_mut())?;
        // Back on the pool: the element-wise kernels then start without waking it.
        let (privatizer, update, params) = (&mut self.privatizer, &mut self.update, &self.params);
        rayon::scope(|_| {
            let (mut sums, stats) = fixed.into_sums(&sizes, dtype)?;
            privatizer.privatize(&mut sums, ahead?)?;
            update.apply(params, sums)?;
            Ok(stats)
        })
    }
}
