//! Checkpoints and resuming: an interrupted run resumed from its checkpoint ends exactly as
//! the uninterrupted run; a killed process resumes from its run directory; a different
//! config is refused.

use std::process::Command;
use std::time::{Duration, Instant};

use dptrain::mechanism::AdaptiveClippingConfig;
use dptrain::model::{ModelConfig, ModelKind};
use dptrain::report::metrics_csv;
use dptrain::schedule::{Schedule, ShapeKind, Unit};
use dptrain::train::{
    Checkpoint, Hooks, OptimizerConfig, PrivacyConfig, TrainingConfig, TrainingRecord,
    train_observed,
};

use crate::support::{head, mnist};

fn flat_params(record: &TrainingRecord) -> Vec<u32> {
    record
        .model
        .parameters()
        .iter()
        .flat_map(|p| {
            p.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .map(f32::to_bits)
        .collect()
}

static INTERRUPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn run(
    privacy: &PrivacyConfig,
    training: &TrainingConfig,
    interrupt: bool,
    stop_after_epoch: Option<usize>,
    resume: Option<Checkpoint>,
    saved: &mut Option<Checkpoint>,
) -> TrainingRecord {
    let (train_set, test_set) = (head(&mnist().train, 1500), head(&mnist().test, 300));
    let model = ModelConfig::preset(ModelKind::Mlp);
    let mut keep = |c: &Checkpoint| {
        *saved = Some(c.clone());
        Ok(())
    };
    train_observed(
        &train_set,
        &test_set,
        None,
        &model,
        privacy,
        training,
        11,
        Hooks {
            on_checkpoint: Some(&mut keep),
            resume,
            stop_after_epoch,
            config_text: "name = \"test\"".into(),
            interrupt: interrupt.then_some(&INTERRUPT),
            ..Hooks::default()
        },
    )
    .unwrap()
}

#[test]
fn a_run_stopped_after_epoch_one_and_resumed_ends_as_the_uninterrupted_run() {
    let base = PrivacyConfig {
        private: true,
        target_epsilon: Some(3.0),
        noise_multiplier: None,
        delta: 1e-5,
        clip_norm: 1.0,
        clipping: Default::default(),
        noise_schedule: Schedule {
            kind: ShapeKind::Exponential,
            rate: Some(0.3),
            unit: Unit::Epochs,
            ..Schedule::default()
        },
        clip_schedule: Schedule::default(),
        adaptive_clipping: None,
        max_epsilon: None,
        secure_noise: false,
        accountant: None,
        discretization_interval: None,
    };
    let sgd = TrainingConfig {
        epochs: 2.0,
        expected_batch_size: 100,
        max_physical_batch: 64,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.3,
            momentum: 0.9,
        },
        lr_schedule: Schedule::default(),
        dist_parts: None,
    };
    let adam = TrainingConfig {
        optimizer: OptimizerConfig::Adam {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
        },
        ..sgd.clone()
    };
    let adaptive = PrivacyConfig {
        adaptive_clipping: Some(AdaptiveClippingConfig::default()),
        noise_schedule: Schedule::default(),
        clip_norm: 0.1,
        ..base.clone()
    };
    for (privacy, training) in [(&base, &sgd), (&adaptive, &adam)] {
        let whole = run(privacy, training, false, None, None, &mut None);
        let mut saved = None;
        let first = run(privacy, training, false, Some(1), None, &mut saved);
        assert!(first.steps < whole.steps && first.stopped_early.is_some());
        // Through the disk, as a resume from a run directory would read it.
        let dir = std::env::temp_dir().join(format!("dptrain-ckpt-{}", std::process::id()));
        saved.unwrap().save(&dir).unwrap();
        let loaded = Checkpoint::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let resumed = run(privacy, training, false, None, Some(loaded), &mut None);
        assert_eq!(resumed.steps, whole.steps);
        assert_eq!(flat_params(&resumed), flat_params(&whole), "weights differ");
        assert_eq!(metrics_csv(&resumed.epochs), metrics_csv(&whole.epochs));
        assert_eq!(resumed.ledger.to_csv(), whole.ledger.to_csv());
        assert_eq!(resumed.spent, whole.spent);
        // Interrupted within the first epoch (as Ctrl-C does), then resumed.
        INTERRUPT.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut saved = None;
        let cut = run(privacy, training, true, None, None, &mut saved);
        INTERRUPT.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cut.steps, 1, "stops after the current step");
        assert!(cut.stopped_early.unwrap().contains("interrupted"));
        let resumed = run(privacy, training, false, None, saved, &mut None);
        assert_eq!(flat_params(&resumed), flat_params(&whole), "weights differ");
        assert_eq!(metrics_csv(&resumed.epochs), metrics_csv(&whole.epochs));
        assert_eq!(resumed.ledger.to_csv(), whole.ledger.to_csv());
    }
}

