//! Federated learning (issue 14, in progress): training across clients that keep their data.
//!
//! So far: [`partition`], the seeded split of a shipped data set into simulated clients,
//! and [`clients`], which clients join a round and the privacy event that makes.
//! The round engine (server-send → client-compute → server-aggregate over a `Transport`),
//! client-level DP-FedAvg and silo-level DP-SGD build on the DP step's stages in
//! `train` (clipped sum, privatizer, update) and follow in this room.

pub mod clients;
pub mod partition;

pub use clients::{ClientSampler, ClientSampling};
pub use partition::{Partition, PartitionConfig};
