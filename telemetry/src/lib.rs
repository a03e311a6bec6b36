//! What a process tells the outside about itself: counters and histograms
//! for Prometheus, and one log line per event.
//!
//! - [`metrics`]: lock-free counters and histograms, their Prometheus text
//!   format ([`metrics::Exposition`]), and [`metrics::Metrics`], what every
//!   source of metrics (a service, a port) implements for the admin port
//!   to serve.
//! - [`logging`]: one line per event on stdout, level from `RUST_LOG`.
//!
//! It depends on no other crate of the workspace: `serving` counts what its
//! ports do here, and `gcd` and `api` their own work, so recording a
//! metric never calls back into the code that serves.

pub mod logging;
pub mod metrics;
