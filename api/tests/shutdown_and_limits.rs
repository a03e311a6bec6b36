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
    process::{Launch, NOHUP, Service, WITH_64_OPEN_FILES, launch_to_exit},
};

/// Bound on how long a drained process may take to exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    a_stopping_signal_finishes_in_flight_requests_and_exits_zero("TERM");
}

/// SIGHUP (a closed terminal, a wrapper stopping its children) stops the
/// same graceful way: the README's choice.
#[test]
fn sighup_finishes_in_flight_requests_and_exits_zero() {
    a_stopping_signal_finishes_in_flight_requests_and_exits_zero("HUP");
}

fn a_stopping_signal_finishes_in_flight_requests_and_exits_zero(signal: &str) {
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

    api.signal(signal);
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

/// Waits until `text` has appeared `count` times in the log of `service`.
fn log_shows(service: &Service, text: &str, count: usize) {
    eventually(
        &format!("{count} x {text:?} in the log"),
        EXIT_BOUND,
        || (service.log().matches(text).count() >= count).then_some(()),
    );
}

#[test]
fn sigusr1_and_sigusr2_are_ignored() {
    let gcd = Service::gcd(None, &[]);
    let mut api = Service::api(&gcd.addr.to_string(), &[]);
    api.signal("USR1");
    api.signal("USR2");
    log_shows(&api, "SIGUSR1 ignored", 1);
    log_shows(&api, "SIGUSR2 ignored", 1);
    assert_eq!(get(api.admin_addr, "/readyz").status, 200);
    assert_eq!(get(api.addr, "/gcd/12/18").body, r#"{"result":"6"}"#);
    api.signal("TERM");
    assert!(api.wait_exit(EXIT_BOUND).success(), "{}", api.log());
}

#[test]
fn sighup_stays_ignored_under_nohup() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::launch(
        NOHUP,
        "api",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gcd",
            &gcd.addr.to_string(),
        ],
    );
    api.signal("HUP");
    // Had SIGHUP been caught, its line would precede the second of these
    // in the log: one thread handles every signal, in order.
    api.signal("USR1");
    log_shows(&api, "SIGUSR1 ignored", 1);
    api.signal("USR1");
    log_shows(&api, "SIGUSR1 ignored", 2);
    assert!(!api.log().contains("shutdown signal"), "{}", api.log());
    assert_eq!(get(api.admin_addr, "/readyz").status, 200);
}

