//! What the DP step needs of a model, as one trait: [`DpModule`].
//!
//! The DP step (`train::DpOptimizer`: sample → per-layer traces → norms → clip → sum →
//! noise → scale → optimizer) is written once against this trait, and every model tier
//! implements it: a config's or the builder's [`Model`] (hand-written backward over the
//! layer graph) and a candle model made private from DP layer wrappers
//! ([`super::private::PrivateModel`], candle's autograd with output-gradient taps). A
//! later data-parallel worker or federated client calls the same step on its own shard.
//!
//! The contract a module keeps: [`DpModule::traced_pass`] returns one [`TracedLayer`] per
//! trainable layer, always in the same order, and [`DpModule::parameters`] lists exactly
//! those layers' parameters in that order (each layer's in [`Layer::params`] order). The
//! per-example rule of each layer then reads only its trace: no step forms a batch
//! gradient that it would have to take apart.

use std::sync::Arc;

use candle_core::{Tensor, Var};

use super::layer::{Layer, NormMode, PerExample, Trace};
use super::{Model, training_batch};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// One trainable layer after a training pass.
#[derive(Debug)]
pub struct TracedLayer {
    /// Its path (the prefix of its parameters' names).
    pub path: String,
    /// The layer, whose per-example rule reads `trace`.
    pub layer: Arc<dyn Layer>,
    /// How its per-example norms are computed.
    pub norm: NormMode,
    /// What its backward left; None when the layer took no part in this pass (its
    /// per-example gradients are zero).
    pub trace: Option<Trace>,
}

impl TracedLayer {
    /// This layer's per-example squared norms (zeros for a layer not in the pass).
    pub fn per_example(&self, batch: usize) -> Result<PerExample> {
        match &self.trace {
            Some(trace) => self.layer.per_example(trace, self.norm),
            None => Ok(PerExample {
                sq_norms: vec![0.0; batch],
                state: None,
            }),
        }
    }
}

/// The result of [`DpModule::traced_pass`].
#[derive(Debug)]
pub struct TracedPass {
    /// Σ over the batch of the finite examples' cross-entropy losses (monitoring only).
    pub loss_sum: f64,
    /// The trainable layers, in the module's fixed order.
    pub layers: Vec<TracedLayer>,
}

/// A model the DP step can train (see the module for the contract).
pub trait DpModule: Sync {
    /// The trainable parameters, layer by layer in trace order.
    fn parameters(&self) -> Vec<Var>;

    /// Every parameter with its safetensors name `<path>.<name>`.
    fn named_parameters(&self) -> Vec<(String, Var)>;

    /// Logits (B, classes) for evaluation (dropout off).
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// A training pass over a batch: forward, summed cross-entropy with `labels`, backward,
    /// and each trainable layer's trace. `example_ids` (one per example) and `mask_seed`
    /// fix random masks (dropout) per example and step.
    fn traced_pass(
        &self,
        x: &Tensor,
        labels: &[u32],
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<TracedPass>;
}

impl DpModule for Model {
    fn parameters(&self) -> Vec<Var> {
        Model::parameters(self)
    }

    fn named_parameters(&self) -> Vec<(String, Var)> {
        Model::named_parameters(self)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Model::forward(self, x)
    }

    fn traced_pass(
        &self,
        x: &Tensor,
        labels: &[u32],
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<TracedPass> {
        let ctx = self.context(x, true, example_ids, mask_seed)?;
        let pass = self.training_pass_with(x, labels, &ctx)?;
        let layers = self
            .trainable_layers()
            .into_iter()
            .zip(pass.traces)
            .map(|(node, trace)| TracedLayer {
                path: node.path.clone(),
                layer: node.layer.clone(),
                norm: node.norm,
                trace: Some(trace),
            })
            .collect();
        Ok(TracedPass {
            loss_sum: pass.loss_sum,
            layers,
        })
    }
}

/// Per-example gradient norms ‖∇θ_i‖ over all trainable parameters, for the examples
/// `indices` of `data` (diagnostics and tests: the quantity flat clipping bounds).
pub fn per_example_norms(
    module: &dyn DpModule,
    data: &Dataset,
    indices: &[usize],
) -> Result<Vec<f64>> {
    let (x, labels) = training_batch(data, indices)?;
    let ids = indices.iter().map(|&i| i as u64).collect();
    let pass = module.traced_pass(&x, &labels, ids, 0)?;
    let mut total = vec![0.0f64; indices.len()];
    for layer in &pass.layers {
        for (t, n) in total
            .iter_mut()
            .zip(layer.per_example(indices.len())?.sq_norms)
        {
            *t += n;
        }
    }
    Ok(total.into_iter().map(f64::sqrt).collect())
}

/// The batch-independence check: every example's per-example squared norms (per trainable
/// layer) in the batch `x` equal those of the same example run alone, within `tolerance`
/// relative. A layer that mixes examples (a batch statistic in user code) fails it, named.
pub fn check_batch_independence(
    module: &dyn DpModule,
    x: &Tensor,
    labels: &[u32],
    tolerance: f64,
) -> Result<()> {
    let b = x.dim(0)?;
    let norms_of = |x: &Tensor, labels: &[u32], ids: Vec<u64>| -> Result<Vec<(String, Vec<f64>)>> {
        let batch = ids.len();
        let pass = module.traced_pass(x, labels, ids, 0)?;
        pass.layers
            .iter()
            .map(|layer| Ok((layer.path.clone(), layer.per_example(batch)?.sq_norms)))
            .collect()
    };
    let together = norms_of(x, labels, (0..b as u64).collect())?;
    for i in 0..b {
        let alone = norms_of(&x.narrow(0, i, 1)?, &labels[i..=i], vec![i as u64])?;
        for ((path, batch), (_, single)) in together.iter().zip(&alone) {
            let (a, s) = (batch[i], single[0]);
            if (a - s).abs() > tolerance * s.abs().max(1e-12) {
                return Err(Error::Model {
                    path: path.clone(),
                    message: format!(
                        "example {i}'s squared gradient norm is {a} in the batch but {s} alone: \
                         something in the model mixes examples, which DP-SGD's per-example \
                         clipping cannot allow"
                    ),
                });
            }
        }
    }
    Ok(())
}
