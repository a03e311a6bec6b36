//! What a gRPC port gives a service registered without stating anything:
//! a tonic-generated service, whose own message limit is tonic's 4 MiB,
//! gets the port's 1 KiB, and its health status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use gcd_proto::{
    GcdRequest, GcdResponse,
    gcd_service_client::GcdServiceClient,
    gcd_service_server::{GcdService, GcdServiceServer},
};
use serving::{grpc, routes::GrpcRoutes};
use testkit::Padded;
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A service written as tonic's generated trait asks, nothing more.
struct Plain;

#[tonic::async_trait]
impl GcdService for Plain {
    async fn compute(&self, request: Request<GcdRequest>) -> Result<Response<GcdResponse>, Status> {
        let GcdRequest { a, b } = request.into_inner();
        Ok(Response::new(GcdResponse { result: a + b }))
    }
}

fn limits() -> grpc::Limits {
    grpc::Limits {
        max_connections: 8,
        max_calls: 64,
        max_streams_per_connection: 16,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
    }
}

async fn padded_call(channel: &Channel, padding: usize) -> Result<u64, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let request = Padded {
        a: 2,
        b: 3,
        padding: vec![0; padding],
    };
    grpc.unary::<_, GcdResponse, _>(
        Request::new(request),
        tonic::codegen::http::uri::PathAndQuery::from_static("/pb.GCDService/Compute"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|response| response.into_inner().result)
}

#[tokio::test]
async fn a_tonic_service_registered_without_a_limit_gets_1_kib_not_4_mib() {
    let service = GcdServiceServer::new(Plain);
    let builder = GrpcRoutes::builder().tonic(service);
    let methods = builder.methods();
    assert_eq!(methods[0].path, "/pb.GCDService/*");
    assert_eq!(methods[0].max_message_bytes, 1024);
    let (routes, _health) = builder.build().await;
    let (listener, addr) = serving::bind(
        ([127, 0, 0, 1], 0).into(),
        serving::SocketBuffers {
            receive: 64 * 1024,
            send: 64 * 1024,
        },
    )
    .unwrap();
    let port = tokio::spawn(grpc::serve(
        listener,
        routes,
        limits(),
        std::future::pending(),
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let answer = GcdServiceClient::new(channel.clone())
        .compute(GcdRequest { a: 2, b: 3 })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().result, 5);
    // The largest message allowed (4 bytes of fields, 3 of padding's tag
    // and length) is served; one byte more, or tonic's 4 MiB, is not.
    assert_eq!(padded_call(&channel, 1024 - 7).await.unwrap(), 5);
    for padding in [1024 - 6, 64 * 1024, 4 * 1024 * 1024 - 64] {
        let status = padded_call(&channel, padding).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("limit of 1024 bytes"),
            "{status:?}"
        );
    }
    // The connection survives, and the service has its health status.
    assert_eq!(padded_call(&channel, 0).await.unwrap(), 5);
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "pb.GCDService".into(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    port.abort();
}
