//! Operational plumbing that `gcd` and `api` share, so both binaries start,
//! serve, report and stop the same way.
//!
//! - [`config`]: each binary's table of flags (name, environment variable,
//!   default, range, help), the parser and `--help` that read it, and the
//!   flags both binaries take.
//! - [`budget`]: the memory limit (from the cgroup) and the worst-case
//!   memory of every port, from which the connection and call caps follow.
//! - [`serve`]: the accept loop every port uses, with its drivers for
//!   HTTP/1 ([`serve::http1`]) and gRPC ([`serve::grpc`]): every connection,
//!   stream and byte a client can make us hold is capped or timed.
//! - [`lifecycle`]: the SIGTERM choreography (serving, draining, stopping)
//!   that every listener and health report follows.
//! - [`admin`]: the admin port (`/healthz`, `/readyz`, `/metrics`), bound
//!   with the service port and served beside it until the drain ends.
//! - [`metrics`]: lock-free counters and histograms in Prometheus text format.
//! - [`logging`]: one line per event on stdout, level from `RUST_LOG`.
//! - [`process`]: the one start-up path of every binary: flags, logging,
//!   `--check-config`, runtime, signals, exit code.
//! - [`sync`]: the one way to take a lock.
//! - [`alloc`]: the global allocator: dlmalloc behind an inlinable lock,
//!   with small freed blocks kept for reuse.

pub mod admin;
pub mod alloc;
pub mod budget;
pub mod config;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod serve;
pub mod sync;

pub use config::ConfigError;
pub use lifecycle::{Lifecycle, Phase};
