//! Serves gRPC over HTTP/2 (the methods registered in a
//! [`GrpcRoutes`]) with every connection, stream, message and byte
//! bounded.
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
//!   `max_calls` permits on the whole port. When the port is full, a new
//!   call takes the permits of the connection holding shared permits that
//!   has gone longest without a call ending (a client holding calls open
//!   without sending them), which is closed; a connection within its
//!   reserved calls is never the one. At most [`MAX_WAITING_CALLS`] calls
//!   wait for such a permit at once (the moment it takes the evicted
//!   connection to let go); beyond that, or when the new call's own
//!   connection holds every permit, it is answered `RESOURCE_EXHAUSTED`.
//!   Every call ends within `call_timeout` (or the client's shorter
//!   `grpc-timeout`), request and response streams included, except
//!   health `Watch` streams, whose request must still arrive in time. A call that runs out of our time means a client
//!   that stalled it (our handlers answer in microseconds): its connection
//!   is dropped.
//! - **answers not yet sent**: a call ends, and gives its permit back, only
//!   when h2 has written its whole answer ([`AnswerBytes`]), so answer
//!   bytes a client does not take count against the same permits as calls.
//!   A connection may have [`MAX_UNSENT_ANSWERS_PER_CONNECTION`] answers
//!   waiting to be written; its further calls wait in h2's queue, unread
//!   (and, like every stream, within its stream limit). A connection
//!   whose open calls see none of them end (answers written included) for
//!   longer than the call and write timeouts is dropped: a client that
//!   stops granting flow-control window for our answers is stalled, not
//!   idle, however well it answers PINGs.
//! - **bytes**: flow-control windows ([`STREAM_WINDOW`],
//!   [`CONNECTION_WINDOW`]) bound what a client may send before we read it,
//!   [`MAX_FRAME_BYTES`] and [`MAX_HEADER_LIST_BYTES`] what one frame or
//!   header block may take, [`SEND_BUFFER_BYTES`] what we queue per stream
//!   for a client that does not read, and `write_timeout` how long it may
//!   not read ([`GuardedIo`]).
//! - **messages**: every request message's prefix is read as it arrives
//!   ([`RequestBody`]); one over its method's limit
//!   ([`super::routes::DEFAULT_MAX_MESSAGE_BYTES`] unless the registration
//!   states more) is refused with `RESOURCE_EXHAUSTED` before the service
//!   decodes it, whatever the service would itself accept.
//!
//! A request whose content type is not `application/grpc[+proto]` is
//! answered HTTP 415, as the gRPC over HTTP/2 spec says.
//!
//! h2 itself bounds what is left: rapid resets, streams reset for protocol
//! errors, and PING or SETTINGS floods (it answers one at a time, reading
//! nothing more until the answer is sent).
//!
//! The connection is the `h2` crate's server, driven here rather than
//! through hyper: a unary call whose request has arrived (nearly every
//! call) is answered inside the connection's task as soon as it is
//! accepted, without a task of its own, and the answers to every call read
//! in one go leave in one write. Only a call that has to wait (for its
//! request, a permit, or the client's window) gets a task
//! (results/ledger.md has what this saves).

use std::{
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use bytes::{Buf, Bytes};
use grpc_wire::{Code, GRPC_MESSAGE, GRPC_STATUS, framing::PREFIX_BYTES, is_grpc, trailers_only};
use h2::{
    Ping, PingPong, Reason, RecvStream, SendStream,
    server::{Connection, SendResponse},
};
use http_body::{Body, Frame};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{Instant, Sleep},
};

use super::{
    Activity, InFlight, Slot, Slots, accept_loop,
    io::GuardedIo,
    routes::{Answer, GrpcRoutes, Reply, Route},
};

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

/// Calls that may wait at once for the permits of an evicted connection.
pub const MAX_WAITING_CALLS: usize = 16;

/// Calls every connection may have open without taking one of the port's
/// shared permits: a client's own share, which no other client can take.
pub const RESERVED_CALLS_PER_CONNECTION: usize = 2;

