//! What the api exports on its admin port: requests by route and status,
//! upstream call attempts by outcome, retries, request latency and the
//! number of gcd replicas being balanced over. Label values come from fixed
//! tables (each route's label is registered when the routes are built), so
//! recording is one atomic add and the series count is bounded no matter
//! what clients send.

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use telemetry::metrics::{Counter, Exposition, Histogram, LATENCY_BOUNDS, Metrics};

/// The label of requests that match no route.
pub const UNMATCHED: &str = "unmatched";

/// One route's requests by status, under its label: a handle held by the
/// route, so recording a request looks nothing up.
#[derive(Debug, Clone)]
pub struct Route(Arc<RouteRequests>);

#[derive(Debug)]
struct RouteRequests {
    label: &'static str,
    by_status: [Counter; STATUSES.len()],
}

/// Every status the api answers with; anything else counts as "other".
const STATUSES: [&str; 9] = [
    "200", "400", "404", "405", "414", "502", "503", "504", "other",
];

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        400 => 1,
        404 => 2,
        405 => 3,
        414 => 4,
        502 => 5,
        503 => 6,
        504 => 7,
        _ => 8,
    }
}

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Unavailable = 1,
    DeadlineExceeded = 2,
    Error = 3,
}

const OUTCOMES: [&str; 4] = ["ok", "unavailable", "deadline_exceeded", "error"];

#[derive(Debug)]
pub struct ApiMetrics {
    /// In registration order; only rendering locks it.
    routes: Mutex<Vec<Route>>,
    latency: Histogram,
    upstream: [Counter; OUTCOMES.len()],
    pub upstream_retries: Counter,
    pub replicas: AtomicU64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            routes: Mutex::new(Vec::new()),
            latency: Histogram::new(LATENCY_BOUNDS),
            upstream: Default::default(),
            upstream_retries: Counter::default(),
            replicas: AtomicU64::new(0),
        }
    }
}

impl ApiMetrics {
    /// The route labelled `label`, registered on first use (the same handle
    /// for the same label).
    pub fn route(&self, label: &'static str) -> Route {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = routes.iter().find(|route| route.0.label == label) {
            return route.clone();
        }
        let route = Route(Arc::new(RouteRequests {
            label,
            by_status: Default::default(),
        }));
        routes.push(route.clone());
        route
    }

    pub fn record_request(&self, route: &Route, status: u16, elapsed: Duration) {
        route.0.by_status[status_index(status)].inc();
        self.latency.observe(elapsed);
    }

    pub fn record_upstream(&self, outcome: Outcome) {
        self.upstream[outcome as usize].inc();
    }
}

impl Metrics for ApiMetrics {
    fn render(&self, out: &mut Exposition) {
        let name = "api_http_requests_total";
        out.family(
            name,
            "counter",
            "HTTP requests answered, by route and status.",
        );
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for Route(route) in routes {
            for (index, status) in STATUSES.iter().enumerate() {
                let count = route.by_status[index].get();
                if count > 0 {
                    out.sample(name, &[("route", route.label), ("status", status)], count);
                }
            }
        }
        out.histogram(
            "api_http_request_duration_seconds",
            "Time from request to response, all routes.",
            &self.latency,
        );
        let name = "api_upstream_calls_total";
        out.family(name, "counter", "gcd call attempts, by outcome.");
        for (index, outcome) in OUTCOMES.iter().enumerate() {
            out.sample(name, &[("outcome", outcome)], self.upstream[index].get());
        }
        out.counter(
            "api_upstream_retries_total",
            "gcd calls retried once: on another replica, or on the only one when the call never reached it.",
            self.upstream_retries.get(),
        );
        out.gauge(
            "api_gcd_replicas",
            "gcd replica addresses currently balanced over.",
            self.replicas.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}
