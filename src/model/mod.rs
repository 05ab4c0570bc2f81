//! The models of design.md section 7 (the same nets as ../bench/opacus), built from config,
//! with every parameterised layer a DP layer whose per-example rule is in `grad_sample`.
//!
//! A [`Model`] is a list of [`Layer`]s. [`Model::forward`] is differentiable with candle's
//! autograd (evaluation, and the reference the tests compare with); the DP step uses
//! [`Model::training_pass`] (`backprop`), which records for each DP layer the input as it
//! multiplies the weight (a Linear's input; a Conv2d's unfolded patches) and ∂loss/∂output.
//! Layers that mix examples (batch norm) or have no per-example rule do not exist here; a
//! config asking for them is refused with the layers named ([`check_layers`]).

mod backprop;
pub mod pool;
pub mod tanh;

pub use backprop::{LayerTrace, TrainingPass};

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grad_sample::im2col::{ConvGeometry, im2col};
use crate::grad_sample::{conv2d, linear};

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Linear(784 → 10).
    Logreg,
    /// Linear(784 → 512) → ReLU → Linear(512 → 10).
    Mlp,
    /// Conv(1→16, k8, s2, p3) → act → MaxPool(2, s1) → Conv(16→32, k4, s2) → act →
    /// MaxPool(2, s1) → flatten → Linear(512 → 32) → act → Linear(32 → 10).
    Cnn,
}

/// Activation of the cnn (tanh as in the reference; Papernot et al. 2021 found tempered
/// sigmoids, of which tanh is one, better than ReLU under DP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// tanh.
    #[default]
    Tanh,
    /// max(0, x).
    Relu,
}

/// Model settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The architecture.
    pub kind: ModelKind,
    /// The cnn's activation (the mlp always uses ReLU, as the reference does).
    #[serde(default)]
    pub activation: Activation,
    /// Extra layers by name, refused unless they have a per-example rule (the only way to
    /// ask for `batch_norm`, which this check exists to refuse).
    #[serde(default)]
    pub extra_layers: Vec<String>,
    /// The mlp's hidden width (default 512, the MNIST reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
}

/// Layer names a config may list in `extra_layers`, and why the others are refused.
pub fn check_layers(names: &[String]) -> Result<()> {
    let refused: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let why = match name.as_str() {
                "batch_norm" | "batchnorm" | "batch_norm_2d" => {
                    "mixes examples within a batch, so one example's gradient depends on others"
                }
                "linear" | "conv2d" | "tanh" | "relu" | "max_pool" | "flatten" => return None,
                _ => "has no per-example gradient rule in dptrain",
            };
            Some(format!("`{name}` {why}"))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            "model.extra_layers",
            format!("{names:?}"),
            format!(
                "layers with a per-example rule only; refused: {} (use group or layer norm \
                 instead of batch norm)",
                refused.join("; ")
            ),
        ))
    }
}

/// A DP linear layer y = x Wᵀ + b, W (out, in).
#[derive(Debug, Clone)]
pub struct DpLinear {
    /// Weight (out, in).
    pub weight: Var,
    /// Bias (out).
    pub bias: Var,
}

/// A DP 2-D convolution computed as im2col patches · Wᵀ + b, W (out, C, kh, kw).
#[derive(Debug, Clone)]
pub struct DpConv2d {
    /// Weight (out, C, kh, kw).
    pub weight: Var,
    /// Bias (out).
    pub bias: Var,
    /// Window.
    pub geometry: ConvGeometry,
}

/// One layer.
#[derive(Debug, Clone)]
pub enum Layer {
    /// A DP linear layer (input flattened to (B, in)).
    Linear(DpLinear),
    /// A DP convolution on (B, C, H, W).
    Conv2d(DpConv2d),
    /// tanh.
    Tanh,
    /// ReLU.
    Relu,
    /// Max pooling over 2×2 windows with stride 1.
    MaxPool2Stride1,
    /// (B, C, H, W) → (B, C·H·W).
    Flatten,
}

/// A network of [`Layer`]s.
#[derive(Debug, Clone)]
pub struct Model {
    /// The layers, input first.
    pub layers: Vec<Layer>,
    /// Shape of one input example, e.g. [1, 28, 28].
    pub input_shape: Vec<usize>,
}

/// PyTorch's default init, so runs compare with ../bench/opacus: weight and bias
/// ~ U(−1/√fan_in, 1/√fan_in).
fn uniform(shape: &[usize], fan_in: usize, rng: &mut impl rand::Rng) -> Result<Var> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(
        values,
        shape,
        &Device::Cpu,
    )?)?)
}

