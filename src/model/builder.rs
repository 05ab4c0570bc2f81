//! The model vocabulary as a builder in Rust (tier 2 of generality.md section 4.3): the
//! same kinds, paths and checks as a config, so a model written in code trains through
//! the same fast DP step and can be saved as a config.
//!
//! ```
//! use dptrain::model::builder::Sequential;
//! use dptrain::model::ModelInput;
//!
//! let model = Sequential::new(ModelInput::dense(&[3, 16, 16]))
//!     .conv2d(8, 3).padding(1).bias(false)
//!     .group_norm(4)
//!     .relu()
//!     .residual("basic", |b| b.conv2d(8, 3).padding(1).group_norm(4).relu())
//!     .global_avg_pool()
//!     .linear(10)
//!     .build(10, 0)
//!     .unwrap();
//! // stem conv, its group norm, the block's conv and group norm, the head.
//! assert_eq!(model.trainable_layers().len(), 5);
//! ```

use std::collections::BTreeMap;

use super::kinds::{BagMode, LayerSpec, Padding};
use super::layer::NormMode;
use super::spec::{LayerEntry, NodeSpec, Shortcut};
use super::{Model, ModelConfig, ModelInput, Precision};
use crate::error::Result;

/// A chain of layers under construction.
#[derive(Debug, Clone)]
pub struct Sequential {
    input: ModelInput,
    prefix: String,
    nodes: Vec<NodeSpec>,
    freeze: Vec<String>,
    precision: Precision,
}

fn kind_of(spec: &LayerSpec) -> String {
    match toml::Value::try_from(spec) {
        Ok(toml::Value::Table(t)) => t
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("layer")
            .to_string(),
        _ => "layer".into(),
    }
}

impl Sequential {
    /// An empty chain over `input`.
    pub fn new(input: ModelInput) -> Self {
        Sequential {
            input,
            prefix: String::new(),
            nodes: Vec::new(),
            freeze: Vec::new(),
            precision: Precision::F32,
        }
    }

