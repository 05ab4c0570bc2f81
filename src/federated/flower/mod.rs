//! dptrain as a Flower SuperNode (flwr 1.42, issue 16): the parts of Flower's wire format.
//!
//! - [`auth`]: the node's P-384 key and the signed headers of every Fleet request;
//! - [`fleet`]: the Fleet API client (HTTP, retries with back-off, the version check);
//! - [`npy`]: NumPy's array files, the bytes of a Flower `Array`;
//! - [`objects`]: the object trees messages travel as, with SHA-256 ids checked on every
//!   object received;
//! - [`proto`]: the Fleet API's protobuf messages, generated from the vendored descriptors.
//! - [`records`]: whole messages (metadata and named records) as object trees, both ways.

pub mod auth;
pub mod fleet;
pub mod npy;
pub mod objects;
pub mod proto;
pub mod records;
