//! The layer kinds, one file each, and [`build`]: a [`LayerSpec`] from a config (or the
//! builder) plus the shape of its input → a [`Layer`].
//!
//! Each layer's input width is inferred from the shape flowing into it; configs write
//! outputs only. Kinds that would mix examples, or have no per-example rule, are refused
//! here with the fix in the message.

pub mod activation;
pub mod conv2d;
pub mod dropout;
pub mod embedding;
pub mod embedding_bag;
pub mod flatten;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod pool;
pub mod positional_embedding;
pub mod self_attention;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grad_sample::{tensor, wide_values, with_values};
use crate::model::layer::{Layer, PerExample};
use crate::real::{Real, real};

pub use embedding_bag::BagMode;

/// A convolution's padding: a size, or `"same"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Padding {
    /// Zeros on each side.
    Size(usize),
    /// `"same"`: the output keeps the input's size (stride 1, odd receptive field).
    Named(String),
}

impl Default for Padding {
    fn default() -> Self {
        Padding::Size(0)
    }
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn norm_eps() -> f64 {
    1e-5
}
fn rms_eps() -> f64 {
    1e-6
}

/// One layer of a model, as a config line describes it (without its `name` and `norm`,
/// which the model graph keeps). Widths in are inferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// y = x Wᵀ + b over the last axis.
    Linear {
        /// Output width.
        out_features: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 2-D convolution.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Square kernel side.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding or "same" (default 0).
        #[serde(default)]
        padding: Padding,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: usize,
        /// Channel groups (default 1).
        #[serde(default = "one")]
        groups: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// 1-D convolution over (C, L).
    Conv1d {
        /// Output channels.
        out_channels: usize,
        /// Kernel length.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding or "same" (default 0).
        #[serde(default)]
        padding: Padding,
        /// Dilation (default 1).
        #[serde(default = "one")]
        dilation: usize,
        /// Channel groups (default 1).
        #[serde(default = "one")]
        groups: usize,
        /// With a bias (default true).
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Group normalisation over (C, ...).
    GroupNorm {
        /// Groups (must divide C).
        groups: usize,
        /// Variance epsilon (default 1e-5).
        #[serde(default = "norm_eps")]
        eps: f64,
    },
    /// Instance normalisation (group_norm with groups = C).
    InstanceNorm {
        /// Variance epsilon (default 1e-5).
        #[serde(default = "norm_eps")]
        eps: f64,
        /// Running statistics: refused (they mix examples across batches).
        #[serde(default)]
        running_stats: bool,
    },
    /// Layer normalisation over the last axis.
    LayerNorm {
        /// Variance epsilon (default 1e-5).
        #[serde(default = "norm_eps")]
        eps: f64,
    },
    /// RMS normalisation over the last axis.
    RmsNorm {
        /// Mean-square epsilon (default 1e-6).
        #[serde(default = "rms_eps")]
        eps: f64,
    },
    /// Batch normalisation: refused with its replacement (whatever its fields).
    BatchNorm {},
    /// Token ids (T) → (T, D).
    Embedding {
        /// Row width D.
        dim: usize,
        /// The padding id (a zero row that never learns).
        #[serde(default)]
        padding_idx: Option<u32>,
    },
    /// Token ids (T) → (D), the sum or mean of the rows of the real tokens.
    EmbeddingBag {
        /// Row width D.
        dim: usize,
        /// "mean" (default) or "sum".
        #[serde(default)]
        mode: BagMode,
        /// The padding id (excluded from the bag).
        #[serde(default)]
        padding_idx: Option<u32>,
    },
    /// Learned positions added to (T, D).
    PositionalEmbedding {
        /// Positions the table holds (≥ T).
        max_len: usize,
    },
    /// Multi-head self-attention over (T, D): four sequence linear maps and a core.
    SelfAttention {
        /// Heads (divide D).
        heads: usize,
        /// Mask later positions (default false).
        #[serde(default)]
        causal: bool,
    },
    /// max(0, x).
    Relu {},
    /// tanh.
    Tanh {},
    /// x·Φ(x).
    Gelu {},
    /// 1/(1 + e^−x).
    Sigmoid {},
    /// x² (a polynomial activation, for secret-shared inference).
    Square {},
    /// (d1, d2, ...) → (d1·d2·...).
    Flatten {},
    /// Max over k×k windows.
    MaxPool2d {
        /// Window side.
        kernel: usize,
        /// Stride (default: the kernel).
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Mean over k×k windows at stride k.
    AvgPool2d {
        /// Window side and stride.
        kernel: usize,
        /// Stride: only the kernel is accepted.
        #[serde(default)]
        stride: Option<usize>,
    },
    /// (C, H, W) → (C).
    GlobalAvgPool {},
    /// (T, D) → (D), over real tokens when masked (default true).
    MeanPool {
        /// Average over real tokens only.
        #[serde(default = "yes")]
        masked: bool,
    },
    /// Dropout with probability p.
    Dropout {
        /// Drop probability in [0, 1).
        p: f64,
    },
}

/// The kinds a config may name, for messages.
pub const KINDS: &[&str] = &[
    "linear",
    "conv2d",
    "conv1d",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "rms_norm",
    "embedding",
    "embedding_bag",
    "positional_embedding",
    "self_attention",
    "relu",
    "tanh",
    "gelu",
    "sigmoid",
    "square",
    "flatten",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "mean_pool",
    "dropout",
    "block",
    "residual",
];

/// What a layer's construction may read besides its input shape.
#[derive(Debug, Clone, Copy)]
pub struct BuildInput<'a> {
    /// Shape of one example's input to this layer.
    pub shape: &'a [usize],
    /// The vocabulary size of token inputs.
    pub vocab: Option<usize>,
    /// The element type of the parameters (f32 or f64).
    pub dtype: DType,
}

/// Builds one layer, or says why not (the caller adds the layer's path).
pub fn build(
    spec: &LayerSpec,
    input: BuildInput,
    rng: &mut impl rand::Rng,
) -> Result<Arc<dyn Layer>> {
    use activation::{Activation, Function};
    let shape = input.shape;
    let dtype = input.dtype;
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(refuse(format!("dtype {dtype:?}: f32 or f64")));
    }
    let image = || match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(refuse(format!(
            "inputs of shape (C, H, W); this layer gets {shape:?}"
        ))),
    };
    let layer: Arc<dyn Layer> = match spec {
        LayerSpec::Linear { out_features, bias } => {
            positive("out_features", *out_features)?;
            if shape.is_empty() || shape.len() > 2 {
                return Err(refuse(format!(
                    "inputs of shape (d) or (T, d); this layer gets {shape:?} (add a flatten \
                     before it)"
                )));
            }
            Arc::new(linear::Linear::new(
                shape,
                *out_features,
                *bias,
                dtype,
                rng,
            )?)
        }
        LayerSpec::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            positive("out_channels", *out_channels)?;
            positive("kernel", *kernel)?;
            let pad = resolve_padding(padding, *kernel, *dilation, *stride)?;
            let options = conv2d::ConvOptions {
                out_channels: *out_channels,
                kernel: (*kernel, *kernel),
                stride: *stride,
                padding: (pad, pad),
                dilation: *dilation,
                groups: *groups,
                bias: *bias,
            };
            Arc::new(conv2d::Conv2d::new(image()?, options, false, dtype, rng)?)
        }
        LayerSpec::Conv1d {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } => {
            positive("out_channels", *out_channels)?;
            positive("kernel", *kernel)?;
            let [c, l] = shape else {
                return Err(refuse(format!(
                    "inputs of shape (C, L); this layer gets {shape:?}"
                )));
            };
            let pad = resolve_padding(padding, *kernel, *dilation, *stride)?;
            let options = conv2d::ConvOptions {
                out_channels: *out_channels,
                kernel: (1, *kernel),
                stride: *stride,
                padding: (0, pad),
                dilation: *dilation,
                groups: *groups,
                bias: *bias,
            };
            Arc::new(conv2d::Conv2d::new((*c, 1, *l), options, true, dtype, rng)?)
        }
        LayerSpec::GroupNorm { groups, eps } => {
            channels_first(shape)?;
            Arc::new(group_norm::GroupNorm::new(
                shape, *groups, *eps, false, dtype,
            )?)
        }
        LayerSpec::InstanceNorm { eps, running_stats } => {
            if *running_stats {
                return Err(refuse(
                    "running statistics mix examples across batches and are not accounted \
                     for; set running_stats = false (normalise each example by its own \
                     statistics)",
                ));
            }
            channels_first(shape)?;
            Arc::new(group_norm::GroupNorm::new(
                shape, shape[0], *eps, true, dtype,
            )?)
        }
        LayerSpec::LayerNorm { eps } => {
            Arc::new(layer_norm::LayerNorm::new(shape, *eps, false, dtype)?)
        }
        LayerSpec::RmsNorm { eps } => {
            Arc::new(layer_norm::LayerNorm::new(shape, *eps, true, dtype)?)
        }
        LayerSpec::BatchNorm {} => {
            let fix = match shape.first() {
                Some(&c) => format!(
                    "use {{ kind = \"group_norm\", groups = {} }} (gcd(32, C) for C = {c}, \
                     Opacus's replacement)",
                    gcd(32, c)
                ),
                None => "use group_norm with groups = gcd(32, C)".into(),
            };
            return Err(refuse(format!(
                "batch_norm mixes the examples of a batch (each example's output depends on \
                 the others), so per-example gradients and their clipping do not exist; {fix}"
            )));
        }
        LayerSpec::Embedding { dim, padding_idx }
        | LayerSpec::EmbeddingBag {
            dim, padding_idx, ..
        } => {
            positive("dim", *dim)?;
            let [len] = shape else {
                return Err(refuse(format!(
                    "token ids of shape (T); this layer gets {shape:?} (an embedding comes \
                     first, on `tokens` data)"
                )));
            };
            let vocab = input.vocab.ok_or_else(|| {
                refuse("token data (the data set has no vocabulary: use `tokens` data)")
            })?;
            if let Some(pad) = padding_idx
                && *pad as usize >= vocab
            {
                return Err(refuse(format!(
                    "padding_idx = {pad} is beyond the vocabulary of {vocab} tokens"
                )));
            }
            match spec {
                LayerSpec::EmbeddingBag { mode, .. } => Arc::new(embedding_bag::EmbeddingBag::new(
                    vocab,
                    *dim,
                    *mode,
                    *padding_idx,
                    dtype,
                    rng,
                )?),
                _ => Arc::new(embedding::Embedding::new(
                    *len,
                    vocab,
                    *dim,
                    *padding_idx,
                    dtype,
                    rng,
                )?),
            }
        }
        LayerSpec::PositionalEmbedding { max_len } => Arc::new(
            positional_embedding::PositionalEmbedding::new(shape, *max_len, dtype, rng)?,
        ),
        LayerSpec::SelfAttention { heads, causal } => Arc::new(self_attention::SelfAttention::new(
            shape, *heads, *causal, dtype, rng,
        )?),
        LayerSpec::Relu {} => Arc::new(Activation::new(Function::Relu, shape)),
        LayerSpec::Tanh {} => Arc::new(Activation::new(Function::Tanh, shape)),
        LayerSpec::Gelu {} => Arc::new(Activation::new(Function::Gelu, shape)),
        LayerSpec::Sigmoid {} => Arc::new(Activation::new(Function::Sigmoid, shape)),
        LayerSpec::Square {} => Arc::new(Activation::new(Function::Square, shape)),
        LayerSpec::Flatten {} => Arc::new(flatten::Flatten::new(shape)),
        LayerSpec::MaxPool2d { kernel, stride } => Arc::new(pool::MaxPool2d::new(
            image()?,
            *kernel,
            stride.unwrap_or(*kernel),
        )?),
        LayerSpec::AvgPool2d { kernel, stride } => {
            if let Some(stride) = stride
                && stride != kernel
            {
                return Err(refuse(format!(
                    "avg_pool2d takes stride = kernel only (non-overlapping windows); got \
                     kernel {kernel}, stride {stride}"
                )));
            }
            Arc::new(pool::AvgPool2d::new(image()?, *kernel)?)
        }
        LayerSpec::GlobalAvgPool {} => {
            channels_first(shape)?;
            Arc::new(pool::GlobalAvgPool::new(shape))
        }
        LayerSpec::MeanPool { masked } => {
            if shape.len() != 2 {
                return Err(refuse(format!(
                    "inputs of shape (T, D); this layer gets {shape:?}"
                )));
            }
            Arc::new(pool::MeanPool::new(shape, *masked))
        }
        LayerSpec::Dropout { p } => {
            if !(0.0..1.0).contains(p) {
                return Err(refuse(format!("p = {p}: a probability in [0, 1)")));
            }
            Arc::new(dropout::Dropout::new(*p, shape))
        }
    };
    Ok(layer)
}

