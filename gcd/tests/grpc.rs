//! The real `gcd` binary, called by clients generated from the protocol
//! files: `pb.GCDService/Compute`, `grpc.health.v1.Health` and server
//! reflection, plus its metrics and its shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gcd_proto::{GcdRequest, GcdResponse, gcd_service_client::GcdServiceClient};
use testkit::{Padded, http::get, process::Service};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn channel(gcd: &Service) -> Channel {
    Channel::from_shared(format!("http://{}", gcd.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(channel: &Channel, service: &str) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = HealthClient::new(channel.clone()).check(request).await?;
    Ok(response.into_inner().status)
}

/// One request on the reflection stream, and its reply.
async fn reflect(channel: &Channel, request: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().expect("one reply");
    reply.message_response.expect("a reflection response")
}

async fn compute(channel: &Channel, a: u64, b: u64) -> Result<u64, tonic::Status> {
    let response = GcdServiceClient::new(channel.clone())
        .compute(GcdRequest { a, b })
        .await?;
    Ok(response.into_inner().result)
}

#[test]
fn compute_health_reflection_and_metrics() {
    let gcd = Service::gcd(None, &[]);
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        let max = u64::MAX;
        for (a, b, expected) in [(12, 18, 6), (0, 0, 0), (max, max, max), (max, 2, 1)] {
            assert_eq!(compute(&channel, a, b).await.unwrap(), expected);
        }

        let serving = ServingStatus::Serving as i32;
        assert_eq!(health(&channel, "").await.unwrap(), serving);
        assert_eq!(health(&channel, "pb.GCDService").await.unwrap(), serving);
        let unknown = health(&channel, "no.such.Service").await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let reply = reflect(&channel, MessageRequest::ListServices(String::new())).await;
        let MessageResponse::ListServicesResponse(list) = reply else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        let all = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "pb.GCDService",
        ];
        assert_eq!(names, all);

        // The older protocol, which many tools still speak, lists the same.
        use tonic_reflection::pb::v1alpha;
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut replies =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::once(request))
                .await
                .unwrap()
                .into_inner();
        let reply = replies.message().await.unwrap().expect("one reply");
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            reply.message_response
        else {
            panic!("unexpected v1alpha reflection reply");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, all);

        // What `grpcurl describe pb.GCDService` asks for.
        let symbol = MessageRequest::FileContainingSymbol("pb.GCDService".into());
        let reply = reflect(&channel, symbol).await;
        let MessageResponse::FileDescriptorResponse(files) = reply else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let file = files.file_descriptor_proto.concat();
        for name in ["gcd.proto", "GCDRequest", "GCDResponse", "Compute"] {
            assert!(
                file.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} missing from the served descriptor"
            );
        }
    });

    assert_eq!(gcd.metric("gcd_compute_requests_total"), 4);
    assert_eq!(get(gcd.admin_addr, "/healthz").status, 200);
    assert_eq!(get(gcd.admin_addr, "/readyz").status, 200);
}

#[test]
fn oversized_messages_are_rejected() {
    let gcd = Service::gcd(None, &[]);
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        // Field 3 with a 4 KiB payload: valid protobuf, unknown to gcd, far
        // above the message limit.
        let padded = Padded {
            a: 12,
            b: 18,
            padding: vec![0; 4096],
        };
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<_, GcdResponse, _>(
                tonic::Request::new(padded),
                tonic::codegen::http::uri::PathAndQuery::from_static("/pb.GCDService/Compute"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        // The connection is still usable.
        assert_eq!(compute(&channel, 12, 18).await.unwrap(), 6);

        // Health and reflection have the same limit.
        let long_name = "x".repeat(4096);
        let status = health(&channel, &long_name).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(long_name)),
        };
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        // tonic's reflection service ends the stream without a reply (or
        // an error) when a request cannot be decoded.
        let reply = replies.message().await;
        assert!(matches!(reply, Ok(None) | Err(_)), "{reply:?}");
        assert_eq!(compute(&channel, 12, 18).await.unwrap(), 6);
    });
}

#[test]
fn a_call_whose_client_stalls_ends_at_the_call_timeout() {
    let gcd = Service::gcd(None, &["--call-timeout-ms", "300"]);
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        // A reflection stream whose requests never come.
        let started = std::time::Instant::now();
        let never = tokio_stream::pending::<ServerReflectionRequest>();
        let outcome = async {
            let mut replies = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(never)
                .await?
                .into_inner();
            replies.message().await
        }
        .await;
        let status = outcome.expect_err("the stalled call ended with an error");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        // Our answer, or the connection dropped for stalling.
        assert!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Unknown
            ),
            "{status:?}"
        );
    });
    // Other clients are unaffected.
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        assert_eq!(compute(&channel, 12, 18).await.unwrap(), 6);
    });
}

