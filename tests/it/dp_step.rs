//! The DP step on whole models: per-example norms against the naive loop for every model,
//! clipped norms within C, and the noise scale σ·C/(q·N) on a zero gradient.

use dptrain::data::Dataset;
use dptrain::mechanism::{ClippingConfig, clip_factor};
use dptrain::model::{
    Model, ModelConfig, ModelKind, batch_tensor, label_tensor, summed_cross_entropy,
};
use dptrain::train::{DpOptimizer, DpSettings, OptimizerConfig, per_example_norms};

/// A small MNIST-shaped data set of pseudo-random images (no file I/O in unit-size tests).
fn fake_mnist(n: usize) -> Dataset {
    let mut state = 99u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let features = (0..n * 784).map(|_| next() * 3.0 - 0.5).collect();
    let labels = (0..n).map(|i| (i % 10) as u32).collect();
    Dataset {
        features,
        labels,
        feature_shape: vec![1, 28, 28],
        classes: 10,
        vocab: None,
    }
}

fn model(kind: ModelKind) -> Model {
    Model::new(&ModelConfig::preset(kind), &[1, 28, 28], 10, 3).unwrap()
}

/// Every parameter of `model`, flattened, in order.
fn flat_parameters(model: &Model) -> Vec<f32> {
    model
        .parameters()
        .iter()
        .flat_map(|p| {
            p.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

/// The model's logits from candle's own ops only (no dptrain kernel whose backward is
/// the one checked), for evaluation (dropout off).
fn reference(model: &Model, x: &candle_core::Tensor) -> candle_core::Tensor {
    let ctx = model.context(x, false, Vec::new(), 0).unwrap();
    model.reference_forward_with(x, &ctx).unwrap()
}

/// ‖∇θ_i‖ by one backward pass per example, all parameters, in f64.
fn naive_norms(model: &Model, data: &Dataset, indices: &[usize]) -> Vec<f64> {
    indices
        .iter()
        .map(|&i| {
            let x = batch_tensor(&data.features, 784, &[i], &data.feature_shape).unwrap();
            let y = label_tensor(&data.labels, &[i]).unwrap();
            let grads = summed_cross_entropy(&reference(model, &x), &y)
                .unwrap()
                .backward()
                .unwrap();
            model
                .parameters()
                .iter()
                .map(|p| {
                    let g = grads.get(p.as_tensor()).unwrap().flatten_all().unwrap();
                    g.to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|&v| f64::from(v).powi(2))
                        .sum::<f64>()
                })
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

#[test]
fn per_example_norms_match_the_naive_loop_for_every_model() {
    let data = fake_mnist(12);
    let indices: Vec<usize> = (0..12).collect();
    for kind in [ModelKind::Logreg, ModelKind::Mlp, ModelKind::Cnn] {
        let model = model(kind);
        let ours = per_example_norms(&model, &data, &indices).unwrap();
        let naive = naive_norms(&model, &data, &indices);
        for (i, (a, b)) in ours.iter().zip(&naive).enumerate() {
            let error = (*a - b).abs() / b;
            assert!(error < 1e-4, "{kind:?} example {i}: ours {a} vs naive {b}");
        }
    }
}

#[test]
fn the_training_pass_equals_autograd_on_the_whole_batch() {
    // The hand-written backward pass, summed with factors 1, against candle's autograd
    // gradient of the summed loss: every parameter of every model, and the loss itself.
    let data = fake_mnist(6);
    let indices: Vec<usize> = (0..6).collect();
    let x = batch_tensor(&data.features, 784, &indices, &data.feature_shape).unwrap();
    let y = label_tensor(&data.labels, &indices).unwrap();
    let ones = vec![1f64; 6];
    for kind in [ModelKind::Logreg, ModelKind::Mlp, ModelKind::Cnn] {
        let model = model(kind);
        let pass = model.training_pass(&x, &data.labels).unwrap();
        let loss = summed_cross_entropy(&reference(&model, &x), &y).unwrap();
        let expected = f64::from(loss.to_scalar::<f32>().unwrap());
        assert!(
            (pass.loss_sum - expected).abs() < 1e-5 * expected,
            "{kind:?}: loss {} vs {expected}",
            pass.loss_sum
        );
        let grads = loss.backward().unwrap();
        let mut params = model.parameters().into_iter();
        for (node, trace) in model.trainable_layers().iter().zip(&pass.traces) {
            for ours in node.layer.clipped_sums(trace, None, &ones).unwrap() {
                let param = params.next().unwrap();
                let theirs = grads.get(param.as_tensor()).unwrap();
                assert_eq!(ours.dims(), theirs.dims(), "{kind:?}");
                let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in ours.iter().zip(&theirs) {
                    assert!((a - b).abs() <= 1e-4 * scale, "{kind:?}: {a} vs {b}");
                }
            }
        }
        assert!(
            params.next().is_none(),
            "{kind:?}: a parameter without a trace"
        );
    }
}

#[test]
fn clipped_per_example_gradients_never_exceed_the_clip_norm() {
    // The gradient each example actually contributes, extracted from the clipped sum with a
    // one-hot factor vector, has norm at most C (1e-6 slack for f32).
    let data = fake_mnist(8);
    let indices: Vec<usize> = (0..8).collect();
    for (kind, clip_norm) in [
        (ModelKind::Cnn, 0.1f64),
        (ModelKind::Mlp, 1.0),
        (ModelKind::Logreg, 0.01),
    ] {
        let model = model(kind);
        let norms = per_example_norms(&model, &data, &indices).unwrap();
        let x = batch_tensor(&data.features, 784, &indices, &data.feature_shape).unwrap();
        let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i]).collect();
        let traces = model.training_pass(&x, &labels).unwrap().traces;
        let mut clipped_any = false;
        for (i, &norm) in norms.iter().enumerate() {
            let factor = f64::from(clip_factor(norm as f32, clip_norm as f32));
            clipped_any |= factor < 1.0;
            let mut one_hot = vec![0.0f64; indices.len()];
            one_hot[i] = factor;
            let mut sq = 0.0f64;
            for (node, trace) in model.trainable_layers().iter().zip(&traces) {
                // The per-example gradients, when the norm rule materialised them, are reused.
                let pe = node.layer.per_example(trace, node.norm).unwrap();
                for t in node.layer.clipped_sums(trace, Some(&pe), &one_hot).unwrap() {
                    sq += t
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|&v| f64::from(v).powi(2))
                        .sum::<f64>();
                }
            }
            let clipped = sq.sqrt();
            assert!(
                clipped <= clip_norm * (1.0 + 1e-6),
                "{kind:?} example {i}: clipped norm {clipped} > {clip_norm}"
            );
        }
        assert!(clipped_any, "{kind:?}: the test should clip something");
    }
}

#[test]
fn noise_on_a_zero_gradient_has_std_sigma_c_over_expected_batch() {
    // An empty Poisson batch: the update is −lr · N(0, (σC)²)/(q·N) on every coordinate.
    let data = fake_mnist(4);
    let model = model(ModelKind::Mlp);
    let before = flat_parameters(&model);
    let (sigma, clip, expected_batch) = (1.3, 0.7, 256.0);
    let settings = DpSettings {
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 1.0,
            momentum: 0.0,
        },
        clipping: ClippingConfig {
            clip_norm: clip,
            ..ClippingConfig::default()
        },
        noise_multiplier: sigma,
        expected_batch_size: expected_batch,
        max_physical_batch: 64,
        private: true,
        noise: dptrain::train::NoiseMode::Seeded(17),
    };
    let mut optimizer = DpOptimizer::new(&model, settings).unwrap();
    let stats = optimizer.step(&model, &data, &[]).unwrap();
    assert_eq!(stats.batch_size, 0);
    let after = flat_parameters(&model);
    let deltas: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| f64::from(a - b))
        .collect();
    let n = deltas.len() as f64;
    let mean = deltas.iter().sum::<f64>() / n;
    let var = deltas.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let expected_std = sigma * clip / expected_batch;
    // Variance of n normals: N(s², 2s⁴/n); |z| < 4.9 is a 1e-6 false-failure bound.
    let z = (var - expected_std.powi(2)) / (expected_std.powi(2) * (2.0 / n).sqrt());
    assert!(
        z.abs() < 4.9,
        "std {} vs {expected_std} (z = {z})",
        var.sqrt()
    );
    assert!(mean.abs() < 4.9 * expected_std / n.sqrt(), "mean {mean}");
}

