//! The `Compute` client on h2 ([`api::upstream`]) against real servers:
//! answers, the statuses gcd sends passed on, and connections gcd closes
//! (idle, or killed and restarted) replaced without a failed call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use api::upstream::Upstream;
use gcd_proto::{
    GcdRequest, GcdResponse,
    gcd_service_server::{GcdService, GcdServiceServer},
};
use testkit::{eventually, process::Service};
use tonic::{Code, Status};

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
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);

    let status = upstream.compute(1, 5, TIMEOUT).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "scripted: bad input")
    );
    let status = upstream.compute(2, 5, TIMEOUT).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // A status is an answer: the connection stays.
    assert!(upstream.is_connected());
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gcd_closes_as_idle_is_replaced_without_a_failed_call() {
    let gcd = Service::gcd(None, &["--idle-timeout-ms", "1000"]);
    let upstream = Upstream::new(gcd.addr, CONNECT_TIMEOUT);
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);
    assert!(upstream.is_connected());
    // gcd sends GOAWAY after a second without calls and closes; the
    // connection is taken out of use as it ends, not when a call fails.
    eventually(
        "gcd to close the idle connection",
        Duration::from_secs(20),
        || (!upstream.is_connected()).then_some(()),
    );
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);
    assert_eq!(gcd.metric("gcd_compute_requests_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_and_restarted_on_its_address_is_reconnected() {
    let gcd = Service::gcd(None, &[]);
    let addr = gcd.addr;
    let upstream = Upstream::new(addr, CONNECT_TIMEOUT);
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);
    gcd.signal("KILL");
    drop(gcd);
    eventually(
        "the broken connection to be dropped",
        Duration::from_secs(20),
        || (!upstream.is_connected()).then_some(()),
    );
    let status = upstream.compute(12, 18, TIMEOUT).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");

    let restarted = Service::gcd(Some(addr), &[]);
    assert_eq!(upstream.compute(12, 18, TIMEOUT).await.unwrap(), 6);
    assert_eq!(restarted.metric("gcd_compute_requests_total"), 1);
}
