//! A second RPC, `pb.Echo/Say` ([`echo.proto`](../echo.proto)), served
//! beside gcd's methods and called from an api route: the worked example
//! of `docs/adding-a-service.md`. Its binaries, `echo-gcd` and `echo-api`,
//! are gcd and the api with these few lines added; CI builds and tests
//! them, and the images never carry them.

use std::sync::Arc;

use api::{
    routes::{self, ApiError, AppState, GcdShortcut, Routes},
    rpc::Rpc,
};
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::get,
};
use serving::routes::GrpcRoutesBuilder;
use tonic::Status;

/// The `pb` package of `echo.proto`: `SayRequest` and `SayResponse`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb.rs"));
}

// ---- the server side (in a copy of the project: gcd/src/service.rs)

/// Says back what it was told; there must be something to say.
pub async fn say(request: pb::SayRequest) -> Result<pb::SayResponse, Status> {
    if request.text.is_empty() {
        return Err(Status::invalid_argument("nothing to say"));
    }
    Ok(pb::SayResponse { text: request.text })
}

/// gcd's methods, and `Say`.
pub fn with_say(routes: GrpcRoutesBuilder) -> GrpcRoutesBuilder {
    routes.unary(Say::PATH, say)
}

// ---- the api side (in a copy of the project: api/src/routes.rs)

/// `pb.Echo/Say`, as the api calls it.
pub struct Say;

impl Rpc for Say {
    const PATH: &'static str = "/pb.Echo/Say";
    const IDEMPOTENT: bool = true;
    type Request = pb::SayRequest;
    type Response = pb::SayResponse;
}

/// `GET /say/{text}`: `{"said":"<text>"}`, from whichever replica the
/// balancer picks.
async fn say_route(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Response, ApiError> {
    let started = tokio::time::Instant::now();
    let answer = state
        .balancer
        .call::<Say>(&pb::SayRequest { text }, started)
        .await?;
    let said = serde_json::json!({ "said": answer.text }).to_string();
    Ok(serving::http1::json(StatusCode::OK, said))
}

/// The api's routes, and `/say/{text}`.
pub fn routes_with_say(state: AppState) -> Routes {
    let router =
        axum::Router::new().route("/say/{text}", state.route("/say/{text}", get(say_route)));
    Routes {
        router: routes::fallbacks(router, state.clone()),
        shortcut: Some(Arc::new(GcdShortcut::new(state))),
    }
}
