//! Every row of the HTTP contract, through the real `api` binary in front
//! of a real `gcd`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use testkit::{
    fake_gcd::SilentGcd,
    http::{Response, get, request},
    process::Service,
};

fn assert_json(response: &Response, status: u16, body: &str) {
    assert_eq!(
        (response.status, response.body.as_str()),
        (status, body),
        "unexpected response {response:?}"
    );
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
}

fn json_error(response: &Response) -> String {
    let value: serde_json::Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {response:?}"));
    value["error"].as_str().expect("an error string").to_owned()
}

#[test]
fn answers_every_row_of_the_contract() {
    let gcd = Service::gcd(None, &[]);
    let api = Service::api(&gcd.addr.to_string(), &[]);

    for (path, result) in [
        ("/gcd/12/18", "6"),
        ("/gcd/18/12", "6"),
        ("/gcd/0/0", "0"),
        ("/gcd/0/5", "5"),
        ("/gcd/012/0018", "6"),
        (
            "/gcd/18446744073709551615/18446744073709551615",
            "18446744073709551615",
        ),
        ("/gcd/18446744073709551615/3", "3"),
        ("/gcd/18446744073709551557/2", "1"),
        // Percent-encoded digits are decoded, as the original's gin does.
        ("/gcd/%31%32/18", "6"),
        ("/gcd/12/%31%38", "6"),
    ] {
        let expected = format!("{{\"result\":\"{result}\"}}");
        assert_json(&get(api.addr, path), 200, &expected);
    }

    let invalid = [
        "abc",
        "-1",
        "+12",
        "18446744073709551616",
        "",
        "1.5",
        "1%2F2",
        "%zz",
        "1e3",
    ];
    for bad in invalid {
        assert_json(
            &get(api.addr, &format!("/gcd/{bad}/18")),
            400,
            r#"{"error":"Invalid parameter A"}"#,
        );
        assert_json(
            &get(api.addr, &format!("/gcd/12/{bad}")),
            400,
            r#"{"error":"Invalid parameter B"}"#,
        );
    }
    // Both bad: A is reported, as in the original.
    assert_json(
        &get(api.addr, "/gcd/x/y"),
        400,
        r#"{"error":"Invalid parameter A"}"#,
    );

    for path in [
        "/",
        "/gcd",
        "/gcd/",
        "/gcd/12",
        "/gcd/1/2/3",
        "/GCD/1/2",
        "/metrics",
        "/readyz",
    ] {
        let response = get(api.addr, path);
        assert_eq!(response.status, 404, "{path}: {response:?}");
        assert_eq!(response.content_type.as_deref(), Some("application/json"));
        assert_eq!(json_error(&response), "Not found");
    }

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let response = request(api.addr, method, "/gcd/12/18");
        assert_eq!(response.status, 405, "{method}: {response:?}");
        assert_eq!(response.content_type.as_deref(), Some("application/json"));
        assert_eq!(json_error(&response), "Method not allowed");
    }

    let long = format!("/gcd/{}/1", "1".repeat(2000));
    let response = get(api.addr, &long);
    assert_eq!(response.status, 414, "{response:?}");
    assert_eq!(json_error(&response), "URI too long");

    assert!(gcd.metric("gcd_compute_requests_total") >= 8);

    // HEAD is GET without the body.
    let head = request(api.addr, "HEAD", "/gcd/12/18");
    assert_eq!((head.status, head.body.as_str()), (200, ""), "{head:?}");

    // Requests are counted under the route they matched: `/gcd/12` and
    // `/gcd/1/2/3` are not `/gcd/{a}/{b}`.
    let metrics = get(api.admin_addr, "/metrics").body;
    let series = |route: &str, status: &str| {
        testkit::process::metric_value(
            &metrics,
            &format!("api_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"),
        )
        .unwrap_or(0)
    };
    assert_eq!(series("/gcd/{a}/{b}", "404"), 0, "{metrics}");
    assert!(series("unmatched", "404") >= 8, "{metrics}");
    assert!(series("/gcd/{a}/{b}", "200") >= 10, "{metrics}");
}

#[test]
fn no_reachable_replica_is_503_within_the_deadline() {
    // A port nothing listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let api = Service::api(&closed.to_string(), &["--deadline-ms", "2000"]);

    let started = Instant::now();
    let response = get(api.addr, "/gcd/12/18");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert!(
        json_error(&response).contains("gcd is unavailable"),
        "{response:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 only after the deadline"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_503() {
    let api = Service::api("gcd.invalid:3000", &[]);
    let response = get(api.addr, "/gcd/12/18");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        json_error(&response).contains("gcd is unavailable"),
        "{response:?}"
    );
}

#[test]
fn a_replica_that_never_answers_is_504_at_the_deadline() {
    let silent = SilentGcd::start();
    let api = Service::api(&silent.addr.to_string(), &["--deadline-ms", "300"]);

    let started = Instant::now();
    let response = get(api.addr, "/gcd/12/18");
    let elapsed = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}\n{}", api.log());
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        json_error(&response),
        "gcd did not answer within the deadline"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "answered before the deadline: {elapsed:?}"
    );
}
