//! The `pb` package from `gcd.proto`: message types, the `GCDService`
//! client and server trait (used by the tests, the load generator and the
//! stand-in replicas; api and gcd speak `Compute` on the hot path with
//! `grpc-wire`'s framing), the service's name, and the encoded descriptor
//! set that `gcd` hands to gRPC server reflection.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("pb");
}
pub use generated::*;

/// Encoded `FileDescriptorSet` of `gcd.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gcd_descriptor.bin"));
