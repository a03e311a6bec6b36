//! Compiles `echo.proto` with `protox`, as `gcd-proto/build.rs` does
//! `gcd.proto`: messages only, since both ends are served and called
//! through the project's own fast lane and balanced client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=echo.proto");
    let descriptors = protox::compile(["echo.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
