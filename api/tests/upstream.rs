//! The `Compute` client on h2 ([`api::upstream`]) against real servers:
//! answers, the statuses gcd sends passed on, connections gcd closes (idle,
//! or killed and restarted) replaced without a failed call, the replica's
//! stream limit kept in the api, and health checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use api::upstream::{CallError, RECYCLE_AFTER_ABANDONED, Upstream};
use gcd_proto::{
    GcdRequest, GcdResponse,
    gcd_service_server::{GcdService, GcdServiceServer},
};
use testkit::{
    eventually,
    fake_gcd::{Answer, ScriptedReplica},
    process::Service,
};
use tokio::time::Instant;
use tonic::Status;

const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers `Compute` unless `a` names a failure: 1 `INVALID_ARGUMENT`,
/// 2 `RESOURCE_EXHAUSTED` (gcd turning a call away).
struct Scripted;

#[tonic::async_trait]
impl GcdService for Scripted {
    async fn compute(
        &self,
        request: tonic::Request<GcdRequest>,
    ) -> Result<tonic::Response<GcdResponse>, Status> {
        match request.into_inner() {
            GcdRequest { a: 1, .. } => Err(Status::invalid_argument("scripted: bad input")),
            GcdRequest { a: 2, .. } => Err(Status::resource_exhausted("scripted: full")),
            GcdRequest { mut a, mut b } => {
                while b != 0 {
                    (a, b) = (b, a % b);
                }
                Ok(tonic::Response::new(GcdResponse { result: a }))
            }
        }
    }
}

async fn scripted_gcd() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GcdServiceServer::new(Scripted))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test]
async fn answers_and_the_statuses_gcd_sends_are_passed_on() {
    let upstream = Upstream::new(scripted_gcd().await, CONNECT_TIMEOUT);
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );

    let error = upstream
        .compute(1, 5, Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap_err();
    let CallError::Status { code, message } = error else {
        panic!("{error}")
    };
    assert_eq!(
        (code, message.as_str()),
        (grpc_wire::Code::InvalidArgument, "scripted: bad input")
    );
    let error = upstream
        .compute(2, 5, Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap_err();
    // Turned away: another replica may take it.
    assert!(matches!(error, CallError::Unreachable(_)), "{error}");
    // A status is an answer: the connection stays.
    assert!(upstream.is_connected());
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gcd_closes_as_idle_is_replaced_without_a_failed_call() {
    let gcd = Service::gcd(None, &["--idle-timeout-ms", "1000"]);
    let upstream = Upstream::new(gcd.addr, CONNECT_TIMEOUT);
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );
    assert!(upstream.is_connected());
    // gcd sends GOAWAY after a second without calls and closes; the
    // connection is taken out of use as it ends, not when a call fails.
    eventually(
        "gcd to close the idle connection",
        Duration::from_secs(20),
        || (!upstream.is_connected()).then_some(()),
    );
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );
    assert_eq!(gcd.metric("gcd_compute_requests_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_and_restarted_on_its_address_is_reconnected() {
    let gcd = Service::gcd(None, &[]);
    let addr = gcd.addr;
    let upstream = Upstream::new(addr, CONNECT_TIMEOUT);
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );
    gcd.signal("KILL");
    drop(gcd);
    eventually(
        "the broken connection to be dropped",
        Duration::from_secs(20),
        || (!upstream.is_connected()).then_some(()),
    );
    let error = upstream
        .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Unreachable(_)), "{error}");

    let restarted = Service::gcd(Some(addr), &[]);
    assert_eq!(
        upstream
            .compute(12, 18, Instant::now() + TIMEOUT, TIMEOUT)
            .await
            .unwrap(),
        6
    );
    assert_eq!(restarted.metric("gcd_compute_requests_total"), 1);
}

