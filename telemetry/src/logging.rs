//! One line per event on stdout, where container runtimes collect logs.
//!
//! The level comes from `RUST_LOG` as a single level (`error`, `warn`,
//! `info`, `debug`, `trace`; default `info`). Per-module filters would pull
//! in a regex engine, a large share of a binary this size.

use tracing_subscriber::filter::LevelFilter;

/// Installs the global subscriber. Call once, at start-up.
pub fn init() {
    let (level, complaint) = match std::env::var("RUST_LOG") {
        Ok(value) => match value.trim().parse::<LevelFilter>() {
            Ok(level) => (level, None),
            Err(_) => (LevelFilter::INFO, Some(value)),
        },
        Err(_) => (LevelFilter::INFO, None),
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .init();
    if let Some(value) = complaint {
        tracing::warn!(
            rust_log = %value,
            "RUST_LOG is not one of error, warn, info, debug, trace, off; using info"
        );
    }
}