#[test]
fn models_have_the_reference_parameter_counts() {
    // ../bench/opacus/README.md: 7,850, 407,050 and 26,010 parameters.
    assert_eq!(model(ModelKind::Logreg).parameter_count(), 7_850);
    assert_eq!(model(ModelKind::Mlp).parameter_count(), 407_050);
    assert_eq!(model(ModelKind::Cnn).parameter_count(), 26_010);
    assert_eq!(model(ModelKind::Cnn).layers()[0].layer.kind(), "conv2d");
}

#[test]
fn a_non_finite_example_contributes_nothing() {
    // Example 0 has a NaN pixel: its clip factor is 0 and the clipped sum equals the sum
    // over the other examples alone, finite, for every model and both sum paths.
    let mut data = fake_mnist(6);
    data.features[300] = f32::NAN;
    let all: Vec<usize> = (0..6).collect();
    let rest: Vec<usize> = (1..6).collect();
    for kind in [ModelKind::Logreg, ModelKind::Mlp, ModelKind::Cnn] {
        let model = model(kind);
        let pass = |indices: &[usize]| {
            let x = batch_tensor(&data.features, 784, indices, &data.feature_shape).unwrap();
            let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i]).collect();
            model.training_pass(&x, &labels).unwrap()
        };
        let (with_nan, clean) = (pass(&all), pass(&rest));
        assert!(with_nan.loss_sum.is_finite());
        let factors = vec![0f64, 1.0, 1.0, 1.0, 1.0, 1.0];
        let ones = vec![1f64; 5];
        // The flat norm of example 0 is not finite (a max pool may drop the NaN from later
        // layers, but the first layer's gradient has it).
        let norms = dptrain::train::per_example_norms(&model, &data, &all).unwrap();
        assert!(!norms[0].is_finite() && norms[1..].iter().all(|n| n.is_finite()));
        let layers = model.trainable_layers();
        for ((node, a), b) in layers.iter().zip(&with_nan.traces).zip(&clean.traces) {
            let pe = node.layer.per_example(a, node.norm).unwrap();
            for reuse in [None, Some(&pe)] {
                let ours = node.layer.clipped_sums(a, reuse, &factors).unwrap();
                let theirs = node.layer.clipped_sums(b, None, &ones).unwrap();
                for (ours, theirs) in ours.into_iter().zip(theirs) {
                    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let scale = theirs.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    for (x, y) in ours.iter().zip(&theirs) {
                        assert!((x - y).abs() <= 1e-4 * scale, "{kind:?}: {x} vs {y}");
                    }
                }
            }
        }
    }
}

