//! Generates the Rust types of Flower 1.42's Fleet API (`src/federated/flower/proto.rs`
//! includes them) from the descriptor set vendored in third_party/flwr-1.42.0, with
//! prost-build and no protoc.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let set = "third_party/flwr-1.42.0/flwr-1.42.0.fds.pb";
    println!("cargo:rerun-if-changed={set}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = prost_types::FileDescriptorSet::decode(std::fs::read(set)?.as_slice())?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
