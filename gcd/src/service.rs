//! The `Compute` RPC, served by hand.
//!
//! Every call is one `GCDRequest` (two fixed-width integers, so nothing to
//! validate and nothing that can fail) and one `GCDResponse`. tonic's
//! generated server would do the same through its general unary machinery
//! (an 8 KiB decode buffer and an 8 KiB encode buffer per call, boxed
//! futures and bodies, a status turned into a header map); that was a
//! sixth of gcd's instructions per call (results/tuning.md). Here a call
//! reads the request's frames as they come, decodes the message where it
//! lies, and answers with one data frame and the `grpc-status: 0` trailer.
//!
//! What tonic's unary server checks, this checks too, with the same
//! statuses: a message above [`MAX_MESSAGE_BYTES`] is `OUT_OF_RANGE`
//! (answered as soon as its prefix says so, without reading it), compressed
//! requests are refused, a missing, truncated or undecodable message is
//! `INTERNAL`. A second message on the call is `INTERNAL` too (tonic reads
//! and drops it): a unary call carries one.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{BufMut, Bytes, BytesMut};
use gcd_proto::{GcdRequest, GcdResponse};
use grpc_wire::{
    Code, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
    framing::{self, PREFIX_BYTES},
};
use http_body::{Body, Frame};
use ops::metrics::{Counter, Exposition};
use prost::Message;
use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response, header};

use crate::{compute::gcd, server::MAX_MESSAGE_BYTES};

/// What this process has served, exported on the admin port.
#[derive(Debug, Default)]
pub struct GcdMetrics {
    pub compute_requests: Counter,
}

impl ops::admin::Metrics for GcdMetrics {
    fn render(&self, out: &mut Exposition) {
        out.counter(
            "gcd_compute_requests_total",
            "Compute calls served by this process.",
            self.compute_requests.get(),
        );
    }
}

/// The `Compute` method: answers each call it is handed.
#[derive(Debug, Clone, Default)]
pub struct Compute {
    metrics: Arc<GcdMetrics>,
}

impl Compute {
    pub fn new(metrics: Arc<GcdMetrics>) -> Self {
        Self { metrics }
    }

    /// The answer to `request`, once its message has arrived.
    pub fn call<B>(&self, request: Request<B>) -> ComputeCall<B> {
        let compressed_with = request
            .headers()
            .get(GRPC_ENCODING)
            .filter(|encoding| encoding.as_bytes() != b"identity")
            .cloned();
        ComputeCall {
            body: request.into_body(),
            received: Received::Nothing,
            metrics: self.metrics.clone(),
            compressed_with,
        }
    }
}

/// The request bytes read so far: usually one data frame holds the whole
/// message, which is then decoded where it lies.
enum Received {
    Nothing,
    One(Bytes),
    Gathered(BytesMut),
}

impl Received {
    fn add(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Received::Nothing) {
            Received::Nothing => Received::One(data),
            Received::One(first) => {
                let mut gathered = BytesMut::with_capacity(first.len() + data.len());
                gathered.put(first);
                gathered.put(data);
                Received::Gathered(gathered)
            }
            Received::Gathered(mut gathered) => {
                gathered.put(data);
                Received::Gathered(gathered)
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Received::Nothing => &[],
            Received::One(bytes) => bytes,
            Received::Gathered(bytes) => bytes,
        }
    }
}

/// A `Compute` call: reads the request to its end, then answers.
pub struct ComputeCall<B> {
    body: B,
    received: Received,
    metrics: Arc<GcdMetrics>,
    /// The compression the request says it uses: none is supported.
    compressed_with: Option<HeaderValue>,
}

