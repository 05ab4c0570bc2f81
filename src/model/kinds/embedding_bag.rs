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
    /// w_i per example.
    weights: Vec<f32>,
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
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        Ok(EmbeddingBag {
            weight: normal(&[vocab, dim], 1.0, padding_idx, rng)?,
            mode,
            padding_idx,
            shape: vec![dim],
        })
    }

    /// w_i of each example and the (B, T, 1) position weights (w_i at real tokens, else 0).
    fn weights(&self, ids: &[u32], (b, t): (usize, usize)) -> Result<(Vec<f32>, Tensor)> {
        let real = |id: &u32| Some(*id) != self.padding_idx;
        let mut per_example = Vec::with_capacity(b);
        let mut positions = Vec::with_capacity(b * t);
        for row in ids.chunks(t.max(1)).take(b) {
            let count = row.iter().filter(|id| real(id)).count();
            let w = match (self.mode, count) {
                (_, 0) => 0.0,
                (BagMode::Mean, n) => 1.0 / n as f32,
                (BagMode::Sum, _) => 1.0,
            };
            per_example.push(w);
            positions.extend(row.iter().map(|id| if real(id) { w } else { 0.0 }));
        }
        Ok((per_example, tensor(positions, &[b, t, 1])?))
    }

    fn bag(&self, x: &Tensor, table: &Tensor) -> Result<(Tensor, Vec<u32>, Vec<f32>)> {
        let (b, t) = x.dims2()?;
        let ids = token_ids(x, self.weight.dim(0)?)?;
        let (per_example, positions) = self.weights(&ids, (b, t))?;
        let index = Tensor::from_vec(ids.clone(), b * t, &candle_core::Device::Cpu)?;
        let rows = table
            .index_select(&index, 0)?
            .reshape((b, t, self.shape[0]))?;
        let y = rows
            .broadcast_mul(&positions.to_dtype(rows.dtype())?)?
            .sum(1)?;
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
        let (ids, weights): (Vec<u32>, Vec<f32>) = unsave(saved, "embedding_bag")?;
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
        let (b, d) = t.output_grad.dims2()?;
        let len = t.ids.len() / b.max(1);
        let norms = with_values(&t.output_grad, "embedding_bag norms", |g| {
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
                    let mut counts = 0f32;
                    let mut start = 0;
                    while start < sorted.len() {
                        let end = start
                            + sorted[start..]
                                .iter()
                                .take_while(|&&id| id == sorted[start])
                                .count();
                        counts += ((end - start) as f32).powi(2);
                        start = end;
                    }
                    let g2: f32 = g[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
                    g2 * t.weights[i] * t.weights[i] * counts
                })
                .collect::<Vec<f32>>()
        })?;
        Ok(PerExample {
            sq_norms: norms,
            state: None,
        })
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f32],
    ) -> Result<Vec<Tensor>> {
        let t: &BagTrace = trace.get("embedding_bag")?;
        let (b, d) = t.output_grad.dims2()?;
        let len = t.ids.len() / b.max(1);
        let vocab = self.weight.dim(0)?;
        let sum = with_values(&t.output_grad, "embedding_bag sum", |g| {
            let mut sum = vec![0f32; vocab * d];
            for (position, &id) in t.ids.iter().enumerate() {
                let i = position / len;
                let scale = factors[i] * t.weights[i];
                if scale == 0.0 || Some(id) == self.padding_idx {
                    continue;
                }
                let row = &mut sum[id as usize * d..(id as usize + 1) * d];
                for (acc, v) in row.iter_mut().zip(&g[i * d..(i + 1) * d]) {
                    *acc += scale * v;
                }
            }
            sum
        })?;
        Ok(vec![tensor(sum, &[vocab, d])?])
    }

    fn rule(&self, _: NormMode) -> String {
        "closed form ‖g‖²w²Σn²".into()
    }

    fn macs(&self) -> usize {
        self.shape[0]
    }
}
