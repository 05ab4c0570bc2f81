//! `embedding`: token ids (B, T) → rows of a table E (V, D), (B, T, D). The id
//! `padding_idx`, if set, maps to a zero row that never learns (PyTorch's semantics).
//!
//! Per-example rule (Opacus `embedding_norm_sample.py`; fastDP): example i's gradient has
//! one non-zero row per distinct token u it contains, Σ_{t: x_t = u} g_t, so
//! s_i = Σ_u ‖Σ_{t: x_t = u} g_t‖² (repeated tokens add up before squaring; padding
//! excluded), found by sorting the example's positions by token: O(T log T + T·D), never a
//! (B, V, D) tensor. Clipped sum: c_i·g_t scatter-added into row x_t.

use candle_core::{Tensor, Var};

use super::{detached, normal, token_ids};
use crate::error::Result;
use crate::grad_sample::{tensor, with_values};
use crate::model::layer::{Context, Layer, NormMode, Param, PerExample, Saved, Trace, unsave};
use crate::real::{Real, real};

/// A token embedding table.
#[derive(Debug)]
pub struct Embedding {
    /// (V, D).
    pub weight: Var,
    /// The padding id, if any.
    pub padding_idx: Option<u32>,
    shape: Vec<usize>,
}

struct EmbeddingTrace {
    ids: Vec<u32>,
    output_grad: Tensor,
}

impl Embedding {
    /// A (vocab, dim) table for sequences of `len` ids; N(0, 1) init as in PyTorch, with
    /// the padding row zero.
    pub fn new(
        len: usize,
        vocab: usize,
        dim: usize,
        padding_idx: Option<u32>,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let weight = normal(&[vocab, dim], 1.0, padding_idx, dtype, rng)?;
        Ok(Embedding {
            weight,
            padding_idx,
            shape: vec![len, dim],
        })
    }

    fn vocab(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    fn dim(&self) -> usize {
        self.shape[1]
    }

    fn lookup(&self, ids: &[u32], dims: (usize, usize), table: &Tensor) -> Result<Tensor> {
        let (b, t) = dims;
        let index = Tensor::from_vec(ids.to_vec(), b * t, &candle_core::Device::Cpu)?;
        let rows = table.index_select(&index, 0)?.reshape((b, t, self.dim()))?;
        match self.padding_idx {
            None => Ok(rows),
            Some(pad) => {
                let mask: Vec<f32> = ids
                    .iter()
                    .map(|&id| f32::from(u8::from(id != pad)))
                    .collect();
                let mask = tensor(mask, &[b, t, 1])?.to_dtype(rows.dtype())?;
                Ok(rows.broadcast_mul(&mask)?)
            }
        }
    }
}

impl Layer for Embedding {
    fn kind(&self) -> &'static str {
        "embedding"
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
        let ids = token_ids(x, self.vocab())?;
        self.lookup(&ids, x.dims2()?, self.weight.as_tensor())
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let ids = token_ids(x, self.vocab())?;
        let y = self.lookup(&ids, x.dims2()?, &detached(&self.weight))?;
        Ok((y, Box::new(ids)))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        _: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        // Token ids have no gradient.
        let ids: Vec<u32> = unsave(saved, "embedding")?;
        let trace = trace.then(|| {
            Trace(Box::new(EmbeddingTrace {
                ids,
                output_grad: grad,
            }))
        });
        Ok((None, trace))
    }

    fn per_example(&self, trace: &Trace, _: NormMode) -> Result<PerExample> {
        let t: &EmbeddingTrace = trace.get("embedding")?;
        real!(t.output_grad.dtype(), "embedding norms", |T| self
            .norms_typed::<T>(t))
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let t: &EmbeddingTrace = trace.get("embedding")?;
        real!(t.output_grad.dtype(), "embedding sum", |T| self
            .sums_typed::<T>(t, factors))
    }

    fn rule(&self, _: NormMode) -> String {
        "distinct tokens (no B×V×D)".into()
    }

    fn macs(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Embedding {
    /// ‖∇W_i‖² = Σ over example i's distinct non-padding tokens v of ‖Σ_{t: id_t = v} g_t‖².
    fn norms_typed<T: Real>(&self, t: &EmbeddingTrace) -> Result<PerExample> {
        let (b, len, d) = t.output_grad.dims3()?;
        let norms = with_values(&t.output_grad, "embedding norms", |g: &[T]| {
            let mut order: Vec<usize> = Vec::with_capacity(len);
            let mut row = vec![T::zero(); d];
            (0..b)
                .map(|i| {
                    let ids = &t.ids[i * len..(i + 1) * len];
                    order.clear();
                    order.extend((0..len).filter(|&p| Some(ids[p]) != self.padding_idx));
                    order.sort_by_key(|&p| ids[p]);
                    let mut total = T::zero();
                    let mut start = 0;
                    while start < order.len() {
                        let token = ids[order[start]];
                        row.fill(T::zero());
                        let mut end = start;
                        while end < order.len() && ids[order[end]] == token {
                            let at = (i * len + order[end]) * d;
                            for (acc, &v) in row.iter_mut().zip(&g[at..at + d]) {
                                *acc += v;
                            }
                            end += 1;
                        }
                        total += row.iter().map(|&v| v * v).sum::<T>();
                        start = end;
                    }
                    total.wide()
                })
                .collect::<Vec<f64>>()
        })?;
        Ok(PerExample {
            sq_norms: norms,
            state: None,
        })
    }

    /// Σ_i c_i ∇W_i: each non-padding position adds c_i g_t to its token's row.
    fn sums_typed<T: Real>(&self, t: &EmbeddingTrace, factors: &[f64]) -> Result<Vec<Tensor>> {
        let (_, len, d) = t.output_grad.dims3()?;
        let sum = with_values(&t.output_grad, "embedding sum", |g: &[T]| {
            let mut sum = vec![T::zero(); self.vocab() * d];
            for (position, &id) in t.ids.iter().enumerate() {
                let factor = factors[position / len];
                // A dropped (non-finite) example adds nothing: 0 · NaN would be NaN.
                if factor == 0.0 || Some(id) == self.padding_idx {
                    continue;
                }
                let factor = T::of(factor);
                let row = &mut sum[id as usize * d..(id as usize + 1) * d];
                for (acc, &v) in row.iter_mut().zip(&g[position * d..(position + 1) * d]) {
                    *acc += factor * v;
                }
            }
            sum
        })?;
        Ok(vec![tensor(sum, &[self.vocab(), d])?])
    }
}
