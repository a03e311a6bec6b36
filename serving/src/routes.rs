//! What a gRPC port serves, registered in one place so that every method
//! gets the port's bounds without its author doing anything.
//!
//! [`GrpcRoutes::builder`] takes two kinds of registration:
//!
//! - [`unary`](GrpcRoutesBuilder::unary): a unary method of any prost
//!   request and response, answered by a [`Unary`] handler (an async fn or
//!   a trait impl from the request message to the response or a
//!   `tonic::Status`) on the fast lane: the request's frames are read as
//!   they come, the message decoded where it lies, and the answer is one
//!   data frame and the `grpc-status: 0` trailer, inside the connection's
//!   task when the handler does not wait (what made `Compute` cheap,
//!   results/ledger.md);
//! - [`tonic`](GrpcRoutesBuilder::tonic): any tonic-generated service, all
//!   of whose methods go through tonic's router.
//!
//! Whatever is registered gets, without asking:
//!
//! - a message limit, [`DEFAULT_MAX_MESSAGE_BYTES`] unless the
//!   registration states a larger one; the port reads every message's
//!   prefix as it arrives and answers `RESOURCE_EXHAUSTED` to one over its
//!   method's limit before the service sees it ([`super::grpc`]), so a
//!   tonic service's own 4 MiB default never applies;
//! - a line in [`GrpcRoutes::methods`], from which the memory budget sizes
//!   a call by the largest limit and which `--check-config` prints;
//! - `grpc.health.v1` statuses: `SERVING` for the server and every
//!   registered service until the process drains ([`Health`]);
//! - a count of its calls, `grpc_calls_total{method=...}` on the admin
//!   port ([`GrpcMetrics`]);
//! - every connection, stream and call bound of [`super::grpc`].

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use axum::http::{HeaderMap, HeaderValue, Request, Response, header};
use bytes::{BufMut, Bytes, BytesMut};
use grpc_wire::{
    Code, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
    framing::{self, PREFIX_BYTES},
};
use http_body::{Body, Frame};
use prost::Message;
use tonic::{Status, server::NamedService};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Service;

use super::grpc::RequestBody;
use telemetry::metrics::{Counter, Exposition, Metrics};

/// The message limit of every method that does not state one: requests of
/// a few fields, or a service or symbol name. Anything near it is not a
/// real client's.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024;

/// The health method whose stream stays open for as long as the client
/// listens: past the call timeout, once its request has arrived.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// A unary method's handler: what tonic users write in a service trait,
/// without the `Request`/`Response` wrappers. An `async fn(Req) ->
/// Result<Resp, Status>` (or a closure returning such a future) is one.
pub trait Unary<Req, Resp>: Send + Sync + 'static {
    fn call(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send + 'static;
}

impl<F, Fut, Req, Resp> Unary<Req, Resp> for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    fn call(&self, request: Req) -> impl Future<Output = Result<Resp, Status>> + Send + 'static {
        self(request)
    }
}

/// A method and the largest message it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `/package.Service/Method`, or `/package.Service/*` for every method
    /// of a tonic service.
    pub path: String,
    pub max_message_bytes: usize,
}

/// Registers a port's methods; [`GrpcRoutesBuilder::build`] makes the
/// [`GrpcRoutes`] a port serves.
pub struct GrpcRoutesBuilder {
    fast: Vec<FastRoute>,
    tonic: Vec<TonicRoute>,
    router: tonic::service::RoutesBuilder,
}

impl GrpcRoutes {
    pub fn builder() -> GrpcRoutesBuilder {
        GrpcRoutesBuilder {
            fast: Vec::new(),
            tonic: Vec::new(),
            router: tonic::service::Routes::builder(),
        }
    }
}

