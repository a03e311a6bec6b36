//! The bounded serving of ports: every listening port of both binaries,
//! with every resource a client can make us hold bounded by construction.
//!
//! This file is the accept loop and each port's connection slots; around
//! it, [`http1`] and [`grpc`] drive a connection of either protocol,
//! [`io`] guards its reads and writes, [`routes`] is where a gRPC port's
//! methods are registered, and [`admin`] is the admin port built from the
//! same parts. Below it are `runtime` (the lifecycle and memory budget the
//! admin port reports and charges) and `telemetry` (the counters its ports
//! keep), which never call back here; above it, `gcd` and `api` hand it
//! their handlers.
//!
//! A client is anything that can open a TCP connection: many at once, slow,
//! silent, or sending bytes no real client sends. Whatever it does, a port
//! holds at most:
//!
//! - `max_connections` open connections. A port never stops accepting: at
//!   the cap, a new connection takes the slot of the least useful one
//!   ([`Slots`]): one that has not sent a request yet, else one with nothing
//!   in flight, the least recently active first. So a new client is served
//!   at once however many connections others hold, and what it costs is
//!   the connections that were doing the least;
//! - small kernel socket buffers per connection ([`SocketBuffers`]), so
//!   bytes a client sends but we do not read yet, or bytes we send that it
//!   does not read, stay bounded below the container limit too;
//! - per connection, what its protocol driver bounds: [`http1`] (one request
//!   head of bounded size at a time) or [`grpc`] (HTTP/2 streams, windows,
//!   frames, calls and messages, for every method registered in
//!   [`routes`]).
//!
//! And no connection holds anything for ever without making progress:
//! every state a client can leave a connection in has a timeout (request
//! head, keep-alive idle, handshake, idle, call, and a stalled write, which
//! [`io::GuardedIo`] bounds for both protocols).
//!
//! On shutdown the listener closes, each connection finishes what it is
//! doing (bounded by the same timeouts) and [`accept_loop`] returns when the
//! last one has gone.

pub mod admin;
pub mod grpc;
pub mod http1;
pub mod io;
pub mod routes;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use runtime::sync::lock;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};

/// A listening socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Kernel buffer sizes for accepted sockets (the kernel doubles each for
/// its bookkeeping). Setting them also stops the kernel from growing them
/// on its own, so they are a bound: the cgroup counts socket memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    pub receive: u32,
    pub send: u32,
}

impl SocketBuffers {
    /// Worst-case kernel memory one accepted connection may hold.
    pub fn worst_case_bytes(&self) -> u64 {
        2 * (u64::from(self.receive) + u64::from(self.send))
    }
}