/// Answers a connection may have waiting in h2 to be written (for the
/// client's window, or for the socket); its further calls wait, unread,
/// until some leave. A client that reads has the answers to about one
/// batch of calls ([`BATCH`]) waiting, for the moment until h2 next writes.
pub const MAX_UNSENT_ANSWERS_PER_CONNECTION: usize = 2 * BATCH;

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
}

impl Limits {
    /// The most a connection told to close may still take.
    pub fn close_grace(&self) -> Duration {
        self.call_timeout + self.write_timeout
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets
/// calls in flight finish (at most [`Limits::close_grace`]).
pub async fn serve(
    listener: TcpListener,
    service: GrpcRoutes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http2 = h2::server::Builder::new();
    http2
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .max_send_buffer_size(SEND_BUFFER_BYTES);
    let port = Arc::new(Port {
        calls: Arc::new(Semaphore::new(limits.max_calls)),
        waiting: Arc::new(Semaphore::new(MAX_WAITING_CALLS)),
        limits,
        http2,
    });
    accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        move |stream, slot| drive(stream, service.clone(), port.clone(), slot),
    )
    .await;
}

/// What every connection of a port shares.
struct Port {
    /// A permit per call in flight.
    calls: Arc<Semaphore>,
    /// A permit per call waiting for one of `calls`.
    waiting: Arc<Semaphore>,
    limits: Limits,
    http2: h2::server::Builder,
}

/// How far past the call and write timeouts a connection's calls may go
/// without any progress before the connection is dropped: the calls' own
/// deadlines and the write timeout fire first.
const STALL_MARGIN: Duration = Duration::from_secs(1);

/// Runs one connection until it ends, closing it when it has been silent,
/// idle or stalling for too long, when it is evicted (for a new connection,
/// or because one of its calls ran out of time), or when the server stops.
async fn drive(stream: TcpStream, service: GrpcRoutes, port: Arc<Port>, mut slot: Slot) {
    let limits = port.limits;
    let activity = slot.activity.clone();
    let slots = slot.slots.clone();
    let mut check = pin!(tokio::time::sleep_until(
        Instant::now() + limits.handshake_timeout
    ));
    let mut evicted = pin!(activity.evicted());
    let mut stopping = pin!(slot.stopping.wait());

    let io = GuardedIo::new(stream, limits.write_timeout);
    let connection = tokio::select! {
        biased;
        () = &mut evicted => return tracing::debug!("connection evicted before its handshake"),
        () = &mut stopping => return,
        () = &mut check => return tracing::debug!("no handshake within the handshake timeout; dropped"),
        handshake = port.http2.handshake::<_, AnswerBytes>(io) => match handshake {
            Ok(connection) => connection,
            Err(err) => return tracing::debug!(error = %err, "HTTP/2 handshake failed"),
        },
    };
    let mut calls = Calls {
        connection,
        service,
        port: port.clone(),
        activity: activity.clone(),
        slots,
    };
    let mut keep_alive = KeepAlive::new(calls.connection.ping_pong(), &limits);

    let mut closing = false;
    // Whether `check` is due by the stall bound of calls in flight. While
    // it is not (before the first call, or idle), the check is due later
    // (the handshake or idle timeout), so the first call to start brings
    // it forward: a stalled call is found within its bound, not after an
    // idle timeout that may be far longer.
    let mut watching_calls = false;
    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(ended) = calls.poll_serve(cx) {
                return Poll::Ready(Event::Ended(ended));
            }
            if !watching_calls && !closing && activity.in_flight() > 0 {
                return Poll::Ready(Event::Check);
            }
            if evicted.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Evicted);
            }
            if !closing && stopping.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stopping);
            }
            if keep_alive.poll(cx).is_ready() {
                return Poll::Ready(Event::PeerGone);
            }
            check.as_mut().poll(cx).map(|()| Event::Check)
        })
        .await;
        let reason = match event {
            Event::Ended(result) => return log_end(result),
            Event::Evicted => {
                return tracing::debug!(
                    "connection closed: evicted for a new one, or a call's client stalled"
                );
            }
            Event::PeerGone => return tracing::debug!("keep-alive PING unanswered; dropped"),
            Event::Check if closing => {
                return tracing::debug!("connection did not close in time; dropped");
            }
            Event::Check => match next_check(&activity, &limits) {
                Check::Wait(until) => {
                    watching_calls = activity.in_flight() > 0;
                    check.as_mut().reset(until);
                    continue;
                }
                Check::Drop(why) => return tracing::debug!("{why}; dropped"),
                Check::Idle => "idle",
            },
            Event::Stopping => "server stopping",
        };
        tracing::trace!(reason, "closing connection (GOAWAY)");
        calls.connection.graceful_shutdown();
        closing = true;
        check.as_mut().reset(Instant::now() + limits.close_grace());
    }
}