impl<B> ComputeCall<B> {
    /// Checks what has arrived so far: `Some` answer as soon as the request
    /// cannot be served, whatever else arrives.
    fn check(&self) -> Option<Response<Reply>> {
        let received = self.received.bytes();
        let length = match framing::message_length(received)? {
            Ok(length) => length,
            Err(err) => return Some(status(Code::Internal, format!("protocol error: {err}"))),
        };
        if length > MAX_MESSAGE_BYTES {
            return Some(status(
                Code::OutOfRange,
                format!(
                    "Error, decoded message length too large: found {length} bytes, \
                     the limit is: {MAX_MESSAGE_BYTES} bytes"
                ),
            ));
        }
        (received.len() > PREFIX_BYTES + length).then(|| {
            status(
                Code::Internal,
                "more than one request message on a unary call".into(),
            )
        })
    }

    /// The answer once the request has ended.
    fn answer(&self) -> Response<Reply> {
        let received = self.received.bytes();
        let message = match framing::message_length(received) {
            None if received.is_empty() => {
                return status(Code::Internal, "Missing request message.".into());
            }
            Some(Ok(length)) if received.len() == PREFIX_BYTES + length => {
                &received[PREFIX_BYTES..]
            }
            _ => return status(Code::Internal, "Unexpected EOF decoding stream.".into()),
        };
        let GcdRequest { a, b } = match GcdRequest::decode(message) {
            Ok(request) => request,
            Err(err) => {
                return status(
                    Code::Internal,
                    format!("failed to decode Protobuf message: {err}"),
                );
            }
        };
        self.metrics.compute_requests.inc();
        let mut answer = Response::new(Reply::Compute {
            message: Some(framing::encode(&GcdResponse { result: gcd(a, b) })),
            trailers: Some(grpc_wire::ok_trailers()),
        });
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, grpc_wire::content_type());
        answer
    }
}

impl<B> Future for ComputeCall<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Output = Result<Response<Reply>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(encoding) = self.compressed_with.take() {
            return Poll::Ready(Ok(unsupported_compression(&encoding)));
        }
        loop {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers from a client carry nothing Compute reads.
                    if let Ok(data) = frame.into_data() {
                        self.received.add(data);
                        if let Some(refused) = self.check() {
                            return Poll::Ready(Ok(refused));
                        }
                    }
                }
                Some(Err(_)) => {
                    // The client reset the call or the connection broke:
                    // nobody will read this, but the call must end.
                    return Poll::Ready(Ok(status(
                        Code::Cancelled,
                        "the request stream was cancelled".into(),
                    )));
                }
                None => return Poll::Ready(Ok(self.answer())),
            }
        }
    }
}

/// tonic's answer to a request compressed with an encoding it lacks.
fn unsupported_compression(encoding: &HeaderValue) -> Response<Reply> {
    let mut answer = status(
        Code::Unimplemented,
        format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ),
    );
    answer
        .headers_mut()
        .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    answer
}

/// A trailers-only answer: the status in the headers, no message.
fn status(code: Code, message: String) -> Response<Reply> {
    let message = HeaderValue::try_from(message)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid request"));
    grpc_wire::trailers_only(
        Reply::Compute {
            message: None,
            trailers: None,
        },
        code,
        message,
    )
}

