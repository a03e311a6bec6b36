//! Per-request load balancing over every gcd replica, for any unary method
//! ([`Balancer::call`]).
//!
//! A Kubernetes Service balances TCP connections, and gRPC multiplexes all
//! calls over one HTTP/2 connection, so behind a ClusterIP every call would
//! land on one pod. Instead the balancer keeps one connection per replica
//! address (from [`Resolve`], each an [`Upstream`]), re-resolves on an
//! interval (every target at once), and picks a replica per call,
//! round-robin.
//!
//! Failure handling:
//! - every call has a deadline, sent to gcd as `grpc-timeout` and enforced
//!   locally;
//! - a call of an idempotent method ([`Rpc::IDEMPOTENT`], as `Compute` is)
//!   that fails because a replica is unreachable (no connection, no stream
//!   free within the time, turned away), answered with something that is
//!   not an answer, or took over half the deadline while another replica
//!   exists, is retried once on a different replica; a call of any other
//!   method is tried once;
//! - a replica that failed in any of these ways, or let a call run out its
//!   deadline, is skipped for a while; then the balancer checks its health
//!   (`grpc.health.v1.Health/Check`, in a task of its own, so no user
//!   request waits on a replica that is down) until a check or a call
//!   succeeds; it is still tried when nothing else is left, so a restarted
//!   replica is picked up at once;
//! - with a single replica, a call that never reached it (its connection
//!   was closing, for instance after gcd closed it as idle) is retried on
//!   it once.
//!
//! At most [`MAX_REPLICAS`] replicas are balanced over: each one is a
//! connection and its buffers, which the memory budget counts. Of more
//! addresses, each api process keeps its own random choice, the same for
//! as long as those addresses resolve, so that together the api pods use
//! them all.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use gcd_proto::GcdRequest;
use runtime::sync::lock;
use tokio::time::Instant;

use crate::{
    metrics::{ApiMetrics, Outcome},
    resolve::{Resolve, Target},
    rpc::{CallError, Compute, Rpc},
    upstream::Upstream,
};

/// Most gcd replicas balanced over; of a DNS answer with more, each api
/// process keeps its own random choice.
pub const MAX_REPLICAS: usize = 64;

/// How long one target's lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a replica that failed is passed over.
const EJECT_FOR: Duration = Duration::from_secs(2);

/// Tuning for upstream calls.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Budget for one `Compute`, retry included.
    pub deadline: Duration,
    /// Budget for opening a TCP connection to one replica.
    pub connect_timeout: Duration,
}

/// One gcd replica and the connection to it.
struct Replica {
    addr: SocketAddr,
    upstream: Upstream,
    /// Milliseconds since the balancer's epoch until which to skip it, or
    /// [`Replica::HEALTHY`].
    ejected_until: AtomicU64,
}

/// Whether a replica takes calls.
enum Standing {
    Healthy,
    Ejected,
    /// Ejected, with the ejection run out, and this caller the one to check
    /// its health (the ejection is pushed out for everyone else meanwhile).
    ToProbe,
}

impl Replica {
    /// `ejected_until` is 0 for a healthy replica.
    const HEALTHY: u64 = 0;

    fn standing(&self, now: u64, eject_millis: u64) -> Standing {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == Self::HEALTHY {
            return Standing::Healthy;
        }
        let probe = until <= now
            && self
                .ejected_until
                .compare_exchange(
                    until,
                    now + eject_millis,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if probe {
            Standing::ToProbe
        } else {
            Standing::Ejected
        }
    }

    fn mark_healthy(&self) {
        // Read first: a write on every call would bounce the cache line
        // between cores.
        if self.ejected_until.load(Ordering::Relaxed) != Self::HEALTHY {
            self.ejected_until.store(Self::HEALTHY, Ordering::Relaxed);
        }
    }
}

pub struct Balancer {
    targets: Vec<Target>,
    resolver: Arc<dyn Resolve>,
    settings: Settings,
    metrics: Arc<ApiMetrics>,
    epoch: Instant,
    replicas: RwLock<Arc<[Arc<Replica>]>>,
    /// Last good answer per target, kept when a later lookup fails: a DNS
    /// hiccup must not empty the replica list.
    last_resolved: Mutex<HashMap<Target, Vec<SocketAddr>>>,
    next: AtomicUsize,
    /// Ranks addresses when more than [`MAX_REPLICAS`] resolve: random
    /// keys per process, so each api pod keeps a different choice.
    preference: RandomState,
}

impl Balancer {
    pub fn new(
        targets: Vec<Target>,
        resolver: Arc<dyn Resolve>,
        settings: Settings,
        metrics: Arc<ApiMetrics>,
    ) -> Self {
        Self {
            targets,
            resolver,
            settings,
            metrics,
            epoch: Instant::now(),
            replicas: RwLock::new(Arc::from(Vec::new())),
            last_resolved: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            preference: RandomState::new(),
        }
    }

