//! dptrain: training neural networks with differential privacy.
//!
//! DP-SGD (Abadi et al. 2016) with Poisson sampling, per-example clipping and calibrated
//! Gaussian noise, accounted with Rényi DP (Mironov 2017; Mironov, Talwar & Zhang 2019).
//!
//! Rooms, lowest layer first (a room imports only its own layer or lower ones):
//! 0 [`error`], [`fs`], [`privacy::numerics`] → 1 [`privacy`], [`sampling`] → 2 [`data`],
//! [`mechanism`] → 5 [`cli`].
//! Training, data, models and reports arrive in later layers.

#![warn(missing_docs)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod federated;
pub mod fs;
pub mod grad_sample;
pub mod mechanism;
pub mod model;
pub mod privacy;
pub mod real;
pub mod report;
pub mod runtime;
pub mod sampling;
pub mod schedule;
pub mod train;

pub use error::{Error, Result};
