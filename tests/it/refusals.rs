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

/// Token ids of length 6 over a vocabulary of 10, id 0 padding.
fn tokens() -> ModelInput {
    ModelInput {
        shape: vec![6],
        vocab: Some(10),
        padding: Some(0),
    }
}

#[test]
fn every_refusal_of_a_layer_kind_names_the_layer_and_the_fix() {
    // (what, [model] TOML, input, parts of the message). Images are (2, 7, 7).
    let image = || ModelInput::dense(&[2, 7, 7]);
    let cases: Vec<(&str, &str, ModelInput, &[&str])> = vec![
        (
            "avg_pool2d with stride != kernel",
            r#"layers = [{ kind = "avg_pool2d", kernel = 2, stride = 1 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &[
                "`0.avg_pool2d`",
                "stride = kernel only",
                "kernel 2, stride 1",
            ],
        ),
        (
            "same padding with stride 2",
            r#"layers = [{ kind = "conv2d", out_channels = 2, kernel = 3, stride = 2, padding = "same" }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`0.conv2d`", "padding = \"same\" needs stride 1, got 2"],
        ),
        (
            "same padding over an even receptive field",
            r#"layers = [{ kind = "conv2d", out_channels = 2, kernel = 2, padding = "same" }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &[
                "`0.conv2d`",
                "needs an odd receptive field; kernel 2 with dilation 1 spans 2",
            ],
        ),
        (
            "an unknown padding name",
            r#"layers = [{ kind = "conv1d", out_channels = 2, kernel = 3, padding = "valid" }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            ModelInput::dense(&[2, 9]),
            &[
                "`0.conv1d`",
                "padding = \"valid\": a number of zeros or \"same\"",
            ],
        ),
        (
            "conv groups that do not divide the channels",
            r#"layers = [{ kind = "conv2d", out_channels = 3, kernel = 3, groups = 2 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &[
                "`0.conv2d`",
                "groups = 2 must divide both the input channels (2) and out_channels (3)",
            ],
        ),
        (
            "group_norm groups that do not divide the channels",
            r#"layers = [{ kind = "group_norm", groups = 4 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`0.group_norm`", "groups = 4 must divide the 2 channels"],
        ),
        (
            "padding_idx beyond the vocabulary",
            r#"layers = [{ kind = "embedding", dim = 4, padding_idx = 10 }, { kind = "mean_pool" }, { kind = "linear", out_features = 3 }]"#,
            tokens(),
            &[
                "`0.embedding`",
                "padding_idx = 10 is beyond the vocabulary of 10 tokens",
            ],
        ),
        (
            "an embedding over data without tokens",
            r#"layers = [{ kind = "embedding_bag", dim = 4 }, { kind = "linear", out_features = 3 }]"#,
            ModelInput::dense(&[6]),
            &[
                "`0.embedding_bag`",
                "the data set has no vocabulary: use `tokens` data",
            ],
        ),
        (
            "heads that do not divide the width",
            r#"layers = [{ kind = "embedding", dim = 6 }, { kind = "self_attention", heads = 4 }, { kind = "mean_pool" }, { kind = "linear", out_features = 3 }]"#,
            tokens(),
            &[
                "`1.self_attention`",
                "heads = 4 must divide the width D = 6",
            ],
        ),
        (
            "a sequence longer than max_len",
            r#"layers = [{ kind = "embedding", dim = 4 }, { kind = "positional_embedding", max_len = 5 }, { kind = "mean_pool" }, { kind = "linear", out_features = 3 }]"#,
            tokens(),
            &[
                "`1.positional_embedding`",
                "sequences of 6 positions exceed max_len = 5",
            ],
        ),
        (
            "a max-pool window that does not fit",
            r#"layers = [{ kind = "max_pool2d", kernel = 8 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &[
                "`0.max_pool2d`",
                "a 8×8 window at stride 8 does not fit 7×7",
            ],
        ),
        (
            "an avg-pool window that does not fit",
            r#"layers = [{ kind = "avg_pool2d", kernel = 8 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`0.avg_pool2d`", "a 8×8 window does not fit 7×7"],
        ),
        (
            "a conv kernel that does not fit",
            r#"layers = [{ kind = "conv2d", out_channels = 2, kernel = 4, dilation = 3 }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`0.conv2d`", "does not fit the 7×7 input"],
        ),
        (
            "dropout p = 1",
            r#"layers = [{ kind = "flatten" }, { kind = "dropout", p = 1.0 }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`1.dropout`", "p = 1: a probability in [0, 1)"],
        ),
        (
            "dropout p < 0",
            r#"layers = [{ kind = "flatten" }, { kind = "dropout", p = -0.1 }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`1.dropout`", "p = -0.1: a probability in [0, 1)"],
        ),
        (
            "a residual over images with no 1×1 projection",
            r#"layers = [{ kind = "residual", block = "b", shortcut = "projection" }, { kind = "flatten" }, { kind = "linear", out_features = 3 }]
[blocks]
b = [{ kind = "conv2d", out_channels = 2, kernel = 2 }]"#,
            image(),
            &["`0.b`", "no 1×1 projection maps [2, 7, 7] to [2, 6, 6]"],
        ),
        (
            "a residual with no projection at all",
            r#"layers = [{ kind = "residual", block = "b", shortcut = "projection" }, { kind = "linear", out_features = 3 }]
[blocks]
b = [{ kind = "flatten" }]"#,
            image(),
            &["`0.b`", "no projection maps [2, 7, 7] to [98]"],
        ),
        (
            "a zero width",
            r#"layers = [{ kind = "flatten" }, { kind = "linear", out_features = 0 }, { kind = "linear", out_features = 3 }]"#,
            image(),
            &["`1.linear`", "out_features = 0: at least 1"],
        ),
        (
            "a linear layer over images",
            r#"layers = [{ kind = "linear", out_features = 3 }]"#,
            image(),
            &["`0.linear`", "add a flatten before it"],
        ),
    ];
    for (what, model, input, parts) in cases {
        let message = refusal(model, &input);
        for part in parts {
            assert!(message.contains(part), "{what}: `{part}` not in: {message}");
        }
    }
}

