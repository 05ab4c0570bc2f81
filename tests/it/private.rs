//! Tier 3: a candle model made private (src/model/private.rs). Its per-example norms and
//! clipped sums equal a naive loop of batch-size-1 candle autograd passes over the user's
//! own forward, and equal those of the same layers as a config/builder model (the
//! hand-written backward); parameters no DP layer owns, shared weights and code that mixes
//! examples are refused by name.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use dptrain::data::Dataset;
use dptrain::data::synthetic::SyntheticImages;
use dptrain::mechanism::ClippingConfig;
use dptrain::model::builder::Sequential;
use dptrain::model::kinds::Padding;
use dptrain::model::private::{DpLayer, DpLayers, PrivateModel, make_private};
use dptrain::model::{
    DpModule, LayerSpec, ModelInput, Precision, check_batch_independence, per_example_norms,
    summed_cross_entropy, training_batch,
};
use dptrain::train::{DpOptimizer, DpSettings, NoiseMode, OptimizerConfig};

use crate::support::relative_error;

const SHAPE: [usize; 3] = [2, 6, 6];
const CLASSES: usize = 3;

fn images(n: usize) -> Dataset {
    SyntheticImages {
        shape: SHAPE.to_vec(),
        train: n,
        test: 1,
        classes: CLASSES,
        signal: 0.5,
        seed: 7,
    }
    .generate()
    .unwrap()
    .0
}

fn conv(out_channels: usize) -> LayerSpec {
    LayerSpec::Conv2d {
        out_channels,
        kernel: 3,
        stride: 1,
        padding: Padding::Size(1),
        dilation: 1,
        groups: 1,
        bias: true,
    }
}

fn group_norm() -> LayerSpec {
    LayerSpec::GroupNorm {
        groups: 2,
        eps: 1e-5,
    }
}

fn linear(out_features: usize) -> LayerSpec {
    LayerSpec::Linear {
        out_features,
        bias: true,
    }
}

/// conv → group norm → relu → a hand-written residual (x + conv(x)) → mean over space
/// → linear, with every parameter in DP layers.
struct Net {
    varmap: VarMap,
    layers: DpLayers,
    stem: DpLayer,
    norm: DpLayer,
    block: DpLayer,
    head: DpLayer,
}

/// Each precision with the relative tolerance of its checks.
const PRECISIONS: [(Precision, f64); 2] = [(Precision::F32, 1e-5), (Precision::F64, 1e-12)];

fn net_in(seed: u64, precision: Precision) -> Net {
    let varmap = VarMap::new();
    let layers = DpLayers::with_precision(seed, precision);
    let stem = layers.add(&varmap, "stem", conv(4), &SHAPE).unwrap();
    let norm = layers
        .add(&varmap, "norm", group_norm(), &[4, 6, 6])
        .unwrap();
    let block = layers.add(&varmap, "block", conv(4), &[4, 6, 6]).unwrap();
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    Net {
        varmap,
        layers,
        stem,
        norm,
        block,
        head,
    }
}

type Forward = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

fn private(net: &Net) -> PrivateModel<Forward> {
    let (stem, norm, block, head) = (
        net.stem.clone(),
        net.norm.clone(),
        net.block.clone(),
        net.head.clone(),
    );
    let forward: Forward = Box::new(move |x: &Tensor| {
        let x = norm.forward(&stem.forward(x)?)?.relu()?;
        let x = (&x + block.forward(&x)?)?;
        head.forward(&x.mean(3)?.mean(2)?)
    });
    make_private(forward, &net.varmap, &net.layers).unwrap()
}

