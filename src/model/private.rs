//! Tier 3 of the library API (generality.md section 4.3): a candle model, written by the
//! user with candle's own ops, made private.
//!
//! The model's parameters come from DP layer wrappers ([`DpLayers::add`]): each wraps a
//! layer kind of the vocabulary (its forward, hand-written backward and per-example rule)
//! and puts its parameters in the user's [`VarMap`] under `<path>.<name>`. Everything
//! between the wrappers (activations, reshapes, residual sums, attention written by hand)
//! is free candle code without parameters. [`make_private`] checks that every parameter of
//! the VarMap belongs to a wrapper and refuses the first that does not, by name: a
//! parameter whose per-example gradient is not traced could not be clipped.
//!
//! How a training pass reads the per-example quantities: during the pass each wrapper
//! records its input (detached) and adds a zero [`Var`], its *tap*, to its output. After
//! candle's backward of the summed loss the tap's gradient is the layer's output gradient
//! G = ∂L/∂y; the layer's own backward then turns the recorded input and G into the trace
//! its per-example rule reads (ghost norms or per-example gradients, generality.md §5.1).
//! Because the summed loss is Σ_i ℓ_i, G's row i is example i's alone, unless the user's
//! code mixes examples.
//!
//! The user's code is not trusted. Before the first training pass of two or more
//! examples, a private model probes its first examples ([`PrivateModel`]'s
//! `traced_pass`): each example's per-example norms must be the same in the batch and
//! alone ([`super::check_batch_independence`]: a forward that mixes examples is refused,
//! named by the first layer it shows in), and autograd's gradient of every wrapper
//! parameter must be the sum of the per-example gradients its wrapper traced (a
//! parameter also used outside its wrapper, as a weight tied through its `Var`, is
//! refused by name). Every pass refuses a parameter or DP layer added after
//! [`make_private`].
//!
//! This route runs each wrapped layer's forward twice (once in candle's graph, once to
//! save what its backward needs) and lets candle form the batch gradients it never uses:
//! it trades speed for generality. The config and builder tiers use the hand-written
//! backward of the whole graph and are the fast path.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_nn::VarMap;
//! use dptrain::model::private::{DpLayers, make_private};
//! use dptrain::model::{DpModule, LayerSpec};
//!
//! let varmap = VarMap::new();
//! let layers = DpLayers::new(0);
//! let hidden = layers
//!     .add(&varmap, "hidden", LayerSpec::Linear { out_features: 8, bias: true }, &[4])
//!     .unwrap();
//! let head = layers
//!     .add(&varmap, "head", LayerSpec::Linear { out_features: 3, bias: true }, &[8])
//!     .unwrap();
//! let model = make_private(
//!     move |x: &Tensor| head.forward(&hidden.forward(x)?.relu()?),
//!     &varmap,
//!     &layers,
//! )
//! .unwrap();
//! let x = Tensor::ones((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
//! let pass = model.traced_pass(&x, &[0, 2], vec![0, 1], 0).unwrap();
//! assert_eq!(pass.layers.len(), 2);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backprop::GradStore;
use candle_core::{D, Tensor, TensorId, Var};
use candle_nn::VarMap;
use rand::SeedableRng;

use super::kinds::{BuildInput, LayerSpec, build};
use super::layer::{Context, Layer, NormMode};
use super::module::{DpModule, TracedLayer, TracedPass, check_batch_independence};
use crate::error::{Error, Result};
use crate::grad_sample::wide_values;

/// One registered wrapper.
#[derive(Debug)]
struct Entry {
    path: String,
    layer: Arc<dyn Layer>,
}

/// What one wrapper recorded during a training pass.
struct Record {
    /// Its input, detached from candle's graph.
    input: Tensor,
    /// The zero Var added to its output: its gradient is the output gradient.
    tap: Var,
}

/// A training pass in progress.
struct Pass {
    ctx: Context,
    records: Vec<Option<Record>>,
}

