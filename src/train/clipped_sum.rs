//! Stage 1 of the DP step: the clipped sum (Abadi et al. 2016, Alg. 1, lines "compute
//! gradient" and "clip gradient", summed).
//!
//! (model, batch) → one sum per parameter of the examples' gradients, each example scaled
//! to norm at most C, and the step's counts. Nothing here is private yet: the sums are
//! handed to a [`super::privatizer::Privatizer`] (centrally), all-reduced first (MPI), or
//! quantised and masked (secure aggregation). This stage owns what depends on the batch:
//! the physical chunking (virtual batches), the step's dropout masks, and the white-box
//! audit canaries, whose gradients join the sum before any noise.

use candle_core::{DType, Var};

use super::canaries::GradientCanaries;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::mechanism::{ClippingConfig, ClippingMode, clip_factor_of, per_layer_clip_norms};
use crate::model::{DpModule, PerExample, TracedPass, training_batch};
use crate::real::{Real, real};

/// One value per coordinate of each parameter, in the module's parameter order, in the
/// parameters' precision: the currency between the stages of the DP step.
#[derive(Debug, Clone, PartialEq)]
pub enum Sums {
    /// Sums of an f32 model.
    F32(Vec<Vec<f32>>),
    /// Sums of an f64 model.
    F64(Vec<Vec<f64>>),
}

impl Sums {
    /// Zeros of the given sizes in `dtype` (f32 or f64).
    pub fn zeros(sizes: &[usize], dtype: DType) -> Result<Sums> {
        real!(dtype, "sums", |T| Ok(zeros::<T>(sizes)))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Sums::F32(_) => DType::F32,
            Sums::F64(_) => DType::F64,
        }
    }

    /// The number of values of each parameter.
    pub fn sizes(&self) -> Vec<usize> {
        match self {
            Sums::F32(v) => v.iter().map(Vec::len).collect(),
            Sums::F64(v) => v.iter().map(Vec::len).collect(),
        }
    }

    /// Every value as an f64 (exact), parameter by parameter.
    pub fn to_f64(&self) -> Vec<Vec<f64>> {
        match self {
            Sums::F32(v) => v
                .iter()
                .map(|p| p.iter().map(|&x| f64::from(x)).collect())
                .collect(),
            Sums::F64(v) => v.clone(),
        }
    }

    /// The sums as `T`, read only; an error naming `op` when they are of the other
    /// precision.
    pub fn values<T: SumValue>(&self, op: &str) -> Result<&Vec<Vec<T>>> {
        T::unwrap_ref(self).ok_or_else(|| {
            Error::Tensor(format!(
                "{op}: sums in {:?}, expected {:?}",
                self.dtype(),
                T::DTYPE
            ))
        })
    }

    /// The sums as `T`; an error naming `op` when they are of the other precision.
    pub fn values_mut<T: SumValue>(&mut self, op: &str) -> Result<&mut Vec<Vec<T>>> {
        let dtype = self.dtype();
        T::unwrap_mut(self).ok_or_else(|| {
            Error::Tensor(format!("{op}: sums in {dtype:?}, expected {:?}", T::DTYPE))
        })
    }
}

fn zeros<T: SumValue>(sizes: &[usize]) -> Sums {
    T::wrap(sizes.iter().map(|&n| vec![T::zero(); n]).collect())
}

/// The element types [`Sums`] holds (f32, f64).
pub trait SumValue: Real {
    /// Wraps values of this type.
    fn wrap(values: Vec<Vec<Self>>) -> Sums;
    /// The values, when `sums` holds this type.
    fn unwrap_mut(sums: &mut Sums) -> Option<&mut Vec<Vec<Self>>>;
    /// The values, when `sums` holds this type.
    fn unwrap_ref(sums: &Sums) -> Option<&Vec<Vec<Self>>>;
    /// The values, when `sums` holds this type.
    fn unwrap(sums: Sums) -> Option<Vec<Vec<Self>>>;
}

impl SumValue for f32 {
    fn wrap(values: Vec<Vec<f32>>) -> Sums {
        Sums::F32(values)
    }
    fn unwrap_mut(sums: &mut Sums) -> Option<&mut Vec<Vec<f32>>> {
        match sums {
            Sums::F32(v) => Some(v),
            Sums::F64(_) => None,
        }
    }
    fn unwrap_ref(sums: &Sums) -> Option<&Vec<Vec<f32>>> {
        match sums {
            Sums::F32(v) => Some(v),
            Sums::F64(_) => None,
        }
    }
    fn unwrap(sums: Sums) -> Option<Vec<Vec<f32>>> {
        match sums {
            Sums::F32(v) => Some(v),
            Sums::F64(_) => None,
        }
    }
}

