//! gcd's methods: the `Compute` RPC, one registration on the gRPC port's
//! fast lane ([`serving::routes`]), written as a handler from `GCDRequest`
//! to `GCDResponse` (two fixed-width integers: nothing to validate and
//! nothing that can fail), and [`routes`], every method of the port, which
//! the configuration reads to budget their messages and the server serves.

use std::{future::Future, sync::Arc};

use gcd_proto::{GcdRequest, GcdResponse};
use serving::routes::{GrpcRoutes, GrpcRoutesBuilder, Unary};
use telemetry::metrics::{Counter, Exposition, Metrics};
use tonic::Status;

use crate::compute::gcd;

/// The one method that carries the traffic.
pub const COMPUTE_PATH: &str = "/pb.GCDService/Compute";

/// Every method of gcd's gRPC port: `Compute` on the fast lane, and server
/// reflection in both versions (grpcurl before 1.8.8, Postman, Evans,
/// grpcui and grpc-go's own client before 1.57 speak only v1alpha; each
/// lists every service, both reflection versions included). The port adds
/// `grpc.health.v1.Health`, and gives every method its bounds.
pub fn routes(
    metrics: Arc<GcdMetrics>,
) -> Result<GrpcRoutesBuilder, tonic_reflection::server::Error> {
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

/// What this process has served, exported on the admin port.
#[derive(Debug, Default)]
pub struct GcdMetrics {
    pub compute_requests: Counter,
}

impl Metrics for GcdMetrics {
    fn render(&self, out: &mut Exposition) {
        out.counter(
            "gcd_compute_requests_total",
            "Compute calls served by this process.",
            self.compute_requests.get(),
        );
    }
}

/// The `Compute` method's handler.
#[derive(Debug, Clone, Default)]
pub struct Compute {
    metrics: Arc<GcdMetrics>,
}

impl Compute {
    pub fn new(metrics: Arc<GcdMetrics>) -> Self {
        Self { metrics }
    }
}

impl Unary<GcdRequest, GcdResponse> for Compute {
    fn call(
        &self,
        GcdRequest { a, b }: GcdRequest,
    ) -> impl Future<Output = Result<GcdResponse, Status>> + Send + 'static {
        self.metrics.compute_requests.inc();
        std::future::ready(Ok(GcdResponse { result: gcd(a, b) }))
    }
}