struct Shared {
    entries: Mutex<Vec<Entry>>,
    pass: Mutex<Option<Pass>>,
    /// Initialises the wrappers' parameters.
    rng: Mutex<rand_chacha::ChaCha20Rng>,
    /// Their element type.
    dtype: candle_core::DType,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The DP layer wrappers of one candle model (see the module).
#[derive(Clone)]
pub struct DpLayers {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DpLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpLayers")
            .field("layers", &*lock(&self.shared.entries))
            .finish()
    }
}

impl DpLayers {
    /// An empty set of f32 wrappers; `seed` initialises their parameters.
    pub fn new(seed: u64) -> Self {
        DpLayers::with_precision(seed, crate::model::Precision::F32)
    }

    /// [`DpLayers::new`] with parameters (and so the model's DP step) in `precision`.
    pub fn with_precision(seed: u64, precision: crate::model::Precision) -> Self {
        DpLayers {
            shared: Arc::new(Shared {
                entries: Mutex::default(),
                pass: Mutex::default(),
                rng: Mutex::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed)),
                dtype: precision.dtype(),
            }),
        }
    }

    /// A wrapper around a layer of kind `spec` for inputs of shape `input` (one example,
    /// without the batch axis), its parameters added to `varmap` as `<path>.<name>`.
    pub fn add(
        &self,
        varmap: &VarMap,
        path: &str,
        spec: LayerSpec,
        input: &[usize],
    ) -> Result<DpLayer> {
        self.add_with(varmap, path, spec, input, None)
    }

    /// [`DpLayers::add`] for a layer over token ids below `vocab` (embeddings).
    pub fn add_tokens(
        &self,
        varmap: &VarMap,
        path: &str,
        spec: LayerSpec,
        sequence_length: usize,
        vocab: usize,
    ) -> Result<DpLayer> {
        self.add_with(varmap, path, spec, &[sequence_length], Some(vocab))
    }

    fn add_with(
        &self,
        varmap: &VarMap,
        path: &str,
        spec: LayerSpec,
        input: &[usize],
        vocab: Option<usize>,
    ) -> Result<DpLayer> {
        let model_error = |message: String| Error::Model {
            path: path.to_string(),
            message,
        };
        let mut entries = lock(&self.shared.entries);
        if entries.iter().any(|e| e.path == path) {
            return Err(model_error("a second DP layer with this path".into()));
        }
        let layer = {
            let mut rng = lock(&self.shared.rng);
            build(
                &spec,
                BuildInput {
                    shape: input,
                    vocab,
                    dtype: self.shared.dtype,
                },
                &mut *rng,
            )
            .map_err(|e| super::at_layer(path, e))?
        };
        let params = layer.params();
        if params.is_empty() {
            return Err(model_error(format!(
                "a {} layer has no parameters: write it as plain candle code between the DP \
                 layers",
                layer.kind()
            )));
        }
        {
            let mut vars = lock(varmap.data());
            for p in &params {
                let name = format!("{path}.{}", p.name);
                if vars.contains_key(&name) {
                    return Err(model_error(format!("the VarMap already holds `{name}`")));
                }
            }
            for p in params {
                vars.insert(format!("{path}.{}", p.name), p.var);
            }
        }
        entries.push(Entry {
            path: path.to_string(),
            layer: layer.clone(),
        });
        Ok(DpLayer {
            index: entries.len() - 1,
            path: path.to_string(),
            layer,
            shared: self.shared.clone(),
        })
    }

    /// Starts a training pass: wrappers record from now on.
    fn begin(&self, ctx: Context) -> Result<()> {
        let layers = lock(&self.shared.entries).len();
        let mut pass = lock(&self.shared.pass);
        if pass.is_some() {
            return Err(Error::Usage(
                "a private candle model runs one training pass at a time".into(),
            ));
        }
        *pass = Some(Pass {
            ctx,
            records: (0..layers).map(|_| None).collect(),
        });
        Ok(())
    }

    /// Ends the training pass and returns what the wrappers recorded.
    fn end(&self) -> Option<Pass> {
        lock(&self.shared.pass).take()
    }
}

