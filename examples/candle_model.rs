//! Tier 3: a model written with candle's own ops and made private. Its parameters come
//! from dptrain's DP layer wrappers (conv2d, group_norm, linear), each of which records its
//! input and reads its output gradient through a zero-Var tap; the residual sum, the ReLUs
//! and the pooling between them are plain candle code. The model is checked for batch
//! independence and trained with DP-SGD (ε = 4) on seeded synthetic CIFAR-shaped images
//! with a planted class pattern, through the same DP step as the config and builder
//! tiers. A parameter that no DP layer owns is refused, by name. Runs in CI
//! (tests/it/examples.rs).
//!
//!   cargo run --release --example candle_model

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dptrain::config::RunConfig;
use dptrain::model::kinds::Padding;
use dptrain::model::private::{DpLayers, make_private};
use dptrain::model::{LayerSpec, check_batch_independence, training_batch};
use dptrain::train::{Hooks, Splits, train_module};

const CONFIG: &str = r#"
name = "example-candle-model"
seed = 0

[data]
dataset = "synthetic_images"
shape = [3, 16, 16]
train = 2000
test = 500
classes = 4
signal = 0.5

[model]
kind = "logreg"   # not used: the model is the candle code below

[privacy]
target_epsilon = 4.0
delta = 1e-5
clip_norm = 1.0

[training]
epochs = 4
expected_batch_size = 250
optimizer = { name = "sgd", learning_rate = 2.0, momentum = 0.5 }
"#;

fn conv(out_channels: usize) -> LayerSpec {
    LayerSpec::Conv2d {
        out_channels,
        kernel: 3,
        stride: 1,
        padding: Padding::Size(1),
        dilation: 1,
        groups: 1,
        bias: false,
    }
}

fn group_norm() -> LayerSpec {
    LayerSpec::GroupNorm {
        groups: 4,
        eps: 1e-5,
    }
}

fn main() -> dptrain::Result<()> {
    let config = RunConfig::parse(CONFIG, Path::new("candle_model.rs"), &[])?;
    let data = config.data.load()?;
    let classes = data.train.classes;

    let varmap = VarMap::new();
    let dp = DpLayers::new(0);
    let stem = dp.add(&varmap, "stem", conv(8), &[3, 16, 16])?;
    let stem_norm = dp.add(&varmap, "stem_norm", group_norm(), &[8, 16, 16])?;
    let block = dp.add(&varmap, "block.conv", conv(8), &[8, 16, 16])?;
    let block_norm = dp.add(&varmap, "block.norm", group_norm(), &[8, 16, 16])?;
    let head = dp.add(
        &varmap,
        "head",
        LayerSpec::Linear {
            out_features: classes,
            bias: true,
        },
        &[8 * 4 * 4],
    )?;
    let forward = move |x: &Tensor| -> candle_core::Result<Tensor> {
        let x = stem_norm.forward(&stem.forward(x)?)?.relu()?;
        // A residual block written by hand: relu(x + norm(conv(x))).
        let x = (&x + block_norm.forward(&block.forward(&x)?)?)?.relu()?;
        let x = x.avg_pool2d(4)?.flatten_from(1)?;
        head.forward(&x)
    };
    let model = make_private(forward, &varmap, &dp)?;
    let (x, labels) = training_batch(&data.train, &(0..8).collect::<Vec<_>>())?;
    check_batch_independence(&model, &x, &labels, 1e-4)?;

    // What make_private refuses: a candle-nn layer beside a DP layer, whose weights no DP
    // layer owns (their per-example gradients could not be clipped).
    let mixed = VarMap::new();
    let mixed_dp = DpLayers::new(1);
    let dp_head = mixed_dp.add(
        &mixed,
        "dp_head",
        LayerSpec::Linear {
            out_features: classes,
            bias: true,
        },
        &[8 * 4 * 4],
    )?;
    let vb = VarBuilder::from_varmap(&mixed, candle_core::DType::F32, &candle_core::Device::Cpu);
    let plain = candle_nn::linear(classes, classes, vb.pp("plain_head"))?;
    let refusal = match make_private(
        move |x: &Tensor| plain.forward(&dp_head.forward(x)?),
        &mixed,
        &mixed_dp,
    ) {
        Ok(_) => {
            return Err(dptrain::Error::Usage(
                "a candle-nn parameter was not refused".into(),
            ));
        }
        Err(e) => e.to_string(),
    };
    println!("refused: {refusal}");

    let splits = Splits {
        train: &data.train,
        test: &data.test,
        validation: None,
    };
    let record = train_module(
        model,
        splits,
        &config.privacy,
        &config.training,
        config.run_seed()?,
        Hooks::default(),
    )?;
    let last = record.epochs.last().expect("at least one epoch");
    println!(
        "parameters: {}",
        varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum::<usize>()
    );
    println!(
        "test accuracy {:.4} at ε = {:.3} (δ = {:e}); chance is 0.25",
        last.test_accuracy, last.epsilon, config.privacy.delta
    );
    if last.test_accuracy < 0.5 {
        return Err(dptrain::Error::Usage(format!(
            "the planted signal was not learned: accuracy {}",
            last.test_accuracy
        )));
    }
    Ok(())
}
