//! Federated learning (issue 14, in progress): training across clients that keep their data.
//!
//! So far: [`partition`], the seeded split of a shipped data set into simulated clients,
//! [`clients`], which clients join a round and the privacy event that makes, and [`round`],
//! one round of client-level DP-FedAvg over a [`Transport`] ([`InProcess`] for simulation),
//! and [`silo`], silo-level DP (each silo's own DP-SGD steps and ledger; the server
//! averages).
//! The round engine (server-send → client-compute → server-aggregate over a `Transport`),
//! client-level DP-FedAvg and silo-level DP-SGD build on the DP step's stages in
//! `train` (clipped sum, privatizer, update) and follow in this room.

pub mod clients;
pub mod partition;
pub mod round;
pub mod run;
pub mod silo;

pub use clients::{ClientSampler, ClientSampling};
pub use partition::{Partition, PartitionConfig};
pub use round::{
    ClientReply, InProcess, LocalTraining, RoundOutcome, RoundRequest, Server, Transport,
};
pub use run::{ClientLevelConfig, FederatedRecord, RoundRecord, run_client_level};
pub use silo::{SiloState, SiloTraining, Silos, worst_epsilon};
