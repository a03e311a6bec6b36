//! Serves gRPC over HTTP/2 (a tonic `Routes`, or any service like it) with
//! every connection, stream and byte bounded.
//!
//! What a client can make one port hold, and the bound on each:
//!
//! - **connections**: `max_connections` ([`super::accept_loop`]); one that
//!   starts no call within `handshake_timeout` of connecting is dropped, and
//!   one with no call open for `idle_timeout` is sent GOAWAY (a well-behaved
//!   client reconnects when it next needs to). Keep-alive PINGs close
//!   connections whose peer has vanished.
//! - **calls**: at most `max_streams_per_connection` per connection
//!   (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`). Every connection may have
//!   [`RESERVED_CALLS_PER_CONNECTION`] calls open whatever others do (they
//!   are counted with the connection), so no number of other clients can
//!   keep a connection from being served; calls beyond those share
//!   `max_calls` places on the whole port. When the port is full, a new
//!   call takes the places of the connection holding shared places that
//!   has gone longest without a call ending (a client holding calls open
//!   without sending them), which is closed; a connection within its
//!   reserved calls is never the one. At most [`MAX_WAITING_CALLS`] calls
//!   wait for such a place at once (the moment it takes the evicted
//!   connection to let go); beyond that, or when the new call's own
//!   connection holds every place, it is answered `RESOURCE_EXHAUSTED`.
//!   Every call ends within `call_timeout` (or the client's shorter
//!   `grpc-timeout`), request and response streams included, except the
//!   methods listed as long-lived (health `Watch`), whose request must
//!   still arrive in time. A call that runs out of our time means a client
//!   that stalled it (our handlers answer in microseconds): its connection
//!   is dropped. So is a connection whose open calls see none of them end
//!   for longer than that, which catches a client that stops granting
//!   flow-control window for our answers.
//! - **bytes**: flow-control windows ([`STREAM_WINDOW`],
//!   [`CONNECTION_WINDOW`]) bound what a client may send before we read it,
//!   [`MAX_FRAME_BYTES`] and [`MAX_HEADER_LIST_BYTES`] what one frame or
//!   header block may take, [`SEND_BUFFER_BYTES`] what we queue per stream
//!   for a client that does not read, and `write_timeout` how long it may
//!   not read ([`GuardedIo`]). Message sizes are the services' own limits.
//!
//! A request whose content type is not `application/grpc[+proto]` is
//! answered HTTP 415, as the gRPC over HTTP/2 spec says.
//!
//! h2 itself bounds what is left: rapid resets, streams reset for protocol
//! errors, and PING or SETTINGS floods (it answers one at a time, reading
//! nothing more until the answer is sent).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{HeaderMap, HeaderValue, Request, Response, header};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tower::{Service, ServiceExt, util::Oneshot};

use super::{Activity, InFlight, Slot, Slots, accept_loop, io::GuardedIo};

/// Per-stream receive window: how much request data a client may send on
/// one call before we have read it (requests are messages of a few bytes).
pub const STREAM_WINDOW: u32 = 16 * 1024;
/// Connection receive window: the same across all of a connection's calls.
/// 64 KiB is HTTP/2's initial value.
pub const CONNECTION_WINDOW: u32 = 64 * 1024;
/// Largest frame a client may send: HTTP/2's minimum maximum.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024;
/// Largest request header block, CONTINUATION frames included.
pub const MAX_HEADER_LIST_BYTES: u32 = 8 * 1024;
/// Response bytes queued per stream for a client that does not read.
pub const SEND_BUFFER_BYTES: usize = 16 * 1024;

/// Calls that may wait at once for the places of an evicted connection.
pub const MAX_WAITING_CALLS: usize = 16;

/// Calls every connection may have open without taking one of the port's
/// shared places: a client's own share, which no other client can take.
pub const RESERVED_CALLS_PER_CONNECTION: usize = 2;