#[test]
fn every_connection_has_calls_of_its_own() {
    // One shared permit on the port, which another client's stalled calls
    // hold; they stay open for as long as the test needs.
    let gcd = Service::gcd(
        None,
        &["--max-concurrent-calls", "1", "--call-timeout-ms", "60000"],
    );
    runtime().block_on(async {
        let greedy = channel(&gcd).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(held_call(&greedy).await.unwrap());
        }
        // A new client is served from its own reserved calls, at once and
        // without evicting anyone.
        let other = channel(&gcd).await;
        let started = std::time::Instant::now();
        assert_eq!(compute(&other, 12, 18).await.unwrap(), 6);
        assert_eq!(compute(&other, 12, 18).await.unwrap(), 6);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The greedy client's calls are still open: nobody was evicted.
        for stream in &mut held {
            let waiting = tokio::time::timeout(Duration::from_millis(100), stream.message()).await;
            assert!(waiting.is_err(), "a held call ended: {waiting:?}");
        }
    });
}

#[test]
fn a_call_within_its_connections_own_permits_is_never_evicted() {
    // One shared permit on the port; held calls stay open for as long as
    // the test needs.
    let gcd = Service::gcd(
        None,
        &["--max-concurrent-calls", "1", "--call-timeout-ms", "60000"],
    );
    runtime().block_on(async {
        // A client whose one call is still in flight (its request on a slow
        // link), open before anyone else's.
        let slow = channel(&gcd).await;
        let mut slow_call = held_call(&slow).await.unwrap();
        // A client holding its own calls and the port's shared permit.
        let greedy = channel(&gcd).await;
        let mut greedy_calls = Vec::new();
        for _ in 0..3 {
            greedy_calls.push(held_call(&greedy).await.unwrap());
        }
        // Another one wants a shared permit too: the greedy client's
        // connection gives it up, not the slow client's, which frees none.
        let other = channel(&gcd).await;
        let mut other_calls = Vec::new();
        for _ in 0..3 {
            let call = tokio::time::timeout(Duration::from_secs(10), held_call(&other)).await;
            other_calls.push(call.expect("the call got a permit").unwrap());
        }
        for call in &mut greedy_calls {
            let ended = tokio::time::timeout(Duration::from_secs(10), call.message()).await;
            assert!(
                matches!(ended, Ok(Err(_))),
                "the greedy client's call is still open: {ended:?}"
            );
        }
        let waiting = tokio::time::timeout(Duration::from_millis(100), slow_call.message()).await;
        assert!(
            waiting.is_err(),
            "the slow client's call ended: {waiting:?}"
        );
    });
}

#[test]
fn a_health_watch_outlives_the_call_timeout_and_hears_the_drain() {
    let mut gcd = Service::gcd(
        None,
        &["--call-timeout-ms", "300", "--shutdown-delay-ms", "60000"],
    );
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        let mut watch = watch(&channel).await.unwrap();
        let serving = ServingStatus::Serving as i32;
        assert_eq!(watch.message().await.unwrap().unwrap().status, serving);
        // Three call timeouts later the stream is still open and silent.
        let quiet = tokio::time::timeout(Duration::from_secs(1), watch.message()).await;
        assert!(quiet.is_err(), "the watch ended or spoke: {quiet:?}");

        gcd.signal("TERM");
        let heard = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
        let status = heard.expect("a status within the bound").unwrap().unwrap();
        assert_eq!(status.status, ServingStatus::NotServing as i32);
    });
    gcd.signal("TERM");
    assert!(gcd.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_call_its_client_cancels_gives_its_permit_back() {
    // One shared permit on the port beyond each connection's two reserved
    // ones; open health watches hold theirs until cancelled.
    let gcd = Service::gcd(
        None,
        &["--max-concurrent-calls", "1", "--call-timeout-ms", "60000"],
    );
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        for round in 0..5 {
            // Every permit this connection can have, taken...
            let bound = tokio::time::Instant::now() + Duration::from_secs(10);
            let watches = loop {
                match watches_filling_the_permits(&channel).await {
                    Ok(watches) => break watches,
                    // The server frees a cancelled call's permit as soon as
                    // it reads the client's reset, which may come just
                    // after the next call.
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        assert!(
                            tokio::time::Instant::now() < bound,
                            "round {round}: permits not given back: {status:?}"
                        );
                        tokio::task::yield_now().await;
                    }
                    Err(status) => panic!("round {round}: {status:?}"),
                }
            };
            // ...and given back by cancelling them (RST_STREAM).
            drop(watches);
        }
    });
}

/// A health `Watch` stream, open until dropped.
async fn watch(
    channel: &Channel,
) -> Result<tonic::Streaming<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    Ok(HealthClient::new(channel.clone())
        .watch(request)
        .await?
        .into_inner())
}

