//! The `api` gateway: `GET /gcd/{a}/{b}` over HTTP, answered by whichever
//! gcd replica the balancer picks.
//!
//! - [`resolve`]: turns `--gcd` targets into socket addresses; injectable,
//!   so tests can make one name stand for several replicas.
//! - [`balancer`]: keeps one lazily made connection per gcd replica,
//!   re-resolves periodically, and spreads calls round-robin with a
//!   deadline and one retry on a different replica (at most 64 replicas).
//! - [`upstream`]: the `Compute` call on one replica's HTTP/2 connection,
//!   on the `h2` crate directly, its failures as gRPC statuses.
//! - [`routes`]: the public HTTP contract, its JSON errors, and the layer
//!   every route goes through (load shedding, the handler deadline, the
//!   metrics of the route's label); `/gcd` requests skip axum's router,
//!   not the layer.
//! - [`metrics`]: what the admin port exports.
//! - [`server`]: binds both ports, serves them with the bounded HTTP/1
//!   driver of [`ops::serve`], and runs them through the shutdown
//!   choreography in [`ops::lifecycle`].
//! - [`limits`]: the worst-case memory of each connection and request, and
//!   the connection cap derived from the memory limit.
//! - [`config`]: flags and environment variables, with their ranges.

pub mod balancer;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod resolve;
pub mod routes;
pub mod server;
pub mod upstream;

pub use config::Config;
pub use server::{Server, ServerError};
