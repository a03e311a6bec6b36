//! Command-line flags, each with an environment-variable fallback so a
//! Kubernetes manifest can set it with `env:`.

use std::net::SocketAddr;

use argh::FromArgs;
use ops::{
    config::{ConfigError, flag_or_env, non_zero},
    process::ProcessConfig,
};

/// gRPC service computing greatest common divisors (pb.GCDService/Compute),
/// with grpc.health.v1 health checks and server reflection on the same port,
/// and /healthz, /readyz and /metrics on the admin port. Every flag falls
/// back to the environment variable named in its description. Logs go to
/// stdout; RUST_LOG sets the level (error, warn, info, debug, trace).
#[derive(FromArgs, Debug, Default)]
pub struct Args {
    /// gRPC address to listen on [env GCD_LISTEN, default 0.0.0.0:3000]
    #[argh(option)]
    pub listen: Option<SocketAddr>,

    /// admin HTTP address for /healthz, /readyz and /metrics [env GCD_ADMIN_LISTEN, default 0.0.0.0:9090]
    #[argh(option)]
    pub admin_listen: Option<SocketAddr>,

    /// after SIGTERM, how long to keep serving while reporting NOT_SERVING, so clients stop picking this pod [env GCD_SHUTDOWN_DELAY_MS, default 5000]
    #[argh(option)]
    pub shutdown_delay_ms: Option<u64>,

    /// after the shutdown delay, how long in-flight calls may take before the process exits anyway [env GCD_DRAIN_TIMEOUT_MS, default 15000]
    #[argh(option)]
    pub drain_timeout_ms: Option<u64>,

    /// most concurrent gRPC calls on one connection [env GCD_MAX_CONCURRENT_STREAMS, default 256]
    #[argh(option)]
    pub max_concurrent_streams: Option<u32>,

    /// worker threads (Tokio): 1 serves everything on one thread, the least CPU per request; 0 means one per CPU core [env GCD_WORKER_THREADS, default 1]
    #[argh(option)]
    pub worker_threads: Option<usize>,
}

/// Validated configuration of a gcd process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_concurrent_streams: u32,
    pub process: ProcessConfig,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: flag_or_env(args.listen, "GCD_LISTEN", ([0, 0, 0, 0], 3000).into())?,
            admin_listen: flag_or_env(
                args.admin_listen,
                "GCD_ADMIN_LISTEN",
                ([0, 0, 0, 0], 9090).into(),
            )?,
            max_concurrent_streams: non_zero(
                "--max-concurrent-streams",
                flag_or_env(
                    args.max_concurrent_streams,
                    "GCD_MAX_CONCURRENT_STREAMS",
                    256,
                )?,
            )?,
            process: ProcessConfig::from_flags(
                "GCD",
                args.shutdown_delay_ms,
                args.drain_timeout_ms,
                args.worker_threads,
            )?,
        })
    }
}
