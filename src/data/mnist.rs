//! MNIST (LeCun, Cortes & Burges): 60,000 training and 10,000 test digits, 28×28 grey.
//!
//! Read from the four gzip IDX files shipped in `datasets/mnist`, each checked against
//! `SHA256SUMS` before use. Pixels become `x/255`, then `(x − 0.1307)/0.3081`, the usual
//! public constants (as ../bench/opacus does), so the same numbers reach every model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Dataset;
use super::idx::{read_idx, read_sha256sums, verify_sha256};
use crate::error::{Error, Result};

/// Mean of MNIST pixels after scaling to [0, 1] (a published constant).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of MNIST pixels after scaling to [0, 1] (a published constant).
pub const MNIST_STD: f32 = 0.3081;

/// Where MNIST lives and whether to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MnistConfig {
    /// Folder with the four `*-idx?-ubyte.gz` files and `SHA256SUMS`.
    pub dir: PathBuf,
    /// Check every file against `SHA256SUMS` before reading it.
    pub verify_checksums: bool,
    /// Hold out the last `holdout` training examples as a validation set for tuning: the
    /// model trains on the rest and is evaluated on them instead of the test set (0: off).
    pub holdout: usize,
    /// Take the last `validation` training examples (after any holdout) out of training as
    /// a validation split for plateau schedules (0: none).
    pub validation: usize,
    /// Declares the validation split public: the plateau schedule reads it without
    /// accounting, so it must not be private data (the report says so). Required with a
    /// validation split.
    pub validation_public: bool,
}

/// Examples in MNIST's training files.
pub const MNIST_TRAIN_SIZE: usize = 60_000;

/// Which set of 28×28 IDX images a folder holds: the same reader, each with its public
/// normalisation constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSet {
    /// MNIST digits (LeCun et al.).
    Mnist,
    /// Fashion-MNIST articles (Xiao, Rasul & Vollgraf 2017).
    FashionMnist,
}

impl ImageSet {
    /// Mean of the pixels scaled to [0, 1] (a published constant).
    pub fn mean(self) -> f32 {
        match self {
            ImageSet::Mnist => MNIST_MEAN,
            ImageSet::FashionMnist => 0.2860,
        }
    }

    /// Standard deviation of the pixels scaled to [0, 1] (a published constant).
    pub fn std(self) -> f32 {
        match self {
            ImageSet::Mnist => MNIST_STD,
            ImageSet::FashionMnist => 0.3530,
        }
    }

    /// The name in configs.
    pub fn name(self) -> &'static str {
        match self {
            ImageSet::Mnist => "mnist",
            ImageSet::FashionMnist => "fashion_mnist",
        }
    }

    /// SHA-256 of the shipped training images, to catch a folder of the other set.
    fn train_images_sha256(self) -> &'static str {
        match self {
            ImageSet::Mnist => "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
            ImageSet::FashionMnist => {
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
            }
        }
    }
}

impl MnistConfig {
    /// Training examples left after the holdout and the validation split (what q = B/N
    /// divides by), from the count in the training labels' header: the plan uses the N
    /// the run will use, whatever the folder holds.
    pub fn train_size(&self) -> Result<usize> {
        let labels = read_idx(&self.dir.join("train-labels-idx1-ubyte.gz"), 1)?;
        Ok(labels.dims[0].saturating_sub(self.holdout + self.validation))
    }
}

impl Default for MnistConfig {
    fn default() -> Self {
        MnistConfig {
            dir: PathBuf::from("datasets/mnist"),
            verify_checksums: true,
            holdout: 0,
            validation: 0,
            validation_public: false,
        }
    }
}

/// The training and test splits.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// 60,000 examples (fewer with a holdout).
    pub train: Dataset,
    /// 10,000 test examples, or the holdout.
    pub test: Dataset,
    /// True when `test` is the holdout taken from the training set.
    pub test_is_holdout: bool,
    /// The public validation split, when configured.
    pub validation: Option<Dataset>,
}

/// Loads and normalises both splits of MNIST.
pub fn load_mnist(config: &MnistConfig) -> Result<Mnist> {
    load_images(config, ImageSet::Mnist)
}