/// A refusal raised while a layer is built, before its path is known: an
/// [`Error::Model`] with an empty path, which the caller (the model's builder,
/// `DpLayers::add`) fills in with [`crate::model::at_layer`].
pub(crate) fn refuse(message: impl Into<String>) -> Error {
    Error::Model {
        path: String::new(),
        message: message.into(),
    }
}

fn positive(field: &str, value: usize) -> Result<()> {
    match value {
        0 => Err(refuse(format!("{field} = 0: at least 1"))),
        _ => Ok(()),
    }
}

fn channels_first(shape: &[usize]) -> Result<()> {
    match shape.len() {
        2.. => Ok(()),
        _ => Err(refuse(format!(
            "inputs with channels and positions, (C, ...); this layer gets {shape:?}"
        ))),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn resolve_padding(
    padding: &Padding,
    kernel: usize,
    dilation: usize,
    stride: usize,
) -> Result<usize> {
    match padding {
        Padding::Size(p) => Ok(*p),
        Padding::Named(name) if name == "same" => {
            if stride != 1 {
                return Err(refuse(format!(
                    "padding = \"same\" needs stride 1, got {stride}"
                )));
            }
            conv2d::same_padding(kernel, dilation)
        }
        Padding::Named(other) => Err(refuse(format!(
            "padding = {other:?}: a number of zeros or \"same\""
        ))),
    }
}

/// The most bytes that one tensor of a model may take: a parameter when the layer is built,
/// or one layer's activations at the configured batch
/// ([`crate::model::Model::check_activations`]). A fixed 2^34 bytes (16 GiB), not the
/// machine's free memory, so that a config is accepted or refused alike on every machine:
/// far above what this CPU trainer trains, it stops a size typed with extra zeros before
/// the allocation aborts the process.
pub const MAX_TENSOR_BYTES: u64 = 1 << 34;

/// Refuses a tensor of `shape` and `dtype` larger than [`MAX_TENSOR_BYTES`], naming `what`
/// it is and its size.
pub(crate) fn check_tensor_size(what: &str, shape: &[usize], dtype: DType) -> Result<()> {
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
            n.checked_mul(d as u64)
        });
    match bytes {
        Some(bytes) if bytes <= MAX_TENSOR_BYTES => Ok(()),
        Some(bytes) => Err(refuse(format!(
            "{what} of shape {shape:?} would take {bytes} bytes ({:.1} GiB), more than the \
             {MAX_TENSOR_BYTES} bytes (16 GiB) dptrain allows one tensor: is a size mistyped?",
            bytes as f64 / (1u64 << 30) as f64
        ))),
        None => Err(refuse(format!(
            "{what} of shape {shape:?} has more elements than a 64-bit count holds: is a \
             size mistyped?"
        ))),
    }
}

