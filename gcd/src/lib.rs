//! The `gcd` service: `pb.GCDService/Compute` over gRPC, plus what a
//! Kubernetes workload needs around it.
//!
//! - [`compute`]: the arithmetic, a pure function.
//! - [`service`]: the `Compute` handler, its metrics, and every method of
//!   the gRPC port (Compute on the fast lane, reflection; the port adds
//!   `grpc.health.v1`), which [`config`] budgets and [`server`] serves.
//! - [`limits`]: the worst-case memory of each connection and call, and
//!   the caps derived from the memory limit.
//! - [`config`]: gcd's table of flags, and the configuration read from it.
//! - [`server`]: binds the gRPC port and the admin port, serves them with
//!   the bounded drivers of [`serving`], and runs both through the shared
//!   shutdown choreography in [`runtime::lifecycle`].
//!
//! Each module uses only those above it, so none of them imports another
//! that imports it back.

pub mod compute;
pub mod config;
pub mod limits;
pub mod server;
pub mod service;

use std::process::ExitCode;

pub use config::Config;
pub use server::{Server, ServerError};
use serving::routes::GrpcRoutesBuilder;

/// More methods on gcd's gRPC port: how a binary built on gcd adds its own
/// (`|routes| routes.unary(PATH, handler)`); they get every bound, health,
/// metrics and their place in the memory budget, as gcd's own do.
pub type MoreRoutes = fn(GrpcRoutesBuilder) -> GrpcRoutesBuilder;

/// The whole of a gcd binary after its allocator ([`runtime::process::main`]
/// with gcd's flags and ports), serving gcd's methods and `more`.
pub fn main_with(more: MoreRoutes) -> ExitCode {
    runtime::process::main(
        &config::COMMAND,
        |args, open_files| Config::from_args(&args, open_files, more),
        |config| &config.common,
        |config, lifecycle| async move { Server::bind(config).await?.run(lifecycle, more).await },
    )
}
