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
//!   every response, and 414 (not 431) for a request line that alone is too
//!   long.

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
    /// head after an unread body.)
    in_request_line: bool,
    /// Bytes on the current line, not counting carriage returns.
    line_bytes: usize,
    /// Our response being written in place of hyper's, and how much of it
    /// is out.
    replacing: Option<(&'static [u8], usize)>,
}

// Our answers in place of hyper's: the same statuses, with the JSON error
// body every other response has (lengths checked by a test).
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 23\r\n\r\n{\"error\":\"Bad request\"}";
const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 24\r\n\r\n{\"error\":\"URI too long\"}";
const HEADERS_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 43\r\n\r\n{\"error\":\"Request header fields too large\"}";

impl Http1Rejections {
    fn new() -> Self {
        Self {
            in_request_line: true,
            line_bytes: 0,
            replacing: None,
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
            BAD_REQUEST
        } else if out.starts_with(b"HTTP/1.1 414 URI Too Long\r\n") {
            URI_TOO_LONG
        } else if out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") {
            if self.in_request_line {
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
        let buffers = crate::serve::SocketBuffers {
            receive: 16 * 1024,
            send: 16 * 1024,
        };
        let (listener, addr) = crate::serve::bind(([127, 0, 0, 1], 0).into(), buffers).unwrap();
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