/// Issue 28: the three stages composed by hand (clipped sum → privatizer → update) give
/// `DpOptimizer::step`'s parameters bit for bit, over several steps (momentum state, the
/// noise stream and the dropout masks all carry over), for SGD with momentum and Adam.
#[test]
fn the_stages_composed_by_hand_equal_the_dp_step_bit_for_bit() {
    use dptrain::train::{ClippedSum, GaussianPrivatizer, Privatizer, Update};
    let data = fake_mnist(96);
    let batches: [&[usize]; 3] = [&[0, 5, 9, 17, 40, 41, 77], &[], &[3, 4, 5, 6, 90, 95]];
    let optimizers = [
        OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.9,
        },
        OptimizerConfig::Adam {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.999,
        },
    ];
    for (kind, optimizer) in [ModelKind::Cnn, ModelKind::Mlp].into_iter().zip(optimizers) {
        let (sigma, clip, expected_batch, seed) = (0.9, 0.8, 6.5, 23);
        let clipping = ClippingConfig {
            clip_norm: clip,
            ..ClippingConfig::default()
        };
        let composed = model(kind);
        let settings = DpSettings {
            optimizer,
            clipping,
            noise_multiplier: sigma,
            expected_batch_size: expected_batch,
            max_physical_batch: 4,
            private: true,
            noise: dptrain::train::NoiseMode::Seeded(seed),
        };
        let mut dp = DpOptimizer::new(&composed, settings).unwrap();
        let by_hand = model(kind);
        let params = by_hand.parameters();
        // The mask seed DpOptimizer derives from the noise seed (dropout; none here).
        let mut clipped_sum =
            ClippedSum::new(&params, clipping, 4, true, seed ^ 0x6d61_736b_7365_6564).unwrap();
        let mut privatizer = GaussianPrivatizer::new(sigma, clip, seed).unwrap();
        let mut update = Update::new(expected_batch, optimizer.build(&params).unwrap()).unwrap();
        for batch in batches {
            let stats = dp.step(&composed, &data, batch).unwrap();
            let (mut sums, hand_stats) = clipped_sum.compute(&by_hand, &data, batch, None).unwrap();
            assert_eq!(stats, hand_stats);
            privatizer.privatize(&mut sums, None).unwrap();
            update.apply(&params, sums).unwrap();
        }
        let (a, b) = (flat_parameters(&composed), flat_parameters(&by_hand));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{kind:?}: the composed stages differ from DpOptimizer::step"
        );
        // And the step did move the parameters.
        assert_ne!(a, flat_parameters(&model(kind)));
    }
}

/// The shipped nets as configs (configs/models/*.toml) are the presets: `kind = "cnn"` and
/// the file's layer list build the same parameters and take the same DP step, bit for bit
/// (docs/models.md's claim, issue 28 "records for claims").
#[test]
fn the_shipped_model_files_train_exactly_as_their_presets() {
    #[derive(serde::Deserialize)]
    struct File {
        model: ModelConfig,
    }
    let data = fake_mnist(64);
    for kind in [ModelKind::Logreg, ModelKind::Mlp, ModelKind::Cnn] {
        let name = format!("{kind:?}").to_lowercase();
        let path = format!("{}/configs/models/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let file: File = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(!file.model.layers.is_empty(), "{path} lists no layers");
        let preset = model(kind);
        let listed = Model::new(&file.model, &[1, 28, 28], 10, 3).unwrap();
        assert_eq!(flat_parameters(&preset), flat_parameters(&listed), "{path}");
        for m in [&preset, &listed] {
            let settings = DpSettings {
                optimizer: OptimizerConfig::Sgd {
                    learning_rate: 0.5,
                    momentum: 0.0,
                },
                clipping: ClippingConfig::default(),
                noise_multiplier: 1.0,
                expected_batch_size: 8.0,
                max_physical_batch: 16,
                private: true,
                noise: dptrain::train::NoiseMode::Seeded(5),
            };
            let mut dp = DpOptimizer::new(m, settings).unwrap();
            dp.step(m, &data, &[1, 2, 3, 5, 8, 13, 21, 34]).unwrap();
        }
        let (a, b) = (flat_parameters(&preset), flat_parameters(&listed));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{path}"
        );
    }
}
