//! Per-request load balancing over several gcd replicas, and what happens
//! when replicas die, vanish, appear or come back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

mod common;

use common::{InProcessApi, ScriptedResolver};
use testkit::{
    eventually,
    fake_gcd::{Answer, ScriptedReplica, SilentGcd},
    http::get,
    process::Service,
};

const COMPUTED: &str = "gcd_compute_requests_total";

fn start_replicas(count: usize) -> Vec<Service> {
    (0..count).map(|_| Service::gcd(None, &[])).collect()
}

fn addr_list(replicas: &[Service]) -> String {
    replicas
        .iter()
        .map(|r| r.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn assert_ok(addr: SocketAddr) {
    let response = get(addr, "/gcd/12/18");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, r#"{"result":"6"}"#)
    );
}

#[test]
fn requests_are_spread_over_every_replica() {
    let replicas = start_replicas(3);
    let api = Service::api(&addr_list(&replicas), &[]);

    for _ in 0..300 {
        assert_ok(api.addr);
    }
    let served: Vec<u64> = replicas.iter().map(|r| r.metric(COMPUTED)).collect();
    assert_eq!(served.iter().sum::<u64>(), 300, "{served:?}");
    for count in &served {
        assert!(
            *count >= 60,
            "a replica got under 20% of 300 requests: {served:?}"
        );
    }
}

#[test]
fn a_killed_replica_loses_no_request() {
    replica_leaves_under_load("KILL");
}

/// Stopping with no shutdown delay is the worst case: the api learns the
/// replica is gone only from its GOAWAY and refused connections.
#[test]
fn a_replica_stopped_without_delay_loses_no_request() {
    replica_leaves_under_load("TERM");
}

/// Streams requests through the api while one of three replicas gets
/// `signal`; every request must still be answered with 200.
fn replica_leaves_under_load(signal: &str) {
    let mut replicas = start_replicas(3);
    let api = Service::api(&addr_list(&replicas), &[]);

    let load = Load::start(api.addr);
    load.wait_for(200);
    let victim = replicas.remove(0);
    victim.signal(signal);
    load.wait_for(load.answered() + 500);
    load.stop_and_assert_all_ok();

    // Calls that hit the dead replica were retried on a live one.
    assert!(
        api.metric("api_upstream_retries_total") > 0,
        "{}",
        api.log()
    );
}

/// A replica that accepts connections but never answers (a hung process,
/// or a dead pod whose address is still listed) costs latency, not
/// requests: the first attempt gets half the deadline, then the call is
/// retried elsewhere.
#[test]
fn a_hung_replica_loses_no_request() {
    let replicas = start_replicas(2);
    let hung = SilentGcd::start();
    let list = format!("{},{}", addr_list(&replicas), hung.addr);
    let api = Service::api(&list, &["--deadline-ms", "4000"]);

    let load = Load::start(api.addr);
    load.wait_for(300);
    load.stop_and_assert_all_ok();
    assert!(
        api.metric("api_upstream_retries_total") > 0,
        "{}",
        api.log()
    );
}

/// Four clients streaming requests through the api until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<testkit::http::Response>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(api: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..4)
            .map(|_| {
                let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let response = get(api, "/gcd/12/18");
                        if response.status != 200 {
                            failures.lock().unwrap().push(response);
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            failures,
            clients,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    fn wait_for(&self, count: usize) {
        eventually(&format!("{count} answers"), Duration::from_secs(60), || {
            (self.answered() >= count).then_some(())
        });
    }

    fn stop_and_assert_all_ok(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests, e.g. {:?}",
            failures.len(),
            failures.first()
        );
    }
}

#[test]
fn all_replicas_down_is_503_then_recovers_on_the_same_address() {
    let replicas = start_replicas(2);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let api = Service::api(&addr_list(&replicas), &["--deadline-ms", "1000"]);
    assert_ok(api.addr);

    for replica in &replicas {
        replica.signal("KILL");
    }
    drop(replicas);
    let started = Instant::now();
    let response = get(api.addr, "/gcd/12/18");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.body.contains("gcd is unavailable"), "{response:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "503 only after the deadline"
    );

    // One replica comes back on its old address; the api was not restarted.
    let _back = Service::gcd(Some(addrs[1]), &[]);
    eventually(
        "the api to answer 200 again",
        Duration::from_secs(5),
        || (get(api.addr, "/gcd/12/18").status == 200).then_some(()),
    );
}

/// The api library with an injected resolver: one name stands for a
/// changing set of real gcd replicas, as a headless Service does.
#[test]
fn replicas_that_appear_or_vanish_are_picked_up_without_restart() {
    let replicas = start_replicas(3);
    let resolver = Arc::new(ScriptedResolver::default());
    resolver.answer(&[replicas[0].addr]);
    let api = InProcessApi::start(resolver.clone(), 50);
    let admin = api.admin_addr;

    let balanced_over = |count: u64| {
        eventually(
            &format!("{count} replicas"),
            Duration::from_secs(10),
            || {
                let text = get(admin, "/metrics").body;
                (testkit::process::metric_value(&text, "api_gcd_replicas") == Some(count))
                    .then_some(())
            },
        )
    };
    let counts = || {
        replicas
            .iter()
            .map(|r| r.metric(COMPUTED))
            .collect::<Vec<_>>()
    };

    balanced_over(1);
    for _ in 0..30 {
        assert_ok(api.addr);
    }
    assert_eq!(counts(), [30, 0, 0]);

    // Two more pods become ready.
    resolver.answer(&[replicas[0].addr, replicas[1].addr, replicas[2].addr]);
    balanced_over(3);
    for _ in 0..30 {
        assert_ok(api.addr);
    }
    assert_eq!(counts(), [40, 10, 10]);

    // The first pod is gone from DNS: it gets nothing more.
    resolver.answer(&[replicas[1].addr, replicas[2].addr]);
    balanced_over(2);
    for _ in 0..30 {
        assert_ok(api.addr);
    }
    assert_eq!(counts(), [40, 25, 25]);

    api.stop();
}

/// A replica advertising `SETTINGS_MAX_CONCURRENT_STREAMS` 0 never gets a
/// call queued on it: alone, it is answered 503 at once, not at the
/// deadline (but for the first call, which goes out before the replica's
/// SETTINGS arrive); beside a healthy replica, every request is served.
#[test]
fn a_replica_allowing_no_stream_is_answered_at_once_and_passed_over() {
    let refusing = ScriptedReplica::with_stream_limit(Answer::Right, 0);
    let deadline = Duration::from_secs(4);
    let api = Service::api(
        &refusing.addr.to_string(),
        &["--deadline-ms", &deadline.as_millis().to_string()],
    );
    let first = get(api.addr, "/gcd/12/18");
    assert!(matches!(first.status, 503 | 504), "{first:?}");
    for _ in 0..10 {
        let started = Instant::now();
        let response = get(api.addr, "/gcd/12/18");
        assert_eq!(response.status, 503, "{response:?}");
        assert!(
            started.elapsed() < deadline / 2,
            "answered only after {:?}",
            started.elapsed()
        );
    }
    drop(api);

    let healthy = Service::gcd(None, &[]);
    let list = format!("{},{}", refusing.addr, healthy.addr);
    let api = Service::api(&list, &["--deadline-ms", "2000"]);
    for _ in 0..50 {
        assert_ok(api.addr);
    }
    assert_eq!(refusing.computes(), 0);
}

/// An OK status without a message, an oversized answer and an undecodable
/// one count against the replica: the request is retried on the other
/// replica, and the broken one is passed over until a health check finds
/// it serving again.
#[test]
fn wrong_answers_are_retried_elsewhere_and_eject_the_replica() {
    for answer in [
        Answer::OkWithoutMessage,
        Answer::Oversized,
        Answer::Undecodable,
    ] {
        let broken = ScriptedReplica::start(answer);
        let healthy = Service::gcd(None, &[]);
        let list = format!("{},{}", broken.addr, healthy.addr);
        let api = Service::api(&list, &[]);
        for _ in 0..40 {
            let response = get(api.addr, "/gcd/12/18");
            assert_eq!(
                (response.status, response.body.as_str()),
                (200, r#"{"result":"6"}"#),
                "{answer:?}"
            );
        }
        let retries = api.metric("api_upstream_retries_total");
        assert!(retries >= 1, "{answer:?}: no retry");
        // Passed over once it failed: only health checks (every 2 s) put
        // it back in turn, not every other request.
        assert!(
            broken.computes() <= retries as usize && broken.computes() < 10,
            "{answer:?}: {} calls reached the broken replica, {retries} retried",
            broken.computes()
        );
    }
}

/// An ejected replica is probed with a health check of the api's own, in
/// the background: with a replica that keeps every call waiting (a frozen
/// process), one request waits for it, is retried elsewhere, and none
/// after it, over several ejection periods.
#[test]
fn no_request_waits_on_a_replica_being_probed() {
    let replicas = start_replicas(2);
    let frozen = ScriptedReplica::start(Answer::Never);
    let list = format!("{},{}", addr_list(&replicas), frozen.addr);
    let api = Service::api(&list, &["--deadline-ms", "1000"]);

    // One client, one request at a time: only the first request sent to
    // the frozen replica finds it healthy.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(7) || frozen.health_checks() < 2 {
        assert_ok(api.addr);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no health checks"
        );
    }
    assert_eq!(frozen.computes(), 1, "requests went to the frozen replica");
    assert_eq!(api.metric("api_upstream_retries_total"), 1);
}
