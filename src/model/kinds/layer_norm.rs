//! `layer_norm` (Ba et al. 2016) and `rms_norm` (Zhang & Sennrich 2019) over the last axis
//! of (D) or (T, D) inputs: each position is normalised over its D values, then scaled
//! by γ (and, for layer_norm, shifted by β).
//!
//! Per-example rule (Opacus `layer_norm.py`, `rms_norm.py`), materialised (O(D) per
//! example): ∇γ_i = Σ_t x̂_t ⊙ g_t, ∇β_i = Σ_t g_t. Backward per position with ĝ = g ⊙ γ:
//! layer_norm ∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) / σ; rms_norm ∂x = (ĝ − x̂·mean(ĝ ⊙ x̂)) / r.

use candle_core::{Tensor, Var};

use super::{Materialised, detached, materialised_norms, materialised_sums, refuse};
use crate::error::Result;
use crate::model::layer::{Context, Layer, NormMode, Param, PerExample, Saved, Trace, unsave};

/// Layer or RMS normalisation over the last axis.
#[derive(Debug)]
pub struct LayerNorm {
    /// Added to the variance (mean square for rms_norm).
    pub eps: f64,
    /// Scale γ (D).
    pub gamma: Var,
    /// Shift β (D); none for rms_norm.
    pub beta: Option<Var>,
    input: Vec<usize>,
}

struct NormSaved {
    normalised: Tensor,
    inv: Tensor,
}

impl LayerNorm {
    /// Over inputs `input` (…, D); `rms` for RMS normalisation (no centring, no β).
    pub fn new(input: &[usize], eps: f64, rms: bool, dtype: candle_core::DType) -> Result<Self> {
        let d = *input
            .last()
            .ok_or_else(|| refuse("an input with at least one axis"))?;
        let cpu = &candle_core::Device::Cpu;
        let var = |t: candle_core::Result<Tensor>| -> Result<Var> {
            Ok(t.and_then(|t| Var::from_tensor(&t))?)
        };
        Ok(LayerNorm {
            eps,
            gamma: var(Tensor::ones(d, dtype, cpu))?,
            beta: match rms {
                true => None,
                false => Some(var(Tensor::zeros(d, dtype, cpu))?),
            },
            input: input.to_vec(),
        })
    }

    fn width(&self) -> usize {
        *self.input.last().expect("checked in new")
    }

    fn rows(&self) -> usize {
        self.input[..self.input.len() - 1]
            .iter()
            .product::<usize>()
            .max(1)
    }

    /// x̂ (B, R, D) and 1/σ (B, R, 1).
    fn normalise(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, r, d) = (x.dim(0)?, self.rows(), self.width());
        let x = x.reshape((b, r, d))?;
        let x = match self.beta {
            Some(_) => x.broadcast_sub(&x.mean_keepdim(2)?)?,
            None => x,
        };
        let inv = (x.sqr()?.mean_keepdim(2)? + self.eps)?.sqrt()?.recip()?;
        Ok((x.broadcast_mul(&inv)?, inv))
    }

    fn affine(
        &self,
        normalised: &Tensor,
        gamma: &Tensor,
        beta: Option<Tensor>,
        dims: &[usize],
    ) -> Result<Tensor> {
        let y = normalised.broadcast_mul(gamma)?;
        let y = match beta {
            Some(beta) => y.broadcast_add(&beta)?,
            None => y,
        };
        Ok(y.reshape(dims)?)
    }
}

impl Layer for LayerNorm {
    fn kind(&self) -> &'static str {
        match self.beta {
            Some(_) => "layer_norm",
            None => "rms_norm",
        }
    }

    fn output_shape(&self) -> &[usize] {
        &self.input
    }

    fn params(&self) -> Vec<Param> {
        super::weight_and_bias(&self.gamma, self.beta.as_ref())
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let (normalised, _) = self.normalise(x)?;
        let beta = self.beta.as_ref().map(|b| b.as_tensor().clone());
        self.affine(&normalised, self.gamma.as_tensor(), beta, x.dims())
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let (normalised, inv) = self.normalise(x)?;
        let y = self.affine(
            &normalised,
            &detached(&self.gamma),
            self.beta.as_ref().map(detached),
            x.dims(),
        )?;
        Ok((y, Box::new(NormSaved { normalised, inv })))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let NormSaved { normalised, inv } = unsave(saved, self.kind())?;
        let (b, r, d) = (grad.dim(0)?, self.rows(), self.width());
        let dims = grad.dims().to_vec();
        let grad = grad.reshape((b, r, d))?;
        let trace = match trace {
            true => {
                let mut grads = vec![(&grad * &normalised)?.sum(1)?];
                if self.beta.is_some() {
                    grads.push(grad.sum(1)?);
                }
                Some(Trace(Box::new(Materialised(grads))))
            }
            false => None,
        };
        let input_grad = match input_grad {
            true => {
                let scaled = grad.broadcast_mul(&detached(&self.gamma))?;
                let mean_gx = (&scaled * &normalised)?.mean_keepdim(2)?;
                let mut gx = scaled.sub(&normalised.broadcast_mul(&mean_gx)?)?;
                if self.beta.is_some() {
                    gx = gx.broadcast_sub(&scaled.mean_keepdim(2)?)?;
                }
                Some(gx.broadcast_mul(&inv)?.reshape(dims)?)
            }
            false => None,
        };
        Ok((input_grad, trace))
    }

    fn per_example(&self, trace: &Trace, _: NormMode) -> Result<PerExample> {
        materialised_norms(trace.get::<Materialised>(self.kind())?)
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        materialised_sums(trace.get::<Materialised>(self.kind())?, factors)
    }

    fn rule(&self, _: NormMode) -> String {
        "instantiate (O(D))".into()
    }

    fn macs(&self) -> usize {
        4 * self.input.iter().product::<usize>()
    }
}
