//! The balanced client calls any unary method, and retries on another
//! replica only the ones declared idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use api::{
    balancer::{Balancer, Settings},
    metrics::ApiMetrics,
    resolve::{Resolution, Resolve, Target},
    rpc::{CallError, Compute, HealthCheck, Rpc, SERVING},
};
use gcd_proto::{GcdRequest, GcdResponse};
use testkit::fake_gcd::{Answer, ScriptedReplica};
use tokio::time::Instant;

/// `Compute`, as a method that must not run twice would be declared.
struct ComputeOnce;

impl Rpc for ComputeOnce {
    const PATH: &'static str = Compute::PATH;
    const IDEMPOTENT: bool = false;
    type Request = GcdRequest;
    type Response = GcdResponse;
}

struct Addrs(Vec<SocketAddr>);

impl Resolve for Addrs {
    fn resolve<'a>(&'a self, _: &'a Target) -> Resolution<'a> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

async fn balanced(addrs: Vec<SocketAddr>) -> (Balancer, Arc<ApiMetrics>) {
    let metrics = Arc::new(ApiMetrics::default());
    let balancer = Balancer::new(
        vec!["gcd-service:3000".parse().unwrap()],
        Arc::new(Addrs(addrs)),
        Settings {
            deadline: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
        },
        metrics.clone(),
    );
    balancer.refresh().await;
    (balancer, metrics)
}

/// A port nothing listens on: bound, then closed.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn any_method_and_message_pair_is_called_over_the_balancer() {
    let replica = ScriptedReplica::start(Answer::Right);
    let (balancer, _) = balanced(vec![replica.addr]).await;
    let health = balancer
        .call::<HealthCheck>(&Default::default(), Instant::now())
        .await
        .unwrap();
    assert_eq!(health.status, SERVING);
    let request = GcdRequest { a: 12, b: 18 };
    let answer = balancer
        .call::<Compute>(&request, Instant::now())
        .await
        .unwrap();
    assert_eq!(answer.result, 6);
    assert_eq!((replica.health_checks(), replica.computes()), (1, 1));
}

/// One replica up, one whose port is closed: round robin sends one of two
/// calls to each. An idempotent call that lands on the closed one is
/// answered by the other; one that is not idempotent fails, never sent
/// twice.
#[tokio::test]
async fn only_idempotent_methods_are_retried_on_another_replica() {
    let replica = ScriptedReplica::start(Answer::Right);
    let request = GcdRequest { a: 12, b: 18 };

    let (balancer, metrics) = balanced(vec![replica.addr, closed_port()]).await;
    for _ in 0..2 {
        let answer = balancer.call::<Compute>(&request, Instant::now()).await;
        assert_eq!(answer.unwrap().result, 6);
    }
    assert_eq!(metrics.upstream_retries.get(), 1);

    let (balancer, metrics) = balanced(vec![replica.addr, closed_port()]).await;
    let mut failures = Vec::new();
    for _ in 0..2 {
        match balancer.call::<ComputeOnce>(&request, Instant::now()).await {
            Ok(answer) => assert_eq!(answer.result, 6),
            Err(error) => failures.push(error),
        }
    }
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        matches!(failures[0], CallError::Unreachable(_)),
        "{failures:?}"
    );
    assert_eq!(metrics.upstream_retries.get(), 0);
    // Two idempotent calls and the one that reached it.
    assert_eq!(replica.computes(), 3);
}
