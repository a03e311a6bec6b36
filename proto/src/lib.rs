//! The `pb` package from `gcd.proto`: message types, the `GCDService` client
//! (used by `api`) and server trait (implemented by `gcd`), plus the encoded
//! descriptor set that `gcd` hands to gRPC server reflection, and
//! [`framing`], the message framing both write by hand on `Compute`'s path.

pub mod framing;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("pb");
}
pub use generated::*;

/// Encoded `FileDescriptorSet` of `gcd.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gcd_descriptor.bin"));
