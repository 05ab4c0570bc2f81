//! `linear`: y = x Wᵀ + b over the last axis of (B, d) or a sequence (B, T, d).
//!
//! Per-example rule (`grad_sample::linear`): ‖a‖²‖g‖² for T = 1 (Goodfellow 2015); for a
//! sequence the ghost norm ⟨A Aᵀ, G Gᵀ⟩ (Li et al. 2022) or materialised G_iᵀ A_i, chosen
//! by cost per layer (fastDP's mixed rule) unless the layer's `norm` says otherwise.

use candle_core::{Tensor, Var};

use super::{detached, uniform};
use crate::error::Result;
use crate::grad_sample::linear::{self as rule, NormMode};
use crate::grad_sample::wide_values;
use crate::model::layer::{Context, Layer, Param, PerExample, Saved, Trace, unsave};

/// A linear layer.
#[derive(Debug)]
pub struct Linear {
    /// (out, in).
    pub weight: Var,
    /// (out), unless built with `bias = false`.
    pub bias: Option<Var>,
    output_shape: Vec<usize>,
}

/// Input A and output gradient G, (B, d) / (B, p) or (B, T, d) / (B, T, p).
pub(crate) struct LinearTrace {
    pub(crate) input: Tensor,
    pub(crate) output_grad: Tensor,
}

impl Linear {
    /// A layer from the last axis of `input_shape` to `outputs`, PyTorch's init.
    pub fn new(
        input_shape: &[usize],
        outputs: usize,
        bias: bool,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let inputs = *input_shape.last().unwrap_or(&0);
        let weight = uniform(&[outputs, inputs], inputs, dtype, rng)?;
        let bias = match bias {
            true => Some(uniform(&[outputs], inputs, dtype, rng)?),
            false => None,
        };
        let mut output_shape = input_shape.to_vec();
        if let Some(last) = output_shape.last_mut() {
            *last = outputs;
        }
        Ok(Linear {
            weight,
            bias,
            output_shape,
        })
    }

    fn apply(&self, x: &Tensor, weight: &Tensor, bias: Option<Tensor>) -> Result<Tensor> {
        let y = match x.rank() {
            2 => x.matmul(&weight.t()?)?,
            _ => {
                // (B·T, d) · Wᵀ: one product instead of B broadcast ones.
                let dims = x.dims().to_vec();
                let rows = dims[..dims.len() - 1].iter().product::<usize>();
                let mut out = dims.clone();
                *out.last_mut().expect("rank ≥ 2") = weight.dim(0)?;
                x.reshape((rows, dims[dims.len() - 1]))?
                    .matmul(&weight.t()?)?
                    .reshape(out)?
            }
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(&b)?,
            None => y,
        })
    }
}

impl Layer for Linear {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn params(&self) -> Vec<Param> {
        super::weight_and_bias(&self.weight, self.bias.as_ref())
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| b.as_tensor().clone());
        self.apply(x, self.weight.as_tensor(), bias)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let y = self.apply(x, &detached(&self.weight), self.bias.as_ref().map(detached))?;
        Ok((y, Box::new(x.clone())))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let input: Tensor = unsave(saved, "linear")?;
        let input_grad = match input_grad {
            true => Some(self.apply(&grad, &detached(&self.weight).t()?, None)?),
            false => None,
        };
        let trace = trace.then(|| {
            Trace(Box::new(LinearTrace {
                input,
                output_grad: grad,
            }))
        });
        Ok((input_grad, trace))
    }

    fn per_example(&self, trace: &Trace, mode: NormMode) -> Result<PerExample> {
        let t: &LinearTrace = trace.get("linear")?;
        let pe = rule::per_example_with(&t.input, &t.output_grad, self.bias.is_some(), mode)?;
        Ok(PerExample {
            sq_norms: wide_values(&pe.sq_norms)?,
            state: Some(Box::new(pe)),
        })
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        per_example: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let t: &LinearTrace = trace.get("linear")?;
        let (weight, bias) = clipped(t, per_example, factors)?;
        Ok(match self.bias {
            Some(_) => vec![weight, bias],
            None => vec![weight],
        })
    }

    fn rule(&self, mode: NormMode) -> String {
        let (d, p) = (
            self.weight.dim(1).unwrap_or(0),
            self.weight.dim(0).unwrap_or(0),
        );
        let positions = sequence_length(&self.output_shape);
        rule_name(positions, d, p, mode)
    }

    fn macs(&self) -> usize {
        sequence_length(&self.output_shape) * self.weight.elem_count()
    }
}

/// Positions T of a layer's output (1 for a plain (B, p) output).
fn sequence_length(output_shape: &[usize]) -> usize {
    output_shape[..output_shape.len().saturating_sub(1)]
        .iter()
        .product::<usize>()
        .max(1)
}

/// The rule a linear map over T positions uses, for `model show`.
pub(crate) fn rule_name(t: usize, d: usize, p: usize, mode: NormMode) -> String {
    if t <= 1 {
        "‖a‖²‖g‖²".into()
    } else if mode.materialises(t, d, p) {
        format!("instantiate (T {t})")
    } else {
        format!("ghost (T {t})")
    }
}

/// The linear rule's clipped sums (weight, bias), reusing materialised gradients.
pub(crate) fn clipped(
    t: &LinearTrace,
    per_example: Option<&PerExample>,
    factors: &[f64],
) -> Result<(Tensor, Tensor)> {
    // The factors in the layer's dtype (f32 factors came from f32 values: exact).
    let factors = Tensor::from_vec(factors.to_vec(), factors.len(), &candle_core::Device::Cpu)?
        .to_dtype(t.input.dtype())?;
    let state = per_example
        .and_then(|pe| pe.state.as_ref())
        .and_then(|s| s.downcast_ref::<rule::PerExample>());
    match state {
        Some(pe) => rule::clipped_sums_with(pe, &t.input, &t.output_grad, &factors),
        None => rule::clipped_sums(&t.input, &t.output_grad, &factors),
    }
}
