//! `Compute` calls to one gcd replica, on the `h2` crate directly.
//!
//! The api makes one kind of call, millions of times, so it does not pay for
//! a general gRPC client: no `tonic` channel, no `tower` buffer or reconnect
//! layers, no task per call. A call is a request with fixed headers (and
//! its `grpc-timeout`), a 5-byte frame prefix and a 22-byte message on the
//! connection's HTTP/2 stream, then one data frame and the trailers back
//! (results/ledger.md has what this saves).
//!
//! What a general client gives and this one keeps:
//! - **connecting** on first use, within the connect timeout, one attempt
//!   at a time per replica; a connection that breaks, is closed by gcd
//!   (GOAWAY: idle, or draining) or stops answering keep-alive PINGs is
//!   dropped, and the next call connects again;
//! - **bounds**: gcd's stream limit is respected (a call waits for a free
//!   stream, within its deadline), and what gcd can make us buffer is
//!   bounded by the receive windows, the header list limit and the largest
//!   answer accepted ([`MAX_RESPONSE_BYTES`]);
//! - **errors as gRPC statuses**, classified by the balancer as before:
//!   anything that kept the call from gcd's handler or broke the connection
//!   under it is `UNAVAILABLE` (safe to retry: `Compute` is idempotent); a
//!   status gcd sent is passed on; an answer that is not a valid
//!   `GCDResponse` is `INTERNAL`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use gcd_proto::{
    GcdRequest, GcdResponse,
    framing::{self, GRPC_STATUS, GRPC_TIMEOUT, PREFIX_BYTES},
};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use prost::Message;
use tokio::net::TcpStream;
use tonic::{Code, Status};

/// HTTP/2 receive window, per call and per connection: answers are a few
/// bytes, and this bounds what a replica can make us buffer.
pub const WINDOW: u32 = 64 * 1024;

/// The largest answer accepted, frame prefix included: a `GCDResponse` is
/// at most 11 bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024;

/// Response header blocks larger than this end the connection.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// What h2 may queue of a request's body: a `Compute` request is 27 bytes.
const SEND_BUFFER_BYTES: usize = 1024;

/// How often an idle-looking connection is checked with a PING, and how
/// long the answer may take before the connection counts as dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

const COMPUTE_PATH: &str = "/pb.GCDService/Compute";

/// The open connection to a replica, if any, with a number telling it from
/// earlier ones.
type Open = Option<(u64, SendRequest<Bytes>)>;

/// The connection to one replica, made on first use.
pub struct Upstream {
    addr: SocketAddr,
    uri: Uri,
    connect_timeout: Duration,
    connection: Arc<Mutex<Open>>,
    /// Held while connecting, so that one call connects and the others
    /// wait for it instead of each opening a connection.
    connecting: tokio::sync::Mutex<u64>,
    /// The last call's `grpc-timeout`, in milliseconds, and its headers:
    /// nearly every call sends the same (see [`grpc_timeout`]).
    last_headers: Mutex<(u64, HeaderMap)>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        let uri = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(COMPUTE_PATH)
            .build()
            .unwrap_or_default();
        Self {
            addr,
            uri,
            connect_timeout,
            connection: Arc::new(Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(0),
            last_headers: Mutex::new((0, HeaderMap::new())),
        }
    }

    /// Whether a connection is open (made, and not yet closed or broken).
    pub fn is_connected(&self) -> bool {
        lock(&self.connection).is_some()
    }

    /// One `Compute` call; `timeout` is sent as `grpc-timeout` (the caller
    /// enforces it).
    pub async fn compute(&self, a: u64, b: u64, timeout: Duration) -> Result<u64, Status> {
        let (generation, sender) = self.sender().await?;
        let result = self.call(sender, a, b, timeout).await;
        // A reset stream leaves the connection usable; anything else
        // (GOAWAY, an I/O error, a protocol error) does not.
        if let Err(Failure::Connection(error)) = &result
            && !error.is_reset()
        {
            self.forget(generation);
        }
        result.map_err(Status::from)
    }