/// PyTorch's default init: U(−1/√fan_in, 1/√fan_in), drawn in f32 whatever the `dtype`
/// (an f64 model starts from the same values as its f32 twin). Refuses, before allocating,
/// a parameter larger than [`MAX_TENSOR_BYTES`].
pub(crate) fn uniform(
    shape: &[usize],
    fan_in: usize,
    dtype: DType,
    rng: &mut impl rand::Rng,
) -> Result<Var> {
    check_tensor_size("a parameter", shape, dtype)?;
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Ok(Var::from_tensor(
        &Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?,
    )?)
}

/// N(0, std²) values (rows × cols), with row `zero_row` set to 0 (a padding row). Refuses,
/// before allocating, a parameter larger than [`MAX_TENSOR_BYTES`].
pub(crate) fn normal(
    shape: &[usize],
    std: f32,
    zero_row: Option<u32>,
    dtype: DType,
    rng: &mut impl rand::Rng,
) -> Result<Var> {
    check_tensor_size("a parameter", shape, dtype)?;
    use rand_distr::Distribution;
    let normal = rand_distr::Normal::new(0.0f32, std)
        .map_err(|e| Error::Tensor(format!("normal init: {e}")))?;
    let n: usize = shape.iter().product();
    let mut values: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
    if let Some(row) = zero_row {
        let width = n / shape[0].max(1);
        values[row as usize * width..(row as usize + 1) * width].fill(0.0);
    }
    Ok(Var::from_tensor(
        &Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?,
    )?)
}

