//! The `Compute` RPC. Requests carry two fixed-width integers, so there is
//! nothing to validate and nothing that can fail: every call is answered.

use std::sync::Arc;

use gcd_proto::{GcdRequest, GcdResponse, gcd_service_server::GcdService};
use ops::metrics::{Counter, Exposition};
use tonic::{Request, Response, Status};

use crate::compute::gcd;

/// What this process has served, exported on the admin port.
#[derive(Debug, Default)]
pub struct GcdMetrics {
    pub compute_requests: Counter,
}

impl ops::admin::Metrics for GcdMetrics {
    fn render(&self, out: &mut Exposition) {
        out.counter(
            "gcd_compute_requests_total",
            "Compute calls served by this process.",
            self.compute_requests.get(),
        );
    }
}

#[derive(Debug, Clone, Default)]
pub struct Gcd {
    metrics: Arc<GcdMetrics>,
}

impl Gcd {
    pub fn new(metrics: Arc<GcdMetrics>) -> Self {
        Self { metrics }
    }
}

#[tonic::async_trait]
impl GcdService for Gcd {
    async fn compute(&self, request: Request<GcdRequest>) -> Result<Response<GcdResponse>, Status> {
        let GcdRequest { a, b } = request.into_inner();
        self.metrics.compute_requests.inc();
        Ok(Response::new(GcdResponse { result: gcd(a, b) }))
    }
}