    async fn call(
        &self,
        sender: SendRequest<Bytes>,
        a: u64,
        b: u64,
        timeout: Duration,
    ) -> Result<u64, Failure> {
        // Waits while gcd's stream limit is reached.
        let mut sender = sender.ready().await.map_err(Failure::Connection)?;
        let (response, mut body) = sender
            .send_request(self.request(timeout), false)
            .map_err(Failure::Connection)?;
        body.send_data(encode(a, b), true)
            .map_err(Failure::Connection)?;
        let response = response.await.map_err(Failure::Connection)?;
        if response.status() != http::StatusCode::OK {
            return Err(not_grpc(response.status()));
        }
        let (parts, mut body) = response.into_parts();
        // A Trailers-Only answer carries its status in the headers, and no
        // message: an error, or a broken answer if it says OK.
        match status_of(&parts.headers) {
            Some(Ok(())) => return Err(Failure::Answer("OK without a message".into())),
            Some(Err(status)) => return Err(Failure::Status(status)),
            None => {}
        }
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(Failure::Connection)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if message.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::Answer("an answer too large".into()));
            }
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(Failure::Connection)?;
        match trailers.as_ref().and_then(status_of) {
            None => Err(Failure::Answer("an answer without grpc-status".into())),
            Some(Err(status)) => Err(Failure::Status(status)),
            Some(Ok(())) => decode(message.freeze()),
        }
    }

    fn request(&self, timeout: Duration) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers(timeout);
        request
    }

    /// A call's headers: copied from the last call's unless its
    /// `grpc-timeout` differs, which is rare (see [`grpc_timeout`]).
    fn headers(&self, timeout: Duration) -> HeaderMap {
        let millis = grpc_timeout_millis(timeout);
        let mut last = lock(&self.last_headers);
        if last.0 != millis {
            let mut headers = HeaderMap::with_capacity(3);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            headers.insert(GRPC_TIMEOUT, grpc_timeout(millis));
            *last = (millis, headers);
        }
        last.1.clone()
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<(u64, SendRequest<Bytes>), Status> {
        if let Some(open) = lock(&self.connection).clone() {
            return Ok(open);
        }
        let mut generation = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(open) = lock(&self.connection).clone() {
            return Ok(open);
        }
        let sender = self.connect(*generation + 1).await.map_err(Status::from)?;
        *generation += 1;
        let open = (*generation, sender);
        *lock(&self.connection) = Some(open.clone());
        Ok(open)
    }

    /// Connection number `generation`, and the task that runs it.
    async fn connect(&self, generation: u64) -> Result<SendRequest<Bytes>, Failure> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| Failure::Connect(format!("connecting to {} timed out", self.addr)))?
            .map_err(|e| Failure::Connect(format!("connecting to {}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let (sender, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            .max_send_buffer_size(SEND_BUFFER_BYTES)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(Failure::Connection)?;
        let pings = connection.ping_pong();
        // The connection runs in a task of its own until gcd or the network
        // ends it, its PINGs go unanswered, or every handle to it is dropped
        // (the replica departed: the task holds no handle, only a weak
        // reference through which it takes the connection out of use).
        let slot = Arc::downgrade(&self.connection);
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = keep_alive(pings) => {}
            }
            if let Some(slot) = slot.upgrade() {
                take_out_of_use(&slot, generation);
            }
        });
        Ok(sender)
    }

    fn forget(&self, generation: u64) {
        take_out_of_use(&self.connection, generation);
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

/// Why a call failed, before it becomes a gRPC status.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The connection or the call's stream failed: the call may never have
    /// reached gcd's handler.
    Connection(h2::Error),
    /// gcd answered with this status.
    Status(Status),
    /// gcd answered with something that is not a `Compute` answer.
    Answer(String),
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Connect(message) => Status::unavailable(message),
            Failure::Connection(error) => {
                Status::unavailable(format!("connection to gcd: {error}"))
            }
            Failure::Status(status) => status,
            Failure::Answer(what) => Status::internal(format!("gcd sent {what}")),
        }
    }
}

fn encode(a: u64, b: u64) -> Bytes {
    framing::encode(&GcdRequest { a, b })
}

fn decode(message: Bytes) -> Result<u64, Failure> {
    let length = match framing::message_length(&message) {
        None => return Err(Failure::Answer("a message shorter than its prefix".into())),
        Some(Err(err)) => return Err(Failure::Answer(err.to_string())),
        Some(Ok(length)) => length,
    };
    if length != message.len() - PREFIX_BYTES {
        return Err(Failure::Answer(
            "a message whose length does not match".into(),
        ));
    }
    GcdResponse::decode(&message[PREFIX_BYTES..])
        .map(|response| response.result)
        .map_err(|e| Failure::Answer(format!("an undecodable answer ({e})")))
}

/// An HTTP answer other than 200, as the gRPC spec maps it: what a proxy
/// in front of gcd says when it cannot reach it (429, 502, 503, 504) is
/// `UNAVAILABLE`, to be retried; anything else is not a gRPC answer.
fn not_grpc(status: http::StatusCode) -> Failure {
    match status.as_u16() {
        429 | 502 | 503 | 504 => Failure::Status(Status::unavailable(format!(
            "HTTP status {status} on the way to gcd"
        ))),
        _ => Failure::Answer(format!("HTTP status {status}")),
    }
}

