//! The admin port: liveness, readiness and Prometheus metrics, kept off the
//! public port so the NodePort never publishes them.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{Lifecycle, metrics::Exposition};

/// Something that can write its metrics in Prometheus text format.
pub trait Metrics: Send + Sync + 'static {
    fn render(&self, out: &mut Exposition);
}

#[derive(Clone)]
struct AdminState {
    lifecycle: Lifecycle,
    metrics: Arc<dyn Metrics>,
}

/// `/healthz`: 200 while the process runs. `/readyz`: 200 while serving,
/// 503 once draining. `/metrics`: Prometheus text.
pub fn router(lifecycle: Lifecycle, metrics: Arc<dyn Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { lifecycle, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.lifecycle.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    let mut out = Exposition::default();
    state.metrics.render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out.into_string(),
    )
}
