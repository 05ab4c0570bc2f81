//! The layer-kind trait: what one kind of layer must provide to be trained with DP-SGD.
//!
//! A kind gives four things (design.md section 2; generality.md section 5.1 has each kind's
//! formulas):
//! 1. a differentiable forward pass ([`Layer::forward`]: evaluation, and tier 3's
//!    autograd), and its reference ([`Layer::reference_forward`]): the same function
//!    built from candle's own ops only, which every test of the DP path differentiates
//!    with candle's autograd;
//! 2. a training forward that saves what its backward needs ([`Layer::train_forward`]);
//! 3. a hand-written backward ([`Layer::backward`]): the input gradient, and for a layer
//!    with parameters a [`Trace`] (what its per-example rule reads: the input as it
//!    multiplies the weight and the output gradient, or the per-example gradients
//!    themselves when they are cheap);
//! 4. its per-example rule: squared norms ([`Layer::per_example`]) and clipped sums
//!    Σ_i c_i ∇θ_i ([`Layer::clipped_sums`]), shaped like its parameters.
//!
//! A new kind is one file in `kinds/` plus its entry in `kinds::build` and in the table of
//! tests/it/layers.rs, which checks 1-4 against batch-size-1 autograd passes.

use std::any::Any;
use std::fmt::Debug;

use candle_core::{Tensor, Var};

pub use crate::grad_sample::linear::NormMode;

use crate::error::{Error, Result};

/// What a training forward saved for the backward of the same layer.
pub type Saved = Box<dyn Any + Send + Sync>;

/// What one layer's backward left for its per-example rule.
pub struct Trace(pub Box<dyn Any + Send + Sync>);

impl Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trace(..)")
    }
}

impl Trace {
    /// The trace as the layer kind stored it (an error if another kind's trace was passed).
    pub fn get<T: 'static>(&self, kind: &str) -> Result<&T> {
        self.0
            .downcast_ref::<T>()
            .ok_or_else(|| Error::Tensor(format!("{kind}: a trace of another layer kind")))
    }
}

/// A layer's per-example squared norms, and whatever it computed on the way that its
/// clipped sums can reuse (materialised per-example gradients).
pub struct PerExample {
    /// ‖∇θ_i‖² over this layer's parameters, one per example (computed in the layer's
    /// dtype; an f32 value is held exactly).
    pub sq_norms: Vec<f64>,
    /// Kind-specific state for [`Layer::clipped_sums`].
    pub state: Option<Box<dyn Any + Send + Sync>>,
}

impl Debug for PerExample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerExample")
            .field("sq_norms", &self.sq_norms)
            .finish_non_exhaustive()
    }
}

/// What every layer of one pass may read besides its input.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Training (dropout active) or evaluation.
    pub train: bool,
    /// 1 at real tokens, 0 at padding, (B, T), for token inputs.
    pub token_mask: Option<Tensor>,
    /// Each example's identity (its index in the data set), so that random masks depend
    /// on the example and the step only, never on which other examples share the batch.
    pub example_ids: Vec<u64>,
    /// Seed of this pass's random masks (dropout): one per step.
    pub mask_seed: u64,
}

/// One named parameter of a layer.
#[derive(Debug, Clone)]
pub struct Param {
    /// "weight", "bias", "gamma", ...: the last segment of its safetensors name.
    pub name: &'static str,
    /// The values.
    pub var: Var,
}

/// One layer kind (see the module).
pub trait Layer: Debug + Send + Sync {
    /// The kind's name in configs (`conv2d`, `group_norm`, ...).
    fn kind(&self) -> &'static str;

    /// Shape of one example's output (without the batch axis).
    fn output_shape(&self) -> &[usize];

    /// The parameters in a fixed order (their gradients come back in this order).
    fn params(&self) -> Vec<Param> {
        Vec::new()
    }

    /// Differentiable forward pass (candle autograd); it may use dptrain's fused kernels
    /// (custom ops whose backward is written here).
    fn forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor>;

    /// The same function as [`Layer::forward`], built from candle's own ops only (no
    /// dptrain custom op, hence no hand-written backward): the reference that the tests
    /// differentiate with candle's autograd and compare the hand-written backward with. A
    /// reference that ran through a kind's own kernel would compare that kernel with
    /// itself. There is no default: each kind says what its reference is (for most, its
    /// forward, which is already plain candle).
    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor>;

    /// Forward pass of a training step, keeping what [`Layer::backward`] needs.
    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)>;

    /// The input gradient from the output gradient `grad` (when `input_grad`), and the
    /// trace of the per-example rule (when `trace`; layers with parameters only).
    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)>;

    /// Per-example squared gradient norms from a trace.
    fn per_example(&self, _trace: &Trace, _mode: NormMode) -> Result<PerExample> {
        Err(Error::Tensor(format!("{}: no parameters", self.kind())))
    }

    /// Σ_i c_i ∇θ_i for clip factors `factors` (B; rounded to the layer's dtype), one
    /// tensor per parameter, in [`Layer::params`] order; `per_example` is this layer's
    /// [`Layer::per_example`] result when it was computed.
    fn clipped_sums(
        &self,
        _trace: &Trace,
        _per_example: Option<&PerExample>,
        _factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        Err(Error::Tensor(format!("{}: no parameters", self.kind())))
    }

    /// How the per-example norms are computed, for `model show` (given the mode chosen).
    fn rule(&self, _mode: NormMode) -> String {
        "-".into()
    }

    /// Multiply-adds of the forward pass of one example (an estimate for `model show`).
    fn macs(&self) -> usize {
        0
    }
}

/// Saved state of a layer whose backward needs nothing.
pub fn nothing() -> Saved {
    Box::new(())
}

/// Takes back a layer's saved state (an error if another kind's state was passed).
pub fn unsave<T: 'static>(saved: Saved, kind: &str) -> Result<T> {
    saved
        .downcast::<T>()
        .map(|b| *b)
        .map_err(|_| Error::Tensor(format!("{kind}: saved state of another layer kind")))
}
