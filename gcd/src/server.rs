//! Binds both ports, then serves until the [`Lifecycle`] says stop.
//!
//! Binding is separate from running so that callers (tests, `main`) learn
//! the real addresses, including ephemeral ports, before traffic starts.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use gcd_proto::gcd_service_server::SERVICE_NAME;
use ops::{Lifecycle, Phase, serve};
use tokio::net::TcpListener;
use tonic::codegen::{Body, BoxFuture, Bytes, Service, StdError, http};
use tonic_health::ServingStatus;

use crate::{
    Config, limits,
    service::{Compute, ComputeCall, GcdMetrics, Reply},
};

/// A `GCDRequest` is at most 22 bytes, and health and reflection requests
/// carry a service or symbol name; anything near this is not ours. The
/// same limit on every service, so no method buffers more for a client.
pub const MAX_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] serve::BindError),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Every call the gRPC port serves: `Compute` goes straight to its
/// handler, the rest (health, reflection, unknown methods, which the router
/// answers UNIMPLEMENTED) through tonic's router. The router would find a
/// generated `Compute` service too, but its path matching and the boxing of
/// each call around it cost every call (measured in results/ledger.md).
#[derive(Clone)]
struct Services {
    compute: Compute,
    others: tonic::service::Routes,
}

/// The one method that carries the traffic.
const COMPUTE_PATH: &str = "/pb.GCDService/Compute";

impl<B> Service<http::Request<B>> for Services
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Reply>;
    type Error = Infallible;
    type Future = Answer<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are always ready (they hold no connection or buffer).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() == COMPUTE_PATH {
            Answer::Compute(self.compute.call(request))
        } else {
            let answer = self.others.call(request);
            Answer::Other(Box::pin(async move {
                answer.await.map(|response| response.map(Reply::Other))
            }))
        }
    }
}

/// A call being answered: `Compute` without a box, the rest boxed.
enum Answer<B> {
    Compute(ComputeCall<B>),
    Other(BoxFuture<http::Response<Reply>, Infallible>),
}

impl<B> Future for Answer<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<http::Response<Reply>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Compute(call) => Pin::new(call).poll(cx),
            Answer::Other(answer) => answer.as_mut().poll(cx),
        }
    }
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
        let (grpc, grpc_addr) = serve::bind(config.listen, limits::SOCKET_BUFFERS)?;
        let (admin, admin_addr) = serve::bind(config.admin_listen, ops::admin::SOCKET_BUFFERS)?;
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
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        let health_service = health_service
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // Both reflection versions: grpcurl before 1.8.8, Postman, Evans,
        // grpcui and grpc-go's own client before 1.57 speak only v1alpha.
        // Each lists every service, both reflection versions included.
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
        let reflection_v1 = reflection()
            .build_v1()?
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let reflection_v1alpha = reflection()
            .build_v1alpha()?
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let compute = Compute::new(metrics.clone());
        let mut others = tonic::service::Routes::builder();
        others
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes = Services {
            compute,
            others: others.routes().prepare(),
        };

        // Probes and clients see NOT_SERVING as soon as draining starts.
        let draining = lifecycle.clone();
        tokio::spawn(async move {
            draining.reached(Phase::Draining).await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
        });

        self.config.budget.log("gcd");
        tracing::info!(
            addr = %self.grpc_addr,
            admin_addr = %self.admin_addr,
            max_connections = self.config.grpc.max_connections,
            max_calls = self.config.grpc.max_calls,
            "gcd listening"
        );
        let grpc = serve::grpc::serve(
            self.grpc,
            routes,
            self.config.grpc,
            lifecycle.reached(Phase::Stopping),
        );
        let admin = serve::http1::serve(
            self.admin,
            ops::admin::router(lifecycle.clone(), metrics),
            ops::admin::LIMITS,
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
