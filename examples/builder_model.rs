//! Tier 2: models written in Rust with the builder, the same vocabulary as configs. An
//! embedding-bag text classifier on seeded synthetic token sequences (planted class
//! markers), checked for batch independence, saved as a config's `[model]`, and trained
//! with DP-SGD at ε = 3. Runs in CI (tests/it/examples.rs).
//!
//!   cargo run --release --example builder_model

use std::path::Path;

use dptrain::config::RunConfig;
use dptrain::model::builder::Sequential;
use dptrain::model::kinds::BagMode;
use dptrain::model::{ModelInput, check_batch_independence, training_batch};

const RUN: &str = r#"
name = "example-builder-model"
seed = 0

[data]
dataset = "synthetic_tokens"
max_len = 32
vocab_size = 500
train = 4000
test = 1000
classes = 2
signal = 0.15

[model]
kind = "logreg"

[privacy]
target_epsilon = 3.0
delta = 1e-5
clip_norm = 1.0

[training]
epochs = 5
expected_batch_size = 256
optimizer = { name = "adam", learning_rate = 0.02 }
"#;

fn main() -> dptrain::Result<()> {
    let mut config = RunConfig::parse(RUN, Path::new("builder_model.rs"), &[])?;
    let data = config.data.load()?;
    let net = Sequential::new(ModelInput::of(&data.train))
        .embedding_bag(16, BagMode::Mean, Some(0))
        .linear(16)
        .relu()
        .linear(data.train.classes)
        .named("head");
    let model = net.build(data.train.classes, 0)?;
    print!("{}", model.show());
    let (x, labels) = training_batch(&data.train, &(0..8).collect::<Vec<_>>())?;
    check_batch_independence(&model, &x, &labels, 1e-5)?;
    // The builder's model as a config: what a run manifest stores.
    config.model = net.to_config();
    println!(
        "{}",
        toml::to_string(&config.model).expect("a model config serialises")
    );
    let record = dptrain::train::train(
        &data.train,
        &data.test,
        None,
        &config.model,
        &config.privacy,
        &config.training,
        0,
        &mut |_| {},
    )?;
    let last = record.epochs.last().expect("at least one epoch");
    println!(
        "test accuracy {:.4} at ε = {:.3} (δ = {:e}); chance is 0.5",
        last.test_accuracy, last.epsilon, config.privacy.delta
    );
    if last.test_accuracy < 0.7 {
        return Err(dptrain::Error::Usage(format!(
            "the planted markers were not learned: accuracy {}",
            last.test_accuracy
        )));
    }
    Ok(())
}
