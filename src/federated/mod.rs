//! Federated learning (issue 14): training across clients that keep their data.
//!
//! - [`partition`]: the seeded split of a shipped data set into simulated clients or silos;
//! - [`clients`]: which clients join a round, and the privacy event that makes;
//! - [`round`]: one round over a [`Transport`] (server-send → client-compute →
//!   server-aggregate), [`InProcess`] virtual clients for simulation, the [`Server`] built on
//!   the DP step's stages in `train` (clipped sum, privatizer, update);
//! - [`run`]: a whole client-level DP-FedAvg run ([`ClientLevelRun`]), accounted and
//!   checkpointable round by round;
//! - [`silo`]: silo-level DP (each silo's own DP-SGD steps and ledger; the server takes the
//!   weighted mean), [`SiloLevelRun`];
//! - [`he`]: rounds through homomorphic aggregation under a committee's threshold key;
//! - [`flower`]: Flower's wire format (object trees, `.npy` arrays) for `dptrain fl node`;
//! - [`checkpoint`]: what a run keeps after each round to resume bit for bit.

pub mod checkpoint;
pub mod clients;
pub mod flower;
pub mod he;
pub mod partition;
pub mod round;
pub mod run;
pub mod secure;
pub mod silo;

pub use checkpoint::{FederatedCheckpoint, FederatedState};
pub use clients::{ClientSampler, ClientSampling};
pub use partition::{Partition, PartitionConfig};
pub use round::{
    ClientReply, InProcess, LocalTraining, RoundOutcome, RoundRequest, Server, Transport,
};
pub use run::{
    ClientLevelConfig, ClientLevelRun, FederatedRecord, FederatedRun, METRICS_HEADER, RoundRecord,
    run_client_level,
};
pub use silo::{SiloLevelConfig, SiloLevelRun, SiloState, SiloTraining, Silos, worst_epsilon};
