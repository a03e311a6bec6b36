//! What both `main` functions do after parsing flags: build the runtime,
//! wire signals to the [`Lifecycle`], run the service, and turn the outcome
//! into an exit code (0 after a clean drain, 1 if start-up or serving fails,
//! 2 for bad configuration).

use std::{fmt::Display, future::Future, process::ExitCode, time::Duration};

use crate::{
    ConfigError, Lifecycle,
    config::{ranged, ranged_millis},
};

/// Most Tokio worker threads a process may be told to start: more than a
/// Pi has cores many times over, far below what would exhaust memory.
pub const MAX_WORKER_THREADS: usize = 64;
/// Longest shutdown delay or drain timeout: Kubernetes' grace period is
/// usually 30 s, and nothing here needs minutes.
pub const MAX_SHUTDOWN_MS: u64 = 300_000;

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
    /// `--worker-threads`, falling back to `{prefix}_SHUTDOWN_DELAY_MS`,
    /// `{prefix}_DRAIN_TIMEOUT_MS` and `{prefix}_WORKER_THREADS`.
    pub fn from_flags(
        prefix: &str,
        shutdown_delay_ms: Option<u64>,
        drain_timeout_ms: Option<u64>,
        worker_threads: Option<usize>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            shutdown_delay: ranged_millis(
                "--shutdown-delay-ms",
                shutdown_delay_ms,
                &format!("{prefix}_SHUTDOWN_DELAY_MS"),
                Duration::from_secs(5),
                0..=MAX_SHUTDOWN_MS,
            )?,
            drain_timeout: ranged_millis(
                "--drain-timeout-ms",
                drain_timeout_ms,
                &format!("{prefix}_DRAIN_TIMEOUT_MS"),
                Duration::from_secs(15),
                0..=MAX_SHUTDOWN_MS,
            )?,
            // One thread by default: measured on 2 cores (results/bench.md),
            // it costs ~40% less CPU per request than a worker per core,
            // and a pod limited to one CPU or less cannot use more anyway.
            worker_threads: ranged(
                "--worker-threads",
                worker_threads,
                &format!("{prefix}_WORKER_THREADS"),
                1,
                0..=MAX_WORKER_THREADS,
            )?,
        })
    }
}

/// Reports a configuration error; exit code 2, as for a usage error.
pub fn invalid_config(err: &ConfigError) -> ExitCode {
    tracing::error!("{err}");
    ExitCode::from(2)
}

/// For `--check-config`: prints the budget; the configuration was valid
/// (it got this far), so exit 0.
pub fn report_budget(name: &str, budget: &crate::budget::Budget) -> ExitCode {
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