/// What woke a connection's driver.
enum Event {
    /// The connection ended (the client closed it, it failed, or it
    /// finished closing).
    Ended(Result<(), h2::Error>),
    Evicted,
    Stopping,
    /// A keep-alive PING went unanswered.
    PeerGone,
    /// Time to look at the connection's activity.
    Check,
}

/// What a connection's activity says to do.
enum Check {
    /// Nothing yet: look again then.
    Wait(Instant),
    /// Silent or stalled: drop it.
    Drop(&'static str),
    /// Idle for long enough: ask the client to close it.
    Idle,
}

fn next_check(activity: &Activity, limits: &Limits) -> Check {
    let Some(last_progress) = activity.last_progress() else {
        return Check::Drop("no call within the handshake timeout");
    };
    let now = Instant::now();
    if activity.in_flight() > 0 {
        // Calls end within the call timeout, and their answers leave within
        // the write timeout of a client that reads; a connection that has
        // had calls in flight for longer without any of them ending (their
        // answers written) is one whose client stopped sending, or stopped
        // granting us window.
        let stalled_at =
            last_progress + limits.call_timeout.max(limits.write_timeout) + STALL_MARGIN;
        if now >= stalled_at {
            return Check::Drop("calls made no progress");
        }
        Check::Wait(stalled_at)
    } else if !activity.is_idle() {
        Check::Wait(now + limits.idle_timeout)
    } else if now >= last_progress + limits.idle_timeout {
        Check::Idle
    } else {
        Check::Wait(last_progress + limits.idle_timeout)
    }
}

fn log_end(result: Result<(), h2::Error>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

/// A request and the handle to answer it, as h2 hands them over.
type Accepted = (Request<RecvStream>, SendResponse<AnswerBytes>);

/// Calls started at a time, whose answers leave in one write.
const BATCH: usize = 16;

/// One connection's calls: accepts them, admits them with a permit, and
/// answers them.
struct Calls {
    connection: Connection<GuardedIo, AnswerBytes>,
    service: GrpcRoutes,
    port: Arc<Port>,
    activity: Arc<Activity>,
    slots: Arc<Slots>,
}

impl Calls {
    /// Drives the connection: reads frames, starts the calls they open and
    /// writes what the calls answered. Ready when the connection has ended.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        // Calls accepted and not yet started: a list for this poll only, so
        // that an idle connection holds none.
        let mut accepted: Vec<Accepted> = Vec::new();
        loop {
            // Take the calls the frames read so far opened (up to a batch)
            // before answering any, so that their answers leave in one
            // write: h2 writes out what is queued each time it runs out of
            // input.
            while accepted.len() < BATCH {
                // A connection with as many answers waiting to be written
                // as it may have starts no new call until some leave: h2
                // goes on reading (PINGs, window updates) and writing, and
                // the calls it reads wait in its queue, within the stream
                // limit.
                if self.unsent_full(accepted.len()) {
                    if let Poll::Ready(ended) = self.connection.poll_closed(cx) {
                        return Poll::Ready(ended);
                    }
                    if self.unsent_full(accepted.len()) {
                        break;
                    }
                }
                match self.connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok(call))) => {
                        if accepted.capacity() == 0 {
                            accepted.reserve_exact(BATCH);
                        }
                        accepted.push(call);
                    }
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if accepted.is_empty() {
                return Poll::Pending;
            }
            for (request, respond) in accepted.drain(..) {
                self.start(request, respond, cx);
            }
        }
    }

