//! Data sets: readers, checks and normalisation, producing plain in-memory arrays.
//!
//! Nothing here touches privacy accounting; the trainer samples from a [`Dataset`] with the
//! Poisson sampler of `sampling`. MNIST's normalisation constants are fixed public values;
//! a CSV table's come from its config, or are flagged as computed from the training data.

pub mod cifar;
pub mod idx;
pub mod mnist;
pub mod synthetic;
pub mod table;
pub mod tokens;

pub use mnist::{ImageSet, Mnist, MnistConfig, load_images, load_mnist};
pub use table::{Table, TableConfig, load_table};

/// A run's data, whatever its source: training and evaluation splits, an optional public
/// validation split, and for tables how the features were made.
#[derive(Debug, Clone)]
pub struct Splits {
    /// The training examples (what q = B/N divides by).
    pub train: Dataset,
    /// The test set, or a holdout of the training data.
    pub test: Dataset,
    /// True when `test` is a holdout taken from the training data (tuning runs).
    pub test_is_holdout: bool,
    /// A validation split declared public (plateau schedules).
    pub validation: Option<Dataset>,
    /// Tables only: feature names, data-derived columns, dropped rows.
    pub encoding: Option<table::Encoding>,
}

impl Splits {
    /// A training and a test split, nothing else.
    pub fn plain(train: Dataset, test: Dataset) -> Self {
        Splits {
            train,
            test,
            test_is_holdout: false,
            validation: None,
            encoding: None,
        }
    }
}

/// Examples as rows of `f32` features with integer class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() × feature_len()` values, row-major.
    pub features: Vec<f32>,
    /// One class index per example, each below `classes`.
    pub labels: Vec<u32>,
    /// The shape of one example's features (for MNIST `[1, 28, 28]`).
    pub feature_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// For token data: the vocabulary (features are token ids).
    pub vocab: Option<Vocabulary>,
}

/// The vocabulary of token data: ids are below `size`; `padding` marks unused positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocabulary {
    /// Number of distinct ids.
    pub size: usize,
    /// The id that pads short sequences, if any.
    pub padding: Option<u32>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of feature values per example.
    pub fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }

    /// The first `at` examples and the rest, as two data sets.
    pub fn split_at(&self, at: usize) -> (Dataset, Dataset) {
        let d = self.feature_len();
        let part = |range: std::ops::Range<usize>| Dataset {
            features: self.features[range.start * d..range.end * d].to_vec(),
            labels: self.labels[range].to_vec(),
            feature_shape: self.feature_shape.clone(),
            classes: self.classes,
            vocab: self.vocab,
        };
        (part(0..at), part(at..self.len()))
    }

    /// The features of example `index`.
    pub fn example(&self, index: usize) -> &[f32] {
        let d = self.feature_len();
        &self.features[index * d..(index + 1) * d]
    }
}