/// Bounds of one gRPC port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Calls open at once on the whole port beyond each connection's
    /// reserved ones.
    pub max_calls: usize,
    pub max_streams_per_connection: u32,
    /// From connecting to the first call.
    pub handshake_timeout: Duration,
    /// With no call open, after which a connection is sent GOAWAY.
    pub idle_timeout: Duration,
    /// For the whole of a call, request and response.
    pub call_timeout: Duration,
    /// For output the client does not read.
    pub write_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Methods (`/package.Service/Method`) that may stay open past
    /// `call_timeout` once their request has arrived.
    pub long_lived_methods: &'static [&'static str],
}

impl Limits {
    /// The most a connection told to close may still take.
    pub fn close_grace(&self) -> Duration {
        self.call_timeout + self.write_timeout
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// calls in flight finish (at most [`Limits::close_grace`]).
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tower::BoxError>,
{
    let mut http = http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buf_size(SEND_BUFFER_BYTES)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        // gRPC has no use for a Date header; skip formatting one per call.
        .auto_date_header(false);
    let port = Arc::new(Port {
        calls: Arc::new(Semaphore::new(limits.max_calls)),
        waiting: Arc::new(Semaphore::new(MAX_WAITING_CALLS)),
        limits,
    });
    accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        move |stream, slot| {
            let close = Arc::new(Notify::new());
            let calls = Calls {
                inner: service.clone(),
                activity: slot.activity.clone(),
                connections: slot.port.clone(),
                close: close.clone(),
                port: port.clone(),
            };
            let io = TokioIo::new(GuardedIo::new(stream, limits.write_timeout));
            drive(http.serve_connection(io, calls), close, limits, slot)
        },
    )
    .await;
}

/// Runs one connection until it ends, closing it when it has been silent,
/// idle or stalling for too long, when it is evicted, or when the server
/// stops.
async fn drive<C>(conn: C, close: Arc<Notify>, limits: Limits, mut slot: Slot)
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    tokio::pin!(conn);
    let activity = slot.activity.clone();
    // Calls end within the call timeout; a connection that has had calls in
    // flight for longer without any of them ending is one whose client
    // stopped sending, or stopped granting us flow-control window to answer.
    let stalled_after = limits.call_timeout + STALL_MARGIN;
    let mut next_check = Instant::now() + limits.handshake_timeout;
    let reason = loop {
        tokio::select! {
            result = &mut conn => return log_end(result),
            () = activity.evicted() => {
                return tracing::debug!("connection evicted for a new one");
            }
            () = close.notified() => {
                return tracing::debug!("a call ran out of time: its client stalled; dropped");
            }
            () = slot.stopping.wait() => break "server stopping",
            () = tokio::time::sleep_until(next_check) => {
                let Some(last_progress) = activity.last_progress() else {
                    return tracing::debug!("no call within the handshake timeout; dropped");
                };
                let now = Instant::now();
                if activity.in_flight() > 0 {
                    if now >= last_progress + stalled_after {
                        return tracing::debug!("calls made no progress; dropped");
                    }
                    next_check = last_progress + stalled_after;
                } else if !activity.is_idle() {
                    next_check = now + limits.idle_timeout;
                } else if now >= last_progress + limits.idle_timeout {
                    break "idle";
                } else {
                    next_check = last_progress + limits.idle_timeout;
                }
            }
        }
    };
    tracing::trace!(reason, "closing connection (GOAWAY)");
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        result = tokio::time::timeout(limits.close_grace(), conn) => match result {
            Ok(result) => log_end(result),
            Err(_) => tracing::debug!("connection did not close in time; dropped"),
        },
        () = activity.evicted() => tracing::debug!("closing connection evicted for a new one"),
    }
}

/// How far past the call timeout a connection's calls may go without any
/// progress before the connection is dropped: the calls' own deadlines
/// fire first.
const STALL_MARGIN: Duration = Duration::from_secs(1);

