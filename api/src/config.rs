//! Command-line flags, each with an environment-variable fallback so a
//! Kubernetes manifest can set it with `env:`, and each numeric one with a
//! valid range (shown in `--help`; anything outside it exits 2).

use std::{net::SocketAddr, time::Duration};

use argh::FromArgs;
use runtime::{
    budget::{Budget, MemoryLimit},
    config::{
        ByteSize, ConfigError, flag_or_env, optional, optional_ranged, ranged, ranged_millis,
    },
    process::ProcessConfig,
};
use serving::http1;

use crate::{limits, resolve::Targets, routes::MAX_URI_BYTES};

/// HTTP gateway to the gcd service: GET /gcd/{a}/{b} answers
/// {"result":"<gcd>"}, balancing every request across all gcd replicas.
/// /healthz, /readyz and /metrics are on the admin port. Every flag falls
/// back to the environment variable named in its description; numbers must
/// lie in the range shown. The connection cap, if not set, is derived from
/// the memory limit (see --memory-limit). Logs go to stdout; RUST_LOG sets
/// the level (error, warn, info, debug, trace).
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// public HTTP address to listen on [env API_LISTEN, default 0.0.0.0:8080]
    #[argh(option)]
    pub listen: Option<SocketAddr>,

    /// admin HTTP address for /healthz, /readyz and /metrics [env API_ADMIN_LISTEN, default 0.0.0.0:9091]
    #[argh(option)]
    pub admin_listen: Option<SocketAddr>,

    /// gcd replicas as comma-separated host:port (host a DNS name, an IPv4 address or a bracketed IPv6 one); each host is resolved to all its addresses, and re-resolved periodically [env GCD_ADDR, default gcd-service:3000]
    #[argh(option)]
    pub gcd: Option<String>,

    /// how often to re-resolve the gcd hosts, picking up replicas that appeared or vanished [env API_RESOLVE_INTERVAL_MS, 10..=3600000, default 5000]
    #[argh(option)]
    pub resolve_interval_ms: Option<u64>,

    /// deadline for one gcd call, retry included; past it the answer is 504 [env API_DEADLINE_MS, 1..=600000, default 1000]
    #[argh(option)]
    pub deadline_ms: Option<u64>,

    /// timeout for opening a connection to one gcd replica [env API_CONNECT_TIMEOUT_MS, 1..=60000, default 250]
    #[argh(option)]
    pub connect_timeout_ms: Option<u64>,

    /// memory the process may use, e.g. 64Mi; the connection cap is derived from it [env API_MEMORY_LIMIT, default: the cgroup's limit, else none]
    #[argh(option)]
    pub memory_limit: Option<ByteSize>,

    /// most requests in flight; more are answered 503 at once instead of queueing [env API_MAX_IN_FLIGHT, 1..=65536, default 512]
    #[argh(option)]
    pub max_in_flight: Option<usize>,

    /// most open client connections; at the cap a new one takes the place of the least useful (no request yet, else idle, else least recently active) [env API_MAX_CONNECTIONS, 1..=65536, default: what the memory limit allows, at most 4096]
    #[argh(option)]
    pub max_connections: Option<usize>,

    /// a client must send each request's headers within this time, counted from when the connection opened or its last response went out (so also the keep-alive idle timeout) [env API_HEADER_READ_TIMEOUT_MS, 100..=600000, default 5000]
    #[argh(option)]
    pub header_read_timeout_ms: Option<u64>,

    /// a client that does not read its response for this long is disconnected [env API_WRITE_TIMEOUT_MS, 100..=600000, default 5000]
    #[argh(option)]
    pub write_timeout_ms: Option<u64>,

    /// a connection this old is closed after its current response (Connection: close), so clients spread over api pods again [env API_MAX_CONNECTION_AGE_MS, 1000..=86400000, default 60000]
    #[argh(option)]
    pub max_connection_age_ms: Option<u64>,

    /// after SIGTERM, how long to keep serving while /readyz reports 503, so load balancers stop sending [env API_SHUTDOWN_DELAY_MS, 0..=300000, default 5000]
    #[argh(option)]
    pub shutdown_delay_ms: Option<u64>,

    /// after the shutdown delay, how long in-flight requests may take before the process exits anyway [env API_DRAIN_TIMEOUT_MS, 0..=300000, default 15000]
    #[argh(option)]
    pub drain_timeout_ms: Option<u64>,

    /// worker threads (Tokio): 1 serves everything on one thread, the least CPU per request; 0 means one per CPU core [env API_WORKER_THREADS, 0..=64, default 1]
    #[argh(option)]
    pub worker_threads: Option<usize>,

    /// check the configuration, print the memory budget and exit (0 if it fits)
    #[argh(switch)]
    pub check_config: bool,
}

