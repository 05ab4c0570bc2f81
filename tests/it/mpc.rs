//! `dptrain mpc-infer`: the three parties as processes on loopback against the plaintext
//! fixed-point model and the float model of a trained cnn_poly run; refusals of models and
//! inputs it cannot serve.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn dptrain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

/// A short DP training run of `kind` on MNIST in a fresh folder.
fn trained(kind: &str, tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("dptrain-mpc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "train",
        "configs/mnist-cnn-poly-eps3.toml",
        "--set",
        &format!("model.kind={kind}"),
        "--set",
        "training.epochs=0.2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Shared predictions of 300 test images equal the plaintext fixed-point model's, every
/// one; the accuracies of the three agree; the report states the trust model.
#[test]
fn mpc_infer_reproduces_the_fixed_point_model_across_processes() {
    let run = trained("cnn_poly", "poly");
    let out = run.join("mpc");
    let result = dptrain(&[
        "mpc-infer",
        run.to_str().unwrap(),
        "--limit",
        "300",
        "--batch-size",
        "64",
        "--timeout",
        "120",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let json = read_json(&out.join("mpc-infer.json"));
    assert_eq!(json["examples"], 300);
    assert_eq!(json["identical_to_fixed_point"], 300, "{json}");
    assert_eq!(json["mpc_accuracy"], json["fixed_point_accuracy"]);
    let gap = json["mpc_accuracy"].as_f64().unwrap() - json["float_accuracy"].as_f64().unwrap();
    assert!(gap.abs() <= 0.01, "{json}");
    // Well above chance (10%) after a few steps.
    assert!(json["mpc_accuracy"].as_f64().unwrap() > 0.25, "{json}");
    assert!(json["online_bytes_per_image"].as_f64().unwrap() > 0.0);
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 301);
    let md = std::fs::read_to_string(out.join("mpc-infer.md")).unwrap();
    assert!(
        md.contains("Dealer") && md.contains("must not collude"),
        "{md}"
    );
}

/// A tanh cnn is refused naming the layer and the model to train instead; a missing run
/// directory and a zero batch are refused naming what is wrong.
#[test]
fn mpc_infer_refuses_what_it_cannot_compute() {
    let run = trained("cnn", "tanh");
    let result = dptrain(&["mpc-infer", run.to_str().unwrap(), "--limit", "10"]);
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("1.tanh") && err.contains("cnn_poly"), "{err}");
    let result = dptrain(&["mpc-infer", "/nonexistent-run-dir"]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success() && err.contains("config.toml"),
        "{err}"
    );
    let result = dptrain(&["mpc-infer", run.to_str().unwrap(), "--batch-size", "0"]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success() && err.contains("--batch-size"),
        "{err}"
    );
}
