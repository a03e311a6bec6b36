//! The `api` gateway: `GET /gcd/{a}/{b}` over HTTP, answered by whichever
//! gcd replica the balancer picks.
//!
//! - [`resolve`]: turns `--gcd` targets into socket addresses; injectable,
//!   so tests can make one name stand for several replicas.
//! - [`balancer`]: keeps one lazily made connection per gcd replica,
//!   re-resolves periodically, and spreads calls round-robin with a
//!   deadline and one retry on a different replica (at most 64 replicas);
//!   a failed replica is passed over until a health check finds it serving.
//! - [`rpc`]: the unary methods called ([`rpc::Rpc`]: `Compute`, health
//!   checks, any other) and the one error type of a call, from HTTP/2 to
//!   the api's answer ([`rpc::CallError`]).
//! - [`upstream`]: a call of any method on one replica's HTTP/2
//!   connection, on the `h2` crate directly, within the streams the
//!   replica allows.
//! - [`routes`]: the public HTTP contract, its JSON errors, and the layer
//!   every route goes through (load shedding, the handler deadline, the
//!   metrics of the route's label); `/gcd` requests skip axum's router,
//!   not the layer.
//! - [`metrics`]: what the admin port exports.
//! - [`server`]: binds both ports, serves them with the bounded HTTP/1
//!   driver of [`serving`], and runs them through the shutdown
//!   choreography in [`runtime::lifecycle`].
//! - [`limits`]: the worst-case memory of each connection and request, and
//!   the connection cap derived from the memory limit.
//! - [`config`]: the api's table of flags, and the configuration read
//!   from it.
//!
//! # A route that calls another method
//!
//! Declare the method, write the handler, and serve it beside the others;
//! the route then gets load shedding, the handler deadline and its metrics
//! series, and its calls are balanced per request with deadlines, ejection
//! and (for an idempotent method) one retry on another replica:
//!
//! ```ignore
//! use api::{routes::{self, ApiError, AppState, Routes}, rpc::Rpc};
//! use axum::{extract::{Path, State}, http::StatusCode, response::Response, routing::get};
//!
//! struct Say;
//! impl Rpc for Say {
//!     const PATH: &'static str = "/pb.Echo/Say";
//!     const IDEMPOTENT: bool = true;
//!     type Request = pb::SayRequest;
//!     type Response = pb::SayResponse;
//! }
//!
//! async fn say(State(state): State<AppState>, Path(text): Path<String>) -> Result<Response, ApiError> {
//!     let started = tokio::time::Instant::now();
//!     let answer = state.balancer.call::<Say>(&pb::SayRequest { text }, started).await?;
//!     Ok(serving::http1::json(StatusCode::OK, format!("{{\"said\":{:?}}}", answer.text)))
//! }
//!
//! fn echo_routes(state: AppState) -> Routes {
//!     let router = axum::Router::new().route("/say/{text}", state.route("/say/{text}", get(say)));
//!     Routes { router: routes::fallbacks(router, state), shortcut: None }
//! }
//!
//! // main: api::main_with(echo_routes)
//! ```

pub mod balancer;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod resolve;
pub mod routes;
pub mod rpc;
pub mod server;
pub mod upstream;

use std::process::ExitCode;

pub use config::Config;
pub use server::{Server, ServerError};

/// The whole of an api binary after its allocator ([`runtime::process::main`]
/// with the api's flags and ports), serving the routes `routes` builds
/// ([`routes::gcd_routes`] for the api's own).
pub fn main_with(routes: fn(routes::AppState) -> routes::Routes) -> ExitCode {
    runtime::process::main(
        &config::COMMAND,
        |args, open_files| Config::from_args(&args, open_files),
        |config| &config.common,
        |config, lifecycle| async move {
            Server::bind(config)
                .await?
                .run_routes(lifecycle, routes)
                .await
        },
    )
}
