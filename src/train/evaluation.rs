//! Using a trained model again (issue 18): its weights loaded strictly into the model its
//! config builds, its figures on a data set (loss, accuracy, a confusion matrix, AUC for two
//! classes) computed exactly as training computed them, and its predictions.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::trainer::{BinaryMetrics, EVALUATION_CHUNK, binary_from_scores, evaluate_chunk_logits};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::DpModule;

/// Loads `file` (safetensors, as [`super::save_model`] writes it) into `model`'s parameters.
/// Every parameter must be there with its exact shape and dtype, and nothing else may be:
/// a file of another config is refused naming the first tensor that differs. Nothing of
/// `model` changes unless every tensor fits.
pub fn load_weights(model: &dyn DpModule, file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let invalid = |location: &str, message: String| Error::Parse {
        path: file.to_path_buf(),
        location: location.to_string(),
        message,
    };
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).map_err(|e| {
            invalid(
                "safetensors",
                format!("not a complete safetensors file ({e})"),
            )
        })?;
    let parameters = model.named_parameters();
    for (name, var) in &parameters {
        let saved = tensors.get(name).ok_or_else(|| {
            invalid(
                name,
                format!(
                    "missing: the model of config.toml has this parameter (shape {:?})",
                    var.dims()
                ),
            )
        })?;
        if saved.dims() != var.dims() {
            return Err(invalid(
                name,
                format!(
                    "shape {:?}, but the model of config.toml needs {:?}",
                    saved.dims(),
                    var.dims()
                ),
            ));
        }
        if saved.dtype() != var.dtype() {
            return Err(invalid(
                name,
                format!(
                    "dtype {:?}, but the model of config.toml is {:?}",
                    saved.dtype(),
                    var.dtype()
                ),
            ));
        }
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if !parameters.iter().any(|(p, _)| p == name) {
            return Err(invalid(
                name,
                "not a parameter of the model that config.toml builds (a model file of \
                 another config?)"
                    .into(),
            ));
        }
    }
    for (name, var) in &parameters {
        var.set(&tensors[name])?;
    }
    Ok(())
}

/// A model's figures on a data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Number of classes.
    pub classes: usize,
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Share of examples whose largest logit is their label's.
    pub accuracy: f64,
    /// `confusion[true][predicted]`: example counts.
    pub confusion: Vec<Vec<u64>>,
    /// Two classes: AUC and positive rates.
    pub binary: Option<BinaryMetrics>,
}

/// [`Evaluation`] of `model` on `data`. The loss and accuracy are those training reports
/// ([`super::evaluate`]: the same chunks of examples, the same kernels and sums), so a run's
/// model reproduces its summary exactly; the confusion matrix and the scores come from the
/// same logits.
pub fn evaluate_detailed(model: &dyn DpModule, data: &Dataset) -> Result<Evaluation> {
    let classes = data.classes;
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut scores = Vec::new();
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(EVALUATION_CHUNK) {
        let (chunk_loss, hits, logits) = evaluate_chunk_logits(model, data, chunk)?;
        loss += chunk_loss;
        correct += hits;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        for (&i, &p) in chunk.iter().zip(&predicted) {
            confusion[data.labels[i] as usize][p as usize] += 1;
        }
        if classes == 2 {
            let logits = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            scores.extend(logits.iter().map(|l| l[1] - l[0]));
        }
    }
    let n = data.len().max(1) as f64;
    let binary = match classes == 2 && !data.is_empty() {
        true => binary_from_scores(&scores, &data.labels),
        false => None,
    };
    Ok(Evaluation {
        examples: data.len(),
        classes,
        loss: loss / n,
        accuracy: correct as f64 / n,
        confusion,
        binary,
    })
}

/// One example's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The class of the largest logit (the first on a tie, as evaluation counts it).
    pub class: u32,
    /// Softmax of the logits, in f64 (max-shifted).
    pub probabilities: Vec<f64>,
}

/// The predictions of `model` for every example of `data` (its labels are not read).
pub fn predict(model: &dyn DpModule, data: &Dataset) -> Result<Vec<Prediction>> {
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(EVALUATION_CHUNK) {
        let (x, _) = crate::model::dataset_batch(data, chunk)?;
        let logits = model.forward(&x)?;
        let classes = logits.argmax(1)?.to_vec1::<u32>()?;
        let rows = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        for (class, row) in classes.into_iter().zip(rows) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = row.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = exp.iter().sum();
            out.push(Prediction {
                class,
                probabilities: exp.iter().map(|e| e / total).collect(),
            });
        }
    }
    Ok(out)
}