#[test]
fn dp_layers_refuse_a_second_layer_with_the_same_path_and_a_varmap_name_collision() {
    use candle_nn::{VarBuilder, VarMap};
    use dptrain::model::LayerSpec;
    use dptrain::model::private::DpLayers;
    let linear = || LayerSpec::Linear {
        out_features: 3,
        bias: true,
    };
    let varmap = VarMap::new();
    let layers = DpLayers::new(0);
    layers.add(&varmap, "head", linear(), &[4]).unwrap();
    let err = layers
        .add(&varmap, "head", linear(), &[4])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`head`") && err.contains("a second DP layer with this path"),
        "{err}"
    );
    // A plain candle parameter already holds the name a wrapper would use.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    let _plain = candle_nn::linear(4, 3, vb.pp("proj")).unwrap();
    let err = DpLayers::new(0)
        .add(&varmap, "proj", linear(), &[4])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`proj`") && err.contains("the VarMap already holds `proj.weight`"),
        "{err}"
    );
    // A refusal of the kind itself names the wrapper's path too.
    let err = DpLayers::new(0)
        .add(
            &VarMap::new(),
            "attn",
            LayerSpec::SelfAttention {
                heads: 4,
                causal: false,
            },
            &[5, 6],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model layer `attn`") && err.contains("heads = 4 must divide"),
        "{err}"
    );
}

#[test]
fn a_token_id_beyond_the_vocabulary_names_the_layer() {
    // Issue 28 §3.4: found at model level, in evaluation and in a training pass.
    let config: ModelConfig = toml::from_str(
        r#"input = "tokens"
layers = [
  { kind = "embedding", name = "tokens", dim = 4, padding_idx = 0 },
  { kind = "mean_pool" },
  { kind = "linear", out_features = 3 },
]"#,
    )
    .unwrap();
    let model = Model::build(&config, &tokens(), 3, 0).unwrap();
    let x = candle_core::Tensor::new(&[[1f32, 2., 3., 12., 0., 0.]], &candle_core::Device::Cpu)
        .unwrap();
    for message in [
        model.forward(&x).unwrap_err().to_string(),
        model.training_pass(&x, &[0]).unwrap_err().to_string(),
    ] {
        assert_contains(
            &message,
            &[
                "model layer `tokens`",
                "token id 12 is not in the vocabulary of 10 tokens",
            ],
        );
    }
}
