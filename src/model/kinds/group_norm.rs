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

use rayon::prelude::*;

use super::{Materialised, materialised_norms, materialised_sums};
use crate::error::Result;
use crate::grad_sample::{tensor, with_values};
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
    /// 1/σ of each (example, group).
    inv_std: Vec<f32>,
}

/// A parameter's values.
fn param_values(var: &Var) -> Result<Vec<f32>> {
    with_values(var.as_tensor(), "group_norm parameter", <[f32]>::to_vec)
}

/// One pass over each (example, group) block of m = (C/G)·S contiguous values: (y, x̂, 1/σ).
/// The mean and variance are computed in f64 (two passes), then x̂ and y in one.
fn fused_forward(
    x: &[f32],
    (c, s, groups): (usize, usize, usize),
    eps: f64,
    gamma: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = c / groups * s;
    let mut y = vec![0f32; x.len()];
    let mut xhat = vec![0f32; x.len()];
    let blocks = x.len() / m.max(1);
    let mut inv = vec![0f32; blocks];
    y.par_chunks_mut(m.max(1))
        .zip(xhat.par_chunks_mut(m.max(1)))
        .zip(x.par_chunks(m.max(1)))
        .zip(inv.par_iter_mut())
        .enumerate()
        .for_each(|(block, (((y, xhat), x), inv))| {
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / m as f64;
            let var = x
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / m as f64;
            let r = (1.0 / (var + eps).sqrt()) as f32;
            let mean = mean as f32;
            *inv = r;
            let first_channel = (block % groups) * (c / groups);
            let rows = y.chunks_mut(s).zip(xhat.chunks_mut(s)).zip(x.chunks(s));
            for (k, ((y, xh), v)) in rows.enumerate() {
                let (g, b) = (gamma[first_channel + k], beta[first_channel + k]);
                for ((y, xh), &v) in y.iter_mut().zip(xh.iter_mut()).zip(v) {
                    *xh = (v - mean) * r;
                    *y = *xh * g + b;
                }
            }
        });
    (y, xhat, inv)
}

/// The backward of [`fused_forward`]: (∂x when `input_grad`, ∇γ_i (B, C), ∇β_i (B, C)).
fn fused_backward(
    g: &[f32],
    xhat: &[f32],
    inv: &[f32],
    (c, s, groups): (usize, usize, usize),
    gamma: &[f32],
    input_grad: bool,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let per_group = c / groups;
    let m = per_group * s;
    let blocks = g.len() / m.max(1);
    let mut dx = vec![0f32; if input_grad { g.len() } else { 0 }];
    let mut dgamma = vec![0f32; blocks * per_group];
    let mut dbeta = vec![0f32; blocks * per_group];
    let work = |block: usize, dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32]| {
        let (g, xhat) = (
            &g[block * m..(block + 1) * m],
            &xhat[block * m..(block + 1) * m],
        );
        let first_channel = (block % groups) * per_group;
        let (mut sum_g, mut sum_gx) = (0f64, 0f64);
        for k in 0..per_group {
            let (gc, xc) = (&g[k * s..(k + 1) * s], &xhat[k * s..(k + 1) * s]);
            let (dg, db) = gc
                .iter()
                .zip(xc)
                .fold((0f32, 0f32), |(dg, db), (&g, &x)| (dg + g * x, db + g));
            dgamma[k] = dg;
            dbeta[k] = db;
            let gam = f64::from(gamma[first_channel + k]);
            sum_g += gam * f64::from(db);
            sum_gx += gam * f64::from(dg);
        }
        if dx.is_empty() {
            return;
        }
        // ∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ with ĝ = g·γ_c.
        let (mean_g, mean_gx) = ((sum_g / m as f64) as f32, (sum_gx / m as f64) as f32);
        let r = inv[block];
        for k in 0..per_group {
            let gam = gamma[first_channel + k];
            for t in k * s..(k + 1) * s {
                dx[t] = (g[t] * gam - mean_g - xhat[t] * mean_gx) * r;
            }
        }
    };
    match input_grad {
        true => dx
            .par_chunks_mut(m.max(1))
            .zip(dgamma.par_chunks_mut(per_group.max(1)))
            .zip(dbeta.par_chunks_mut(per_group.max(1)))
            .enumerate()
            .for_each(|(block, ((dx, dg), db))| work(block, dx, dg, db)),
        false => dgamma
            .par_chunks_mut(per_group.max(1))
            .zip(dbeta.par_chunks_mut(per_group.max(1)))
            .enumerate()
            .for_each(|(block, (dg, db))| work(block, &mut [], dg, db)),
    }
    Ok((dx, dgamma, dbeta))
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
        let (b, c, s) = (x.dim(0)?, self.channels(), self.positions());
        let (gamma, beta) = (param_values(&self.gamma)?, param_values(&self.beta)?);
        let (y, normalised, inv_std) = with_values(x, "group_norm", |x| {
            fused_forward(x, (c, s, self.groups), self.eps, &gamma, &beta)
        })?;
        let normalised = tensor(normalised, &[b, c, s])?;
        Ok((
            tensor(y, x.dims())?,
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
        let gamma = param_values(&self.gamma)?;
        let (dx, dgamma, dbeta) = with_values(&grad, "group_norm backward", |g| {
            with_values(&normalised, "group_norm backward", |xhat| {
                fused_backward(g, xhat, &inv_std, (c, s, self.groups), &gamma, input_grad)
            })
        })???;
        let trace = match trace {
            true => Some(Trace(Box::new(Materialised(vec![
                tensor(dgamma, &[b, c])?,
                tensor(dbeta, &[b, c])?,
            ])))),
            false => None,
        };
        let input_grad = match input_grad {
            true => Some(tensor(dx, &dims)?),
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
