//! `group_norm` (Wu & He 2018) and `instance_norm` (= group_norm with one channel per
//! group): per example, the channels of each group are normalised over the group's
//! values, then scaled by γ_c and shifted by β_c. No statistic crosses examples, which is
//! why it replaces batch norm under DP (Opacus's fix: groups = gcd(32, C)).
//!
//! Per-example rule (Opacus `group_norm.py`), materialised because it is O(C) per example:
//! ∇γ_i[c] = Σ_{positions of c} x̂·g, ∇β_i[c] = Σ_{positions of c} g.
//! Backward, per group of m values with x̂ = (x − μ)/σ and ĝ = g·γ:
//! ∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ.

use candle_core::{Tensor, Var};

use super::{Materialised, detached, materialised_norms, materialised_sums};
use crate::error::Result;
use crate::model::layer::{Context, Layer, NormMode, Param, PerExample, Saved, Trace, unsave};

/// Group normalisation over inputs (C, ...).
#[derive(Debug)]
pub struct GroupNorm {
    /// Number of groups (C for instance_norm).
    pub groups: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Scale γ (C).
    pub gamma: Var,
    /// Shift β (C).
    pub beta: Var,
    input: Vec<usize>,
    instance: bool,
}

struct NormSaved {
    normalised: Tensor,
    inv_std: Tensor,
}

impl GroupNorm {
    /// `groups` groups over inputs of `input` (C, ...); γ = 1, β = 0 as in PyTorch.
    pub fn new(
        input: &[usize],
        groups: usize,
        eps: f64,
        instance: bool,
    ) -> std::result::Result<Self, String> {
        let channels = input[0];
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(format!(
                "groups = {groups} must divide the {channels} channels"
            ));
        }
        let ones = Tensor::ones(channels, candle_core::DType::F32, &candle_core::Device::Cpu);
        let zeros = Tensor::zeros(channels, candle_core::DType::F32, &candle_core::Device::Cpu);
        let var = |t: candle_core::Result<Tensor>| {
            t.and_then(|t| Var::from_tensor(&t))
                .map_err(|e| e.to_string())
        };
        Ok(GroupNorm {
            groups,
            eps,
            gamma: var(ones)?,
            beta: var(zeros)?,
            input: input.to_vec(),
            instance,
        })
    }

    fn channels(&self) -> usize {
        self.input[0]
    }

    fn positions(&self) -> usize {
        self.input[1..].iter().product::<usize>().max(1)
    }

    /// x̂ (B, C, S) and 1/σ (B, G, 1).
    fn normalise(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, c, s) = (x.dim(0)?, self.channels(), self.positions());
        let grouped = x.reshape((b, self.groups, c / self.groups * s))?;
        let centred = grouped.broadcast_sub(&grouped.mean_keepdim(2)?)?;
        let inv_std = (centred.sqr()?.mean_keepdim(2)? + self.eps)?
            .sqrt()?
            .recip()?;
        let normalised = centred.broadcast_mul(&inv_std)?.reshape((b, c, s))?;
        Ok((normalised, inv_std))
    }

    fn affine(
        &self,
        normalised: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        dims: &[usize],
    ) -> Result<Tensor> {
        let c = self.channels();
        Ok(normalised
            .broadcast_mul(&gamma.reshape((1, c, 1))?)?
            .broadcast_add(&beta.reshape((1, c, 1))?)?
            .reshape(dims)?)
    }
}

impl Layer for GroupNorm {
    fn kind(&self) -> &'static str {
        if self.instance {
            "instance_norm"
        } else {
            "group_norm"
        }
    }

    fn output_shape(&self) -> &[usize] {
        &self.input
    }

    fn params(&self) -> Vec<Param> {
        vec![
            Param {
                name: "weight",
                var: self.gamma.clone(),
            },
            Param {
                name: "bias",
                var: self.beta.clone(),
            },
        ]
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let (normalised, _) = self.normalise(x)?;
        self.affine(
            &normalised,
            self.gamma.as_tensor(),
            self.beta.as_tensor(),
            x.dims(),
        )
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let (normalised, inv_std) = self.normalise(x)?;
        let y = self.affine(
            &normalised,
            &detached(&self.gamma),
            &detached(&self.beta),
            x.dims(),
        )?;
        Ok((
            y,
            Box::new(NormSaved {
                normalised,
                inv_std,
            }),
        ))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let NormSaved {
            normalised,
            inv_std,
        } = unsave(saved, self.kind())?;
        let (b, c, s) = (grad.dim(0)?, self.channels(), self.positions());
        let dims = grad.dims().to_vec();
        let grad = grad.reshape((b, c, s))?;
        let trace = match trace {
            true => Some(Trace(Box::new(Materialised(vec![
                (&grad * &normalised)?.sum(2)?,
                grad.sum(2)?,
            ])))),
            false => None,
        };
        let input_grad = match input_grad {
            true => {
                let m = c / self.groups * s;
                let scaled = grad
                    .broadcast_mul(&detached(&self.gamma).reshape((1, c, 1))?)?
                    .reshape((b, self.groups, m))?;
                let xhat = normalised.reshape((b, self.groups, m))?;
                let mean_g = scaled.mean_keepdim(2)?;
                let mean_gx = (&scaled * &xhat)?.mean_keepdim(2)?;
                let gx = scaled
                    .broadcast_sub(&mean_g)?
                    .sub(&xhat.broadcast_mul(&mean_gx)?)?
                    .broadcast_mul(&inv_std)?;
                Some(gx.reshape(dims)?)
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
        factors: &[f32],
    ) -> Result<Vec<Tensor>> {
        materialised_sums(trace.get::<Materialised>(self.kind())?, factors)
    }

    fn rule(&self, _: NormMode) -> String {
        "instantiate (O(C))".into()
    }

    fn macs(&self) -> usize {
        4 * self.input.iter().product::<usize>()
    }
}
