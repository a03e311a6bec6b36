//! How a process leaves a Kubernetes Service without losing requests.
//!
//! On SIGTERM the pod is removed from Service endpoints *asynchronously*:
//! kube-proxy, DNS and our own api's resolver keep sending traffic for a few
//! seconds. So shutdown has three phases, observed by every listener and
//! health report through one [`Lifecycle`]:
//!
//! 1. [`Phase::Serving`]: ready, everything accepted.
//! 2. [`Phase::Draining`]: readiness and gRPC health report "not serving",
//!    but listeners keep accepting for a short delay while peers notice.
//! 3. [`Phase::Stopping`]: listeners close, in-flight requests finish, the
//!    process exits within a bounded drain time.
//!
//! A second signal during the delay skips straight to stopping.
//!
//! The signals that start this are SIGTERM (Kubernetes, `kill`), SIGINT
//! (Ctrl-C) and SIGHUP: the terminal or session that started the process
//! is gone, or a supervisor asks it to go. A process whose settings are
//! all flags and variables has nothing to re-read on SIGHUP, and ending at
//! once (its default action) would drop requests in flight, so it stops the
//! same graceful way; one started under `nohup` (SIGHUP ignored) keeps
//! ignoring it. SIGUSR1 and SIGUSR2 are ignored: they mean nothing here,
//! and whoever sends one wants something other than losing the requests in
//! flight, which their default action would do.

use std::{sync::Arc, time::Duration};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::watch,
};

/// Where the process is in its shutdown choreography; phases only advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Stopping,
}

/// Shared handle to the current [`Phase`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            phase: Arc::new(watch::Sender::new(Phase::Serving)),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// True while the process should receive new traffic.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Serving
    }

    /// Moves to `phase` unless the process is already past it.
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|current| {
            let moved = phase > *current;
            if moved {
                *current = phase;
            }
            moved
        });
    }

    /// Resolves once the phase is at least `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|current| *current >= phase).await;
    }

    /// Installs the signal handlers now (so a signal that arrives
    /// while the caller is still starting up is not fatal) and returns a
    /// future that, on the first signal, drains for `delay`, then stops. A
    /// second signal during the delay stops at once.
    pub fn on_signals(
        &self,
        delay: Duration,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let mut signals = Signals::new()?;
        let lifecycle = self.clone();
        Ok(async move {
            signals.recv().await;
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "shutdown signal: draining"
            );
            lifecycle.advance(Phase::Draining);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = signals.recv() => tracing::info!("second signal: stopping now"),
            }
            tracing::info!("stopping: no new connections, finishing in-flight requests");
            lifecycle.advance(Phase::Stopping);
        })
    }

    /// Waits until `servers` finish after [`Phase::Stopping`], but no longer
    /// than `drain_timeout` past it: a stuck client must not hold the pod
    /// past its termination grace period.
    pub async fn drain<F, T>(&self, servers: F, drain_timeout: Duration) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        tokio::pin!(servers);
        let deadline = async {
            self.reached(Phase::Stopping).await;
            tokio::time::sleep(drain_timeout).await;
        };
        tokio::select! {
            output = &mut servers => Some(output),
            () = deadline => {
                tracing::warn!(
                    drain_timeout_ms = drain_timeout.as_millis() as u64,
                    "drain timeout: abandoning remaining connections"
                );
                None
            }
        }
    }
}

/// The stopping signals as one stream, with the ignored ones swallowed.
struct Signals {
    term: Signal,
    int: Signal,
    /// None when SIGHUP was already ignored at start-up (`nohup`).
    hup: Option<Signal>,
    user1: Signal,
    user2: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: if ignored_at_start(libc::SIGHUP) {
                None
            } else {
                Some(signal(SignalKind::hangup())?)
            },
            user1: signal(SignalKind::user_defined1())?,
            user2: signal(SignalKind::user_defined2())?,
        })
    }

    /// Resolves on the next stopping signal.
    async fn recv(&mut self) {
        let Self {
            term,
            int,
            hup,
            user1,
            user2,
        } = self;
        let ignored = |name| tracing::info!("{name} ignored: SIGTERM, SIGINT or SIGHUP stop");
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = async {
                    match hup {
                        Some(hup) => hup.recv().await,
                        None => std::future::pending().await,
                    }
                } => return,
                _ = user1.recv() => ignored("SIGUSR1"),
                _ = user2.recv() => ignored("SIGUSR2"),
            }
        }
    }
}

/// Whether `signal` was set to be ignored by whoever started this process
/// (installing a handler would undo that).
fn ignored_at_start(signal: libc::c_int) -> bool {
    // SAFETY: with a null new action, sigaction only writes the current
    // one into `current`, a zeroed struct on this stack frame.
    #[allow(unsafe_code)]
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_advance() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.is_ready());
        lifecycle.advance(Phase::Stopping);
        lifecycle.advance(Phase::Draining);
        assert_eq!(lifecycle.phase(), Phase::Stopping);
        assert!(!lifecycle.is_ready());
        // Already past both phases: resolves at once.
        lifecycle.reached(Phase::Draining).await;
    }

    #[tokio::test]
    async fn drain_returns_the_servers_output_when_they_finish() {
        let lifecycle = Lifecycle::new();
        lifecycle.advance(Phase::Stopping);
        let output = lifecycle.drain(async { 42 }, Duration::from_secs(60)).await;
        assert_eq!(output, Some(42));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_timeout() {
        let lifecycle = Lifecycle::new();
        lifecycle.advance(Phase::Stopping);
        let never = std::future::pending::<()>();
        assert_eq!(lifecycle.drain(never, Duration::from_secs(5)).await, None);
    }
}