    /// Whether the answers waiting to be written, with one for each of the
    /// `accepted` calls not started yet, fill the connection's share.
    fn unsent_full(&self, accepted: usize) -> bool {
        self.activity.unsent() + accepted >= MAX_UNSENT_ANSWERS_PER_CONNECTION
    }

    /// Starts a call: refused at once, answered at once, or given a task to
    /// wait in.
    fn start(
        &mut self,
        request: Request<RecvStream>,
        mut respond: SendResponse<AnswerBytes>,
        cx: &mut Context<'_>,
    ) {
        if !is_grpc(request.headers()) {
            let _ = respond.send_response(unsupported_media_type(), true);
            return;
        }
        let limits = &self.port.limits;
        let (timeout, ours) = match grpc_wire::timeout::parse(request.headers()) {
            Some(theirs) if theirs < limits.call_timeout => (theirs, false),
            _ => (limits.call_timeout, true),
        };
        let deadline = Deadline {
            at: Instant::now() + timeout,
            ours,
            timer: None,
        };
        let route = self.service.route(request.uri().path());
        let long_lived = route.long_lived;
        let request = request.map(|stream| RequestBody::new(stream, route.max_message_bytes));
        // Calls start from this task, one at a time, so the count cannot
        // grow between the check and the start.
        let permit = if self.activity.open() < RESERVED_CALLS_PER_CONNECTION {
            None
        } else if let Ok(permit) = self.port.calls.clone().try_acquire_owned() {
            Some(permit)
        } else {
            return self.queue(request, route, respond, deadline);
        };
        let in_flight = self.activity.start_holding(permit);
        let call = self.service.call(request, route);
        let mut call = Box::pin(answer(call, respond, deadline, in_flight, long_lived));
        if call.as_mut().poll(cx).is_pending() {
            tokio::spawn(call);
        }
    }

    /// A call that found every permit taken: it waits for the permits of the
    /// connection evicted for it, or is refused.
    fn queue(
        &mut self,
        request: Request<RequestBody>,
        route: Route,
        respond: SendResponse<AnswerBytes>,
        deadline: Deadline,
    ) {
        let waiting = match self.port.waiting.clone().try_acquire_owned() {
            Ok(waiting) if self.slots.evict_stalest_holder(&self.activity) => waiting,
            _ => return refuse(respond),
        };
        // The evicted connection's calls give their permits back as soon as
        // its task ends; wait for one (rare: only under attack).
        let mut service = self.service.clone();
        let calls = self.port.calls.clone();
        let activity = self.activity.clone();
        tokio::spawn(async move {
            let permit = tokio::time::timeout_at(deadline.at, calls.acquire_owned()).await;
            drop(waiting);
            let Ok(Ok(permit)) = permit else {
                return refuse(respond);
            };
            let in_flight = activity.start_holding(Some(permit));
            answer(
                service.call(request, route),
                respond,
                deadline,
                in_flight,
                route.long_lived,
            )
            .await;
        });
    }
}

/// Answers a call that found no permit: `RESOURCE_EXHAUSTED`, which the
/// client may retry.
fn refuse(mut respond: SendResponse<AnswerBytes>) {
    let _ = respond.send_response(
        status_head(
            Code::ResourceExhausted,
            "too many calls in flight, try again",
        ),
        true,
    );
}

/// When a call runs out of time, and whose time it was.
struct Deadline {
    at: Instant,
    /// The server's own limit, not a shorter one the client asked for: a
    /// call that reaches it was stalled by its client.
    ours: bool,
    /// Started only when the call has to wait: most never do.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
    }

    /// The call ran out of time: if it was ours, its client stalled it, so
    /// its connection goes.
    fn expired(&self, in_flight: &InFlight) {
        if self.ours {
            in_flight.close_connection();
        }
    }
}

/// What a call's wait for its answer ended with.
// Lives on the stack for a moment; boxing the answer would cost every call
// an allocation.
#[allow(clippy::large_enum_variant)]
enum Waited {
    Answered(Response<Reply>),
    /// The client reset the stream: nobody to answer.
    Reset,
    TimedOut,
}