impl DpLinear {
    fn new(inputs: usize, outputs: usize, rng: &mut impl rand::Rng) -> Result<Self> {
        Ok(DpLinear {
            weight: uniform(&[outputs, inputs], inputs, rng)?,
            bias: uniform(&[outputs], inputs, rng)?,
        })
    }
}

impl DpConv2d {
    fn new(
        channels: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let fan_in = channels * kernel * kernel;
        Ok(DpConv2d {
            weight: uniform(&[outputs, channels, kernel, kernel], fan_in, rng)?,
            bias: uniform(&[outputs], fan_in, rng)?,
            geometry: ConvGeometry {
                kernel: (kernel, kernel),
                stride,
                padding,
            },
        })
    }
}

impl Model {
    /// Builds the configured model for inputs of `input_shape` ([1, 28, 28] for MNIST) and
    /// `classes` outputs, initialised from `seed`.
    pub fn new(
        config: &ModelConfig,
        input_shape: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        check_layers(&config.extra_layers)?;
        match (config.kind, config.hidden) {
            (ModelKind::Mlp, Some(0)) => {
                return Err(Error::invalid("model.hidden", 0, "at least 1 hidden unit"));
            }
            (ModelKind::Logreg | ModelKind::Cnn, Some(hidden)) => {
                return Err(Error::invalid(
                    "model.hidden",
                    hidden,
                    "no hidden width: only the mlp takes one",
                ));
            }
            _ => {}
        }
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let features: usize = input_shape.iter().product();
        let act = || match config.activation {
            Activation::Tanh => Layer::Tanh,
            Activation::Relu => Layer::Relu,
        };
        let layers = match config.kind {
            ModelKind::Logreg => vec![
                Layer::Flatten,
                Layer::Linear(DpLinear::new(features, classes, &mut rng)?),
            ],
            ModelKind::Mlp => {
                let hidden = config.hidden.unwrap_or(512);
                vec![
                    Layer::Flatten,
                    Layer::Linear(DpLinear::new(features, hidden, &mut rng)?),
                    Layer::Relu,
                    Layer::Linear(DpLinear::new(hidden, classes, &mut rng)?),
                ]
            }
            ModelKind::Cnn => {
                if input_shape != [1, 28, 28] {
                    return Err(Error::invalid(
                        "model.kind",
                        "cnn",
                        format!(
                            "inputs of shape [1, 28, 28] (MNIST); the data has {input_shape:?}"
                        ),
                    ));
                }
                vec![
                    Layer::Conv2d(DpConv2d::new(1, 16, 8, 2, 3, &mut rng)?),
                    act(),
                    Layer::MaxPool2Stride1,
                    Layer::Conv2d(DpConv2d::new(16, 32, 4, 2, 0, &mut rng)?),
                    act(),
                    Layer::MaxPool2Stride1,
                    Layer::Flatten,
                    Layer::Linear(DpLinear::new(512, 32, &mut rng)?),
                    act(),
                    Layer::Linear(DpLinear::new(32, classes, &mut rng)?),
                ]
            }
        };
        Ok(Model {
            layers,
            input_shape: input_shape.to_vec(),
        })
    }

    /// All trainable parameters, layer by layer (weight, then bias).
    pub fn parameters(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|layer| match layer {
                Layer::Linear(l) => vec![l.weight.clone(), l.bias.clone()],
                Layer::Conv2d(c) => vec![c.weight.clone(), c.bias.clone()],
                _ => vec![],
            })
            .collect()
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|v| v.elem_count()).sum()
    }

    /// Logits (B, classes) for inputs (B, C, H, W) or (B, features), differentiable with
    /// respect to the parameters through candle's autograd.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Linear(l) => x
                    .matmul(&l.weight.as_tensor().t()?)?
                    .broadcast_add(l.bias.as_tensor())?,
                Layer::Conv2d(c) => {
                    let (b, _, h, w) = x.dims4()?;
                    let (oh, ow) = c.geometry.output_size(h, w).ok_or_else(|| {
                        Error::Tensor(format!(
                            "conv kernel {:?} does not fit {h}×{w}",
                            c.geometry.kernel
                        ))
                    })?;
                    let out = c.weight.dim(0)?;
                    let patches = im2col(&x, c.geometry)?;
                    let weight = c.weight.as_tensor().flatten_from(1)?;
                    patches
                        .broadcast_matmul(&weight.t()?)?
                        .broadcast_add(c.bias.as_tensor())?
                        .transpose(1, 2)?
                        .reshape((b, out, oh, ow))?
                }
                Layer::Tanh => tanh::tanh(&x)?,
                Layer::Relu => x.relu()?,
                Layer::MaxPool2Stride1 => pool::max_pool_2_stride_1(&x)?,
                Layer::Flatten => x.flatten_from(1)?,
            };
        }
        Ok(x)
    }

    /// Number of outputs (classes): the rows of the last DP layer's weight.
    pub fn classes(&self) -> Option<usize> {
        self.dp_layers().last().and_then(|layer| match layer {
            Layer::Linear(l) => l.weight.dim(0).ok(),
            Layer::Conv2d(c) => c.weight.dim(0).ok(),
            _ => None,
        })
    }

    /// The DP layers in forward order, matching the traces of [`Model::forward`].
    pub fn dp_layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers
            .iter()
            .filter(|l| matches!(l, Layer::Linear(_) | Layer::Conv2d(_)))
    }
}