/// Connections the kernel may hold for us before we accept them. We accept
/// as fast as they come (see [`Slots`]), so this only absorbs bursts;
/// connections waiting here are not charged to our memory.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` (port 0 picks a free port) with `buffers` for every
/// connection it accepts, and reports the bound address.
pub fn bind(
    addr: SocketAddr,
    buffers: SocketBuffers,
) -> Result<(TcpListener, SocketAddr), BindError> {
    let bind_error = |source| BindError { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_error)?;
    // A restarted process can bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind_error)?;
    // Inherited by every accepted socket (Linux, the BSDs and macOS).
    socket
        .set_recv_buffer_size(buffers.receive)
        .map_err(bind_error)?;
    socket
        .set_send_buffer_size(buffers.send)
        .map_err(bind_error)?;
    socket.bind(addr).map_err(bind_error)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// What a connection's driver needs from the port: where to record what
/// it does (and hear that it must give up its slot), and when to stop.
#[derive(Debug)]
pub struct Slot {
    pub activity: Arc<Activity>,
    pub stopping: Stopping,
    /// The slots of every connection of the port.
    pub slots: Arc<Slots>,
}

/// Tells a connection's driver that the server is stopping: finish what is
/// in flight, then close.
#[derive(Debug)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the server stops accepting.
    pub async fn wait(&mut self) {
        // The sender outlives every connection task (see accept_loop), and
        // if it were gone the server would be stopping anyway.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// One connection's requests (HTTP/1) or calls (gRPC), as far as the port
/// needs them to choose whom to evict and when a connection is idle.
#[derive(Debug)]
pub struct Activity {
    /// Shared by the port, so times compare across connections.
    epoch: Instant,
    /// Milliseconds after `epoch` of the connection's last progress, or
    /// [`Activity::NEVER`] before its first request: when a request or call
    /// last ended, or started with none other in flight. Starting more
    /// calls beside ones that never end is not progress, so a client that
    /// keeps doing it still looks as stuck as it is.
    last_progress_ms: AtomicU64,
    /// Milliseconds after `epoch` when the connection was accepted.
    accepted_ms: u64,
    in_flight: AtomicUsize,
    /// Calls holding one of the port's shared permits (gRPC), beyond their
    /// connection's own reserved ones.
    shared_permits: AtomicUsize,
    /// Streams meant to stay open (gRPC health `Watch`) once their request
    /// has arrived: they keep a connection from being idle, but are not
    /// expected to end.
    long_lived: AtomicUsize,
    /// Calls whose answer is handed to h2 but not yet written (gRPC): they
    /// are still in flight, and hold their permits, until it is.
    unsent: AtomicUsize,
    evict: Notify,
}

impl Activity {
    const NEVER: u64 = u64::MAX;

    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            last_progress_ms: AtomicU64::new(Self::NEVER),
            accepted_ms: u64::try_from(epoch.elapsed().as_millis()).unwrap_or(Self::NEVER - 1),
            in_flight: AtomicUsize::new(0),
            shared_permits: AtomicUsize::new(0),
            long_lived: AtomicUsize::new(0),
            unsent: AtomicUsize::new(0),
            evict: Notify::new(),
        }
    }

    /// Resolves when the connection must close now: a new connection needs
    /// its slot, or one of its calls' clients stalled it.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// A call started, holding one of the port's shared permits if given
    /// one: its connection may then be evicted to give the permit to another
    /// ([`Slots::evict_stalest_holder`]).
    pub fn start_holding(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>) -> InFlight {
        let mut in_flight = self.start();
        if let Some(permit) = permit {
            in_flight.hold_shared_permit(permit);
        }
        in_flight
    }

    /// A request or call started: returns a guard that records its end.
    pub fn start(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.progressed();
        }
        InFlight {
            activity: self.clone(),
            long_lived: false,
            unsent: false,
            shared_permit: None,
        }
    }

    fn progressed(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(Self::NEVER - 1);
        self.last_progress_ms.store(now, Ordering::Relaxed);
    }

    /// Since when the connection has been waiting for a request, if
    /// nothing is open: when its last request ended, or when it was
    /// accepted.
    pub fn awaiting_request_since(&self) -> Option<Instant> {
        self.is_idle()
            .then(|| self.epoch + Duration::from_millis(self.last_seen_ms()))
    }

    /// Milliseconds after `epoch` of the connection's last progress, or of
    /// its accept before any.
    fn last_seen_ms(&self) -> u64 {
        match self.last_progress_ms.load(Ordering::Relaxed) {
            Self::NEVER => self.accepted_ms,
            ms => ms,
        }
    }

    /// Requests or calls in flight, long-lived streams not included.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests or calls open, long-lived streams included.
    pub fn open(&self) -> usize {
        self.in_flight() + self.long_lived.load(Ordering::Relaxed)
    }

    /// Calls whose answer h2 holds and has not written yet (gRPC).
    pub fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Relaxed)
    }

    /// Nothing open at all, long-lived streams included.
    pub fn is_idle(&self) -> bool {
        self.open() == 0
    }

    /// When the connection last made progress: a request or call ended, or
    /// started with none other in flight (`None` before the first one).
    pub fn last_progress(&self) -> Option<Instant> {
        let ms = self.last_progress_ms.load(Ordering::Relaxed);
        (ms != Self::NEVER).then(|| self.epoch + Duration::from_millis(ms))
    }

    /// Eviction order, lowest first: never used, then idle, then only
    /// long-lived streams open, then anything; within each, the longest
    /// without progress, and among the never used the longest accepted (a
    /// connection accepted a moment ago may not have been read yet: it must
    /// not go before the ones that had their chance).
    fn eviction_rank(&self) -> (u8, u64) {
        let class = if self.last_progress_ms.load(Ordering::Relaxed) == Self::NEVER {
            0
        } else if self.is_idle() {
            1
        } else if self.in_flight() == 0 {
            2
        } else {
            3
        };
        (class, self.last_seen_ms())
    }
}

