//! Training: the DP optimizer (clip, sum, noise, scale, inner step) and, later, the loop.

pub mod bench;
pub mod optimizer;
pub mod settings;
pub mod trainer;

pub use optimizer::{DpOptimizer, DpSettings, OptimizerConfig, StepStats, per_example_norms};
pub use settings::{PrivacyConfig, TrainingConfig};
pub use trainer::{EpochRecord, TrainingRecord, evaluate, save_model, train};
