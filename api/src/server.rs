//! The api's public port: its routes and the balancer behind them, bound
//! beside the admin port ([`serving::admin::Ports`]) and served until the
//! [`Lifecycle`] says stop.

use std::{net::SocketAddr, sync::Arc};

use runtime::{Lifecycle, Phase};
use serving::admin::Ports;
use tokio::sync::Semaphore;

use crate::{
    Config,
    balancer::{Balancer, Settings},
    limits,
    metrics::ApiMetrics,
    metrics::UNMATCHED,
    resolve::{Resolve, SystemResolver},
    routes::{AppState, Routes, gcd_routes},
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] serving::BindError),
}

/// An api process with its ports bound.
pub struct Server {
    config: Config,
    resolver: Arc<dyn Resolve>,
    ports: Ports,
}

impl Server {
    /// Binds with the system resolver.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        Self::bind_with_resolver(config, Arc::new(SystemResolver)).await
    }

    pub async fn bind_with_resolver(
        config: Config,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, ServerError> {
        let ports = Ports::bind(
            config.listen,
            limits::SOCKET_BUFFERS,
            config.common.admin_listen,
        )?;
        Ok(Self {
            config,
            resolver,
            ports,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.ports.service_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.ports.admin_addr
    }

    /// Serves the api's routes until `lifecycle` reaches
    /// [`Phase::Stopping`] and in-flight requests have finished, or the
    /// drain timeout has passed.
    pub async fn run(self, lifecycle: Lifecycle) -> Result<(), ServerError> {
        self.run_routes(lifecycle, gcd_routes).await
    }

    /// [`Server::run`], serving the routes `routes` builds on the shared
    /// state (see [`crate::routes::fallbacks`] and [`AppState::route`]).
    pub async fn run_routes(
        self,
        lifecycle: Lifecycle,
        routes: impl FnOnce(AppState) -> Routes,
    ) -> Result<(), ServerError> {
        let Self {
            config,
            resolver,
            ports,
        } = self;
        let metrics = Arc::new(ApiMetrics::default());
        let balancer = Arc::new(Balancer::new(
            config.gcd.0.clone(),
            resolver,
            Settings {
                deadline: config.deadline,
                connect_timeout: config.connect_timeout,
            },
            metrics.clone(),
        ));
        // Know the replicas before the first request, so a fresh api does
        // not answer 503 while gcd is up.
        balancer.refresh().await;
        let refresher = {
            let balancer = balancer.clone();
            tokio::spawn(async move { balancer.refresh_every(config.resolve_interval).await })
        };

        let state = AppState {
            balancer,
            metrics: metrics.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            handler_timeout: config.http.handler_timeout,
            unmatched: metrics.route(UNMATCHED),
        };
        config.common.budget.log("api");
        tracing::info!(
            addr = %ports.service_addr,
            admin_addr = %ports.admin_addr,
            gcd = ?config.gcd.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            max_connections = config.http.max_connections,
            max_in_flight = config.max_in_flight,
            "api listening"
        );
        let Routes { router, shortcut } = routes(state);
        let stopping = lifecycle.reached(Phase::Stopping);
        let drain_timeout = config.common.process.drain_timeout;
        ports
            .serve(&lifecycle, metrics, drain_timeout, |public| {
                serving::http1::serve_with_shortcut(public, router, shortcut, config.http, stopping)
            })
            .await;
        refresher.abort();
        Ok(())
    }
}
