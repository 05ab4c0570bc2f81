//! The training pass: forward, summed cross-entropy, and a hand-written backward pass that
//! yields what `grad_sample` needs for every DP layer: its input A (as it multiplies W) and
//! its output gradient G = ∂loss/∂y.
//!
//! Why not candle's autograd: it drops the gradients of intermediate tensors (so G had to be
//! read off a zero "probe" added to every layer output), and it accumulates every gradient
//! edge as `zeros_like + add`, also for inputs that need no gradient. On the cnn that made
//! the backward pass three times as slow as the forward pass. The models here are chains
//! of six layer kinds, so their backward pass is short to write by hand: for each layer,
//! the input gradient (never a weight gradient: the DP step builds those from A and G as
//! clipped sums). [`Model::forward`] keeps candle's autograd, and the tests check this pass
//! against it (per-example norms against batch-size-1 autograd passes).

use candle_core::Tensor;
use rayon::prelude::*;

use super::{Layer, Model, pool, tanh};
use crate::error::{Error, Result};
use crate::grad_sample::im2col::{col2im, im2col};
use crate::grad_sample::{tensor, with_values};

/// What the training pass kept for one DP layer.
#[derive(Debug)]
pub struct LayerTrace {
    /// The layer's input as it multiplies W: (B, in) or patches (B, T, C·kh·kw).
    pub input: Tensor,
    /// ∂loss/∂output: (B, out) or, for a convolution, (B, T, out).
    pub output_grad: Tensor,
}

/// The result of [`Model::training_pass`].
#[derive(Debug)]
pub struct TrainingPass {
    /// Σ over the batch of the examples' cross-entropy losses.
    pub loss_sum: f64,
    /// One trace per DP layer, in forward order.
    pub traces: Vec<LayerTrace>,
}

/// What the forward pass saved for one layer's backward step.
enum Saved {
    Linear {
        input: Tensor,
    },
    Conv2d {
        patches: Tensor,
        input_dims: [usize; 4],
    },
    Tanh {
        output: Tensor,
    },
    Relu {
        input: Tensor,
    },
    Pool {
        input: Tensor,
    },
    Flatten {
        dims: Vec<usize>,
    },
}

/// Items per parallel task of the element-wise kernels below.
const CHUNK: usize = 1 << 14;

/// (B, T, out) rows plus a bias, laid out channels-first as (B, out, T): a convolution's
/// output in one pass (instead of a broadcast add and a strided transpose copy).
fn add_bias_channels_first(y: &Tensor, bias: &Tensor, dims: [usize; 3]) -> Result<Tensor> {
    let [b, t, out] = dims;
    let bias = with_values(bias, "conv bias", <[f32]>::to_vec)?;
    let values = with_values(y, "conv output", |y| {
        let mut dst = vec![0f32; b * t * out];
        dst.par_chunks_mut(t * out)
            .zip(y.par_chunks(t * out))
            .for_each(|(dst, y)| {
                for (o, (row, bias)) in dst.chunks_exact_mut(t).zip(&bias).enumerate() {
                    for (position, value) in row.iter_mut().enumerate() {
                        *value = y[position * out + o] + bias;
                    }
                }
            });
        dst
    })?;
    tensor(values, &[b, out, t])
}

/// (B, a, c) → (B, c, a), contiguous.
fn transpose_last(x: &Tensor, dims: [usize; 3]) -> Result<Tensor> {
    let [b, a, c] = dims;
    let values = with_values(x, "transpose", |x| {
        let mut dst = vec![0f32; b * a * c];
        dst.par_chunks_mut(a * c)
            .zip(x.par_chunks(a * c))
            .for_each(|(dst, x)| {
                for (i, row) in x.chunks_exact(c).enumerate() {
                    for (j, value) in row.iter().enumerate() {
                        dst[j * a + i] = *value;
                    }
                }
            });
        dst
    })?;
    tensor(values, &[b, c, a])
}

/// g ⊙ 1[x > 0] (ReLU's backward).
fn relu_backward(grad: &Tensor, input: &Tensor) -> Result<Tensor> {
    let values = with_values(grad, "relu backward", |g| {
        with_values(input, "relu backward", |x| {
            let mut dst = vec![0f32; g.len()];
            dst.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
                .for_each(|(dst, (g, x))| {
                    for ((d, g), x) in dst.iter_mut().zip(g).zip(x) {
                        *d = if *x > 0.0 { *g } else { 0.0 };
                    }
                });
            dst
        })
    })??;
    tensor(values, grad.dims())
}

/// Summed cross-entropy of `logits` (B, K) over the examples whose loss is finite, and its
/// gradient softmax − one-hot (B, K).
fn cross_entropy_and_gradient(logits: &Tensor, labels: &[u32]) -> Result<(f64, Tensor)> {
    let (b, k) = logits.dims2()?;
    if labels.len() != b {
        return Err(Error::Tensor(format!(
            "{} labels for a batch of {b}",
            labels.len()
        )));
    }
    let (loss, grad) = with_values(logits, "cross-entropy", |z| {
        let mut loss = 0.0f64;
        let mut grad = vec![0f32; b * k];
        for ((row, grad), &label) in z.chunks_exact(k).zip(grad.chunks_exact_mut(k)).zip(labels) {
            // log-softmax with the maximum subtracted (no overflow).
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            let log_sum = sum.ln() + max;
            // A non-finite example (NaN input, overflow) adds nothing to the monitored
            // loss; its gradient is non-finite too and the DP step drops it.
            let example_loss = f64::from(log_sum - row[label as usize]);
            if example_loss.is_finite() {
                loss += example_loss;
            }
            for (g, v) in grad.iter_mut().zip(row) {
                *g = (v - log_sum).exp();
            }
            grad[label as usize] -= 1.0;
        }
        (loss, grad)
    })?;
    Ok((loss, tensor(grad, &[b, k])?))
}

