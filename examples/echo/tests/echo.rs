//! `pb.Echo/Say` end to end: served by `echo-gcd` beside Compute, called
//! by `echo-api`'s `/say/{text}` over the balancer, and bounded by the
//! port like every registered method, though its author stated nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use echo::pb::{SayRequest, SayResponse};
use testkit::{
    http::get,
    process::{Service, run_to_exit},
};
use tokio::net::TcpStream;

fn echo_gcd(extra: &[&str]) -> Service {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shutdown-delay-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    Service::start("echo-gcd", &args)
}

/// The calls of `method` a gcd counted.
fn calls(gcd: &Service, method: &str) -> u64 {
    let text = get(gcd.admin_addr, "/metrics").body;
    let series = format!("grpc_calls_total{{method=\"{method}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn say_is_served_balanced_per_request_and_counted() {
    let replicas = [echo_gcd(&[]), echo_gcd(&[])];
    let list = format!("{},{}", replicas[0].addr, replicas[1].addr);
    let api = Service::start(
        "echo-api",
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--gcd",
            &list,
            "--resolve-interval-ms",
            "100",
            "--shutdown-delay-ms",
            "0",
        ],
    );
    for _ in 0..10 {
        let answer = get(api.addr, "/say/hello%20there");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, r#"{"said":"hello there"}"#)
        );
    }
    // gcd's own route and method are still there.
    assert_eq!(get(api.addr, "/gcd/12/18").body, r#"{"result":"6"}"#);
    // Round robin per request: each replica answered half.
    for replica in &replicas {
        assert_eq!(calls(replica, "/pb.Echo/Say"), 5, "{}", replica.log());
    }
    let metrics = get(api.admin_addr, "/metrics").body;
    assert!(metrics.contains("/say/{text}"), "{metrics}");
}

#[test]
fn check_config_lists_say_in_the_budget() {
    let (code, text) = run_to_exit(
        "echo-gcd",
        &["--check-config", "--memory-limit", "32Mi"],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    for method in [
        "/pb.Echo/Say",
        "/pb.GCDService/Compute",
        "/grpc.health.v1.Health/*",
    ] {
        assert!(
            text.contains(&format!("- {method}: messages up to 1024 bytes")),
            "{method}: {text}"
        );
    }
}

/// A client on its own HTTP/2 connection to `gcd`.
async fn h2_client(gcd: &Service) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(gcd.addr).await.unwrap();
    let (calls, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    calls.ready().await.unwrap()
}

fn say_request() -> http::Request<()> {
    http::Request::post("http://gcd/pb.Echo/Say")
        .header(http::header::CONTENT_TYPE, grpc_wire::CONTENT_TYPE)
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The status of an answer whose head carries it (trailers-only), or of
/// its trailers.
async fn status_of(answer: http::Response<h2::RecvStream>) -> (grpc_wire::Code, Bytes) {
    if let Some(Some(code)) = grpc_wire::Code::of(answer.headers()) {
        return (code, Bytes::new());
    }
    let mut body = answer.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    (
        grpc_wire::Code::of(&trailers).unwrap().unwrap(),
        data.into(),
    )
}

#[tokio::test]
async fn say_gets_the_ports_bounds_without_stating_any() {
    let gcd = echo_gcd(&["--call-timeout-ms", "300"]);
    let mut client = h2_client(&gcd).await;

    // A call answered, and a handler's own status.
    for (text, code) in [
        ("hi", grpc_wire::Code::Ok),
        ("", grpc_wire::Code::InvalidArgument),
    ] {
        let (answer, mut send) = client.send_request(say_request(), false).unwrap();
        let message = grpc_wire::framing::encode(&SayRequest { text: text.into() });
        send.send_data(message, true).unwrap();
        let (status, data) = status_of(answer.await.unwrap()).await;
        assert_eq!(status, code);
        if code == grpc_wire::Code::Ok {
            let said = <SayResponse as prost::Message>::decode(&data[5..]).unwrap();
            assert_eq!(said.text, "hi");
        }
    }

    // A message announced as 4 MiB is refused from its prefix, before the
    // rest is sent: the port's 1 KiB, not tonic's 4 MiB.
    let (answer, mut send) = client.send_request(say_request(), false).unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0x40, 0, 0, 0x0a]), false)
        .unwrap();
    let (status, _) = status_of(answer.await.unwrap()).await;
    assert_eq!(status, grpc_wire::Code::ResourceExhausted);

    // A call half sent and never finished ends at the call timeout: its
    // client stalled it, so its connection goes.
    let mut stalled = h2_client(&gcd).await;
    let (answer, mut send) = stalled.send_request(say_request(), false).unwrap();
    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 0x0a, 7, b'h']), false)
        .unwrap();
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the half-sent call was ended");
    match answer {
        Ok(answer) => assert_eq!(status_of(answer).await.0, grpc_wire::Code::DeadlineExceeded),
        Err(err) => assert!(err.is_io() || err.is_go_away() || err.is_reset(), "{err}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(calls(&gcd, "/pb.Echo/Say"), 4);

    // Every one of those is over: a new client is served at once.
    let mut fresh = h2_client(&gcd).await;
    let (answer, mut send) = fresh.send_request(say_request(), false).unwrap();
    send.send_data(
        grpc_wire::framing::encode(&SayRequest { text: "x".into() }),
        true,
    )
    .unwrap();
    assert_eq!(
        status_of(answer.await.unwrap()).await.0,
        grpc_wire::Code::Ok
    );
}