/// A replica whose `SETTINGS_MAX_CONCURRENT_STREAMS` is 0: no call is
/// queued behind a stream that will never come, each fails at once (but
/// the first, sent before the replica's SETTINGS arrived: it may be
/// refused, or left unanswered until its deadline).
#[tokio::test]
async fn a_replica_allowing_no_stream_fails_every_call_at_once() {
    let replica = ScriptedReplica::with_stream_limit(Answer::Right, 0);
    let upstream = Upstream::new(replica.addr, CONNECT_TIMEOUT);
    let short = Duration::from_millis(200);
    let deadline = Instant::now() + short;
    let first = tokio::time::timeout_at(deadline, upstream.compute(12, 18, deadline, short));
    assert!(!matches!(first.await, Ok(Ok(_))));
    for _ in 0..20 {
        let started = Instant::now();
        let error = upstream
            .compute(12, 18, started + TIMEOUT, TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(error, CallError::Unreachable(_)), "{error}");
        assert!(
            started.elapsed() < TIMEOUT / 2,
            "failed only after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(replica.computes(), 0);
    assert_eq!(replica.connections(), 1);
}

/// Calls beyond the streams a replica allows wait in the api, not in h2,
/// and give up at their deadline as unreachable (to be retried elsewhere)
/// without ever reaching the replica.
#[tokio::test]
async fn calls_beyond_the_stream_limit_fail_unreachable_at_their_deadline() {
    let replica = ScriptedReplica::with_stream_limit(Answer::Never, 4);
    let upstream = std::sync::Arc::new(Upstream::new(replica.addr, CONNECT_TIMEOUT));
    // The replica's SETTINGS are in before its limit is relied on; the
    // stream of this first call stays taken, abandoned.
    let short = Duration::from_millis(200);
    let deadline = Instant::now() + short;
    let first = tokio::time::timeout_at(deadline, upstream.compute(12, 18, deadline, short));
    assert!(first.await.is_err(), "the replica never answers");
    let holding: Vec<_> = (0..3)
        .map(|_| {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + TIMEOUT;
                tokio::time::timeout_at(deadline, upstream.compute(12, 18, deadline, TIMEOUT)).await
            })
        })
        .collect();
    eventually_async("4 calls held by the replica", || replica.computes() == 4).await;

    let started = Instant::now();
    let wait = Duration::from_millis(300);
    let error = upstream
        .compute(12, 18, started + wait, wait)
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Unreachable(_)), "{error}");
    assert!(started.elapsed() >= wait, "gave up before its deadline");
    assert_eq!(
        replica.computes(),
        4,
        "a call beyond the limit reached the replica"
    );
    for call in holding {
        call.abort();
    }
}

/// Streams whose calls were abandoned at their deadline stay taken (h2
/// holds them until the replica reads their resets); a connection that
/// gathers `RECYCLE_AFTER_ABANDONED` of them is replaced and closed.
#[tokio::test]
async fn a_connection_gathering_abandoned_streams_is_replaced_and_closed() {
    let replica = ScriptedReplica::start(Answer::Never);
    let upstream = Upstream::new(replica.addr, CONNECT_TIMEOUT);
    let short = Duration::from_millis(50);
    for _ in 0..RECYCLE_AFTER_ABANDONED {
        let deadline = Instant::now() + short;
        let call = tokio::time::timeout_at(deadline, upstream.compute(12, 18, deadline, short));
        assert!(call.await.is_err(), "the replica never answers");
    }
    assert_eq!(replica.computes(), RECYCLE_AFTER_ABANDONED);
    assert!(!upstream.is_connected(), "the connection is still in use");
    eventually_async("the replaced connection to be closed", || {
        replica.closed() == 1
    })
    .await;

    let deadline = Instant::now() + short;
    let call = tokio::time::timeout_at(deadline, upstream.compute(12, 18, deadline, short));
    assert!(call.await.is_err());
    assert_eq!(replica.connections(), 2);
}

/// The health check the balancer probes replicas with.
#[tokio::test]
async fn health_checks_pass_on_a_serving_replica_and_fail_on_a_broken_one() {
    let serving = ScriptedReplica::start(Answer::Right);
    let upstream = Upstream::new(serving.addr, CONNECT_TIMEOUT);
    upstream
        .check_health(Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap();
    assert_eq!((serving.health_checks(), serving.computes()), (1, 0));

    let gcd = Service::gcd(None, &[]);
    let upstream = Upstream::new(gcd.addr, CONNECT_TIMEOUT);
    upstream
        .check_health(Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(gcd.metric("gcd_compute_requests_total"), 0);

    // A gRPC server without the health service answered: it is up.
    let upstream = Upstream::new(scripted_gcd().await, CONNECT_TIMEOUT);
    upstream
        .check_health(Instant::now() + TIMEOUT, TIMEOUT)
        .await
        .unwrap();

    let hung = ScriptedReplica::start(Answer::Never);
    let upstream = Upstream::new(hung.addr, CONNECT_TIMEOUT);
    let short = Duration::from_millis(200);
    let deadline = Instant::now() + short;
    let check = tokio::time::timeout_at(deadline, upstream.check_health(deadline, short));
    assert!(check.await.is_err());
}

/// Polls `done` without blocking the runtime the replica's client runs on.
async fn eventually_async(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
