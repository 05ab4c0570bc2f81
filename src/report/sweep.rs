//! sweep.csv (one row per run of a `dptrain sweep`) and the privacy/utility trade-off chart
//! drawn from one or several of them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plots::{Chart, Legend, Reference, Series};
use crate::error::{Error, Result};

/// The header of sweep.csv.
pub const SWEEP_HEADER: &str =
    "key,value,private,epsilon,delta,test_accuracy,steps,noise_multiplier,wall_seconds,run_dir";

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The swept config key.
    pub key: String,
    /// Its value in this run ("-" for the non-private baseline).
    pub value: String,
    /// False for the non-private baseline.
    pub private: bool,
    /// ε spent (empty for the baseline).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Final test (or holdout) accuracy.
    pub test_accuracy: f64,
    /// Steps taken.
    pub steps: u64,
    /// σ of the first step (0 for the baseline).
    pub noise_multiplier: f64,
    /// Seconds of training.
    pub wall_seconds: f64,
    /// The run directory.
    pub run_dir: String,
}

/// sweep.csv text.
pub fn sweep_csv(rows: &[SweepRow]) -> Result<String> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(true)
        .from_writer(Vec::new());
    for row in rows {
        writer
            .serialize(row)
            .map_err(|e| Error::Tensor(format!("sweep.csv: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| Error::Tensor(format!("sweep.csv: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads a sweep.csv; errors name the file and line.
pub fn read_sweep(path: &Path) -> Result<Vec<SweepRow>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rows: Vec<SweepRow> = super::records::parse_csv_rows(
        &bytes,
        path,
        (SWEEP_HEADER, &[]),
        "no private run: a sweep has at least one",
    )?;
    if !rows.iter().any(|r| r.private) {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            location: "line 2".into(),
            message: "no private run: a sweep has at least one".into(),
        });
    }
    Ok(rows)
}

/// Test accuracy (%) against ε, one series per sweep (points sorted by ε), with the first
/// sweep's non-private accuracy as a reference line when it has one.
pub fn tradeoff_chart(title: &str, sweeps: &[(String, Vec<SweepRow>)]) -> Chart {
    let series = sweeps
        .iter()
        .map(|(name, rows)| {
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| r.epsilon.map(|e| (e, 100.0 * r.test_accuracy)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: name.clone(),
                points,
                markers: true,
            }
        })
        .collect();
    let reference = sweeps.iter().find_map(|(name, rows)| {
        rows.iter().find(|r| !r.private).map(|r| Reference {
            name: format!("{name}: non-private {:.2}%", 100.0 * r.test_accuracy),
            y: 100.0 * r.test_accuracy,
        })
    });
    let evaluated = "test";
    Chart {
        title: title.to_string(),
        x_label: format!(
            "ε (δ = {:e})",
            sweeps
                .first()
                .and_then(|(_, r)| r.first())
                .map_or(1e-5, |r| r.delta)
        ),
        y_label: format!("{evaluated} accuracy (%)"),
        series,
        reference,
        // Accuracy rises towards the non-private line: the band between them is free.
        legend: Legend::MiddleRight,
    }
}
