//! Secure aggregation (issue 15): SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova 2020) in
//! the semi-honest model, with full SecAgg (Bonawitz et al. 2017) as the case k ≥ n. The
//! server learns the sum of the surviving clients' inputs mod 2^b and nothing else.
//!
//! No tensors and no network: every stage is a pure function over messages ([`messages`]),
//! the client in [`client`], the server in [`server`], so a round runs in one process for
//! tests and over any transport in deployment. [`graph`] holds the public parameters and
//! the neighbour graph, [`crypto`] the primitives (each from a well-kept crate).

pub mod client;
pub mod crypto;
pub mod graph;
pub mod messages;
pub mod quantise;
pub mod server;

pub use client::Client;
pub use graph::{Graph, RoundParams};
pub use server::Server;

#[cfg(test)]
mod tests;
