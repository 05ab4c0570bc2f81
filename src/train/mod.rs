//! Training: the DP optimizer (clip, sum, noise, scale, inner step) and, later, the loop.

pub mod optimizer;

pub use optimizer::{DpOptimizer, DpSettings, OptimizerConfig, StepStats, per_example_norms};
