//! What one gcd process may hold, and the caps that keep it inside its
//! memory limit however its clients behave.
//!
//! The sizes are worst cases measured with hostile clients (the
//! `hostile` system tests and `results/hostile.md`), rounded up; the table
//! in `docs/memory-budget.md` breaks each one down. [`plan`] turns them
//! into the connection and call caps the flags did not set.

use std::time::Duration;

use runtime::{
    ConfigError,
    budget::{Budget, MemoryLimit},
};
use serving::{
    SocketBuffers, grpc,
    routes::{DEFAULT_MAX_MESSAGE_BYTES, Method},
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Code, runtime, allocator and the services' fixed state.
pub const BASELINE: u64 = 6 * MIB;
/// One gRPC connection at its worst: h2's frame buffers, a partial header
/// block, the HPACK table, a connection window of unread data, and the
/// task (measured: 74 KiB with a call open).
pub const CONNECTION: u64 = 96 * KIB;
/// One call at its worst with messages of at most
/// [`DEFAULT_MAX_MESSAGE_BYTES`]: request headers up to the header-list
/// limit sent as literals, tonic's decode buffer, a message, its task and
/// its response, which the call holds until h2 has written it (measured:
/// 28 KiB for a reflection stream). A method with a larger limit adds
/// twice the difference to every call ([`call_bytes`]).
pub const CALL: u64 = 32 * KIB;

/// One call at its worst when the largest message any method takes is
/// that of `methods`: the message as received, and decoded.
pub fn call_bytes(methods: &[Method]) -> u64 {
    let largest = methods
        .iter()
        .map(|method| method.max_message_bytes)
        .max()
        .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    CALL + 2 * largest.saturating_sub(DEFAULT_MAX_MESSAGE_BYTES) as u64
}

/// Kernel buffers of each gRPC connection: plenty for the api's small
/// multiplexed calls, and a bound on what a client can park in the kernel.
pub const SOCKET_BUFFERS: SocketBuffers = SocketBuffers {
    receive: 16 * 1024,
    send: 16 * 1024,
};

/// Caps when no memory limit is known (outside a container).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1024;
pub const DEFAULT_MAX_CALLS: u64 = 1024;
/// Below these the process would be of little use: a memory limit (or, for
/// connections, an open-file limit) that leaves room for fewer is a
/// configuration error.
const MIN_CONNECTIONS: u64 = 8;
const MIN_CALLS: u64 = 64;
/// File descriptors kept for everything but client connections.
const RESERVED_FILES: u64 = 64;
/// What the service port needs of the open-file limit.
const OPEN_FILES: serving::admin::OpenFiles = serving::admin::OpenFiles {
    flag: "--max-connections (GCD_MAX_CONNECTIONS)",
    reserved: RESERVED_FILES,
    min_connections: MIN_CONNECTIONS,
};

/// Keep-alive PINGs on idle-looking connections; a peer that does not
/// answer within the timeout is gone.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The caps in force, and the budget they add up to.
#[derive(Debug, Clone)]
pub struct Caps {
    pub max_connections: usize,
    pub max_calls: usize,
    pub budget: Budget,
}

/// Caps for `limit`: explicit ones as given (an error if they do not fit),
/// the others as large as fit, calls taking half of what the fixed parts
/// leave and connections the rest, never above the defaults, and never
/// more connections than `open_files` allows (an error if it allows fewer
/// than a few). A call is sized for the largest message of `methods`,
/// which the budget lists.
pub fn plan(
    limit: Option<MemoryLimit>,
    connections: Option<usize>,
    calls: Option<usize>,
    open_files: u64,
    methods: &[Method],
) -> Result<Caps, ConfigError> {
    let call = call_bytes(methods);
    let (mut budget, file_room) =
        serving::admin::process_budget(limit, BASELINE, &OPEN_FILES, connections, open_files)?;
    budget.add(
        "gRPC calls waiting for the permits of an evicted connection",
        grpc::MAX_WAITING_CALLS as u64,
        call,
    );
    let max_calls = budget.share(
        "gRPC calls in flight beyond the connections' reserved ones",
        calls,
        call,
        DEFAULT_MAX_CALLS,
        MIN_CALLS,
        2,
    )?;
    let max_connections = budget.share(
        "gRPC connections (with their reserved calls and kernel socket buffers)",
        connections,
        CONNECTION
            + grpc::RESERVED_CALLS_PER_CONNECTION as u64 * call
            + SOCKET_BUFFERS.worst_case_bytes(),
        DEFAULT_MAX_CONNECTIONS.min(file_room),
        MIN_CONNECTIONS,
        1,
    )?;
    budget.note(methods_table(methods));
    budget.ensure_fits()?;
    Ok(Caps {
        max_connections,
        max_calls,
        budget,
    })
}

/// The methods a call is sized for, one line each.
fn methods_table(methods: &[Method]) -> String {
    let mut table = String::from("gRPC methods (a call is sized for the largest message):");
    for method in methods {
        table.push_str(&format!(
            "\n- {}: messages up to {} bytes",
            method.path, method.max_message_bytes
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit::given(bytes))
    }

    #[test]
    fn the_manifest_limit_gives_caps_that_fit() {
        let caps = plan(limit(32 * MIB), None, None, 1 << 20, &[]).unwrap();
        assert!(caps.budget.total() <= 24 * MIB, "{}", caps.budget);
        assert!(caps.max_connections >= 32, "{}", caps.budget);
        assert!(caps.max_calls >= 256, "{}", caps.budget);
    }

    #[test]
    fn no_limit_keeps_the_defaults() {
        let caps = plan(None, None, None, 1 << 20, &[]).unwrap();
        assert_eq!(caps.max_connections, 1024);
        assert_eq!(caps.max_calls, 1024);
    }

    #[test]
    fn explicit_caps_that_do_not_fit_are_refused() {
        let err = plan(limit(32 * MIB), Some(5000), None, 1 << 20, &[]).unwrap_err();
        assert!(err.to_string().contains("memory limit"), "{err}");
        let err = plan(None, Some(5000), None, 1024, &[]).unwrap_err();
        assert!(err.to_string().contains("open-file limit"), "{err}");
    }

    #[test]
    fn the_open_file_limit_caps_derived_connections() {
        let caps = plan(None, None, None, 1024, &[]).unwrap();
        assert_eq!(caps.max_connections, 1024 - 16 - 64);
    }

    #[test]
    fn an_open_file_limit_below_the_floor_is_refused() {
        let floor =
            serving::admin::LIMITS.max_connections as u64 + RESERVED_FILES + MIN_CONNECTIONS;
        let caps = plan(None, None, None, floor, &[]).unwrap();
        assert_eq!(caps.max_connections as u64, MIN_CONNECTIONS);
        let err = plan(None, None, None, floor - 1, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("at least {floor}")), "{err}");
    }
}