impl GrpcRoutesBuilder {
    /// Serves the unary method `path` (`/package.Service/Method`) on the
    /// fast lane, with the default message limit.
    pub fn unary<Req, Resp>(self, path: &'static str, handler: impl Unary<Req, Resp>) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
    {
        self.unary_with_limit(path, DEFAULT_MAX_MESSAGE_BYTES, handler)
    }

    /// [`unary`](Self::unary) with a larger message limit, counted in the
    /// memory budget.
    pub fn unary_with_limit<Req, Resp>(
        mut self,
        path: &'static str,
        max_message_bytes: usize,
        handler: impl Unary<Req, Resp>,
    ) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
    {
        self.fast.push(FastRoute {
            path,
            max_message_bytes,
            method: Arc::new(Handler {
                handler,
                types: std::marker::PhantomData,
            }),
        });
        self
    }

    /// Serves every method of a tonic-generated service, with the default
    /// message limit whatever the service itself was told.
    pub fn tonic<S>(self, service: S) -> Self
    where
        S: TonicService,
    {
        self.tonic_with_limit(service, DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// [`tonic`](Self::tonic) with a larger message limit for every method
    /// of the service, counted in the memory budget. (tonic's own limit,
    /// 4 MiB unless the service was told otherwise, stays above it.)
    pub fn tonic_with_limit<S>(mut self, service: S, max_message_bytes: usize) -> Self
    where
        S: TonicService,
    {
        self.tonic.push(TonicRoute {
            prefix: format!("/{}/", S::NAME),
            name: S::NAME,
            max_message_bytes,
        });
        self.router.add_service(service);
        self
    }

    /// Every registered method with its message limit (the health service
    /// the port adds included), for the memory budget and `--check-config`.
    pub fn methods(&self) -> Vec<Method> {
        let fast = self.fast.iter().map(|route| Method {
            path: route.path.to_owned(),
            max_message_bytes: route.max_message_bytes,
        });
        let tonic = self.tonic.iter().map(|route| Method {
            path: format!("{}*", route.prefix),
            max_message_bytes: route.max_message_bytes,
        });
        let health = Method {
            path: format!("/{}/*", HEALTH_SERVICE),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        };
        fast.chain(tonic).chain([health]).collect()
    }

    /// The routes, with `grpc.health.v1.Health` added: `SERVING` for the
    /// server and every registered service until [`Health::not_serving`].
    pub async fn build(mut self) -> (GrpcRoutes, Health) {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut names: Vec<&str> = self
            .fast
            .iter()
            .map(|route| service_of(route.path))
            .chain(self.tonic.iter().map(|route| route.name))
            .collect();
        names.sort_unstable();
        names.dedup();
        let health = Health {
            reporter,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
        };
        health.set(ServingStatus::Serving).await;
        // Listed last already: its route comes last too.
        let methods: Vec<String> = self.methods().into_iter().map(|m| m.path).collect();
        self = self.tonic(health_service);
        let calls = (0..=methods.len()).map(|_| Counter::default()).collect();
        let metrics = Arc::new(GrpcMetrics { methods, calls });
        let routes = GrpcRoutes {
            table: Arc::new(Table {
                fast: self.fast,
                tonic: self.tonic,
            }),
            router: self.router.routes().prepare(),
            metrics,
        };
        (routes, health)
    }
}

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The service part of `/package.Service/Method`.
fn service_of(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').map_or(path, |(service, _)| service)
}

/// What [`GrpcRoutesBuilder::tonic`] takes: a tonic-generated server.
pub trait TonicService:
    Service<
        Request<tonic::body::Body>,
        Response = Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> TonicService for S where
    S: Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The health statuses of a port's services.
pub struct Health {
    reporter: HealthReporter,
    names: Vec<String>,
}

impl Health {
    /// `NOT_SERVING` for the server and every service: probes and clients
    /// stop picking this process.
    pub async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for name in &self.names {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// The calls of every registered method, for the admin port.
pub struct GrpcMetrics {
    /// Paths as [`GrpcRoutesBuilder::methods`] lists them: the fast
    /// methods, the tonic services, then health; one counter more for
    /// paths no registration serves.
    methods: Vec<String>,
    calls: Vec<Counter>,
}

impl GrpcMetrics {
    /// Calls started of the method at `path`, as `methods` lists it.
    pub fn calls(&self, path: &str) -> u64 {
        self.methods
            .iter()
            .position(|method| method == path)
            .map_or(0, |index| self.calls[index].get())
    }
}

impl Metrics for GrpcMetrics {
    fn render(&self, out: &mut Exposition) {
        out.family(
            "grpc_calls_total",
            "counter",
            "gRPC calls started on the port, by method (a tonic service's methods together).",
        );
        let unmatched = std::iter::once("unmatched");
        for (method, calls) in self
            .methods
            .iter()
            .map(String::as_str)
            .chain(unmatched)
            .zip(&self.calls)
        {
            out.sample("grpc_calls_total", &[("method", method)], calls.get());
        }
    }
}

/// Every method a port serves, and how to reach it.
#[derive(Clone)]
pub struct GrpcRoutes {
    table: Arc<Table>,
    router: tonic::service::Routes,
    metrics: Arc<GrpcMetrics>,
}

struct Table {
    fast: Vec<FastRoute>,
    tonic: Vec<TonicRoute>,
}

struct FastRoute {
    path: &'static str,
    max_message_bytes: usize,
    method: Arc<dyn FastMethod>,
}

struct TonicRoute {
    /// `/package.Service/`.
    prefix: String,
    name: &'static str,
    max_message_bytes: usize,
}

/// Where a call goes, found once from its path.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// A fast-lane method's index, or none for tonic's router.
    fast: Option<u16>,
    /// Where the call is counted.
    counter: u16,
    pub max_message_bytes: usize,
    /// A stream meant to stay open past the call timeout.
    pub long_lived: bool,
}

impl GrpcRoutes {
    /// The call counts, for the admin port.
    pub fn metrics(&self) -> Arc<GrpcMetrics> {
        self.metrics.clone()
    }

    /// The route of a call to `path`.
    pub fn route(&self, path: &str) -> Route {
        let table = &self.table;
        if let Some(index) = table.fast.iter().position(|route| route.path == path) {
            return Route {
                fast: Some(index as u16),
                counter: index as u16,
                max_message_bytes: table.fast[index].max_message_bytes,
                long_lived: false,
            };
        }
        let tonic = table
            .tonic
            .iter()
            .position(|route| path.starts_with(route.prefix.as_str()));
        Route {
            fast: None,
            counter: (table.fast.len() + tonic.unwrap_or(table.tonic.len())) as u16,
            max_message_bytes: tonic.map_or(DEFAULT_MAX_MESSAGE_BYTES, |index| {
                table.tonic[index].max_message_bytes
            }),
            long_lived: path == HEALTH_WATCH,
        }
    }

    /// Starts answering `request`, whose route is `route`.
    pub fn call(&mut self, request: Request<RequestBody>, route: Route) -> Answer {
        if let Some(calls) = self.metrics.calls.get(usize::from(route.counter)) {
            calls.inc();
        }
        match route.fast {
            Some(index) => {
                let method = self.table.fast[usize::from(index)].method.clone();
                Answer::Fast(FastCall::new(method, request))
            }
            None => {
                let answer = self.router.call(request.map(tonic::body::Body::new));
                Answer::Other(Box::pin(async move {
                    match answer.await {
                        Ok(response) => response.map(Reply::Other),
                        Err(infallible) => match infallible {},
                    }
                }))
            }
        }
    }
}

/// A call being answered: a fast-lane call without a box, the rest boxed.
pub enum Answer {
    Fast(FastCall<RequestBody>),
    Other(Pin<Box<dyn Future<Output = Response<Reply>> + Send>>),
}

impl Future for Answer {
    type Output = Response<Reply>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Fast(call) => Pin::new(call).poll(cx),
            Answer::Other(answer) => answer.as_mut().poll(cx),
        }
    }
}

/// A fast-lane method with its request and response types erased.
trait FastMethod: Send + Sync {
    /// The answer to `message` (a whole request message, without its
    /// prefix).
    fn answer(&self, message: &[u8]) -> Handling;
}

/// A handler's answer: ready, or a future to wait for.
// Lives on the stack for a moment; boxing the answer would cost every call
// an allocation.
#[allow(clippy::large_enum_variant)]
enum Handling {
    Ready(Response<Reply>),
    Waiting(Pin<Box<dyn Future<Output = Response<Reply>> + Send>>),
}

struct Handler<H, Req, Resp> {
    handler: H,
    types: std::marker::PhantomData<fn(Req) -> Resp>,
}

impl<H, Req, Resp> FastMethod for Handler<H, Req, Resp>
where
    H: Unary<Req, Resp>,
    Req: Message + Default + 'static,
    Resp: Message + 'static,
{
    fn answer(&self, message: &[u8]) -> Handling {
        let request = match Req::decode(message) {
            Ok(request) => request,
            Err(err) => {
                return Handling::Ready(status(
                    Code::Internal,
                    format!("failed to decode Protobuf message: {err}"),
                ));
            }
        };
        let mut call = Box::pin(self.handler.call(request));
        // Most handlers answer without waiting: answered here, with no
        // wake-up to come.
        match call
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            Poll::Ready(result) => Handling::Ready(reply(result)),
            Poll::Pending => Handling::Waiting(Box::pin(async move { reply(call.await) })),
        }
    }
}

/// The answer for what a handler returned.
fn reply<Resp: Message>(result: Result<Resp, Status>) -> Response<Reply> {
    match result {
        Ok(response) => {
            let mut answer = Response::new(Reply::Fast {
                message: Some(framing::encode(&response)),
                trailers: Some(grpc_wire::ok_trailers()),
            });
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, grpc_wire::content_type());
            answer
        }
        Err(status) => failed(status),
    }
}

