//! The training pass: forward, summed cross-entropy, and the hand-written backward of
//! every layer kind, leaving for each trainable layer the trace its per-example rule reads
//! (no parameter gradient is formed: the DP step builds those as clipped sums).
//!
//! Why not candle's autograd: it drops the gradients of intermediate tensors (so G had to be
//! read off a zero "probe" added to every layer output), and it accumulates every gradient
//! edge as `zeros_like + add`, also for inputs that need no gradient. On the cnn that made
//! the backward pass three times as slow as the forward pass. [`Model::forward`] keeps
//! candle's autograd, and the tests check this pass against it (tests/it/layers.rs).
//!
//! A residual y = then(body(x) + shortcut(x)) sends the gradient of the sum to both
//! branches and adds their input gradients. Below the first trainable layer no input
//! gradient is computed.

use candle_core::Tensor;

use super::layer::{Context, Saved, Trace};
use super::{Model, Node};
use crate::error::{Error, Result};
use crate::grad_sample::{tensor, with_values};
use crate::real::{Real, real};

/// The result of [`Model::training_pass`].
#[derive(Debug)]
pub struct TrainingPass {
    /// Σ over the batch of the examples' cross-entropy losses.
    pub loss_sum: f64,
    /// One trace per trainable layer, in slot order ([`Model::trainable_layers`]).
    pub traces: Vec<Trace>,
}

/// What the forward pass saved for one node.
enum SavedNode {
    Layer(Saved),
    Residual {
        body: Vec<SavedNode>,
        shortcut: Vec<SavedNode>,
        then: Option<Saved>,
    },
}

/// Summed cross-entropy of `logits` (B, K) over the examples whose loss is finite, and its
/// gradient softmax − one-hot (B, K).
fn cross_entropy_and_gradient(logits: &Tensor, labels: &[u32]) -> Result<(f64, Tensor)> {
    real!(
        logits.dtype(),
        "cross-entropy",
        |T| cross_entropy_typed::<T>(logits, labels)
    )
}

fn cross_entropy_typed<T: Real>(logits: &Tensor, labels: &[u32]) -> Result<(f64, Tensor)> {
    let (b, k) = logits.dims2()?;
    if labels.len() != b {
        return Err(Error::Tensor(format!(
            "{} labels for a batch of {b}",
            labels.len()
        )));
    }
    let (loss, grad) = with_values(logits, "cross-entropy", |z: &[T]| {
        let mut loss = 0.0f64;
        let mut grad = vec![T::zero(); b * k];
        for ((row, grad), &label) in z.chunks_exact(k).zip(grad.chunks_exact_mut(k)).zip(labels) {
            // log-softmax with the maximum subtracted (no overflow).
            let max = row
                .iter()
                .copied()
                .fold(T::neg_infinity(), num_traits::Float::max);
            let sum: T = row.iter().map(|&v| (v - max).exp()).sum();
            let log_sum = sum.ln() + max;
            // A non-finite example (NaN input, overflow) adds nothing to the monitored
            // loss; its gradient is non-finite too and the DP step drops it.
            let example_loss = (log_sum - row[label as usize]).wide();
            if example_loss.is_finite() {
                loss += example_loss;
            }
            for (g, &v) in grad.iter_mut().zip(row) {
                *g = (v - log_sum).exp();
            }
            grad[label as usize] -= T::one();
        }
        (loss, grad)
    })?;
    Ok((loss, tensor(grad, &[b, k])?))
}

fn forward_list(nodes: &[Node], x: &Tensor, ctx: &Context) -> Result<(Tensor, Vec<SavedNode>)> {
    let mut saved = Vec::with_capacity(nodes.len());
    let mut h = x.clone();
    for node in nodes {
        let (next, keep) = match node {
            Node::Layer(l) => {
                let (y, s) = l
                    .layer
                    .train_forward(&h, ctx)
                    .map_err(|e| super::at_layer(&l.path, e))?;
                (y, SavedNode::Layer(s))
            }
            Node::Residual(r) => {
                let (body_out, body) = forward_list(&r.body, &h, ctx)?;
                let (short_out, shortcut) = match r.shortcut.is_empty() {
                    true => (h.clone(), Vec::new()),
                    false => forward_list(&r.shortcut, &h, ctx)?,
                };
                let sum = (body_out + short_out)?;
                let (y, then) = match &r.then {
                    Some(then) => {
                        let (y, s) = then
                            .layer
                            .train_forward(&sum, ctx)
                            .map_err(|e| super::at_layer(&then.path, e))?;
                        (y, Some(s))
                    }
                    None => (sum, None),
                };
                (
                    y,
                    SavedNode::Residual {
                        body,
                        shortcut,
                        then,
                    },
                )
            }
        };
        saved.push(keep);
        h = next;
    }
    Ok((h, saved))
}

