//! Models as graphs of layer kinds (generality.md section 4): described in a config
//! (`[model] layers = [...]`, [`ModelConfig`]), by the builder in code ([`builder`]), or
//! by one of the shipped architectures (`kind = "logreg" | "mlp" | "cnn"`, the files in
//! `configs/models/`, expanded through the same vocabulary).
//!
//! A [`Model`] is a tree of [`Node`]s: layers (each a [`Layer`] of one kind, with its path,
//! whether it is frozen, and its per-example norm mode) and residuals
//! `then(body(x) + shortcut(x))`. [`Model::forward`] is differentiable with candle's
//! autograd (evaluation); [`Model::reference_forward_with`] is the same function from
//! candle's own ops only, the reference the tests compare with; the DP step uses
//! [`Model::training_pass`] (`backprop`): the hand-written backward of every kind, leaving
//! for each trainable layer the trace its per-example rule reads. Kinds that mix examples
//! (batch norm) do not exist here: a config asking for one is refused with the fix.

mod backprop;
pub mod builder;
pub mod kinds;
pub mod layer;
pub mod module;
pub mod pool;
pub mod private;
pub mod show;
pub mod spec;
pub mod tanh;

pub use backprop::TrainingPass;
pub use kinds::LayerSpec;
pub use layer::{Context, Layer, NormMode, Param, PerExample, Trace};
pub use module::{DpModule, TracedLayer, TracedPass, check_batch_independence, per_example_norms};
pub use spec::{NodeSpec, Shortcut};

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use kinds::{BuildInput, build};
use spec::LayerEntry;

/// A shipped architecture (`configs/models/<kind>.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Linear(features → classes).
    Logreg,
    /// Linear(features → 512) → ReLU → Linear(512 → classes).
    Mlp,
    /// Conv(1→16, k8, s2, p3) → tanh → MaxPool(2, s1) → Conv(16→32, k4, s2) → tanh →
    /// MaxPool(2, s1) → flatten → Linear(512 → 32) → tanh → Linear(32 → classes).
    Cnn,
    /// The cnn for secret-shared inference: Conv(1→16, k8, s2, p3) → x² → AvgPool(2) →
    /// Conv(16→32, k4) → x² → flatten → Linear(512 → 32) → x² → Linear(32 → classes).
    CnnPoly,
}

impl ModelKind {
    /// The shipped config text of this architecture.
    pub fn config_text(self) -> &'static str {
        match self {
            ModelKind::Logreg => include_str!("../../configs/models/logreg.toml"),
            ModelKind::Mlp => include_str!("../../configs/models/mlp.toml"),
            ModelKind::Cnn => include_str!("../../configs/models/cnn.toml"),
            ModelKind::CnnPoly => include_str!("../../configs/models/cnn-poly.toml"),
        }
    }
}

/// The cnn's activation (tanh as in the reference; Papernot et al. 2021 found tempered
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

/// What a model reads: checked against the data set when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Images (C, H, W).
    Image,
    /// Token ids (T) with a vocabulary.
    Tokens,
    /// Feature vectors (F).
    Table,
}

/// The element type of a model's parameters and of every kernel of its DP step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Single precision (training).
    #[default]
    F32,
    /// Double precision: the per-example rules agree with autograd to ~1e-12.
    F64,
}

impl Precision {
    /// candle's dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }
}

/// Named blocks of layers (`[model.blocks]`).
pub type Blocks = BTreeMap<String, Vec<toml::Table>>;

/// Model settings: a shipped `kind`, or `layers` with `blocks`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A shipped architecture (instead of `layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModelKind>,
    /// The cnn's activation (`kind = "cnn"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// The mlp's hidden width (`kind = "mlp"` only; default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// What the model reads; checked against the data when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputKind>,
    /// The layers, input first (one table per layer with its `kind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<toml::Table>,
    /// Named lists of layers for `block` and `residual` entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: Blocks,
    /// Layer paths (or path prefixes: a block) whose parameters do not train: no
    /// per-example rule, no noise, no update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// `"f32"` (default) or `"f64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Precision>,
}

