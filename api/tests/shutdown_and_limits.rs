//! Graceful shutdown and resource bounds of the real `api` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use testkit::{
    eventually,
    fake_gcd::GatedGcd,
    http::{get, try_request},
    process::Service,
};

/// Bound on how long a drained process may take to exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let gcd = GatedGcd::start();
    let mut api = Service::api(
        &gcd.addr.to_string(),
        &["--shutdown-delay-ms", "2000", "--deadline-ms", "30000"],
    );
    let addr = api.addr;
    assert_eq!(get(api.admin_addr, "/readyz").status, 200);

    let in_flight: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(addr, "/gcd/12/18")))
        .collect();
    gcd.wait_for_arrivals(8);

    api.signal("TERM");
    eventually("/readyz to report draining", Duration::from_secs(2), || {
        try_request(api.admin_addr, "GET", "/readyz").filter(|r| r.status != 200)
    });
    gcd.open();

    for request in in_flight {
        let response = request.join().unwrap();
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, r#"{"result":"6"}"#)
        );
    }
    let status = api.wait_exit(EXIT_BOUND);
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        api.log()
    );
}

#[test]
fn too_many_requests_in_flight_are_shed_with_503() {
    let gcd = GatedGcd::start();
    let api = Service::api(
        &gcd.addr.to_string(),
        &["--max-in-flight", "2", "--deadline-ms", "30000"],
    );
    let addr = api.addr;

    let held: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(addr, "/gcd/12/18")))
        .collect();
    gcd.wait_for_arrivals(2);

    let shed = get(addr, "/gcd/12/18");
    assert_eq!(shed.status, 503, "{shed:?}");
    assert_eq!(shed.body, r#"{"error":"Server overloaded, try again"}"#);

    gcd.open();
    for request in held {
        assert_eq!(request.join().unwrap().status, 200);
    }
    assert_eq!(get(addr, "/gcd/12/18").status, 200);
}

#[test]
fn a_thousand_idle_connections_do_not_block_a_request() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);

    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(api.addr).unwrap())
        .collect();
    let response = get(api.addr, "/gcd/12/18");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, r#"{"result":"6"}"#)
    );
    drop(idle);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &["--header-read-timeout-ms", "200"]);

    let mut slow = TcpStream::connect(api.addr).unwrap();
    slow.write_all(b"GET /gcd/12/18 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server closes the connection (possibly after a 408); a read
    // timeout here would mean it kept waiting.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest)
        .expect("the api closed the connection");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[test]
fn bad_configuration_is_a_clear_start_up_error() {
    for (args, complaint) in [
        (&["--gcd", "no-port"][..], "not host:port"),
        (&["--max-in-flight", "0"][..], "must be greater than zero"),
        (&["--listen", "nonsense"][..], "--listen"),
    ] {
        let output = std::process::Command::new(testkit::process::binary("api"))
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{args:?} started");
        assert!(text.contains(complaint), "{args:?}: {text}");
    }
}