/// Backward through `nodes`, filling `traces` by slot; the input gradient, or None when
/// nothing before these nodes needs it.
fn backward_list(
    nodes: &[Node],
    saved: Vec<SavedNode>,
    mut grad: Tensor,
    traces: &mut [Option<Trace>],
) -> Result<Option<Tensor>> {
    for (node, keep) in nodes.iter().zip(saved).rev() {
        grad = match (node, keep) {
            (Node::Layer(l), SavedNode::Layer(s)) => {
                let (input_grad, trace) =
                    l.layer
                        .backward(s, grad, l.needs_input_grad, l.slot.is_some())?;
                if let (Some(slot), Some(trace)) = (l.slot, trace) {
                    traces[slot] = Some(trace);
                }
                match input_grad {
                    Some(g) if l.needs_input_grad => g,
                    _ => return Ok(None),
                }
            }
            (
                Node::Residual(r),
                SavedNode::Residual {
                    body,
                    shortcut,
                    then,
                },
            ) => {
                let sum_grad = match (&r.then, then) {
                    (Some(l), Some(s)) => {
                        l.layer.backward(s, grad, true, false)?.0.ok_or_else(|| {
                            Error::Tensor(format!("{}: no input gradient", l.path))
                        })?
                    }
                    _ => grad,
                };
                let body_grad = backward_list(&r.body, body, sum_grad.clone(), traces)?;
                let short_grad = match r.shortcut.is_empty() {
                    true => Some(sum_grad),
                    false => backward_list(&r.shortcut, shortcut, sum_grad, traces)?,
                };
                if !r.needs_input_grad {
                    return Ok(None);
                }
                match (body_grad, short_grad) {
                    (Some(a), Some(b)) => (a + b)?,
                    _ => {
                        return Err(Error::Tensor(format!(
                            "{}: a branch lost its gradient",
                            r.path
                        )));
                    }
                }
            }
            _ => {
                return Err(Error::Tensor(
                    "a node saved the state of another kind".into(),
                ));
            }
        };
    }
    Ok(Some(grad))
}

impl Model {
    /// Forward and backward pass over a batch: the summed loss and, for each trainable
    /// layer, its trace. No parameter gradient is formed here.
    pub fn training_pass(&self, x: &Tensor, labels: &[u32]) -> Result<TrainingPass> {
        let ctx = self.context(x, true, Vec::new(), 0)?;
        self.training_pass_with(x, labels, &ctx)
    }

    /// [`Model::training_pass`] in a given context (example ids and the step's mask seed).
    pub fn training_pass_with(
        &self,
        x: &Tensor,
        labels: &[u32],
        ctx: &Context,
    ) -> Result<TrainingPass> {
        let classes = self.classes().unwrap_or(usize::MAX);
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Tensor(format!("label {bad} is out of range")));
        }
        let x = x.to_dtype(self.dtype())?;
        let (logits, saved) = forward_list(&self.nodes, &x, ctx)?;
        let (loss_sum, grad) = cross_entropy_and_gradient(&logits, labels)?;
        let mut traces: Vec<Option<Trace>> = (0..self.trainable_count()).map(|_| None).collect();
        backward_list(&self.nodes, saved, grad, &mut traces)?;
        let traces = traces
            .into_iter()
            .enumerate()
            .map(|(slot, t)| {
                t.ok_or_else(|| Error::Tensor(format!("no trace for trainable layer {slot}")))
            })
            .collect::<Result<_>>()?;
        Ok(TrainingPass { loss_sum, traces })
    }
}
