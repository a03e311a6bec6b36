//! Test support shared by the integration tests of `gcd` and `api`.
//!
//! - [`process`]: start the real `gcd` and `api` binaries on ephemeral
//!   loopback ports, signal them, read their metrics.
//! - [`http`]: a tiny blocking HTTP/1.1 client, so tests see exactly the
//!   bytes a user's `curl` would.
//! - [`fake_gcd`]: gcd stand-ins whose answers the test holds back.
//! - [`eventually`]: poll a condition with a bound instead of sleeping.
//! - [`Padded`]: a `GCDRequest` made as large as a test needs.
//!
//! Test code: panics are the failure reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_gcd;
pub mod http;
pub mod process;

use std::time::{Duration, Instant};

/// `GCDRequest` with an extra field: what a client with a newer or hostile
/// schema might send, as large as `padding` makes it (7 bytes more for
/// small `a`, `b` and a padding under 16 KiB).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Padded {
    #[prost(uint64, tag = "1")]
    pub a: u64,
    #[prost(uint64, tag = "2")]
    pub b: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub padding: Vec<u8>,
}

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `timeout`. Readiness is observed, never assumed after a sleep.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