    /// The element type of the parameters and of the DP step (f32 by default).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    fn path(&self, segment: &str) -> String {
        let segment = format!("{}.{segment}", self.nodes.len());
        match self.prefix.as_str() {
            "" => segment,
            p => format!("{p}.{segment}"),
        }
    }

    /// Appends any layer.
    pub fn layer(mut self, spec: LayerSpec) -> Self {
        let path = self.path(&kind_of(&spec));
        self.nodes.push(NodeSpec::Layer(LayerEntry {
            path,
            spec,
            norm: NormMode::Auto,
        }));
        self
    }

    fn last_spec(&mut self) -> Option<&mut LayerEntry> {
        match self.nodes.last_mut() {
            Some(NodeSpec::Layer(entry)) => Some(entry),
            _ => None,
        }
    }

    /// Names the last layer (its path's last segment).
    pub fn named(mut self, name: &str) -> Self {
        let prefix = self.prefix.clone();
        if let Some(entry) = self.last_spec() {
            entry.path = match prefix.as_str() {
                "" => name.to_string(),
                p => format!("{p}.{name}"),
            };
        }
        self
    }

    /// Sets the last layer's per-example norm mode.
    pub fn norm(mut self, mode: NormMode) -> Self {
        if let Some(entry) = self.last_spec() {
            entry.norm = mode;
        }
        self
    }

    /// Freezes the last layer.
    pub fn frozen(mut self) -> Self {
        if let Some(NodeSpec::Layer(entry)) = self.nodes.last() {
            self.freeze.push(entry.path.clone());
        }
        self
    }

    /// Linear layer to `out` features.
    pub fn linear(self, out: usize) -> Self {
        self.layer(LayerSpec::Linear {
            out_features: out,
            bias: true,
        })
    }

    /// 2-D convolution to `out` channels with a `kernel`×`kernel` window.
    pub fn conv2d(self, out: usize, kernel: usize) -> Self {
        self.layer(LayerSpec::Conv2d {
            out_channels: out,
            kernel,
            stride: 1,
            padding: Padding::Size(0),
            dilation: 1,
            groups: 1,
            bias: true,
        })
    }

    /// 1-D convolution to `out` channels with a window of `kernel`.
    pub fn conv1d(self, out: usize, kernel: usize) -> Self {
        self.layer(LayerSpec::Conv1d {
            out_channels: out,
            kernel,
            stride: 1,
            padding: Padding::Size(0),
            dilation: 1,
            groups: 1,
            bias: true,
        })
    }

    fn with_conv(
        mut self,
        f: impl FnOnce(&mut usize, &mut Padding, &mut usize, &mut usize, &mut bool),
    ) -> Self {
        if let Some(entry) = self.last_spec() {
            match &mut entry.spec {
                LayerSpec::Conv2d {
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    ..
                }
                | LayerSpec::Conv1d {
                    stride,
                    padding,
                    dilation,
                    groups,
                    bias,
                    ..
                } => f(stride, padding, dilation, groups, bias),
                LayerSpec::Linear { bias, .. } => {
                    let (mut s, mut p, mut d, mut g) = (1, Padding::Size(0), 1, 1);
                    f(&mut s, &mut p, &mut d, &mut g, bias)
                }
                _ => {}
            }
        }
        self
    }

    /// The last conv's stride.
    pub fn stride(self, value: usize) -> Self {
        self.with_conv(|s, _, _, _, _| *s = value)
    }

    /// The last conv's zero padding.
    pub fn padding(self, value: usize) -> Self {
        self.with_conv(|_, p, _, _, _| *p = Padding::Size(value))
    }

    /// The last conv keeps its input's size.
    pub fn same_padding(self) -> Self {
        self.with_conv(|_, p, _, _, _| *p = Padding::Named("same".into()))
    }

    /// The last conv's dilation.
    pub fn dilation(self, value: usize) -> Self {
        self.with_conv(|_, _, d, _, _| *d = value)
    }

    /// The last conv's channel groups.
    pub fn groups(self, value: usize) -> Self {
        self.with_conv(|_, _, _, g, _| *g = value)
    }

    /// Whether the last conv or linear layer has a bias.
    pub fn bias(self, value: bool) -> Self {
        self.with_conv(|_, _, _, _, b| *b = value)
    }

    /// Group normalisation.
    pub fn group_norm(self, groups: usize) -> Self {
        self.layer(LayerSpec::GroupNorm { groups, eps: 1e-5 })
    }

    /// Instance normalisation.
    pub fn instance_norm(self) -> Self {
        self.layer(LayerSpec::InstanceNorm {
            eps: 1e-5,
            running_stats: false,
        })
    }

    /// Layer normalisation over the last axis.
    pub fn layer_norm(self) -> Self {
        self.layer(LayerSpec::LayerNorm { eps: 1e-5 })
    }

    /// RMS normalisation over the last axis.
    pub fn rms_norm(self) -> Self {
        self.layer(LayerSpec::RmsNorm { eps: 1e-6 })
    }

    /// Token embedding of width `dim`.
    pub fn embedding(self, dim: usize, padding_idx: Option<u32>) -> Self {
        self.layer(LayerSpec::Embedding { dim, padding_idx })
    }

    /// Bag-of-tokens embedding of width `dim`.
    pub fn embedding_bag(self, dim: usize, mode: BagMode, padding_idx: Option<u32>) -> Self {
        self.layer(LayerSpec::EmbeddingBag {
            dim,
            mode,
            padding_idx,
        })
    }

    /// Learned positions.
    pub fn positional_embedding(self, max_len: usize) -> Self {
        self.layer(LayerSpec::PositionalEmbedding { max_len })
    }

    /// ReLU.
    pub fn relu(self) -> Self {
        self.layer(LayerSpec::Relu {})
    }

    /// tanh.
    pub fn tanh(self) -> Self {
        self.layer(LayerSpec::Tanh {})
    }

    /// GELU.
    pub fn gelu(self) -> Self {
        self.layer(LayerSpec::Gelu {})
    }

    /// Sigmoid.
    pub fn sigmoid(self) -> Self {
        self.layer(LayerSpec::Sigmoid {})
    }

    /// x².
    pub fn square(self) -> Self {
        self.layer(LayerSpec::Square {})
    }

    /// Flatten.
    pub fn flatten(self) -> Self {
        self.layer(LayerSpec::Flatten {})
    }

    /// Max pooling.
    pub fn max_pool2d(self, kernel: usize, stride: usize) -> Self {
        self.layer(LayerSpec::MaxPool2d {
            kernel,
            stride: Some(stride),
        })
    }

    /// Average pooling (stride = kernel).
    pub fn avg_pool2d(self, kernel: usize) -> Self {
        self.layer(LayerSpec::AvgPool2d {
            kernel,
            stride: None,
        })
    }

    /// Global average pooling.
    pub fn global_avg_pool(self) -> Self {
        self.layer(LayerSpec::GlobalAvgPool {})
    }

    /// Mean over a sequence (real tokens only when `masked`).
    pub fn mean_pool(self, masked: bool) -> Self {
        self.layer(LayerSpec::MeanPool { masked })
    }

    /// Dropout.
    pub fn dropout(self, p: f64) -> Self {
        self.layer(LayerSpec::Dropout { p })
    }

    /// A residual `relu(body(x) + x)` (identity shortcut) named `name`.
    pub fn residual(self, name: &str, body: impl FnOnce(Sequential) -> Sequential) -> Self {
        self.residual_with(name, Shortcut::Identity, Some(LayerSpec::Relu {}), body)
    }

    /// A residual with its shortcut and final layer given.
    pub fn residual_with(
        mut self,
        name: &str,
        shortcut: Shortcut,
        then: Option<LayerSpec>,
        body: impl FnOnce(Sequential) -> Sequential,
    ) -> Self {
        let path = self.path(name);
        let inner = body(Sequential {
            input: self.input.clone(),
            prefix: path.clone(),
            nodes: Vec::new(),
            freeze: Vec::new(),
            precision: self.precision,
        });
        self.freeze.extend(inner.freeze);
        let then = then.map(|spec| LayerEntry {
            path: format!("{path}.{}", kind_of(&spec)),
            spec,
            norm: NormMode::Auto,
        });
        self.nodes.push(NodeSpec::Residual {
            path,
            body: inner.nodes,
            shortcut,
            then,
        });
        self
    }

    /// The expanded nodes.
    pub fn specs(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// Builds the model for `classes` outputs, initialised from `seed`.
    pub fn build(&self, classes: usize, seed: u64) -> Result<Model> {
        let dtype = self.precision.dtype();
        Model::from_specs(&self.nodes, &self.input, classes, &self.freeze, dtype, seed)
    }

    /// The same model as a config's `[model]` (residual bodies become blocks named by
    /// their paths), for manifests and for editing as TOML.
    pub fn to_config(&self) -> ModelConfig {
        let mut blocks = BTreeMap::new();
        let layers = to_tables(&self.nodes, "", &mut blocks);
        ModelConfig {
            layers,
            blocks,
            freeze: self.freeze.clone(),
            dtype: (self.precision != Precision::F32).then_some(self.precision),
            ..ModelConfig::default()
        }
    }
}

