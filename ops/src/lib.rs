//! Operational plumbing that `gcd` and `api` share, so both binaries start,
//! report and stop the same way.
//!
//! - [`config`]: flags with environment-variable fallbacks, and their errors.
//! - [`lifecycle`]: the SIGTERM choreography (serving, draining, stopping)
//!   that every listener and health report follows.
//! - [`http`]: an HTTP/1 accept loop with connection and header-read limits
//!   and graceful shutdown, used for every axum router we serve.
//! - [`admin`]: the admin router (`/healthz`, `/readyz`, `/metrics`).
//! - [`metrics`]: lock-free counters and histograms in Prometheus text format.
//! - [`logging`]: one line per event on stdout, level from `RUST_LOG`.
//! - [`process`]: the shared `main`: runtime, signals, exit code.

pub mod admin;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod process;

pub use config::ConfigError;
pub use lifecycle::{Lifecycle, Phase};
