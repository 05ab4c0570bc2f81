//! The report of a run directory: the privacy statement's facts, the data behind the
//! plots, valid PNG and SVG files, and clear errors for missing or malformed records.

use std::path::{Path, PathBuf};
use std::process::Command;

use dptrain::report::{GitState, RunRecords, run_charts};

fn dptrain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

/// A small private run with a decaying σ, in a fresh folder.
fn small_run(tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("dptrain-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "train",
        "configs/quickstart.toml",
        "--set",
        "model.kind=logreg",
        "--set",
        "training.epochs=2",
        "--set",
        "privacy.noise_schedule={ kind = \"step\", factor = 0.5, period = 1, unit = \"epochs\" }",
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

#[test]
fn the_statement_names_the_runs_sampling_steps_and_guarantee() {
    let dir = small_run("statement");
    let records = RunRecords::load(&dir).unwrap();
    let statement = std::fs::read_to_string(dir.join("privacy.md")).unwrap();
    let q = records.ledger.events()[0].sample_rate;
    assert_eq!(q, 256.0 / 60_000.0);
    let epsilon = records.summary.epsilon.unwrap();
    for fact in [
        format!("q = {q}"),
        format!(
            "{} of {} planned",
            records.summary.steps, records.summary.planned_steps
        ),
        format!("ε = {epsilon:.4}, δ = 1e-5"),
        format!("ε = {epsilon} at δ = 1e-5"),
        "adding or removing one".to_string(),
        "Poisson".to_string(),
        "not hardened against floating-point attacks".to_string(),
        "step: × 0.5 every 1 epochs".to_string(),
        "Hyper-parameter search".to_string(),
    ] {
        assert!(
            statement.contains(&fact),
            "missing `{fact}` in:\n{statement}"
        );
    }
    // Its steps are the ledger's, and ε is recomputed from the ledger alone.
    assert_eq!(records.summary.steps, records.ledger.steps());
    // The manifest records the commit and whether the tree differed from it (issue 28
    // §3.8), as git sees the checkout the run started in.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let git = GitState::of(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(manifest["git_commit"].as_str(), git.commit.as_deref());
    assert_eq!(manifest["git_dirty"].as_bool(), git.dirty);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn git_state_says_whether_the_tree_differs_from_its_commit() {
    let dir = std::env::temp_dir().join(format!("dptrain-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["-c", "user.name=test", "-c", "user.email=test@example.org"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    // Not a checkout: nothing to record.
    assert_eq!(
        GitState::of(&dir),
        GitState {
            commit: None,
            dirty: None
        }
    );
    git(&["init", "-q"]);
    std::fs::write(dir.join("a.txt"), "one").unwrap();
    git(&["add", "a.txt"]);
    git(&["commit", "-q", "-m", "first"]);
    let clean = GitState::of(&dir);
    assert_eq!(
        clean.commit.as_ref().map(String::len),
        Some(40),
        "{clean:?}"
    );
    assert_eq!(clean.dirty, Some(false));
    // A modified tracked file, then an untracked one, make the tree dirty.
    std::fs::write(dir.join("a.txt"), "two").unwrap();
    assert_eq!(GitState::of(&dir).dirty, Some(true));
    git(&["checkout", "-q", "a.txt"]);
    assert_eq!(GitState::of(&dir).dirty, Some(false));
    std::fs::write(dir.join("b.txt"), "new").unwrap();
    let dirty = GitState::of(&dir);
    assert_eq!((dirty.commit, dirty.dirty), (clean.commit, Some(true)));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .unwrap()
        .starts_with(b"\x89PNG\r\n\x1a\n")
}

#[test]
fn the_plots_carry_the_runs_series_and_are_valid_files() {
    let dir = small_run("plots");
    let records = RunRecords::load(&dir).unwrap();
    let charts = run_charts(&records).unwrap();
    let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
    // σ halves after the first epoch, so its chart is drawn; C is constant, so not.
    assert_eq!(names, ["epsilon", "accuracy", "loss", "noise"]);
    let chart = |name: &str| &charts.iter().find(|(n, _)| n == name).unwrap().1;
    // ε: from 0 to the summary's ε at the last step, non-decreasing, with the budget.
    let eps = &chart("epsilon").series[0].points;
    assert_eq!(eps[0], (0.0, 0.0));
    let last = *eps.last().unwrap();
    assert_eq!(last.0, records.summary.steps as f64);
    assert_eq!(last.1, records.summary.epsilon.unwrap());
    assert!(eps.windows(2).all(|w| w[1].1 >= w[0].1));
    assert_eq!(chart("epsilon").reference.as_ref().unwrap().y, 3.0);
    // Accuracy and losses: the metrics rows, in percent and nats.
    let accuracy = &chart("accuracy").series[0].points;
    assert_eq!(accuracy.len(), records.metrics.len());
    for (p, row) in accuracy.iter().zip(&records.metrics) {
        assert_eq!(*p, (row.epoch as f64, 100.0 * row.test_accuracy));
    }
    assert_eq!(chart("loss").series.len(), 2);
    // σ: the ledger's two blocks, the second at half the first.
    let sigma = &chart("noise").series[0].points;
    assert_eq!(sigma.first().unwrap().1, 2.0 * sigma.last().unwrap().1);
    for name in names {
        assert!(is_png(&dir.join(format!("{name}.png"))), "{name}.png");
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        assert!(
            svg.contains(&chart(name).title.replace('&', "&amp;")),
            "{name}.svg title"
        );
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_rebuilds_from_the_records_and_names_a_missing_or_malformed_file() {
    let dir = small_run("rebuild");
    let statement = std::fs::read(dir.join("privacy.md")).unwrap();
    std::fs::remove_file(dir.join("privacy.md")).unwrap();
    std::fs::remove_file(dir.join("epsilon.png")).unwrap();
    let rebuilt = dptrain(&["report", dir.to_str().unwrap()]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(std::fs::read(dir.join("privacy.md")).unwrap(), statement);
    assert!(is_png(&dir.join("epsilon.png")));

    let fails = |what: &str, expected: &str| {
        let out = dptrain(&["report", dir.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: succeeded");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    };
    let metrics = dir.join("metrics.csv");
    let good = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, good.replacen(",0.", ",zero.", 1)).unwrap();
    fails("malformed metrics", "metrics.csv:line 2");
    std::fs::write(&metrics, &good).unwrap();
    std::fs::write(dir.join("summary.json"), "{ \"epsilon\": ").unwrap();
    fails("truncated summary", "summary.json:line 1");
    std::fs::remove_file(dir.join("ledger.csv")).unwrap();
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    fails("missing summary", "summary.json: No such file");
    fails("no directory", "summary.json");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = dptrain(&["report", "/nonexistent/run"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/run/config.toml"));
}

#[test]
fn a_sweep_writes_its_table_and_curve_and_compare_draws_several() {
    let out = std::env::temp_dir().join(format!("dptrain-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let sweep = dptrain(&[
        "sweep",
        "configs/quickstart.toml",
        "--over",
        "privacy.target_epsilon=1,4",
        "--baseline",
        "--set",
        "model.kind=logreg",
        "--set",
        "training.epochs=0.5",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        sweep.status.success(),
        "{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    let rows = dptrain::report::sweep::read_sweep(&out.join("sweep.csv")).unwrap();
    assert_eq!(rows.len(), 3);
    for (row, target) in rows.iter().zip([1.0, 4.0]) {
        let epsilon = row.epsilon.unwrap();
        assert!(epsilon <= target && epsilon > target - 1e-3, "{row:?}");
        // Each row is its run directory's summary.
        let records = RunRecords::load(Path::new(&row.run_dir)).unwrap();
        assert_eq!(records.summary.epsilon, row.epsilon);
        assert_eq!(records.summary.test_accuracy, Some(row.test_accuracy));
    }
    assert!(!rows[2].private && rows[2].epsilon.is_none());
    let chart = dptrain::report::sweep::tradeoff_chart("t", &[("s".into(), rows.clone())]);
    assert_eq!(chart.series[0].points.len(), 2);
    assert!(chart.series[0].points[0].0 < chart.series[0].points[1].0);
    assert_eq!(chart.reference.unwrap().y, 100.0 * rows[2].test_accuracy);
    assert!(is_png(&out.join("tradeoff.png")));

    let compared = out.join("compare");
    let compare = dptrain(&[
        "report",
        "--compare",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
        "--out",
        compared.to_str().unwrap(),
    ]);
    assert!(
        compare.status.success(),
        "{}",
        String::from_utf8_lossy(&compare.stderr)
    );
    assert!(is_png(&compared.join("tradeoff.png")));
    std::fs::write(out.join("sweep.csv"), "key,value\n").unwrap();
    let bad = dptrain(&["report", "--compare", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("sweep.csv:line 1"),
        "{stderr}"
    );
    // A bad value is refused before any run trains.
    let refused = dptrain(&[
        "sweep",
        "configs/quickstart.toml",
        "--over",
        "privacy.target_epsilon=1,-2",
        "--out",
        out.join("refused").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(!out.join("refused").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn metrics_from_before_the_nonfinite_column_still_read() {
    // Run directories written before `nonfinite_examples` existed (reports/examples/ holds
    // some) load with 0 in that column; any other header is still refused.
    let old = b"epoch,step,train_loss,test_loss,test_accuracy,epsilon,noise_multiplier,clip_norm\n1,30,0.9,0.27,0.917,0.5,1.93,1.0\n";
    let rows = dptrain::report::records::parse_metrics(old, std::path::Path::new("m.csv")).unwrap();
    assert_eq!(rows[0].nonfinite_examples, 0);
    assert_eq!(rows[0].step, 30);
    let other = b"epoch,step,train_loss\n1,30,0.9\n";
    assert!(dptrain::report::records::parse_metrics(other, std::path::Path::new("m.csv")).is_err());
}

/// Issue 28: steps whose sample was not Poisson-sampled (a `NoAmplification` event) are
/// accounted at sample rate 1, and privacy.md says so.
#[test]
fn privacy_md_says_when_steps_were_accounted_without_amplification() {
    use dptrain::privacy::{Accountant, AccountantSettings, DpEvent, Ledger};
    let dir = small_run("unamplified");
    let records = RunRecords::load(&dir).unwrap();
    let plain = dptrain::report::statement::privacy_statement(
        &records.config,
        &records.summary,
        &records.ledger,
    );
    assert!(!plain.contains("without amplification"), "{plain}");
    let mut ledger = records.ledger.clone();
    let unamplified = DpEvent::NoAmplification {
        sampling: "a fixed 256 of 60,000 examples".into(),
        event: Box::new(DpEvent::poisson_gaussian(256.0 / 60_000.0, 2.0, 5)),
    };
    ledger.push_event(&unamplified).unwrap();
    let statement =
        dptrain::report::statement::privacy_statement(&records.config, &records.summary, &ledger);
    assert!(
        statement.contains("**5 steps did not sample by Poisson sampling**")
            && statement.contains(&format!("nominal rate {}", 256.0 / 60_000.0))
            && statement.contains("**without amplification by sampling**"),
        "{statement}"
    );
    // The ledger file keeps it, and the steps cost what unsampled Gaussians cost.
    let back = Ledger::parse_csv(ledger.to_csv().as_bytes(), Path::new("ledger.csv")).unwrap();
    assert_eq!(back, ledger);
    let epsilon = |ledger: &Ledger| {
        Accountant::from_ledger(AccountantSettings::rdp(), ledger)
            .unwrap()
            .epsilon(1e-5)
            .unwrap()
            .epsilon
    };
    let mut at_rate_one = records.ledger.clone();
    at_rate_one.push(dptrain::privacy::PrivacyEvent::new(1.0, 2.0, 5).unwrap());
    assert_eq!(epsilon(&back), epsilon(&at_rate_one));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every run directory shipped in reports/examples reads with today's code (its config, and
/// for a run with records, `RunRecords`), so that `dptrain report` can rebuild it; an old one
/// is brought up to date with scripts/migrate-run-dir.py, never by hand.
#[test]
fn every_shipped_run_directory_reads_with_todays_code() {
    fn configs(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                configs(&path, found);
            } else if path.file_name().is_some_and(|n| n == "config.toml") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    configs(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/examples"),
        &mut found,
    );
    assert!(found.len() >= 40, "{} configs", found.len());
    let mut records = 0;
    for config in &found {
        let text = std::fs::read_to_string(config).unwrap();
        if text.lines().any(|l| l.starts_with("[federated")) {
            dptrain::config::federated::FederatedRunConfig::load(config, &[])
                .unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        dptrain::config::RunConfig::load(config, &[]).unwrap_or_else(|e| panic!("{e}"));
        let dir = config.parent().unwrap();
        // Whole run directories only: tuning records keep an older metrics.csv (the wall
        // clock inline) and some curated runs keep only their summary and plots.
        let whole = ["summary.json", "metrics.csv", "ledger.csv", "privacy.md"]
            .iter()
            .all(|f| dir.join(f).exists());
        if whole {
            RunRecords::load(dir).unwrap_or_else(|e| panic!("{e}"));
            records += 1;
        }
    }
    assert!(records >= 15, "{records} run directories with records");
}