/// Loads and normalises both splits of `set` from `config.dir`.
pub fn load_images(config: &MnistConfig, set: ImageSet) -> Result<Mnist> {
    let dir = &config.dir;
    let sums = if config.verify_checksums {
        let sums_path = dir.join("SHA256SUMS");
        let sums = read_sha256sums(&sums_path)?;
        // The shipped files of the other set: a wrong `dir`, not a corrupt file.
        let other = match set {
            ImageSet::Mnist => ImageSet::FashionMnist,
            ImageSet::FashionMnist => ImageSet::Mnist,
        };
        if sums.get("train-images-idx3-ubyte.gz").map(String::as_str)
            == Some(other.train_images_sha256())
        {
            return Err(Error::invalid(
                "data.dir",
                dir.display(),
                format!(
                    "a folder of {} files: this folder holds {} (dataset = \"{}\")",
                    set.name(),
                    other.name(),
                    other.name()
                ),
            ));
        }
        Some((sums, sums_path))
    } else {
        None
    };
    let split = |images: &str, labels: &str| -> Result<Dataset> {
        let (images, labels) = (dir.join(images), dir.join(labels));
        if let Some((sums, sums_path)) = &sums {
            verify_sha256(&images, sums, sums_path)?;
            verify_sha256(&labels, sums, sums_path)?;
        }
        read_split_of(&images, &labels, set)
    };
    if config.validation > 0 && !config.validation_public {
        return Err(Error::invalid(
            "data.validation_public",
            false,
            "true: a validation split is read without privacy accounting, so it must be \
             declared public (data.validation_public = true)",
        ));
    }
    let train = split("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")?;
    if config.holdout + config.validation >= train.len() {
        return Err(Error::invalid(
            "data.holdout + data.validation",
            config.holdout + config.validation,
            format!("fewer than the {} training examples", train.len()),
        ));
    }
    let (train, test, test_is_holdout) = if config.holdout == 0 {
        let test = split("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")?;
        (train, test, false)
    } else {
        let (train, holdout) = train.split_at(train.len() - config.holdout);
        (train, holdout, true)
    };
    let (train, validation) = if config.validation == 0 {
        (train, None)
    } else {
        let (train, validation) = train.split_at(train.len() - config.validation);
        (train, Some(validation))
    };
    Ok(Mnist {
        train,
        test,
        test_is_holdout,
        validation,
    })
}

/// One MNIST split from its image and label files (no checksum check).
pub fn read_split(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    read_split_of(images_path, labels_path, ImageSet::Mnist)
}

/// The images of an IDX file of `set`, normalised with the set's public constants, every
/// label 0 (`dptrain predict` reads no labels).
pub fn read_images_of(images_path: &Path, set: ImageSet) -> Result<Dataset> {
    let images = read_idx(images_path, 3)?;
    let (count, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if (rows, cols) != (28, 28) {
        return Err(Error::Parse {
            path: images_path.to_path_buf(),
            location: "header".into(),
            message: format!("images are {rows}×{cols}, expected 28×28"),
        });
    }
    let features = images
        .data
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - set.mean()) / set.std())
        .collect();
    Ok(Dataset {
        features,
        labels: vec![0; count],
        feature_shape: vec![1, rows, cols],
        classes: 10,
        vocab: None,
    })
}

/// One split of `set` from its image and label files (no checksum check).
pub fn read_split_of(images_path: &Path, labels_path: &Path, set: ImageSet) -> Result<Dataset> {
    let images = read_images_of(images_path, set)?;
    let labels = read_idx(labels_path, 1)?;
    let invalid = |path: &Path, location: String, message: String| Error::Parse {
        path: path.to_path_buf(),
        location,
        message,
    };
    let count = images.len();
    if labels.dims[0] != count {
        return Err(invalid(
            labels_path,
            "header".into(),
            format!(
                "{} labels for {count} images in {}",
                labels.dims[0],
                images_path.display()
            ),
        ));
    }
    if let Some(at) = labels.data.iter().position(|&l| l > 9) {
        return Err(invalid(
            labels_path,
            format!("label {at}"),
            format!(
                "label {} is out of range: expected a digit 0-9",
                labels.data[at]
            ),
        ));
    }
    Ok(Dataset {
        labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
        ..images
    })
}
