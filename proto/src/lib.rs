//! The `pb` package from `gcd.proto`: message types, the `GCDService` client
//! (used by `api`) and server trait (implemented by `gcd`), plus the encoded
//! descriptor set that `gcd` hands to gRPC server reflection.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("pb");

/// Encoded `FileDescriptorSet` of `gcd.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gcd_descriptor.bin"));
