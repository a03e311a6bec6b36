//! gcd stand-ins for failures the real binary does not produce on demand.
//!
//! - [`GatedGcd`] speaks the real protocol but holds every answer until the
//!   test opens the gate, so a test knows requests are in flight.
//! - [`SilentGcd`] accepts TCP connections and never answers.

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
