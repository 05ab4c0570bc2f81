//! `embedding_bag`: token ids (B, T) → one vector per example, the sum (`mode = "sum"`) or
//! mean (`mode = "mean"`) of the rows of E (V, D) of its real tokens (padding excluded; an
//! example with no real token gives 0).
//!
//! Per-example rule, closed form (generality.md section 5.1): with o_i = w_i Σ_t E[x_t]
//! (w_i = 1/L_i or 1) row u's gradient is n_{i,u}·w_i·g_i, so
//! s_i = ‖g_i‖² · w_i² · Σ_u n_{i,u}²: O(L_i) per example, no (B, V, D) tensor (Opacus
//! loops over the batch into a dense one, `embedding.py` L67-94). Clipped sum: c_i·w_i·g_i
//! scatter-added into the row of every real token.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{detached, normal, token_ids};
use crate::error::Result;
use crate::grad_sample::{tensor, with_values};
use crate::model::layer::{Context, Layer, NormMode, Param, PerExample, Saved, Trace, unsave};
use crate::real::{Real, real};

/// How a bag is reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BagMode {
    /// Σ_t E[x_t] / L.
    #[default]
    Mean,
    /// Σ_t E[x_t].
    Sum,
}

/// A bag-of-tokens embedding.
#[derive(Debug)]
pub struct EmbeddingBag {
    /// (V, D).
    pub weight: Var,
    /// Sum or mean.
    pub mode: BagMode,
    /// The padding id, if any.
    pub padding_idx: Option<u32>,
    shape: Vec<usize>,
}

struct BagTrace {
    ids: Vec<u32>,
    /// w_i per example (in the layer's dtype, held exactly as f64).
    weights: Vec<f64>,
    /// (B, D).
    output_grad: Tensor,
}

impl EmbeddingBag {
    /// A (vocab, dim) table; N(0, 1) init (PyTorch's), the padding row zero.
    pub fn new(
        vocab: usize,
        dim: usize,
        mode: BagMode,
        padding_idx: Option<u32>,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        Ok(EmbeddingBag {
            weight: normal(&[vocab, dim], 1.0, padding_idx, dtype, rng)?,
            mode,
            padding_idx,
            shape: vec![dim],
        })
    }

    /// w_i of each example and the (B, T, 1) position weights (w_i at real tokens, else 0).
    fn weights<T: Real>(&self, ids: &[u32], (b, t): (usize, usize)) -> Result<(Vec<f64>, Tensor)> {
        let token = |id: &u32| Some(*id) != self.padding_idx;
        let mut per_example = Vec::with_capacity(b);
        let mut positions = Vec::with_capacity(b * t);
        for row in ids.chunks(t.max(1)).take(b) {
            let count = row.iter().filter(|id| token(id)).count();
            let w = match (self.mode, count) {
                (_, 0) => T::zero(),
                (BagMode::Mean, n) => T::one() / T::of(n as f64),
                (BagMode::Sum, _) => T::one(),
            };
            per_example.push(w.wide());
            positions.extend(row.iter().map(|id| if token(id) { w } else { T::zero() }));
        }
        Ok((per_example, tensor(positions, &[b, t, 1])?))
    }

    fn bag(&self, x: &Tensor, table: &Tensor) -> Result<(Tensor, Vec<u32>, Vec<f64>)> {
        let (b, t) = x.dims2()?;
        let ids = token_ids(x, self.weight.dim(0)?)?;
        let (per_example, positions) = real!(table.dtype(), "embedding_bag", |T| self
            .weights::<T>(&ids, (b, t)))?;
        let index = Tensor::from_vec(ids.clone(), b * t, &candle_core::Device::Cpu)?;
        let rows = table
            .index_select(&index, 0)?
            .reshape((b, t, self.shape[0]))?;
        let y = rows.broadcast_mul(&positions)?.sum(1)?;
        Ok((y, ids, per_example))
    }
}

