//! Flower 1.42's protobuf messages (package `flwr.proto`), generated at build time from
//! the descriptor set in third_party/flwr-1.42.0 (build.rs).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/flwr.proto.rs"));
