//! The `gcd` service: `pb.GCDService/Compute` over gRPC, plus what a
//! Kubernetes workload needs around it.
//!
//! - [`compute`]: the arithmetic, a pure function.
//! - [`service`]: the `Compute` handler and its metrics.
//! - [`server`]: registers the gRPC port's methods (Compute on the fast
//!   lane, reflection; the port adds `grpc.health.v1`), binds it and the
//!   admin port, serves them with the bounded drivers of [`ops::serve`],
//!   and runs both through the shared shutdown choreography in
//!   [`ops::lifecycle`].
//! - [`limits`]: the worst-case memory of each connection and call, and
//!   the caps derived from the memory limit.
//! - [`config`]: flags and environment variables, with their ranges.

pub mod compute;
pub mod config;
pub mod limits;
pub mod server;
pub mod service;

pub use config::Config;
pub use server::{Server, ServerError};