/// The body of every answer on the gRPC port: `Compute`'s message and
/// trailer, or what tonic's router answered for the other services.
pub enum Reply {
    Compute {
        message: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Other(tonic::body::Body),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Reply::Compute { message, trailers } => Poll::Ready(
                message
                    .take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            Reply::Other(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Compute { message, trailers } => message.is_none() && trailers.is_none(),
            Reply::Other(body) => body.is_end_stream(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use grpc_wire::{GRPC_MESSAGE, GRPC_STATUS, framing::message_length};

    use super::*;

    /// A request body whose frames have all arrived.
    struct Arrived(VecDeque<Bytes>);

    impl Body for Arrived {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    /// What `Compute` answers to a request made of `frames`: the status,
    /// its message, and the `GCDResponse` if there is one.
    fn answer(frames: &[&[u8]], encoding: Option<&str>) -> (String, String, Option<u64>) {
        let metrics = Arc::new(GcdMetrics::default());
        let mut request = Request::new(Arrived(
            frames.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
        ));
        if let Some(encoding) = encoding {
            request
                .headers_mut()
                .insert(GRPC_ENCODING, HeaderValue::from_str(encoding).unwrap());
        }
        let mut call = Compute::new(metrics.clone()).call(request);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Ok(response)) = Pin::new(&mut call).poll(&mut cx) else {
            panic!("a request that has arrived is answered at once");
        };
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header(header::CONTENT_TYPE).as_deref(),
            Some(grpc_wire::CONTENT_TYPE)
        );
        if let Some(code) = header(GRPC_STATUS) {
            assert!(response.body().is_end_stream(), "trailers-only");
            assert_eq!(metrics.compute_requests.get(), 0);
            return (code, header(GRPC_MESSAGE).unwrap_or_default(), None);
        }
        let mut body = response.into_body();
        let mut frame = || match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => panic!("expected a frame, got {:?}", other.map(|f| f.is_some())),
        };
        let message = frame().into_data().unwrap();
        let trailers = frame().into_trailers().unwrap();
        assert!(body.is_end_stream());
        assert_eq!(
            message_length(&message),
            Some(Ok(message.len() - PREFIX_BYTES))
        );
        let result = GcdResponse::decode(&message[PREFIX_BYTES..])
            .unwrap()
            .result;
        assert_eq!(metrics.compute_requests.get(), 1);
        (
            trailers[GRPC_STATUS].to_str().unwrap().to_owned(),
            String::new(),
            Some(result),
        )
    }

    fn request(a: u64, b: u64) -> Bytes {
        framing::encode(&GcdRequest { a, b })
    }

    #[test]
    fn a_request_in_one_frame_or_many_is_answered() {
        let whole = request(12, 18);
        assert_eq!(
            answer(&[&whole], None),
            (Code::Ok.as_str().into(), String::new(), Some(6))
        );
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(answer(&bytes, None).2, Some(6));
        assert_eq!(answer(&[&whole[..3], &whole[3..], &[]], None).2, Some(6));
        assert_eq!(answer(&[&request(0, 0)], None).2, Some(0));
        assert_eq!(
            answer(&[&request(u64::MAX, u64::MAX)], Some("identity")).2,
            Some(u64::MAX)
        );
    }

    #[test]
    fn malformed_requests_get_tonics_statuses() {
        let whole = request(12, 18);
        let internal = |frames: &[&[u8]], says: &str| {
            let (code, message, _) = answer(frames, None);
            assert_eq!(code, Code::Internal.as_str(), "{frames:?}");
            assert!(message.contains(says), "{message:?} lacks {says:?}");
        };
        internal(&[], "Missing request message");
        internal(&[&whole[..3]], "Unexpected EOF");
        internal(&[&whole[..whole.len() - 1]], "Unexpected EOF");
        internal(&[&[1, 0, 0, 0, 4, 8, 12, 16, 18]], "compressed");
        internal(&[&[2, 0, 0, 0, 0]], "compressed-flag (2");
        internal(
            &[&[0, 0, 0, 0, 2, 8, 0x80]],
            "failed to decode Protobuf message",
        );
        internal(&[&whole, &whole], "more than one request message");

        let (code, message, _) = answer(&[&whole], Some("gzip"));
        assert_eq!(code, Code::Unimplemented.as_str());
        assert!(message.contains("`gzip`"), "{message}");
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_prefix() {
        // Only the prefix has arrived: it is enough to refuse.
        let (code, message, _) = answer(&[&[0, 0, 0, 4, 1]], None);
        assert_eq!(code, Code::OutOfRange.as_str());
        assert!(message.contains("found 1025 bytes"), "{message}");
        // The largest message allowed is read (an unknown field pads it).
        let mut padded = vec![0, 0, 0, 4, 0, 8, 12, 16, 18, 0x1a, 0xf9, 0x07];
        padded.resize(PREFIX_BYTES + MAX_MESSAGE_BYTES, 0);
        assert_eq!(answer(&[&padded], None).2, Some(6));
    }
}