/// The parameters of a layer with a weight and an optional bias, in that order.
pub(crate) fn weight_and_bias(weight: &Var, bias: Option<&Var>) -> Vec<crate::model::Param> {
    let mut params = vec![crate::model::Param {
        name: "weight",
        var: weight.clone(),
    }];
    if let Some(bias) = bias {
        params.push(crate::model::Param {
            name: "bias",
            var: bias.clone(),
        });
    }
    params
}

/// A parameter's values outside candle's graph (the training pass builds no graph).
pub(crate) fn detached(var: &Var) -> Tensor {
    var.as_tensor().detach()
}

/// Token ids from a (B, T) tensor of whole numbers, each checked against the vocabulary.
pub(crate) fn token_ids(x: &Tensor, vocab: usize) -> Result<Vec<u32>> {
    let values = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    values
        .into_iter()
        .map(|v| {
            if v >= 0.0 && v.fract() == 0.0 && (v as usize) < vocab {
                Ok(v as u32)
            } else {
                Err(Error::Tensor(format!(
                    "token id {v} is not in the vocabulary of {vocab} tokens (0 to {})",
                    vocab.saturating_sub(1)
                )))
            }
        })
        .collect()
}

/// Per-example gradients themselves, one (B, ...) tensor per parameter: the rule of
/// layers whose parameters are small (norms, positions).
pub(crate) struct Materialised(pub(crate) Vec<Tensor>);