/// The status in `grpc-status` / `grpc-message`, if there is one: `Ok` for
/// OK (every successful call, so nothing more is read or built), the whole
/// status otherwise.
fn status_of(headers: &HeaderMap) -> Option<Result<(), Status>> {
    // An answer's header blocks hold a field or two: comparing their names
    // costs less than hashing the one looked for.
    let code = headers
        .iter()
        .find_map(|(name, value)| (name == GRPC_STATUS).then_some(value))?;
    if code.as_bytes() == b"0" {
        return Some(Ok(()));
    }
    let code = std::str::from_utf8(code.as_bytes())
        .ok()
        .and_then(|code| code.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    let message = headers
        .get("grpc-message")
        .map(|m| {
            percent_encoding::percent_decode(m.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some(Err(Status::new(code, message)))
}

/// `grpc-timeout` is sent in whole milliseconds, rounded up so that it
/// never reads as already passed (at most 8 digits: 27 hours; deadlines are
/// seconds). Milliseconds rather than anything finer because the value then
/// repeats from call to call (a first attempt's time is the whole
/// deadline, or half of it), so the header value is made once, and HPACK
/// sends a repeated header as a one-byte index instead of a new literal for
/// both ends to Huffman-code and enter in their tables (results/ledger.md).
fn grpc_timeout_millis(timeout: Duration) -> u64 {
    timeout.as_nanos().div_ceil(1_000_000).clamp(1, 99_999_999) as u64
}

/// The `grpc-timeout` value for `millis` (from [`grpc_timeout_millis`]).
fn grpc_timeout(millis: u64) -> HeaderValue {
    let mut value = BytesMut::with_capacity(9);
    value.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes());
    value.extend_from_slice(b"m");
    // Digits and a letter: always a valid header value.
    HeaderValue::from_maybe_shared(value.freeze()).unwrap_or(HeaderValue::from_static("99999999m"))
}

/// Takes connection `generation` out of use if it is still the open one,
/// so the next call connects afresh.
fn take_out_of_use(open: &Mutex<Open>, generation: u64) {
    let mut open = lock(open);
    if open
        .as_ref()
        .is_some_and(|(number, _)| *number == generation)
    {
        *open = None;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    #[test]
    fn messages_round_trip_with_the_grpc_frame_prefix() {
        let request = encode(12, 18);
        assert_eq!(&request[..5], &[0, 0, 0, 0, 4]);
        assert_eq!(
            GcdRequest::decode(&request[5..]).unwrap(),
            GcdRequest { a: 12, b: 18 }
        );

        let mut answer = BytesMut::new();
        answer.put_u8(0);
        answer.put_u32(2);
        answer.put_slice(&[8, 6]);
        assert!(matches!(decode(answer.freeze()), Ok(6)));
        // The default value is an empty message.
        assert!(matches!(
            decode(Bytes::from_static(&[0, 0, 0, 0, 0])),
            Ok(0)
        ));
    }

    #[test]
    fn malformed_answers_are_internal_errors() {
        for bad in [
            &[][..],
            &[0, 0, 0][..],
            &[1, 0, 0, 0, 0][..],    // compressed
            &[0, 0, 0, 0, 3, 8][..], // shorter than it says
            &[0, 0, 0, 0, 1, 8][..], // a truncated varint
        ] {
            let status = Status::from(decode(Bytes::copy_from_slice(bad)).unwrap_err());
            assert_eq!(status.code(), Code::Internal, "{bad:?}");
        }
    }

    #[test]
    fn statuses_come_from_grpc_status_and_grpc_message() {
        let mut headers = HeaderMap::new();
        assert!(status_of(&headers).is_none());
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert("grpc-message", HeaderValue::from_static("too%20many"));
        let status = status_of(&headers).unwrap().unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::ResourceExhausted, "too many")
        );
        headers.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(
            status_of(&headers).unwrap().unwrap_err().code(),
            Code::Unknown
        );
        headers.insert("grpc-status", HeaderValue::from_static("0"));
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
            let status = Status::from(not_grpc(http::StatusCode::from_u16(http).unwrap()));
            assert_eq!(status.code(), code, "HTTP {http}: {status}");
        }
    }

    #[test]
    fn timeouts_are_sent_in_milliseconds_rounded_up() {
        let upstream = Upstream::new(([127, 0, 0, 1], 1).into(), Duration::from_secs(1));
        let header = |timeout| upstream.headers(timeout)[GRPC_TIMEOUT].clone();
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
        let status = upstream
            .compute(1, 2, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status}");
    }
}
