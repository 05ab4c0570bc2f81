//! dptrain: training neural networks with differential privacy.
//!
//! DP-SGD (Abadi et al. 2016) with Poisson sampling, per-example clipping and calibrated
//! Gaussian noise, accounted with Rényi DP (Mironov 2017; Mironov, Talwar & Zhang 2019),
//! privacy loss distributions or PRV.
//!
//! Rooms, lowest layer first (a room imports only its own layer or lower ones, as
//! tests/it/architecture.rs checks):
//! - 0: [`error`], [`fs`], [`real`], [`runtime`], [`privacy::numerics`];
//! - 1: [`privacy`] (accountants, calibration, event trees and ledgers), [`schedule`],
//!   [`sampling`];
//! - 2: [`data`] (MNIST, CSV tables, tokens, CIFAR-10, synthetic sets), [`mechanism`]
//!   (clipping, noise), [`grad_sample`] (per-example rules and their kernels), [`model`]
//!   (layer kinds with hand-written backward, configs, builder, tier-3 candle models);
//! - 3: [`train`] (the DP step's stages: clipped sum, privatizer, update; the DP
//!   optimizer, the training loop, plans, benches), [`audit`], [`federated`] (partitions,
//!   client sampling, DP-FedAvg rounds);
//! - 4: [`report`] (run directories, figures), [`config`] (run configs and overrides);
//! - 5: [`cli`] (the `dptrain` commands; `main.rs` only parses and calls it).

#![warn(missing_docs)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod federated;
pub mod fs;
pub mod grad_sample;
pub mod he;
pub mod mechanism;
pub mod model;
pub mod mpc;
pub mod privacy;
pub mod real;
pub mod report;
pub mod runtime;
pub mod sampling;
pub mod schedule;
pub mod secagg;
pub mod train;

pub use error::{Error, Result};
