//! Calls to one replica, on the `h2` crate directly.
//!
//! The api makes a few kinds of unary call ([`Rpc`]), millions of times,
//! so it does not pay for a general gRPC client: no `tonic` channel, no
//! `tower` buffer or reconnect layers, no task per call. A call is a
//! request with headers copied from the last call's (and its
//! `grpc-timeout`), a 5-byte frame prefix and the message in one buffer of
//! its exact size on the connection's HTTP/2 stream, then one data frame
//! and the trailers back (results/ledger.md has what this saves). The same
//! path carries `Compute`, the balancer's health checks
//! ([`crate::rpc::HealthCheck`], which probe a replica that failed without
//! a user's request waiting on it) and any other method.
//!
//! What a general client gives and this one keeps:
//! - **connecting** on first use, within the connect timeout, one attempt
//!   at a time per replica; a connection that breaks, is closed by gcd
//!   (GOAWAY: idle, or draining) or stops answering keep-alive PINGs is
//!   dropped, and the next call connects again;
//! - **bounds**: what gcd can make us buffer is bounded by the receive
//!   windows, the header list limit and the largest answer accepted
//!   ([`Rpc::MAX_ANSWER_BYTES`]); what we can make h2 hold for gcd is
//!   bounded by the streams below;
//! - **errors** typed as the balancer needs them ([`CallError`]): anything
//!   that kept the call from the replica's handler or broke the connection
//!   under it (safe to retry for an idempotent method), a status the
//!   replica sent, or an answer that is not one.
//!
//! **Streams.** h2 queues a request that finds the peer's stream limit
//! reached, and a stream that never opened cannot be dropped from that
//! queue; nor can a stream whose call was abandoned at its deadline leave
//! h2 before its reset is written, which a replica that stopped reading
//! (a frozen Pi) never allows. So the api hands h2 no more streams than the
//! replica allows ([`MAX_STREAMS`] at most): a call that finds them all
//! taken waits for one, in a queue it leaves when its deadline passes,
//! then fails as [`CallError::Unreachable`] (a replica allowing none fails
//! it at once). A stream counts as taken until h2 has seen it end; an
//! abandoned one stays taken, and a connection that has abandoned
//! [`RECYCLE_AFTER_ABANDONED`] of them (or every stream the replica allows,
//! if fewer) is replaced by a new one and closed, with everything h2 held
//! for it, once no call is left waiting on it.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use gcd_proto::GcdRequest;
use grpc_wire::{
    Code, GRPC_MESSAGE, GRPC_TIMEOUT,
    framing::{self, PREFIX_BYTES},
};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use prost::Message;
use runtime::sync::lock;
use tokio::{net::TcpStream, sync::Notify, time::Instant};

pub use crate::rpc::CallError;
use crate::rpc::{Compute, HealthCheck, Rpc, SERVING};

/// HTTP/2 receive window, per call and per connection: answers are a few
/// bytes, and this bounds what a replica can make us buffer.
pub const WINDOW: u32 = 64 * 1024;

/// Most streams taken on one replica connection at once, whatever the
/// replica allows (gcd allows 256 by default); abandoned ones included.
pub const MAX_STREAMS: usize = 256;

/// Abandoned streams after which a connection is replaced: each may be
/// held by h2 until the replica reads its reset, which a frozen one never
/// does.
pub const RECYCLE_AFTER_ABANDONED: usize = 32;

/// Response header blocks larger than this end the connection.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// What h2 may queue of a request's body: a `Compute` request is 27 bytes.
const SEND_BUFFER_BYTES: usize = 1024;

/// How often an idle-looking connection is checked with a PING, and how
/// long the answer may take before the connection counts as dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection to one replica, made on first use.
pub struct Upstream {
    addr: SocketAddr,
    connect_timeout: Duration,
    connection: Arc<Mutex<Option<Arc<Connection>>>>,
    /// Held while connecting, so that one call connects and the others
    /// wait for it instead of each opening a connection; counts the
    /// connections made.
    connecting: tokio::sync::Mutex<u64>,
    /// What the next call's request is made from, copied rather than
    /// built anew.
    heads: Mutex<Heads>,
}

