//! What the api calls on its replicas, and how a call fails.
//!
//! A unary gRPC method is an [`Rpc`]: its path, its prost messages, whether
//! it may be run twice, and the largest answer taken. Any of them goes
//! through the same client ([`crate::balancer::Balancer::call`]): round
//! robin per call, deadlines, ejection and health checks, and a retry on
//! another replica when the method is idempotent.
//!
//! A call's failure is one type, [`CallError`], from the HTTP/2 connection
//! to the api's answer: how the balancer treats each kind (retried or not)
//! and the HTTP status and message a client gets are decided here, once.

use axum::http::StatusCode;
use gcd_proto::{GcdRequest, GcdResponse};
use grpc_wire::Code;

/// A unary gRPC method the api calls over the balancer.
pub trait Rpc {
    /// `/package.Service/Method`.
    const PATH: &'static str;
    /// Whether running a call twice does no harm: only then is a failed
    /// call tried again on another replica.
    const IDEMPOTENT: bool;
    /// The largest answer taken, frame prefix included (the replica's
    /// receive window bounds it anyway).
    const MAX_ANSWER_BYTES: usize = 1024;
    type Request: prost::Message;
    type Response: prost::Message + Default;
}

/// `pb.GCDService/Compute`.
pub struct Compute;

impl Rpc for Compute {
    const PATH: &'static str = "/pb.GCDService/Compute";
    const IDEMPOTENT: bool = true;
    type Request = GcdRequest;
    type Response = GcdResponse;
}

/// `grpc.health.v1.Health/Check`: how the balancer probes a replica it
/// ejected.
pub struct HealthCheck;

impl Rpc for HealthCheck {
    const PATH: &'static str = "/grpc.health.v1.Health/Check";
    const IDEMPOTENT: bool = true;
    type Request = HealthCheckRequest;
    type Response = HealthCheckResponse;
}

/// `grpc.health.v1.HealthCheckRequest`; an empty `service` asks about the
/// whole server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// Why a call got no answer. The text is for logs; a client sees
/// [`CallError::public_message`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no replica is known")]
    NoReplicas,
    /// The call did not reach the replica's handler (no connection, no
    /// stream within the deadline, the replica turning it away), or the
    /// connection broke under it: another replica may answer.
    #[error("{0}")]
    Unreachable(String),
    #[error("no answer within the deadline")]
    DeadlineExceeded,
    /// The replica answered with this status: final.
    #[error("the replica answered {code:?}: {message}")]
    Status { code: Code, message: String },
    /// The replica answered with something that is not an answer: another
    /// replica may do better.
    #[error("the replica sent {0}")]
    Broken(String),
}

impl CallError {
    /// The status a client gets.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::NoReplicas | Self::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Status { .. } | Self::Broken(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The message a client gets: fixed texts, so that nothing a replica
    /// sends reaches the client.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::NoReplicas => "gcd is unavailable: no replica is known",
            Self::Unreachable(_) => "gcd is unavailable: no replica could be reached",
            Self::DeadlineExceeded => "gcd did not answer within the deadline",
            Self::Status { .. } | Self::Broken(_) => "gcd failed to answer",
        }
    }

    /// Whether the replica should be passed over for a while, and the call
    /// (if idempotent) tried on another: anything but a status it chose to
    /// send.
    pub fn is_replicas_fault(&self) -> bool {
        !matches!(self, Self::Status { .. })
    }

    /// The gRPC status code a gRPC client would see.
    pub fn code(&self) -> Code {
        match self {
            Self::NoReplicas | Self::Unreachable(_) => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Status { code, .. } => *code,
            Self::Broken(_) => Code::Internal,
        }
    }
}
