//! Every route, not only `/gcd`, goes through the same layer: load
//! shedding, the handler deadline and the metrics of its label.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::routes::{AppState, Routes, gcd_routes};
use axum::{Router, response::Response, routing::get};
use common::{InProcessApi, ScriptedResolver};
use testkit::{eventually, http::get as http_get, process::metric_value};

/// Handlers of `/stuck` that have started.
static STUCK: AtomicUsize = AtomicUsize::new(0);

/// A handler that never finishes.
async fn stuck() -> Response {
    STUCK.fetch_add(1, Ordering::SeqCst);
    std::future::pending().await
}

/// The api's routes and `/stuck`, added the way any route is.
fn routes(state: AppState) -> Routes {
    let mut routes = gcd_routes(state.clone());
    routes.router = Router::new()
        .route("/stuck", state.route("/stuck", get(stuck)))
        .with_state(state)
        .merge(routes.router);
    routes
}

#[test]
fn a_routed_route_is_shed_timed_out_and_counted() {
    let resolver = Arc::new(ScriptedResolver::default());
    let args = ["--deadline-ms", "1500", "--max-in-flight", "1"];
    let api = InProcessApi::start_routes(resolver, &args, routes);
    let addr = api.addr;

    let first = std::thread::spawn(move || http_get(addr, "/stuck"));
    eventually("the stuck handler to start", Duration::from_secs(5), || {
        (STUCK.load(Ordering::SeqCst) == 1).then_some(())
    });
    // The one permit is taken: every route is shed, `/gcd` and `/stuck`.
    for path in ["/stuck", "/gcd/12/18"] {
        let shed = http_get(addr, path);
        assert_eq!(shed.status, 503, "{path}");
        assert_eq!(shed.body, r#"{"error":"Server overloaded, try again"}"#);
    }
    assert_eq!(STUCK.load(Ordering::SeqCst), 1, "a shed request ran");

    // The handler never answers: the layer does, at the handler timeout.
    let timed_out = first.join().unwrap();
    assert_eq!(timed_out.status, 504);
    assert_eq!(timed_out.body, r#"{"error":"The request took too long"}"#);

    let metrics = http_get(api.admin_addr, "/metrics").body;
    let series = |route: &str, status: &str| {
        let series = format!(r#"api_http_requests_total{{route="{route}",status="{status}"}}"#);
        metric_value(&metrics, &series).unwrap_or(0)
    };
    assert_eq!(series("/stuck", "504"), 1, "{metrics}");
    assert_eq!(series("/stuck", "503"), 1, "{metrics}");
    assert_eq!(series("/gcd/{a}/{b}", "503"), 1, "{metrics}");
    api.stop();
}
