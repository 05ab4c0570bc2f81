//! The `dptrain` binary: JSON contracts of `account` and `calibrate`, and bad input.
//!
//! Bad input must give a clear message on stderr and a non-zero exit, never a panic.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{dptrain, dptrain_json as json, relative_error, rows};

/// Owned arguments from string slices.
fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// A file in a fresh temporary directory of this test process.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dptrain-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn account_json_has_the_contract_keys_and_dp_accountings_value() {
    let v = json(&[
        "account",
        "--sample-rate",
        "0.004266666666666667",
        "--noise-multiplier",
        "1.1",
        "--steps",
        "14063",
        "--delta",
        "1e-5",
        "--json",
    ]);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["accountant", "delta", "epsilon", "order", "steps"]);
    // known_values.csv, tfp_mnist_tutorial_sigma_1.1.
    assert!(relative_error(v["epsilon"].as_f64().unwrap(), 2.596655529521983) < 1e-8);
    assert_eq!(v["order"].as_f64(), Some(8.1));
    assert_eq!(v["steps"].as_u64(), Some(14063));
    assert_eq!(v["accountant"], "rdp");
    assert_eq!(v["delta"].as_f64(), Some(1e-5));
}

#[test]
fn account_by_epochs_is_the_same_as_by_steps() {
    let v = json(&[
        "account",
        "--epochs",
        "60",
        "--dataset-size",
        "60000",
        "--batch-size",
        "256",
        "--noise-multiplier",
        "1.1",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert_eq!(v["steps"].as_u64(), Some(14063));
    assert!(relative_error(v["epsilon"].as_f64().unwrap(), 2.596655529521983) < 1e-8);
}

#[test]
fn account_events_matches_the_heterogeneous_vector() {
    // heterogeneous.csv, iv_two_sampling_rates (RDP): 300 steps at (0.01, 1.0), then 300
    // at (0.05, 2.0); grouped here as two blocks.
    let path = temp_file(
        "events.csv",
        "sample_rate,noise_multiplier,steps\n0.01,1.0,300\n0.05,2.0,300\n",
    );
    let v = json(&[
        "account",
        "--events",
        path.to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(relative_error(v["epsilon"].as_f64().unwrap(), 2.417644188362938) < 1e-8);
    assert_eq!(v["order"].as_f64(), Some(7.9));
    assert_eq!(v["steps"].as_u64(), Some(600));
}

#[test]
fn account_gives_delta_at_an_epsilon_that_inverts_epsilon_at_delta() {
    let common = [
        "account",
        "--sample-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--json",
    ];
    let at_delta = json(&[&common[..], &["--delta", "1e-5"]].concat());
    let epsilon = at_delta["epsilon"].as_f64().unwrap().to_string();
    let at_epsilon = json(&[&common[..], &["--epsilon", &epsilon]].concat());
    assert!(relative_error(at_epsilon["delta"].as_f64().unwrap(), 1e-5) < 1e-6);
}

#[test]
fn calibrate_json_meets_the_target_and_matches_dp_accounting() {
    let row = &rows("accounting/calibration.csv")[0];
    let v = json(&[
        "calibrate",
        "--target-epsilon",
        row.text("target_epsilon"),
        "--sample-rate",
        row.text("q"),
        "--steps",
        row.text("steps"),
        "--delta",
        row.text("delta"),
        "--json",
    ]);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["delta", "epsilon", "noise_multiplier"]);
    assert!(v["epsilon"].as_f64().unwrap() <= row.f64("target_epsilon"));
    assert!(
        relative_error(
            v["noise_multiplier"].as_f64().unwrap(),
            row.f64("noise_multiplier")
        ) < 1e-4
    );
}

#[test]
fn tables_are_printed_without_json() {
    let out = dptrain(&[
        "calibrate",
        "--target-epsilon",
        "3",
        "--epochs",
        "30",
        "--dataset-size",
        "60000",
        "--batch-size",
        "256",
        "--delta",
        "1e-5",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for label in ["noise multiplier", "epsilon", "steps", "7032"] {
        assert!(text.contains(label), "{label} missing from\n{text}");
    }
}

/// Each bad command line, and a piece of the message it must print.
#[test]
fn bad_input_is_a_clear_error_and_never_a_panic() {
    let missing = "/nonexistent/dptrain/events.csv";
    let wrong_header = temp_file("header.csv", "q,sigma,steps\n0.1,1.0,10\n");
    let bad_number = temp_file(
        "number.csv",
        "sample_rate,noise_multiplier,steps\n0.1,1.0,10\n0.1,1.O,10\n",
    );
    let (wrong_header, bad_number) = (
        wrong_header.to_str().unwrap().to_string(),
        bad_number.to_str().unwrap().to_string(),
    );
    let account = |extra: &[&str]| -> Vec<String> {
        let mut line = vec![
            "account",
            "--sample-rate",
            "0.01",
            "--noise-multiplier",
            "1.0",
            "--steps",
            "100",
            "--delta",
            "1e-5",
        ];
        for pair in extra.chunks(2) {
            match line.iter().position(|a| *a == pair[0]) {
                Some(i) => line[i + 1] = pair[1],
                None => line.extend(pair),
            }
        }
        args(&line)
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            account(&["--sample-rate", "0"]),
            "invalid sample_rate = 0: expected a probability in (0, 1]",
        ),
        (
            account(&["--sample-rate", "1.5"]),
            "invalid sample_rate = 1.5",
        ),
        (
            account(&["--sample-rate", "NaN"]),
            "invalid sample_rate = NaN",
        ),
        (
            account(&["--noise-multiplier", "0"]),
            "invalid noise_multiplier = 0: expected a finite number above 0",
        ),
        (
            account(&["--noise-multiplier", "-1"]),
            "invalid noise_multiplier = -1",
        ),
        (
            account(&["--noise-multiplier", "inf"]),
            "invalid noise_multiplier = inf",
        ),
        (
            account(&["--steps", "0"]),
            "invalid steps = 0: expected a whole number at least 1",
        ),
        (
            account(&["--delta", "0"]),
            "invalid delta = 0: expected a probability in (0, 1)",
        ),
        (account(&["--delta", "1"]), "invalid delta = 1"),
        (account(&["--delta", "2.5"]), "invalid delta = 2.5"),
        (
            account(&["--steps", "ten"]),
            "invalid value 'ten' for '--steps <N>'",
        ),
        (
            args(&[
                "calibrate",
                "--target-epsilon",
                "0.001",
                "--sample-rate",
                "1",
                "--steps",
                "1000000",
                "--delta",
                "1e-5",
            ]),
            "target epsilon 0.001 at delta 0.00001 cannot be reached: even noise multiplier 10000",
        ),
        (
            args(&[
                "calibrate",
                "--target-epsilon",
                "-1",
                "--sample-rate",
                "0.01",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ]),
            "invalid target_epsilon = -1",
        ),
        (
            args(&["account", "--events", missing, "--delta", "1e-5"]),
            "/nonexistent/dptrain/events.csv: No such file or directory",
        ),
        (
            args(&["account", "--events", &wrong_header, "--delta", "1e-5"]),
            "header.csv:line 1: expected the header `sample_rate,noise_multiplier,steps` (optionally followed by `count_noise_multiplier`, `mechanism` and `nominal_sample_rate`), found header `q,sigma,steps`",
        ),
        (
            args(&["account", "--events", &bad_number, "--delta", "1e-5"]),
            "number.csv:line 3, column 2 (noise_multiplier): expected a number, found `1.O`",
        ),
        (
            args(&[
                "account",
                "--events",
                &bad_number,
                "--steps",
                "3",
                "--delta",
                "1e-5",
            ]),
            "--events takes the steps from the file",
        ),
        (
            args(&[
                "account",
                "--sample-rate",
                "0.01",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
            ]),
            "give --delta D",
        ),
        (
            args(&[
                "account",
                "--sample-rate",
                "0.01",
                "--noise-multiplier",
                "1",
                "--delta",
                "1e-5",
            ]),
            "--sample-rate needs --steps",
        ),
        (
            args(&[
                "account",
                "--epochs",
                "3",
                "--noise-multiplier",
                "1",
                "--delta",
                "1e-5",
            ]),
            "--epochs, --dataset-size and --batch-size go together",
        ),
        (
            args(&[
                "account",
                "--epochs",
                "3",
                "--dataset-size",
                "100",
                "--batch-size",
                "200",
                "--noise-multiplier",
                "1",
                "--delta",
                "1e-5",
            ]),
            "invalid batch_size = 200: expected a whole number from 1 to the dataset size (100)",
        ),
        (
            // Issue 28: a typo of extra zeros is refused at once, not planned for hours.
            args(&[
                "account",
                "configs/quickstart.toml",
                "--set",
                "training.epochs=1000000000",
            ]),
            "invalid training.epochs = 1000000000: expected at most 1000 epochs in a private \
             run's plan",
        ),
        (
            args(&[
                "account",
                "configs/quickstart.toml",
                "--set",
                "training.epochs=900",
                "--set",
                "training.expected_batch_size=1",
            ]),
            "invalid training.epochs = a plan of 54000000 steps: expected at most 1000000 steps",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dptrain(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr `{stderr}` lacks `{expected}`"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout on error");
    }
}

#[test]
fn account_config_prints_the_plan_of_a_schedule() {
    let plan = json(&[
        "account",
        "configs/schedules/exponential.toml",
        "--set",
        "training.epochs=4",
        "--json",
    ]);
    let epsilon = plan["epsilon"].as_f64().unwrap();
    assert!(epsilon <= 3.0 && epsilon > 3.0 - 1e-3, "{plan}");
    let per_epoch: Vec<f64> = plan["epsilon_per_epoch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per_epoch.len(), 4);
    assert!(per_epoch.windows(2).all(|w| w[0] < w[1]), "{per_epoch:?}");
    assert_eq!(*per_epoch.last().unwrap(), epsilon);
    // σ decays by e^(−0.0173) per epoch: three decays between the first and last step.
    let (first, last) = (
        plan["first_noise_multiplier"].as_f64().unwrap(),
        plan["last_noise_multiplier"].as_f64().unwrap(),
    );
    assert!(relative_error(last, first * (-3.0 * 0.0173f64).exp()) < 1e-12);
    assert_eq!(plan["worst_case"], false);
    // A plateau is planned at its floor, and says so.
    let plateau = json(&[
        "account",
        "configs/schedules/constant.toml",
        "--set",
        "training.epochs=4",
        "--set",
        "privacy.noise_schedule={ kind = \"plateau\", factor = 0.5, patience = 2, floor = 0.5 }",
        "--json",
    ]);
    assert_eq!(plateau["worst_case"], true);
    let floor_first = plateau["first_noise_multiplier"].as_f64().unwrap();
    assert_eq!(
        floor_first,
        plateau["last_noise_multiplier"].as_f64().unwrap()
    );
    // Its ε is that of every step at the floor σ, by the plain homogeneous command.
    let homogeneous = json(&[
        "account",
        "--sample-rate",
        &plateau["sample_rate"].to_string(),
        "--steps",
        &plateau["steps"].to_string(),
        "--noise-multiplier",
        &floor_first.to_string(),
        "--delta",
        "1e-5",
        "--accountant",
        plateau["accountant"].as_str().unwrap(),
        "--json",
    ]);
    assert!(
        relative_error(
            homogeneous["epsilon"].as_f64().unwrap(),
            plateau["epsilon"].as_f64().unwrap()
        ) < 1e-12
    );
}

#[test]
fn plan_agrees_with_account_and_calibrate() {
    let out = std::env::temp_dir().join(format!("dptrain-plan-{}", std::process::id()));
    let plan = json(&[
        "plan",
        "--dataset-size",
        "60000",
        "--batch-size",
        "256",
        "--delta",
        "1e-5",
        "--epochs",
        "20",
        "--noise-multipliers",
        "1.1,2",
        "--targets",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    for (curve, sigma) in plan["curves"].as_array().unwrap().iter().zip(["1.1", "2"]) {
        let per_epoch = curve["epsilon_per_epoch"].as_array().unwrap();
        assert_eq!(per_epoch.len(), 20);
        for epochs in [1usize, 7, 20] {
            let account = json(&[
                "account",
                "--epochs",
                &epochs.to_string(),
                "--dataset-size",
                "60000",
                "--batch-size",
                "256",
                "--noise-multiplier",
                sigma,
                "--delta",
                "1e-5",
                "--json",
            ]);
            let ours = per_epoch[epochs - 1].as_f64().unwrap();
            let theirs = account["epsilon"].as_f64().unwrap();
            assert!(
                relative_error(ours, theirs) < 1e-12,
                "σ {sigma}, {epochs} epochs: {ours} vs {theirs}"
            );
        }
    }
    let calibrate = json(&[
        "calibrate",
        "--target-epsilon",
        "3",
        "--epochs",
        "20",
        "--dataset-size",
        "60000",
        "--batch-size",
        "256",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert_eq!(
        plan["noise_for_target"][0]["noise_multiplier"],
        calibrate["noise_multiplier"]
    );
    assert!(
        std::fs::read(out.join("plan.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// A reader that closes the pipe early (`dptrain account ... | head -c 10`) is not a panic:
/// found by probing for issue 28 (it printed "failed printing to stdout" and a backtrace).
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .args(["account", "configs/quickstart.toml", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// A run config on seeded synthetic 28×28 images (no data files), with `model` as its
/// `[model]` table.
fn synthetic_config(name: &str, model: &str) -> PathBuf {
    temp_file(
        name,
        &format!(
            r#"name = "synthetic"
seed = 0

[data]
dataset = "synthetic_images"
shape = [1, 28, 28]
train = 64
test = 8
classes = 10

[model]
{model}

[privacy]
noise_multiplier = 1.0
delta = 1e-5
clip_norm = 1.0

[training]
epochs = 1
expected_batch_size = 16
optimizer = {{ name = "sgd", learning_rate = 0.1 }}
"#
        ),
    )
}

#[test]
fn model_show_refuses_a_layer_too_large_for_memory_instead_of_aborting() {
    // Issue 28 §3.6: a hidden width typed with extra zeros aborted the process with
    // "memory allocation of 313600000000000 bytes failed".
    let config = synthetic_config("mlp.toml", r#"kind = "mlp""#);
    let config = config.to_str().unwrap();
    let out = dptrain(&[
        "model",
        "show",
        config,
        "--set",
        "model.hidden=100000000000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in [
        "model layer `1.linear`",
        "shape [100000000000, 784]",
        "313600000000000 bytes",
        "17179869184 bytes (16 GiB)",
    ] {
        assert!(stderr.contains(part), "`{part}` not in: {stderr}");
    }
    assert!(!stderr.contains("memory allocation"), "{stderr}");
    // The same config with a sane width shows its table.
    let shown = json(&["model", "show", config, "--json"]);
    assert_eq!(shown["trainable_parameters"], 407_050);
}

#[test]
fn model_show_refuses_activations_too_large_at_the_configured_batch() {
    let config = synthetic_config(
        "wide.toml",
        r#"layers = [
  { kind = "conv2d", out_channels = 1000000, kernel = 1 },
  { kind = "global_avg_pool" },
  { kind = "linear", out_features = "$classes" },
]"#,
    );
    let config = config.to_str().unwrap();
    // The largest pass holds min(max_physical_batch, 64 examples) = 64 of them.
    let out = dptrain(&["model", "show", config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in [
        "line 13 (model layer `0.conv2d`)",
        "its output at a batch of 64 of shape [64, 1000000, 28, 28]",
    ] {
        assert!(stderr.contains(part), "`{part}` not in: {stderr}");
    }
    // With passes of at most 4 examples it fits.
    let out = dptrain(&[
        "model",
        "show",
        config,
        "--set",
        "training.max_physical_batch=4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stderr of `model show` on a synthetic config whose `[model]` is `model` (its
/// first line is line 12 of the file), which must fail.
fn model_show_error(name: &str, model: &str) -> String {
    let config = synthetic_config(name, model);
    let out = dptrain(&["model", "show", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn model_errors_name_the_layer_path_and_its_config_line() {
    // Issue 28 §3.4. (config, [model] text, what the message must say)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "named.toml",
            r#"layers = [
  { kind = "conv2d", name = "stem", out_channels = 4, kernel = 3 },
  { kind = "group_norm", name = "norm", groups = 3 },
  { kind = "global_avg_pool" },
  { kind = "linear", name = "head", out_features = "$classes" },
]"#,
            &[
                "line 14 (model layer `norm`)",
                "groups = 3 must divide the 4 channels",
            ],
        ),
        (
            "head.toml",
            r#"layers = [
  { kind = "flatten", name = "stem" },
  { kind = "dropout", p = 0.5 },
  { kind = "linear", name = "head", out_features = 0 },
]"#,
            &[
                "line 15 (model layer `head`)",
                "out_features = 0: at least 1",
            ],
        ),
        (
            "freeze.toml",
            r#"layers = [
  { kind = "flatten" },
  { kind = "linear", name = "head", out_features = "$classes" },
]
freeze = [
  "head",
  "stem",
]"#,
            &[
                "line 18 (model layer `stem`)",
                "listed in model.freeze but no layer",
            ],
        ),
        (
            "block.toml",
            r#"layers = [
  { kind = "conv2d", out_channels = 4, kernel = 3 },
  { kind = "residual", block = "basic", repeat = 2 },
  { kind = "global_avg_pool" },
  { kind = "linear", out_features = "$classes" },
]
[model.blocks]
basic = [
  { kind = "conv2d", out_channels = 4, kernel = 3, padding = 1 },
  { kind = "group_norm", groups = 3 },
]"#,
            &[
                "line 21 (model layer `1.basic.0.1.group_norm`)",
                "groups = 3 must divide",
            ],
        ),
        (
            "tables.toml",
            r#"[[model.layers]]
kind = "flatten"

[[model.layers]]
kind = "dropout"
p = -1.0

[[model.layers]]
kind = "linear"
out_features = "$classes""#,
            &[
                "line 15 (model layer `1.dropout`)",
                "p = -1: a probability in [0, 1)",
            ],
        ),
        (
            "spec.toml",
            r#"[[model.layers]]
kind = "flatten"

[[model.layers]]
kind = "linear"
name = "head"
out_features = "$classes"
bias = "yes""#,
            &["line 15 (model layer `head`)", "linear: invalid type"],
        ),
    ];
    for (name, model, parts) in cases {
        let stderr = model_show_error(name, model);
        for part in *parts {
            assert!(stderr.contains(part), "{name}: `{part}` not in: {stderr}");
        }
    }
}

/// Issue 18's frictions: `--set key=none` switches a config from a target ε to a noise
/// multiplier; a non-private summary states no guarantee; `--out` on a file fails before
/// any training and leaves nothing.
#[test]
fn set_none_switches_alternatives_nonprivate_summaries_claim_nothing_and_out_is_checked_first() {
    let config = synthetic_config("frictions.toml", "kind = \"logreg\"");
    let config = config.to_str().unwrap();
    let base = std::env::temp_dir().join(format!("dptrain-frictions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // From noise_multiplier to target_epsilon on the command line.
    let both = dptrain(&["train", config, "--set", "privacy.target_epsilon=8"]);
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(!both.status.success());
    assert!(
        stderr.contains("--set privacy.noise_multiplier=none"),
        "{stderr}"
    );
    let switched = base.join("switched");
    let summary = json(&[
        "train",
        config,
        "--set",
        "privacy.noise_multiplier=none",
        "--set",
        "privacy.target_epsilon=8",
        "--out",
        switched.to_str().unwrap(),
        "--json",
    ]);
    let epsilon = summary["epsilon"].as_f64().unwrap();
    assert!(epsilon <= 8.0 && epsilon > 4.0, "{summary}");
    // Non-private: private = false and no ε, δ, accountant or noise multiplier.
    let nonprivate = base.join("nonprivate");
    let run = dptrain(&[
        "train",
        config,
        "--set",
        "privacy.private=false",
        "--set",
        "privacy.noise_multiplier=none",
        "--out",
        nonprivate.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(nonprivate.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["private"], false, "{written}");
    for claim in [
        "epsilon",
        "delta",
        "accountant",
        "noise_multiplier",
        "order",
    ] {
        assert!(written.get(claim).is_none(), "{claim} in {written}");
    }
    // The report of that directory still rebuilds.
    let report = dptrain(&["report", nonprivate.to_str().unwrap()]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    // --out on a file, or under one: refused before training, nothing written.
    let file = base.join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    for out in [file.clone(), file.join("run")] {
        let start = std::time::Instant::now();
        let run = dptrain(&["train", config, "--out", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        assert!(
            stderr.contains("--out") && stderr.contains("is a file")
                || stderr.contains("a file is there"),
            "{stderr}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let _ = std::fs::remove_dir_all(&base);
}
