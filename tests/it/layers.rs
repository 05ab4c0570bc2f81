//! Every layer kind against candle's own ops and autograd (issue 13's acceptance):
//! per-example norms and clipped sums equal a loop of batch-size-1 autograd passes, the
//! hand-written backward equals autograd on the whole batch (both within 1e-5 relative in
//! f32 and 1e-12 in f64), empty Poisson batches work, and each refusal names the layer
//! and the fix.
//!
//! The reference is [`Model::reference_forward_with`]: candle's own ops only (its `tanh`,
//! `conv2d`, the `maximum` of strided views for max pooling), differentiated by
//! candle's autograd, so that no hand-written backward or dptrain kernel checks itself
//! (issue 28 §3). Every parameter is drawn at random before a check (γ and β of the norm
//! layers too, which start at 1 and 0).
//!
//! A new kind is one file in src/model/kinds/ plus a row of [`CASES`] that uses it.

use candle_core::{DType, Device, Tensor};
use dptrain::model::{Model, ModelConfig, ModelInput, Precision, summed_cross_entropy};

/// Each precision with its tolerance (relative to the compared value or its tensor's
/// scale): f32 rounding leaves ~1e-7 per operation, f64 ~1e-16.
const PRECISIONS: [(Precision, f64); 2] = [(Precision::F32, 1e-5), (Precision::F64, 1e-12)];

/// One model of the table: its `[model]` TOML, its input, and what it exercises.
struct Case {
    name: &'static str,
    input: Input,
    model: &'static str,
}