/// Marks a request or call in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    long_lived: bool,
    /// Counted in [`Activity::unsent`].
    unsent: bool,
    /// One of the port's shared permits (gRPC), given back when dropped.
    shared_permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// The call holds one of the port's shared permits until it ends: its
    /// connection may be evicted to give it to another
    /// ([`Slots::evict_stalest_holder`]).
    fn hold_shared_permit(&mut self, permit: OwnedSemaphorePermit) {
        if self.shared_permit.replace(permit).is_none() {
            self.activity.shared_permits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The call's client stalled it: its connection must close now, as
    /// when it is evicted.
    pub fn close_connection(&self) {
        self.activity.evict.notify_one();
    }

    /// The call's answer has been handed to h2, which holds this guard
    /// until it has written the answer (or dropped it with its stream):
    /// count it as unsent until then.
    pub fn await_sending(&mut self) {
        if !self.unsent {
            self.unsent = true;
            self.activity.unsent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The call's request has arrived and it is a stream meant to stay
    /// open: count it as long-lived from now on.
    pub fn settle_long_lived(&mut self) {
        if !self.long_lived {
            self.long_lived = true;
            let activity = &self.activity;
            activity.long_lived.fetch_add(1, Ordering::Relaxed);
            activity.in_flight.fetch_sub(1, Ordering::Relaxed);
            activity.progressed();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.progressed();
        if self.shared_permit.is_some() {
            activity.shared_permits.fetch_sub(1, Ordering::Relaxed);
        }
        if self.unsent {
            activity.unsent.fetch_sub(1, Ordering::Relaxed);
        }
        if self.long_lived {
            activity.long_lived.fetch_sub(1, Ordering::Relaxed);
        } else {
            activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The connections of one port, so that a new one can take the slot of
/// the least useful one when the port is full.
#[derive(Debug)]
pub struct Slots {
    /// One per slot no connection has taken.
    vacancies: Arc<Semaphore>,
    epoch: Instant,
    open: Mutex<Vec<Option<Arc<Activity>>>>,
    free: Mutex<Vec<usize>>,
}

/// A connection's slot; gives it back when dropped.
struct TakenSlot {
    slots: Arc<Slots>,
    index: usize,
    _vacancy: OwnedSemaphorePermit,
}

impl Drop for TakenSlot {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.slots.open).get_mut(self.index) {
            *entry = None;
        }
        lock(&self.slots.free).push(self.index);
    }
}

impl Slots {
    fn new(max_connections: usize) -> Self {
        Self {
            vacancies: Arc::new(Semaphore::new(max_connections)),
            epoch: Instant::now(),
            open: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(self: &Arc<Self>, vacancy: OwnedSemaphorePermit) -> (TakenSlot, Arc<Activity>) {
        let activity = Arc::new(Activity::new(self.epoch));
        let mut open = lock(&self.open);
        let index = match lock(&self.free).pop() {
            Some(index) => {
                open[index] = Some(activity.clone());
                index
            }
            None => {
                open.push(Some(activity.clone()));
                open.len() - 1
            }
        };
        let slot = TakenSlot {
            slots: self.clone(),
            index,
            _vacancy: vacancy,
        };
        (slot, activity)
    }

    /// Tells the least useful connection to close.
    fn evict_one(&self) {
        let open = lock(&self.open);
        let victim = open
            .iter()
            .flatten()
            .min_by_key(|activity| activity.eviction_rank());
        if let Some(victim) = victim {
            victim.evict.notify_one();
        }
    }

    /// Tells the connection holding shared call permits that has gone
    /// longest without progress to close, unless that is `except`; returns
    /// whether there was one. Legitimate calls end within moments, so this
    /// is a client holding calls open without sending them. A connection
    /// within its reserved calls holds no shared permit and is never chosen:
    /// closing it would free nothing for others.
    pub fn evict_stalest_holder(&self, except: &Arc<Activity>) -> bool {
        let open = lock(&self.open);
        let victim = open
            .iter()
            .flatten()
            .filter(|activity| {
                activity.shared_permits.load(Ordering::Relaxed) > 0
                    && !Arc::ptr_eq(activity, except)
            })
            .min_by_key(|activity| activity.last_progress_ms.load(Ordering::Relaxed));
        if let Some(victim) = victim {
            victim.evict.notify_one();
        }
        victim.is_some()
    }
}

/// Accepts connections until `shutdown` resolves, at most `max_connections`
/// at a time (at the cap, each new one evicts the least useful), handing
/// each to `serve_connection`; then closes the listener, tells every
/// connection to finish, and returns when all have.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    mut serve_connection: F,
) where
    F: FnMut(TcpStream, Slot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Slots::new(max_connections));
    let (stop, stopping) = watch::channel(false);

    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors or similar: back off instead
                    // of spinning; the connection that failed is the
                    // kernel's to drop.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let vacancy = match slots.vacancies.clone().try_acquire_owned() {
            Ok(vacancy) => vacancy,
            Err(_) => {
                // Full: make room first, so the port never holds more than
                // its cap. The evicted connection lets go at once.
                slots.evict_one();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    vacancy = slots.vacancies.clone().acquire_owned() => match vacancy {
                        Ok(vacancy) => vacancy,
                        Err(_) => break, // the semaphore is never closed
                    },
                }
            }
        };
        // A failure here only costs latency, never correctness.
        let _ = stream.set_nodelay(true);
        let (taken, activity) = slots.take(vacancy);
        let slot = Slot {
            activity,
            stopping: Stopping(stopping.clone()),
            slots: slots.clone(),
        };
        let connection = serve_connection(stream, slot);
        tokio::spawn(async move {
            connection.await;
            drop(taken);
        });
        // Let the new connection (and every other) run before the next
        // accept: under a flood of connections on few worker threads, a
        // client's request must get read before newer arrivals can push
        // its connection out as never used.
        tokio::task::yield_now().await;
    }
    drop(listener);
    let _ = stop.send(true);
    // Each connection keeps the vacancy it filled until it has finished.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.vacancies.acquire_many(all).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_least_useful_connection_is_evicted_first() {
        let slots = Arc::new(Slots::new(3));
        let (_busy_slot, busy) = take(&slots);
        let (_idle_slot, idle) = take(&slots);
        let (_silent_slot, silent) = take(&slots);
        let _request = busy.start();
        drop(idle.start());
        tokio::time::advance(Duration::from_millis(10)).await;

        // Never sent a request: goes first, however new.
        slots.evict_one();
        assert!(is_notified(&silent));
        assert!(!is_notified(&idle) && !is_notified(&busy));

        // Then the one with nothing in flight.
        drop(_silent_slot);
        slots.evict_one();
        assert!(is_notified(&idle));
        assert!(!is_notified(&busy));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_awaits_a_request_from_its_accept_or_its_last_answer() {
        let slots = Arc::new(Slots::new(1));
        let accepted = Instant::now();
        let (_slot, activity) = take(&slots);
        assert_eq!(activity.awaiting_request_since(), Some(accepted));

        tokio::time::advance(Duration::from_millis(30)).await;
        let request = activity.start();
        assert_eq!(
            activity.awaiting_request_since(),
            None,
            "a request is in flight"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        drop(request);
        assert_eq!(
            activity.awaiting_request_since(),
            Some(accepted + Duration::from_millis(50))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn among_never_used_connections_the_longest_accepted_goes_first() {
        let slots = Arc::new(Slots::new(2));
        let (first_slot, _) = take(&slots);
        let (_older_slot, older) = take(&slots);
        drop(first_slot);
        tokio::time::advance(Duration::from_millis(10)).await;
        // Takes the freed first slot, so it comes first in the port's list.
        let (_newer_slot, newer) = take(&slots);
        slots.evict_one();
        assert!(
            is_notified(&older),
            "the longer accepted silent connection goes first"
        );
        assert!(!is_notified(&newer));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_evict_the_holder_of_shared_permits_with_the_oldest_progress() {
        let slots = Arc::new(Slots::new(4));
        let (stuck_slot, stuck) = take(&slots);
        let (_legit_slot, legit) = take(&slots);
        let (_busy_slot, busy) = take(&slots);
        let (_asking_slot, asking) = take(&slots);

        // A client holding shared permits with calls that never end, and
        // starting more beside them.
        let mut stuck_calls = vec![shared_call(&stuck)];
        tokio::time::advance(Duration::from_millis(10)).await;
        // A multiplexed client whose calls keep ending.
        let mut busy_calls = vec![shared_call(&busy)];
        // A client with one call in flight, within its reserved ones.
        let _legit_call = legit.start();
        tokio::time::advance(Duration::from_millis(10)).await;
        stuck_calls.push(shared_call(&stuck));
        busy_calls.push(shared_call(&busy));
        busy_calls.remove(0);

        assert!(slots.evict_stalest_holder(&asking));
        assert!(is_notified(&stuck), "the holder that never progressed goes");
        assert!(!is_notified(&legit) && !is_notified(&busy));

        drop(stuck_calls);
        drop(stuck_slot);
        assert!(slots.evict_stalest_holder(&asking));
        assert!(is_notified(&busy));
        assert!(
            !is_notified(&legit),
            "a connection within its reserved calls frees nothing"
        );

        drop(busy_calls);
        assert!(!slots.evict_stalest_holder(&asking));
        assert!(!is_notified(&legit));
    }

    fn shared_call(activity: &Arc<Activity>) -> InFlight {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        activity.start_holding(Some(permit))
    }

    /// A new connection's slot, as the accept loop takes it.
    fn take(slots: &Arc<Slots>) -> (TakenSlot, Arc<Activity>) {
        slots.take(slots.vacancies.clone().try_acquire_owned().unwrap())
    }

    fn is_notified(activity: &Activity) -> bool {
        use std::{future::Future, pin::pin, task::Context};
        let mut notified = pin!(activity.evict.notified());
        notified
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }
}