impl ModelConfig {
    /// A shipped architecture with its defaults.
    pub fn preset(kind: ModelKind) -> Self {
        ModelConfig {
            kind: Some(kind),
            ..ModelConfig::default()
        }
    }

    /// The layers and blocks this config describes (a preset's read from its file).
    pub fn layers_and_blocks(&self) -> Result<(Vec<toml::Table>, Blocks)> {
        let Some(kind) = self.kind else {
            if self.layers.is_empty() {
                return Err(Error::invalid(
                    "model",
                    "no kind and no layers",
                    "`kind = \"logreg\" | \"mlp\" | \"cnn\"` or a `layers = [...]` list",
                ));
            }
            if self.activation.is_some() || self.hidden.is_some() {
                return Err(Error::invalid(
                    "model.activation / model.hidden",
                    "set with layers",
                    "these only adjust a shipped `kind`; write the layers themselves instead",
                ));
            }
            return Ok((self.layers.clone(), self.blocks.clone()));
        };
        if !self.layers.is_empty() || !self.blocks.is_empty() {
            return Err(Error::invalid(
                "model.kind",
                format!("{kind:?}").to_lowercase(),
                "either a shipped `kind` or `layers`, not both",
            ));
        }
        match (kind, self.hidden) {
            (ModelKind::Mlp, Some(0)) => {
                return Err(Error::invalid("model.hidden", 0, "at least 1 hidden unit"));
            }
            (ModelKind::Logreg | ModelKind::Cnn | ModelKind::CnnPoly, Some(hidden)) => {
                return Err(Error::invalid(
                    "model.hidden",
                    hidden,
                    "no hidden width: only the mlp takes one",
                ));
            }
            _ => {}
        }
        if kind != ModelKind::Cnn && self.activation.is_some() {
            return Err(Error::invalid(
                "model.activation",
                format!("{:?}", self.activation).to_lowercase(),
                "an activation only for the cnn (the mlp uses ReLU, as the reference does)",
            ));
        }
        let mut file: toml::Table = toml::from_str(kind.config_text())
            .map_err(|e| Error::Tensor(format!("shipped model config: {e}")))?;
        let layers = match file.remove("model").and_then(|m| m.as_table().cloned()) {
            Some(mut model) => match model.remove("layers") {
                Some(toml::Value::Array(items)) => items
                    .into_iter()
                    .filter_map(|v| v.as_table().cloned())
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(index, mut layer)| {
                let kind = layer
                    .get("kind")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                if self.activation == Some(Activation::Relu) && kind == "tanh" {
                    layer.insert("kind".into(), "relu".into());
                }
                if let (Some(hidden), true) = (self.hidden, index == 1 && kind == "linear") {
                    layer.insert("out_features".into(), toml::Value::Integer(hidden as i64));
                }
                layer
            })
            .collect();
        Ok((layers, BTreeMap::new()))
    }

    /// Expands the description (no shapes yet): unknown kinds, fields, blocks, cycles and
    /// `$`-parameters are caught here, with the layer path.
    pub fn expand(&self, classes: usize) -> Result<Vec<NodeSpec>> {
        let (layers, blocks) = self.layers_and_blocks()?;
        let mut globals = toml::Table::new();
        globals.insert("classes".into(), toml::Value::Integer(classes as i64));
        let nodes = spec::expand(&layers, &blocks, &globals).map_err(|e| Error::Model {
            path: e.path,
            message: e.message,
        })?;
        let paths = spec::layer_paths(&nodes);
        for frozen in &self.freeze {
            if !paths.iter().any(|p| covers(frozen, p)) {
                return Err(Error::Model {
                    path: frozen.clone(),
                    message: format!(
                        "listed in model.freeze but no layer has this path (paths: {})",
                        paths.join(", ")
                    ),
                });
            }
        }
        Ok(nodes)
    }
}

/// Whether `prefix` names `path` itself or a block above it.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}."))
}