/// What calls' requests are copied from.
struct Heads {
    /// The last call's `grpc-timeout`, in milliseconds, and its headers:
    /// nearly every call sends the same (see [`grpc_wire::timeout::millis`]).
    millis: u64,
    headers: HeaderMap,
    /// Each method's URI on this replica, made on its first call.
    uris: Vec<(&'static str, Uri)>,
}

/// One HTTP/2 connection to a replica, and the streams taken on it.
struct Connection {
    /// Tells it from the replica's earlier connections.
    generation: u64,
    sender: SendRequest<Bytes>,
    /// Streams handed to h2 and not yet seen to end, abandoned ones
    /// included.
    taken: AtomicUsize,
    abandoned: AtomicUsize,
    /// Replaced: no new call comes, and it closes once only abandoned
    /// streams are left.
    retired: AtomicBool,
    /// Wakes a call waiting for a stream.
    stream_ended: Notify,
    /// Ends the task that runs the connection, which closes it.
    close: Arc<Notify>,
}

impl Connection {
    /// Streams the replica allows now (its SETTINGS may lower it at any
    /// time), at most [`MAX_STREAMS`].
    fn limit(&self) -> usize {
        self.sender.current_max_send_streams().min(MAX_STREAMS)
    }

    /// Takes a stream if fewer than `limit` are taken.
    fn try_take(&self, limit: usize) -> bool {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < limit).then_some(taken + 1)
            })
            .is_ok()
    }

    /// A taken stream that h2 has seen end.
    fn end(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
        self.stream_ended.notify_one();
        self.close_if_done();
    }

    /// A taken stream whose call was dropped before the stream ended;
    /// true when this connection is to be replaced. A replica that allows
    /// no stream keeps its connection: no more streams go to it, so no
    /// more are abandoned, and a new one would lose its first call the
    /// same way (sent before the replica's SETTINGS arrived).
    fn abandon(&self) -> bool {
        let abandoned = self.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
        let limit = self.limit();
        let retire = limit > 0
            && abandoned >= RECYCLE_AFTER_ABANDONED.min(limit)
            && !self.retired.swap(true, Ordering::SeqCst);
        self.close_if_done();
        retire
    }

    /// Closes a retired connection once every stream still taken is an
    /// abandoned one: no call waits on it any more.
    fn close_if_done(&self) {
        if self.retired.load(Ordering::SeqCst)
            && self.taken.load(Ordering::SeqCst) <= self.abandoned.load(Ordering::SeqCst)
        {
            self.close.notify_one();
        }
    }
}

/// A stream taken for one call: ended or abandoned when dropped.
struct TakenStream<'a> {
    upstream: &'a Upstream,
    connection: &'a Connection,
    /// Whether h2 has seen the stream end (an answer read to its end, a
    /// reset, a broken connection), or never made it.
    ended: bool,
}

impl TakenStream<'_> {
    /// The stream, or its whole connection, failed: the call may never
    /// have reached the replica's handler. A reset stream leaves the
    /// connection usable; anything else (GOAWAY, an I/O error, a protocol
    /// error) takes it out of use.
    fn broken(&mut self, error: h2::Error) -> CallError {
        self.ended = true;
        if !error.is_reset() {
            self.upstream.forget(self.connection.generation);
        }
        CallError::Unreachable(format!("connection to {}: {error}", self.upstream.addr))
    }
}

impl Drop for TakenStream<'_> {
    fn drop(&mut self) {
        if self.ended {
            self.connection.end();
        } else if self.connection.abandon() {
            tracing::debug!(
                replica = %self.upstream.addr,
                "replacing a connection with too many abandoned streams"
            );
            self.upstream.forget(self.connection.generation);
        }
    }
}

