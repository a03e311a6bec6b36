//! gcd's flags, declared once in [`COMMAND`]: each with an
//! environment-variable fallback so a Kubernetes manifest can set it with
//! `env:`, and each numeric one with a valid range (shown in `--help`;
//! anything outside it exits 2). The flags every binary takes come from
//! [`runtime::config`] and [`runtime::process`].

use std::net::SocketAddr;

use runtime::budget::MemoryLimit;
use runtime::config::{self, Args, ByteSize, CHECK_CONFIG, Command, ConfigError, Flag, parses};
use runtime::process::{self, Common};
use serving::grpc;

use crate::limits;

/// Every flag of gcd, in the order `--help` lists them.
pub const COMMAND: Command = Command {
    name: "gcd",
    about: "gRPC service computing greatest common divisors (pb.GCDService/Compute), with \
            grpc.health.v1 health checks and server reflection on the same port, and \
            /healthz, /readyz and /metrics on the admin port. Every flag falls back to the \
            environment variable named in its description; numbers must lie in the range \
            shown. Connection and call caps not set are derived from the memory limit (see \
            --memory-limit). Logs go to stdout; RUST_LOG sets the level (error, warn, info, \
            debug, trace).",
    flags: &[
        Flag::value(
            "--listen",
            "GCD_LISTEN",
            parses::<SocketAddr>,
            "gRPC address to listen on",
        )
        .default("0.0.0.0:3000"),
        config::admin_listen("GCD_ADMIN_LISTEN", "0.0.0.0:9090"),
        config::memory_limit("GCD_MEMORY_LIMIT"),
        config::max_connections(
            "GCD_MAX_CONNECTIONS",
            "what the memory limit allows, at most 1024",
        ),
        Flag::value(
            "--max-concurrent-calls",
            "GCD_MAX_CONCURRENT_CALLS",
            parses::<usize>,
            "most gRPC calls open at once on the port; more are answered RESOURCE_EXHAUSTED",
        )
        .range(1, 65536)
        .derived("what the memory limit allows, at most 1024"),
        Flag::value(
            "--max-concurrent-streams",
            "GCD_MAX_CONCURRENT_STREAMS",
            parses::<u32>,
            "most concurrent gRPC calls on one connection",
        )
        .range(1, 1024)
        .default("256"),
        Flag::value(
            "--handshake-timeout-ms",
            "GCD_HANDSHAKE_TIMEOUT_MS",
            parses::<u64>,
            "a new connection must start a call within this time",
        )
        .range(100, 60_000)
        .default("5000"),
        Flag::value(
            "--idle-timeout-ms",
            "GCD_IDLE_TIMEOUT_MS",
            parses::<u64>,
            "a connection with no call open for this long is closed (GOAWAY)",
        )
        .range(1000, 3_600_000)
        .default("10000"),
        Flag::value(
            "--call-timeout-ms",
            "GCD_CALL_TIMEOUT_MS",
            parses::<u64>,
            "longest a call may take, request and response included (health Watch streams \
             excepted)",
        )
        .range(100, 600_000)
        .default("5000"),
        config::write_timeout_ms("GCD_WRITE_TIMEOUT_MS"),
        process::shutdown_delay_ms("GCD_SHUTDOWN_DELAY_MS"),
        process::drain_timeout_ms("GCD_DRAIN_TIMEOUT_MS"),
        process::worker_threads("GCD_WORKER_THREADS"),
        CHECK_CONFIG,
    ],
};

/// Every method the gRPC port serves, with its message limit.
fn methods(more: crate::MoreRoutes) -> Result<Vec<serving::routes::Method>, ConfigError> {
    crate::service::routes(Default::default())
        .map(|routes| more(routes).methods())
        .map_err(|err| ConfigError::Invalid {
            name: "the gRPC services".into(),
            reason: err.to_string(),
        })
}

/// Validated configuration of a gcd process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub grpc: grpc::Limits,
    /// The admin port, the process flags, and the caps' memory budget.
    pub common: Common,
}

impl Config {
    /// From flags and environment; `open_files` is the process's limit on
    /// file descriptors, which the connection cap must also fit.
    /// `more` adds methods to the gRPC port's own ([`crate::MoreRoutes`]),
    /// which the memory budget counts.
    pub fn from_args(
        args: &Args,
        open_files: u64,
        more: crate::MoreRoutes,
    ) -> Result<Self, ConfigError> {
        let limit = MemoryLimit::detect(args.text::<ByteSize>("--memory-limit")?);
        let caps = limits::plan(
            limit,
            args.optional("--max-connections")?,
            args.optional("--max-concurrent-calls")?,
            open_files,
            &methods(more)?,
        )?;
        Ok(Self {
            listen: args.value("--listen")?,
            grpc: grpc::Limits {
                max_connections: caps.max_connections,
                max_calls: caps.max_calls,
                max_streams_per_connection: args.number("--max-concurrent-streams")?,
                handshake_timeout: args.millis("--handshake-timeout-ms")?,
                idle_timeout: args.millis("--idle-timeout-ms")?,
                call_timeout: args.millis("--call-timeout-ms")?,
                write_timeout: args.millis("--write-timeout-ms")?,
                keepalive_interval: limits::KEEPALIVE_INTERVAL,
                keepalive_timeout: limits::KEEPALIVE_TIMEOUT,
            },
            common: Common::from_args(args, caps.budget)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is whole, every range is checked, and `--help` says the
    /// caps that the memory limit derives are at most limits' defaults.
    #[test]
    fn the_table_is_what_gcd_reads() {
        let configure = |args: &Args| Config::from_args(args, 1 << 20, |routes| routes).map(drop);
        config::check_command(&COMMAND, configure).unwrap();
        let help = config::help_text(&COMMAND, "gcd")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for cap in [limits::DEFAULT_MAX_CONNECTIONS, limits::DEFAULT_MAX_CALLS] {
            assert!(help.contains(&format!("what the memory limit allows, at most {cap}]")));
        }
        assert_eq!(help.matches("at most").count(), 2, "{help}");
    }
}