/// What a model's input is: one example's shape, and for token data the vocabulary and
/// padding id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelInput {
    /// Shape of one example ((C, H, W), (F) or (T)).
    pub shape: Vec<usize>,
    /// Vocabulary size of token inputs.
    pub vocab: Option<usize>,
    /// The padding id of token inputs (masked by `mean_pool` and attention).
    pub padding: Option<u32>,
}

impl ModelInput {
    /// Images or feature vectors of `shape`.
    pub fn dense(shape: &[usize]) -> Self {
        ModelInput {
            shape: shape.to_vec(),
            ..ModelInput::default()
        }
    }

    /// The input of a data set.
    pub fn of(data: &crate::data::Dataset) -> Self {
        ModelInput {
            shape: data.feature_shape.clone(),
            vocab: data.vocab.map(|v| v.size),
            padding: data.vocab.and_then(|v| v.padding),
        }
    }

    fn kind(&self) -> InputKind {
        match (self.vocab, self.shape.len()) {
            (Some(_), _) => InputKind::Tokens,
            (None, 3) => InputKind::Image,
            _ => InputKind::Table,
        }
    }
}

/// One layer of a built model.
#[derive(Debug, Clone)]
pub struct LayerNode {
    /// Its path.
    pub path: String,
    /// The layer.
    pub layer: Arc<dyn Layer>,
    /// Frozen: no trace, no update.
    pub frozen: bool,
    /// Per-example norm mode.
    pub norm: NormMode,
    /// Index among the trainable layers (None: frozen or parameter-free).
    pub slot: Option<usize>,
    /// Whether a trainable layer lies before this one (else its backward may stop here).
    pub needs_input_grad: bool,
}

/// A built residual: then(body(x) + shortcut(x)).
#[derive(Debug, Clone)]
pub struct ResidualNode {
    /// Its path.
    pub path: String,
    /// The block.
    pub body: Vec<Node>,
    /// Empty for an identity shortcut, else the projection.
    pub shortcut: Vec<Node>,
    /// Applied to the sum.
    pub then: Option<LayerNode>,
    /// Whether a trainable layer lies before the residual.
    pub needs_input_grad: bool,
    output_shape: Vec<usize>,
}

/// A node of a model's tree.
#[derive(Debug, Clone)]
pub enum Node {
    /// A layer.
    Layer(LayerNode),
    /// A residual.
    Residual(ResidualNode),
}

impl Node {
    fn output_shape(&self) -> &[usize] {
        match self {
            Node::Layer(l) => l.layer.output_shape(),
            Node::Residual(r) => &r.output_shape,
        }
    }
}

/// A network: a tree of layers (see the module).
#[derive(Debug, Clone)]
pub struct Model {
    /// The nodes, input first.
    pub nodes: Vec<Node>,
    /// The input (shape of one example, e.g. [1, 28, 28]; vocabulary, padding id).
    pub input: ModelInput,
    classes: usize,
    trainable: usize,
    dtype: DType,
}

/// Builds layers in order, tracking shapes, slots and which need input gradients.
struct Builder<'a, R: rand::Rng> {
    rng: &'a mut R,
    dtype: DType,
    vocab: Option<usize>,
    freeze: &'a [String],
    slots: usize,
    trainable_before: bool,
}

fn model_error(path: &str, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_string(),
        message: message.into(),
    }
}

/// An error raised while the layer at `path` was built or ran, with that path: a refusal
/// of `kinds` (an [`Error::Model`] whose path is still empty) gets it, and any other error
/// (a token id beyond the vocabulary, a failed op) becomes one of the layer's. An error
/// that already names a layer is kept.
pub(crate) fn at_layer(path: &str, e: Error) -> Error {
    match e {
        Error::Model { path: p, message } if p.is_empty() => model_error(path, message),
        e @ Error::Model { .. } => e,
        Error::Tensor(message) => model_error(path, message),
        other => model_error(path, other.to_string()),
    }
}

