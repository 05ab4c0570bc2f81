//! dptrain as a Flower SuperNode (flwr 1.42, issue 16): the parts of Flower's wire format.
//!
//! - [`auth`]: the node's P-384 key and the signed headers of every Fleet request;
//! - [`dialect`]: dptrain's messages on Flower's records (what server and nodes exchange);
//! - [`node`]: `dptrain fl node`, the SuperNode loop driving a client's side of a round;
//! - [`fleet`]: the Fleet API client (HTTP, retries with back-off, the version check);
//! - [`npy`]: NumPy's array files, the bytes of a Flower `Array`;
//! - [`objects`]: the object trees messages travel as, with SHA-256 ids checked on every
//!   object received;
//! - [`proto`]: the Fleet API's protobuf messages, generated from the vendored descriptors.
//! - [`records`]: whole messages (metadata and named records) as object trees, both ways;
//! - [`server`]: `dptrain fl server-step`, the run's server side behind the ServerApp.

pub mod auth;
pub mod dialect;
pub mod fleet;
pub mod node;
pub mod npy;
pub mod objects;
pub mod proto;
pub mod records;
pub mod server;
