//! The public HTTP contract, compatible with the original tutorial:
//!
//! | request            | status | body                                  |
//! |--------------------|--------|---------------------------------------|
//! | `GET /gcd/12/18`   | 200    | `{"result":"6"}` (a string: u64 exceeds JavaScript's safe integers) |
//! | bad `a` / bad `b`  | 400    | `{"error":"Invalid parameter A"}` / `B` |
//! | no replica reachable | 503  | `{"error":"gcd is unavailable..."}`   |
//! | deadline passed    | 504    | `{"error":"gcd did not answer..."}`   |
//! | handler timeout passed | 504 | `{"error":"The request took too long"}` |
//! | too many requests in flight | 503 | `{"error":"Server overloaded, try again"}` |
//! | unknown path / method | 404 / 405 | JSON error                      |
//!
//! Every response, errors included, is JSON. Bodies are written by hand:
//! they are a number or one of the fixed messages below, and a JSON
//! serializer would cost more binary than it saves. Requests that break
//! HTTP framing rules (no `Host`, targets over [`MAX_URI_BYTES`], heads
//! over 16 KiB) are refused before they get here, by
//! [`serving::http1`], with JSON errors too.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request as RouterRequest, State},
    http::{Method, Request, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{MethodRouter, get},
};
use serving::http1::{Incoming, Shortcut, ShortcutAnswer, json, json_error};
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    balancer::Balancer,
    metrics::{ApiMetrics, Route},
    rpc::CallError,
};

/// Longest request target accepted (414 beyond); a real one is under 50
/// bytes.
pub const MAX_URI_BYTES: usize = 1024;

/// Everything a request handler needs, and the layer every route goes
/// through ([`AppState::guard`]).
#[derive(Clone)]
pub struct AppState {
    pub balancer: Arc<Balancer>,
    pub metrics: Arc<ApiMetrics>,
    /// One permit per request in flight; none left means shed load.
    pub in_flight: Arc<Semaphore>,
    /// Longest a handler may take, counted from the request's arrival.
    pub handler_timeout: Duration,
    /// Where requests that match no route are counted.
    pub unmatched: Route,
}

/// What the public port serves: a router, and the route it answers
/// before the router sees the request, if any.
pub struct Routes {
    pub router: Router,
    pub shortcut: Option<Arc<dyn Shortcut>>,
}

/// Every way a request can fail, with its status and message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid parameter A")]
    InvalidA,
    #[error("Invalid parameter B")]
    InvalidB,
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Server overloaded, try again")]
    Overloaded,
    #[error("The request took too long")]
    TimedOut,
    /// A call to a replica failed: its status and message are the
    /// call error's.
    #[error("{}", .0.public_message())]
    Upstream(#[from] CallError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidA | Self::InvalidB => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(error) => error.http_status(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Upstream(error) = &self {
            tracing::debug!(%error, "call to a replica failed");
        }
        // Messages are fixed strings without quotes or backslashes.
        json_error(self.status(), &self.to_string())
    }
}

impl AppState {
    /// The layer every request goes through, router or [`Shortcut`]:
    /// answered 503 at once when too many requests are in flight (instead
    /// of a growing queue), 504 when `answer` takes longer than the handler
    /// timeout from `started` (when the request arrived, passed in rather
    /// than read again: the clock costs every request), and counted under
    /// `route` in the metrics.
    pub async fn guard(
        &self,
        route: &Route,
        started: Instant,
        answer: impl Future<Output = Result<Response, ApiError>>,
    ) -> Response {
        let response = match self.in_flight.try_acquire() {
            Ok(_permit) => {
                match tokio::time::timeout_at(started + self.handler_timeout, answer).await {
                    Ok(answer) => answer.unwrap_or_else(IntoResponse::into_response),
                    Err(_) => ApiError::TimedOut.into_response(),
                }
            }
            Err(_) => ApiError::Overloaded.into_response(),
        };
        self.metrics
            .record_request(route, response.status().as_u16(), started.elapsed());
        response
    }

    /// `handler` behind [`AppState::guard`], counted under `label` (its
    /// path pattern, by convention): how every routed route is added.
    ///
    /// ```ignore
    /// Router::new().route("/say/{text}", state.route("/say/{text}", get(say)))
    /// ```
    pub fn route(
        &self,
        label: &'static str,
        handler: MethodRouter<AppState>,
    ) -> MethodRouter<AppState> {
        let guarded = (self.clone(), self.metrics.route(label));
        handler.layer(axum::middleware::from_fn_with_state(guarded, guarded_route))
    }
}

async fn guarded_route(
    State((state, route)): State<(AppState, Route)>,
    request: RouterRequest,
    next: Next,
) -> Response {
    let answer = async { Ok(next.run(request).await) };
    state.guard(&route, Instant::now(), answer).await
}

/// The public port's [`Shortcut`]: `GET` (and `HEAD`, which hyper answers
/// without the body) under `/gcd/`, nearly every request, straight to its
/// handler, through the same [`AppState::guard`] as routed requests; the
/// router answers the rest.
pub struct GcdShortcut(Arc<GcdRoute>);

/// What each `/gcd` request takes a reference to: one count to raise, not
/// one per part.
struct GcdRoute {
    state: AppState,
    route: Route,
}

impl GcdShortcut {
    pub const LABEL: &str = "/gcd/{a}/{b}";