impl<R: rand::Rng> Builder<'_, R> {
    fn layer(&mut self, entry: &LayerEntry, shape: &[usize]) -> Result<LayerNode> {
        let input = BuildInput {
            shape,
            vocab: self.vocab,
            dtype: self.dtype,
        };
        let layer = build(&entry.spec, input, self.rng).map_err(|e| at_layer(&entry.path, e))?;
        let frozen = self.freeze.iter().any(|f| covers(f, &entry.path));
        let has_params = !layer.params().is_empty();
        let slot = (has_params && !frozen).then(|| {
            self.slots += 1;
            self.slots - 1
        });
        let node = LayerNode {
            path: entry.path.clone(),
            layer,
            frozen,
            norm: entry.norm,
            slot,
            needs_input_grad: self.trainable_before,
        };
        self.trainable_before |= slot.is_some();
        Ok(node)
    }

    fn list(
        &mut self,
        specs: &[NodeSpec],
        mut shape: Vec<usize>,
    ) -> Result<(Vec<Node>, Vec<usize>)> {
        let mut nodes = Vec::with_capacity(specs.len());
        for spec in specs {
            let node = match spec {
                NodeSpec::Layer(entry) => Node::Layer(self.layer(entry, &shape)?),
                NodeSpec::Residual {
                    path,
                    body,
                    shortcut,
                    then,
                } => {
                    let before = self.trainable_before;
                    let (body, out) = self.list(body, shape.clone())?;
                    let after_body = self.trainable_before;
                    self.trainable_before = before;
                    let shortcut = match shortcut {
                        Shortcut::Identity => {
                            if out != shape {
                                return Err(model_error(
                                    path,
                                    format!(
                                        "the block maps {shape:?} to {out:?}, so an identity \
                                         shortcut cannot be added to it; set shortcut = \
                                         \"projection\" (a 1×1 conv or linear map to {out:?})"
                                    ),
                                ));
                            }
                            Vec::new()
                        }
                        Shortcut::Projection => {
                            let entry = projection(path, &shape, &out)?;
                            vec![Node::Layer(self.layer(&entry, &shape)?)]
                        }
                    };
                    self.trainable_before |= after_body;
                    let then = match then {
                        Some(entry) => Some(self.layer(entry, &out)?),
                        None => None,
                    };
                    Node::Residual(ResidualNode {
                        path: path.clone(),
                        body,
                        shortcut,
                        then,
                        needs_input_grad: before,
                        output_shape: out,
                    })
                }
            };
            shape = node.output_shape().to_vec();
            nodes.push(node);
        }
        Ok((nodes, shape))
    }
}

/// The projection shortcut from `from` to `to`: a 1×1 conv without bias (images, stride
/// from the size ratio) or a linear map without bias.
fn projection(path: &str, from: &[usize], to: &[usize]) -> Result<LayerEntry> {
    let spec = match (from, to) {
        ([_, h, w], [c, oh, ow]) => {
            let stride = h.div_ceil(*oh);
            if w.div_ceil(*ow) != stride
                || (h - 1) / stride + 1 != *oh
                || (w - 1) / stride + 1 != *ow
            {
                return Err(model_error(
                    path,
                    format!("no 1×1 projection maps {from:?} to {to:?} (sizes not a stride apart)"),
                ));
            }
            LayerSpec::Conv2d {
                out_channels: *c,
                kernel: 1,
                stride,
                padding: kinds::Padding::Size(0),
                dilation: 1,
                groups: 1,
                bias: false,
            }
        }
        (f, t) if !f.is_empty() && f.len() == t.len() && f[..f.len() - 1] == t[..t.len() - 1] => {
            LayerSpec::Linear {
                out_features: *t.last().expect("non-empty"),
                bias: false,
            }
        }
        _ => {
            return Err(model_error(
                path,
                format!("no projection maps {from:?} to {to:?}"),
            ));
        }
    };
    Ok(LayerEntry {
        path: format!("{path}.shortcut"),
        spec,
        norm: NormMode::Auto,
    })
}

