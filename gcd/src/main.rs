//! `gcd` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

use gcd::{Config, Server};

fn main() -> ExitCode {
    let args: gcd::config::Args = argh::from_env();
    ops::logging::init();
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(err) => return ops::process::invalid_config(&err),
    };
    ops::process::run("gcd", config.process, |lifecycle| async move {
        Server::bind(config).await?.run(lifecycle).await
    })
}