/// A trailers-only answer carrying `status`, its message percent-encoded
/// as tonic writes it.
fn failed(status: Status) -> Response<Reply> {
    status.into_http()
}

/// The request bytes read so far: usually one data frame holds the whole
/// message, which is then decoded where it lies.
enum Received {
    Nothing,
    One(Bytes),
    Gathered(BytesMut),
}

impl Received {
    fn add(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Received::Nothing) {
            Received::Nothing => Received::One(data),
            Received::One(first) => {
                let mut gathered = BytesMut::with_capacity(first.len() + data.len());
                gathered.put(first);
                gathered.put(data);
                Received::Gathered(gathered)
            }
            Received::Gathered(mut gathered) => {
                gathered.put(data);
                Received::Gathered(gathered)
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Received::Nothing => &[],
            Received::One(bytes) => bytes,
            Received::Gathered(bytes) => bytes,
        }
    }
}

/// A fast-lane call: reads the request to its end, then answers.
///
/// What tonic's unary server checks, this checks too, with the same
/// statuses: compressed requests are refused, a missing, truncated or
/// undecodable message is `INTERNAL`, and so is a second message on the
/// call (tonic reads and drops it: a unary call carries one). A message
/// over the method's limit never gets here: the port refuses it from its
/// prefix ([`RequestBody`]).
pub struct FastCall<B> {
    body: B,
    received: Received,
    method: Arc<dyn FastMethod>,
    /// The compression the request says it uses: none is supported.
    compressed_with: Option<HeaderValue>,
    waiting: Option<Pin<Box<dyn Future<Output = Response<Reply>> + Send>>>,
}