    /// Resolves every target once and swaps in the new replica set, keeping
    /// the connections of replicas that are still there.
    pub async fn refresh(&self) {
        // Every target at once: a slow or hung lookup delays the others by
        // nothing, and the first refresh (before the ports serve) by at
        // most one timeout.
        let mut lookups = tokio::task::JoinSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let (resolver, target) = (self.resolver.clone(), target.clone());
            lookups.spawn(async move {
                let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve(&target));
                let addrs = match lookup.await {
                    Ok(Ok(addrs)) => Some(addrs),
                    Ok(Err(err)) => {
                        tracing::warn!(%target, error = %err, "cannot resolve gcd target");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(%target, "resolving gcd target timed out");
                        None
                    }
                };
                (index, addrs)
            });
        }
        let mut resolved = vec![None; self.targets.len()];
        while let Some(lookup) = lookups.join_next().await {
            if let Ok((index, addrs)) = lookup {
                resolved[index] = addrs;
            }
        }

        let mut addrs = Vec::new();
        {
            let mut last = lock(&self.last_resolved);
            for (target, fresh) in self.targets.iter().zip(resolved) {
                if let Some(fresh) = fresh {
                    last.insert(target.clone(), fresh);
                }
                addrs.extend(last.get(target).into_iter().flatten().copied());
            }
        }
        addrs.sort_unstable();
        addrs.dedup();
        if addrs.len() > MAX_REPLICAS {
            tracing::warn!(
                resolved = addrs.len(),
                used = MAX_REPLICAS,
                "more gcd replicas than the api balances over; using a random choice"
            );
            // The addresses this process ranks first: the same ones at every
            // refresh while they resolve, another choice in each process.
            addrs.sort_by_cached_key(|addr| self.preference.hash_one(addr));
            addrs.truncate(MAX_REPLICAS);
            addrs.sort_unstable();
        }

