//! Binds both ports, then serves until the [`Lifecycle`] says stop.
//!
//! Binding is separate from running so that callers (tests, `main`) learn
//! the real addresses, including ephemeral ports, before traffic starts.

use std::{net::SocketAddr, sync::Arc};

use runtime::{Lifecycle, Phase};
use tokio::net::TcpListener;

use crate::{
    Config, MoreRoutes, limits,
    service::{GcdMetrics, routes},
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] serving::BindError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A gcd process with its ports bound.
pub struct Server {
    config: Config,
    grpc: TcpListener,
    admin: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let (grpc, grpc_addr) = serving::bind(config.listen, limits::SOCKET_BUFFERS)?;
        let (admin, admin_addr) =
            serving::bind(config.admin_listen, serving::admin::SOCKET_BUFFERS)?;
        Ok(Self {
            config,
            grpc,
            admin,
            grpc_addr,
            admin_addr,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves gcd's methods and `more` until `lifecycle` reaches
    /// [`Phase::Stopping`] and in-flight calls have finished, or the drain
    /// timeout has passed.
    pub async fn run(self, lifecycle: Lifecycle, more: MoreRoutes) -> Result<(), ServerError> {
        let metrics = Arc::new(GcdMetrics::default());
        let (routes, health) = more(routes(metrics.clone())?).build().await;
        let port_metrics = routes.metrics();

        // Probes and clients see NOT_SERVING as soon as draining starts.
        let draining = lifecycle.clone();
        tokio::spawn(async move {
            draining.reached(Phase::Draining).await;
            health.not_serving().await;
        });

        self.config.budget.log("gcd");
        tracing::info!(
            addr = %self.grpc_addr,
            admin_addr = %self.admin_addr,
            max_connections = self.config.grpc.max_connections,
            max_calls = self.config.grpc.max_calls,
            "gcd listening"
        );
        let grpc = serving::grpc::serve(
            self.grpc,
            routes,
            self.config.grpc,
            lifecycle.reached(Phase::Stopping),
        );
        let admin = serving::http1::serve(
            self.admin,
            serving::admin::router(lifecycle.clone(), Arc::new((metrics, port_metrics))),
            serving::admin::LIMITS,
            lifecycle.reached(Phase::Stopping),
        );
        lifecycle
            .drain(
                async { tokio::join!(grpc, admin) },
                self.config.process.drain_timeout,
            )
            .await;
        Ok(())
    }
}