impl<B> FastCall<B> {
    fn new(method: Arc<dyn FastMethod>, request: Request<B>) -> Self {
        let compressed_with = request
            .headers()
            .get(GRPC_ENCODING)
            .filter(|encoding| encoding.as_bytes() != b"identity")
            .cloned();
        Self {
            body: request.into_body(),
            received: Received::Nothing,
            method,
            compressed_with,
            waiting: None,
        }
    }

    /// Checks what has arrived so far: `Some` answer as soon as the request
    /// cannot be served, whatever else arrives.
    fn check(&self) -> Option<Response<Reply>> {
        let received = self.received.bytes();
        let length = match framing::message_length(received)? {
            Ok(length) => length,
            Err(err) => return Some(status(Code::Internal, format!("protocol error: {err}"))),
        };
        (received.len() > PREFIX_BYTES + length).then(|| {
            status(
                Code::Internal,
                "more than one request message on a unary call".into(),
            )
        })
    }

    /// The answer once the request has ended.
    fn answer(&self) -> Handling {
        let received = self.received.bytes();
        match framing::message_length(received) {
            None if received.is_empty() => {
                Handling::Ready(status(Code::Internal, "Missing request message.".into()))
            }
            Some(Ok(length)) if received.len() == PREFIX_BYTES + length => {
                self.method.answer(&received[PREFIX_BYTES..])
            }
            _ => Handling::Ready(status(
                Code::Internal,
                "Unexpected EOF decoding stream.".into(),
            )),
        }
    }
}

