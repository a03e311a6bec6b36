//! The process runtime that `gcd` and `api` share, so both start, size
//! themselves and stop the same way: everything about the process as a
//! whole, and nothing about a port or a request.
//!
//! - [`config`]: flags with environment-variable fallbacks, their valid
//!   ranges, and their errors.
//! - [`budget`]: the memory limit (from the cgroup) and the worst-case
//!   memory of every port, from which the connection and call caps follow;
//!   it reads its flag through [`config`].
//! - [`lifecycle`]: the SIGTERM choreography (serving, draining, stopping)
//!   that every listener and health report follows.
//! - [`process`]: the shared `main`: runtime, signals into the
//!   [`lifecycle`], exit codes (0 after a clean drain, 1 if serving fails,
//!   2 for a bad [`config`]), and the `--check-config` [`budget`] report.
//! - [`alloc`]: the global allocator: dlmalloc behind an inlinable lock,
//!   with small freed blocks kept for reuse.
//!
//! The bottom of the workspace's own crates with `telemetry`: it depends on
//! neither that nor `serving`, which builds its ports on this crate's
//! [`Lifecycle`] and [`budget::Budget`].

pub mod alloc;
pub mod budget;
pub mod config;
pub mod lifecycle;
pub mod process;

pub use config::ConfigError;
pub use lifecycle::{Lifecycle, Phase};
