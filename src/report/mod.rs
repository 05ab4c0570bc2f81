//! The run directory: the files a finished run leaves behind, each written atomically.
//!
//! `config.toml` (resolved), `manifest.json`, `metrics.csv`, `ledger.csv`, `summary.json`
//! (design.md section 6); the model weights are written by the trainer. Everything here is
//! made from saved records, never from tensors.

use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::train::{EpochRecord, TrainingRecord};

/// Who ran what, where and when.
#[derive(Debug, Clone, Serialize)]
pub struct RunManifest {
    /// The run seed.
    pub seed: u64,
    /// dptrain's version.
    pub dptrain_version: String,
    /// `git rev-parse HEAD` of the working directory, when it is a checkout.
    pub git_commit: Option<String>,
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
    pub fn start(seed: u64, threads: usize) -> RunManifest {
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        RunManifest {
            seed,
            dptrain_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit,
            threads,
            started_unix: unix_now(),
            finished_unix: f64::NAN,
            machine: format!("{} ({cpus} logical CPUs)", host.trim()),
            command: std::env::args().collect(),
            noise: "fast: seeded ChaCha12 + rand_distr normal; not hardened against \
                    floating-point attacks (Mironov 2012; Jin et al. 2022)"
                .into(),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The header of metrics.csv.
pub const METRICS_HEADER: &str =
    "epoch,step,train_loss,test_loss,test_accuracy,epsilon,noise_multiplier,clip_norm,wall_seconds";

/// metrics.csv text: one row per evaluation.
pub fn metrics_csv(rows: &[EpochRecord]) -> String {
    let mut out = format!("{METRICS_HEADER}\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{:?},{:?},{:?},{:?},{:?},{:?},{:.3}\n",
            r.epoch,
            r.step,
            r.train_loss,
            r.test_loss,
            r.test_accuracy,
            r.epsilon,
            r.noise_multiplier,
            r.clip_norm,
            r.wall_seconds
        ));
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
    json!({
        "evaluated_on": evaluated_on,
        "test_accuracy": last.map(|r| r.test_accuracy),
        "test_loss": last.map(|r| r.test_loss),
        "epsilon": record.spent.map(|s| s.epsilon),
        "delta": delta,
        "order": record.spent.map(|s| s.order),
        "steps": record.steps,
        "planned_steps": record.planned_steps,
        "stopped_early": record.stopped_early,
        "wall_seconds": record.wall_seconds,
        "accountant": "rdp",
        "private": record.spent.is_some(),
        "noise_multiplier": record.noise_multiplier,
        "sample_rate": record.sample_rate,
        "expected_batch_size": expected_batch_size,
    })
}

/// Pretty JSON with a final newline.
fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plain data serialises") + "\n"
}

/// Writes config.toml, manifest.json, metrics.csv, ledger.csv and summary.json into `dir`.
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
    write_atomic(&dir.join("ledger.csv"), record.ledger.to_csv().as_bytes())?;
    write_atomic(&dir.join("summary.json"), pretty(summary).as_bytes())?;
    Ok(())
}