impl<B> Future for FastCall<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Output = Response<Reply>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(waiting) = self.waiting.as_mut() {
            return waiting.as_mut().poll(cx);
        }
        if let Some(encoding) = self.compressed_with.take() {
            return Poll::Ready(unsupported_compression(&encoding));
        }
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers from a client carry nothing a unary call reads.
                    if let Ok(data) = frame.into_data() {
                        self.received.add(data);
                        if let Some(refused) = self.check() {
                            return Poll::Ready(refused);
                        }
                    }
                }
                // The port refused a message over the method's limit.
                Some(Err(refused)) if refused.code() == tonic::Code::ResourceExhausted => {
                    return Poll::Ready(failed(refused));
                }
                Some(Err(_)) => {
                    // The client reset the call or the connection broke:
                    // nobody will read this, but the call must end.
                    return Poll::Ready(status(
                        Code::Cancelled,
                        "the request stream was cancelled".into(),
                    ));
                }
                None => match self.answer() {
                    Handling::Ready(answer) => return Poll::Ready(answer),
                    Handling::Waiting(mut waiting) => {
                        let answer = waiting.as_mut().poll(cx);
                        self.waiting = Some(waiting);
                        return answer;
                    }
                },
            }
        }
    }
}

/// tonic's answer to a request compressed with an encoding it lacks.
fn unsupported_compression(encoding: &HeaderValue) -> Response<Reply> {
    let mut answer = status(
        Code::Unimplemented,
        format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ),
    );
    answer
        .headers_mut()
        .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    answer
}

/// A trailers-only answer: the status in the headers, no message.
fn status(code: Code, message: String) -> Response<Reply> {
    let message = HeaderValue::try_from(message)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid request"));
    grpc_wire::trailers_only(
        Reply::Fast {
            message: None,
            trailers: None,
        },
        code,
        message,
    )
}

