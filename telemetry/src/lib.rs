//! What a process tells the outside about itself: counters and histograms
//! for Prometheus, and one log line per event.
//!
//! - [`metrics`]: lock-free counters and histograms, and their Prometheus
//!   text format ([`metrics::Exposition`]), which every source of metrics
//!   writes into and the admin port serves.
//! - [`logging`]: one line per event on stdout, level from `RUST_LOG`.
//!
//! It depends on no other crate of the workspace: `serving` counts what its
//! ports do here, and `gcd` and `api` their own work, so recording a
//! metric never calls back into the code that serves.

pub mod logging;
pub mod metrics;
