//! The one start-up path of every binary: read its flags, raise the
//! open-file limit, start logging, work out its configuration, answer
//! `--check-config`, or build the runtime, wire signals to the
//! [`Lifecycle`], run the service, and turn the outcome into an exit code
//! (0 after a clean drain, 1 if start-up or serving fails, 2 for bad
//! configuration). A binary brings only what is its own: its flag table,
//! how its configuration follows from them, and what it serves.

use std::{fmt::Display, future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use crate::{
    ConfigError, Lifecycle,
    budget::Budget,
    config::{Args, Command, Flag, parses},
};

/// Most Tokio worker threads a process may be told to start: more than a
/// Pi has cores many times over, far below what would exhaust memory.
pub const MAX_WORKER_THREADS: usize = 64;
/// Longest shutdown delay or drain timeout: Kubernetes' grace period is
/// usually 30 s, and nothing here needs minutes.
pub const MAX_SHUTDOWN_MS: u64 = 300_000;

/// `--shutdown-delay-ms`, read into [`ProcessConfig::shutdown_delay`].
pub const fn shutdown_delay_ms(env: &'static str) -> Flag {
    Flag::value(
        "--shutdown-delay-ms",
        env,
        parses::<u64>,
        "after SIGTERM, how long to keep serving while reporting not ready (/readyz 503; \
         gRPC health NOT_SERVING), so clients and load balancers stop picking this pod",
    )
    .range(0, MAX_SHUTDOWN_MS)
    .default("5000")
}

/// `--drain-timeout-ms`, read into [`ProcessConfig::drain_timeout`].
pub const fn drain_timeout_ms(env: &'static str) -> Flag {
    Flag::value(
        "--drain-timeout-ms",
        env,
        parses::<u64>,
        "after the shutdown delay, how long in-flight requests may take before the process \
         exits anyway",
    )
    .range(0, MAX_SHUTDOWN_MS)
    .default("15000")
}

/// `--worker-threads`, read into [`ProcessConfig::worker_threads`].
pub const fn worker_threads(env: &'static str) -> Flag {
    // One thread by default: measured on 2 cores (results/bench.md), it
    // costs ~40% less CPU per request than a worker per core, and a pod
    // limited to one CPU or less cannot use more anyway.
    Flag::value(
        "--worker-threads",
        env,
        parses::<usize>,
        "worker threads (Tokio): 1 serves everything on one thread, the least CPU per \
         request; 0 means one per CPU core",
    )
    .range(0, MAX_WORKER_THREADS as u64)
    .default("1")
}

/// How a process starts and stops; both binaries take the same flags for
/// it, with their own environment prefix.
#[derive(Debug, Clone, Copy)]
pub struct ProcessConfig {
    /// After the first signal, how long to keep serving while draining.
    pub shutdown_delay: Duration,
    /// After the delay, how long in-flight work may take.
    pub drain_timeout: Duration,
    /// Tokio worker threads: 1 runs every task on the main thread (a
    /// current-thread runtime), 0 means one per core.
    pub worker_threads: usize,
}

impl ProcessConfig {
    /// From `--shutdown-delay-ms`, `--drain-timeout-ms` and
    /// `--worker-threads` (or their variables, or defaults).
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        Ok(Self {
            shutdown_delay: args.millis("--shutdown-delay-ms")?,
            drain_timeout: args.millis("--drain-timeout-ms")?,
            worker_threads: args.number("--worker-threads")?,
        })
    }
}

/// What every binary's configuration holds beside its own settings: what
/// the flags every binary takes say, and the memory budget of its caps.
#[derive(Debug, Clone)]
pub struct Common {
    pub admin_listen: SocketAddr,
    /// Worst-case memory of the binary's caps, against the memory limit.
    pub budget: Budget,
    pub process: ProcessConfig,
    /// `--check-config`: report and exit instead of serving.
    pub check_only: bool,
}

impl Common {
    /// From the flags every binary takes, and the binary's `budget`.
    pub fn from_args(args: &Args, budget: Budget) -> Result<Self, ConfigError> {
        Ok(Self {
            admin_listen: args.value("--admin-listen")?,
            budget,
            process: ProcessConfig::from_args(args)?,
            check_only: args.switch("--check-config"),
        })
    }
}

/// The whole of a binary after its allocator: flags from `command`,
/// configuration from `configure` (given the flags and the open-file
/// limit), of which `common` is what every binary has, `--check-config`,
/// then `serve` until the [`Lifecycle`] stops.
pub fn main<C, Fut, E>(
    command: &Command,
    configure: impl FnOnce(Args, u64) -> Result<C, ConfigError>,
    common: fn(&C) -> &Common,
    serve: impl FnOnce(C, Lifecycle) -> Fut,
) -> ExitCode
where
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let args = match Args::from_command_line(command) {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    telemetry::logging::init();
    let open_files = crate::budget::raise_open_file_limit();
    let config = match configure(args, open_files) {
        Ok(config) => config,
        Err(err) => return invalid_config(&err),
    };
    let common = common(&config);
    if common.check_only {
        return report_budget(command.name, &common.budget);
    }
    run(command.name, common.process, |lifecycle| {
        serve(config, lifecycle)
    })
}

/// Reports a configuration error; exit code 2, as for a usage error.
fn invalid_config(err: &ConfigError) -> ExitCode {
    tracing::error!("{err}");
    ExitCode::from(2)
}

/// For `--check-config`: prints the budget; the configuration was valid
/// (it got this far), so exit 0.
fn report_budget(name: &str, budget: &Budget) -> ExitCode {
    use std::io::Write;
    // A closed pipe (`--check-config | head`) is not worth a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{name}: configuration is valid; memory budget:\n{budget}"
    );
    ExitCode::SUCCESS
}

/// Runs `service` on a Tokio runtime until it returns, with
/// SIGTERM, SIGINT and SIGHUP driving its [`Lifecycle`] (see
/// [`Lifecycle::on_signals`]).
pub fn run<F, Fut, E>(name: &str, process: ProcessConfig, service: F) -> ExitCode
where
    F: FnOnce(Lifecycle) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut builder = if process.worker_threads == 1 {
        // Every task on this thread: no hand-offs or wake-ups between
        // threads, no lock contention in h2 or the allocator.
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        // 0: one per core, which Tokio reads from the CPUs this process
        // may run on.
        if process.worker_threads > 0 {
            builder.worker_threads(process.worker_threads);
        }
        builder
    };
    builder.enable_all();
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("{name}: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let lifecycle = Lifecycle::new();
        match lifecycle.on_signals(process.shutdown_delay) {
            Ok(signals) => drop(tokio::spawn(signals)),
            Err(err) => {
                tracing::error!("{name}: cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
        }
        match service(lifecycle).await {
            Ok(()) => {
                tracing::info!("{name} stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!("{name}: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
