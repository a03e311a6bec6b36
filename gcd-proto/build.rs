//! Compiles `gcd.proto` with `protox` (a protobuf compiler written in Rust),
//! so neither a developer nor a `cross` image needs `protoc` installed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=gcd.proto");
    let descriptors = protox::compile(["gcd.proto"], ["."])?;

    // Server reflection serves this descriptor set so `grpcurl` needs no .proto.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("gcd_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