/// Validated configuration of an api process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub gcd: Targets,
    pub resolve_interval: Duration,
    pub deadline: Duration,
    pub connect_timeout: Duration,
    pub max_in_flight: usize,
    /// The public port's bounds.
    pub http: http1::Limits,
    /// Worst-case memory of the caps above, against the memory limit.
    pub budget: Budget,
    pub process: ProcessConfig,
    pub check_only: bool,
}

impl Config {
    /// From flags and environment; `open_files` is the process's limit on
    /// file descriptors, which the connection cap must also fit.
    pub fn from_args(args: Args, open_files: u64) -> Result<Self, ConfigError> {
        let ms = |name, flag, var, default_ms, range| {
            ranged_millis(name, flag, var, Duration::from_millis(default_ms), range)
        };
        let gcd = flag_or_env(args.gcd, "GCD_ADDR", "gcd-service:3000".to_owned())?;
        let gcd = gcd
            .parse()
            .map_err(|err: crate::resolve::TargetError| ConfigError::Invalid {
                name: "--gcd (GCD_ADDR)".into(),
                reason: err.to_string(),
            })?;
        let max_in_flight = ranged(
            "--max-in-flight",
            args.max_in_flight,
            "API_MAX_IN_FLIGHT",
            512,
            1..=65536,
        )?;
        let deadline = ms(
            "--deadline-ms",
            args.deadline_ms,
            "API_DEADLINE_MS",
            1000,
            1..=600_000,
        )?;
        let limit = MemoryLimit::detect(optional(args.memory_limit, "API_MEMORY_LIMIT")?);
        let caps = limits::plan(
            limit,
            optional_ranged(
                "--max-connections",
                args.max_connections,
                "API_MAX_CONNECTIONS",
                1..=65536,
            )?,
            max_in_flight,
            open_files,
        )?;
        Ok(Self {
            listen: flag_or_env(args.listen, "API_LISTEN", ([0, 0, 0, 0], 8080).into())?,
            admin_listen: flag_or_env(
                args.admin_listen,
                "API_ADMIN_LISTEN",
                ([0, 0, 0, 0], 9091).into(),
            )?,
            gcd,
            resolve_interval: ms(
                "--resolve-interval-ms",
                args.resolve_interval_ms,
                "API_RESOLVE_INTERVAL_MS",
                5000,
                10..=3_600_000,
            )?,
            deadline,
            connect_timeout: ms(
                "--connect-timeout-ms",
                args.connect_timeout_ms,
                "API_CONNECT_TIMEOUT_MS",
                250,
                1..=60_000,
            )?,
            max_in_flight,
            http: http1::Limits {
                max_connections: caps.max_connections,
                header_read_timeout: ms(
                    "--header-read-timeout-ms",
                    args.header_read_timeout_ms,
                    "API_HEADER_READ_TIMEOUT_MS",
                    5000,
                    100..=600_000,
                )?,
                write_timeout: ms(
                    "--write-timeout-ms",
                    args.write_timeout_ms,
                    "API_WRITE_TIMEOUT_MS",
                    5000,
                    100..=600_000,
                )?,
                max_connection_age: ms(
                    "--max-connection-age-ms",
                    args.max_connection_age_ms,
                    "API_MAX_CONNECTION_AGE_MS",
                    60_000,
                    1000..=86_400_000,
                )?,
                handler_timeout: deadline,
                max_head_bytes: limits::MAX_HEAD_BYTES,
                max_target_bytes: MAX_URI_BYTES,
            },
            budget: caps.budget,
            process: ProcessConfig::from_flags(
                "API",
                args.shutdown_delay_ms,
                args.drain_timeout_ms,
                args.worker_threads,
            )?,
            check_only: args.check_config,
        })
    }
}
