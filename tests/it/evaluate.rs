//! `dptrain evaluate` and `dptrain predict` (issue 18): every shipped run with a model
//! reproduces its summary's accuracy exactly; predictions agree with evaluation; a model
//! file of another config, a truncated file and data of another schema are refused with a
//! message naming what is wrong, and nothing is written.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{dptrain, dptrain_json as json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dptrain-evaluate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn evaluate_reproduces_every_shipped_run_with_a_model_exactly() {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(repo().join("reports/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("model.safetensors").exists() && d.join("config.toml").exists())
        .collect();
    runs.sort();
    assert!(runs.len() >= 5, "{runs:?}");
    for run in &runs {
        let dir = run.strip_prefix(repo()).unwrap().to_str().unwrap();
        let summary: Value =
            serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
        let evaluated = json(&["evaluate", dir, "--json"]);
        // Bit for bit: the same chunks, kernels and sums as training's evaluation.
        assert_eq!(
            evaluated["accuracy"].as_f64().unwrap().to_bits(),
            summary["test_accuracy"].as_f64().unwrap().to_bits(),
            "{dir}: {evaluated}"
        );
        assert_eq!(evaluated["reproduces_summary"], true, "{dir}");
        assert_eq!(
            evaluated["loss"].as_f64().unwrap().to_bits(),
            summary["test_loss"].as_f64().unwrap().to_bits(),
            "{dir}"
        );
        if let Some(auc) = summary["test_auc"].as_f64() {
            assert_eq!(
                evaluated["auc"].as_f64().unwrap().to_bits(),
                auc.to_bits(),
                "{dir}"
            );
        }
        // The confusion matrix agrees with the accuracy (trace / examples).
        let matrix = evaluated["confusion_matrix"].as_array().unwrap();
        let n = evaluated["examples"].as_u64().unwrap();
        let total: u64 = matrix
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        let trace: u64 = (0..matrix.len())
            .map(|i| matrix[i][i].as_u64().unwrap())
            .sum();
        assert_eq!(total, n, "{dir}");
        assert_eq!(
            trace as f64 / n as f64,
            evaluated["accuracy"].as_f64().unwrap()
        );
    }
}

