//! Tier 1: a model described in a config. A GroupNorm convnet with a residual block,
//! written as `[model] layers = [...]`, trained with DP-SGD (ε = 4) on seeded synthetic
//! CIFAR-shaped images with a planted class pattern; prints the expanded layer table,
//! the accuracy and the ε spent. Runs in CI (tests/it/examples.rs).
//!
//!   cargo run --release --example config_model

use std::path::Path;

use dptrain::config::RunConfig;
use dptrain::model::Model;

const CONFIG: &str = r#"
name = "example-config-model"
seed = 0

[data]
dataset = "synthetic_images"
shape = [3, 16, 16]
train = 2000
test = 500
classes = 4
signal = 0.5

[model]
input = "image"
layers = [
  { kind = "conv2d", name = "stem", out_channels = 8, kernel = 3, padding = 1, bias = false },
  { kind = "group_norm", groups = 4 },
  { kind = "relu" },
  { kind = "residual", block = "basic", with = { ch = 8 }, then = "relu" },
  { kind = "avg_pool2d", kernel = 4 },
  { kind = "flatten" },
  { kind = "linear", name = "head", out_features = "$classes" },
]
[model.blocks]
basic = [
  { kind = "conv2d", out_channels = "$ch", kernel = 3, padding = 1, bias = false },
  { kind = "group_norm", groups = 4 },
  { kind = "relu" },
  { kind = "conv2d", out_channels = "$ch", kernel = 3, padding = 1, bias = false },
  { kind = "group_norm", groups = 4 },
]

[privacy]
target_epsilon = 4.0
delta = 1e-5
clip_norm = 1.0

[training]
epochs = 4
expected_batch_size = 250
optimizer = { name = "sgd", learning_rate = 2.0, momentum = 0.5 }
"#;

fn main() -> dptrain::Result<()> {
    let config = RunConfig::parse(CONFIG, Path::new("config_model.rs"), &[])?;
    let data = config.data.load()?;
    let model = Model::for_data(&config.model, &data.train, 0)?;
    print!("{}", model.show());
    let record = dptrain::train::train(
        &data.train,
        &data.test,
        None,
        &config.model,
        &config.privacy,
        &config.training,
        config.run_seed()?,
        &mut |_| {},
    )?;
    let last = record.epochs.last().expect("at least one epoch");
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
