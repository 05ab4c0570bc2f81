//! Models that cannot be built are refused by message, naming the layer (issue 28 §3):
//! sizes that do not fit in memory (§3.6), and every refusal of src/model/ (§3.3).

use dptrain::model::kinds::MAX_TENSOR_BYTES;
use dptrain::model::{Model, ModelConfig, ModelInput};

/// The error of building `[model]` TOML `model` for `input` with 3 classes.
fn refusal(model: &str, input: &ModelInput) -> String {
    let config: ModelConfig = toml::from_str(model).unwrap_or_else(|e| panic!("{model}: {e}"));
    match Model::build(&config, input, 3, 0) {
        Ok(_) => panic!("built, but should be refused: {model}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
}

#[test]
fn a_parameter_larger_than_the_tensor_limit_is_refused_before_allocating() {
    // Issue 28 §3.6: out_features typed with extra zeros used to abort `model show` with
    // "memory allocation of 313600000000000 bytes failed".
    let message = refusal(
        r#"layers = [
  { kind = "flatten" },
  { kind = "linear", out_features = 100000000000 },
  { kind = "linear", out_features = 3 },
]"#,
        &ModelInput::dense(&[1, 28, 28]),
    );
    assert_contains(
        &message,
        &[
            "model layer `1.linear`",
            "shape [100000000000, 784]",
            "313600000000000 bytes",
            &format!("{MAX_TENSOR_BYTES} bytes (16 GiB)"),
        ],
    );
    assert_eq!(MAX_TENSOR_BYTES, 1 << 34);
}

#[test]
fn a_shape_whose_size_overflows_is_refused() {
    let message = refusal(
        r#"input = "tokens"
layers = [
  { kind = "embedding", dim = 9223372036854775807 },
  { kind = "mean_pool" },
  { kind = "linear", out_features = 3 },
]"#,
        &ModelInput {
            shape: vec![4],
            vocab: Some(10),
            padding: None,
        },
    );
    assert_contains(
        &message,
        &[
            "model layer `0.embedding`",
            "more elements than a 64-bit count",
        ],
    );
}

#[test]
fn activations_too_large_at_the_configured_batch_are_refused_by_layer() {
    // A 1×1 conv to a million channels: 4 MB of weights, but 3.1 GB of output per
    // 28×28 example, so 50 GB at a batch of 16.
    let config: ModelConfig = toml::from_str(
        r#"layers = [
  { kind = "conv2d", out_channels = 1000000, kernel = 1 },
  { kind = "global_avg_pool" },
  { kind = "linear", out_features = 3 },
]"#,
    )
    .unwrap();
    let model = Model::build(&config, &ModelInput::dense(&[1, 28, 28]), 3, 0).unwrap();
    model.check_activations(1).unwrap();
    let message = model.check_activations(16).unwrap_err().to_string();
    assert_contains(
        &message,
        &[
            "model layer `0.conv2d`",
            "its output at a batch of 16 of shape [16, 1000000, 28, 28]",
            "50176000000 bytes",
        ],
    );
}
