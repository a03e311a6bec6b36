//! Serves an axum router over HTTP/1.1, one request at a time per
//! connection, with the bounds a public port needs; a port's busiest route
//! may skip the router ([`Shortcut`]).
//!
//! hyper reads one request head (at most `max_head_bytes`) and answers it
//! before reading the next, so a connection holds one head and one response
//! at most. Around that:
//!
//! - the head must arrive within `header_read_timeout`, counted from when
//!   the connection was accepted or its last request was answered, so the
//!   same bound is the keep-alive idle timeout (one timer per connection,
//!   re-armed only when it fires: hyper's own arms and disarms a timer for
//!   every request);
//! - a response that the client does not read within `write_timeout` ends
//!   the connection ([`GuardedIo`]);
//! - a connection older than `max_connection_age` gets `Connection: close`
//!   on its next response, so no client keeps a slot, or one replica of a
//!   load-balanced Service, for ever (never closed while idle, which would
//!   race with the client's next request);
//! - a client may half-close after its request (`shutdown(SHUT_WR)`, as
//!   `nc -N` does) and still gets its answer;
//! - requests that break HTTP/1.1 framing rules hyper leaves to us are
//!   refused with a JSON 400 or 414 before any handler runs: not exactly one
//!   `Host` (RFC 9112, section 3.2) and request targets longer than
//!   `max_target_bytes`, whatever their form; the requests hyper refuses
//!   itself get our JSON body too, and an HTTP/2 preface HTTP/2's own
//!   refusal instead of a silent close ([`GuardedIo`]);
//! - each request is recorded in the connection's [`Activity`], which
//!   decides which connection gives up its slot when the port is full.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header},
};
pub use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, time::Instant};
use tower::{ServiceExt, util::Oneshot};

use super::{Activity, InFlight, Slot, accept_loop, io::GuardedIo};

/// hyper's smallest read buffer, which bounds a request head.
pub const SMALLEST_HEAD_BUFFER: usize = 8192;

/// Bounds of one HTTP/1 port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// For a request head, counted from when the connection was accepted
    /// or its last request answered: also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// For a response the client does not read.
    pub write_timeout: Duration,
    /// After this, a connection closes after its current response.
    pub max_connection_age: Duration,
    /// Longest a handler may take: with the other timeouts, bounds how long
    /// a connection told to close may still need.
    pub handler_timeout: Duration,
    /// hyper's read buffer, which bounds the request line plus headers
    /// (8 KiB at least).
    pub max_head_bytes: usize,
    /// Longest request target (path and query, or the whole absolute URI).
    pub max_target_bytes: usize,
}

impl Limits {
    /// The most a connection can still take once told to close: a head
    /// being read, its handler, and writing its response.
    pub fn close_grace(&self) -> Duration {
        self.header_read_timeout + self.handler_timeout + self.write_timeout
    }
}

/// A route answered before the router sees the request: the one a port
/// serves nearly all its requests on, spared what axum's routing costs
/// every request (matching the path, storing the captured segments in the
/// request, cloning and boxing the handler).
pub trait Shortcut: Send + Sync + 'static {
    /// Whether `request` is the shortcut's to answer (the router's if not).
    fn takes(&self, request: &Request<Incoming>) -> bool;

    /// The answer to a request the shortcut takes.
    fn answer(&self, request: Request<Incoming>) -> ShortcutAnswer;
}

/// A request being answered by a [`Shortcut`].
pub type ShortcutAnswer = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_shortcut(listener, router, None, limits, shutdown).await;
}

/// [`serve`], with the requests `shortcut` takes answered by it.
pub async fn serve_with_shortcut(
    listener: TcpListener,
    router: Router,
    shortcut: Option<Arc<dyn Shortcut>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    // The head timeout is the connection driver's (`drive`), not hyper's.
    http.header_read_timeout(None)
        .max_buf_size(limits.max_head_bytes.max(SMALLEST_HEAD_BUFFER))
        .half_close(true)
        .keep_alive(true);
    accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        move |stream, slot| {
            let io = GuardedIo::http1(stream, limits.write_timeout);
            let close_next = Arc::new(AtomicBool::new(false));
            let service = Http1Service {
                router: router.clone(),
                shortcut: shortcut.clone(),
                max_target_bytes: limits.max_target_bytes,
                activity: slot.activity.clone(),
                close_next: close_next.clone(),
            };
            let connection = http.serve_connection(TokioIo::new(io), service);
            drive(connection, close_next, limits, slot)
        },
    )
    .await;
}

