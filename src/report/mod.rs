//! The run directory: the files a finished run leaves behind, each written atomically.
//!
//! `config.toml` (resolved), `manifest.json`, `metrics.csv`, `timing.csv`, `ledger.csv`,
//! `summary.json` (design.md section 6); the model weights are written by the trainer.
//! Everything here is made from saved records, never from tensors.
//!
//! Departure from design.md section 6: the wall clock lives in `timing.csv`, not in
//! metrics.csv, so that the same config and seed give a byte-identical metrics.csv.

pub mod html;
pub mod plots;
pub mod records;
pub mod statement;
pub mod sweep;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::privacy::{Accountant, AccountantKind, AccountantSettings, PrivacyEvent};
use crate::train::{EpochRecord, TrainingRecord};
pub use plots::{Chart, Legend, Reference, Series};
pub use records::{MetricsRow, RunRecords, Summary};

/// Who ran what, where and when.
#[derive(Debug, Clone, Serialize)]
pub struct RunManifest {
    /// The run seed (none in secure noise mode).
    pub seed: Option<u64>,
    /// dptrain's version.
    pub dptrain_version: String,
    /// `git rev-parse HEAD` of the working directory, when it is a checkout.
    pub git_commit: Option<String>,
    /// Whether that checkout had changes not in the commit (`git status --porcelain`
    /// non-empty: modified, staged or untracked files), when it is a checkout: a dirty
    /// tree's run is not reproducible from `git_commit` alone.
    pub git_dirty: Option<bool>,
    /// Worker threads.
    pub threads: usize,
    /// Start, seconds since the Unix epoch.
    pub started_unix: f64,
    /// End, seconds since the Unix epoch.
    pub finished_unix: f64,
    /// Host name and logical CPUs.
    pub machine: String,
    /// The command line.
    pub command: Vec<String>,
    /// Noise mode (fast, seeded: not hardened against floating-point attacks).
    pub noise: String,
}

impl RunManifest {
    /// A manifest for a run starting now.
    pub fn start(seed: Option<u64>, threads: usize) -> RunManifest {
        let GitState { commit, dirty } = GitState::of(Path::new("."));
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        RunManifest {
            seed,
            dptrain_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: commit,
            git_dirty: dirty,
            threads,
            started_unix: unix_now(),
            finished_unix: f64::NAN,
            machine: format!("{} ({cpus} logical CPUs)", host.trim()),
            command: std::env::args().collect(),
            noise: match seed {
                Some(_) => {
                    "fast: seeded ChaCha12 + rand_distr normal; not hardened against \
                            floating-point attacks (Mironov 2012; Jin et al. 2022)"
                }
                None => {
                    "secure: discrete Gaussian on a grid (Canonne, Kamath & Steinke \
                         2020), exact integer sampling; batches and noise from OS-seeded, \
                         reseeded ChaCha20; accounted at integer Rényi orders"
                }
            }
            .into(),
        }
    }
}

/// The git commit of a directory's checkout and whether its tree differs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    /// `git rev-parse HEAD`; None outside a checkout (or without git).
    pub commit: Option<String>,
    /// `git status --porcelain` is non-empty; None when the status cannot be read.
    pub dirty: Option<bool>,
}

impl GitState {
    /// The state of the checkout that holds `dir`.
    pub fn of(dir: &Path) -> GitState {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let commit = git(&["rev-parse", "HEAD"]);
        let dirty = match commit {
            Some(_) => git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
            None => None,
        };
        GitState { commit, dirty }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The header of metrics.csv.
pub const METRICS_HEADER: &str = "epoch,step,train_loss,test_loss,test_accuracy,epsilon,noise_multiplier,clip_norm,nonfinite_examples";

/// metrics.csv as written before `nonfinite_examples` (read as 0): still accepted.
pub const METRICS_HEADER_BEFORE_NONFINITE: &str =
    "epoch,step,train_loss,test_loss,test_accuracy,epsilon,noise_multiplier,clip_norm";

/// The header of timing.csv.
pub const TIMING_HEADER: &str = "epoch,step,wall_seconds";

/// metrics.csv text: one row per evaluation (floats written to read back bit for bit).
pub fn metrics_csv(rows: &[EpochRecord]) -> String {
    let mut out = format!("{METRICS_HEADER}\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{:?},{:?},{:?},{:?},{:?},{:?},{}\n",
            r.epoch,
            r.step,
            r.train_loss,
            r.test_loss,
            r.test_accuracy,
            r.epsilon,
            r.noise_multiplier,
            r.clip_norm,
            r.nonfinite_examples,
        ));
    }
    out
}