fn to_tables(
    nodes: &[NodeSpec],
    prefix: &str,
    blocks: &mut BTreeMap<String, Vec<toml::Table>>,
) -> Vec<toml::Table> {
    // A path's segment below `prefix`; written as `name` when it is not the default
    // "{index}.{kind}" (so the config expands to the same paths).
    let relative = |path: &str| match prefix {
        "" => path.to_string(),
        p => path
            .strip_prefix(&format!("{p}."))
            .unwrap_or(path)
            .to_string(),
    };
    nodes
        .iter()
        .enumerate()
        .map(|(index, node)| match node {
            NodeSpec::Layer(entry) => {
                let mut table = match toml::Value::try_from(&entry.spec) {
                    Ok(toml::Value::Table(t)) => t,
                    _ => toml::Table::new(),
                };
                let segment = relative(&entry.path);
                if segment != format!("{index}.{}", kind_of(&entry.spec)) {
                    table.insert("name".into(), segment.into());
                }
                if entry.norm != NormMode::Auto {
                    let mode = match entry.norm {
                        NormMode::Ghost => "ghost",
                        _ => "instantiate",
                    };
                    table.insert("norm".into(), mode.into());
                }
                table
            }
            NodeSpec::Residual {
                path,
                body,
                shortcut,
                then,
            } => {
                let block = path.replace('.', "_");
                let inner = to_tables(body, path, blocks);
                blocks.insert(block.clone(), inner);
                let mut table = toml::Table::new();
                table.insert("kind".into(), "residual".into());
                table.insert("block".into(), block.into());
                table.insert("name".into(), relative(path).into());
                if *shortcut == Shortcut::Projection {
                    table.insert("shortcut".into(), "projection".into());
                }
                if let Some(then) = then {
                    table.insert("then".into(), kind_of(&then.spec).into());
                }
                table
            }
        })
        .collect()
}
