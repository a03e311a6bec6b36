//! The `Compute` RPC: one registration on the gRPC port's fast lane
//! ([`serving::routes`]), written as a handler from `GCDRequest` to
//! `GCDResponse`. Two fixed-width integers: nothing to validate and
//! nothing that can fail.

use std::{future::Future, sync::Arc};

use gcd_proto::{GcdRequest, GcdResponse};
use serving::routes::Unary;
use telemetry::metrics::{Counter, Exposition};
use tonic::Status;

use crate::compute::gcd;

/// What this process has served, exported on the admin port.
#[derive(Debug, Default)]
pub struct GcdMetrics {
    pub compute_requests: Counter,
}

impl serving::admin::Metrics for GcdMetrics {
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