impl Model {
    /// Builds the configured model for dense inputs of `input_shape` ([1, 28, 28] for
    /// MNIST) and `classes` outputs, initialised from `seed`.
    pub fn new(
        config: &ModelConfig,
        input_shape: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        Model::build(config, &ModelInput::dense(input_shape), classes, seed)
    }

    /// Builds the configured model for the examples of `data`.
    pub fn for_data(config: &ModelConfig, data: &crate::data::Dataset, seed: u64) -> Result<Self> {
        Model::build(config, &ModelInput::of(data), data.classes, seed)
    }

    /// Builds the configured model for `input`.
    pub fn build(
        config: &ModelConfig,
        input: &ModelInput,
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        if let Some(kind) = config.input
            && kind != input.kind()
        {
            return Err(Error::invalid(
                "model.input",
                format!("{kind:?}").to_lowercase(),
                format!(
                    "the data's input, {:?} of shape {:?}",
                    input.kind(),
                    input.shape
                )
                .to_lowercase(),
            ));
        }
        let nodes = config.expand(classes)?;
        let dtype = config.dtype.unwrap_or_default().dtype();
        Model::from_specs(&nodes, input, classes, &config.freeze, dtype, seed)
    }

    /// Builds expanded nodes (configs and the builder both end here).
    pub fn from_specs(
        specs: &[NodeSpec],
        input: &ModelInput,
        classes: usize,
        freeze: &[String],
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let mut builder = Builder {
            rng: &mut rng,
            dtype,
            vocab: input.vocab,
            freeze,
            slots: 0,
            trainable_before: false,
        };
        let (nodes, output) = builder.list(specs, input.shape.clone())?;
        let trainable = builder.slots;
        if output != [classes] {
            let last = spec::layer_paths(specs).pop().unwrap_or_default();
            return Err(model_error(
                &last,
                format!(
                    "the model's output has shape {output:?} but the data has {classes} \
                     classes: end with a linear layer of out_features = {classes} (or \
                     \"$classes\") after a flatten or pool"
                ),
            ));
        }
        Ok(Model {
            nodes,
            input: input.clone(),
            classes,
            trainable,
            dtype,
        })
    }

