//! gRPC's message framing, which both ends of a call write by hand on
//! their hot path (api's client, gcd's fast-lane handlers): a
//! compressed-flag byte, a 4-byte big-endian length, then the protobuf.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
/// The flag byte and the length before every message.
pub const PREFIX_BYTES: usize = 5;

/// Why a message's prefix cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Compression is never negotiated with these services.
    #[error("a compressed message, and no compression was agreed")]
    Compressed,
    #[error("an invalid compressed-flag ({0}; valid flags are 0 and 1)")]
    InvalidFlag(u8),
}

/// `message` with its prefix (no compression), in one buffer.
pub fn encode(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + length);
    buf.put_u8(0);
    buf.put_u32(length as u32);
    // Cannot fail: the buffer has room for the message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// The length of the message that `bytes` starts with, once its whole
/// prefix has arrived (`None` before that).
pub fn message_length(bytes: &[u8]) -> Option<Result<usize, FramingError>> {
    let prefix: &[u8; PREFIX_BYTES] = bytes.get(..PREFIX_BYTES)?.try_into().ok()?;
    let [flag, length @ ..] = *prefix;
    Some(match flag {
        0 => Ok(u32::from_be_bytes(length) as usize),
        1 => Err(FramingError::Compressed),
        other => Err(FramingError::InvalidFlag(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message shaped like `pb.GCDRequest`.
    #[derive(Clone, PartialEq, Message)]
    struct GcdRequest {
        #[prost(uint64, tag = "1")]
        a: u64,
        #[prost(uint64, tag = "2")]
        b: u64,
    }

    #[derive(Clone, PartialEq, Message)]
    struct GcdResponse {
        #[prost(uint64, tag = "1")]
        result: u64,
    }

    #[test]
    fn a_message_round_trips_through_its_prefix() {
        let framed = encode(&GcdRequest { a: 12, b: 18 });
        assert_eq!(&framed[..PREFIX_BYTES], &[0, 0, 0, 0, 4]);
        assert_eq!(message_length(&framed), Some(Ok(4)));
        assert_eq!(
            GcdRequest::decode(&framed[PREFIX_BYTES..]).unwrap(),
            GcdRequest { a: 12, b: 18 }
        );
        // The default value is an empty message.
        assert_eq!(&encode(&GcdResponse { result: 0 })[..], &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn prefixes_are_read_only_when_whole_and_uncompressed() {
        assert_eq!(message_length(&[]), None);
        assert_eq!(message_length(&[0, 0, 0, 1]), None);
        assert_eq!(message_length(&[0, 0, 0, 4, 0, 9]), Some(Ok(1024)));
        assert_eq!(
            message_length(&[0, 255, 255, 255, 255]),
            Some(Ok(u32::MAX as usize))
        );
        assert_eq!(
            message_length(&[1, 0, 0, 0, 2]),
            Some(Err(FramingError::Compressed))
        );
        assert_eq!(
            message_length(&[7, 0, 0, 0, 2]),
            Some(Err(FramingError::InvalidFlag(7)))
        );
    }
}
