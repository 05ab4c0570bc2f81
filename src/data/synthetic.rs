//! Seeded synthetic data with a planted signal, for benchmarks and tests (no licence, no
//! download): CIFAR-shaped images (`dataset = "synthetic_images"`) and token sequences
//! (`dataset = "synthetic_tokens"`). Speed does not depend on the values, and the planted
//! signal lets a run show that it learns; no utility claim about real data follows.
//!
//! Images: N(0, 1) pixels plus `signal` × a fixed random pattern of the example's class,
//! coarse (4×4 cells per channel, each N(0, 1), spread over the image) so that small
//! convnets with pooling can see it.
//! Tokens: lengths uniform in [max_len/2, max_len], ids from a Zipf(1.1) law over the
//! vocabulary (id 0 pads), and each real position replaced with probability `signal` by one
//! of the class's 4 marker tokens.

use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use serde::{Deserialize, Serialize};

use super::{Dataset, Vocabulary};
use crate::error::{Error, Result};

/// Synthetic images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticImages {
    /// (C, H, W), e.g. [3, 32, 32].
    pub shape: Vec<usize>,
    /// Training examples.
    pub train: usize,
    /// Test examples.
    pub test: usize,
    /// Classes.
    pub classes: usize,
    /// Strength of the class pattern (default 0.5).
    #[serde(default = "half")]
    pub signal: f32,
    /// Seed of the data (not of the run).
    #[serde(default)]
    pub seed: u64,
}

/// Synthetic token sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticTokens {
    /// Sequence length T.
    pub max_len: usize,
    /// Vocabulary size V (id 0 pads).
    pub vocab_size: usize,
    /// Training examples.
    pub train: usize,
    /// Test examples.
    pub test: usize,
    /// Classes.
    pub classes: usize,
    /// Probability that a position carries a class marker (default 0.1).
    #[serde(default = "tenth")]
    pub signal: f64,
    /// Seed of the data (not of the run).
    #[serde(default)]
    pub seed: u64,
}

fn half() -> f32 {
    0.5
}
fn tenth() -> f64 {
    0.1
}

fn check(name: &str, value: usize, at_least: usize) -> Result<()> {
    if value < at_least {
        return Err(Error::invalid(
            format!("data.{name}"),
            value,
            format!("at least {at_least}"),
        ));
    }
    Ok(())
}

impl SyntheticImages {
    /// Both splits.
    pub fn generate(&self) -> Result<(Dataset, Dataset)> {
        check("train", self.train, 1)?;
        check("test", self.test, 1)?;
        check("classes", self.classes, 2)?;
        if self.shape.len() != 3 || self.shape.contains(&0) {
            return Err(Error::invalid(
                "data.shape",
                format!("{:?}", self.shape),
                "[C, H, W] with every side at least 1",
            ));
        }
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(self.seed);
        let per: usize = self.shape.iter().product();
        let normal = rand_distr::StandardNormal;
        let patterns: Vec<f32> = (0..self.classes * per)
            .map(|_| normal.sample(&mut rng))
            .collect();
        let mut split = |n: usize| {
            let mut features = Vec::with_capacity(n * per);
            let mut labels = Vec::with_capacity(n);
            for _ in 0..n {
                let class = rng.random_range(0..self.classes);
                labels.push(class as u32);
                let pattern = &patterns[class * per..(class + 1) * per];
                features.extend(pattern.iter().map(|p| {
                    let noise: f32 = normal.sample(&mut rng);
                    noise + self.signal * p
                }));
            }
            Dataset {
                features,
                labels,
                feature_shape: self.shape.clone(),
                classes: self.classes,
                vocab: None,
            }
        };
        let train = split(self.train);
        Ok((train, split(self.test)))
    }
}

impl SyntheticTokens {
    /// Both splits.
    pub fn generate(&self) -> Result<(Dataset, Dataset)> {
        check("train", self.train, 1)?;
        check("test", self.test, 1)?;
        check("classes", self.classes, 2)?;
        check("max_len", self.max_len, 2)?;
        check("vocab_size", self.vocab_size, 4 * self.classes + 2)?;
        if !(0.0..=1.0).contains(&self.signal) {
            return Err(Error::invalid(
                "data.signal",
                self.signal,
                "a probability in [0, 1]",
            ));
        }
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(self.seed);
        let zipf = rand_distr::Zipf::new((self.vocab_size - 1) as f64, 1.1)
            .map_err(|e| Error::invalid("data.vocab_size", self.vocab_size, e.to_string()))?;
        // Markers: 4 ids per class, spread over the vocabulary (not the most frequent).
        let marker =
            |class: usize, k: usize| 1 + (7919 * (4 * class + k) + 13) % (self.vocab_size - 1);
        let mut split = |n: usize| {
            let mut features = Vec::with_capacity(n * self.max_len);
            let mut labels = Vec::with_capacity(n);
            for _ in 0..n {
                let class = rng.random_range(0..self.classes);
                labels.push(class as u32);
                let len = rng.random_range(self.max_len / 2..=self.max_len);
                for t in 0..self.max_len {
                    let id = if t >= len {
                        0
                    } else if rng.random_bool(self.signal) {
                        marker(class, rng.random_range(0..4))
                    } else {
                        zipf.sample(&mut rng) as usize
                    };
                    features.push(id as f32);
                }
            }
            Dataset {
                features,
                labels,
                feature_shape: vec![self.max_len],
                classes: self.classes,
                vocab: Some(Vocabulary {
                    size: self.vocab_size,
                    padding: Some(0),
                }),
            }
        };
        let train = split(self.train);
        Ok((train, split(self.test)))
    }
}
