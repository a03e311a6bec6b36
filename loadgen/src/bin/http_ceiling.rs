//! `http-ceiling`: the api's HTTP stack (the same accept loop, socket
//! buffers, default limits and router type) answering `GET /gcd/{a}/{b}` with a fixed body, with no gRPC
//! hop behind it. wrk against this shows the most this machine can serve, so
//! the api -> gcd figures can be read against it.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use argh::FromArgs;
use axum::{Router, http::header, routing::get};
use runtime::Phase;

/// The api's allocator, so the ceiling is measured on the same footing.
#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

/// Fixed-answer HTTP responder on the api's HTTP stack, for measuring this
/// machine's ceiling: GET /gcd/{a}/{b} always answers {"result":"6"}.
#[derive(FromArgs, Debug)]
struct Args {
    /// address to listen on; port 0 picks one and logs it [default 127.0.0.1:0]
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 0))")]
    listen: SocketAddr,

    /// worker threads (Tokio), as for api: 1 serves everything on one thread; 0 means one per CPU core [default 1]
    #[argh(option, default = "1")]
    worker_threads: usize,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    telemetry::logging::init();
    runtime::process::run(
        "http-ceiling",
        runtime::process::ProcessConfig {
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            worker_threads: args.worker_threads,
        },
        |lifecycle| async move {
            // The api's public port with its defaults (no memory limit).
            let api = api::Config::from_args(
                &runtime::config::Args::new(&api::config::COMMAND),
                u64::MAX,
            )
            .map_err(|err| err.to_string())?;
            let (listener, addr) = serving::bind(args.listen, api::limits::SOCKET_BUFFERS)
                .map_err(|err| err.to_string())?;
            tracing::info!(addr = %addr, "http-ceiling listening");
            let router = Router::new().route(
                "/gcd/{*operands}",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        "{\"result\":\"6\"}",
                    )
                }),
            );
            serving::http1::serve(
                listener,
                router,
                api.http,
                lifecycle.reached(Phase::Stopping),
            )
            .await;
            Ok::<(), String>(())
        },
    )
}