#[derive(Clone, Copy)]
enum Input {
    /// Dense values of this per-example shape.
    Dense(&'static [usize]),
    /// Token ids: length, vocabulary; id 0 pads, and ids repeat within an example.
    Tokens(usize, usize),
}

const CLASSES: usize = 3;

const CASES: &[Case] = &[
    Case {
        name: "linear, tanh",
        input: Input::Dense(&[6]),
        model: r#"layers = [
  { kind = "linear", out_features = 4 },
  { kind = "tanh" },
  { kind = "linear", out_features = "$classes", bias = false },
]"#,
    },
    Case {
        name: "sequence linear (ghost, instantiate, auto), relu, mean_pool",
        input: Input::Dense(&[5, 3]),
        model: r#"layers = [
  { kind = "linear", out_features = 4, norm = "ghost" },
  { kind = "relu" },
  { kind = "linear", out_features = 4, norm = "instantiate" },
  { kind = "sigmoid" },
  { kind = "linear", out_features = 4 },
  { kind = "mean_pool", masked = false },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "conv2d (same padding, no bias, groups, dilation), gelu, max_pool2d",
        input: Input::Dense(&[2, 7, 7]),
        model: r#"layers = [
  { kind = "conv2d", out_channels = 4, kernel = 3, padding = "same", bias = false },
  { kind = "gelu" },
  { kind = "conv2d", out_channels = 4, kernel = 3, dilation = 2, padding = 2, groups = 2, norm = "ghost" },
  { kind = "max_pool2d", kernel = 2 },
  { kind = "conv2d", out_channels = 2, kernel = 2, stride = 1, norm = "instantiate" },
  { kind = "max_pool2d", kernel = 2, stride = 1 },
  { kind = "flatten" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "conv2d, square, avg_pool2d (the cnn-poly of secret-shared inference)",
        input: Input::Dense(&[1, 8, 8]),
        model: r#"layers = [
  { kind = "conv2d", out_channels = 3, kernel = 3, stride = 2, padding = 1 },
  { kind = "square" },
  { kind = "avg_pool2d", kernel = 2 },
  { kind = "flatten" },
  { kind = "linear", out_features = 4 },
  { kind = "square" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "conv1d (padding, stride, groups), sigmoid",
        input: Input::Dense(&[3, 9]),
        model: r#"layers = [
  { kind = "conv1d", out_channels = 4, kernel = 3, padding = 1 },
  { kind = "sigmoid" },
  { kind = "conv1d", out_channels = 2, kernel = 2, stride = 2, groups = 2 },
  { kind = "flatten" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "group_norm, instance_norm, avg_pool2d, global_avg_pool",
        input: Input::Dense(&[4, 5, 5]),
        model: r#"layers = [
  { kind = "conv2d", out_channels = 4, kernel = 3, padding = 1 },
  { kind = "group_norm", groups = 2 },
  { kind = "relu" },
  { kind = "conv2d", out_channels = 4, kernel = 1, bias = false },
  { kind = "instance_norm" },
  { kind = "avg_pool2d", kernel = 2 },
  { kind = "tanh" },
  { kind = "global_avg_pool" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "layer_norm, rms_norm over a sequence",
        input: Input::Dense(&[4, 6]),
        model: r#"layers = [
  { kind = "linear", out_features = 6 },
  { kind = "layer_norm" },
  { kind = "gelu" },
  { kind = "rms_norm" },
  { kind = "mean_pool", masked = false },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "embedding (padding, repeated tokens), positional_embedding, masked mean_pool",
        input: Input::Tokens(6, 11),
        model: r#"input = "tokens"
layers = [
  { kind = "embedding", dim = 5, padding_idx = 0 },
  { kind = "positional_embedding", max_len = 8 },
  { kind = "layer_norm" },
  { kind = "linear", out_features = 4 },
  { kind = "mean_pool" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "transformer encoder: self_attention (padding mask), residuals, layer_norm, gelu",
        input: Input::Tokens(6, 13),
        model: r#"input = "tokens"
layers = [
  { kind = "embedding", dim = 8, padding_idx = 0 },
  { kind = "positional_embedding", max_len = 6 },
  { kind = "residual", block = "attn" },
  { kind = "residual", block = "mlp" },
  { kind = "layer_norm" },
  { kind = "mean_pool" },
  { kind = "linear", out_features = "$classes" },
]
[blocks]
attn = [{ kind = "layer_norm" }, { kind = "self_attention", heads = 2 }]
mlp = [{ kind = "layer_norm" }, { kind = "linear", out_features = 16 }, { kind = "gelu" }, { kind = "linear", out_features = 8 }]"#,
    },
    Case {
        name: "causal self_attention (ghost and instantiated maps) over dense sequences",
        input: Input::Dense(&[5, 4]),
        model: r#"layers = [
  { kind = "layer_norm" },
  { kind = "self_attention", heads = 2, causal = true, norm = "ghost" },
  { kind = "layer_norm" },
  { kind = "self_attention", heads = 1, norm = "instantiate" },
  { kind = "mean_pool", masked = false },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "embedding_bag (mean), padding and repeats",
        input: Input::Tokens(7, 9),
        model: r#"layers = [
  { kind = "embedding_bag", dim = 4, mode = "mean", padding_idx = 0 },
  { kind = "linear", out_features = 3 },
  { kind = "relu" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "embedding_bag (sum), no padding id",
        input: Input::Tokens(5, 6),
        model: r#"layers = [
  { kind = "embedding_bag", dim = 3, mode = "sum" },
  { kind = "linear", out_features = "$classes" },
]"#,
    },
    Case {
        name: "residuals (identity, projection), blocks with $-parameters, dropout, frozen stem",
        input: Input::Dense(&[2, 6, 6]),
        model: r#"layers = [
  { kind = "conv2d", name = "stem", out_channels = 4, kernel = 3, padding = 1 },
  { kind = "residual", block = "basic", with = { ch = 4, stride = 1 }, then = "relu" },
  { kind = "residual", block = "basic", with = { ch = 6, stride = 2 }, shortcut = "projection", then = "relu" },
  { kind = "global_avg_pool" },
  { kind = "dropout", p = 0.3 },
  { kind = "linear", name = "head", out_features = "$classes" },
]
freeze = ["stem"]
[blocks]
basic = [
  { kind = "conv2d", out_channels = "$ch", kernel = 3, stride = "$stride", padding = 1, bias = false },
  { kind = "group_norm", groups = 2 },
  { kind = "relu" },
  { kind = "conv2d", out_channels = "$ch", kernel = 3, padding = 1 },
]"#,
    },
];

/// Deterministic pseudo-random values in [-1.5, 1.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 3.0 - 1.5
        })
        .collect()
}

fn model_input(input: Input) -> ModelInput {
    match input {
        Input::Dense(shape) => ModelInput::dense(shape),
        Input::Tokens(len, vocab) => ModelInput {
            shape: vec![len],
            vocab: Some(vocab),
            padding: Some(0),
        },
    }
}

/// A batch of `b` inputs. Token examples: lengths vary (padding 0 at the end, one example
/// all padding), and every example repeats a token.
fn batch(input: Input, b: usize, seed: u64) -> Tensor {
    match input {
        Input::Dense(shape) => {
            let per: usize = shape.iter().product();
            let mut dims = vec![b];
            dims.extend_from_slice(shape);
            Tensor::from_vec(values(b * per, seed), dims, &Device::Cpu).unwrap()
        }
        Input::Tokens(len, vocab) => {
            let raw = values(b * len, seed);
            let mut ids = Vec::with_capacity(b * len);
            for i in 0..b {
                let real = if i == 1 { 0 } else { len - (i % 3) };
                for t in 0..len {
                    let id: f32 = if t >= real {
                        0.0
                    } else if t == 1 {
                        ids[i * len] // a repeated token
                    } else {
                        let u = ((raw[i * len + t] + 1.5) / 3.0 * (vocab - 1) as f32) as usize;
                        (1 + u % (vocab - 1)) as f32
                    };
                    ids.push(id);
                }
            }
            Tensor::from_vec(ids, (b, len), &Device::Cpu).unwrap()
        }
    }
}

fn build(case: &Case, seed: u64) -> Model {
    build_in(case, seed, Precision::F32)
}

fn build_in(case: &Case, seed: u64, precision: Precision) -> Model {
    let mut config: ModelConfig =
        toml::from_str(case.model).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    config.dtype = Some(precision);
    let model = Model::build(&config, &model_input(case.input), CLASSES, seed)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    for (p, (name, var)) in model.named_parameters().into_iter().enumerate() {
        assert_eq!(var.dtype(), precision.dtype(), "{}: {name}", case.name);
        randomise(&var, seed * 1000 + p as u64);
    }
    model
}

/// Replaces a parameter's values by random ones at its initial scale (its root mean
/// square; 1 for a parameter that starts at 0, as β): a norm layer's γ = 1, β = 0 would
/// hide every error in the terms that γ multiplies or β adds, and a padding row of 0
/// would hide a gradient that reaches it.
fn randomise(var: &candle_core::Var, seed: u64) {
    let init = flat(var.as_tensor());
    let rms = (init.iter().map(|v| v * v).sum::<f64>() / init.len().max(1) as f64).sqrt();
    let scale = if rms > 0.0 { rms } else { 1.0 };
    let fresh: Vec<f64> = values(init.len(), seed)
        .into_iter()
        .map(|v| f64::from(v) * scale)
        .collect();
    let fresh = Tensor::from_vec(fresh, var.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(var.dtype())
        .unwrap();
    var.set(&fresh).unwrap();
    assert_ne!(flat(var.as_tensor()), init, "the parameter changed");
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(ours: f64, theirs: f64, scale: f64, tolerance: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tolerance * theirs.abs().max(scale),
        "{what}: ours {ours} vs autograd {theirs} (scale {scale}, tolerance {tolerance})"
    );
}

/// Per layer, per example: the autograd gradient of each parameter of example i alone.
fn single_example_grads(
    model: &Model,
    x: &Tensor,
    labels: &[u32],
    seed: u64,
) -> Vec<Vec<Vec<Vec<f64>>>> {
    let b = x.dim(0).unwrap();
    let layers = model.trainable_layers();
    (0..b)
        .map(|i| {
            let xi = x.narrow(0, i, 1).unwrap();
            let ctx = model.context(&xi, true, vec![i as u64], seed).unwrap();
            let logits = model.reference_forward_with(&xi, &ctx).unwrap();
            let y = Tensor::from_vec(vec![labels[i]], 1, &Device::Cpu).unwrap();
            let grads = summed_cross_entropy(&logits, &y)
                .unwrap()
                .backward()
                .unwrap();
            layers
                .iter()
                .map(|node| {
                    node.layer
                        .params()
                        .iter()
                        .map(|p| match grads.get(p.var.as_tensor()) {
                            Some(g) => flat(g),
                            None => vec![0.0; p.var.elem_count()],
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_kind_matches_batch_size_one_autograd_passes() {
    for (precision, tolerance) in PRECISIONS {
        matches_batch_size_one_passes(precision, tolerance);
    }
}

fn matches_batch_size_one_passes(precision: Precision, tolerance: f64) {
    const B: usize = 5;
    let mask_seed = 42;
    for (k, case) in CASES.iter().enumerate() {
        let model = build_in(case, k as u64, precision);
        let x = batch(case.input, B, 100 + k as u64)
            .to_dtype(precision.dtype())
            .unwrap();
        let labels: Vec<u32> = (0..B as u32).map(|i| i % CLASSES as u32).collect();
        let ids: Vec<u64> = (0..B as u64).collect();
        let ctx = model.context(&x, true, ids, mask_seed).unwrap();
        let pass = model.training_pass_with(&x, &labels, &ctx).unwrap();
        let singles = single_example_grads(&model, &x, &labels, mask_seed);
        let factors: Vec<f64> = (0..B).map(|i| 0.25 + 0.5 * i as f64).collect();
        for (l, (node, trace)) in model
            .trainable_layers()
            .iter()
            .zip(&pass.traces)
            .enumerate()
        {
            let what = format!("{} / {} ({precision:?})", case.name, node.path);
            let pe = node.layer.per_example(trace, node.norm).unwrap();
            let norms: Vec<f64> = singles
                .iter()
                .map(|per_layer| per_layer[l].iter().flatten().map(|v| v * v).sum())
                .collect();
            let scale = norms.iter().fold(1e-12f64, |m, v| m.max(*v));
            for (i, (ours, theirs)) in pe.sq_norms.iter().zip(&norms).enumerate() {
                close(
                    *ours,
                    *theirs,
                    1e-3 * scale,
                    tolerance,
                    &format!("{what} norm² of example {i}"),
                );
            }
            // Clipped sums, with and without the per-example state, against Σ c_i ∇θ_i,
            // each value within 1e-5 of its tensor's largest or 1e-2 of its layer's (a
            // parameter whose gradient is exactly 0, as attention's key bias, leaves f32
            // noise only).
            let layer_scale = (0..node.layer.params().len())
                .flat_map(|p| {
                    singles
                        .iter()
                        .flat_map(move |s| s[l][p].iter().map(|v| v.abs()))
                })
                .fold(1e-12f64, f64::max);
            for reuse in [None, Some(&pe)] {
                let sums = node.layer.clipped_sums(trace, reuse, &factors).unwrap();
                for (p, sum) in sums.iter().enumerate() {
                    assert_eq!(sum.dims(), node.layer.params()[p].var.dims(), "{what}");
                    let ours = flat(sum);
                    let theirs: Vec<f64> = (0..ours.len())
                        .map(|j| (0..B).map(|i| factors[i] * singles[i][l][p][j]).sum())
                        .collect();
                    let scale = theirs
                        .iter()
                        .fold(1e-2 * layer_scale, |m, v| m.max(v.abs()));
                    for (a, b) in ours.iter().zip(&theirs) {
                        close(*a, *b, scale, tolerance, &format!("{what} clipped sum {p}"));
                    }
                }
            }
        }
    }
}

#[test]
fn the_hand_written_backward_equals_autograd_on_the_whole_batch() {
    for (precision, tolerance) in PRECISIONS {
        backward_equals_autograd(precision, tolerance);
    }
}

fn backward_equals_autograd(precision: Precision, tolerance: f64) {
    const B: usize = 6;
    for (k, case) in CASES.iter().enumerate() {
        let model = build_in(case, 7 + k as u64, precision);
        let x = batch(case.input, B, 200 + k as u64)
            .to_dtype(precision.dtype())
            .unwrap();
        let labels: Vec<u32> = (0..B as u32).map(|i| (i + 1) % CLASSES as u32).collect();
        let ctx = model.context(&x, true, (0..B as u64).collect(), 3).unwrap();
        let pass = model.training_pass_with(&x, &labels, &ctx).unwrap();
        let y = Tensor::from_vec(labels.clone(), B, &Device::Cpu).unwrap();
        let loss =
            summed_cross_entropy(&model.reference_forward_with(&x, &ctx).unwrap(), &y).unwrap();
        let expected = flat(&loss)[0];
        close(
            pass.loss_sum,
            expected,
            1e-6,
            tolerance,
            &format!("{} ({precision:?}): loss", case.name),
        );
        let grads = loss.backward().unwrap();
        let ones = vec![1f64; B];
        for (node, trace) in model.trainable_layers().iter().zip(&pass.traces) {
            let sums = node.layer.clipped_sums(trace, None, &ones).unwrap();
            let layer_scale = node
                .layer
                .params()
                .iter()
                .filter_map(|p| grads.get(p.var.as_tensor()).map(flat))
                .flatten()
                .fold(1e-12f64, |m, v| m.max(v.abs()));
            for (sum, param) in sums.iter().zip(node.layer.params()) {
                let theirs = grads
                    .get(param.var.as_tensor())
                    .map(flat)
                    .unwrap_or_else(|| vec![0.0; param.var.elem_count()]);
                let scale = theirs
                    .iter()
                    .fold(1e-2 * layer_scale, |m, v| m.max(v.abs()));
                for (a, b) in flat(sum).iter().zip(&theirs) {
                    close(
                        *a,
                        *b,
                        scale,
                        tolerance,
                        &format!(
                            "{} / {}.{} ({precision:?})",
                            case.name, node.path, param.name
                        ),
                    );
                }
            }
        }
    }
}

#[test]
fn an_empty_poisson_batch_gives_no_norms_and_zero_sums() {
    for (k, case) in CASES.iter().enumerate() {
        for (precision, _) in PRECISIONS {
            empty_batch(case, k, precision);
        }
    }
}

fn empty_batch(case: &Case, k: usize, precision: Precision) {
    {
        let model = build_in(case, k as u64, precision);
        let x = batch(case.input, 0, 1);
        let pass = model
            .training_pass(&x, &[])
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(pass.loss_sum, 0.0);
        for (node, trace) in model.trainable_layers().iter().zip(&pass.traces) {
            let pe = node.layer.per_example(trace, node.norm).unwrap();
            assert!(pe.sq_norms.is_empty(), "{}", case.name);
            for sum in node.layer.clipped_sums(trace, Some(&pe), &[]).unwrap() {
                assert!(
                    flat(&sum).iter().all(|v| *v == 0.0),
                    "{} / {}",
                    case.name,
                    node.path
                );
            }
        }
    }
}

#[test]
fn per_example_norms_do_not_depend_on_the_rest_of_the_batch() {
    // The batch-independence check: each example's norms in a batch equal its norms alone.
    for (k, case) in CASES.iter().enumerate() {
        for (precision, tolerance) in PRECISIONS {
            let model = build_in(case, k as u64, precision);
            let x = batch(case.input, 4, 300 + k as u64);
            let labels = [0, 1, 2, 0];
            dptrain::model::check_batch_independence(&model, &x, &labels, tolerance)
                .unwrap_or_else(|e| panic!("{} ({precision:?}): {e}", case.name));
        }
    }
}

#[test]
fn frozen_layers_train_nothing_and_keep_their_names() {
    let case = CASES.last().unwrap();
    let model = build(case, 0);
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"stem.weight".to_string()), "{names:?}");
    assert!(
        names.contains(&"2.basic.shortcut.weight".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"head.bias".to_string()), "{names:?}");
    let trainable: Vec<&str> = model
        .trainable_layers()
        .iter()
        .map(|n| n.path.as_str())
        .collect();
    assert!(!trainable.contains(&"stem"), "{trainable:?}");
    let all: usize = model
        .named_parameters()
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum();
    assert_eq!(
        all - model.parameter_count(),
        2 * 4 * 9 + 4,
        "the stem's weight and bias"
    );
}