/// One DP layer of a candle model: call it like any candle [`candle_core::Module`].
#[derive(Clone)]
pub struct DpLayer {
    index: usize,
    path: String,
    layer: Arc<dyn Layer>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DpLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DpLayer({} {})", self.path, self.layer.kind())
    }
}

impl DpLayer {
    /// The wrapped layer.
    pub fn layer(&self) -> &Arc<dyn Layer> {
        &self.layer
    }
}

fn candle_error(path: &str, e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("DP layer `{path}`: {e}"))
}

impl candle_core::Module for DpLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut pass = lock(&self.shared.pass);
        let Some(pass) = pass.as_mut() else {
            // Evaluation: the plain forward, dropout off.
            return self
                .layer
                .forward(x, &Context::default())
                .map_err(|e| candle_error(&self.path, e));
        };
        let record = pass
            .records
            .get_mut(self.index)
            .ok_or_else(|| candle_error(&self.path, "not a layer of this model"))?;
        if record.is_some() {
            // A shared weight's per-example gradient is the sum over its uses; the trace
            // of one use cannot give its norm.
            return Err(candle_error(
                &self.path,
                "called twice in one pass: a DP layer's weights cannot be shared between \
                 uses (add a second DP layer)",
            ));
        }
        let y = self
            .layer
            .forward(x, &pass.ctx)
            .map_err(|e| candle_error(&self.path, e))?;
        let tap = Var::zeros(y.shape(), y.dtype(), y.device())?;
        let y = (y + tap.as_tensor())?;
        *record = Some(Record {
            input: x.detach(),
            tap,
        });
        Ok(y)
    }
}

/// A candle model whose parameters all belong to DP layers: a [`DpModule`] that the DP
/// step trains (see the module).
pub struct PrivateModel<F> {
    forward: F,
    layers: DpLayers,
    /// The user's VarMap, watched for parameters added after [`make_private`].
    varmap: VarMap,
    /// Its parameters when the model was made private.
    known: Vec<TensorId>,
    /// How many DP layers there were then.
    layer_count: usize,
    /// Whether the probe before the first pass of two or more examples passed.
    probed: AtomicBool,
}

/// Examples of the first batch that the probe runs (each also alone).
const PROBE_EXAMPLES: usize = 4;

impl<F> std::fmt::Debug for PrivateModel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateModel")
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// Makes the candle model `forward` (logits (B, classes) from inputs (B, ...)) private:
/// refuses, by name, any parameter of `varmap` that no DP layer of `layers` owns.
pub fn make_private<F>(forward: F, varmap: &VarMap, layers: &DpLayers) -> Result<PrivateModel<F>>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Sync,
{
    let entries = lock(&layers.shared.entries);
    if entries.is_empty() {
        return Err(Error::Usage(
            "make_private: the model has no DP layers (add them with DpLayers::add)".into(),
        ));
    }
    let owned: Vec<_> = entries
        .iter()
        .flat_map(|e| e.layer.params())
        .map(|p| p.var.as_tensor().id())
        .collect();
    let vars = lock(varmap.data());
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        if !owned.contains(&vars[name].as_tensor().id()) {
            return Err(Error::Usage(format!(
                "make_private: parameter `{name}` of the VarMap belongs to no dptrain DP \
                 layer, so its per-example gradients cannot be traced and clipped: create its \
                 layer with DpLayers::add (any kind of the vocabulary), or keep the tensor out \
                 of the VarMap as a constant if it is not trained"
            )));
        }
    }
    let known = vars.values().map(|v| v.as_tensor().id()).collect();
    let layer_count = entries.len();
    drop((vars, entries));
    Ok(PrivateModel {
        forward,
        layers: layers.clone(),
        varmap: varmap.clone(),
        known,
        layer_count,
        probed: AtomicBool::new(false),
    })
}