impl Upstream {
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            addr,
            connect_timeout,
            connection: Arc::new(Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(0),
            heads: Mutex::new(Heads {
                millis: 0,
                headers: HeaderMap::new(),
                uris: Vec::new(),
            }),
        }
    }

    /// Whether a connection is open (made, and not yet closed, broken or
    /// replaced).
    pub fn is_connected(&self) -> bool {
        lock(&self.connection).is_some()
    }

    /// One call of method `M`. `timeout`, the time left until `deadline`,
    /// is sent as `grpc-timeout`; the caller enforces it, and the wait for
    /// a stream ends at `deadline`.
    pub async fn call<M: Rpc>(
        &self,
        request: &M::Request,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<M::Response, CallError> {
        let head = self.request(M::PATH, timeout);
        let body = framing::encode(request);
        let connection = self.connection().await?;
        let mut stream = self.take_stream(&connection, deadline).await?;
        let message = exchange(
            &connection.sender,
            head,
            body,
            M::MAX_ANSWER_BYTES,
            &mut stream,
        )
        .await?;
        decode(message)
    }

    /// One `Compute` call.
    pub async fn compute(
        &self,
        a: u64,
        b: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<u64, CallError> {
        let request = GcdRequest { a, b };
        let answer = self.call::<Compute>(&request, deadline, timeout).await?;
        Ok(answer.result)
    }

    /// A health check of the whole server: `Ok` when the replica is
    /// serving, or answers that it has no health service (as the original
    /// Go gcd does): it answered, so it is up.
    pub async fn check_health(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let request = Default::default();
        match self.call::<HealthCheck>(&request, deadline, timeout).await {
            Ok(answer) if answer.status == SERVING => Ok(()),
            Ok(answer) => Err(CallError::Broken(format!(
                "health status {}",
                answer.status
            ))),
            Err(CallError::Status {
                code: Code::Unimplemented,
                ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// A stream on `connection`, waiting until `deadline` for one if the
    /// replica's limit is reached; none if the replica allows none.
    async fn take_stream<'a>(
        &'a self,
        connection: &'a Connection,
        deadline: Instant,
    ) -> Result<TakenStream<'a>, CallError> {
        let taken = |ended| TakenStream {
            upstream: self,
            connection,
            ended,
        };
        loop {
            let limit = connection.limit();
            if connection.try_take(limit) {
                return Ok(taken(false));
            }
            if limit == 0 {
                return Err(CallError::Unreachable(format!(
                    "{} allows no stream",
                    self.addr
                )));
            }
            let ended = connection.stream_ended.notified();
            tokio::pin!(ended);
            // Registered before looking again, so that a stream ending in
            // between is not missed.
            ended.as_mut().enable();
            if connection.try_take(limit) {
                return Ok(taken(false));
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Err(CallError::Unreachable(format!(
                    "no stream free on the connection to {} within the deadline",
                    self.addr
                )));
            }
        }
    }

    /// A call's request to `path`: its headers copied from the last call's
    /// unless its `grpc-timeout` differs, which is rare (see
    /// [`grpc_wire::timeout::millis`]), and its URI from the method's last
    /// call.
    fn request(&self, path: &'static str, timeout: Duration) -> Request<()> {
        let millis = grpc_wire::timeout::millis(timeout);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        let mut heads = lock(&self.heads);
        if heads.millis != millis {
            heads.millis = millis;
            heads.headers = grpc_headers(millis);
        }
        *request.headers_mut() = heads.headers.clone();
        let known = heads.uris.iter().find(|(known, _)| *known == path);
        *request.uri_mut() = match known {
            Some((_, uri)) => uri.clone(),
            None => {
                let uri = self.uri(path);
                heads.uris.push((path, uri.clone()));
                uri
            }
        };
        request
    }

    fn uri(&self, path: &'static str) -> Uri {
        Uri::builder()
            .scheme("http")
            .authority(self.addr.to_string())
            .path_and_query(path)
            .build()
            .unwrap_or_default()
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Connection>, CallError> {
        if let Some(open) = lock(&self.connection).clone() {
            return Ok(open);
        }
        let mut generation = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(open) = lock(&self.connection).clone() {
            return Ok(open);
        }
        let connection = Arc::new(self.connect(*generation + 1).await?);
        *generation += 1;
        *lock(&self.connection) = Some(connection.clone());
        Ok(connection)
    }

    /// Connection number `generation`, and the task that runs it.
    async fn connect(&self, generation: u64) -> Result<Connection, CallError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| CallError::Unreachable(format!("connecting to {} timed out", self.addr)))?
            .map_err(|e| CallError::Unreachable(format!("connecting to {}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let (sender, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_send_buffer_size(SEND_BUFFER_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| CallError::Unreachable(format!("connection to {}: {e}", self.addr)))?;
        let pings = connection.ping_pong();
        let close = Arc::new(Notify::new());
        // The connection runs in a task of its own until gcd or the network
        // ends it, its PINGs go unanswered, it is replaced and closed, or
        // every handle to it is dropped (the replica departed: the task
        // holds no handle, only a weak reference through which it takes the
        // connection out of use). Dropping it drops every stream h2 holds.
        let held = Arc::downgrade(&self.connection);
        let closed = close.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = keep_alive(pings) => {}
                _ = closed.notified() => {}
            }
            if let Some(held) = held.upgrade() {
                take_out_of_use(&held, generation);
            }
        });
        Ok(Connection {
            generation,
            sender,
            taken: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            stream_ended: Notify::new(),
            close,
        })
    }

    fn forget(&self, generation: u64) {
        take_out_of_use(&self.connection, generation);
    }
}

/// Sends `request` and `body` on `stream`'s connection and reads the
/// answer's message (at most `max_answer_bytes` with its prefix), marking
/// the stream ended once h2 has seen it end.
async fn exchange(
    sender: &SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
    max_answer_bytes: usize,
    stream: &mut TakenStream<'_>,
) -> Result<Bytes, CallError> {
    // A stream is free (taken above), so h2 opens this one at once rather
    // than queueing it.
    let mut sender = sender.clone();
    let sent = sender
        .send_request(request, false)
        .and_then(|(response, mut send)| {
            send.send_data(body, true)?;
            Ok(response)
        });
    let response = match sent {
        Ok(response) => response.await,
        Err(error) => Err(error),
    };
    let response = response.map_err(|error| stream.broken(error))?;
    let (parts, mut body) = response.into_parts();
    stream.ended = body.is_end_stream();
    if parts.status != http::StatusCode::OK {
        return Err(not_grpc(parts.status));
    }
    // A Trailers-Only answer carries its status in the headers, and no
    // message: an error, or a broken answer if it says OK.
    match status_of(&parts.headers) {
        Some(Ok(())) => return Err(CallError::Broken("OK without a message".into())),
        Some(Err(error)) => return Err(error),
        None => {}
    }
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|error| stream.broken(error))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if message.len() + chunk.len() > max_answer_bytes {
            return Err(CallError::Broken("an answer too large".into()));
        }
        message.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await;
    stream.ended = true;
    let trailers = trailers.map_err(|error| stream.broken(error))?;
    match trailers.as_ref().and_then(status_of) {
        None => Err(CallError::Broken("an answer without grpc-status".into())),
        Some(Err(error)) => Err(error),
        Some(Ok(())) => Ok(message.freeze()),
    }
}

/// PINGs the peer every [`KEEP_ALIVE_INTERVAL`]; returns when one goes
/// unanswered for [`KEEP_ALIVE_TIMEOUT`], which ends the connection.
async fn keep_alive(pings: Option<h2::PingPong>) {
    // h2 hands out one PingPong per connection, and this is the only taker.
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    let mut interval = tokio::time::interval(KEEP_ALIVE_INTERVAL);
    interval.reset();
    loop {
        interval.tick().await;
        let pong = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, pings.ping(h2::Ping::opaque()));
        if !matches!(pong.await, Ok(Ok(_))) {
            return;
        }
    }
}

