//! gcd's gRPC port: its methods, bound beside the admin port
//! ([`serving::admin::Ports`]) and served until the [`Lifecycle`] says stop.

use std::{net::SocketAddr, sync::Arc};

use runtime::{Lifecycle, Phase};
use serving::admin::Ports;

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
    ports: Ports,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let ports = Ports::bind(
            config.listen,
            limits::SOCKET_BUFFERS,
            config.common.admin_listen,
        )?;
        Ok(Self { config, ports })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.ports.service_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.ports.admin_addr
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

        let Self { config, ports } = self;
        config.common.budget.log("gcd");
        tracing::info!(
            addr = %ports.service_addr,
            admin_addr = %ports.admin_addr,
            max_connections = config.grpc.max_connections,
            max_calls = config.grpc.max_calls,
            "gcd listening"
        );
        let stopping = lifecycle.reached(Phase::Stopping);
        let drain_timeout = config.common.process.drain_timeout;
        ports
            .serve(
                &lifecycle,
                Arc::new((metrics, port_metrics)),
                drain_timeout,
                |grpc| serving::grpc::serve(grpc, routes, config.grpc, stopping),
            )
            .await;
        Ok(())
    }
}
