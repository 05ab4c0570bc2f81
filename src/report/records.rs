//! The saved records of a run directory, typed, and read back with errors that name the file:
//! what `dptrain report` rebuilds plots and the statement from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{METRICS_HEADER, METRICS_HEADER_BEFORE_NONFINITE};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::privacy::Ledger;

/// summary.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// "test", or "holdout" when the test_* figures come from a holdout of the training set.
    pub evaluated_on: String,
    /// Accuracy at the last evaluation.
    pub test_accuracy: Option<f64>,
    /// Mean loss at the last evaluation.
    pub test_loss: Option<f64>,
    /// ε spent at δ (None for a non-private run).
    pub epsilon: Option<f64>,
    /// δ (None for a non-private run).
    #[serde(default)]
    pub delta: Option<f64>,
    /// The RDP order that gave ε.
    pub order: Option<f64>,
    /// Steps taken.
    pub steps: u64,
    /// Steps planned.
    pub planned_steps: u64,
    /// Why the run stopped before its plan, if it did.
    pub stopped_early: Option<String>,
    /// Seconds of training.
    pub wall_seconds: f64,
    /// "rdp", "pld" or "prv" (None for a non-private run).
    #[serde(default)]
    pub accountant: Option<String>,
    /// False for a non-private baseline.
    pub private: bool,
    /// σ of the first step (None for a non-private run).
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// q.
    pub sample_rate: f64,
    /// B.
    pub expected_batch_size: usize,
    /// Examples of a validation split declared public, when one was used.
    #[serde(default)]
    pub public_validation_examples: Option<usize>,
    /// Training examples N (older summaries lack it: then B/q).
    #[serde(default)]
    pub training_examples: Option<usize>,
    /// Binary tasks: AUC at the last evaluation.
    #[serde(default)]
    pub test_auc: Option<f64>,
    /// Binary tasks: share predicted positive.
    #[serde(default)]
    pub test_predicted_positive_rate: Option<f64>,
    /// Binary tasks: share actually positive.
    #[serde(default)]
    pub test_positive_rate: Option<f64>,
}

impl Summary {
    /// δ of a private run's guarantee ([`RunRecords::load`] refuses a private summary
    /// without one; NaN for a non-private run, which has no guarantee).
    pub fn guarantee_delta(&self) -> f64 {
        self.delta.unwrap_or(f64::NAN)
    }
}

/// One row of metrics.csv.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken.
    pub step: u64,
    /// Mean training loss over the epoch's sampled examples (private monitoring).
    pub train_loss: f64,
    /// Test (or holdout) loss.
    pub test_loss: f64,
    /// Test (or holdout) accuracy.
    pub test_accuracy: f64,
    /// ε spent so far.
    pub epsilon: f64,
    /// σ of the epoch's last step.
    pub noise_multiplier: f64,
    /// C of the epoch's last step.
    pub clip_norm: f64,
    /// Examples of the epoch whose gradient was not finite (dropped); 0 in older files.
    #[serde(default)]
    pub nonfinite_examples: u64,
}

/// Everything a run directory holds besides the model and the plots.
#[derive(Debug, Clone)]
pub struct RunRecords {
    /// The folder.
    pub dir: PathBuf,
    /// config.toml.
    pub config: RunConfig,
    /// metrics.csv.
    pub metrics: Vec<MetricsRow>,
    /// ledger.csv (empty for a non-private run).
    pub ledger: Ledger,
    /// summary.json.
    pub summary: Summary,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The rows of a CSV file whose header must be exactly `header` (or one of `older`,
/// earlier formats whose missing columns have serde defaults); errors name the file, the
/// line and what was expected. At least one row is required (`empty` says why).
pub(crate) fn parse_csv_rows<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    (header, older): (&str, &[&str]),
    empty: &str,
) -> Result<Vec<T>> {
    let error = |location: String, message: String| Error::Parse {
        path: path.to_path_buf(),
        location,
        message,
    };
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes);
    let found = reader
        .headers()
        .map_err(|e| error("line 1".into(), e.to_string()))?
        .iter()
        .collect::<Vec<_>>()
        .join(",");
    if found != header && !older.contains(&found.as_str()) {
        return Err(error(
            "line 1".into(),
            format!("expected the header `{header}`, found `{found}`"),
        ));
    }
    let mut rows = Vec::new();
    for (index, record) in reader.deserialize::<T>().enumerate() {
        rows.push(record.map_err(|e| {
            let line = e.position().map_or(index as u64 + 2, |p| p.line());
            error(format!("line {line}"), e.to_string())
        })?);
    }
    if rows.is_empty() {
        return Err(error("line 2".into(), empty.into()));
    }
    Ok(rows)
}

/// Parses metrics.csv; errors name the line and column.
pub fn parse_metrics(bytes: &[u8], path: &Path) -> Result<Vec<MetricsRow>> {
    parse_csv_rows(
        bytes,
        path,
        (METRICS_HEADER, &[METRICS_HEADER_BEFORE_NONFINITE]),
        "no rows: a finished run has at least one evaluation",
    )
}

impl RunRecords {
    /// Reads config.toml, metrics.csv, ledger.csv and summary.json from `dir`.
    pub fn load(dir: &Path) -> Result<RunRecords> {
        let config = RunConfig::load(&dir.join("config.toml"), &[])?;
        let metrics_path = dir.join("metrics.csv");
        let metrics = parse_metrics(&read(&metrics_path)?, &metrics_path)?;
        let summary_path = dir.join("summary.json");
        let summary: Summary =
            serde_json::from_slice(&read(&summary_path)?).map_err(|e| Error::Parse {
                path: summary_path.clone(),
                location: format!("line {}, column {}", e.line(), e.column()),
                message: e.to_string(),
            })?;
        if summary.private && (summary.delta.is_none() || summary.epsilon.is_none()) {
            return Err(Error::invalid(
                summary_path.display().to_string(),
                "a private run without epsilon or delta",
                "epsilon and delta in the summary of a private run",
            ));
        }
        let ledger_path = dir.join("ledger.csv");
        let ledger = match summary.private {
            true => Ledger::read_csv(&ledger_path)?,
            false => Ledger::new(),
        };
        Ok(RunRecords {
            dir: dir.to_path_buf(),
            config,
            metrics,
            ledger,
            summary,
        })
    }
}
