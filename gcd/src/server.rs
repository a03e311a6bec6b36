//! Binds both ports, then serves until the [`Lifecycle`] says stop.
//!
//! Binding is separate from running so that callers (tests, `main`) learn
//! the real addresses, including ephemeral ports, before traffic starts.

use std::{net::SocketAddr, sync::Arc};

use gcd_proto::gcd_service_server::GcdServiceServer;
use ops::{Lifecycle, Phase};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::{
    Config,
    service::{Gcd, GcdMetrics},
};

/// A `GCDRequest` is at most 22 bytes; anything near this is not ours.
const MAX_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] ops::http::BindError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
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
        let (grpc, grpc_addr) = ops::http::bind(config.listen).await?;
        let (admin, admin_addr) = ops::http::bind(config.admin_listen).await?;
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

    /// Serves until `lifecycle` reaches [`Phase::Stopping`] and in-flight
    /// calls have finished, or the drain timeout has passed.
    pub async fn run(self, lifecycle: Lifecycle) -> Result<(), ServerError> {
        let metrics = Arc::new(GcdMetrics::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<GcdServiceServer<Gcd>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(gcd_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let compute = GcdServiceServer::new(Gcd::new(metrics.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        // Probes and clients see NOT_SERVING as soon as draining starts.
        let draining = lifecycle.clone();
        tokio::spawn(async move {
            draining.reached(Phase::Draining).await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health.set_not_serving::<GcdServiceServer<Gcd>>().await;
        });

        tracing::info!(
            addr = %self.grpc_addr,
            admin_addr = %self.admin_addr,
            "gcd listening"
        );
        let incoming = TcpIncoming::from(self.grpc).with_nodelay(Some(true));
        let grpc = tonic::transport::Server::builder()
            .max_concurrent_streams(self.config.max_concurrent_streams)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(compute)
            .serve_with_incoming_shutdown(incoming, lifecycle.reached(Phase::Stopping));
        let admin = ops::http::serve(
            self.admin,
            ops::admin::router(lifecycle.clone(), metrics),
            ops::http::Limits::default(),
            lifecycle.reached(Phase::Stopping),
        );

        let served = lifecycle
            .drain(
                async { tokio::join!(grpc, admin).0 },
                self.config.process.drain_timeout,
            )
            .await;
        match served {
            Some(result) => result.map_err(ServerError::from),
            None => Ok(()),
        }
    }
}
