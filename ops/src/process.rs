//! What both `main` functions do after parsing flags: build the runtime,
//! wire signals to the [`Lifecycle`], run the service, and turn the outcome
//! into an exit code (0 after a clean drain, 1 if start-up or serving fails).

use std::{fmt::Display, future::Future, process::ExitCode, time::Duration};

use crate::Lifecycle;

/// Runs `service` on a multi-threaded runtime with `worker_threads` workers
/// (0: one per core) until it returns.
pub fn run<F, Fut, E>(
    name: &str,
    worker_threads: usize,
    shutdown_delay: Duration,
    service: F,
) -> ExitCode
where
    F: FnOnce(Lifecycle) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("{name}: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let lifecycle = Lifecycle::new();
        match lifecycle.on_signals(shutdown_delay) {
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
