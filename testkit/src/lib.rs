//! Test support shared by the integration tests of `gcd` and `api`.
//!
//! - [`process`]: start the real `gcd` and `api` binaries on ephemeral
//!   loopback ports, signal them, read their metrics.
//! - [`http`]: a tiny blocking HTTP/1.1 client, so tests see exactly the
//!   bytes a user's `curl` would.
//! - [`fake_gcd`]: gcd stand-ins whose answers the test holds back.
//! - [`eventually`]: poll a condition with a bound instead of sleeping.
//!
//! Test code: panics are the failure reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_gcd;
pub mod http;
pub mod process;

use std::time::{Duration, Instant};

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
