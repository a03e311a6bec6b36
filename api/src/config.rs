//! Command-line flags, each with an environment-variable fallback so a
//! Kubernetes manifest can set it with `env:`.

use std::{net::SocketAddr, time::Duration};

use argh::FromArgs;
use ops::{
    config::{ConfigError, flag_or_env, millis_flag_or_env, non_zero},
    process::ProcessConfig,
};

use crate::resolve::Targets;

/// HTTP gateway to the gcd service: GET /gcd/{a}/{b} answers
/// {"result":"<gcd>"}, balancing every request across all gcd replicas.
/// /healthz, /readyz and /metrics are on the admin port. Every flag falls
/// back to the environment variable named in its description. Logs go to
/// stdout; RUST_LOG sets the level (error, warn, info, debug, trace).
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// public HTTP address to listen on [env API_LISTEN, default 0.0.0.0:8080]
    #[argh(option)]
    pub listen: Option<SocketAddr>,

    /// admin HTTP address for /healthz, /readyz and /metrics [env API_ADMIN_LISTEN, default 0.0.0.0:9091]
    #[argh(option)]
    pub admin_listen: Option<SocketAddr>,

    /// gcd replicas as comma-separated host:port; each host is resolved to all its addresses, and re-resolved periodically [env GCD_ADDR, default gcd-service:3000]
    #[argh(option)]
    pub gcd: Option<String>,

    /// how often to re-resolve the gcd hosts, picking up replicas that appeared or vanished [env API_RESOLVE_INTERVAL_MS, default 5000]
    #[argh(option)]
    pub resolve_interval_ms: Option<u64>,

    /// deadline for one gcd call, retry included; past it the answer is 504 [env API_DEADLINE_MS, default 1000]
    #[argh(option)]
    pub deadline_ms: Option<u64>,

    /// timeout for opening a connection to one gcd replica [env API_CONNECT_TIMEOUT_MS, default 250]
    #[argh(option)]
    pub connect_timeout_ms: Option<u64>,

    /// most requests in flight; more are answered 503 at once instead of queueing [env API_MAX_IN_FLIGHT, default 512]
    #[argh(option)]
    pub max_in_flight: Option<usize>,

    /// most open client connections; beyond that new ones wait in the kernel backlog [env API_MAX_CONNECTIONS, default 4096]
    #[argh(option)]
    pub max_connections: Option<usize>,

    /// a client must send its request headers within this time [env API_HEADER_READ_TIMEOUT_MS, default 5000]
    #[argh(option)]
    pub header_read_timeout_ms: Option<u64>,

    /// after SIGTERM, how long to keep serving while /readyz reports 503, so load balancers stop sending [env API_SHUTDOWN_DELAY_MS, default 5000]
    #[argh(option)]
    pub shutdown_delay_ms: Option<u64>,

    /// after the shutdown delay, how long in-flight requests may take before the process exits anyway [env API_DRAIN_TIMEOUT_MS, default 15000]
    #[argh(option)]
    pub drain_timeout_ms: Option<u64>,

    /// worker threads (Tokio): 1 serves everything on one thread, the least CPU per request; 0 means one per CPU core [env API_WORKER_THREADS, default 1]
    #[argh(option)]
    pub worker_threads: Option<usize>,
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
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub process: ProcessConfig,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let gcd = flag_or_env(args.gcd, "GCD_ADDR", "gcd-service:3000".to_owned())?;
        let gcd = gcd
            .parse()
            .map_err(|err: crate::resolve::TargetError| ConfigError::Invalid {
                name: "--gcd / GCD_ADDR",
                reason: err.to_string(),
            })?;
        Ok(Self {
            listen: flag_or_env(args.listen, "API_LISTEN", ([0, 0, 0, 0], 8080).into())?,
            admin_listen: flag_or_env(
                args.admin_listen,
                "API_ADMIN_LISTEN",
                ([0, 0, 0, 0], 9091).into(),
            )?,
            gcd,
            resolve_interval: non_zero(
                "--resolve-interval-ms",
                millis_flag_or_env(
                    args.resolve_interval_ms,
                    "API_RESOLVE_INTERVAL_MS",
                    Duration::from_secs(5),
                )?,
            )?,
            deadline: non_zero(
                "--deadline-ms",
                millis_flag_or_env(args.deadline_ms, "API_DEADLINE_MS", Duration::from_secs(1))?,
            )?,
            connect_timeout: non_zero(
                "--connect-timeout-ms",
                millis_flag_or_env(
                    args.connect_timeout_ms,
                    "API_CONNECT_TIMEOUT_MS",
                    Duration::from_millis(250),
                )?,
            )?,
            max_in_flight: non_zero(
                "--max-in-flight",
                flag_or_env(args.max_in_flight, "API_MAX_IN_FLIGHT", 512)?,
            )?,
            max_connections: non_zero(
                "--max-connections",
                flag_or_env(args.max_connections, "API_MAX_CONNECTIONS", 4096)?,
            )?,
            header_read_timeout: non_zero(
                "--header-read-timeout-ms",
                millis_flag_or_env(
                    args.header_read_timeout_ms,
                    "API_HEADER_READ_TIMEOUT_MS",
                    Duration::from_secs(5),
                )?,
            )?,
            process: ProcessConfig::from_flags(
                "API",
                args.shutdown_delay_ms,
                args.drain_timeout_ms,
                args.worker_threads,
            )?,
        })
    }
}
