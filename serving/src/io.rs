//! The socket as hyper and h2 see it, with the two things they cannot do
//! themselves.
//!
//! - **A bound on stalled writes.** hyper and h2 wait for as long as a
//!   client takes to read what we send, so a client that stops reading (or
//!   reads a byte now and then) would hold its connection, and the response
//!   buffered for it, for ever. Here a write that cannot go out starts a clock, and
//!   only a completed flush (all of the buffered bytes taken by the
//!   kernel) stops it: past `write_timeout` the connection fails.
//! - **Our JSON body on hyper's own HTTP/1 rejections** ([`Http1Rejections`]).
//!   hyper answers a request head it cannot parse or that overflows its
//!   buffer by itself, with an empty body; our contract is a JSON error on
//!   every response, 414 (not 431) for a request line that alone is too
//!   long, and HTTP/2's refusal (not a silent close) for an HTTP/2
//!   connection preface.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// A TCP stream whose writes may not stall for longer than a bound.
#[derive(Debug)]
pub struct GuardedIo {
    stream: TcpStream,
    write_timeout: Duration,
    /// Set from the first write that could not go out until the next
    /// completed flush; allocated on the first stall only.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    rejections: Option<Http1Rejections>,
}

impl GuardedIo {
    /// For an HTTP/2 connection.
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Self {
            stream,
            write_timeout,
            stall: None,
            stalled: false,
            rejections: None,
        }
    }

    /// For an HTTP/1 connection.
    pub fn http1(stream: TcpStream, write_timeout: Duration) -> Self {
        Self {
            rejections: Some(Http1Rejections::new()),
            ..Self::new(stream, write_timeout)
        }
    }

    /// Called when a write returned `Pending`: starts the clock, or fails
    /// the write once it has run out.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = Instant::now() + self.write_timeout;
        if !self.stalled {
            self.stalled = true;
            match &mut self.stall {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .stall
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read what we sent within the write timeout",
            )));
        }
        Poll::Pending
    }

    fn poll_write_stream(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Pending => self.poll_stall(cx),
            ready => ready,
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if let Some(rejections) = &mut this.rejections {
            if rejections.first_read {
                rejections.first_read = false;
                if buf.filled()[before..].starts_with(HTTP2_REQUEST_LINE) {
                    // hyper closes without a word on a whole preface;
                    // shown no more than this, it refuses the version
                    // with a 400, which becomes our refusal. The rest of
                    // what the client sent is not HTTP/1 and is not kept.
                    buf.set_filled(before + HTTP2_REQUEST_LINE.len());
                    rejections.http2_preface = true;
                }
            }
            rejections.saw_read(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(rejections) = &mut this.rejections else {
            return this.poll_write_stream(cx, buf);
        };
        if rejections.replacing.is_none() {
            rejections.replacing = rejections.replacement_for(buf).map(|bytes| (bytes, 0));
        }
        let Some((bytes, written)) = rejections.replacing else {
            return this.poll_write_stream(cx, buf);
        };
        // hyper's rejection is the last thing it writes on a connection;
        // ours goes out instead, and hyper hears that its bytes did.
        let mut written = written;
        while written < bytes.len() {
            let n = ready!(this.poll_write_stream(cx, &bytes[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            written += n;
            if let Some(rejections) = &mut this.rejections {
                rejections.replacing = Some((bytes, written));
            }
        }
        if let Some(rejections) = &mut this.rejections {
            rejections.replacing = None;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.stream).poll_flush(cx))?;
        // hyper and h2 flush once all they had buffered is written: the
        // response (or frames) got out, and the clock stops.
        this.stalled = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each response as one buffer, which
    // is what the rejection check reads (and for our small responses one
    // buffer is one system call either way).
}

/// Recognizes the responses hyper writes on its own when it cannot parse a
/// request head, and supplies ours instead.
#[derive(Debug)]
struct Http1Rejections {
    /// Whether the bytes read last belong to a request line: from the
    /// start of the connection or a blank line (the end of a head) to the
    /// next line feed. When hyper gives up on a head that overflowed its
    /// buffer while this holds, the request line alone was too long: 414,
    /// not 431. (A head's body, which would break this, is never read by
    /// our handlers, and hyper closes the connection rather than parse a
    /// head after an unread body.) hyper also answers 431 for a whole head
    /// with more than 100 headers, and that one ends with a blank line, so
    /// only a long line read since counts (see [`LONG_REQUEST_LINE`]).
    in_request_line: bool,
    /// Bytes on the current line, not counting carriage returns.
    line_bytes: usize,
    /// Our response being written in place of hyper's, and how much of it
    /// is out.
    replacing: Option<(&'static [u8], usize)>,
    /// Nothing read on the connection yet.
    first_read: bool,
    /// The connection opened with an HTTP/2 preface.
    http2_preface: bool,
}

/// How an HTTP/2 connection preface starts (`PRI * HTTP/2.0`...): sent by
/// a client that assumes the port speaks HTTP/2 (`curl
/// --http2-prior-knowledge`, a gRPC client), in one write.
const HTTP2_REQUEST_LINE: &[u8] = b"PRI * HTTP/2";

/// A request line that overflowed hyper's buffer has at least the
/// buffer's smallest size read since the last line feed; half of that
/// counts as long, for a margin.
const LONG_REQUEST_LINE: usize = crate::http1::SMALLEST_HEAD_BUFFER / 2;

// Our answers in place of hyper's: the same statuses, with the JSON error
// body every other response has (lengths checked by a test).
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 23\r\n\r\n{\"error\":\"Bad request\"}";
const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 24\r\n\r\n{\"error\":\"URI too long\"}";
const HEADERS_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 43\r\n\r\n{\"error\":\"Request header fields too large\"}";
/// To a client that opened with HTTP/2, HTTP/2's own refusal, which it can
/// read (an HTTP/1 answer is a malformed frame to it, and curl reports an
/// empty reply): our settings (none), then GOAWAY with no stream processed,
/// HTTP_1_1_REQUIRED, and the reason in words as its debug data, which
/// `curl -v` and gRPC clients show.
const HTTP2_REFUSED: &[u8] = b"\0\0\0\x04\0\0\0\0\0\
    \0\0\x37\x07\0\0\0\0\0\0\0\0\0\0\0\0\x0dHTTP/2 is not served on this port: use HTTP/1.1";

impl Http1Rejections {
    fn new() -> Self {
        Self {
            in_request_line: true,
            line_bytes: 0,
            replacing: None,
            first_read: true,
            http2_preface: false,
        }
    }

    fn saw_read(&mut self, bytes: &[u8]) {
        // Only the last line feed read matters, and the line it ends: found
        // from the end, so a whole head costs a few bytes' work, not one
        // step per byte.
        let not_cr = |bytes: &[u8]| bytes.iter().filter(|&&b| b != b'\r').count();
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            self.line_bytes += not_cr(bytes);
            return;
        };
        let before = &bytes[..last];
        let ended_line_bytes = match before.iter().rposition(|&b| b == b'\n') {
            Some(previous) => not_cr(&before[previous + 1..]),
            None => self.line_bytes + not_cr(before),
        };
        // An empty line ends a head: a request line follows.
        self.in_request_line = ended_line_bytes == 0;
        self.line_bytes = not_cr(&bytes[last + 1..]);
    }

    /// Our response for `out` if it is one of hyper's automatic rejections:
    /// one of its three status lines, no body and no content type (every
    /// response our handlers write has one).
    fn replacement_for(&self, out: &[u8]) -> Option<&'static [u8]> {
        let ours = if out.starts_with(b"HTTP/1.1 400 Bad Request\r\n") {
            if self.http2_preface {
                HTTP2_REFUSED
            } else {
                BAD_REQUEST
            }
        } else if out.starts_with(b"HTTP/1.1 414 URI Too Long\r\n") {
            URI_TOO_LONG
        } else if out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") {
            if self.in_request_line && self.line_bytes >= LONG_REQUEST_LINE {
                URI_TOO_LONG
            } else {
                HEADERS_TOO_LARGE
            }
        } else {
            return None;
        };
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = &out[..head_end];
        let has = |name: &[u8]| {
            head.windows(name.len())
                .any(|w| w.eq_ignore_ascii_case(name))
        };
        (has(b"\r\ncontent-length: 0") && !has(b"\r\ncontent-type:")).then_some(ours)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server socket with small buffers, as every port has: the kernel
    /// wakes a blocked writer once the reader has freed half of it.
    async fn connected() -> (TcpStream, TcpStream) {
        let buffers = crate::SocketBuffers {
            receive: 16 * 1024,
            send: 16 * 1024,
        };
        let (listener, addr) = crate::bind(([127, 0, 0, 1], 0).into(), buffers).unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn writes_to_a_peer_that_does_not_read_fail_at_the_timeout() {
        let (server, _client_never_reads) = connected().await;
        let timeout = Duration::from_millis(200);
        let mut io = GuardedIo::new(server, timeout);
        let started = Instant::now();
        let chunk = [0u8; 16 * 1024];
        let err = loop {
            if let Err(err) = io.write_all(&chunk).await {
                break err;
            }
            io.flush().await.unwrap();
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_peer_that_keeps_reading_is_not_stalled() {
        let (server, mut client) = connected().await;
        let timeout = Duration::from_millis(200);
        let mut io = GuardedIo::new(server, timeout);
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut total = 0;
            while let Ok(n) = client.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                total += n;
                // Slow, but never for as long as the timeout.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            total
        });
        let chunk = [0u8; 16 * 1024];
        let started = Instant::now();
        let mut written = 0;
        while started.elapsed() < 5 * timeout {
            io.write_all(&chunk).await.unwrap();
            io.flush().await.unwrap();
            written += chunk.len();
        }
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), written);
    }

    #[test]
    fn canned_rejections_declare_their_body_length() {
        for response in [BAD_REQUEST, URI_TOO_LONG, HEADERS_TOO_LARGE] {
            let text = std::str::from_utf8(response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap();
            assert_eq!(length.parse::<usize>().unwrap(), body.len(), "{text}");
            assert!(body.starts_with(r#"{"error":""#), "{text}");
        }
    }

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 21:00:00 GMT\r\n\r\n";

    #[test]
    fn hypers_rejections_are_replaced_and_ours_are_not() {
        let mut rejections = Http1Rejections::new();
        rejections.saw_read(b"GET / HTTP/1.1\r\nX-Big: aaaa");
        assert_eq!(
            rejections.replacement_for(HYPER_431),
            Some(HEADERS_TOO_LARGE)
        );
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(rejections.replacement_for(hyper_400), Some(BAD_REQUEST));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 30\r\n\r\n{}";
        assert_eq!(rejections.replacement_for(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(rejections.replacement_for(ok), None);
    }

    /// The state after any reads is what reading byte by byte gives.
    #[test]
    fn lines_are_tracked_across_reads_as_byte_by_byte() {
        fn by_bytes(reads: &[&[u8]]) -> (bool, usize) {
            let (mut in_request_line, mut line_bytes) = (true, 0);
            for &byte in reads.concat().iter() {
                match byte {
                    b'\n' => {
                        in_request_line = line_bytes == 0;
                        line_bytes = 0;
                    }
                    b'\r' => {}
                    _ => line_bytes += 1,
                }
            }
            (in_request_line, line_bytes)
        }
        let head = b"GET /gcd/1/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /a";
        // Every way of cutting a head and the start of the next into three
        // reads, blank lines and bare line feeds included.
        for text in [&head[..], b"\n\n\r\nab\rc\n\r\r\nx", b"abc"] {
            for i in 0..=text.len() {
                for j in i..=text.len() {
                    let reads = [&text[..i], &text[i..j], &text[j..]];
                    let mut rejections = Http1Rejections::new();
                    for read in reads {
                        rejections.saw_read(read);
                    }
                    assert_eq!(
                        (rejections.in_request_line, rejections.line_bytes),
                        by_bytes(&reads),
                        "{reads:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_whole_head_with_too_many_headers_is_431() {
        let head: String = std::iter::once("GET / HTTP/1.1\r\nHost: x\r\n".to_owned())
            .chain((0..101).map(|i| format!("X-{i}: a\r\n")))
            .chain(std::iter::once("\r\n".to_owned()))
            .collect();
        let mut rejections = Http1Rejections::new();
        rejections.saw_read(head.as_bytes());
        assert_eq!(
            rejections.replacement_for(HYPER_431),
            Some(HEADERS_TOO_LARGE)
        );
        // With the start of a next request read behind it.
        rejections.saw_read(b"GET /gcd/1/2 HTTP/1.1");
        assert_eq!(
            rejections.replacement_for(HYPER_431),
            Some(HEADERS_TOO_LARGE)
        );
    }

    #[test]
    fn the_http2_refusal_is_settings_then_goaway_with_the_reason() {
        let mut frames = Vec::new();
        let mut rest = HTTP2_REFUSED;
        while !rest.is_empty() {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (frame, after) = rest.split_at(9 + length);
            frames.push((frame[3], &frame[5..9], &frame[9..]));
            rest = after;
        }
        let [settings, goaway] = frames[..] else {
            panic!("{frames:?}");
        };
        assert_eq!(settings, (0x4, &[0u8; 4][..], &[][..]));
        let (kind, stream, payload) = goaway;
        assert_eq!((kind, stream), (0x7, &[0u8; 4][..]));
        let (last_stream, rest) = payload.split_at(4);
        let (error_code, debug) = rest.split_at(4);
        assert_eq!(last_stream, [0; 4]);
        assert_eq!(error_code, [0, 0, 0, 0xd], "HTTP_1_1_REQUIRED");
        assert_eq!(debug, b"HTTP/2 is not served on this port: use HTTP/1.1");
    }

    #[tokio::test]
    async fn an_http2_preface_is_refused_in_http2() {
        let (server, mut client) = connected().await;
        let mut io = GuardedIo::http1(server, Duration::from_secs(5));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut read = vec![0u8; 1024];
        let n = io.read(&mut read).await.unwrap();
        assert_eq!(&read[..n], HTTP2_REQUEST_LINE);
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            io.rejections.as_ref().unwrap().replacement_for(hyper_400),
            Some(HTTP2_REFUSED)
        );
        // Only a connection's first bytes are looked at.
        let mut rejections = Http1Rejections::new();
        rejections.first_read = false;
        assert_eq!(rejections.replacement_for(hyper_400), Some(BAD_REQUEST));
    }

    #[test]
    fn an_overflowing_request_line_is_414() {
        let mut rejections = Http1Rejections::new();
        rejections.saw_read(b"GET /previous HTTP/1.1\r\nHost: x\r\n\r\nGET /");
        rejections.saw_read(&[b'a'; 16384]);
        assert_eq!(rejections.replacement_for(HYPER_431), Some(URI_TOO_LONG));
        // An overflowing header line after a complete request line is not.
        let mut rejections = Http1Rejections::new();
        rejections.saw_read(b"GET / HTTP/1.1\r\nX-Big: ");
        rejections.saw_read(&[b'a'; 16384]);
        assert_eq!(
            rejections.replacement_for(HYPER_431),
            Some(HEADERS_TOO_LARGE)
        );
    }
}
