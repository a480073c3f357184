//! Compiles the Order API's gRPC definition (`proto/`) into Rust.
//!
//! protox parses the `.proto` files in pure Rust, so neither developers nor
//! CI need `protoc`; tonic-prost-build turns the descriptors into message
//! types and the server trait.

use std::error::Error;

const PROTO_ROOT: &str = "proto";
const ORDER_API_PROTO: &str = "proto/tradeflow/order/v1/order_api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile([ORDER_API_PROTO], [PROTO_ROOT])?;
    tonic_prost_build::configure()
        // The service is served here; clients come from the .proto, in any
        // language. Tests build their own client from the same definition.
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
