//! `self_attention`: multi-head scaled dot-product self-attention over (T, D) (Vaswani et
//! al. 2017), as four sequence linear maps (q, k, v, out) around a parameter-free core, the
//! form Opacus's DPMultiheadAttention takes. Padding keys (the token mask) and, with
//! `causal = true`, later positions are masked out.
//!
//! Per-example rule: each of the four maps is a linear layer over the sequence
//! (`grad_sample::linear`: ghost or materialised by cost), and the layer's squared norm is
//! their sum. The hand-written backward of the core, per head with A = softmax(S),
//! S = Q Kᵀ/√d: dV = Aᵀ dO, dA = dO Vᵀ, dS = A ⊙ (dA − rowsum(dA ⊙ A)), dQ = dS K/√d,
//! dK = dSᵀ Q/√d.

use candle_core::{D, Tensor, Var};

use super::linear::{LinearTrace, clipped, rule_name};
use super::{detached, refuse, uniform};
use crate::error::Result;
use crate::grad_sample::linear::{self as rule, NormMode};
use crate::model::layer::{Context, Layer, Param, PerExample, Saved, Trace, unsave};

/// Self-attention with `heads` heads over (T, D).
#[derive(Debug)]
pub struct SelfAttention {
    /// Heads (divides D).
    pub heads: usize,
    /// Mask later positions.
    pub causal: bool,
    /// (weight (D, D), bias (D)) of q, k, v and out, in that order.
    maps: [(Var, Var); 4],
    shape: Vec<usize>,
}

const NAMES: [(&str, &str); 4] = [
    ("q_weight", "q_bias"),
    ("k_weight", "k_bias"),
    ("v_weight", "v_bias"),
    ("out_weight", "out_bias"),
];

struct AttentionSaved {
    input: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attention: Tensor,
    merged: Tensor,
}

struct AttentionTrace([LinearTrace; 4]);

impl SelfAttention {
    /// Over inputs (T, D); PyTorch's default init for each map.
    pub fn new(
        input: &[usize],
        heads: usize,
        causal: bool,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let [_, d] = input else {
            return Err(refuse(format!("inputs of shape (T, D), got {input:?}")));
        };
        if heads == 0 || d % heads != 0 {
            return Err(refuse(format!(
                "heads = {heads} must divide the width D = {d}"
            )));
        }
        let map = |rng: &mut _| -> Result<(Var, Var)> {
            Ok((
                uniform(&[*d, *d], *d, dtype, rng)?,
                uniform(&[*d], *d, dtype, rng)?,
            ))
        };
        Ok(SelfAttention {
            heads,
            causal,
            maps: [map(rng)?, map(rng)?, map(rng)?, map(rng)?],
            shape: input.to_vec(),
        })
    }

    fn dims(&self) -> (usize, usize, usize) {
        let (t, d) = (self.shape[0], self.shape[1]);
        (t, d, d / self.heads)
    }

    /// x Wᵀ + b over (B, T, D).
    fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (bs, t, d) = x.dims3()?;
        let y = x.reshape((bs * t, d))?.matmul(&w.t()?)?;
        let y = match b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        Ok(y.reshape((bs, t, w.dim(0)?))?)
    }

    /// (B, T, D) → (B, H, T, dh), contiguous.
    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (_, _, dh) = self.dims();
        Ok(x.reshape((b, t, self.heads, dh))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// (B, H, T, dh) → (B, T, D), contiguous.
    fn merge(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, t, _) = x.dims4()?;
        Ok(x.transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, self.shape[1]))?)
    }

    /// The additive mask (B, 1, T, T): 0 where a query may look, −1e9 at padding keys and,
    /// when causal, at later keys.
    fn mask(&self, b: usize, ctx: &Context, dtype: candle_core::DType) -> Result<Option<Tensor>> {
        let t = self.shape[0];
        let dev = &candle_core::Device::Cpu;
        let mut mask: Option<Tensor> = None;
        if let Some(tokens) = &ctx.token_mask {
            // (B, T) of 1/0 → (B, 1, 1, T) of 0/−1e9.
            let keys = ((tokens.to_dtype(dtype)? - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
            mask = Some(keys);
        }
        if self.causal {
            let later: Vec<f32> = (0..t * t)
                .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
                .collect();
            let later = Tensor::from_vec(later, (1, 1, t, t), dev)?.to_dtype(dtype)?;
            mask = Some(match mask {
                Some(m) => m.broadcast_add(&later)?,
                None => later,
            });
        }
        Ok(mask)
    }

    /// The core: softmax(Q Kᵀ/√dh + mask) V, with the attention weights.
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, ctx: &Context) -> Result<(Tensor, Tensor)> {
        let (t, _, dh) = self.dims();
        let b = q.dim(0)?;
        if b == 0 {
            // An empty Poisson batch (candle's reductions refuse empty tensors).
            let none = Tensor::zeros((0, self.heads, t, t), q.dtype(), q.device())?;
            return Ok((q.zeros_like()?, none));
        }
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?;
        let scores = match self.mask(q.dim(0)?, ctx, q.dtype())? {
            Some(mask) => scores.broadcast_add(&mask)?,
            None => scores,
        };
        let attention = candle_nn::ops::softmax(&scores, D::Minus1)?;
        Ok((attention.matmul(v)?, attention))
    }

    fn weights(&self, train: bool) -> Vec<(Tensor, Tensor)> {
        self.maps
            .iter()
            .map(|(w, b)| match train {
                true => (detached(w), detached(b)),
                false => (w.as_tensor().clone(), b.as_tensor().clone()),
            })
            .collect()
    }
}

