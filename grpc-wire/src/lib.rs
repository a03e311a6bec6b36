//! gRPC over HTTP/2 as this project writes and reads it, in one place: the
//! serving code (`serving`), gcd's handlers and the api's client all speak the
//! wire through this crate, so a header name, a status code or the
//! message prefix is spelled once.
//!
//! - [`framing`]: the prefix before every message;
//! - [`Code`]: status codes, as numbers on the wire;
//! - the `grpc-*` headers ([`GRPC_STATUS`], [`GRPC_MESSAGE`],
//!   [`GRPC_TIMEOUT`], [`GRPC_ENCODING`], [`GRPC_ACCEPT_ENCODING`]) and the
//!   content type ([`content_type`], [`is_grpc`]);
//! - [`trailers_only`] answers and [`ok_trailers`];
//! - [`timeout`]: `grpc-timeout`, sent and read.

pub mod framing;
mod status;
pub mod timeout;

use http::{HeaderMap, HeaderName, HeaderValue, Response, header};

pub use status::Code;

/// The trailer (or, with no message, header) that carries a call's status.
/// Named once here, not parsed from a string on every call.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The text that goes with a status other than OK, percent-encoded.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The header that carries a call's deadline, as the client sends it.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The compression a request says its message uses.
pub const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");

/// The compressions a server accepts, sent with a refusal of another one.
pub const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

/// The content type every call and answer carries.
pub const CONTENT_TYPE: &str = "application/grpc";

/// [`CONTENT_TYPE`] as a header value.
pub fn content_type() -> HeaderValue {
    HeaderValue::from_static(CONTENT_TYPE)
}

/// Whether the request says it carries gRPC with protobuf messages
/// (`application/grpc`, `application/grpc+proto`, parameters allowed).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    // What every gRPC client sends, checked first.
    if value.as_bytes() == CONTENT_TYPE.as_bytes() {
        return true;
    }
    value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            let media = media.trim();
            media.eq_ignore_ascii_case(CONTENT_TYPE)
                || media.eq_ignore_ascii_case("application/grpc+proto")
        })
}

/// A gRPC response whose status (`code` and `message`, a valid header
/// value) is in its headers: the form a call that fails before it answers
/// takes. `empty` is a body with nothing in it.
pub fn trailers_only<B>(empty: B, code: Code, message: HeaderValue) -> Response<B> {
    let mut response = Response::new(empty);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type());
    headers.insert(GRPC_STATUS, code.header_value());
    headers.insert(GRPC_MESSAGE, message);
    response
}

/// The trailer of every successful call.
pub fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, Code::Ok.header_value());
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_with_protobuf_is_grpc() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_grpc(&headers)
        };
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=x",
        ] {
            assert!(with(ok), "{ok}");
        }
        for not in [
            "text/plain",
            "application/grpc+json",
            "application/grpc-web",
            "application/json",
        ] {
            assert!(!with(not), "{not}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_trailers_only_answer_carries_its_status_in_its_headers() {
        let response = trailers_only(
            (),
            Code::ResourceExhausted,
            HeaderValue::from_static("full"),
        );
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(headers[GRPC_STATUS], "8");
        assert_eq!(headers[GRPC_MESSAGE], "full");
        assert_eq!(ok_trailers()[GRPC_STATUS], "0");
    }
}
