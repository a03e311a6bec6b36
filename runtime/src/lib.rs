//! The process runtime that `gcd` and `api` share, so both start, size
//! themselves and stop the same way: everything about the process as a
//! whole, and nothing about a port or a request.
//!
//! - [`config`]: each binary's table of flags (name, environment variable,
//!   default, range, help), the parser and `--help` that read it, and the
//!   flags every binary takes.
//! - [`budget`]: the memory limit (from the cgroup) and the worst-case
//!   memory of every port, from which the connection and call caps follow;
//!   it reads its flag through [`config`].
//! - [`lifecycle`]: the SIGTERM choreography (serving, draining, stopping)
//!   that every listener and health report follows.
//! - [`process`]: the one start-up path of every binary: flags, logging,
//!   the `--check-config` [`budget`] report, the Tokio runtime, signals
//!   into the [`lifecycle`], and exit codes (0 after a clean drain, 1 if
//!   serving fails, 2 for a bad [`config`]).
//! - [`sync`]: the one way to take a lock.
//! - [`alloc`]: the global allocator: dlmalloc behind an inlinable lock,
//!   with small freed blocks kept for reuse.
//!
//! Below `serving`, which builds its ports on this crate's [`Lifecycle`]
//! and [`budget::Budget`]; above `telemetry` only for the logging it starts.

pub mod alloc;
pub mod budget;
pub mod config;
pub mod lifecycle;
pub mod process;
pub mod sync;

pub use config::ConfigError;
pub use lifecycle::{Lifecycle, Phase};