impl Model {
    /// Forward and backward pass over a batch: the summed loss and, for each DP layer, its
    /// input and output gradient. No parameter gradient is formed here.
    pub fn training_pass(&self, x: &Tensor, labels: &[u32]) -> Result<TrainingPass> {
        if let Some(&bad) = labels
            .iter()
            .find(|&&l| l as usize >= self.classes().unwrap_or(usize::MAX))
        {
            return Err(Error::Tensor(format!("label {bad} is out of range")));
        }
        let mut saved = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for layer in &self.layers {
            let (next, keep) = match layer {
                Layer::Linear(l) => {
                    let y = h
                        .matmul(&l.weight.as_tensor().detach().t()?)?
                        .broadcast_add(&l.bias.as_tensor().detach())?;
                    (y, Saved::Linear { input: h })
                }
                Layer::Conv2d(c) => {
                    let [b, channels, height, width] = h.dims4()?.into();
                    let (oh, ow) = c.geometry.output_size(height, width).ok_or_else(|| {
                        Error::Tensor(format!(
                            "conv kernel {:?} does not fit {height}×{width}",
                            c.geometry.kernel
                        ))
                    })?;
                    let patches = im2col(&h, c.geometry)?;
                    let (_, t, columns) = patches.dims3()?;
                    let out = c.weight.dim(0)?;
                    let weight = c.weight.as_tensor().detach().reshape((out, columns))?;
                    let y = patches.reshape((b * t, columns))?.matmul(&weight.t()?)?;
                    let y = add_bias_channels_first(&y, c.bias.as_tensor(), [b, t, out])?
                        .reshape((b, out, oh, ow))?;
                    (
                        y,
                        Saved::Conv2d {
                            patches,
                            input_dims: [b, channels, height, width],
                        },
                    )
                }
                Layer::Tanh => {
                    let y = tanh::tanh(&h)?;
                    (y.clone(), Saved::Tanh { output: y })
                }
                Layer::Relu => (h.relu()?, Saved::Relu { input: h }),
                Layer::MaxPool2Stride1 => {
                    (pool::max_pool_2_stride_1(&h)?, Saved::Pool { input: h })
                }
                Layer::Flatten => (
                    h.flatten_from(1)?,
                    Saved::Flatten {
                        dims: h.dims().to_vec(),
                    },
                ),
            };
            saved.push(keep);
            h = next;
        }
        let (loss_sum, mut grad) = cross_entropy_and_gradient(&h, labels)?;

        // Below the first DP layer no input gradient is needed.
        let first_dp = self
            .layers
            .iter()
            .position(|l| matches!(l, Layer::Linear(_) | Layer::Conv2d(_)))
            .unwrap_or(0);
        let mut traces = Vec::new();
        for (index, (layer, keep)) in self.layers.iter().zip(saved).enumerate().rev() {
            let needs_input_grad = index > first_dp;
            grad = match (layer, keep) {
                (Layer::Linear(l), Saved::Linear { input }) => {
                    let input_grad = if needs_input_grad {
                        Some(grad.matmul(&l.weight.as_tensor().detach())?)
                    } else {
                        None
                    };
                    traces.push(LayerTrace {
                        input,
                        output_grad: grad,
                    });
                    match input_grad {
                        Some(g) => g,
                        None => break,
                    }
                }
                (
                    Layer::Conv2d(c),
                    Saved::Conv2d {
                        patches,
                        input_dims,
                    },
                ) => {
                    let (b, t, columns) = patches.dims3()?;
                    let out = c.weight.dim(0)?;
                    let output_grad = transpose_last(&grad, [b, out, t])?;
                    let input_grad = if needs_input_grad {
                        let weight = c.weight.as_tensor().detach().reshape((out, columns))?;
                        let patch_grad = output_grad
                            .reshape((b * t, out))?
                            .matmul(&weight)?
                            .reshape((b, t, columns))?;
                        let [_, channels, height, width] = input_dims;
                        Some(col2im(&patch_grad, c.geometry, (channels, height, width))?)
                    } else {
                        None
                    };
                    traces.push(LayerTrace {
                        input: patches,
                        output_grad,
                    });
                    match input_grad {
                        Some(g) => g,
                        None => break,
                    }
                }
                (Layer::Tanh, Saved::Tanh { output }) => tanh::tanh_backward(&grad, &output)?,
                (Layer::Relu, Saved::Relu { input }) => relu_backward(&grad, &input)?,
                (Layer::MaxPool2Stride1, Saved::Pool { input }) => {
                    pool::max_pool_2_stride_1_backward(&grad, &input)?
                }
                (Layer::Flatten, Saved::Flatten { dims }) => grad.reshape(dims)?,
                _ => {
                    return Err(Error::Tensor(
                        "a layer saved the state of another kind".into(),
                    ));
                }
            };
        }
        traces.reverse();
        Ok(TrainingPass { loss_sum, traces })
    }
}