impl<F> PrivateModel<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Sync,
{
    /// Each example's loss −log softmax(z)_y (B, 1), differentiable.
    fn losses(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (b, k) = logits.dims2()?;
        if labels.len() != b {
            return Err(Error::Tensor(format!(
                "{} labels for a batch of {b}",
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(Error::Tensor(format!(
                "label {bad} is out of range for {k} logits"
            )));
        }
        let labels = Tensor::from_slice(labels, (b, 1), logits.device())?;
        let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        Ok(log_p.gather(&labels, 1)?.neg()?)
    }

    /// Refuses a parameter or DP layer added since [`make_private`]: the DP step's
    /// parameters were fixed then, and a new VarMap parameter belongs to no wrapper.
    fn check_unchanged(&self) -> Result<()> {
        let vars = lock(self.varmap.data());
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            if !self.known.contains(&vars[name].as_tensor().id()) {
                return Err(Error::Usage(format!(
                    "private model: parameter `{name}` was added to the VarMap after \
                     make_private; the DP step traces and clips only the parameters known \
                     then: add every DP layer and parameter first, then call make_private"
                )));
            }
        }
        let entries = lock(&self.layers.shared.entries);
        if let Some(entry) = entries.get(self.layer_count) {
            return Err(Error::Model {
                path: entry.path.clone(),
                message: "a DP layer added after make_private: add every DP layer first, \
                          then call make_private"
                    .into(),
            });
        }
        Ok(())
    }

    /// The probe before the first pass of two or more examples (see the module): on the
    /// first examples of `x`, the batch-independence check, then autograd's gradient of
    /// each wrapper parameter against the sum of the per-example gradients its wrapper
    /// traced.
    fn probe(&self, x: &Tensor, labels: &[u32]) -> Result<()> {
        let n = x.dim(0)?.min(PROBE_EXAMPLES);
        let (x, labels) = (x.narrow(0, 0, n)?, &labels[..n.min(labels.len())]);
        // Far above rounding (1e-7 in f32, 1e-16 in f64), far below what mixing or an
        // untraced use changes.
        let tolerance = match self.layers.shared.dtype {
            candle_core::DType::F64 => 1e-9,
            _ => 1e-4,
        };
        check_batch_independence(&Unprobed(self), &x, labels, tolerance)?;
        let (pass, grads) = self.pass(&x, labels, (0..n as u64).collect(), 0)?;
        let ones = vec![1.0; n];
        for layer in &pass.layers {
            let sums = match &layer.trace {
                Some(trace) => Some(layer.layer.clipped_sums(trace, None, &ones)?),
                None => None,
            };
            for (k, param) in layer.layer.params().iter().enumerate() {
                let size = param.var.elem_count();
                let autograd = match grads.get(param.var.as_tensor()) {
                    Some(g) => wide_values(g)?,
                    None => vec![0.0; size],
                };
                let traced = match &sums {
                    Some(sums) => wide_values(&sums[k])?,
                    None => vec![0.0; size],
                };
                let scale = autograd
                    .iter()
                    .chain(&traced)
                    .fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
                if autograd
                    .iter()
                    .zip(&traced)
                    .any(|(a, t)| (a - t).abs() > tolerance * scale)
                {
                    return Err(Error::Model {
                        path: format!("{}.{}", layer.path, param.name),
                        message: "this parameter's gradient is not the sum of the \
                                  per-example gradients its DP layer traced: the forward uses \
                                  it outside its DP layer (a weight tied through its Var, or \
                                  read from the VarMap), where no per-example gradient is \
                                  traced or clipped; give that use a DP layer of its own"
                            .into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// One training pass (without the checks of `traced_pass`), with autograd's gradients.
    fn pass(
        &self,
        x: &Tensor,
        labels: &[u32],
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<(TracedPass, GradStore)> {
        let ctx = Context {
            train: true,
            token_mask: None,
            example_ids,
            mask_seed,
        };
        // Data come as f32: the user's forward gets them in the wrappers' precision.
        let x = x.to_dtype(self.layers.shared.dtype)?;
        self.layers.begin(ctx)?;
        let logits = (self.forward)(&x);
        // End the pass whatever happened, so that the next one can start.
        let pass = self.layers.end();
        let logits = logits?;
        let pass = pass.ok_or_else(|| Error::Tensor("the training pass was lost".into()))?;
        let losses = Self::losses(&logits, labels)?;
        let grads = losses.sum_all()?.backward()?;
        // A non-finite example adds nothing to the monitored loss; its gradient is
        // non-finite too and the DP step drops it.
        let loss_sum = wide_values(&losses)?
            .into_iter()
            .filter(|l| l.is_finite())
            .sum::<f64>();
        let entries = lock(&self.layers.shared.entries);
        let layers = entries
            .iter()
            .zip(pass.records)
            .map(|(entry, record)| {
                let trace = match record {
                    None => None,
                    Some(Record { input, tap }) => {
                        let grad = match grads.get(tap.as_tensor()) {
                            Some(g) => g.clone(),
                            // The output did not reach the loss.
                            None => tap.as_tensor().zeros_like()?,
                        };
                        let (_, saved) = entry.layer.train_forward(&input, &pass.ctx)?;
                        let (_, trace) = entry.layer.backward(saved, grad, false, true)?;
                        Some(trace.ok_or_else(|| Error::Model {
                            path: entry.path.clone(),
                            message: "its backward left no trace".into(),
                        })?)
                    }
                };
                Ok(TracedLayer {
                    path: entry.path.clone(),
                    layer: entry.layer.clone(),
                    // Ghost or materialised by each layer's shapes.
                    norm: NormMode::Auto,
                    trace,
                })
            })
            .collect::<Result<_>>()?;
        Ok((TracedPass { loss_sum, layers }, grads))
    }
}

/// A private model's passes without its checks: what the probe itself runs.
struct Unprobed<'a, F>(&'a PrivateModel<F>);

impl<F> DpModule for Unprobed<'_, F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Sync,
{
    fn parameters(&self) -> Vec<Var> {
        self.0.parameters()
    }

    fn named_parameters(&self) -> Vec<(String, Var)> {
        self.0.named_parameters()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        DpModule::forward(self.0, x)
    }

    fn traced_pass(
        &self,
        x: &Tensor,
        labels: &[u32],
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<TracedPass> {
        Ok(self.0.pass(x, labels, example_ids, mask_seed)?.0)
    }
}

impl<F> DpModule for PrivateModel<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Sync,
{
    fn parameters(&self) -> Vec<Var> {
        lock(&self.layers.shared.entries)
            .iter()
            .flat_map(|e| e.layer.params().into_iter().map(|p| p.var))
            .collect()
    }

    fn named_parameters(&self) -> Vec<(String, Var)> {
        lock(&self.layers.shared.entries)
            .iter()
            .flat_map(|e| {
                e.layer
                    .params()
                    .into_iter()
                    .map(|p| (format!("{}.{}", e.path, p.name), p.var))
            })
            .collect()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok((self.forward)(&x.to_dtype(self.layers.shared.dtype)?)?)
    }

    /// A training pass. The first with two or more examples is preceded by the probe
    /// (see the module); every pass refuses parameters added after [`make_private`].
    fn traced_pass(
        &self,
        x: &Tensor,
        labels: &[u32],
        example_ids: Vec<u64>,
        mask_seed: u64,
    ) -> Result<TracedPass> {
        self.check_unchanged()?;
        if x.dim(0)? >= 2 && !self.probed.load(Ordering::Acquire) {
            self.probe(x, labels)?;
            self.probed.store(true, Ordering::Release);
        }
        Ok(self.pass(x, labels, example_ids, mask_seed)?.0)
    }
}
