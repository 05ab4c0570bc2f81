//! Training runs end to end: reproducibility, the ledger, and the run directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use dptrain::model::{ModelConfig, ModelKind};
use dptrain::privacy::Accountant;
use dptrain::report::metrics_csv;
use dptrain::schedule::{Schedule, ShapeKind};
use dptrain::train::{OptimizerConfig, PrivacyConfig, TrainingConfig, train};

use crate::support::{head, mnist};

fn settings(private: bool) -> (ModelConfig, PrivacyConfig, TrainingConfig) {
    (
        ModelConfig::preset(ModelKind::Logreg),
        PrivacyConfig {
            private,
            target_epsilon: private.then_some(4.0),
            noise_multiplier: None,
            delta: 1e-5,
            clip_norm: 1.0,
            clipping: Default::default(),
            noise_schedule: Schedule::default(),
            clip_schedule: Schedule::default(),
            adaptive_clipping: None,
            max_epsilon: None,
            secure_noise: false,
            accountant: None,
            discretization_interval: None,
        },
        TrainingConfig {
            epochs: 3.0,
            expected_batch_size: 64,
            max_physical_batch: 50,
            optimizer: OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.0,
            },
            lr_schedule: Schedule {
                kind: ShapeKind::Cosine,
                end: Some(0.0),
                ..Schedule::default()
            },
            dist_parts: None,
        },
    )
}

#[test]
fn same_seed_same_run_and_the_ledger_is_what_was_spent() {
    let (train_set, test_set) = (head(&mnist().train, 3000), head(&mnist().test, 1000));
    let (model, privacy, training) = settings(true);
    let run = |seed| {
        train(
            &train_set,
            &test_set,
            None,
            &model,
            &privacy,
            &training,
            seed,
            &mut |_| {},
        )
        .unwrap()
    };
    let (a, b, other) = (run(7), run(7), run(8));
    // The wall clock is in timing.csv, so metrics.csv is the same byte for byte.
    assert_eq!(
        metrics_csv(&a.epochs),
        metrics_csv(&b.epochs),
        "same seed, same metrics"
    );
    assert_eq!(a.ledger.to_csv(), b.ledger.to_csv());
    assert_ne!(
        metrics_csv(&a.epochs),
        metrics_csv(&other.epochs),
        "the seed matters"
    );
    // The ledger: q = B/N for every step, steps = ⌈E·N/B⌉, ε recomputed from it alone.
    assert_eq!(a.steps, (3.0f64 * 3000.0 / 64.0).ceil() as u64);
    assert!(
        a.ledger
            .events()
            .iter()
            .all(|e| e.sample_rate == 64.0 / 3000.0)
    );
    assert_eq!(a.ledger.steps(), a.steps);
    // Recomputed from the ledger by the run's accountant (PLD by default).
    let mut recomputed = Accountant::from_ledger(a.accountant, &a.ledger).unwrap();
    let spent = a.spent.unwrap();
    assert_eq!(recomputed.epsilon(1e-5).unwrap().epsilon, spent.epsilon);
    assert!(
        spent.epsilon <= 4.0,
        "calibrated to the target: {}",
        spent.epsilon
    );
    assert_eq!(a.epochs.len(), 3);
    // It learns: logistic regression well above chance even with this little data.
    assert!(a.epochs[2].test_accuracy > 0.7, "{:?}", a.epochs[2]);
}

#[test]
fn an_f64_run_follows_its_f32_twin_step_for_step() {
    // Same seed, same batches, the same noise draws (f64 draws rounded for f32): the two
    // precisions part only by f32 rounding, and the f64 run keeps its parameters in f64.
    let (train_set, test_set) = (head(&mnist().train, 1000), head(&mnist().test, 500));
    let (mut model, privacy, mut training) = settings(true);
    training.epochs = 1.0;
    let run = |model: &ModelConfig| {
        train(
            &train_set,
            &test_set,
            None,
            model,
            &privacy,
            &training,
            3,
            &mut |_| {},
        )
        .unwrap()
    };
    let single = run(&model);
    model.dtype = Some(dptrain::model::Precision::F64);
    let double = run(&model);
    assert_eq!(single.steps, double.steps);
    let (a, b) = (&single.epochs[0], &double.epochs[0]);
    let rel = (a.test_loss - b.test_loss).abs() / b.test_loss;
    assert!(
        rel < 1e-4,
        "test loss f32 {} vs f64 {}",
        a.test_loss,
        b.test_loss
    );
    assert_ne!(a.test_loss, b.test_loss, "the f64 run computed in f64");
    for ((name, x), (_, y)) in single
        .model
        .named_parameters()
        .into_iter()
        .zip(double.model.named_parameters())
    {
        assert_eq!(y.dtype(), candle_core::DType::F64, "{name}");
        let d = (x.to_dtype(candle_core::DType::F64).unwrap() - y.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-3, "{name}: f32 and f64 parameters differ by {d}");
    }
}

