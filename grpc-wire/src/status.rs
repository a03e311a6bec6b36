//! gRPC status codes as they travel: a decimal number in `grpc-status`.

use http::{HeaderMap, HeaderValue};

use crate::GRPC_STATUS;

/// A call's status, numbered as the gRPC spec numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// Every code, in the order of its number.
const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// Each code's number as text, indexed by the number.
const DIGITS: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl Code {
    /// The code's number, as `grpc-status` carries it.
    pub fn as_str(self) -> &'static str {
        DIGITS[self as usize]
    }

    /// The code as a `grpc-status` value (no allocation: a static string).
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// The code `grpc-status` says, or `None` if it is no code; a number
    /// the spec does not define reads as [`Code::Unknown`], as the spec
    /// says.
    pub fn from_bytes(digits: &[u8]) -> Option<Code> {
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number = digits
            .iter()
            .fold(0u64, |number, digit| number * 10 + u64::from(digit - b'0'));
        Some(
            usize::try_from(number)
                .ok()
                .and_then(|number| CODES.get(number).copied())
                .unwrap_or(Code::Unknown),
        )
    }

    /// The status in `headers` (an answer's headers or trailers), if any.
    pub fn of(headers: &HeaderMap) -> Option<Option<Code>> {
        // An answer's header blocks hold a field or two: comparing their
        // names costs less than hashing the one looked for.
        headers.iter().find_map(|(name, value)| {
            (name == GRPC_STATUS).then(|| Code::from_bytes(value.as_bytes()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_they_are_written() {
        for (number, code) in CODES.into_iter().enumerate() {
            assert_eq!(code as usize, number);
            assert_eq!(code.as_str(), number.to_string());
            assert_eq!(Code::from_bytes(code.header_value().as_bytes()), Some(code));
        }
        assert_eq!(Code::from_bytes(b"17"), Some(Code::Unknown));
        assert_eq!(Code::from_bytes(b"99999999999"), None);
        for bad in [&b""[..], b"x", b"-1", b" 0"] {
            assert_eq!(Code::from_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_status_is_found_among_other_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(Code::of(&headers), None);
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, Code::NotFound.header_value());
        assert_eq!(Code::of(&headers), Some(Some(Code::NotFound)));
        headers.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert_eq!(Code::of(&headers), Some(None));
    }
}
