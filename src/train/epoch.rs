//! One row of metrics.csv, shared by the trainer and its checkpoints (its own module, so
//! that neither imports the other).

use serde::Serialize;

/// One row of metrics.csv: the state at the end of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken so far.
    pub step: u64,
    /// Mean loss over the examples sampled this epoch (computed from private data: for
    /// monitoring, not covered by the privacy guarantee).
    pub train_loss: f64,
    /// Mean loss on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set.
    pub test_accuracy: f64,
    /// ε spent so far at the run's δ (0 for a non-private run, where it is meaningless).
    pub epsilon: f64,
    /// σ of the last step.
    pub noise_multiplier: f64,
    /// C of the last step.
    pub clip_norm: f64,
    /// Examples of the epoch whose gradient was not finite (dropped: they contributed
    /// nothing, which keeps the sensitivity bound).
    #[serde(default)]
    pub nonfinite_examples: u64,
    /// Seconds since the start of training.
    pub wall_seconds: f64,
}