impl SumValue for f64 {
    fn wrap(values: Vec<Vec<f64>>) -> Sums {
        Sums::F64(values)
    }
    fn unwrap_mut(sums: &mut Sums) -> Option<&mut Vec<Vec<f64>>> {
        match sums {
            Sums::F64(v) => Some(v),
            Sums::F32(_) => None,
        }
    }
    fn unwrap_ref(sums: &Sums) -> Option<&Vec<Vec<f64>>> {
        match sums {
            Sums::F64(v) => Some(v),
            Sums::F32(_) => None,
        }
    }
    fn unwrap(sums: Sums) -> Option<Vec<Vec<f64>>> {
        match sums {
            Sums::F64(v) => Some(v),
            Sums::F32(_) => None,
        }
    }
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

/// Stage 1: traced passes over physical chunks, per-example norms, clip factors, sums.
#[derive(Debug, Clone)]
pub struct ClippedSum {
    clipping: ClippingConfig,
    max_physical_batch: usize,
    /// False for the non-private baseline: factors 1, no norms.
    private: bool,
    /// Seed of the current step's dropout masks (model randomness, not privacy noise).
    mask_seed: u64,
    /// The parameters' sizes, in order.
    sizes: Vec<usize>,
    /// The parameters' dtype: norms, factors and sums run in it.
    dtype: DType,
}

impl ClippedSum {
    /// The stage for `params` (a module's trainable parameters, one precision), clipping
    /// as `clipping` says (ignored when `private` is false: the baseline's factors are 1),
    /// in chunks of at most `max_physical_batch`, dropout masks from `mask_seed`.
    pub fn new(
        params: &[Var],
        clipping: ClippingConfig,
        max_physical_batch: usize,
        private: bool,
        mask_seed: u64,
    ) -> Result<Self> {
        clipping.validate()?;
        if max_physical_batch == 0 {
            return Err(Error::invalid(
                "training.max_physical_batch",
                0,
                "at least 1",
            ));
        }
        let dtype = params.first().map_or(DType::F32, |p| p.dtype());
        if let Some(other) = params.iter().find(|p| p.dtype() != dtype) {
            return Err(Error::Tensor(format!(
                "the module's parameters mix {dtype:?} and {:?}: one precision per model",
                other.dtype()
            )));
        }
        Ok(ClippedSum {
            clipping,
            max_physical_batch,
            private,
            mask_seed,
            sizes: params.iter().map(|p| p.elem_count()).collect(),
            dtype,
        })
    }

    /// The clipping of the next steps.
    pub fn clipping(&self) -> ClippingConfig {
        self.clipping
    }

    /// Sets the clip norm of the next steps (schedules, adaptive clipping).
    pub fn set_clip_norm(&mut self, clip_norm: f64) -> Result<()> {
        let clipping = ClippingConfig {
            clip_norm,
            ..self.clipping
        };
        clipping.validate()?;
        self.clipping = clipping;
        Ok(())
    }

    /// The parameters' sizes, in order.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The clipped sums of the examples `indices` of `data` (a Poisson batch; may be empty:
    /// zeros), with audit canaries' gradients added when given.
    ///
    /// # Privacy
    /// Every example's contribution to the sums has L2 norm at most C (flat) or C/√L per
    /// layer (per-layer clipping, Σ C_l² = C²), so the sums have L2 sensitivity C under
    /// add/remove-one. Nothing is private yet: the result must be noised before release.
    pub fn compute(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
        canaries: Option<&mut GradientCanaries>,
    ) -> Result<(Sums, StepStats)> {
        real!(self.dtype, "clipped sum", |T| self
            .compute_typed::<T>(model, data, indices, canaries))
    }

    fn compute_typed<T: SumValue>(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
        canaries: Option<&mut GradientCanaries>,
    ) -> Result<(Sums, StepStats)> {
        let (mut sums, stats) = self.part_typed::<T>(model, data, indices)?;
        self.next_step();
        if let Some(canaries) = canaries {
            canaries.before_noise(&mut sums, self.clipping.clip_norm, self.private);
        }
        Ok((T::wrap(sums), stats))
    }

    /// The clipped sums of one step's batch computed as separate parts: `each` receives
    /// the sums and statistics of every part of `parts` in turn (a rank's parts of a
    /// distributed step, [`super::dist`]). Dropout masks are the step's, whichever parts
    /// a caller computes, so the parts of one step computed on several ranks are the parts
    /// one process would compute.
    ///
    /// # Privacy
    /// As [`ClippedSum::compute`], per example: each part's sums are a sum of clipped
    /// gradients; nothing is private yet.
    pub fn compute_parts(
        &mut self,
        model: &dyn DpModule,
        data: &Dataset,
        parts: &[&[usize]],
        each: &mut dyn FnMut(Sums, StepStats) -> Result<()>,
    ) -> Result<()> {
        for part in parts {
            let (sums, stats) = real!(self.dtype, "clipped sum", |T| self
                .part_typed::<T>(model, data, part)
                .map(|(sums, stats)| (T::wrap(sums), stats)))?;
            each(sums, stats)?;
        }
        self.next_step();
        Ok(())
    }

    /// The clipped sums of `indices`, in physical chunks (the step's masks).
    fn part_typed<T: SumValue>(
        &self,
        model: &dyn DpModule,
        data: &Dataset,
        indices: &[usize],
    ) -> Result<(Vec<Vec<T>>, StepStats)> {
        let mut sums: Vec<Vec<T>> = self.sizes.iter().map(|&n| vec![T::zero(); n]).collect();
        let mut stats = StepStats {
            batch_size: indices.len(),
            ..StepStats::default()
        };
        for chunk in indices.chunks(self.max_physical_batch) {
            self.accumulate::<T>(model, data, chunk, &mut sums, &mut stats)?;
        }
        Ok((sums, stats))
    }

    /// Each step draws new dropout masks (the same for an example in any chunk or part).
    fn next_step(&mut self) {
        self.mask_seed = self.mask_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
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
