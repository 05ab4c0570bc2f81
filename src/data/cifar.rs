//! CIFAR-10 in its binary format (`dataset = "cifar10"`, Krizhevsky 2009): a folder with
//! `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each record one label byte
//! and 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, rows of 32). Pixels become
//! `x/255`, then are standardised per channel with the usual published constants.
//!
//! CIFAR-10 cannot be fetched on these machines; the reader is tested on small files
//! written in the same format (tests/it/data_formats.rs), and no utility number is claimed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, Result};

/// Per-channel mean of CIFAR-10 pixels in [0, 1] (published constants).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of CIFAR-10 pixels in [0, 1] (published constants).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

const RECORD: usize = 1 + 3 * 32 * 32;

/// Where CIFAR-10 lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CifarConfig {
    /// The `cifar-10-batches-bin` folder.
    pub dir: PathBuf,
    /// Training batch files to read (default the five `data_batch_<i>.bin`).
    #[serde(default = "batches")]
    pub train_files: Vec<String>,
    /// The test file (default `test_batch.bin`).
    #[serde(default = "test_file")]
    pub test_file: String,
}

fn batches() -> Vec<String> {
    (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
}

fn test_file() -> String {
    "test_batch.bin".into()
}

/// Reads one binary batch file.
pub fn read_batch(path: &Path) -> Result<Dataset> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.is_empty() || raw.len() % RECORD != 0 {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            location: format!("byte {}", raw.len() - raw.len() % RECORD),
            message: format!(
                "{} bytes is not a whole number of {RECORD}-byte records (truncated file?)",
                raw.len()
            ),
        });
    }
    let n = raw.len() / RECORD;
    let mut features = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in raw.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                location: format!("record {i}"),
                message: format!("label {} is out of range: expected 0-9", record[0]),
            });
        }
        labels.push(u32::from(record[0]));
        for (c, plane) in record[1..].chunks_exact(1024).enumerate() {
            features.extend(
                plane
                    .iter()
                    .map(|&p| (f32::from(p) / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]),
            );
        }
    }
    Ok(Dataset {
        features,
        labels,
        feature_shape: vec![3, 32, 32],
        classes: 10,
        vocab: None,
    })
}

/// Training and test splits.
pub fn load_cifar10(config: &CifarConfig) -> Result<(Dataset, Dataset)> {
    let mut train: Option<Dataset> = None;
    for file in &config.train_files {
        let part = read_batch(&config.dir.join(file))?;
        match &mut train {
            None => train = Some(part),
            Some(all) => {
                all.features.extend(part.features);
                all.labels.extend(part.labels);
            }
        }
    }
    let train = train.ok_or_else(|| {
        Error::invalid("data.train_files", "[]", "at least one training batch file")
    })?;
    let test = read_batch(&config.dir.join(&config.test_file))?;
    Ok((train, test))
}