#[test]
fn an_open_file_limit_with_no_room_for_clients_is_a_start_up_error() {
    // 16 admin connections, 128 descriptors for replicas and the process:
    // 16 client connections need 160.
    testkit::process::assert_64_open_files_are_refused("api", 160);
    let (code, text) = launch_to_exit(WITH_64_OPEN_FILES, "api", &["--max-connections", "8"], &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--max-connections (API_MAX_CONNECTIONS) is invalid"),
        "{text}"
    );
    let at_the_floor = Launch::Shell(r#"ulimit -n 160 && exec "$0" "$@""#);
    let (code, text) = launch_to_exit(at_the_floor, "api", &["--check-config"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("| public connections (with kernel socket buffers) | 16 |"),
        "{text}"
    );
}

#[test]
fn the_start_up_line_says_where_the_memory_limit_came_from() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);
    let log = api.log();
    let line = log
        .lines()
        .find(|l| l.contains("memory budget"))
        .unwrap_or(&log);
    // These tests may run in a container with a limit; elsewhere, none.
    if !line.contains("(from /sys/fs/cgroup/") {
        assert!(line.contains("no memory limit found ("), "{line}");
        assert!(line.contains("the caps are the defaults"), "{line}");
        let (code, text) = testkit::process::run_to_exit("api", &["--check-config"], &[]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("no memory limit found ("), "{text}");
    }
    let api = Service::api(&gcd.addr.to_string(), &["--memory-limit", "64Mi"]);
    let log = api.log();
    assert!(
        log.contains("memory_limit=64.0 MiB (from the flag)"),
        "{log}"
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
fn bad_configuration_exits_2_with_a_clear_message() {
    let huge = "18446744073709551615";
    for (args, env, complaint) in [
        (&["--gcd", "no-port"][..], &[][..], "not host:port"),
        (&["--gcd", "[::1:3000"], &[], "not host:port"),
        (&["--gcd", "gcd service:3000"], &[], "not host:port"),
        (&["--max-in-flight", "0"], &[], "between 1 and 65536"),
        (&["--max-in-flight", huge], &[], "between 1 and 65536"),
        (&["--worker-threads", huge], &[], "between 0 and 64"),
        (&["--worker-threads", "100000"], &[], "between 0 and 64"),
        (
            &[],
            &[("API_WORKER_THREADS", "100000")],
            "API_WORKER_THREADS",
        ),
        (&["--deadline-ms", "0"], &[], "--deadline-ms"),
        (
            &["--max-in-flight", "99999999999999999999999"],
            &[],
            "--max-in-flight",
        ),
        (&["--listen", "nonsense"], &[], "--listen"),
        (&["--memory-limit", "1Mi"], &[], "too small"),
        (&["--memory-limit", "lots"], &[], "not a byte count"),
        (
            &["--memory-limit", "16Mi", "--max-connections", "500"],
            &[],
            "more than 75% of the memory limit",
        ),
    ] {
        let (code, text) = testkit::process::run_to_exit("api", args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {text}");
        assert!(text.contains(complaint), "{args:?} {env:?}: {text}");
    }
}

#[test]
fn check_config_prints_the_budget_for_the_memory_limit() {
    let (code, text) =
        testkit::process::run_to_exit("api", &["--check-config", "--memory-limit", "64Mi"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("public connections"), "{text}");
    assert!(text.contains("memory limit 64.0 MiB"), "{text}");
    let (code, text) = testkit::process::run_to_exit(
        "api",
        &["--check-config"],
        &[("API_MEMORY_LIMIT", "64Mi"), ("API_MAX_IN_FLIGHT", "256")],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("| requests in flight | 256 |"), "{text}");
}

/// Sends raw bytes on a new connection, then reads until the server closes
/// it (or 20 s pass).
fn exchange(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);
    for _ in 0..10 {
        let answer = exchange(
            api.addr,
            b"GET /gcd/12/18 HTTP/1.1\r\nHost: pi\r\n\r\n",
            true,
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(r#"{"result":"6"}"#), "{answer}");
    }
}

#[test]
fn hypers_own_rejections_carry_our_json() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);
    let big_header = format!(
        "GET /gcd/1/2 HTTP/1.1\r\nHost: pi\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    // More headers than hyper parses, in a head far under 16 KiB.
    let many_headers: String = std::iter::once("GET /gcd/1/2 HTTP/1.1\r\nHost: pi\r\n".to_owned())
        .chain((0..120).map(|i| format!("X-{i}: a\r\n")))
        .chain(std::iter::once("\r\n".to_owned()))
        .collect();
    let long_line = format!(
        "GET /gcd/{}/2 HTTP/1.1\r\nHost: pi\r\n\r\n",
        "1".repeat(20_000)
    );
    for (request, status, body) in [
        (
            big_header.as_bytes(),
            "431",
            r#"{"error":"Request header fields too large"}"#,
        ),
        (long_line.as_bytes(), "414", r#"{"error":"URI too long"}"#),
        (
            many_headers.as_bytes(),
            "431",
            r#"{"error":"Request header fields too large"}"#,
        ),
        (
            b"GET /gcd/1/2 HTTP/1.1 x\r\nHost: pi\r\n\r\n".as_slice(),
            "400",
            r#"{"error":"Bad request"}"#,
        ),
        (
            b"GET /gcd/1/2 HTTP/1.1\r\n\r\n".as_slice(),
            "400",
            r#"{"error":"Bad request: exactly one valid Host header is required"}"#,
        ),
    ] {
        let answer = exchange(api.addr, request, false);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/json\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with(body), "{answer}");
    }
}

/// A client that opens with HTTP/2 reads frames only: it gets HTTP/2's own
/// refusal (GOAWAY, HTTP_1_1_REQUIRED) with the reason in words.
#[test]
fn an_http2_client_is_told_to_use_http_1_1() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);
    let preface_and_settings = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let answer = exchange(api.addr, preface_and_settings, false);
    // Our SETTINGS, then GOAWAY: last stream 0, error 13, the reason.
    let expected = "\0\0\0\x04\0\0\0\0\0\0\0\x37\x07\0\0\0\0\0\0\0\0\0\0\0\0\x0d\
                    HTTP/2 is not served on this port: use HTTP/1.1";
    assert_eq!(answer, expected);
}

#[test]
fn a_new_client_is_served_when_every_slot_is_held() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &["--max-connections", "4"]);
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(api.addr).unwrap())
        .collect();
    // The port is full of clients that sent nothing: the oldest makes room.
    let started = std::time::Instant::now();
    assert_eq!(get(api.addr, "/gcd/12/18").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    let evicted = silent.iter().filter(|s| closed_by_server(s)).count();
    assert!(evicted >= 1, "no silent connection made room");
}

/// Whether the server has closed `stream`: a read returns end of file or
/// an error, not a timeout.
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match stream.read(&mut [0; 16]) {
        Ok(n) => n == 0,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_keep_alive_connections_are_closed_and_old_ones_retired() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(
        &gcd.addr.to_string(),
        &[
            "--header-read-timeout-ms",
            "300",
            "--max-connection-age-ms",
            "1000",
        ],
    );
    let request: &[u8] = b"GET /gcd/12/18 HTTP/1.1\r\nHost: pi\r\n\r\n";

    // Idle after one answer: closed at the header read timeout.
    let mut stream = TcpStream::connect(api.addr).unwrap();
    stream.write_all(request).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // Busy for longer than the maximum age: every request is answered, one
    // answer says `connection: close`, and the connection ends after it.
    // (Closing it between requests instead would fail the request the
    // client sends at that moment.)
    let mut stream = TcpStream::connect(api.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0; 4096];
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "never retired");
        stream
            .write_all(request)
            .expect("a busy connection was closed without `connection: close`");
        let n = stream.read(&mut buffer).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "a request on a busy connection went unanswered: {answer:?}"
        );
        if answer.contains("connection: close") {
            break;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        stream.read(&mut buffer).unwrap_or(0),
        0,
        "still open after `connection: close`"
    );
}