async fn drive(
    connection: http1::Connection<TokioIo<GuardedIo>, Http1Service>,
    close_next: Arc<AtomicBool>,
    limits: Limits,
    mut slot: Slot,
) {
    tokio::pin!(connection);
    let accepted = Instant::now();
    let retire_at = accepted + limits.max_connection_age;
    // One timer for both time bounds, re-armed only when it fires: a timer
    // is polled on every wake-up of the connection, and one per request
    // would cost every request a timer-wheel insert and removal.
    let due = tokio::time::sleep_until(retire_at.min(accepted + limits.header_read_timeout));
    tokio::pin!(due);
    loop {
        tokio::select! {
            biased;
            result = &mut connection => return log_end(result),
            () = slot.activity.evicted() => {
                return tracing::debug!("connection evicted for a new one");
            }
            () = slot.stopping.wait() => break,
            () = &mut due => {
                let now = Instant::now();
                // Waited the whole timeout for a request: closed. Otherwise
                // looked at again when it would have.
                let head_by = match slot.activity.awaiting_request_since() {
                    Some(since) if now >= since + limits.header_read_timeout => {
                        return tracing::debug!("no request within the header read timeout");
                    }
                    Some(since) => since + limits.header_read_timeout,
                    None => now + limits.header_read_timeout,
                };
                // Old enough: the next response says `Connection: close`
                // and hyper closes after it. Closing now instead would race
                // with a request the client may be sending on the idle
                // connection, and that request would fail. A client that
                // sends nothing more is closed by the timeout above.
                if now >= retire_at {
                    close_next.store(true, Ordering::Relaxed);
                }
                let next = if close_next.load(Ordering::Relaxed) {
                    head_by
                } else {
                    head_by.min(retire_at)
                };
                due.as_mut().reset(next);
            }
        }
    }
    tracing::trace!("server stopping: closing connection after its current request");
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        result = tokio::time::timeout(limits.close_grace(), connection) => match result {
            Ok(result) => log_end(result),
            Err(_) => tracing::debug!("connection did not close in time; dropped"),
        },
        () = slot.activity.evicted() => tracing::debug!("closing connection evicted for a new one"),
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// The router, behind the checks of framing rules that hyper leaves to
/// the application, recording each request in the connection's activity.
struct Http1Service {
    router: Router,
    shortcut: Option<Arc<dyn Shortcut>>,
    max_target_bytes: usize,
    activity: Arc<Activity>,
    /// Set when the connection should end after its next response.
    close_next: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for Http1Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Http1Call;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let answer = if let Some(response) = refusal(&request, self.max_target_bytes) {
            Answer::Refused {
                in_flight,
                response: ready(Ok(response)),
            }
        } else {
            match &self.shortcut {
                Some(shortcut) if shortcut.takes(&request) => Answer::Shortcut {
                    in_flight,
                    answer: shortcut.answer(request),
                },
                _ => Answer::Routed {
                    in_flight,
                    call: self.router.clone().oneshot(request),
                },
            }
        };
        Http1Call {
            close_next: self.close_next.clone(),
            answer,
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer, with `Connection: close` once the connection is to end.
    struct Http1Call {
        close_next: Arc<AtomicBool>,
        #[pin]
        answer: Answer,
    }
}

pin_project_lite::pin_project! {
    /// A refusal answered at once, the shortcut's answer, or the router's.
    #[project = AnswerProjection]
    enum Answer {
        Refused { in_flight: InFlight, #[pin] response: Ready<Result<Response<Body>, Infallible>> },
        Shortcut { in_flight: InFlight, answer: ShortcutAnswer },
        Routed { in_flight: InFlight, #[pin] call: Oneshot<Router, Request<Incoming>> },
    }
}

impl std::future::Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Refused { response, .. } => response.poll(cx),
            AnswerProjection::Shortcut { answer, .. } => answer.as_mut().poll(cx).map(Ok),
            AnswerProjection::Routed { call, .. } => call.poll(cx),
        }
    }
}

impl std::future::Future for Http1Call {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.answer.poll(cx));
        if this.close_next.load(Ordering::Relaxed) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        std::task::Poll::Ready(Ok(response))
    }
}

/// A 400 or 414 for a request whose framing we refuse, else `None`.
fn refusal<B>(request: &Request<B>, max_target_bytes: usize) -> Option<Response<Body>> {
    let uri = request.uri();
    let target_bytes = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target_bytes > max_target_bytes {
        return Some(json_error(StatusCode::URI_TOO_LONG, "URI too long"));
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_ok = match (hosts.next(), hosts.next()) {
        (Some(host), None) => valid_host(host),
        (None, _) => request.version() < Version::HTTP_11,
        (Some(_), Some(_)) => false,
    };
    if !host_ok {
        return Some(json_error(
            StatusCode::BAD_REQUEST,
            "Bad request: exactly one valid Host header is required",
        ));
    }
    None
}

/// Empty (allowed when the target has no authority) or `host[:port]`.
fn valid_host(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (!bytes.contains(&b'@') && axum::http::uri::Authority::try_from(bytes).is_ok())
}

/// A response with a JSON body and its content type.
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    // Room for the one header, rather than the default map's six.
    *response.headers_mut() = HeaderMap::with_capacity(1);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error":"<message>"}` with `status`. `message` must need no JSON
/// escaping: every one we send is a fixed text.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, format!("{{\"error\":\"{message}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    fn status(request: &Request<()>) -> Option<StatusCode> {
        refusal(request, 1024).map(|r| r.status())
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        let v11 = Version::HTTP_11;
        assert_eq!(status(&request("/gcd/1/2", v11, &["pi:30080"])), None);
        assert_eq!(status(&request("/gcd/1/2", v11, &[""])), None);
        assert_eq!(status(&request("/gcd/1/2", v11, &["[::1]:8080"])), None);
        for hosts in [&[][..], &["a", "b"][..], &["a b"][..], &["user@host"][..]] {
            assert_eq!(
                status(&request("/gcd/1/2", v11, hosts)),
                Some(StatusCode::BAD_REQUEST),
                "{hosts:?}"
            );
        }
        // HTTP/1.0 predates Host.
        assert_eq!(status(&request("/gcd/1/2", Version::HTTP_10, &[])), None);
    }

    #[test]
    fn long_targets_are_414_in_every_form() {
        let v11 = Version::HTTP_11;
        let long_path = format!("/gcd/{}/1", "1".repeat(1100));
        assert_eq!(
            status(&request(&long_path, v11, &["x"])),
            Some(StatusCode::URI_TOO_LONG)
        );
        let long_authority = format!("http://{}.example/gcd/1/2", "a".repeat(1100));
        assert_eq!(
            status(&request(&long_authority, v11, &["x"])),
            Some(StatusCode::URI_TOO_LONG)
        );
        assert_eq!(
            status(&request("http://pi:30080/gcd/1/2", v11, &["pi"])),
            None
        );
    }
}
