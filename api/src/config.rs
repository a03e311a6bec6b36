//! The api's flags, declared once in [`COMMAND`]: each with an
//! environment-variable fallback so a Kubernetes manifest can set it with
//! `env:`, and each numeric one with a valid range (shown in `--help`;
//! anything outside it exits 2). The flags every binary takes come from
//! [`runtime::config`] and [`runtime::process`].

use std::{net::SocketAddr, time::Duration};

use runtime::budget::MemoryLimit;
use runtime::config::{self, Args, ByteSize, CHECK_CONFIG, Command, ConfigError, Flag, parses};
use runtime::process::{self, Common};
use serving::http1;

use crate::{limits, resolve::Targets, routes::MAX_URI_BYTES};

/// Every flag of the api, in the order `--help` lists them.
pub const COMMAND: Command = Command {
    name: "api",
    about: "HTTP gateway to the gcd service: GET /gcd/{a}/{b} answers {\"result\":\"<gcd>\"}, \
            balancing every request across all gcd replicas. /healthz, /readyz and /metrics \
            are on the admin port. Every flag falls back to the environment variable named in \
            its description; numbers must lie in the range shown. The connection cap, if not \
            set, is derived from the memory limit (see --memory-limit). Logs go to stdout; \
            RUST_LOG sets the level (error, warn, info, debug, trace).",
    flags: &[
        Flag::value(
            "--listen",
            "API_LISTEN",
            parses::<SocketAddr>,
            "public HTTP address to listen on",
        )
        .default("0.0.0.0:8080"),
        config::admin_listen("API_ADMIN_LISTEN", "0.0.0.0:9091"),
        Flag::value(
            "--gcd",
            "GCD_ADDR",
            // Read as text, then as targets: a malformed list is a
            // configuration error, whichever of flag and variable set it.
            parses::<String>,
            "gcd replicas as comma-separated host:port (host a DNS name, an IPv4 address or a \
             bracketed IPv6 one); each host is resolved to all its addresses, and re-resolved \
             periodically",
        )
        .default("gcd-service:3000"),
        Flag::value(
            "--resolve-interval-ms",
            "API_RESOLVE_INTERVAL_MS",
            parses::<u64>,
            "how often to re-resolve the gcd hosts, picking up replicas that appeared or \
             vanished",
        )
        .range(10, 3_600_000)
        .default("5000"),
        Flag::value(
            "--deadline-ms",
            "API_DEADLINE_MS",
            parses::<u64>,
            "deadline for one gcd call, retry included; past it the answer is 504",
        )
        .range(1, 600_000)
        .default("1000"),
        Flag::value(
            "--connect-timeout-ms",
            "API_CONNECT_TIMEOUT_MS",
            parses::<u64>,
            "timeout for opening a connection to one gcd replica",
        )
        .range(1, 60_000)
        .default("250"),
        config::memory_limit("API_MEMORY_LIMIT"),
        Flag::value(
            "--max-in-flight",
            "API_MAX_IN_FLIGHT",
            parses::<usize>,
            "most requests in flight; more are answered 503 at once instead of queueing",
        )
        .range(1, 65536)
        .default("512"),
        config::max_connections(
            "API_MAX_CONNECTIONS",
            "what the memory limit allows, at most 4096",
        ),
        Flag::value(
            "--header-read-timeout-ms",
            "API_HEADER_READ_TIMEOUT_MS",
            parses::<u64>,
            "a client must send each request's headers within this time, counted from when the \
             connection opened or its last response went out (so also the keep-alive idle \
             timeout)",
        )
        .range(100, 600_000)
        .default("5000"),
        config::write_timeout_ms("API_WRITE_TIMEOUT_MS"),
        Flag::value(
            "--max-connection-age-ms",
            "API_MAX_CONNECTION_AGE_MS",
            parses::<u64>,
            "a connection this old is closed after its current response (Connection: close), \
             so clients spread over api pods again",
        )
        .range(1000, 86_400_000)
        .default("60000"),
        process::shutdown_delay_ms("API_SHUTDOWN_DELAY_MS"),
        process::drain_timeout_ms("API_DRAIN_TIMEOUT_MS"),
        process::worker_threads("API_WORKER_THREADS"),
        CHECK_CONFIG,
    ],
};

/// Validated configuration of an api process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub gcd: Targets,
    pub resolve_interval: Duration,
    pub deadline: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    /// The public port's bounds.
    pub http: http1::Limits,
    /// The admin port, the process flags, and the caps' memory budget.
    pub common: Common,
}

impl Config {
    /// From flags and environment; `open_files` is the process's limit on
    /// file descriptors, which the connection cap must also fit.
    pub fn from_args(args: &Args, open_files: u64) -> Result<Self, ConfigError> {
        let gcd = args
            .value::<String>("--gcd")?
            .parse()
            .map_err(|err: crate::resolve::TargetError| args.invalid("--gcd", err))?;
        let max_in_flight = args.number("--max-in-flight")?;
        let deadline = args.millis("--deadline-ms")?;
        let limit = MemoryLimit::detect(args.text::<ByteSize>("--memory-limit")?);
        let caps = limits::plan(
            limit,
            args.optional("--max-connections")?,
            max_in_flight,
            open_files,
        )?;
        Ok(Self {
            listen: args.value("--listen")?,
            gcd,
            resolve_interval: args.millis("--resolve-interval-ms")?,
            deadline,
            connect_timeout: args.millis("--connect-timeout-ms")?,
            max_in_flight,
            http: http1::Limits {
                max_connections: caps.max_connections,
                header_read_timeout: args.millis("--header-read-timeout-ms")?,
                write_timeout: args.millis("--write-timeout-ms")?,
                max_connection_age: args.millis("--max-connection-age-ms")?,
                handler_timeout: deadline,
                max_head_bytes: limits::MAX_HEAD_BYTES,
                max_target_bytes: MAX_URI_BYTES,
            },
            common: Common::from_args(args, caps.budget)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is whole, every range is checked, and `--help` says the
    /// connection cap the memory limit derives is at most limits' default.
    #[test]
    fn the_table_is_what_the_api_reads() {
        config::check_command(&COMMAND, |args| Config::from_args(args, 1 << 20).map(drop)).unwrap();
        let help = config::help_text(&COMMAND, "api");
        let cap = limits::DEFAULT_MAX_CONNECTIONS;
        let derived = format!("what the memory limit allows, at most {cap}]");
        assert!(
            help.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&derived)
        );
    }
}
