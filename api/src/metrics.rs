//! What the api exports on its admin port: requests by route and status,
//! upstream call attempts by outcome, retries, request latency and the
//! number of gcd replicas being balanced over. Label values come from fixed
//! tables, so recording is one atomic add and the series count is bounded
//! no matter what clients send.

use std::{sync::atomic::AtomicU64, time::Duration};

use ops::metrics::{Counter, Exposition, Histogram, LATENCY_BOUNDS};

/// Route labels: the one real route, and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Gcd = 0,
    Unmatched = 1,
}

const ROUTES: [(Route, &str); 2] = [
    (Route::Gcd, "/gcd/{a}/{b}"),
    (Route::Unmatched, "unmatched"),
];

/// Every status the api answers with; anything else counts as "other".
const STATUSES: [&str; 9] = [
    "200", "400", "404", "405", "414", "502", "503", "504", "other",
];

fn status_slot(status: u16) -> usize {
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
    requests: [[Counter; STATUSES.len()]; ROUTES.len()],
    latency: Histogram,
    upstream: [Counter; OUTCOMES.len()],
    pub upstream_retries: Counter,
    pub replicas: AtomicU64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            latency: Histogram::new(LATENCY_BOUNDS),
            upstream: Default::default(),
            upstream_retries: Counter::default(),
            replicas: AtomicU64::new(0),
        }
    }
}

impl ApiMetrics {
    pub fn record_request(&self, route: Route, status: u16, elapsed: Duration) {
        self.requests[route as usize][status_slot(status)].inc();
        self.latency.observe(elapsed);
    }

    pub fn record_upstream(&self, outcome: Outcome) {
        self.upstream[outcome as usize].inc();
    }
}

impl ops::admin::Metrics for ApiMetrics {
    fn render(&self, out: &mut Exposition) {
        let name = "api_http_requests_total";
        out.family(
            name,
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for (route, route_label) in ROUTES {
            for (slot, status) in STATUSES.iter().enumerate() {
                let count = self.requests[route as usize][slot].get();
                if count > 0 {
                    out.sample(name, &[("route", route_label), ("status", status)], count);
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
        for (slot, outcome) in OUTCOMES.iter().enumerate() {
            out.sample(name, &[("outcome", outcome)], self.upstream[slot].get());
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