/// Three watches on one connection, each seen to be served: its two
/// reserved permits and the port's one shared permit.
async fn watches_filling_the_permits(
    channel: &Channel,
) -> Result<Vec<tonic::Streaming<tonic_health::pb::HealthCheckResponse>>, tonic::Status> {
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut watch = watch(channel).await?;
        watch.message().await?;
        watches.push(watch);
    }
    Ok(watches)
}

/// A reflection call whose requests never come: it stays open on the
/// server until the call timeout.
async fn held_call(
    channel: &Channel,
) -> Result<tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>, tonic::Status> {
    let response = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::pending::<ServerReflectionRequest>())
        .await?;
    Ok(response.into_inner())
}

#[test]
fn a_connection_that_never_calls_is_dropped() {
    use std::io::Read;
    let gcd = Service::gcd(None, &["--handshake-timeout-ms", "200"]);
    let mut silent = std::net::TcpStream::connect(gcd.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    // The server's SETTINGS, then end of file: not a read timeout.
    silent.read_to_end(&mut sink).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    for (args, env, complaint) in [
        (
            &["--max-concurrent-streams", "0"][..],
            &[][..],
            "between 1 and 1024",
        ),
        (&["--worker-threads", "100000"], &[], "between 0 and 64"),
        (&[], &[("GCD_CALL_TIMEOUT_MS", "5")], "GCD_CALL_TIMEOUT_MS"),
        (
            &["--max-connections", "99999999999"],
            &[],
            "between 1 and 65536",
        ),
        (&["--memory-limit", "2Mi"], &[], "too small"),
        (&["--nonsense"], &[], "Unrecognized argument"),
    ] {
        let (code, text) = testkit::process::run_to_exit("gcd", args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {text}");
        assert!(text.contains(complaint), "{args:?} {env:?}: {text}");
    }
    let (code, text) =
        testkit::process::run_to_exit("gcd", &["--check-config", "--memory-limit", "32Mi"], &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("gRPC connections"), "{text}");
    // Every method the port serves, with the limit its calls are sized for.
    for method in [
        "/pb.GCDService/Compute",
        "/grpc.health.v1.Health/*",
        "/grpc.reflection.v1.ServerReflection/*",
        "/grpc.reflection.v1alpha.ServerReflection/*",
    ] {
        assert!(
            text.contains(&format!("- {method}: messages up to 1024 bytes")),
            "{method}: {text}"
        );
    }
}

#[test]
fn an_open_file_limit_with_no_room_for_clients_is_a_start_up_error() {
    // 16 admin connections and 64 descriptors for the process: 8 client
    // connections need 88.
    testkit::process::assert_64_open_files_are_refused("gcd", 88);
}

#[test]
fn sigusr1_is_ignored() {
    let mut gcd = Service::gcd(None, &[]);
    gcd.signal("USR1");
    testkit::eventually("the signal to be logged", Duration::from_secs(10), || {
        gcd.log().contains("SIGUSR1 ignored").then_some(())
    });
    assert_eq!(get(gcd.admin_addr, "/readyz").status, 200);
    runtime()
        .block_on(async { assert_eq!(compute(&channel(&gcd).await, 12, 18).await.unwrap(), 6) });
    gcd.signal("TERM");
    assert!(
        gcd.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        gcd.log()
    );
}

#[test]
fn sigterm_drains_then_exits_zero() {
    a_stopping_signal_drains_then_exits_zero("TERM");
}

#[test]
fn sighup_drains_then_exits_zero() {
    a_stopping_signal_drains_then_exits_zero("HUP");
}

fn a_stopping_signal_drains_then_exits_zero(signal: &str) {
    // A long delay that the second signal cuts short: the test observes
    // the draining phase without racing a timer.
    let mut gcd = Service::gcd(None, &["--shutdown-delay-ms", "60000"]);
    runtime().block_on(async {
        let channel = channel(&gcd).await;
        assert_eq!(compute(&channel, 12, 18).await.unwrap(), 6);

        gcd.signal(signal);
        let not_serving = ServingStatus::NotServing as i32;
        let mut polls = 0;
        while health(&channel, "").await.unwrap() != not_serving {
            polls += 1;
            assert!(polls < 500, "health never reported NOT_SERVING");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            health(&channel, "pb.GCDService").await.unwrap(),
            not_serving
        );
        // Draining still serves: peers that have not noticed lose nothing.
        let mut calls = tokio::task::JoinSet::new();
        for i in 1..=50u64 {
            let channel = channel.clone();
            calls.spawn(async move { (i, compute(&channel, 12 * i, 18 * i).await) });
        }
        while let Some(joined) = calls.join_next().await {
            let (i, result) = joined.unwrap();
            assert_eq!(result.unwrap(), 6 * i);
        }
        assert_eq!(get(gcd.admin_addr, "/readyz").status, 503);
    });

    gcd.signal(signal);
    let status = gcd.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        gcd.log()
    );
}