    pub fn new(state: AppState) -> Self {
        let route = state.metrics.route(Self::LABEL);
        Self(Arc::new(GcdRoute { state, route }))
    }
}

impl Shortcut for GcdShortcut {
    fn takes(&self, request: &Request<Incoming>) -> bool {
        let method = request.method();
        (method == Method::GET || method == Method::HEAD)
            && request.uri().path().starts_with("/gcd/")
    }

    fn answer(&self, request: Request<Incoming>) -> ShortcutAnswer {
        let (parts, _) = request.into_parts();
        let shared = self.0.clone();
        Box::pin(async move { gcd(&shared.state, &shared.route, parts.uri).await })
    }
}

/// The api's routes: `/gcd` by its shortcut, everything else answered
/// 404 or 405 by the router.
pub fn gcd_routes(state: AppState) -> Routes {
    Routes {
        // The route only so that other methods on it get 405, not 404:
        // `GET` and `HEAD` never reach the router.
        router: fallbacks(
            Router::new().route("/gcd/{*operands}", get(not_found)),
            state.clone(),
        ),
        shortcut: Some(Arc::new(GcdShortcut::new(state))),
    }
}

/// `router` with the 404 and 405 answers, counted as unmatched, and its
/// state: the end of building any router for the public port.
pub fn fallbacks(router: Router<AppState>, state: AppState) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `GET /gcd/{a}/{b}`; a path of any other shape is counted as unmatched.
async fn gcd(state: &AppState, route: &Route, uri: Uri) -> Response {
    let started = Instant::now();
    match operands(uri.path()) {
        Some(operands) => {
            state
                .guard(route, started, answer(state, operands, started))
                .await
        }
        None => {
            let not_found = std::future::ready(Err(ApiError::NotFound));
            state.guard(&state.unmatched, started, not_found).await
        }
    }
}

async fn answer(
    state: &AppState,
    (a, b): (&str, &str),
    started: Instant,
) -> Result<Response, ApiError> {
    let a = parse_operand(a).ok_or(ApiError::InvalidA)?;
    let b = parse_operand(b).ok_or(ApiError::InvalidB)?;
    let result = state.balancer.compute(a, b, started).await?;
    const OPEN: &str = "{\"result\":\"";
    const CLOSE: &str = "\"}";
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(result);
    // Exactly the body's length: a full buffer becomes the response's
    // bytes as it is, where a larger one would need a shared header made
    // for it.
    let mut body = String::with_capacity(OPEN.len() + digits.len() + CLOSE.len());
    body.push_str(OPEN);
    body.push_str(digits);
    body.push_str(CLOSE);
    Ok(json(StatusCode::OK, body))
}

async fn not_found(State(state): State<AppState>) -> Response {
    rejected(&state, ApiError::NotFound).await
}

async fn method_not_allowed(State(state): State<AppState>) -> Response {
    rejected(&state, ApiError::MethodNotAllowed).await
}

/// A request answered without work, through the same layer as the others.
async fn rejected(state: &AppState, error: ApiError) -> Response {
    let answer = std::future::ready(Err(error));
    state.guard(&state.unmatched, Instant::now(), answer).await
}

/// The two raw path segments of `/gcd/{a}/{b}`, or `None` for any other
/// shape (`/gcd/12`, `/gcd/1/2/3`).
fn operands(path: &str) -> Option<(&str, &str)> {
    let (a, b) = path.strip_prefix("/gcd/")?.split_once('/')?;
    (!b.contains('/')).then_some((a, b))
}

/// A base-10 `u64` from a path segment: percent-decoded first (as the
/// original's gin decodes the path), then digits only (no sign, no
/// spaces), leading zeros fine. The path is split before decoding, so an
/// encoded `/` stays inside its operand, which it makes invalid.
pub fn parse_operand(segment: &str) -> Option<u64> {
    // Nearly every operand is plain digits, with nothing to decode.
    let text = if segment.contains('%') {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?
    } else {
        segment.into()
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{operands, parse_operand};

    #[test]
    fn only_two_segments_are_the_gcd_route() {
        assert_eq!(operands("/gcd/12/18"), Some(("12", "18")));
        assert_eq!(operands("/gcd/1%2F2/3"), Some(("1%2F2", "3")));
        assert_eq!(operands("/gcd//"), Some(("", "")));
        for other in ["/gcd/12", "/gcd/1/2/3", "/gcd/", "/gcd", "/", "/GCD/1/2"] {
            assert_eq!(operands(other), None, "{other}");
        }
    }

    #[test]
    fn operands_are_plain_base_10_u64() {
        assert_eq!(parse_operand("12"), Some(12));
        assert_eq!(parse_operand("012"), Some(12));
        assert_eq!(parse_operand("0"), Some(0));
        assert_eq!(parse_operand("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_operand("000000000000000000000000018"), Some(18));
        assert_eq!(parse_operand("%31%32"), Some(12));
        assert_eq!(parse_operand("1%32"), Some(12));
        for bad in [
            "%2F",
            "1%2F2",
            "%",
            "%3",
            "%zz",
            "%ff",
            "%2B12",
            "",
            "abc",
            "-1",
            "+12",
            " 1",
            "1 ",
            "1.0",
            "0x1",
            "18446744073709551616",
            "١٢",
        ] {
            assert_eq!(parse_operand(bad), None, "{bad:?}");
        }
    }
}