#[test]
fn predict_on_the_mnist_test_file_gives_the_runs_accuracy() {
    let out = scratch("mnist").join("predictions.csv");
    let predicted = json(&[
        "predict",
        "reports/examples/mnist-cnn-poly-eps3",
        "datasets/mnist/t10k-images-idx3-ubyte.gz",
        "--labels",
        "datasets/mnist/t10k-labels-idx1-ubyte.gz",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let summary: Value = serde_json::from_slice(
        &std::fs::read(repo().join("reports/examples/mnist-cnn-poly-eps3/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(predicted["accuracy"], summary["test_accuracy"]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "index,predicted,prob_0,prob_1,prob_2,prob_3,prob_4,prob_5,prob_6,prob_7,prob_8,prob_9,label"
    );
    let mut rows = 0;
    let mut correct = 0;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let probabilities: Vec<f64> = fields[2..12].iter().map(|p| p.parse().unwrap()).collect();
        let sum: f64 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{line}");
        // The class is the most probable one.
        let best = (0..10)
            .max_by(|&a, &b| {
                probabilities[a]
                    .total_cmp(&probabilities[b])
                    .then(b.cmp(&a))
            })
            .unwrap();
        assert_eq!(fields[1], best.to_string(), "{line}");
        correct += usize::from(fields[1] == fields[12]);
        rows += 1;
    }
    assert_eq!(rows, 10_000);
    assert_eq!(correct as f64 / 10_000.0, 0.9713);
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}

#[test]
fn predict_on_a_table_agrees_with_evaluate_on_it() {
    let dir = scratch("table");
    let out = dir.join("p.csv");
    let run = "reports/examples/adult-logreg-eps1";
    let predicted = json(&[
        "predict",
        run,
        "datasets/adult/adult.test.gz",
        "--skip-rows",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let evaluated = json(&[
        "evaluate",
        run,
        "--data",
        "datasets/adult/adult.test.gz",
        "--skip-rows",
        "1",
        "--json",
    ]);
    assert_eq!(predicted["rows"], evaluated["examples"]);
    assert_eq!(predicted["accuracy"], evaluated["accuracy"]);
    // The test file is the run's own test split: the summary's figure again.
    let own = json(&["evaluate", run, "--json"]);
    assert_eq!(evaluated["accuracy"], own["accuracy"]);
    assert_eq!(evaluated["auc"], own["auc"]);
    // The same rows without the label column: the same classes, lines and probabilities
    // (each a probability of one row, whatever the rows around it), no label and no accuracy.
    let labelled = std::fs::read_to_string(&out).unwrap();
    let text = {
        use std::io::Read;
        let mut gz = flate2::read::GzDecoder::new(
            std::fs::File::open(repo().join("datasets/adult/adult.test.gz")).unwrap(),
        );
        let mut text = String::new();
        gz.read_to_string(&mut text).unwrap();
        text
    };
    let rows: Vec<String> = text
        .lines()
        .skip(1)
        .take(300)
        .map(|line| line.rsplit_once(',').unwrap().0.to_string())
        .collect();
    let unlabelled = dir.join("unlabelled.csv");
    std::fs::write(&unlabelled, rows.join("\n") + "\n").unwrap();
    let out2 = dir.join("p2.csv");
    let predicted = json(&[
        "predict",
        run,
        unlabelled.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(predicted["rows"], 300);
    assert!(predicted.get("accuracy").is_none(), "{predicted}");
    let without = std::fs::read_to_string(&out2).unwrap();
    let mut without = without.lines();
    assert_eq!(without.next().unwrap(), "line,predicted,prob_0,prob_1");
    for (with, without) in labelled.lines().skip(1).zip(without) {
        let with: Vec<&str> = with.split(',').collect();
        let without: Vec<&str> = without.split(',').collect();
        // Lines: the labelled file skips its first line, so its rows are one line later.
        assert_eq!(
            with[0].parse::<u64>().unwrap(),
            without[0].parse::<u64>().unwrap() + 1
        );
        assert_eq!(with[1], without[1]);
        let (p, q): (f64, f64) = (with[3].parse().unwrap(), without[3].parse().unwrap());
        assert!((p - q).abs() < 1e-6, "{p} {q}");
        assert_eq!(without.len(), 4);
    }
    // evaluate needs labels.
    let run_it = dptrain(&["evaluate", run, "--data", unlabelled.to_str().unwrap()]);
    assert!(!run_it.status.success());
    assert!(String::from_utf8_lossy(&run_it.stderr).contains("without the label column"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a refused command: a non-zero exit, every `expected` part in the message, no panic,
/// and `out` not written.
fn refused(args: &[&str], expected: &[&str], out: &Path) {
    let run = dptrain(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{args:?}: `{stderr}` lacks `{part}`");
    }
    assert!(!out.exists(), "{args:?} wrote {}", out.display());
}

#[test]
fn another_configs_model_a_truncated_file_and_other_schemas_are_refused() {
    let dir = scratch("refusals");
    let out = dir.join("never.csv");
    let out_arg = out.to_str().unwrap();
    let examples = repo().join("reports/examples");
    // The logreg run with the mlp's model file.
    let swapped = dir.join("swapped");
    std::fs::create_dir_all(&swapped).unwrap();
    std::fs::copy(
        examples.join("adult-logreg-eps1/config.toml"),
        swapped.join("config.toml"),
    )
    .unwrap();
    std::fs::copy(
        examples.join("adult-mlp-eps1/model.safetensors"),
        swapped.join("model.safetensors"),
    )
    .unwrap();
    let swapped_arg = swapped.to_str().unwrap();
    refused(
        &["evaluate", swapped_arg],
        &[
            "model.safetensors",
            "1.linear",
            "shape [64, 144]",
            "[2, 144]",
        ],
        &out,
    );
    // Truncated.
    let bytes = std::fs::read(examples.join("adult-logreg-eps1/model.safetensors")).unwrap();
    std::fs::write(swapped.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &["evaluate", swapped_arg],
        &["model.safetensors", "not a complete safetensors file"],
        &out,
    );
    std::fs::write(swapped.join("model.safetensors"), &bytes).unwrap();
    // Inputs of the wrong shape or schema.
    refused(
        &[
            "predict",
            "reports/examples/mnist-cnn-poly-eps3",
            "datasets/mnist/t10k-labels-idx1-ubyte.gz",
            "--out",
            out_arg,
        ],
        &["t10k-labels-idx1-ubyte.gz"],
        &out,
    );
    refused(
        &[
            "predict",
            "reports/examples/mnist-cnn-poly-eps3",
            "datasets/adult/adult.test.gz",
            "--out",
            out_arg,
        ],
        &["adult.test.gz"],
        &out,
    );
    let narrow = dir.join("narrow.csv");
    std::fs::write(&narrow, "39, State-gov, 77516\n").unwrap();
    refused(
        &[
            "predict",
            swapped_arg,
            narrow.to_str().unwrap(),
            "--out",
            out_arg,
        ],
        &["narrow.csv", "line 1"],
        &out,
    );
    refused(
        &[
            "predict",
            swapped_arg,
            "datasets/mnist/t10k-images-idx3-ubyte.gz",
            "--out",
            out_arg,
        ],
        &["t10k-images-idx3-ubyte.gz"],
        &out,
    );
    refused(
        &[
            "evaluate",
            "reports/examples/mnist-cnn-poly-eps3",
            "--data",
            "configs/fashion-mnist-cnn-eps3.toml",
        ],
        &["--data configs/fashion-mnist-cnn-eps3.toml", "MNIST images"],
        &out,
    );
    refused(
        &["evaluate", "reports/examples/sweep-mlp"],
        &["sweep"],
        &out,
    );
    refused(
        &["evaluate", "reports/examples/mnist-cnn-eps3"],
        &["no model.safetensors"],
        &out,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn evaluate_reproduces_a_federated_runs_summary() {
    // A small secure-aggregation federation (synthetic data, 3 rounds): its global model
    // through `evaluate` gives the accuracy and loss its summary states, exactly.
    let dir = scratch("federated");
    let out = dir.join("run");
    let run = dptrain(&[
        "-q",
        "federate",
        "tests/data/flower/contract.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let evaluated = json(&["evaluate", out.to_str().unwrap(), "--json"]);
    assert_eq!(
        evaluated["accuracy"], summary["test_accuracy"],
        "{evaluated}"
    );
    assert_eq!(evaluated["loss"], summary["test_loss"], "{evaluated}");
    assert_eq!(evaluated["reproduces_summary"], true);
    let _ = std::fs::remove_dir_all(&dir);
}