impl Layer for SelfAttention {
    fn kind(&self) -> &'static str {
        "self_attention"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn params(&self) -> Vec<Param> {
        self.maps
            .iter()
            .zip(NAMES)
            .flat_map(|((w, b), (wn, bn))| {
                [
                    Param {
                        name: wn,
                        var: w.clone(),
                    },
                    Param {
                        name: bn,
                        var: b.clone(),
                    },
                ]
            })
            .collect()
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        let w = self.weights(false);
        let [q, k, v] = [0, 1, 2].map(|i| Self::linear(x, &w[i].0, Some(&w[i].1)));
        let (out, _) = self.core(&self.split(&q?)?, &self.split(&k?)?, &self.split(&v?)?, ctx)?;
        Self::linear(&self.merge(&out)?, &w[3].0, Some(&w[3].1))
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        let w = self.weights(true);
        let q = self.split(&Self::linear(x, &w[0].0, Some(&w[0].1))?)?;
        let k = self.split(&Self::linear(x, &w[1].0, Some(&w[1].1))?)?;
        let v = self.split(&Self::linear(x, &w[2].0, Some(&w[2].1))?)?;
        let (out, attention) = self.core(&q, &k, &v, ctx)?;
        let merged = self.merge(&out)?;
        let y = Self::linear(&merged, &w[3].0, Some(&w[3].1))?;
        let saved = AttentionSaved {
            input: x.clone(),
            q,
            k,
            v,
            attention,
            merged,
        };
        Ok((y, Box::new(saved)))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let AttentionSaved {
            input,
            q,
            k,
            v,
            attention,
            merged,
        } = unsave(saved, "self_attention")?;
        let w = self.weights(true);
        let (_, _, dh) = self.dims();
        let scale = 1.0 / (dh as f64).sqrt();
        // Through the output map, then the core.
        let d_out = self.split(&Self::linear(&grad, &w[3].0.t()?.contiguous()?, None)?)?;
        let d_v = attention.t()?.contiguous()?.matmul(&d_out)?;
        let d_att = d_out.matmul(&v.t()?.contiguous()?)?;
        let d_scores = match attention.dim(0)? {
            0 => attention.zeros_like()?,
            _ => {
                let row = (&d_att * &attention)?.sum_keepdim(D::Minus1)?;
                (&attention * d_att.broadcast_sub(&row)?)?
            }
        };
        let d_q = (d_scores.matmul(&k)? * scale)?;
        let d_k = (d_scores.t()?.contiguous()?.matmul(&q)? * scale)?;
        let [d_q, d_k, d_v] = [d_q, d_k, d_v].map(|t| self.merge(&t));
        let (d_q, d_k, d_v) = (d_q?, d_k?, d_v?);
        let input_grad = match input_grad {
            true => {
                let back = |g: &Tensor, w: &Tensor| Self::linear(g, &w.t()?.contiguous()?, None);
                Some(((back(&d_q, &w[0].0)? + back(&d_k, &w[1].0)?)? + back(&d_v, &w[2].0)?)?)
            }
            false => None,
        };
        let trace = trace.then(|| {
            let map = |g: Tensor, a: &Tensor| LinearTrace {
                input: a.clone(),
                output_grad: g,
            };
            Trace(Box::new(AttentionTrace([
                map(d_q, &input),
                map(d_k, &input),
                map(d_v, &input),
                map(grad, &merged),
            ])))
        });
        Ok((input_grad, trace))
    }

    fn per_example(&self, trace: &Trace, mode: NormMode) -> Result<PerExample> {
        let AttentionTrace(maps) = trace.get("self_attention")?;
        // Summed in the layer's dtype.
        let mut total: Option<Tensor> = None;
        for t in maps {
            let norms = rule::per_example_with(&t.input, &t.output_grad, true, mode)?.sq_norms;
            total = Some(match total {
                None => norms,
                Some(acc) => (acc + norms)?,
            });
        }
        Ok(PerExample {
            sq_norms: match total {
                Some(t) => crate::grad_sample::wide_values(&t)?,
                None => Vec::new(),
            },
            state: None,
        })
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        _: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let AttentionTrace(maps) = trace.get("self_attention")?;
        let mut sums = Vec::with_capacity(8);
        for t in maps {
            let (w, b) = clipped(t, None, factors)?;
            sums.push(w);
            sums.push(b);
        }
        Ok(sums)
    }

    fn rule(&self, mode: NormMode) -> String {
        let (t, d, _) = self.dims();
        format!("4 × {}", rule_name(t, d, d, mode))
    }

    fn macs(&self) -> usize {
        let (t, d, _) = self.dims();
        4 * t * d * d + 2 * t * t * d
    }
}