/// What a call's wait for the next frame of its answer ended with.
enum Next {
    Frame(Frame<Bytes>),
    /// The body has nothing more for now, or we have handed h2 as much as
    /// it may queue: the data frame read last goes out before we wait.
    HandOver,
    End,
    Failed,
    /// The client reset the stream, or the connection is gone.
    Gone,
    TimedOut,
}

/// Answers one call: waits for the service's answer, then sends it under
/// flow control, all within the call's deadline (the answer of a long-lived
/// stream excepted). The call's permit is held until h2 has written the
/// whole answer, or the answer is abandoned: the last data frame carries it
/// ([`AnswerBytes`]).
async fn answer(
    call: Answer,
    mut respond: SendResponse<AnswerBytes>,
    mut deadline: Deadline,
    mut in_flight: InFlight,
    long_lived: bool,
) {
    let mut call = pin!(call);
    let waited = poll_fn(|cx| {
        if let Poll::Ready(response) = call.as_mut().poll(cx) {
            return Poll::Ready(Waited::Answered(response));
        }
        if respond.poll_reset(cx).is_ready() {
            return Poll::Ready(Waited::Reset);
        }
        deadline.poll(cx).map(|()| Waited::TimedOut)
    })
    .await;
    let response = match waited {
        Waited::Answered(response) => response,
        Waited::Reset => return,
        Waited::TimedOut => {
            deadline.expired(&in_flight);
            let _ =
                respond.send_response(status_head(Code::DeadlineExceeded, CALL_TIMED_OUT), true);
            return;
        }
    };
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(mut send) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if end {
        return;
    }
    if long_lived {
        in_flight.settle_long_lived();
    }
    // Data read from the body so far. Small answers (every unary one) go
    // out without asking for window; past SEND_BUFFER_BYTES, each further
    // frame waits until the client has taken what is queued, so a client
    // that does not read holds at most that and one frame.
    let mut sent = 0;
    // The data frame read last, held back while the body has more at once:
    // if the body ends right after it, it is the answer's last frame, which
    // carries the call's permit.
    let mut last: Option<Bytes> = None;
    loop {
        let next = poll_fn(|cx| {
            if sent >= SEND_BUFFER_BYTES {
                if last.is_some() {
                    return Poll::Ready(Next::HandOver);
                }
                send.reserve_capacity(1);
                while send.capacity() == 0 {
                    match send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Next::Gone),
                        Poll::Pending => {
                            return abandoned(
                                &mut send,
                                (!long_lived).then_some(&mut deadline),
                                cx,
                            );
                        }
                    }
                }
            }
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Next::Frame(frame)),
                Poll::Ready(Some(Err(_))) => Poll::Ready(Next::Failed),
                Poll::Ready(None) => Poll::Ready(Next::End),
                Poll::Pending if last.is_some() => Poll::Ready(Next::HandOver),
                Poll::Pending => abandoned(&mut send, (!long_lived).then_some(&mut deadline), cx),
            }
        })
        .await;
        match next {
            Next::Frame(frame) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len();
                    if let Some(earlier) = last.replace(data)
                        && send.send_data(AnswerBytes::from(earlier), false).is_err()
                    {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if finish(&mut send, last, sent, in_flight, false).is_ok() {
                            let _ = send.send_trailers(trailers);
                        }
                        return;
                    }
                }
            },
            Next::HandOver => {
                if let Some(data) = last.take()
                    && send.send_data(AnswerBytes::from(data), false).is_err()
                {
                    return;
                }
            }
            Next::End => {
                let _ = finish(&mut send, last, sent, in_flight, true);
                return;
            }
            Next::Failed => return send.send_reset(Reason::INTERNAL_ERROR),
            Next::Gone => return,
            Next::TimedOut => {
                deadline.expired(&in_flight);
                let mut trailers = HeaderMap::with_capacity(2);
                trailers.insert(GRPC_STATUS, Code::DeadlineExceeded.header_value());
                trailers.insert(GRPC_MESSAGE, HeaderValue::from_static(CALL_TIMED_OUT));
                if finish(&mut send, last, sent, in_flight, false).is_ok() {
                    let _ = send.send_trailers(trailers);
                }
                return;
            }
        }
    }
}

