//! `grpc-timeout`: the deadline a client gives a call, at most 8 digits
//! and a unit (Hours, Minutes, Seconds, milli, micro, nano).

use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};

use crate::GRPC_TIMEOUT;

/// The client's deadline from `grpc-timeout`, if it sent a valid one.
pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `timeout` in whole milliseconds, rounded up so that it never reads as
/// already passed (at most 8 digits: 27 hours). Milliseconds rather than
/// anything finer because the value then repeats from call to call, so a
/// caller can make the header value once, and HPACK sends a repeated
/// header as a one-byte index instead of a new literal for both ends to
/// Huffman-code and enter in their tables (results/ledger.md).
pub fn millis(timeout: Duration) -> u64 {
    timeout.as_nanos().div_ceil(1_000_000).clamp(1, 99_999_999) as u64
}

/// The `grpc-timeout` value for `millis` (from [`millis`]).
pub fn header_value(millis: u64) -> HeaderValue {
    let mut value = BytesMut::with_capacity(9);
    value.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes());
    value.extend_from_slice(b"m");
    // Digits and a letter: always a valid header value.
    HeaderValue::from_maybe_shared(value.freeze()).unwrap_or(HeaderValue::from_static("99999999m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
        parse(&headers)
    }

    #[test]
    fn timeouts_are_read_in_every_unit() {
        assert_eq!(timeout_of("1000m"), Some(Duration::from_secs(1)));
        assert_eq!(timeout_of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            timeout_of("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout_of("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "100", "123456789m", "-1m", "1x", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(parse(&HeaderMap::new()), None);
    }

    #[test]
    fn timeouts_are_sent_in_milliseconds_rounded_up_and_read_back() {
        let sent = |timeout| header_value(millis(timeout));
        assert_eq!(sent(Duration::from_secs(1)), "1000m");
        assert_eq!(sent(Duration::from_micros(999_999)), "1000m");
        assert_eq!(sent(Duration::ZERO), "1m");
        assert_eq!(sent(Duration::from_secs(200_000)), "99999999m");
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, sent(Duration::from_millis(1500)));
        assert_eq!(parse(&headers), Some(Duration::from_millis(1500)));
    }
}
