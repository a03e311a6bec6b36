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
use serving::grpc;

use crate::limits;

/// gRPC service computing greatest common divisors (pb.GCDService/Compute),
/// with grpc.health.v1 health checks and server reflection on the same port,
/// and /healthz, /readyz and /metrics on the admin port. Every flag falls
/// back to the environment variable named in its description; numbers must
/// lie in the range shown. Connection and call caps not set are derived
/// from the memory limit (see --memory-limit). Logs go to stdout; RUST_LOG
/// sets the level (error, warn, info, debug, trace).
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// gRPC address to listen on [env GCD_LISTEN, default 0.0.0.0:3000]
    #[argh(option)]
    pub listen: Option<SocketAddr>,

    /// admin HTTP address for /healthz, /readyz and /metrics [env GCD_ADMIN_LISTEN, default 0.0.0.0:9090]
    #[argh(option)]
    pub admin_listen: Option<SocketAddr>,

    /// memory the process may use, e.g. 32Mi; the caps below are derived from it [env GCD_MEMORY_LIMIT, default: the cgroup's limit, else none]
    #[argh(option)]
    pub memory_limit: Option<ByteSize>,

    /// most open gRPC connections; at the cap a new one takes the place of the least useful (no call yet, else idle, else least recently active) [env GCD_MAX_CONNECTIONS, 1..=65536, default: what the memory limit allows, at most 1024]
    #[argh(option)]
    pub max_connections: Option<usize>,

    /// most gRPC calls open at once on the port; more are answered RESOURCE_EXHAUSTED [env GCD_MAX_CONCURRENT_CALLS, 1..=65536, default: what the memory limit allows, at most 1024]
    #[argh(option)]
    pub max_concurrent_calls: Option<usize>,

    /// most concurrent gRPC calls on one connection [env GCD_MAX_CONCURRENT_STREAMS, 1..=1024, default 256]
    #[argh(option)]
    pub max_concurrent_streams: Option<u32>,

    /// a new connection must start a call within this time [env GCD_HANDSHAKE_TIMEOUT_MS, 100..=60000, default 5000]
    #[argh(option)]
    pub handshake_timeout_ms: Option<u64>,

    /// a connection with no call open for this long is closed (GOAWAY) [env GCD_IDLE_TIMEOUT_MS, 1000..=3600000, default 10000]
    #[argh(option)]
    pub idle_timeout_ms: Option<u64>,

    /// longest a call may take, request and response included (health Watch streams excepted) [env GCD_CALL_TIMEOUT_MS, 100..=600000, default 5000]
    #[argh(option)]
    pub call_timeout_ms: Option<u64>,

    /// a client that does not read what we send for this long is disconnected [env GCD_WRITE_TIMEOUT_MS, 100..=600000, default 5000]
    #[argh(option)]
    pub write_timeout_ms: Option<u64>,

    /// after SIGTERM, how long to keep serving while reporting NOT_SERVING, so clients stop picking this pod [env GCD_SHUTDOWN_DELAY_MS, 0..=300000, default 5000]
    #[argh(option)]
    pub shutdown_delay_ms: Option<u64>,

    /// after the shutdown delay, how long in-flight calls may take before the process exits anyway [env GCD_DRAIN_TIMEOUT_MS, 0..=300000, default 15000]
    #[argh(option)]
    pub drain_timeout_ms: Option<u64>,

    /// worker threads (Tokio): 1 serves everything on one thread, the least CPU per request; 0 means one per CPU core [env GCD_WORKER_THREADS, 0..=64, default 1]
    #[argh(option)]
    pub worker_threads: Option<usize>,

    /// check the configuration, print the memory budget and exit (0 if it fits)
    #[argh(switch)]
    pub check_config: bool,
}

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
    pub admin_listen: SocketAddr,
    pub grpc: grpc::Limits,
    /// Worst-case memory of the caps above, against the memory limit.
    pub budget: Budget,
    pub process: ProcessConfig,
    pub check_only: bool,
}

impl Config {
    /// From flags and environment; `open_files` is the process's limit on
    /// file descriptors, which the connection cap must also fit.
    /// `more` adds methods to the gRPC port's own ([`crate::MoreRoutes`]),
    /// which the memory budget counts.
    pub fn from_args(
        args: Args,
        open_files: u64,
        more: crate::MoreRoutes,
    ) -> Result<Self, ConfigError> {
        let ms = |name, flag, var, default_ms, range| {
            ranged_millis(name, flag, var, Duration::from_millis(default_ms), range)
        };
        let limit = MemoryLimit::detect(optional(args.memory_limit, "GCD_MEMORY_LIMIT")?);
        let caps = limits::plan(
            limit,
            optional_ranged(
                "--max-connections",
                args.max_connections,
                "GCD_MAX_CONNECTIONS",
                1..=65536,
            )?,
            optional_ranged(
                "--max-concurrent-calls",
                args.max_concurrent_calls,
                "GCD_MAX_CONCURRENT_CALLS",
                1..=65536,
            )?,
            open_files,
            &methods(more)?,
        )?;
        Ok(Self {
            listen: flag_or_env(args.listen, "GCD_LISTEN", ([0, 0, 0, 0], 3000).into())?,
            admin_listen: flag_or_env(
                args.admin_listen,
                "GCD_ADMIN_LISTEN",
                ([0, 0, 0, 0], 9090).into(),
            )?,
            grpc: grpc::Limits {
                max_connections: caps.max_connections,
                max_calls: caps.max_calls,
                max_streams_per_connection: ranged(
                    "--max-concurrent-streams",
                    args.max_concurrent_streams,
                    "GCD_MAX_CONCURRENT_STREAMS",
                    256,
                    1..=1024,
                )?,
                handshake_timeout: ms(
                    "--handshake-timeout-ms",
                    args.handshake_timeout_ms,
                    "GCD_HANDSHAKE_TIMEOUT_MS",
                    5000,
                    100..=60_000,
                )?,
                idle_timeout: ms(
                    "--idle-timeout-ms",
                    args.idle_timeout_ms,
                    "GCD_IDLE_TIMEOUT_MS",
                    10_000,
                    1000..=3_600_000,
                )?,
                call_timeout: ms(
                    "--call-timeout-ms",
                    args.call_timeout_ms,
                    "GCD_CALL_TIMEOUT_MS",
                    5000,
                    100..=600_000,
                )?,
                write_timeout: ms(
                    "--write-timeout-ms",
                    args.write_timeout_ms,
                    "GCD_WRITE_TIMEOUT_MS",
                    5000,
                    100..=600_000,
                )?,
                keepalive_interval: limits::KEEPALIVE_INTERVAL,
                keepalive_timeout: limits::KEEPALIVE_TIMEOUT,
            },
            budget: caps.budget,
            process: ProcessConfig::from_flags(
                "GCD",
                args.shutdown_delay_ms,
                args.drain_timeout_ms,
                args.worker_threads,
            )?,
            check_only: args.check_config,
        })
    }
}