/// Hands h2 the end of an answer of which `sent` bytes of data were read,
/// `last` the frame of them not handed over yet: the last data frame
/// carries the call's permit (an empty one if every frame has gone, for
/// data handed earlier may still wait for the client's window), so the
/// call keeps it until h2 has written all of its data.
fn finish(
    send: &mut SendStream<AnswerBytes>,
    last: Option<Bytes>,
    sent: usize,
    mut in_flight: InFlight,
    end_of_stream: bool,
) -> Result<(), h2::Error> {
    if sent == 0 && !end_of_stream {
        return Ok(());
    }
    in_flight.await_sending();
    let data = AnswerBytes {
        bytes: last.unwrap_or_default(),
        _call: Some(in_flight),
    };
    send.send_data(data, end_of_stream)
}

/// Answer data as h2 holds it until it is written. The last frame of an
/// answer carries its call's [`InFlight`]: h2 drops a frame once it has
/// written it (or with its stream or connection), and writes a stream's
/// frames in order, so the call stays in flight, and keeps its permit, until
/// its whole answer has gone however long the client withholds its window.
pub struct AnswerBytes {
    bytes: Bytes,
    /// The call this frame ends: it ends when h2 drops the frame.
    _call: Option<InFlight>,
}

impl From<Bytes> for AnswerBytes {
    fn from(bytes: Bytes) -> Self {
        Self { bytes, _call: None }
    }
}

impl Buf for AnswerBytes {
    fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes
    }

    fn advance(&mut self, count: usize) {
        self.bytes.advance(count);
    }
}

/// Whether an answer waiting for its next frame, or for window, is to be
/// abandoned: the client reset the stream, or the deadline (none for a
/// long-lived stream's answer) passed.
fn abandoned(
    send: &mut SendStream<AnswerBytes>,
    deadline: Option<&mut Deadline>,
    cx: &mut Context<'_>,
) -> Poll<Next> {
    if send.poll_reset(cx).is_ready() {
        return Poll::Ready(Next::Gone);
    }
    match deadline {
        Some(deadline) => deadline.poll(cx).map(|()| Next::TimedOut),
        None => Poll::Pending,
    }
}

const CALL_TIMED_OUT: &str = "the call did not complete within the server's time limit";

/// A call's request body: h2's stream as an [`http_body::Body`], its window
/// given back to the client as its data is taken, and every message's
/// prefix read as it passes: a message over the method's limit ends the
/// body with `RESOURCE_EXHAUSTED` before its bytes are handed on, so no
/// service buffers it. Errors are `tonic::Status`, which tonic's decoder
/// answers as they are.
pub struct RequestBody {
    stream: RecvStream,
    data_done: bool,
    max_message_bytes: usize,
    messages: MessageScan,
}

impl RequestBody {
    fn new(stream: RecvStream, max_message_bytes: usize) -> Self {
        Self {
            stream,
            data_done: false,
            max_message_bytes,
            messages: MessageScan::default(),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(length) = this.messages.refused {
            return Poll::Ready(Some(Err(too_large(length, this.max_message_bytes))));
        }
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    if let Err(length) = this.messages.scan(&data, this.max_message_bytes) {
                        return Poll::Ready(Some(Err(too_large(length, this.max_message_bytes))));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(stream_failed(err)))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(stream_failed(err)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.messages.refused.is_none() && self.stream.is_end_stream()
    }
}

/// The status of a message over its method's limit.
fn too_large(length: usize, limit: usize) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "a message of {length} bytes, over this method's limit of {limit} bytes"
    ))
}

/// A broken stream as tonic sees it (a reset by the client is `CANCELLED`).
fn stream_failed(err: h2::Error) -> tonic::Status {
    tonic::Status::from_error(Box::new(err))
}

