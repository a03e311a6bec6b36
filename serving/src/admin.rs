//! The admin port: liveness, readiness and Prometheus metrics, kept off the
//! public port so the NodePort never publishes them.
//!
//! Its only clients are the kubelet's probes (a new connection each) and a
//! Prometheus scraper, so its caps are small and fixed ([`LIMITS`]) and a
//! client that holds admin connections cannot take memory from the service
//! port, or its slots.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use tokio::net::TcpListener;

use runtime::{
    ConfigError, Lifecycle, Phase,
    budget::{Budget, MemoryLimit},
};
use telemetry::metrics::{Exposition, Metrics};

use crate::{BindError, SocketBuffers, http1};

/// One admin connection at its worst: an 8 KiB request head, hyper's
/// buffers and the task.
pub const CONNECTION_BYTES: u64 = 24 * 1024;

/// Kernel buffers of each admin connection: one small request, one reply.
pub const SOCKET_BUFFERS: SocketBuffers = SocketBuffers {
    receive: 4 * 1024,
    send: 4 * 1024,
};

/// What a process's service port needs of the open-file limit.
pub struct OpenFiles {
    /// The flag that caps the service port's connections, for errors.
    pub flag: &'static str,
    /// Descriptors for everything but client connections (listeners,
    /// upstream connections, the runtime's own).
    pub reserved: u64,
    /// Fewest connections worth starting with, when the flag is not set.
    pub min_connections: u64,
}

/// How every process's plan starts, whatever it serves: a budget holding
/// its `baseline` and its admin port, and the room the open-file limit
/// leaves for the service port's `connections` (the flag's value, if set)
/// after the admin port's and the `reserved` ones (see
/// [`runtime::budget::open_file_room`]).
pub fn process_budget(
    limit: Option<MemoryLimit>,
    baseline: u64,
    files: &OpenFiles,
    connections: Option<usize>,
    open_files: u64,
) -> Result<(Budget, u64), ConfigError> {
    let room = runtime::budget::open_file_room(
        files.flag,
        connections,
        open_files,
        LIMITS.max_connections as u64 + files.reserved,
        files.min_connections,
    )?;
    let mut budget = Budget::new(limit);
    budget.add("process baseline", 1, baseline);
    budget.add(
        "admin connections",
        LIMITS.max_connections as u64,
        CONNECTION_BYTES + SOCKET_BUFFERS.worst_case_bytes(),
    );
    Ok((budget, room))
}

/// Bounds of an admin port: a few connections, short timeouts, small heads.
pub const LIMITS: http1::Limits = http1::Limits {
    max_connections: 16,
    header_read_timeout: Duration::from_secs(2),
    write_timeout: Duration::from_secs(2),
    max_connection_age: Duration::from_secs(60),
    handler_timeout: Duration::from_secs(1),
    // hyper's smallest read buffer; a probe's head is under 200 bytes.
    max_head_bytes: 8 * 1024,
    max_target_bytes: 1024,
};

/// A process's two ports, bound: its service port and its admin port.
/// Binding comes before serving so that callers (tests, `main`) learn the
/// real addresses, ephemeral ports included, before traffic starts.
pub struct Ports {
    pub service: TcpListener,
    pub admin: TcpListener,
    pub service_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl Ports {
    /// Binds `service`, whose accepted sockets get `buffers`, and `admin`.
    pub fn bind(
        service: SocketAddr,
        buffers: SocketBuffers,
        admin: SocketAddr,
    ) -> Result<Self, BindError> {
        let (service, service_addr) = crate::bind(service, buffers)?;
        let (admin, admin_addr) = crate::bind(admin, SOCKET_BUFFERS)?;
        Ok(Self {
            service,
            admin,
            service_addr,
            admin_addr,
        })
    }

    /// Serves the admin port beside the service port (`service` is its
    /// loop, which must end once `lifecycle` reaches [`Phase::Stopping`]
    /// and its connections have finished), until both end, or
    /// `drain_timeout` after [`Phase::Stopping`] at the latest.
    pub async fn serve<Fut: Future<Output = ()>>(
        self,
        lifecycle: &Lifecycle,
        metrics: Arc<dyn Metrics>,
        drain_timeout: Duration,
        service: impl FnOnce(TcpListener) -> Fut,
    ) {
        let admin = http1::serve(
            self.admin,
            router(lifecycle.clone(), metrics),
            LIMITS,
            lifecycle.reached(Phase::Stopping),
        );
        let service = service(self.service);
        lifecycle
            .drain(async { tokio::join!(service, admin) }, drain_timeout)
            .await;
    }
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
        .fallback(|| async { http1::json_error(StatusCode::NOT_FOUND, "Not found") })
        .method_not_allowed_fallback(|| async {
            http1::json_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
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