impl Layer for EmbeddingBag {
    fn kind(&self) -> &'static str {
        "embedding_bag"
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
        Ok(self.bag(x, self.weight.as_tensor())?.0)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let (y, ids, weights) = self.bag(x, &detached(&self.weight))?;
        Ok((y, Box::new((ids, weights))))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        _: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let (ids, weights): (Vec<u32>, Vec<f64>) = unsave(saved, "embedding_bag")?;
        let trace = trace.then(|| {
            Trace(Box::new(BagTrace {
                ids,
                weights,
                output_grad: grad,
            }))
        });
        Ok((None, trace))
    }

    fn per_example(&self, trace: &Trace, _: NormMode) -> Result<PerExample> {
        let t: &BagTrace = trace.get("embedding_bag")?;
        real!(t.output_grad.dtype(), "embedding_bag norms", |T| self
            .norms_typed::<T>(t))
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let t: &BagTrace = trace.get("embedding_bag")?;
        real!(t.output_grad.dtype(), "embedding_bag sum", |T| self
            .sums_typed::<T>(t, factors))
    }

    fn rule(&self, _: NormMode) -> String {
        "closed form ‖g‖²w²Σn²".into()
    }

    fn macs(&self) -> usize {
        self.shape[0]
    }
}

impl EmbeddingBag {
    /// ‖∇W_i‖² = ‖g_i‖² w_i² Σ_u n_u² (generality.md §5.1): no B × V × D tensor.
    fn norms_typed<T: Real>(&self, t: &BagTrace) -> Result<PerExample> {
        let (b, d) = t.output_grad.dims2()?;
        let len = t.ids.len() / b.max(1);
        let norms = with_values(&t.output_grad, "embedding_bag norms", |g: &[T]| {
            let mut sorted: Vec<u32> = Vec::with_capacity(len);
            (0..b)
                .map(|i| {
                    sorted.clear();
                    sorted.extend(
                        t.ids[i * len..(i + 1) * len]
                            .iter()
                            .filter(|&&id| Some(id) != self.padding_idx),
                    );
                    sorted.sort_unstable();
                    // Σ_u n_u² over the runs of equal ids.
                    let mut counts = T::zero();
                    let mut start = 0;
                    while start < sorted.len() {
                        let end = start
                            + sorted[start..]
                                .iter()
                                .take_while(|&&id| id == sorted[start])
                                .count();
                        counts += T::of((end - start) as f64).powi(2);
                        start = end;
                    }
                    let g2: T = g[i * d..(i + 1) * d].iter().map(|&v| v * v).sum();
                    let w = T::of(t.weights[i]);
                    (g2 * w * w * counts).wide()
                })
                .collect::<Vec<f64>>()
        })?;
        Ok(PerExample {
            sq_norms: norms,
            state: None,
        })
    }

    /// Σ_i c_i ∇W_i: each real position of example i adds c_i w_i g_i to its token's row.
    fn sums_typed<T: Real>(&self, t: &BagTrace, factors: &[f64]) -> Result<Vec<Tensor>> {
        let (b, d) = t.output_grad.dims2()?;
        let len = t.ids.len() / b.max(1);
        let vocab = self.weight.dim(0)?;
        let sum = with_values(&t.output_grad, "embedding_bag sum", |g: &[T]| {
            let mut sum = vec![T::zero(); vocab * d];
            for (position, &id) in t.ids.iter().enumerate() {
                let i = position / len;
                let scale = T::of(factors[i]) * T::of(t.weights[i]);
                if scale == T::zero() || Some(id) == self.padding_idx {
                    continue;
                }
                let row = &mut sum[id as usize * d..(id as usize + 1) * d];
                for (acc, &v) in row.iter_mut().zip(&g[i * d..(i + 1) * d]) {
                    *acc += scale * v;
                }
            }
            sum
        })?;
        Ok(vec![tensor(sum, &[vocab, d])?])
    }
}
