//! Training: the DP optimizer (clip, sum, noise, scale, inner step), the loop, the plan.

pub mod bench;
pub mod canaries;
pub mod checkpoint;
pub mod epoch;
pub mod optimizer;
pub mod planning;
pub mod settings;
pub mod trainer;

/// Kept here too: where the DP step's diagnostics were first documented.
pub use crate::model::per_example_norms;
pub use canaries::GradientCanaries;
pub use checkpoint::{Checkpoint, CheckpointState};
pub use optimizer::{
    DpOptimizer, DpSettings, NoiseMode, OptimizerConfig, OptimizerState, StepStats,
};
pub use planning::{RunPlan, plan_run};
pub use settings::{PrivacyConfig, TrainingConfig};
pub use trainer::{
    BinaryMetrics, EpochRecord, Hooks, Splits, TrainingRecord, auc, binary_metrics, evaluate,
    save_model, train, train_module, train_observed,
};