fn dptrain() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dptrain"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

#[test]
fn a_killed_training_process_resumes_from_its_run_directory() {
    let dir = std::env::temp_dir().join(format!("dptrain-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = [
        "train",
        "configs/quickstart.toml",
        "--set",
        "training.epochs=6",
        "-q",
    ];
    let mut child = dptrain()
        .args(args)
        .args(["--out", dir.to_str().unwrap()])
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.join("checkpoint/state.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, possibly in the middle of writing the next one
    child.wait().unwrap();
    assert!(!dir.join("summary.json").exists(), "killed before the end");
    let resumed = dptrain()
        .args(args)
        .args(["--resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], summary["planned_steps"]);
    let epsilon = summary["epsilon"].as_f64().unwrap();
    assert!(epsilon <= 3.0 && epsilon > 3.0 - 1e-3, "{epsilon}");
    // The same config changed is refused, naming the key.
    let refused = dptrain()
        .args([
            "train",
            "configs/quickstart.toml",
            "--set",
            "training.epochs=7",
        ])
        .args(["--resume", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("training.epochs"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_examples_are_counted_and_divergence_stops_the_run() {
    let mut train_set = head(&mnist().train, 400);
    train_set.features[100] = f32::NAN; // example 0
    let test_set = head(&mnist().test, 100);
    let model = ModelConfig::preset(ModelKind::Logreg);
    let privacy = PrivacyConfig {
        private: true,
        target_epsilon: None,
        noise_multiplier: Some(1.0),
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
    };
    // q = 1: example 0 is in every batch, and is dropped every time.
    let training = TrainingConfig {
        epochs: 3.0,
        expected_batch_size: 400,
        max_physical_batch: 1000,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.0,
        },
        lr_schedule: Schedule::default(),
        dist_parts: None,
    };
    let go = |training: &TrainingConfig| {
        train_observed(
            &train_set,
            &test_set,
            None,
            &model,
            &privacy,
            training,
            1,
            Hooks::default(),
        )
    };
    let record = go(&training).unwrap();
    assert!(record.epochs.iter().all(|e| e.nonfinite_examples == 1));
    assert!(record.epochs.last().unwrap().test_loss.is_finite());
    // A learning rate of 1e38 overflows the parameters: the run stops with a clear error.
    let diverging = TrainingConfig {
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 1e38,
            momentum: 0.0,
        },
        ..training
    };
    let message = go(&diverging).err().expect("stopped").to_string();
    assert!(message.contains("diverged"), "{message}");
}

#[test]
fn a_secure_run_resumes_with_fresh_randomness_and_the_same_ledger() {
    // Secure mode keeps no generator state to restore: the resumed run draws new OS
    // randomness, so weights differ from an uninterrupted run, but the steps, their (q, σ)
    // and hence the ledger and ε are the same, and the budget holds over both parts.
    let privacy = PrivacyConfig {
        private: true,
        target_epsilon: Some(3.0),
        noise_multiplier: None,
        delta: 1e-5,
        clip_norm: 1.0,
        clipping: Default::default(),
        noise_schedule: Schedule::default(),
        clip_schedule: Schedule::default(),
        adaptive_clipping: None,
        max_epsilon: None,
        secure_noise: true,
        accountant: None,
        discretization_interval: None,
    };
    let training = TrainingConfig {
        epochs: 2.0,
        expected_batch_size: 100,
        max_physical_batch: 64,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.3,
            momentum: 0.0,
        },
        lr_schedule: Schedule::default(),
        dist_parts: None,
    };
    let mut saved = None;
    let whole = run(&privacy, &training, false, None, None, &mut None);
    let first = run(&privacy, &training, false, Some(1), None, &mut saved);
    assert!(first.steps < whole.steps);
    let checkpoint = saved.take().expect("a checkpoint after epoch 1");
    assert_eq!(
        checkpoint.state.sampler_position, "0",
        "no generator state is saved"
    );
    let resumed = run(
        &privacy,
        &training,
        false,
        None,
        Some(checkpoint),
        &mut None,
    );
    assert_eq!(resumed.steps, whole.steps);
    assert_eq!(resumed.ledger.to_csv(), whole.ledger.to_csv());
    assert!(resumed.ledger.to_csv().contains("discrete_gaussian"));
    assert_eq!(resumed.spent.unwrap().epsilon, whole.spent.unwrap().epsilon);
    assert!(whole.spent.unwrap().epsilon <= 3.0);
    assert_ne!(
        flat_params(&resumed),
        flat_params(&whole),
        "fresh randomness"
    );
    // Two uninterrupted secure runs differ too (no seed reaches the sampler or noise).
    let again = run(&privacy, &training, false, None, None, &mut None);
    assert_ne!(flat_params(&again), flat_params(&whole));
}