/// Per-example squared gradient norm of one DP layer, (B,).
pub fn layer_sq_norms(layer: &Layer, trace: &LayerTrace) -> Result<Tensor> {
    match layer {
        Layer::Linear(_) => linear::sq_norms(&trace.input, &trace.output_grad, true),
        Layer::Conv2d(_) => conv2d::sq_norms(&trace.input, &trace.output_grad),
        _ => Err(Error::Tensor("not a DP layer".into())),
    }
}

/// Per-example norms of one DP layer, with the per-example gradients when they were
/// materialised on the way (pass them to [`layer_clipped_sums`]).
pub fn layer_per_example(layer: &Layer, trace: &LayerTrace) -> Result<linear::PerExample> {
    match layer {
        Layer::Linear(_) => linear::per_example(&trace.input, &trace.output_grad),
        Layer::Conv2d(_) => conv2d::per_example(&trace.input, &trace.output_grad),
        _ => Err(Error::Tensor("not a DP layer".into())),
    }
}

/// Clipped sums (weight, bias) of one DP layer, shaped like its parameters; reuses the
/// per-example gradients of `per_example` when it has them.
pub fn layer_clipped_sums(
    layer: &Layer,
    trace: &LayerTrace,
    factors: &Tensor,
    per_example: Option<&linear::PerExample>,
) -> Result<(Tensor, Tensor)> {
    let (input, output_grad) = (&trace.input, &trace.output_grad);
    let (weight, bias) = match per_example {
        Some(pe) => linear::clipped_sums_with(pe, input, output_grad, factors)?,
        None => linear::clipped_sums(input, output_grad, factors)?,
    };
    match layer {
        Layer::Linear(_) => Ok((weight, bias)),
        Layer::Conv2d(c) => Ok((weight.reshape(c.weight.dims4()?)?, bias)),
        _ => Err(Error::Tensor("not a DP layer".into())),
    }
}

/// Σ over the batch of the cross-entropy of each example (not the mean: per-example
/// gradients must be unscaled; the optimizer divides by the expected batch size).
pub fn summed_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.sum_all()?.neg()?)
}

/// Inputs (B, ...) for `indices` of a data set, as a tensor of the model's input shape.
pub fn batch_tensor(
    features: &[f32],
    feature_len: usize,
    indices: &[usize],
    shape: &[usize],
) -> Result<Tensor> {
    let mut values = Vec::with_capacity(indices.len() * feature_len);
    for &i in indices {
        values.extend_from_slice(&features[i * feature_len..(i + 1) * feature_len]);
    }
    let mut dims = vec![indices.len()];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}

/// Inputs and labels of the examples `indices` of `data`, as tensors.
pub fn dataset_batch(data: &crate::data::Dataset, indices: &[usize]) -> Result<(Tensor, Tensor)> {
    let (x, _) = training_batch(data, indices)?;
    Ok((x, label_tensor(&data.labels, indices)?))
}

/// Inputs of the examples `indices` of `data` as a tensor, and their labels as they go to
/// [`Model::training_pass`].
pub fn training_batch(
    data: &crate::data::Dataset,
    indices: &[usize],
) -> Result<(Tensor, Vec<u32>)> {
    let x = batch_tensor(
        &data.features,
        data.feature_len(),
        indices,
        &data.feature_shape,
    )?;
    Ok((x, indices.iter().map(|&i| data.labels[i]).collect()))
}

/// Labels (B,) as u32 for `indices`.
pub fn label_tensor(labels: &[u32], indices: &[usize]) -> Result<Tensor> {
    let values: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
    Ok(Tensor::from_vec(values, indices.len(), &Device::Cpu)?)
}

/// f32 zeros shaped like `var` (a parameter's gradient when no example was sampled).
pub fn zeros_like(var: &Var) -> Result<Tensor> {
    Ok(Tensor::zeros(var.shape(), DType::F32, &Device::Cpu)?)
}