/// timing.csv text: seconds since the start of training at each evaluation.
pub fn timing_csv(rows: &[EpochRecord]) -> String {
    let mut out = format!("{TIMING_HEADER}\n");
    for r in rows {
        out.push_str(&format!("{},{},{:.3}\n", r.epoch, r.step, r.wall_seconds));
    }
    out
}

/// summary.json of a finished run. `evaluated_on` is "test", or "holdout" when the
/// `test_*` figures come from a holdout taken from the training set (tuning runs).
pub fn summary_json(
    record: &TrainingRecord,
    delta: f64,
    expected_batch_size: usize,
    evaluated_on: &str,
) -> serde_json::Value {
    let last = record.epochs.last();
    let mut summary = json!({
        "evaluated_on": evaluated_on,
        "test_accuracy": last.map(|r| r.test_accuracy),
        "test_loss": last.map(|r| r.test_loss),
        "steps": record.steps,
        "planned_steps": record.planned_steps,
        "stopped_early": record.stopped_early,
        "wall_seconds": record.wall_seconds,
        "private": record.spent.is_some(),
        "sample_rate": record.sample_rate,
        "expected_batch_size": expected_batch_size,
    });
    // A non-private run states no guarantee: no ε, δ, accountant or noise that a reader
    // could take for one.
    if let Some(spent) = record.spent {
        let fields = summary.as_object_mut().expect("a JSON object");
        fields.insert("epsilon".into(), json!(spent.epsilon));
        fields.insert("delta".into(), json!(delta));
        fields.insert(
            "order".into(),
            json!(Some(spent.order).filter(|&o| o > 0.0)),
        );
        fields.insert("accountant".into(), json!(record.accountant.kind.name()));
        fields.insert(
            "discretization_interval".into(),
            json!(match record.accountant.kind {
                crate::privacy::AccountantKind::Pld =>
                    Some(record.accountant.discretization_interval),
                _ => None,
            }),
        );
        fields.insert("noise_multiplier".into(), json!(record.noise_multiplier));
    }
    summary
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plain data serialises") + "\n"
}

/// Writes config.toml, manifest.json, metrics.csv, timing.csv, ledger.csv and summary.json
/// into `dir`.
pub fn write_run_dir(
    dir: &Path,
    config_toml: &str,
    manifest: &RunManifest,
    record: &TrainingRecord,
    summary: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(&dir.join("config.toml"), config_toml.as_bytes())?;
    write_atomic(&dir.join("manifest.json"), pretty(manifest).as_bytes())?;
    write_atomic(
        &dir.join("metrics.csv"),
        metrics_csv(&record.epochs).as_bytes(),
    )?;
    write_atomic(
        &dir.join("timing.csv"),
        timing_csv(&record.epochs).as_bytes(),
    )?;
    write_atomic(&dir.join("ledger.csv"), record.ledger.to_csv().as_bytes())?;
    write_atomic(&dir.join("summary.json"), pretty(summary).as_bytes())?;
    Ok(())
}

/// ε at δ after every step count in `at` (ascending), composing `ledger` block by block.
pub fn epsilon_curve(
    ledger: &crate::privacy::Ledger,
    delta: f64,
    at: &[u64],
    settings: AccountantSettings,
) -> Result<Vec<f64>> {
    let mut accountant = Accountant::new(settings)?;
    let mut taken = 0u64;
    let mut out = Vec::with_capacity(at.len());
    let mut targets = at.iter().copied().peekable();
    for event in ledger.events() {
        let end = taken + event.steps;
        while let Some(&target) = targets.peek() {
            if target > end {
                break;
            }
            if target > taken {
                accountant.compose(PrivacyEvent {
                    steps: target - taken,
                    ..*event
                })?;
                taken = target;
            }
            out.push(accountant.epsilon(delta)?.epsilon);
            targets.next();
        }
        if end > taken {
            accountant.compose(PrivacyEvent {
                steps: end - taken,
                ..*event
            })?;
            taken = end;
        }
    }
    Ok(out)
}