/// hyper's HTTP/2 connection, which can be asked to close gracefully.
trait GracefulShutdown {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulShutdown for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// What every connection of a port shares.
struct Port {
    /// A place per call in flight.
    calls: Arc<Semaphore>,
    /// A place per call waiting for one of `calls`.
    waiting: Arc<Semaphore>,
    limits: Limits,
}

/// Holds a call's place on its connection and on the port until dropped
/// (when its response has been sent, or abandoned).
struct CallGuard {
    /// Holds the call's shared place on the port too, unless the call is
    /// one of its connection's reserved ones.
    in_flight: InFlight,
    /// Asks the connection to close: the client stalled this call.
    close: Arc<Notify>,
}

/// The service, with calls counted, capped and timed.
#[derive(Clone)]
struct Calls<S> {
    inner: S,
    activity: Arc<Activity>,
    connections: Arc<Slots>,
    close: Arc<Notify>,
    port: Arc<Port>,
}

impl<S, B> Calls<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone,
{
    /// Runs `request` in its place (a shared one, or its connection's
    /// reserved one) until `deadline`.
    fn run(
        &self,
        request: Request<Incoming>,
        slot: Option<OwnedSemaphorePermit>,
        deadline: Instant,
        ours: bool,
    ) -> CallFuture<S, B> {
        let mut in_flight = self.activity.start();
        if let Some(slot) = slot {
            in_flight.hold_shared_place(slot);
        }
        let guard = CallGuard {
            in_flight,
            close: self.close.clone(),
        };
        let long_lived = self
            .port
            .limits
            .long_lived_methods
            .contains(&request.uri().path());
        CallFuture::Running {
            call: self.inner.clone().oneshot(request),
            deadline: tokio::time::sleep_until(deadline),
            guard: Some(guard),
            ours,
            long_lived,
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Calls<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<CallBody<B>>;
    type Error = Infallible;
    type Future = CallFuture<S, B>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if !is_grpc(request.headers()) {
            return CallFuture::Answered {
                response: Some(unsupported_media_type()),
            };
        }
        let limits = &self.port.limits;
        let (timeout, ours) = match grpc_timeout(request.headers()) {
            Some(theirs) if theirs < limits.call_timeout => (theirs, false),
            _ => (limits.call_timeout, true),
        };
        let deadline = Instant::now() + timeout;
        // hyper calls this from the connection's task, one call at a time,
        // so the count cannot change between the check and the start.
        if self.activity.open() < RESERVED_CALLS_PER_CONNECTION {
            return self.run(request, None, deadline, ours);
        }
        if let Ok(slot) = self.port.calls.clone().try_acquire_owned() {
            return self.run(request, Some(slot), deadline, ours);
        }
        let waiting = match self.port.waiting.clone().try_acquire_owned() {
            Ok(waiting) if self.connections.evict_stalest_holder(&self.activity) => waiting,
            _ => {
                return CallFuture::Answered {
                    response: Some(status_response(
                        RESOURCE_EXHAUSTED,
                        "too many calls in flight, try again",
                    )),
                };
            }
        };
        // The evicted connection's calls give their places back as soon as
        // its task ends; wait for one (rare: only under attack).
        let calls = self.clone();
        CallFuture::Queued {
            call: Box::pin(async move {
                let slot = calls.port.calls.clone().acquire_owned();
                let admitted = tokio::time::timeout_at(deadline, slot).await;
                drop(waiting);
                match admitted {
                    Ok(Ok(slot)) => calls.run(request, Some(slot), deadline, ours).await,
                    _ => Ok(status_response(
                        RESOURCE_EXHAUSTED,
                        "too many calls in flight, try again",
                    )),
                }
            }),
        }
    }
}

/// A call waiting for its place on the port.
type QueuedCall<B> =
    Pin<Box<dyn Future<Output = Result<Response<CallBody<B>>, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// A call answered at once, or running against its deadline.
    #[project = CallProjection]
    enum CallFuture<S: Service<Request<Incoming>>, B> {
        Answered { response: Option<Response<CallBody<B>>> },
        Queued { call: QueuedCall<B> },
        Running {
            #[pin] call: Oneshot<S, Request<Incoming>>,
            #[pin] deadline: Sleep,
            guard: Option<CallGuard>,
            ours: bool,
            long_lived: bool,
        },
    }
}

impl<S, B> Future for CallFuture<S, B>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    type Output = Result<Response<CallBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallProjection::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending, // polled after completion
            },
            CallProjection::Queued { call } => call.as_mut().poll(cx),
            CallProjection::Running {
                call,
                deadline,
                guard,
                ours,
                long_lived,
            } => {
                if let Poll::Ready(Ok(response)) = call.poll(cx) {
                    let body_deadline = (!*long_lived).then(|| deadline.deadline());
                    let mut guard = guard.take();
                    if *long_lived && let Some(guard) = &mut guard {
                        guard.in_flight.settle_long_lived();
                    }
                    let ours = *ours;
                    return Poll::Ready(Ok(response.map(|body| CallBody {
                        inner: Some(body),
                        deadline: body_deadline.map(tokio::time::sleep_until),
                        guard,
                        ours,
                    })));
                }
                if deadline.poll(cx).is_ready() {
                    let guard = guard.take();
                    if *ours && let Some(guard) = &guard {
                        guard.close.notify_one();
                    }
                    return Poll::Ready(Ok(status_response(
                        DEADLINE_EXCEEDED,
                        "the call did not complete within the server's time limit",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends with `DEADLINE_EXCEEDED` when its call runs
    /// out of time, and that holds the call's place until it is done.
    pub struct CallBody<B> {
        inner: Option<B>,
        #[pin]
        deadline: Option<Sleep>,
        guard: Option<CallGuard>,
        ours: bool,
    }
}

impl<B> CallBody<B> {
    /// No body: everything is in the headers (a trailers-only response).
    fn empty() -> Self {
        Self {
            inner: None,
            deadline: None,
            guard: None,
            ours: false,
        }
    }
}

impl<B> Body for CallBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                *this.inner = None;
                this.guard.take();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_pin_mut() else {
                    return Poll::Pending;
                };
                if deadline.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.inner = None;
                if let Some(guard) = this.guard.take()
                    && *this.ours
                {
                    guard.close.notify_one();
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static(DEADLINE_EXCEEDED));
                trailers.insert(
                    "grpc-message",
                    HeaderValue::from_static("the call did not complete within the time limit"),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

const DEADLINE_EXCEEDED: &str = "4";
const RESOURCE_EXHAUSTED: &str = "8";

/// A trailers-only gRPC response: the status in the headers, no body.
fn status_response<B>(code: &'static str, message: &'static str) -> Response<CallBody<B>> {
    trailers_only(
        CallBody::empty(),
        HeaderValue::from_static(code),
        HeaderValue::from_static(message),
    )
}

/// A gRPC response whose status (`code`, a decimal gRPC status code, and
/// `message`) is in its headers: the form a call that fails before it
/// answers takes. `empty` is a body with nothing in it.
pub fn trailers_only<B>(empty: B, code: HeaderValue, message: HeaderValue) -> Response<B> {
    let mut response = Response::new(empty);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", code);
    headers.insert("grpc-message", message);
    response
}

/// Whether the request says it carries gRPC with protobuf messages
/// (`application/grpc`, `application/grpc+proto`, parameters allowed).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            let media = media.trim();
            media.eq_ignore_ascii_case("application/grpc")
                || media.eq_ignore_ascii_case("application/grpc+proto")
        })
}

/// HTTP 415, as the gRPC over HTTP/2 spec says for any other content type,
/// so that a plain HTTP client does not read a gRPC error as a success.
fn unsupported_media_type<B>() -> Response<CallBody<B>> {
    let mut response = Response::new(CallBody::empty());
    *response.status_mut() = axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// The client's deadline from `grpc-timeout` (at most 8 digits and a unit:
/// Hours, Minutes, Seconds, milli, micro, nano), if it sent a valid one.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn only_grpc_with_protobuf_is_served() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_grpc(&headers)
        };
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=x",
        ] {
            assert!(with(ok), "{ok}");
        }
        for not in [
            "text/plain",
            "application/grpc+json",
            "application/grpc-web",
            "application/json",
        ] {
            assert!(!with(not), "{not}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts_in_every_unit() {
        assert_eq!(timeout_of("1000m"), Some(Duration::from_secs(1)));
        assert_eq!(timeout_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "100", "123456789m", "-1m", "1x", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
