//! gcd stand-ins for failures the real binary does not produce on demand.
//!
//! - [`GatedGcd`] speaks the real protocol but holds every answer until the
//!   test opens the gate, so a test knows requests are in flight.
//! - [`SilentGcd`] accepts TCP connections and never answers.
//! - [`ScriptedReplica`] speaks HTTP/2 with a stream limit of its choosing
//!   and answers `Compute` the way it is told: right, wrongly, or never;
//!   it counts the `Compute` calls and health checks it gets.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gcd_proto::{
    GcdRequest, GcdResponse,
    gcd_service_server::{GcdService, GcdServiceServer},
};
use tokio::sync::{oneshot, watch};

use crate::eventually;

struct Gate {
    arrived: AtomicUsize,
    open: watch::Sender<bool>,
}

/// The service half of a [`GatedGcd`].
struct GatedService(Arc<Gate>);

#[tonic::async_trait]
impl GcdService for GatedService {
    async fn compute(
        &self,
        request: tonic::Request<GcdRequest>,
    ) -> Result<tonic::Response<GcdResponse>, tonic::Status> {
        self.0.arrived.fetch_add(1, Ordering::SeqCst);
        let mut open = self.0.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        let GcdRequest { mut a, mut b } = request.into_inner();
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Ok(tonic::Response::new(GcdResponse { result: a }))
    }
}

/// A gcd whose answers wait for [`GatedGcd::open`].
pub struct GatedGcd {
    pub addr: SocketAddr,
    gate: Arc<Gate>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatedGcd {
    pub fn start() -> Self {
        let gate = Arc::new(Gate {
            arrived: AtomicUsize::new(0),
            open: watch::Sender::new(false),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let service = GatedService(gate.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(GcdServiceServer::new(service))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .unwrap();
            });
        });
        Self {
            addr: addr.recv().unwrap(),
            gate,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Calls received so far, answered or not.
    pub fn arrived(&self) -> usize {
        self.gate.arrived.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` calls are being held.
    pub fn wait_for_arrivals(&self, count: usize) {
        eventually(
            &format!("{count} calls to arrive at the gated gcd"),
            Duration::from_secs(20),
            || (self.arrived() >= count).then_some(()),
        );
    }

    /// Lets every held call, and every later one, be answered.
    pub fn open(&self) {
        self.gate.open.send_replace(true);
    }
}

impl Drop for GatedGcd {
    fn drop(&mut self) {
        self.open();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener that never accepts: the kernel completes TCP handshakes into
/// its backlog, and nothing is ever read or answered.
pub struct SilentGcd {
    pub addr: SocketAddr,
    _listener: std::net::TcpListener,
}

impl SilentGcd {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            _listener: listener,
        }
    }
}

/// How a [`ScriptedReplica`] answers `Compute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The GCD, as gcd answers it.
    Right,
    /// `grpc-status: 0` in the headers, and no message.
    OkWithoutMessage,
    /// A message of 2 KiB.
    Oversized,
    /// A message that is not a `GCDResponse`.
    Undecodable,
    /// Nothing, ever: the stream stays open until the connection ends.
    Never,
}

/// What a [`ScriptedReplica`] saw.
#[derive(Default)]
struct Seen {
    computes: AtomicUsize,
    health_checks: AtomicUsize,
    connections: AtomicUsize,
    closed: AtomicUsize,
}

/// An HTTP/2 gRPC server answering `Compute` as told, and health checks
/// with SERVING (unless told `Never`: then nothing is answered).
pub struct ScriptedReplica {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedReplica {
    /// A replica allowing gcd's default of 256 streams per connection.
    pub fn start(answer: Answer) -> Self {
        Self::with_stream_limit(answer, 256)
    }

    /// A replica advertising `SETTINGS_MAX_CONCURRENT_STREAMS` `limit`.
    pub fn with_stream_limit(answer: Answer, limit: u32) -> Self {
        let seen = Arc::new(Seen::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound, addr) = std::sync::mpsc::channel();
        let counts = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        counts.connections.fetch_add(1, Ordering::SeqCst);
                        let counts = counts.clone();
                        tokio::spawn(async move {
                            serve_scripted(tcp, answer, limit, &counts).await;
                            counts.closed.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr: addr.recv().unwrap(),
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `Compute` calls received, answered or not.
    pub fn computes(&self) -> usize {
        self.seen.computes.load(Ordering::SeqCst)
    }

    /// Health checks received.
    pub fn health_checks(&self) -> usize {
        self.seen.health_checks.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Connections that ended (closed by the client, or broken).
    pub fn closed(&self) -> usize {
        self.seen.closed.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptedReplica {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_scripted(tcp: tokio::net::TcpStream, answer: Answer, limit: u32, seen: &Seen) {
    let Ok(mut connection) = h2::server::Builder::new()
        .max_concurrent_streams(limit)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
    else {
        return;
    };
    // Streams never answered stay open as long as the connection.
    let mut held = Vec::new();
    while let Some(Ok((request, respond))) = connection.accept().await {
        let health = request.uri().path() == "/grpc.health.v1.Health/Check";
        if health {
            seen.health_checks.fetch_add(1, Ordering::SeqCst);
        } else {
            seen.computes.fetch_add(1, Ordering::SeqCst);
        }
        if answer == Answer::Never {
            held.push((request, respond));
            continue;
        }
        let answer = if health { Answer::Right } else { answer };
        tokio::spawn(answer_scripted(request, respond, answer, health));
    }
}

async fn answer_scripted(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    answer: Answer,
    health: bool,
) {
    let mut body = request.into_body();
    let mut message = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let head = |grpc_status: Option<grpc_wire::Code>| {
        let mut response =
            http::Response::builder().header(http::header::CONTENT_TYPE, grpc_wire::content_type());
        if let Some(code) = grpc_status {
            response = response.header(grpc_wire::GRPC_STATUS, code.header_value());
        }
        response.body(()).unwrap()
    };
    if answer == Answer::OkWithoutMessage {
        let _ = respond.send_response(head(Some(grpc_wire::Code::Ok)), true);
        return;
    }
    let payload = match answer {
        // HealthCheckResponse { status: SERVING }
        Answer::Right if health => vec![8, 1],
        Answer::Right => {
            use prost::Message;
            let GcdRequest { mut a, mut b } =
                GcdRequest::decode(message.get(5..).unwrap_or_default()).unwrap_or_default();
            while b != 0 {
                (a, b) = (b, a % b);
            }
            GcdResponse { result: a }.encode_to_vec()
        }
        Answer::Oversized => vec![0; 2048],
        _ => vec![0x08, 0x80],
    };
    let mut framed = vec![0];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    let Ok(mut send) = respond.send_response(head(None), false) else {
        return;
    };
    let _ = send.send_data(framed.into(), false);
    let _ = send.send_trailers(grpc_wire::ok_trailers());
}