/// The body of every answer on a gRPC port: a fast-lane method's message
/// and trailer, or what tonic's router answered.
#[derive(Default)]
pub enum Reply {
    #[default]
    Empty,
    Fast {
        message: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Other(tonic::body::Body),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Reply::Fast { message, trailers } => Poll::Ready(
                message
                    .take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            Reply::Other(body) => Pin::new(body).poll_frame(cx),
            Reply::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Fast { message, trailers } => message.is_none() && trailers.is_none(),
            Reply::Other(body) => body.is_end_stream(),
            Reply::Empty => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use grpc_wire::{GRPC_MESSAGE, GRPC_STATUS, framing::message_length};

    use super::*;

    /// Two integers in, their sum out: a handler shaped like `Compute`.
    #[derive(Clone, PartialEq, Message)]
    struct Pair {
        #[prost(uint64, tag = "1")]
        a: u64,
        #[prost(uint64, tag = "2")]
        b: u64,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Sum {
        #[prost(uint64, tag = "1")]
        sum: u64,
    }

    async fn add(Pair { a, b }: Pair) -> Result<Sum, Status> {
        a.checked_add(b)
            .map(|sum| Sum { sum })
            .ok_or_else(|| Status::out_of_range("the sum overflows: 100%"))
    }

    /// A request body whose frames have all arrived.
    struct Arrived(VecDeque<Bytes>);

    impl Body for Arrived {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    /// What the method answers to a request made of `frames`: the status,
    /// its message, and the sum if there is one.
    fn answer(frames: &[&[u8]], encoding: Option<&str>) -> (Code, String, Option<u64>) {
        let mut request = Request::new(Arrived(
            frames.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
        ));
        if let Some(encoding) = encoding {
            request
                .headers_mut()
                .insert(GRPC_ENCODING, HeaderValue::from_str(encoding).unwrap());
        }
        let method: Arc<dyn FastMethod> = Arc::new(Handler {
            handler: add,
            types: std::marker::PhantomData,
        });
        let mut call = FastCall::new(method, request);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(response) = Pin::new(&mut call).poll(&mut cx) else {
            panic!("a request that has arrived is answered at once");
        };
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header(header::CONTENT_TYPE).as_deref(),
            Some(grpc_wire::CONTENT_TYPE)
        );
        if let Some(code) = header(GRPC_STATUS) {
            assert!(response.body().is_end_stream(), "trailers-only");
            let code = Code::from_bytes(code.as_bytes()).unwrap();
            return (code, header(GRPC_MESSAGE).unwrap_or_default(), None);
        }
        let mut body = response.into_body();
        let mut frame = || match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => panic!("expected a frame, got {:?}", other.map(|f| f.is_some())),
        };
        let message = frame().into_data().unwrap();
        let trailers = frame().into_trailers().unwrap();
        assert!(body.is_end_stream());
        assert_eq!(
            message_length(&message),
            Some(Ok(message.len() - PREFIX_BYTES))
        );
        let sum = Sum::decode(&message[PREFIX_BYTES..]).unwrap().sum;
        let code = Code::from_bytes(trailers[GRPC_STATUS].as_bytes()).unwrap();
        (code, String::new(), Some(sum))
    }

    fn request(a: u64, b: u64) -> Bytes {
        framing::encode(&Pair { a, b })
    }

    #[test]
    fn a_request_in_one_frame_or_many_is_answered() {
        let whole = request(12, 18);
        assert_eq!(answer(&[&whole], None), (Code::Ok, String::new(), Some(30)));
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(answer(&bytes, None).2, Some(30));
        assert_eq!(answer(&[&whole[..3], &whole[3..], &[]], None).2, Some(30));
        assert_eq!(answer(&[&request(0, 0)], None).2, Some(0));
        assert_eq!(
            answer(&[&request(u64::MAX, 0)], Some("identity")).2,
            Some(u64::MAX)
        );
    }

    #[test]
    fn a_handlers_status_is_answered_percent_encoded() {
        let (code, message, sum) = answer(&[&request(u64::MAX, 1)], None);
        assert_eq!((code, sum), (Code::OutOfRange, None));
        assert_eq!(message, "the%20sum%20overflows:%20100%25");
    }

    #[test]
    fn malformed_requests_get_tonics_statuses() {
        let whole = request(12, 18);
        let internal = |frames: &[&[u8]], says: &str| {
            let (code, message, _) = answer(frames, None);
            assert_eq!(code, Code::Internal, "{frames:?}");
            assert!(message.contains(says), "{message:?} lacks {says:?}");
        };
        internal(&[], "Missing request message");
        internal(&[&whole[..3]], "Unexpected EOF");
        internal(&[&whole[..whole.len() - 1]], "Unexpected EOF");
        internal(&[&[1, 0, 0, 0, 4, 8, 12, 16, 18]], "compressed");
        internal(&[&[2, 0, 0, 0, 0]], "compressed-flag (2");
        internal(
            &[&[0, 0, 0, 0, 2, 8, 0x80]],
            "failed to decode Protobuf message",
        );
        internal(&[&whole, &whole], "more than one request message");

        let (code, message, _) = answer(&[&whole], Some("gzip"));
        assert_eq!(code, Code::Unimplemented);
        assert!(message.contains("`gzip`"), "{message}");
    }

    #[tokio::test]
    async fn every_registration_gets_a_limit_health_and_a_counter() {
        let (routes, _health) = GrpcRoutes::builder()
            .unary("/test.Adder/Add", add)
            .unary_with_limit("/test.Adder/AddMany", 64 * 1024, add)
            .build()
            .await;
        let limit = |path| routes.route(path).max_message_bytes;
        assert_eq!(limit("/test.Adder/Add"), DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(limit("/test.Adder/AddMany"), 64 * 1024);
        // The health service the port adds, and a path nobody serves.
        assert_eq!(
            limit("/grpc.health.v1.Health/Check"),
            DEFAULT_MAX_MESSAGE_BYTES
        );
        assert_eq!(limit("/nobody.Serves/This"), DEFAULT_MAX_MESSAGE_BYTES);
        assert!(routes.route("/grpc.health.v1.Health/Watch").long_lived);
        assert!(!routes.route("/test.Adder/Add").long_lived);

        let mut exposition = Exposition::default();
        Metrics::render(&*routes.metrics(), &mut exposition);
        let text = exposition.into_string();
        for method in [
            "/test.Adder/Add",
            "/test.Adder/AddMany",
            "/grpc.health.v1.Health/*",
            "unmatched",
        ] {
            assert!(
                text.contains(&format!("grpc_calls_total{{method=\"{method}\"}} 0")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_method_list_has_every_registration_and_health() {
        let methods = GrpcRoutes::builder()
            .unary("/test.Adder/Add", add)
            .unary_with_limit("/test.Adder/AddMany", 4096, add)
            .methods();
        let listed: Vec<(&str, usize)> = methods
            .iter()
            .map(|m| (m.path.as_str(), m.max_message_bytes))
            .collect();
        assert_eq!(
            listed,
            [
                ("/test.Adder/Add", 1024),
                ("/test.Adder/AddMany", 4096),
                ("/grpc.health.v1.Health/*", 1024),
            ]
        );
    }
}