/// The message in a framed answer.
fn decode<M: Message + Default>(message: Bytes) -> Result<M, CallError> {
    let broken = |what: String| Err(CallError::Broken(what));
    let length = match framing::message_length(&message) {
        None => return broken("a message shorter than its prefix".into()),
        Some(Err(err)) => return broken(err.to_string()),
        Some(Ok(length)) => length,
    };
    if length != message.len() - PREFIX_BYTES {
        return broken("a message whose length does not match".into());
    }
    M::decode(&message[PREFIX_BYTES..])
        .map_err(|e| CallError::Broken(format!("an undecodable answer ({e})")))
}

/// An HTTP answer other than 200, as the gRPC spec maps it: what a proxy
/// in front of the replica says when it cannot reach it (429, 502, 503,
/// 504) is `UNAVAILABLE`, to be retried; anything else is not a gRPC
/// answer.
fn not_grpc(status: http::StatusCode) -> CallError {
    match status.as_u16() {
        429 | 502 | 503 | 504 => {
            CallError::Unreachable(format!("HTTP status {status} on the way to the replica"))
        }
        _ => CallError::Broken(format!("HTTP status {status}")),
    }
}

/// The status in `grpc-status` / `grpc-message`, if there is one: `Ok` for
/// OK (every successful call, so nothing more is read or built), the
/// failure otherwise. `UNAVAILABLE` and `RESOURCE_EXHAUSTED` are the
/// replica turning the call away before running it (every permit taken,
/// see `serving::grpc`, or draining): unreachable, so another replica
/// is tried. `DEADLINE_EXCEEDED` is the replica's own call timeout, which
/// may be shorter than the api's deadline: too slow, as if the api's had
/// passed. Other statuses are the replica's final answer.
fn status_of(headers: &HeaderMap) -> Option<Result<(), CallError>> {
    let code = Code::of(headers)?.unwrap_or(Code::Unknown);
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get(GRPC_MESSAGE)
        .map(|m| {
            percent_encoding::percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some(Err(match code {
        Code::Unavailable | Code::ResourceExhausted => {
            CallError::Unreachable(format!("the replica answered {code:?}: {message}"))
        }
        Code::DeadlineExceeded => CallError::DeadlineExceeded,
        code => CallError::Status { code, message },
    }))
}

/// The headers of a call with `grpc-timeout` `millis`.
fn grpc_headers(millis: u64) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(header::CONTENT_TYPE, grpc_wire::content_type());
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(GRPC_TIMEOUT, grpc_wire::timeout::header_value(millis));
    headers
}

/// Takes connection `generation` out of use if it is still the open one,
/// so the next call connects afresh.
fn take_out_of_use(open: &Mutex<Option<Arc<Connection>>>, generation: u64) {
    let mut open = lock(open);
    if open
        .as_ref()
        .is_some_and(|connection| connection.generation == generation)
    {
        *open = None;
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use gcd_proto::GcdResponse;
    use grpc_wire::GRPC_STATUS;

    use super::*;

    #[test]
    fn messages_round_trip_with_the_grpc_frame_prefix() {
        let request = framing::encode(&GcdRequest { a: 12, b: 18 });
        assert_eq!(&request[..5], &[0, 0, 0, 0, 4]);
        assert_eq!(
            GcdRequest::decode(&request[5..]).unwrap(),
            GcdRequest { a: 12, b: 18 }
        );

        let mut answer = BytesMut::new();
        answer.put_u8(0);
        answer.put_u32(2);
        answer.put_slice(&[8, 6]);
        let decode = decode::<GcdResponse>;
        assert!(matches!(
            decode(answer.freeze()),
            Ok(GcdResponse { result: 6 })
        ));
        // The default value is an empty message.
        assert!(matches!(
            decode(Bytes::from_static(&[0, 0, 0, 0, 0])),
            Ok(GcdResponse { result: 0 })
        ));
    }

    #[test]
    fn malformed_answers_count_as_a_broken_replica() {
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &[1, 0, 0, 0, 0][..],    // compressed
            &[0, 0, 0, 0, 3, 8][..], // shorter than it says
            &[0, 0, 0, 0, 1, 8][..], // a truncated varint
        ] {
            let error = decode::<GcdResponse>(Bytes::copy_from_slice(bad)).unwrap_err();
            assert!(matches!(error, CallError::Broken(_)), "{bad:?}: {error}");
        }
    }

    #[test]
    fn statuses_come_from_grpc_status_and_grpc_message() {
        let mut headers = HeaderMap::new();
        assert!(status_of(&headers).is_none());
        headers.insert(GRPC_STATUS, Code::InvalidArgument.header_value());
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("bad%20input"));
        let error = status_of(&headers).unwrap().unwrap_err();
        let CallError::Status { code, message } = error else {
            panic!("{error}")
        };
        assert_eq!(
            (code, message.as_str()),
            (Code::InvalidArgument, "bad input")
        );
        // Turned away before running: another replica may take it.
        for turned_away in [Code::ResourceExhausted, Code::Unavailable] {
            headers.insert(GRPC_STATUS, turned_away.header_value());
            let error = status_of(&headers).unwrap().unwrap_err();
            assert!(matches!(error, CallError::Unreachable(_)), "{error}");
        }
        headers.insert(GRPC_STATUS, Code::DeadlineExceeded.header_value());
        let error = status_of(&headers).unwrap().unwrap_err();
        assert!(matches!(error, CallError::DeadlineExceeded), "{error}");
        headers.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert_eq!(
            status_of(&headers).unwrap().unwrap_err().code(),
            Code::Unknown
        );
        headers.insert(GRPC_STATUS, grpc_wire::Code::Ok.header_value());
        assert!(status_of(&headers).unwrap().is_ok());
    }

    #[test]
    fn http_errors_on_the_way_are_unavailable_and_others_internal() {
        for (http, code) in [
            (503, Code::Unavailable),
            (502, Code::Unavailable),
            (504, Code::Unavailable),
            (429, Code::Unavailable),
            (404, Code::Internal),
            (500, Code::Internal),
        ] {
            let error = not_grpc(http::StatusCode::from_u16(http).unwrap());
            assert_eq!(error.code(), code, "HTTP {http}: {error}");
        }
    }

    #[test]
    fn timeouts_are_sent_in_milliseconds_rounded_up() {
        let upstream = Upstream::new(([127, 0, 0, 1], 1).into(), Duration::from_secs(1));
        let header =
            |timeout| upstream.request(Compute::PATH, timeout).headers()[GRPC_TIMEOUT].clone();
        assert_eq!(header(Duration::from_secs(1)), "1000m");
        assert_eq!(header(Duration::from_micros(999_999)), "1000m");
        assert_eq!(header(Duration::from_nanos(1)), "1m");
        assert_eq!(header(Duration::ZERO), "1m");
        assert_eq!(header(Duration::from_secs(200_000)), "99999999m");
        assert_eq!(header(Duration::from_millis(1500)), "1500m");
        assert_eq!(header(Duration::from_millis(1500)), "1500m");
    }

    #[tokio::test]
    async fn an_unreachable_replica_is_unavailable() {
        // A port nothing listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let upstream = Upstream::new(addr, Duration::from_secs(1));
        let timeout = Duration::from_secs(1);
        let error = upstream
            .compute(1, 2, Instant::now() + timeout, timeout)
            .await
            .unwrap_err();
        assert!(matches!(error, CallError::Unreachable(_)), "{error}");
    }
}
