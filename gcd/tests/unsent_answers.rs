//! Answers a client will not take: a client that sets its receive window
//! to 0 gets the heads of its answers (HEADERS are not flow-controlled) but
//! never their data, which waits in gcd. Each such answer keeps its call's
//! permit until it is written, and the connection counts as stalled, not
//! idle, however well the client keeps it alive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::{
    RecvStream,
    client::{ResponseFuture, SendRequest},
};
use serving::grpc::MAX_UNSENT_ANSWERS_PER_CONNECTION;
use testkit::process::Service;
use tokio::{net::TcpStream, task::JoinHandle};
use tonic::codegen::http::{Request, Response};

/// `GCDRequest { a: 12, b: 18 }` as a gRPC message.
const COMPUTE_12_18: &[u8] = b"\0\0\0\0\x04\x08\x0c\x10\x12";

/// A client connection whose receive window is 0, driven by a task of its
/// own (so it answers PINGs and SETTINGS as any client does).
struct ZeroWindowClient {
    calls: SendRequest<Bytes>,
    /// Ends when the server closes the connection.
    connection: JoinHandle<()>,
    /// Answers whose data never comes; kept, as dropping them would reset
    /// their streams.
    answers: Vec<Response<RecvStream>>,
}

impl ZeroWindowClient {
    async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (calls, connection) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Self {
            calls,
            connection,
            answers: Vec::new(),
        }
    }

    /// Sends a whole `Compute` call.
    async fn send_compute(&mut self) -> ResponseFuture {
        let request = Request::post("http://gcd/pb.GCDService/Compute")
            .header(
                tonic::codegen::http::header::CONTENT_TYPE,
                grpc_wire::CONTENT_TYPE,
            )
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut calls = self.calls.clone().ready().await.unwrap();
        let (answer, mut body) = calls.send_request(request, false).unwrap();
        body.send_data(Bytes::from_static(COMPUTE_12_18), true)
            .unwrap();
        answer
    }

    /// Makes a `Compute` call and waits for the head of its answer.
    async fn compute(&mut self) -> &Response<RecvStream> {
        let answer = self.send_compute().await;
        let answer = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the head of an answer within 10 s")
            .unwrap();
        self.answers.push(answer);
        self.answers.last().unwrap()
    }

    /// How long until the server closes the connection, if within `bound`.
    async fn closed_within(&mut self, bound: Duration) -> Option<Duration> {
        let started = Instant::now();
        tokio::time::timeout(bound, &mut self.connection)
            .await
            .ok()
            .map(|_| started.elapsed())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_connection_whose_answers_wait_for_window_is_stalled_not_idle() {
    // The idle and handshake timeouts are far longer than the stall bound:
    // a connection whose calls seemed done would live on for a minute, and
    // one whose stall were looked for only when the handshake timeout
    // fires would live on for 20 s.
    let gcd = Service::gcd(
        None,
        &[
            "--call-timeout-ms",
            "500",
            "--write-timeout-ms",
            "500",
            "--idle-timeout-ms",
            "60000",
            "--handshake-timeout-ms",
            "20000",
        ],
    );
    runtime().block_on(async {
        let mut client = ZeroWindowClient::connect(gcd.addr).await;
        for _ in 0..3 {
            let head = client.compute().await;
            assert_eq!(head.status(), 200);
            assert!(
                head.headers().get(grpc_wire::GRPC_STATUS).is_none(),
                "{head:?}"
            );
        }
        // Stalled when no call has ended for the call (and write) timeout
        // and 1 s: 1.5 s.
        let closed = client.closed_within(Duration::from_secs(10)).await;
        let closed = closed.expect("the stalled connection was not closed within 10 s");
        assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    });
}

#[test]
fn an_unsent_answer_keeps_its_permit() {
    // One shared permit on the port; every connection has 2 of its own.
    let gcd = Service::gcd(
        None,
        &[
            "--max-concurrent-calls",
            "1",
            "--call-timeout-ms",
            "30000",
            "--write-timeout-ms",
            "30000",
            "--idle-timeout-ms",
            "60000",
        ],
    );
    runtime().block_on(async {
        // Three answers waiting for window: the third holds the shared permit.
        let mut holder = ZeroWindowClient::connect(gcd.addr).await;
        for _ in 0..3 {
            holder.compute().await;
        }
        // Another client's third call needs that permit: it is answered, and
        // the connection holding the permit without progress is closed to
        // free it (were the permit given back when the answer was handed to
        // h2, the holder would live on until its idle timeout).
        let mut other = ZeroWindowClient::connect(gcd.addr).await;
        for _ in 0..3 {
            let head = other.compute().await;
            assert!(
                head.headers().get(grpc_wire::GRPC_STATUS).is_none(),
                "{head:?}"
            );
        }
        let closed = holder.closed_within(Duration::from_secs(10)).await;
        assert!(
            closed.is_some(),
            "the connection holding the permit was not closed"
        );
        assert!(
            other
                .closed_within(Duration::from_millis(500))
                .await
                .is_none(),
            "the connection that took the permit was closed too"
        );
    });
}

#[test]
fn a_connection_has_only_so_many_answers_waiting() {
    let gcd = Service::gcd(
        None,
        &[
            "--call-timeout-ms",
            "500",
            "--write-timeout-ms",
            "500",
            "--idle-timeout-ms",
            "60000",
        ],
    );
    runtime().block_on(async {
        let mut client = ZeroWindowClient::connect(gcd.addr).await;
        let calls = MAX_UNSENT_ANSWERS_PER_CONNECTION + 8;
        let mut answers = Vec::new();
        for _ in 0..calls {
            answers.push(client.send_compute().await);
        }
        // The calls beyond the share are not started while the first ones'
        // answers wait: they end with the stalled connection.
        let mut answered = Vec::new();
        for answer in answers {
            if let Ok(Ok(head)) = tokio::time::timeout(Duration::from_secs(10), answer).await {
                answered.push(head);
            }
        }
        // The share is checked as calls are accepted, and a call whose
        // answer is not handed to h2 yet is not counted in it: one that
        // was mid-way when the share filled may still be answered. The
        // bound is that the calls beyond it are not all started.
        assert!(
            (MAX_UNSENT_ANSWERS_PER_CONNECTION..calls).contains(&answered.len()),
            "{} of {calls} calls answered with a share of {MAX_UNSENT_ANSWERS_PER_CONNECTION}",
            answered.len()
        );
        assert!(
            client
                .closed_within(Duration::from_secs(10))
                .await
                .is_some(),
            "the stalled connection was not closed"
        );
    });
}