#[test]
fn the_non_private_baseline_spends_nothing_and_learns() {
    let (train_set, test_set) = (head(&mnist().train, 3000), head(&mnist().test, 1000));
    let (model, privacy, training) = settings(false);
    let record = train(
        &train_set,
        &test_set,
        None,
        &model,
        &privacy,
        &training,
        1,
        &mut |_| {},
    )
    .unwrap();
    assert!(record.spent.is_none());
    assert!(record.ledger.is_empty());
    assert!(record.epochs.last().unwrap().test_accuracy > 0.8);
}

fn dptrain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_run_directory_is_complete_and_its_epsilon_is_the_ledgers() {
    let out: PathBuf = std::env::temp_dir().join(format!("dptrain-run-{}", std::process::id()));
    let run = dptrain(&[
        "train",
        "configs/quickstart.toml",
        "--set",
        "model.kind=logreg",
        "--set",
        "training.epochs=0.2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for file in [
        "config.toml",
        "manifest.json",
        "metrics.csv",
        "timing.csv",
        "ledger.csv",
        "summary.json",
        "model.safetensors",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // The same config and seed again: byte-identical metrics.csv and ledger.csv.
    let again = out.with_extension("again");
    let rerun = dptrain(&[
        "train",
        "configs/quickstart.toml",
        "--set",
        "model.kind=logreg",
        "--set",
        "training.epochs=0.2",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(rerun.status.success());
    for file in ["metrics.csv", "ledger.csv"] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file} differs between two runs of one config and seed"
        );
    }
    std::fs::remove_dir_all(&again).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary, printed);
    assert_eq!(summary["evaluated_on"], "test");
    let account = dptrain(&[
        "account",
        "--events",
        out.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--accountant",
        summary["accountant"].as_str().unwrap(),
        "--json",
    ]);
    let account: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    assert_eq!(summary["epsilon"], account["epsilon"]);
    assert_eq!(summary["steps"], account["steps"]);
    let ledger = std::fs::read_to_string(out.join("ledger.csv")).unwrap();
    assert!(
        ledger.starts_with("sample_rate,noise_multiplier,steps\n0.004266666666666667,"),
        "{ledger}"
    );
    // privacy.md gives ε under all three accountants, each recomputed from the ledger, and
    // names the budget's (PLD by default); RDP's is the one `account --events` gives.
    assert_eq!(summary["accountant"], "pld");
    let statement = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    let rdp = dptrain(&[
        "account",
        "--events",
        out.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    let rdp: serde_json::Value = serde_json::from_slice(&rdp.stdout).unwrap();
    let row = statement
        .lines()
        .find(|l| l.starts_with("| ε by accountant |"))
        .unwrap_or_else(|| panic!("{statement}"));
    assert!(
        row.contains(&format!("RDP {:.4}", rdp["epsilon"].as_f64().unwrap())),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "PLD {:.4} (interval 1e-4) (the budget's)",
            summary["epsilon"].as_f64().unwrap()
        )),
        "{row}"
    );
    assert!(row.contains("PRV "), "{row}");
    assert!(
        statement.contains("**PLD** (budget and calibration)"),
        "{statement}"
    );
    // The resolved config records the override.
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("kind = \"logreg\"") && config.contains("epochs = 0.2"),
        "{config}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_bad_config_is_a_clear_error_and_writes_nothing() {
    let out = std::env::temp_dir().join(format!("dptrain-bad-run-{}", std::process::id()));
    let run = dptrain(&[
        "train",
        "configs/quickstart.toml",
        "--set",
        "privacy.delta=3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("configs/quickstart.toml:validation: invalid delta = 3"),
        "{stderr}"
    );
    assert!(!out.exists(), "no run directory for a failed config");
}

#[test]
fn every_shipped_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // Federated configs (a [federated] table) are read by `dptrain federate`.
            let federated = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .any(|l| l.trim() == "[federated]");
            match federated {
                true => dptrain::config::federated::FederatedRunConfig::load(&path, &[])
                    .map(|_| ())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                false => dptrain::config::RunConfig::load(&path, &[])
                    .map(|_| ())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            }
            count += 1;
        }
    }
    assert!(count >= 3, "{count} configs");
}

