//! `api` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

use api::{Config, Server};

fn main() -> ExitCode {
    let args: api::config::Args = argh::from_env();
    ops::logging::init();
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(2);
        }
    };
    ops::process::run(
        "api",
        config.worker_threads,
        config.shutdown_delay,
        |lifecycle| async move { Server::bind(config).await?.run(lifecycle).await },
    )
}