/// The charts of a run: ε against steps with its budget; test accuracy and losses against
/// epochs; σ and C against steps when they vary.
pub fn run_charts(records: &RunRecords) -> Result<Vec<(String, Chart)>> {
    let name = &records.config.name;
    let evaluated = &records.summary.evaluated_on;
    let epochs = |f: fn(&MetricsRow) -> f64| -> Vec<(f64, f64)> {
        records
            .metrics
            .iter()
            .map(|r| (r.epoch as f64, f(r)))
            .collect()
    };
    let mut charts = Vec::new();
    if records.summary.private && !records.ledger.is_empty() {
        let steps = records.ledger.steps();
        let privacy = &records.config.privacy;
        let settings = privacy.accountant();
        // PLD and PRV recompute the whole ledger per point: fewer points.
        let points = match settings.kind {
            AccountantKind::Rdp => 200,
            _ => 40,
        };
        let mut at: Vec<u64> = (1..=points).map(|j| (j * steps).div_ceil(points)).collect();
        at.dedup();
        let curve = epsilon_curve(
            &records.ledger,
            records.summary.guarantee_delta(),
            &at,
            settings,
        )?;
        charts.push((
            "epsilon".to_string(),
            Chart {
                title: format!(
                    "{name}: privacy spent (δ = {:e})",
                    records.summary.guarantee_delta()
                ),
                x_label: "steps".into(),
                y_label: format!("ε ({} accountant)", settings.kind.name().to_uppercase()),
                series: vec![Series {
                    name: "ε spent".into(),
                    points: std::iter::once((0.0, 0.0))
                        .chain(at.iter().map(|&s| s as f64).zip(curve))
                        .collect(),
                    markers: false,
                }],
                reference: privacy
                    .max_epsilon
                    .or(privacy.target_epsilon)
                    .map(|budget| Reference {
                        name: format!("budget ε = {budget}"),
                        y: budget,
                    }),
                legend: Legend::LowerRight,
            },
        ));
    }
    charts.push((
        "accuracy".to_string(),
        Chart {
            title: format!("{name}: {evaluated} accuracy"),
            x_label: "epoch".into(),
            y_label: format!("{evaluated} accuracy (%)"),
            series: vec![Series {
                name: format!("{evaluated} accuracy"),
                points: epochs(|r| 100.0 * r.test_accuracy),
                markers: true,
            }],
            reference: None,
            legend: Legend::LowerRight,
        },
    ));
    charts.push((
        "loss".to_string(),
        Chart {
            title: format!("{name}: loss"),
            x_label: "epoch".into(),
            y_label: "mean cross-entropy (nats)".into(),
            series: vec![
                Series {
                    name: "train (private data, monitoring)".into(),
                    points: epochs(|r| r.train_loss),
                    markers: true,
                },
                Series {
                    name: evaluated.to_string(),
                    points: epochs(|r| r.test_loss),
                    markers: true,
                },
            ],
            reference: None,
            legend: Legend::UpperRight,
        },
    ));
    let events = records.ledger.events();
    if events
        .windows(2)
        .any(|w| w[0].noise_multiplier != w[1].noise_multiplier)
    {
        let mut points = Vec::new();
        let mut step = 0u64;
        for e in events {
            points.push((step as f64 + 1.0, e.noise_multiplier));
            step += e.steps;
            points.push((step as f64, e.noise_multiplier));
        }
        charts.push((
            "noise".to_string(),
            Chart {
                title: format!("{name}: noise multiplier"),
                x_label: "step".into(),
                y_label: "σ (noise std / clip norm)".into(),
                series: vec![Series {
                    name: "σ per step".into(),
                    points,
                    markers: false,
                }],
                reference: None,
                legend: Legend::UpperRight,
            },
        ));
    }
    let clips: Vec<(f64, f64)> = records
        .metrics
        .iter()
        .map(|r| (r.step as f64, r.clip_norm))
        .collect();
    if clips.windows(2).any(|w| w[0].1 != w[1].1) {
        charts.push((
            "clip_norm".to_string(),
            Chart {
                title: format!("{name}: clip norm"),
                x_label: "step".into(),
                y_label: "C (L2 norm bound)".into(),
                series: vec![Series {
                    name: "C at the end of each epoch".into(),
                    points: clips,
                    markers: true,
                }],
                reference: None,
                legend: Legend::LowerRight,
            },
        ));
    }
    Ok(charts)
}

/// Writes privacy.md and the plots of a run directory from its saved records.
pub fn render(records: &RunRecords) -> Result<Vec<PathBuf>> {
    let statement =
        statement::privacy_statement(&records.config, &records.summary, &records.ledger);
    let path = records.dir.join("privacy.md");
    write_atomic(&path, statement.as_bytes())?;
    let mut written = vec![path];
    let mut drawn = Vec::new();
    for (stem, chart) in run_charts(records)? {
        written.extend(plots::save(&chart, &records.dir, &stem)?);
        drawn.push((stem, chart.title));
    }
    written.push(write_run_page(records, &drawn)?);
    Ok(written)
}

/// Writes `report.html` of a run directory whose privacy.md and plots (`drawn`: stem and
/// title) are written; an audit's `audit.md` is included when there is one.
pub fn write_run_page(records: &RunRecords, drawn: &[(String, String)]) -> Result<PathBuf> {
    let page = html::run_page(records, drawn)?;
    let path = records.dir.join("report.html");
    write_atomic(&path, html::render_page(&page).as_bytes())?;
    Ok(path)
}