/// Example i's gradient of every VarMap parameter, by candle autograd on the user's
/// forward with the example alone (the naive loop).
fn naive_gradients(
    model: &dyn DpModule,
    varmap: &VarMap,
    x: &Tensor,
    y: &Tensor,
) -> Vec<Vec<Tensor>> {
    let vars: Vec<Var> = varmap.all_vars();
    (0..x.dim(0).unwrap())
        .map(|i| {
            let logits = model.forward(&x.narrow(0, i, 1).unwrap()).unwrap();
            let loss = summed_cross_entropy(&logits, &y.narrow(0, i, 1).unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            vars.iter()
                .map(|v| grads.get(v.as_tensor()).unwrap().clone())
                .collect()
        })
        .collect()
}

fn sq_norm(t: &Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn per_example_norms_equal_a_naive_loop_of_candle_autograd_passes() {
    for (precision, tolerance) in PRECISIONS {
        let net = net_in(1, precision);
        let model = private(&net);
        let data = images(6);
        let indices: Vec<usize> = (0..6).collect();
        let (x, y) = dptrain::model::dataset_batch(&data, &indices).unwrap();
        let ours = per_example_norms(&model, &data, &indices).unwrap();
        let naive = naive_gradients(&model, &net.varmap, &x, &y);
        for (i, (ours, grads)) in ours.iter().zip(&naive).enumerate() {
            assert_eq!(grads[0].dtype(), precision.dtype());
            let expected = grads.iter().map(sq_norm).sum::<f64>().sqrt();
            let err = relative_error(*ours, expected);
            assert!(
                err < tolerance,
                "{precision:?} example {i}: {ours} vs {expected} ({err:e})"
            );
        }
    }
}

#[test]
fn a_dp_step_releases_the_clipped_sum_of_the_naive_gradients() {
    for (precision, tolerance) in PRECISIONS {
        dp_step_releases_the_clipped_sum(precision, tolerance);
    }
}

/// One DP step (norms, factors, clipped sums, noise, 1/(qN), SGD) in `precision` against
/// the naive Σ_i min(1, C/‖g_i‖) g_i of batch-size-1 autograd passes.
fn dp_step_releases_the_clipped_sum(precision: Precision, tolerance: f64) {
    let net = net_in(2, precision);
    let model = private(&net);
    let data = images(5);
    let indices: Vec<usize> = (0..5).collect();
    let (x, y) = dptrain::model::dataset_batch(&data, &indices).unwrap();
    let naive = naive_gradients(&model, &net.varmap, &x, &y);
    let clip = 0.05;
    // Σ_i min(1, C/(‖g_i‖ + ε)) g_i, parameter by parameter (ε = 1e-6 keeps C/‖g‖
    // finite; mechanism::clip_factor).
    let epsilon = f64::from(dptrain::mechanism::clipping::CLIP_EPSILON);
    let factors: Vec<f64> = naive
        .iter()
        .map(|g| (clip / (g.iter().map(sq_norm).sum::<f64>().sqrt() + epsilon)).min(1.0))
        .collect();
    let vars = net.varmap.all_vars();
    let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    let expected_batch = 4.0;
    const LR: f64 = 1000.0;
    let mut optimizer = DpOptimizer::new(
        &model,
        DpSettings {
            // A large rate: the step dwarfs the parameters, so θ − θ' loses no digits.
            optimizer: OptimizerConfig::Sgd {
                learning_rate: LR,
                momentum: 0.0,
            },
            clipping: ClippingConfig {
                clip_norm: clip,
                ..ClippingConfig::default()
            },
            // Negligible noise (σC/‖sum‖ ~ 1e-9 σ, below either tolerance): the released
            // value is the clipped sum (/ q·N).
            noise_multiplier: 1e-6 * tolerance,
            expected_batch_size: expected_batch,
            max_physical_batch: 2,
            private: true,
            noise: NoiseMode::Seeded(0),
        },
    )
    .unwrap();
    let stats = optimizer.step(&model, &data, &indices).unwrap();
    assert_eq!(stats.clipped, 5, "every example is above C = {clip}");
    for (p, (var, before)) in vars.iter().zip(&before).enumerate() {
        let step = (before - var.as_tensor()).unwrap().flatten_all().unwrap();
        let mut sum = naive[0][p].zeros_like().unwrap();
        for (g, f) in naive.iter().zip(&factors) {
            sum = (sum + (&g[p] * *f).unwrap()).unwrap();
        }
        let expected = (sum * (LR / expected_batch))
            .unwrap()
            .flatten_all()
            .unwrap();
        let read = |t: Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        let (step, expected) = (read(step), read(expected));
        let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (a, b) in step.iter().zip(&expected) {
            assert!(
                (a - b).abs() <= tolerance * scale,
                "{precision:?} parameter {p}: {a} vs {b} (scale {scale})"
            );
        }
    }
}

#[test]
fn the_tap_route_equals_the_hand_written_backward_of_the_same_layers() {
    // The same layers as a builder model (no residual: a plain chain).
    let model = Sequential::new(ModelInput::dense(&SHAPE))
        .conv2d(4, 3)
        .padding(1)
        .group_norm(2)
        .relu()
        .flatten()
        .linear(CLASSES)
        .build(CLASSES, 3)
        .unwrap();
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let c = layers.add(&varmap, "c", conv(4), &SHAPE).unwrap();
    let g = layers.add(&varmap, "g", group_norm(), &[4, 6, 6]).unwrap();
    let l = layers
        .add(&varmap, "l", linear(CLASSES), &[4 * 36])
        .unwrap();
    let ours = make_private(
        move |x: &Tensor| l.forward(&g.forward(&c.forward(x)?)?.relu()?.flatten_from(1)?),
        &varmap,
        &layers,
    )
    .unwrap();
    // Same weights: the builder model's, copied in parameter order.
    let (theirs, mine) = (DpModule::parameters(&model), ours.parameters());
    assert_eq!(theirs.len(), mine.len());
    for (t, m) in theirs.iter().zip(&mine) {
        m.set(t.as_tensor()).unwrap();
    }
    let data = images(7);
    let indices: Vec<usize> = (0..7).collect();
    let a = per_example_norms(&model, &data, &indices).unwrap();
    let b = per_example_norms(&ours, &data, &indices).unwrap();
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        let err = relative_error(*a, *b);
        assert!(err < 1e-5, "example {i}: builder {a}, candle {b}");
    }
}

#[test]
fn a_parameter_that_no_dp_layer_owns_is_refused_by_name() {
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let dp = layers.add(&varmap, "dp", linear(4), &[4]).unwrap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let plain = candle_nn::linear(4, CLASSES, vb.pp("plain")).unwrap();
    let err = make_private(
        move |x: &Tensor| plain.forward(&dp.forward(x)?),
        &varmap,
        &layers,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`plain.bias`") && err.contains("DpLayers::add"),
        "{err}"
    );
    let err = make_private(
        |x: &Tensor| Ok(x.clone()),
        &VarMap::new(),
        &DpLayers::new(0),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no DP layers"), "{err}");
    // A parameter-free kind is candle code, not a DP layer.
    let err = DpLayers::new(0)
        .add(&VarMap::new(), "act", LayerSpec::Relu {}, &[4])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`act`") && err.contains("no parameters"),
        "{err}"
    );
}

#[test]
fn a_shared_weight_and_code_that_mixes_examples_are_refused() {
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let square = layers.add(&varmap, "square", linear(4), &[4]).unwrap();
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    let (s, h) = (square.clone(), head.clone());
    let twice = make_private(
        move |x: &Tensor| h.forward(&s.forward(&s.forward(x)?)?),
        &varmap,
        &layers,
    )
    .unwrap();
    let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let err = twice
        .traced_pass(&x, &[0, 1], vec![0, 1], 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`square`") && err.contains("called twice"),
        "{err}"
    );
    // The failed pass is over: the next one may start.
    let mixing = make_private(
        move |x: &Tensor| {
            // Centring over the batch: example i's activations depend on the others.
            let h = square.forward(x)?;
            head.forward(&h.broadcast_sub(&h.mean_keepdim(0)?)?)
        },
        &varmap,
        &layers,
    )
    .unwrap();
    let data = SyntheticImages {
        shape: vec![1, 2, 2],
        train: 4,
        test: 1,
        classes: CLASSES,
        signal: 0.5,
        seed: 1,
    }
    .generate()
    .unwrap()
    .0;
    let (x, labels) = training_batch(&data, &[0, 1, 2, 3]).unwrap();
    let x = x.flatten_from(1).unwrap();
    let err = check_batch_independence(&mixing, &x, &labels, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixes examples"), "{err}");
}

#[test]
fn a_layer_outside_the_pass_contributes_nothing() {
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let unused = layers.add(&varmap, "unused", linear(4), &[4]).unwrap();
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    let model = make_private(move |x: &Tensor| head.forward(x), &varmap, &layers).unwrap();
    let x = Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
    let pass = model.traced_pass(&x, &[0, 1, 2], vec![0, 1, 2], 0).unwrap();
    assert_eq!(pass.layers.len(), 2);
    assert!(pass.layers[0].trace.is_none() && pass.layers[1].trace.is_some());
    assert_eq!(
        pass.layers[0].per_example(3).unwrap().sq_norms,
        vec![0.0; 3]
    );
    drop(unused);
}

/// A DP step of a private model over the first 4 examples of a 2×2 image set.
fn first_step<F>(model: &PrivateModel<F>) -> dptrain::Result<()>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Sync,
{
    let data = SyntheticImages {
        shape: vec![1, 2, 2],
        train: 4,
        test: 1,
        classes: CLASSES,
        signal: 0.5,
        seed: 1,
    }
    .generate()
    .unwrap()
    .0;
    let mut optimizer = DpOptimizer::new(
        model,
        DpSettings {
            optimizer: OptimizerConfig::Sgd {
                learning_rate: 0.1,
                momentum: 0.0,
            },
            clipping: ClippingConfig::default(),
            noise_multiplier: 1.0,
            expected_batch_size: 4.0,
            max_physical_batch: 4,
            private: true,
            noise: NoiseMode::Seeded(0),
        },
    )?;
    optimizer.step(model, &data, &[0, 1, 2, 3]).map(|_| ())
}

/// The flattened 2×2 images of [`first_step`] pass through `Flatten` in the forwards.
fn flat(x: &Tensor) -> candle_core::Result<Tensor> {
    x.flatten_from(1)
}

#[test]
fn a_forward_that_mixes_examples_is_refused_before_the_first_step() {
    // Issue 28 §3.5: tier 3 does not trust user code; the probe runs inside the first
    // training pass, before anything is released.
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let square = layers.add(&varmap, "square", linear(4), &[4]).unwrap();
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    let before: Vec<Vec<f32>> = varmap
        .all_vars()
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let (s, h) = (square.clone(), head.clone());
    let mixing = make_private(
        move |x: &Tensor| {
            // Centring over the batch: example i's activations depend on the others.
            let a = s.forward(&flat(x)?)?;
            h.forward(&a.broadcast_sub(&a.mean_keepdim(0)?)?)
        },
        &varmap,
        &layers,
    )
    .unwrap();
    let err = first_step(&mixing).unwrap_err().to_string();
    assert!(
        err.contains("model layer `") && err.contains("mixes examples"),
        "{err}"
    );
    let after: Vec<Vec<f32>> = varmap
        .all_vars()
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(before, after, "no step was taken");
    // The same layers without the centring train.
    let honest = make_private(
        move |x: &Tensor| head.forward(&square.forward(&flat(x)?)?),
        &varmap,
        &layers,
    )
    .unwrap();
    first_step(&honest).unwrap();
}

#[test]
fn a_wrapper_parameter_used_outside_its_wrapper_is_refused_by_name() {
    // Weight tying through the Var: the head's weight also read straight from the VarMap
    // (as a tied output embedding would be), so part of its gradient is never traced.
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let hidden = layers.add(&varmap, "hidden", linear(4), &[4]).unwrap();
    let head = layers.add(&varmap, "head", linear(4), &[4]).unwrap();
    let tied = varmap.data().lock().unwrap()["head.weight"].clone();
    let model = make_private(
        move |x: &Tensor| {
            let h = hidden.forward(&flat(x)?)?;
            let out = head.forward(&h)?;
            // logits = out · Wᵀ with the head's own W, outside the wrapper.
            out.matmul(&tied.as_tensor().t()?)?.narrow(1, 0, CLASSES)
        },
        &varmap,
        &layers,
    )
    .unwrap();
    let err = first_step(&model).unwrap_err().to_string();
    assert!(
        err.contains("model layer `head.weight`") && err.contains("outside its DP layer"),
        "{err}"
    );
}

#[test]
fn parameters_added_after_make_private_are_refused_by_name() {
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    let model = make_private(move |x: &Tensor| head.forward(&flat(x)?), &varmap, &layers).unwrap();
    first_step(&model).unwrap();
    // A plain candle parameter, added afterwards.
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _late = candle_nn::linear(4, 4, vb.pp("late")).unwrap();
    let err = first_step(&model).unwrap_err().to_string();
    assert!(
        err.contains("`late.") && err.contains("after make_private"),
        "{err}"
    );
    // A DP layer added afterwards.
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    let head = layers.add(&varmap, "head", linear(CLASSES), &[4]).unwrap();
    let model = make_private(move |x: &Tensor| head.forward(&flat(x)?), &varmap, &layers).unwrap();
    layers.add(&varmap, "extra", linear(4), &[4]).unwrap();
    let err = model
        .traced_pass(
            &Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap(),
            &[0, 1],
            vec![0, 1],
            0,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("after make_private"), "{err}");
}