        let current = self.snapshot();
        if current.iter().map(|r| r.addr).eq(addrs.iter().copied()) {
            return;
        }
        let replicas: Vec<Arc<Replica>> = addrs
            .iter()
            .map(|addr| match current.iter().find(|r| r.addr == *addr) {
                Some(existing) => existing.clone(),
                None => Arc::new(self.connect(*addr)),
            })
            .collect();
        tracing::info!(replicas = ?addrs, "gcd replicas changed");
        self.metrics
            .replicas
            .store(replicas.len() as u64, Ordering::Relaxed);
        *self.replicas.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(replicas);
    }

    /// Refreshes every `interval`, forever, starting one interval from now.
    pub async fn refresh_every(&self, interval: Duration) {
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.refresh().await;
        }
    }

    /// The addresses balanced over, in address order.
    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        self.snapshot().iter().map(|replica| replica.addr).collect()
    }

    /// GCD of `a` and `b`: one [`Compute`] call.
    pub async fn compute(&self, a: u64, b: u64, started: Instant) -> Result<u64, CallError> {
        let answer = self.call::<Compute>(&GcdRequest { a, b }, started).await?;
        Ok(answer.result)
    }

    /// `M`'s answer to `request`, from one replica or, for an idempotent
    /// method whose replica is unreachable, broken or too slow, from one
    /// other, within the deadline counted from `started`, when the request
    /// arrived (passed in rather than read again: the clock costs every
    /// request).
    pub async fn call<M: Rpc>(
        &self,
        request: &M::Request,
        started: Instant,
    ) -> Result<M::Response, CallError> {
        let deadline = started + self.settings.deadline;
        let replicas = self.snapshot();
        let first = self
            .pick(&replicas, None, started)
            .ok_or(CallError::NoReplicas)?;
        // With another replica to retry on, the first one gets half the
        // budget: a dead replica that is still listed (its connection
        // attempts queue up and time out one by one) must not eat the
        // whole deadline.
        let first_deadline = if M::IDEMPOTENT && replicas.len() > 1 {
            started + self.settings.deadline / 2
        } else {
            deadline
        };
        let failure = match self
            .attempt::<M>(first, request, first_deadline, started)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(failure) if !failure.is_replicas_fault() => return Err(failure),
            Err(failure) => failure,
        };
        let now = Instant::now();
        self.eject(first, now);
        if !M::IDEMPOTENT
            || matches!(failure, CallError::DeadlineExceeded) && first_deadline == deadline
        {
            return Err(failure);
        }
        let second = match self.pick(&replicas, Some(first.addr), now) {
            Some(other) => other,
            // The only replica, and the call never reached it: once more.
            None if matches!(failure, CallError::Unreachable(_)) => first,
            None => return Err(failure),
        };
        self.metrics.upstream_retries.inc();
        let result = self.attempt::<M>(second, request, deadline, now).await;
        if let Err(failure) = &result
            && failure.is_replicas_fault()
        {
            self.eject(second, Instant::now());
        }
        result
    }

    /// One call to `replica`, started at `now`.
    async fn attempt<M: Rpc>(
        &self,
        replica: &Replica,
        request: &M::Request,
        deadline: Instant,
        now: Instant,
    ) -> Result<M::Response, CallError> {
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            self.metrics.record_upstream(Outcome::DeadlineExceeded);
            return Err(CallError::DeadlineExceeded);
        }
        let call = replica.upstream.call::<M>(request, deadline, remaining);
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(answer)) => {
                replica.mark_healthy();
                Ok(answer)
            }
            Err(_) => Err(CallError::DeadlineExceeded),
            // gcd enforces the `grpc-timeout` it was sent as well (rounded
            // up, so never before this deadline), and its answer may come
            // first.
            Ok(Err(CallError::Status { .. })) if Instant::now() >= deadline => {
                Err(CallError::DeadlineExceeded)
            }
            Ok(Err(failure)) => Err(failure),
        };
        self.metrics.record_upstream(match &result {
            Ok(_) => Outcome::Ok,
            Err(CallError::NoReplicas | CallError::Unreachable(_)) => Outcome::Unavailable,
            Err(CallError::DeadlineExceeded) => Outcome::DeadlineExceeded,
            Err(CallError::Status { .. } | CallError::Broken(_)) => Outcome::Error,
        });
        result
    }

    /// Round-robin over healthy replicas, never `exclude`. A replica whose
    /// ejection has run out gets one health check at a time, in a task of
    /// its own (the others keep skipping it until a check succeeds). An
    /// ejected replica is picked only when nothing else is left.
    fn pick<'a>(
        &self,
        replicas: &'a [Arc<Replica>],
        exclude: Option<SocketAddr>,
        now: Instant,
    ) -> Option<&'a Replica> {
        let len = replicas.len();
        if len == 0 {
            return None;
        }
        let now = self.millis_at(now);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for offset in 0..len {
            let replica = &replicas[(start + offset) % len];
            if Some(replica.addr) == exclude {
                continue;
            }
            match replica.standing(now, self.eject_millis()) {
                Standing::Healthy => return Some(replica),
                Standing::ToProbe => self.probe(replica.clone()),
                Standing::Ejected => {}
            }
            fallback.get_or_insert(replica.as_ref());
        }
        fallback
    }

    /// Checks an ejected replica's health, and takes it back if it is
    /// serving; it stays ejected otherwise.
    fn probe(&self, replica: Arc<Replica>) {
        let timeout = self.settings.deadline;
        tokio::spawn(async move {
            let deadline = Instant::now() + timeout;
            let check = replica.upstream.check_health(deadline, timeout);
            match tokio::time::timeout_at(deadline, check).await {
                Ok(Ok(())) => replica.mark_healthy(),
                Ok(Err(error)) => {
                    tracing::debug!(replica = %replica.addr, %error, "gcd replica still failing");
                }
                Err(_) => {
                    tracing::debug!(replica = %replica.addr, "gcd replica's health check timed out");
                }
            }
        });
    }

    fn eject(&self, replica: &Replica, now: Instant) {
        let until = self.millis_at(now) + self.eject_millis();
        replica.ejected_until.store(until, Ordering::Relaxed);
    }

    fn eject_millis(&self) -> u64 {
        EJECT_FOR.as_millis() as u64
    }

    fn millis_at(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn snapshot(&self) -> Arc<[Arc<Replica>]> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A replica, connected on its first call.
    fn connect(&self, addr: SocketAddr) -> Replica {
        Replica {
            addr,
            upstream: Upstream::new(addr, self.settings.connect_timeout),
            ejected_until: AtomicU64::new(Replica::HEALTHY),
        }
    }
}
