//! gcd's gRPC port: its methods, bound beside the admin port
//! ([`ops::admin::Ports`]) and served until the [`Lifecycle`] says stop.

use std::{net::SocketAddr, sync::Arc};

use ops::{
    Lifecycle, Phase,
    admin::Ports,
    serve,
    serve::routes::{GrpcRoutes, GrpcRoutesBuilder},
};

use crate::{
    Config, MoreRoutes, limits,
    service::{Compute, GcdMetrics},
};

/// The one method that carries the traffic.
pub const COMPUTE_PATH: &str = "/pb.GCDService/Compute";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] serve::BindError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Every method of gcd's gRPC port: `Compute` on the fast lane, and server
/// reflection in both versions (grpcurl before 1.8.8, Postman, Evans,
/// grpcui and grpc-go's own client before 1.57 speak only v1alpha; each
/// lists every service, both reflection versions included). The port adds
/// `grpc.health.v1.Health`, and gives every method its bounds.
pub fn routes(metrics: Arc<GcdMetrics>) -> Result<GrpcRoutesBuilder, ServerError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(gcd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok(GrpcRoutes::builder()
        .unary(COMPUTE_PATH, Compute::new(metrics))
        .tonic(reflection().build_v1()?)
        .tonic(reflection().build_v1alpha()?))
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
                |grpc| serve::grpc::serve(grpc, routes, config.grpc, stopping),
            )
            .await;
        Ok(())
    }
}
