//! What one api process may hold, and the caps that keep it inside its
//! memory limit however its clients behave.
//!
//! The sizes are worst cases measured with hostile clients (the
//! `hostile` system tests and `results/hostile.md`), rounded up; the table
//! in `docs/memory-budget.md` breaks each one down. [`plan`] turns them
//! into the connection cap when no flag set it.

use runtime::{
    ConfigError,
    budget::{Budget, MemoryLimit},
};
use serving::SocketBuffers;

use crate::{balancer::MAX_REPLICAS, upstream::RECYCLE_AFTER_ABANDONED};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Longest request head (request line and headers) on the public port.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Code, runtime, allocator and the balancer's fixed state.
pub const BASELINE: u64 = 8 * MIB;
/// One public connection at its worst: a full request head being read,
/// hyper's read and write buffers and the connection's task (measured:
/// 41 KiB with a 16 KiB head).
pub const CONNECTION: u64 = 48 * KIB;
/// One request in flight: its parsed headers, the gRPC call's encode and
/// decode buffers, the HTTP/2 stream and the response.
pub const REQUEST: u64 = 32 * KIB;
/// One gRPC connection to a gcd replica: h2's buffers and its receive
/// window ([`crate::upstream::WINDOW`]).
pub const REPLICA_CONNECTION: u64 = 96 * KIB;
/// A stream whose call was abandoned at its deadline, which h2 keeps until
/// the replica reads its reset (measured: 0.4 KiB once its frames are
/// written; its HEADERS, DATA and RST_STREAM frames when a frozen replica
/// lets none out).
pub const ABANDONED_STREAM: u64 = 1536;

/// Kernel buffers of each public connection: a request head fits in a few
/// segments, a response in one.
pub const SOCKET_BUFFERS: SocketBuffers = SocketBuffers {
    receive: 8 * 1024,
    send: 8 * 1024,
};

/// The connection cap when no memory limit is known (outside a container).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 4096;
/// Below this the process would be of little use: a memory or open-file
/// limit that leaves room for fewer is a configuration error.
const MIN_CONNECTIONS: u64 = 16;
/// File descriptors kept for everything but client connections (gcd
/// replicas, DNS, the runtime).
const RESERVED_FILES: u64 = 64 + MAX_REPLICAS as u64;
/// What the service port needs of the open-file limit.
const OPEN_FILES: serving::admin::OpenFiles = serving::admin::OpenFiles {
    flag: "--max-connections (API_MAX_CONNECTIONS)",
    reserved: RESERVED_FILES,
    min_connections: MIN_CONNECTIONS,
};

/// The cap in force, and the budget it adds up to.
#[derive(Debug, Clone)]
pub struct Caps {
    pub max_connections: usize,
    pub budget: Budget,
}

/// Caps for `limit`: an explicit connection cap as given (an error if it
/// does not fit), else as many connections as fit beside the fixed parts
/// and `max_in_flight` requests, never above the default, and never more
/// than `open_files` allows (an error if it allows fewer than a few).
pub fn plan(
    limit: Option<MemoryLimit>,
    connections: Option<usize>,
    max_in_flight: usize,
    open_files: u64,
) -> Result<Caps, ConfigError> {
    let (mut budget, file_room) =
        serving::admin::process_budget(limit, BASELINE, &OPEN_FILES, connections, open_files)?;
    budget.add(
        "gcd replica connections",
        MAX_REPLICAS as u64,
        REPLICA_CONNECTION,
    );
    budget.add("requests in flight", max_in_flight as u64, REQUEST);
    // Each connection is replaced once it has abandoned
    // RECYCLE_AFTER_ABANDONED streams, and closed when its last call ends,
    // within a deadline; a request makes at most two calls, so in that
    // time at most twice the requests in flight are abandoned on the
    // connections being replaced.
    let abandoned_on_replaced = 2 * max_in_flight as u64;
    budget.add(
        "gcd streams abandoned at their deadline",
        MAX_REPLICAS as u64 * RECYCLE_AFTER_ABANDONED as u64 + abandoned_on_replaced,
        ABANDONED_STREAM,
    );
    budget.add(
        "replaced gcd connections, until their last call ends",
        abandoned_on_replaced / RECYCLE_AFTER_ABANDONED as u64,
        REPLICA_CONNECTION,
    );
    let max_connections = budget.share(
        "public connections (with kernel socket buffers)",
        connections,
        CONNECTION + SOCKET_BUFFERS.worst_case_bytes(),
        DEFAULT_MAX_CONNECTIONS.min(file_room),
        MIN_CONNECTIONS,
        1,
    )?;
    budget.ensure_fits()?;
    Ok(Caps {
        max_connections,
        budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit::given(bytes))
    }

    #[test]
    fn the_manifest_limit_gives_caps_that_fit() {
        let caps = plan(limit(64 * MIB), None, 256, 1 << 20).unwrap();
        assert!(caps.budget.total() <= 48 * MIB, "{}", caps.budget);
        assert!(caps.max_connections >= 256, "{}", caps.budget);
    }

    #[test]
    fn no_limit_keeps_the_default() {
        let caps = plan(None, None, 512, 1 << 20).unwrap();
        assert_eq!(caps.max_connections, 4096);
    }

    #[test]
    fn explicit_caps_that_do_not_fit_are_refused() {
        let err = plan(limit(64 * MIB), Some(10_000), 256, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("memory limit"), "{err}");
        let err = plan(None, Some(5000), 256, 1024).unwrap_err();
        assert!(err.to_string().contains("open-file limit"), "{err}");
        let err = plan(limit(64 * MIB), None, 65536, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("at least"), "{err}");
    }

    #[test]
    fn an_open_file_limit_below_the_floor_is_refused() {
        let floor =
            serving::admin::LIMITS.max_connections as u64 + RESERVED_FILES + MIN_CONNECTIONS;
        let caps = plan(None, None, 512, floor).unwrap();
        assert_eq!(caps.max_connections as u64, MIN_CONNECTIONS);
        let err = plan(None, None, 512, floor - 1).unwrap_err().to_string();
        assert!(err.contains(&format!("at least {floor}")), "{err}");
    }
}