/// Where a request's bytes are in its run of messages.
#[derive(Default)]
struct MessageScan {
    /// Bytes of the current message still to pass.
    message_left: usize,
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; PREFIX_BYTES],
    prefix_len: usize,
    /// The length of a message over the limit, once one was seen.
    refused: Option<usize>,
}

impl MessageScan {
    /// Follows `data` through the messages; the length of a message over
    /// `limit` as soon as its prefix has arrived.
    fn scan(&mut self, mut data: &[u8], limit: usize) -> Result<(), usize> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let passed = self.message_left.min(data.len());
                self.message_left -= passed;
                data = &data[passed..];
                continue;
            }
            let taken = (PREFIX_BYTES - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + taken].copy_from_slice(&data[..taken]);
            self.prefix_len += taken;
            data = &data[taken..];
            if self.prefix_len == PREFIX_BYTES {
                self.prefix_len = 0;
                // The flag byte is the handlers' to check.
                let [_flag, length @ ..] = self.prefix;
                let length = u32::from_be_bytes(length) as usize;
                if length > limit {
                    self.refused = Some(length);
                    return Err(length);
                }
                self.message_left = length;
            }
        }
        Ok(())
    }
}

/// PINGs the client every `keepalive_interval`; a PING unanswered for
/// `keepalive_timeout` means the peer has vanished.
struct KeepAlive {
    /// h2 hands out one per connection, and this is the only taker.
    pings: Option<PingPong>,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    interval: Duration,
    timeout: Duration,
}

impl KeepAlive {
    fn new(pings: Option<PingPong>, limits: &Limits) -> Self {
        Self {
            pings,
            timer: Box::pin(tokio::time::sleep(limits.keepalive_interval)),
            awaiting_pong: false,
            interval: limits.keepalive_interval,
            timeout: limits.keepalive_timeout,
        }
    }

    /// Ready when a PING has gone unanswered for too long.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(pings) = self.pings.as_mut() else {
                return Poll::Pending;
            };
            if self.awaiting_pong {
                match pings.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        let next = Instant::now() + self.interval;
                        self.timer.as_mut().reset(next);
                    }
                    // The connection failed, and ends on its own.
                    Poll::Ready(Err(_)) => self.pings = None,
                    Poll::Pending => return self.timer.as_mut().poll(cx),
                }
            } else {
                ready!(self.timer.as_mut().poll(cx));
                if pings.send_ping(Ping::opaque()).is_err() {
                    self.pings = None;
                } else {
                    self.awaiting_pong = true;
                    let give_up = Instant::now() + self.timeout;
                    self.timer.as_mut().reset(give_up);
                }
            }
        }
    }
}

/// A trailers-only gRPC response head: the status, no body.
fn status_head(code: Code, message: &'static str) -> Response<()> {
    trailers_only((), code, HeaderValue::from_static(message))
}

/// HTTP 415, as the gRPC over HTTP/2 spec says for any other content type,
/// so that a plain HTTP client does not read a gRPC error as a success.
fn unsupported_media_type() -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lengths `scan` refuses, feeding `data` in pieces of `piece`.
    fn refused(data: &[u8], piece: usize, limit: usize) -> Option<usize> {
        let mut scan = MessageScan::default();
        data.chunks(piece)
            .find_map(|chunk| scan.scan(chunk, limit).err())
    }

    #[test]
    fn every_messages_prefix_is_read_however_the_bytes_arrive() {
        // Two messages of 3 and 1024 bytes, then one of 1025.
        let mut data = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 4, 0];
        data.extend_from_slice(&[7; 1024]);
        assert_eq!(refused(&data, data.len(), 1024), None);
        data.extend_from_slice(&[0, 0, 0, 4, 1]);
        for piece in [1, 2, 5, 7, 1000, data.len()] {
            assert_eq!(refused(&data, piece, 1024), Some(1025), "{piece}");
        }
        // The flag byte does not hide the length; a huge length is refused.
        assert_eq!(
            refused(&[1, 255, 255, 255, 255], 1, 1024),
            Some(u32::MAX as usize)
        );
        assert_eq!(refused(&[0, 0, 0, 0, 0], 1, 0), None);
    }
}