    /// Refuses, by layer path, a model whose input or any layer's output at a batch of
    /// `batch` examples would take more than [`kinds::MAX_TENSOR_BYTES`] (the parameters
    /// were checked when the model was built). Call it with the largest batch a pass
    /// holds (`training.max_physical_batch`, or the data set if smaller) before training.
    pub fn check_activations(&self, batch: usize) -> Result<()> {
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.input.shape);
        kinds::check_tensor_size("the input batch", &shape, self.dtype)
            .map_err(|e| at_layer("input", e))?;
        let mut result = Ok(());
        visit(&self.nodes, &mut |node| {
            if result.is_ok() {
                let mut shape = vec![batch];
                shape.extend_from_slice(node.layer.output_shape());
                result = kinds::check_tensor_size(
                    &format!("its output at a batch of {batch}"),
                    &shape,
                    self.dtype,
                )
                .map_err(|e| at_layer(&node.path, e));
            }
        });
        result
    }

    /// The trainable layers (with parameters, not frozen), in slot order.
    pub fn trainable_layers(&self) -> Vec<&LayerNode> {
        let mut all = Vec::new();
        visit(&self.nodes, &mut |node| all.push(node));
        let mut trainable: Vec<&LayerNode> = all.into_iter().filter(|n| n.slot.is_some()).collect();
        trainable.sort_by_key(|n| n.slot);
        trainable
    }

    /// Every layer in forward order (frozen and parameter-free ones too).
    pub fn layers(&self) -> Vec<&LayerNode> {
        let mut all = Vec::new();
        visit(&self.nodes, &mut |node| all.push(node));
        all
    }

    /// All trainable parameters, layer by layer in slot order, each layer's in its order.
    pub fn parameters(&self) -> Vec<Var> {
        self.trainable_layers()
            .into_iter()
            .flat_map(|n| n.layer.params().into_iter().map(|p| p.var))
            .collect()
    }

    /// Every parameter (frozen ones too) with its safetensors name `<path>.<name>`.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.layers()
            .into_iter()
            .flat_map(|n| {
                n.layer
                    .params()
                    .into_iter()
                    .map(|p| (format!("{}.{}", n.path, p.name), p.var))
            })
            .collect()
    }

    /// Number of trainable scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|v| v.elem_count()).sum()
    }

    /// Number of trainable layers (the L of per-layer clipping).
    pub fn trainable_count(&self) -> usize {
        self.trainable
    }

    /// Number of outputs (classes).
    pub fn classes(&self) -> Option<usize> {
        Some(self.classes)
    }

    /// The element type of the parameters (inputs are converted to it).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The context of a pass over inputs `x`: the token mask for token inputs.
    pub fn context(
        &self,
        x: &Tensor,
        train: bool,
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<Context> {
        let token_mask = match (self.input.vocab, self.input.padding) {
            (Some(_), Some(pad)) => Some(x.ne(pad as f64)?.to_dtype(self.dtype)?),
            _ => None,
        };
        Ok(Context {
            train,
            token_mask,
            example_ids,
            mask_seed,
        })
    }

    /// Logits (B, classes), differentiable with respect to the parameters through
    /// candle's autograd (evaluation: dropout off).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ctx = self.context(x, false, Vec::new(), 0)?;
        self.forward_with(x, &ctx)
    }

    /// [`Model::forward`] in a given context.
    pub fn forward_with(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        forward_list(&self.nodes, &x.to_dtype(self.dtype)?, ctx, Forward::Fast)
    }

    /// The model's function built from candle's own ops only (each layer's
    /// [`Layer::reference_forward`]): what the tests differentiate with candle's autograd
    /// to check the hand-written backward, with no dptrain kernel on the way. Slower than
    /// [`Model::forward_with`]; not for training or evaluation.
    pub fn reference_forward_with(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        forward_list(
            &self.nodes,
            &x.to_dtype(self.dtype)?,
            ctx,
            Forward::Reference,
        )
    }
}

/// Which forward of each layer a pass runs.
#[derive(Debug, Clone, Copy)]
enum Forward {
    /// [`Layer::forward`].
    Fast,
    /// [`Layer::reference_forward`].
    Reference,
}

impl Forward {
    /// The layer's forward; an error names the layer.
    fn apply(self, node: &LayerNode, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        match self {
            Forward::Fast => node.layer.forward(x, ctx),
            Forward::Reference => node.layer.reference_forward(x, ctx),
        }
        .map_err(|e| at_layer(&node.path, e))
    }
}

fn visit<'a>(nodes: &'a [Node], f: &mut impl FnMut(&'a LayerNode)) {
    for node in nodes {
        match node {
            Node::Layer(l) => f(l),
            Node::Residual(r) => {
                visit(&r.body, f);
                visit(&r.shortcut, f);
                if let Some(then) = &r.then {
                    f(then);
                }
            }
        }
    }
}

fn forward_list(nodes: &[Node], x: &Tensor, ctx: &Context, how: Forward) -> Result<Tensor> {
    let mut h = x.clone();
    for node in nodes {
        h = match node {
            Node::Layer(l) => how.apply(l, &h, ctx)?,
            Node::Residual(r) => {
                let body = forward_list(&r.body, &h, ctx, how)?;
                let shortcut = match r.shortcut.is_empty() {
                    true => h.clone(),
                    false => forward_list(&r.shortcut, &h, ctx, how)?,
                };
                let sum = (body + shortcut)?;
                match &r.then {
                    Some(then) => how.apply(then, &sum, ctx)?,
                    None => sum,
                }
            }
        };
    }
    Ok(h)
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
