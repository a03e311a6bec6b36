//! The public HTTP contract, compatible with the original tutorial:
//!
//! | request            | status | body                                  |
//! |--------------------|--------|---------------------------------------|
//! | `GET /gcd/12/18`   | 200    | `{"result":"6"}` (a string: u64 exceeds JavaScript's safe integers) |
//! | bad `a` / bad `b`  | 400    | `{"error":"Invalid parameter A"}` / `B` |
//! | no replica reachable | 503  | `{"error":"gcd is unavailable..."}`   |
//! | deadline passed    | 504    | `{"error":"gcd did not answer..."}`   |
//! | unknown path / method | 404 / 405 | JSON error                      |
//!
//! Every response, errors included, is JSON. Bodies are written by hand:
//! they are a number or one of the fixed messages below, and a JSON
//! serializer would cost more binary than it saves. Requests that break
//! HTTP framing rules (no `Host`, targets over [`MAX_URI_BYTES`], heads
//! over 16 KiB) are refused before they get here, by
//! [`ops::serve::http1`], with JSON errors too.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{Method, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};
use ops::serve::http1::{Incoming, Shortcut, ShortcutAnswer, json, json_error};
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    balancer::{Balancer, UpstreamError},
    metrics::{ApiMetrics, Route},
};

/// Longest request target accepted (414 beyond); a real one is under 50
/// bytes.
pub const MAX_URI_BYTES: usize = 1024;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub balancer: Arc<Balancer>,
    pub metrics: Arc<ApiMetrics>,
    /// One permit per request in flight; none left means shed load.
    pub in_flight: Arc<Semaphore>,
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
    #[error("gcd is unavailable: no replica is known")]
    NoReplicas,
    #[error("gcd is unavailable: no replica could be reached")]
    Unavailable,
    #[error("gcd did not answer within the deadline")]
    DeadlineExceeded,
    #[error("gcd failed to answer")]
    UpstreamFailed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidA | Self::InvalidB => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::NoReplicas | Self::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        tracing::debug!(error = %err, "gcd call failed");
        match err {
            UpstreamError::NoReplicas => Self::NoReplicas,
            UpstreamError::Unavailable(_) => Self::Unavailable,
            UpstreamError::DeadlineExceeded => Self::DeadlineExceeded,
            UpstreamError::Failed(_) | UpstreamError::Broken(_) => Self::UpstreamFailed,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Messages are fixed strings without quotes or backslashes.
        json_error(self.status(), &self.to_string())
    }
}

/// The public port's [`Shortcut`]: `GET` (and `HEAD`, which hyper answers
/// without the body) under `/gcd/`, nearly every request, straight to its
/// handler; the router answers the rest.
pub struct GcdShortcut(pub AppState);

impl Shortcut for GcdShortcut {
    fn takes(&self, request: &Request<Incoming>) -> bool {
        let method = request.method();
        (method == Method::GET || method == Method::HEAD)
            && request.uri().path().starts_with("/gcd/")
    }

    fn answer(&self, request: Request<Incoming>) -> ShortcutAnswer {
        let (parts, _) = request.into_parts();
        Box::pin(gcd(self.0.clone(), parts.uri))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        // Only so that other methods on it get 405, not 404: `GET` and
        // `HEAD` never reach the router.
        .route("/gcd/{*operands}", get(not_found))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `GET /gcd/{a}/{b}`, shedding load when too many requests are in flight
/// (503 at once instead of a growing queue), and recorded in the metrics.
/// One handler rather than a middleware around the router: a middleware
/// boxes every request's future and the rest of the router (measured in
/// results/ledger.md), and only this route does work worth shedding.
async fn gcd(state: AppState, uri: Uri) -> Response {
    let started = Instant::now();
    let operands = operands(uri.path());
    let route = if operands.is_some() {
        Route::Gcd
    } else {
        Route::Unmatched
    };
    let response = match state.in_flight.try_acquire() {
        Ok(_permit) => answer(&state, operands, started)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(_) => ApiError::Overloaded.into_response(),
    };
    state
        .metrics
        .record_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn answer(
    state: &AppState,
    operands: Option<(&str, &str)>,
    started: Instant,
) -> Result<Response, ApiError> {
    let (a, b) = operands.ok_or(ApiError::NotFound)?;
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
    rejected(&state, ApiError::NotFound)
}

async fn method_not_allowed(State(state): State<AppState>) -> Response {
    rejected(&state, ApiError::MethodNotAllowed)
}

/// A request answered without work, recorded like the others.
fn rejected(state: &AppState, error: ApiError) -> Response {
    let response = error.into_response();
    state
        .metrics
        .record_request(Route::Unmatched, response.status().as_u16(), Duration::ZERO);
    response
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