#[test]
fn bench_reports_both_modes_and_refuses_a_bad_duration() {
    // Not a timing test: it checks the command's contract (design.md section 6).
    let out = dptrain(&[
        "bench",
        "--model",
        "logreg",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--min-seconds",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "logreg");
    assert_eq!(v["batch_size"], 256);
    let (nonprivate, private) = (
        v["nonprivate_samples_per_sec"].as_f64().unwrap(),
        v["private_samples_per_sec"].as_f64().unwrap(),
    );
    assert!(nonprivate > 0.0 && private > 0.0);
    let overhead = v["overhead"].as_f64().unwrap();
    assert!((overhead - nonprivate / private).abs() < 1e-9 * overhead);

    let bad = dptrain(&["bench", "--model", "logreg", "--min-seconds", "inf"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--min-seconds") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A secure-mode config: the quickstart's logreg for 0.2 epochs, no seed.
const SECURE_CONFIG: &str = r#"
name = "secure-logreg"

[data]
dataset = "mnist"
dir = "datasets/mnist"

[model]
kind = "logreg"

[privacy]
target_epsilon = 3.0
delta = 1e-5
clip_norm = 1.0
secure_noise = true

[training]
epochs = 0.2
expected_batch_size = 256
optimizer = { name = "sgd", learning_rate = 0.3 }
"#;

#[test]
fn a_secure_run_is_accounted_on_integer_orders_and_never_repeats() {
    let dir = std::env::temp_dir().join(format!("dptrain-secure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("secure.toml");
    std::fs::write(&config, SECURE_CONFIG).unwrap();
    let run = |name: &str| {
        let out = dir.join(name);
        let result = dptrain(&[
            "train",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    };
    let (first, second) = (run("first"), run("second"));
    // The ledger says how the steps were noised, and `account --events` reads it so.
    let ledger = std::fs::read_to_string(first.join("ledger.csv")).unwrap();
    assert!(
        ledger.starts_with("sample_rate,noise_multiplier,steps,mechanism\n"),
        "{ledger}"
    );
    assert!(
        ledger
            .lines()
            .skip(1)
            .all(|l| l.ends_with(",discrete_gaussian"))
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("summary.json")).unwrap()).unwrap();
    let account = dptrain(&[
        "account",
        "--events",
        first.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    let account: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    assert_eq!(summary["epsilon"], account["epsilon"]);
    let order = account["order"].as_f64().unwrap();
    assert_eq!(order.fract(), 0.0, "integer orders only: {order}");
    assert!(summary["epsilon"].as_f64().unwrap() <= 3.0);
    // No seed anywhere; the manifest and privacy.md say which noise was used.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["seed"].is_null());
    assert!(manifest["noise"].as_str().unwrap().starts_with("secure"));
    let saved = std::fs::read_to_string(first.join("config.toml")).unwrap();
    assert!(!saved.contains("seed"), "{saved}");
    let statement = std::fs::read_to_string(first.join("privacy.md")).unwrap();
    assert!(statement.contains("secure mode"), "{statement}");
    // Fresh OS randomness: two runs of one config differ.
    assert_ne!(
        std::fs::read(first.join("model.safetensors")).unwrap(),
        std::fs::read(second.join("model.safetensors")).unwrap()
    );
    // It learns like fast mode would (logreg, 47 steps: well above chance).
    assert!(
        summary["test_accuracy"].as_f64().unwrap() > 0.6,
        "{summary}"
    );
    // A seed is refused in secure mode, naming the key.
    let seeded = dir.join("seeded.toml");
    std::fs::write(&seeded, format!("seed = 1\n{SECURE_CONFIG}")).unwrap();
    let refused = dptrain(&["train", seeded.to_str().unwrap(), "--out", "/nonexistent"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("invalid seed = 1"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adult_trains_end_to_end_with_binary_metrics_and_public_preprocessing() {
    let out = std::env::temp_dir().join(format!("dptrain-adult-{}", std::process::id()));
    let run = dptrain(&[
        "train",
        "configs/adult-logreg-eps1.toml",
        "--set",
        "training.epochs=2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["training_examples"], 32_561);
    assert!(summary["epsilon"].as_f64().unwrap() <= 1.0);
    let auc = summary["test_auc"].as_f64().unwrap();
    assert!(auc > 0.8 && auc <= 1.0, "{summary}");
    // 3,846 of the 16,281 test rows are >50K.
    let base = summary["test_positive_rate"].as_f64().unwrap();
    assert!((base - 3846.0 / 16281.0).abs() < 1e-12, "{base}");
    // Two epochs already beat always-negative (76.4%).
    assert!(
        summary["test_accuracy"].as_f64().unwrap() > 0.8,
        "{summary}"
    );
    let statement = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    assert!(
        statement.contains("none was computed from the private data"),
        "{statement}"
    );
    assert!(statement.contains("N = 32561"), "{statement}");
    assert!(
        statement.contains("always predicting the negative class scores 76.38%"),
        "{statement}"
    );
    // `account CONFIG` plans with the table's row count.
    let plan = dptrain(&["account", "configs/adult-logreg-eps1.toml", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["sample_rate"].as_f64().unwrap(), 512.0 / 32561.0);
    std::fs::remove_dir_all(&out).unwrap();
}