/// Σ over parameters of ‖∇θ_i‖² from materialised gradients.
pub(crate) fn materialised_norms(m: &Materialised) -> Result<PerExample> {
    let b = m.0.first().map(|t| t.dim(0)).transpose()?.unwrap_or(0);
    // Summed in the gradients' dtype (an f32 model's norms as they always were).
    let mut total: Option<Tensor> = None;
    for grads in &m.0 {
        let norms = grads.flatten_from(1)?.sqr()?.sum(1)?;
        total = Some(match total {
            Some(t) => (t + norms)?,
            None => norms,
        });
    }
    Ok(PerExample {
        sq_norms: match total {
            Some(t) => wide_values(&t)?,
            None => vec![0.0; b],
        },
        state: None,
    })
}

/// Σ_i c_i ∇θ_i from materialised gradients, each shaped like its parameter; examples
/// with factor 0 (dropped as non-finite) add nothing.
pub(crate) fn materialised_sums(m: &Materialised, factors: &[f64]) -> Result<Vec<Tensor>> {
    m.0.iter()
        .map(|grads| {
            real!(grads.dtype(), "clipped sum", |T| weighted_sum::<T>(
                grads, factors
            ))
        })
        .collect()
}

/// Σ_i c_i g_i over the examples of `grads` (B, ...), skipping factors of 0.
fn weighted_sum<T: Real>(grads: &Tensor, factors: &[f64]) -> Result<Tensor> {
    let dims = grads.dims()[1..].to_vec();
    let size: usize = dims.iter().product();
    let sum = with_values(grads, "clipped sum", |g: &[T]| {
        let mut sum = vec![T::zero(); size];
        for (example, &c) in g.chunks_exact(size.max(1)).zip(factors) {
            if c == 0.0 {
                continue;
            }
            let c = T::of(c);
            for (acc, &v) in sum.iter_mut().zip(example) {
                *acc += c * v;
            }
        }
        sum
    })?;
    tensor(sum, &dims)
}

/// (B, T, out) rows plus a bias, laid out channels-first as (B, out, T): a convolution's
/// output in one pass (instead of a broadcast add and a strided transpose copy).
pub(crate) fn add_bias_channels_first(
    y: &Tensor,
    bias: &Tensor,
    dims: [usize; 3],
) -> Result<Tensor> {
    real!(y.dtype(), "conv output", |T| add_bias_typed::<T>(
        y, bias, dims
    ))
}

fn add_bias_typed<T: Real>(y: &Tensor, bias: &Tensor, dims: [usize; 3]) -> Result<Tensor> {
    let [b, t, out] = dims;
    let bias = with_values(bias, "conv bias", <[T]>::to_vec)?;
    let values = with_values(y, "conv output", |y: &[T]| {
        let mut dst = vec![T::zero(); b * t * out];
        dst.par_chunks_mut((t * out).max(1))
            .zip(y.par_chunks((t * out).max(1)))
            .for_each(|(dst, y)| {
                for (o, (row, bias)) in dst.chunks_exact_mut(t.max(1)).zip(&bias).enumerate() {
                    for (position, value) in row.iter_mut().enumerate() {
                        *value = y[position * out + o] + *bias;
                    }
                }
            });
        dst
    })?;
    tensor(values, &[b, out, t])
}

/// (B, a, c) → (B, c, a), contiguous.
pub(crate) fn transpose_last(x: &Tensor, dims: [usize; 3]) -> Result<Tensor> {
    real!(x.dtype(), "transpose", |T| transpose_typed::<T>(x, dims))
}

fn transpose_typed<T: Real>(x: &Tensor, dims: [usize; 3]) -> Result<Tensor> {
    let [b, a, c] = dims;
    let values = with_values(x, "transpose", |x: &[T]| {
        let mut dst = vec![T::zero(); b * a * c];
        dst.par_chunks_mut((a * c).max(1))
            .zip(x.par_chunks((a * c).max(1)))
            .for_each(|(dst, x)| {
                for (i, row) in x.chunks_exact(c.max(1)).enumerate() {
                    for (j, value) in row.iter().enumerate() {
                        dst[j * a + i] = *value;
                    }
                }
            });
        dst
    })?;
    tensor(values, &[b, c, a])
}
