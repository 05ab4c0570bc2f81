//! `positional_embedding`: a learned table P (max_len, D) added to a sequence (T, D),
//! T ≤ max_len: y_t = x_t + P_t.
//!
//! Per-example rule: example i's gradient of P is g_i in its first T rows, so
//! s_i = ‖g_i‖² (padding positions have g = 0 when their outputs are masked downstream)
//! and the clipped sum is Σ_i c_i g_i, zero-padded to max_len rows.

use candle_core::{Tensor, Var};

use super::{Materialised, detached, materialised_norms, materialised_sums, normal, refuse};
use crate::error::Result;
use crate::model::layer::{Context, Layer, NormMode, Param, PerExample, Saved, Trace, nothing};

/// Learned positions.
#[derive(Debug)]
pub struct PositionalEmbedding {
    /// (max_len, D).
    pub weight: Var,
    shape: Vec<usize>,
}

impl PositionalEmbedding {
    /// For inputs (T, D), with room for `max_len` positions; N(0, 0.02²) init.
    pub fn new(
        input: &[usize],
        max_len: usize,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let [t, d] = input else {
            return Err(refuse(format!("inputs of shape (T, D), got {input:?}")));
        };
        if *t > max_len {
            return Err(refuse(format!(
                "sequences of {t} positions exceed max_len = {max_len}"
            )));
        }
        Ok(PositionalEmbedding {
            weight: normal(&[max_len, *d], 0.02, None, dtype, rng)?,
            shape: input.to_vec(),
        })
    }

    fn table(&self, weight: &Tensor) -> Result<Tensor> {
        Ok(weight.narrow(0, 0, self.shape[0])?.unsqueeze(0)?)
    }
}

impl Layer for PositionalEmbedding {
    fn kind(&self) -> &'static str {
        "positional_embedding"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn params(&self) -> Vec<Param> {
        vec![Param {
            name: "weight",
            var: self.weight.clone(),
        }]
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        Ok(x.broadcast_add(&self.table(self.weight.as_tensor())?)?)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        Ok((
            x.broadcast_add(&self.table(&detached(&self.weight))?)?,
            nothing(),
        ))
    }

    fn backward(
        &self,
        _: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let trace = trace.then(|| Trace(Box::new(Materialised(vec![grad.clone()]))));
        Ok((input_grad.then_some(grad), trace))
    }

    fn per_example(&self, trace: &Trace, _: NormMode) -> Result<PerExample> {
        materialised_norms(trace.get::<Materialised>("positional_embedding")?)
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let sums = materialised_sums(trace.get::<Materialised>("positional_embedding")?, factors)?;
        let max_len = self.weight.dim(0)?;
        sums.into_iter()
            .map(|s| Ok(s.pad_with_zeros(0, 0, max_len - self.shape[0])?))
            .collect()
    }

    fn rule(&self, _: NormMode) -> String {
        "‖g‖² (instantiate)".into()
    }
}
