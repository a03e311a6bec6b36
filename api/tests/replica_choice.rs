//! Which addresses the balancer uses: a fair choice when more resolve than
//! it balances over, and every target resolved at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::{
    balancer::{Balancer, MAX_REPLICAS, Settings},
    metrics::ApiMetrics,
    resolve::{Resolution, Resolve, Target},
};
use tokio::sync::Barrier;

/// Addresses nothing is asked of: replicas are connected on first call.
fn addrs(count: u16) -> Vec<SocketAddr> {
    (0..count)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i)))
        .collect()
}

/// Every target stands for its own fixed list; with a barrier, each lookup
/// answers only once all of them have started.
struct Fixed {
    answers: Mutex<Vec<(Target, Vec<SocketAddr>)>>,
    together: Option<Barrier>,
}

impl Fixed {
    fn new(answers: Vec<(Target, Vec<SocketAddr>)>, together: Option<Barrier>) -> Self {
        Self {
            answers: Mutex::new(answers),
            together,
        }
    }

    /// The one target's answer from now on.
    fn answer(&self, addrs: Vec<SocketAddr>) {
        self.answers.lock().unwrap()[0].1 = addrs;
    }
}

impl Resolve for Fixed {
    fn resolve<'a>(&'a self, target: &'a Target) -> Resolution<'a> {
        Box::pin(async move {
            if let Some(together) = &self.together {
                together.wait().await;
            }
            let answers = self.answers.lock().unwrap();
            let (_, addrs) = answers.iter().find(|(t, _)| t == target).unwrap();
            Ok(addrs.clone())
        })
    }
}

fn balancer(resolver: Arc<Fixed>) -> Balancer {
    let targets = resolver
        .answers
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    Balancer::new(
        targets,
        resolver,
        Settings {
            deadline: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(100),
        },
        Arc::new(ApiMetrics::default()),
    )
}

fn one_name(addrs: Vec<SocketAddr>) -> Arc<Fixed> {
    Arc::new(Fixed::new(
        vec![("gcd-service:3000".parse().unwrap(), addrs)],
        None,
    ))
}

/// Of 100 addresses, each api process keeps 64, its own choice, so that
/// across processes every address is used (the last in address order
/// too); a process keeps its choice while the addresses resolve.
#[tokio::test]
async fn of_more_addresses_than_balanced_over_each_process_keeps_its_own_choice() {
    let all = addrs(100);
    let mut used = HashSet::new();
    let mut choices = HashSet::new();
    for _ in 0..20 {
        let balancer = balancer(one_name(all.clone()));
        balancer.refresh().await;
        let chosen = balancer.replica_addrs();
        assert_eq!(chosen.len(), MAX_REPLICAS);
        balancer.refresh().await;
        assert_eq!(balancer.replica_addrs(), chosen, "the choice changed");
        used.extend(chosen.iter().copied());
        choices.insert(chosen);
    }
    assert!(choices.len() > 1, "every process made the same choice");
    assert_eq!(used.len(), all.len(), "some addresses are never used");
}

/// An address leaving takes only its own place: the rest of the choice
/// stays (and their connections with it).
#[tokio::test]
async fn a_departing_address_leaves_the_rest_of_the_choice_in_place() {
    let all = addrs(100);
    let resolver = one_name(all.clone());
    let balancer = balancer(resolver.clone());
    balancer.refresh().await;
    let chosen = balancer.replica_addrs();

    let gone = chosen[0];
    resolver.answer(all.iter().copied().filter(|a| *a != gone).collect());
    balancer.refresh().await;
    let now: HashSet<SocketAddr> = balancer.replica_addrs().into_iter().collect();
    assert_eq!(now.len(), MAX_REPLICAS);
    assert!(!now.contains(&gone));
    assert!(
        chosen[1..].iter().all(|kept| now.contains(kept)),
        "more than the departed address changed"
    );
}

/// Several targets are looked up together: each lookup here answers only
/// once every one has started, so one after another would time out.
#[tokio::test]
async fn several_targets_are_resolved_at_once() {
    let answers: Vec<(Target, Vec<SocketAddr>)> = (0..3u16)
        .map(|i| {
            let target = format!("gcd-{i}:3000").parse().unwrap();
            (target, vec![SocketAddr::from(([127, 0, 0, 1], 21_000 + i))])
        })
        .collect();
    let resolver = Arc::new(Fixed::new(answers, Some(Barrier::new(3))));
    let balancer = balancer(resolver);
    tokio::time::timeout(Duration::from_secs(4), balancer.refresh())
        .await
        .expect("the lookups ran one after another");
    assert_eq!(balancer.replica_addrs().len(), 3);
}
