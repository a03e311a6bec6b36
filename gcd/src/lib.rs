//! The `gcd` service: `pb.GCDService/Compute` over gRPC, plus what a
//! Kubernetes workload needs around it.
//!
//! - [`compute`]: the arithmetic, a pure function.
//! - [`service`]: the `Compute` handler, its metrics, and every method of
//!   the gRPC port (Compute on the fast lane, reflection; the port adds
//!   `grpc.health.v1`), which [`config`] budgets and [`server`] serves.
//! - [`limits`]: the worst-case memory of each connection and call, and
//!   the caps derived from the memory limit.
//! - [`config`]: flags and environment variables, with their ranges.
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

/// The whole of a gcd binary after its allocator: flags, configuration,
/// `--check-config`, then serving gcd's methods and `more` until stopped.
pub fn main_with(more: MoreRoutes) -> ExitCode {
    let args: config::Args = match runtime::config::parse_args() {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    telemetry::logging::init();
    let open_files = runtime::budget::raise_open_file_limit();
    let config = match Config::from_args(args, open_files, more) {
        Ok(config) => config,
        Err(err) => return runtime::process::invalid_config(&err),
    };
    if config.check_only {
        return runtime::process::report_budget("gcd", &config.budget);
    }
    runtime::process::run("gcd", config.process, |lifecycle| async move {
        Server::bind(config).await?.run(lifecycle, more).await
    })
}
