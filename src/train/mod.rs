//! Training: the DP step as three stages (clipped sum, privatizer, update) and the DP
//! optimizer that composes them, the loop, the plan.

pub mod bench;
pub mod canaries;
pub mod checkpoint;
pub mod clipped_sum;
pub mod dist;
pub mod epoch;
pub mod evaluation;
pub mod inner;
pub mod optimizer;
pub mod planning;
pub mod privatizer;
pub mod settings;
pub mod trainer;

/// Kept here too: where the DP step's diagnostics were first documented.
pub use crate::model::per_example_norms;
pub use canaries::GradientCanaries;
pub use checkpoint::{Checkpoint, CheckpointState};
pub use clipped_sum::{ClippedSum, StepStats, SumValue, Sums};
pub use evaluation::{Evaluation, Prediction, evaluate_detailed, load_weights, predict};
pub use inner::{InnerOptimizer, OptimizerConfig, OptimizerState, ServerOptimizerConfig, Update};
pub use optimizer::{DpOptimizer, DpSettings, NoiseMode};
pub use planning::{RunPlan, plan_run};
pub use privatizer::{GaussianPrivatizer, NoNoise, Privatizer, SecurePrivatizer};
pub use settings::{PrivacyConfig, TrainingConfig};
pub use trainer::{
    BinaryMetrics, EpochRecord, Hooks, Splits, TrainingRecord, auc, binary_metrics, evaluate,
    save_model, train, train_module, train_observed,
};
