//! Classifier for the first packet of a Postgres connection.
//!
//! A Postgres client opens with an untyped packet: an `int32` length that
//! counts itself, then an `int32` code that is either a protocol version
//! (a StartupMessage) or one of the special request codes. PG17 clients may
//! instead start TLS directly, in which case the first byte is a TLS handshake
//! record (`0x16`). No length can start with `0x16` because start-up packets
//! are capped far below 2^24, so the two are told apart by one byte.

use thiserror::Error;

/// The longest start-up packet pgsni accepts, as Postgres itself does
/// (`MAX_STARTUP_PACKET_LENGTH`). Bounds what a client can make us buffer.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// The shortest start-up packet: length and code.
pub const MIN_STARTUP_PACKET_LEN: usize = 8;

/// The first byte of a TLS handshake record: the mark of direct TLS.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Request codes share this major number (1234) so that they can never be
/// mistaken for a protocol version.
const REQUEST_CODE_MAJOR: u32 = 1234;
/// `SSLRequest`: 1234.5679.
pub const SSL_REQUEST_CODE: u32 = (REQUEST_CODE_MAJOR << 16) | 5679;
/// `GSSENCRequest`: 1234.5680.
pub const GSSENC_REQUEST_CODE: u32 = (REQUEST_CODE_MAJOR << 16) | 5680;
/// `CancelRequest`: 1234.5678.
pub const CANCEL_REQUEST_CODE: u32 = (REQUEST_CODE_MAJOR << 16) | 5678;

/// The complete SSLRequest packet, byte for byte.
pub const SSL_REQUEST: [u8; 8] = [0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f];

/// The longest cancel key a CancelRequest may carry (protocol 3.2 allows up
/// to 256 bytes; 3.0 uses exactly 4).
const MAX_CANCEL_KEY_LEN: usize = 256;

/// A classified start-up packet, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// `SSLRequest`: the client asks to start TLS on this connection.
    SslRequest,
    /// `GSSENCRequest`: the client asks for GSSAPI encryption.
    GssEncRequest,
    /// `CancelRequest`: a plaintext request to cancel a running query.
    CancelRequest {
        /// The backend process id the cancel is aimed at.
        process_id: u32,
        /// The secret key that proves the sender owns that session.
        secret_key: &'a [u8],
    },
    /// `StartupMessage`: the client wants a plaintext session.
    Startup {
        /// The protocol major version it asked for.
        major: u16,
        /// The protocol minor version it asked for.
        minor: u16,
    },
    /// The client started TLS without asking (PG17 direct TLS). Nothing of the
    /// input is consumed: the bytes belong to the TLS stream.
    DirectTls,
}

impl StartupPacket<'_> {
    /// A short, fixed name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SslRequest => "SSLRequest",
            Self::GssEncRequest => "GSSENCRequest",
            Self::CancelRequest { .. } => "CancelRequest",
            Self::Startup { .. } => "StartupMessage",
            Self::DirectTls => "direct TLS",
        }
    }
}

/// Why the first packet is not one pgsni can act on.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    /// The length field is below the 8-byte minimum.
    #[error("start-up packet length {0} is shorter than the minimum of 8")]
    TooShort(u32),
    /// The length field exceeds [`MAX_STARTUP_PACKET_LEN`].
    #[error("start-up packet length {0} exceeds the limit of 10000")]
    TooLong(u32),
    /// A request code in the 1234 range that Postgres does not define.
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    /// A known request whose length is wrong for its kind.
    #[error("{kind} with invalid length {len}")]
    BadLength {
        /// Which request it claimed to be.
        kind: &'static str,
        /// The length it declared.
        len: u32,
    },
}

/// Classifies the first packet in `input`.
///
/// Contract: a pure function of the bytes received so far. Returns
/// - `Ok(None)` when `input` is a strict prefix of a packet that may still
///   turn out valid (read more and call again);
/// - `Ok(Some((packet, len)))` when the packet is complete, where `len` is the
///   number of bytes it occupies (0 for [`StartupPacket::DirectTls`]); bytes
///   beyond `len` are left to the caller;
/// - `Err` as soon as the bytes prove the packet invalid.
///
/// Never panics, never allocates, and never asks for more than
/// [`MAX_STARTUP_PACKET_LEN`] bytes in total.
pub fn classify(input: &[u8]) -> Result<Option<(StartupPacket<'_>, usize)>, StartupError> {
    if input.first() == Some(&TLS_HANDSHAKE_RECORD) {
        return Ok(Some((StartupPacket::DirectTls, 0)));
    }
    let Some((len, rest)) = split_u32(input) else {
        return Ok(None);
    };
    if (len as usize) < MIN_STARTUP_PACKET_LEN {
        return Err(StartupError::TooShort(len));
    }
    if len as usize > MAX_STARTUP_PACKET_LEN {
        return Err(StartupError::TooLong(len));
    }
    let Some((code, _)) = split_u32(rest) else {
        return Ok(None);
    };
    // Check the declared length against the kind before waiting for the
    // body, so that a bad request is refused without reading further.
    let expected = match code {
        SSL_REQUEST_CODE => Some(("SSLRequest", 8..=8)),
        GSSENC_REQUEST_CODE => Some(("GSSENCRequest", 8..=8)),
        CANCEL_REQUEST_CODE => Some(("CancelRequest", 16..=12 + MAX_CANCEL_KEY_LEN)),
        _ if code >> 16 == REQUEST_CODE_MAJOR => return Err(StartupError::UnknownRequest(code)),
        _ => None,
    };
    if let Some((kind, range)) = expected {
        if !range.contains(&(len as usize)) {
            return Err(StartupError::BadLength { kind, len });
        }
    }
    let Some(packet) = input.get(..len as usize) else {
        return Ok(None);
    };
    let body = packet.get(8..).unwrap_or_default();
    let classified = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let (process_id, secret_key) = split_u32(body).ok_or(StartupError::BadLength {
                kind: "CancelRequest",
                len,
            })?;
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            }
        }
        version => StartupPacket::Startup {
            major: (version >> 16) as u16,
            minor: (version & 0xffff) as u16,
        },
    };
    Ok(Some((classified, len as usize)))
}

fn split_u32(input: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = input.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_message() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0x0003_0000u32.to_be_bytes());
        body.extend_from_slice(b"user\0alice\0database\0app\0\0");
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn ssl_request_is_recognised_byte_exactly() {
        assert_eq!(
            classify(&SSL_REQUEST),
            Ok(Some((StartupPacket::SslRequest, 8)))
        );
    }

    #[test]
    fn gssenc_request() {
        let packet = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(
            classify(&packet),
            Ok(Some((StartupPacket::GssEncRequest, 8)))
        );
    }

    #[test]
    fn cancel_request_carries_pid_and_key() {
        let packet = [
            0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0x30, 0x39, 1, 2, 3, 4,
        ];
        assert_eq!(
            classify(&packet),
            Ok(Some((
                StartupPacket::CancelRequest {
                    process_id: 12345,
                    secret_key: &[1, 2, 3, 4]
                },
                16
            )))
        );
    }

    #[test]
    fn startup_message_any_version() {
        let packet = startup_message();
        assert_eq!(
            classify(&packet),
            Ok(Some((
                StartupPacket::Startup { major: 3, minor: 0 },
                packet.len()
            )))
        );
        let mut v32 = packet.clone();
        v32[6..8].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(
            classify(&v32),
            Ok(Some((
                StartupPacket::Startup { major: 3, minor: 2 },
                packet.len()
            )))
        );
    }

    #[test]
    fn direct_tls_consumes_nothing() {
        assert_eq!(
            classify(&[0x16, 0x03, 0x01]),
            Ok(Some((StartupPacket::DirectTls, 0)))
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for packet in [SSL_REQUEST.to_vec(), startup_message()] {
            for end in 0..packet.len() {
                assert_eq!(classify(&packet[..end]), Ok(None), "prefix of {end} bytes");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_left_to_the_caller() {
        let mut input = SSL_REQUEST.to_vec();
        input.extend_from_slice(b"injected");
        assert_eq!(classify(&input), Ok(Some((StartupPacket::SslRequest, 8))));
    }

    #[test]
    fn lengths_out_of_bounds() {
        assert_eq!(classify(&[0, 0, 0, 7]), Err(StartupError::TooShort(7)));
        assert_eq!(classify(&[0, 0, 0, 0]), Err(StartupError::TooShort(0)));
        assert_eq!(
            classify(&[0, 0, 0x27, 0x11]),
            Err(StartupError::TooLong(10_001))
        );
        assert_eq!(
            classify(&[0xff, 0xff, 0xff, 0xff]),
            Err(StartupError::TooLong(u32::MAX))
        );
        // An HTTP request is refused on its first four bytes.
        assert!(classify(b"GET / HTTP/1.1\r\n").is_err());
    }

    #[test]
    fn unknown_request_code() {
        let packet = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x31];
        assert_eq!(
            classify(&packet),
            Err(StartupError::UnknownRequest(80877105))
        );
    }

    #[test]
    fn requests_with_wrong_length_are_refused_before_their_body() {
        assert_eq!(
            classify(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f]),
            Err(StartupError::BadLength {
                kind: "SSLRequest",
                len: 9
            })
        );
        assert_eq!(
            classify(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e]),
            Err(StartupError::BadLength {
                kind: "CancelRequest",
                len: 12
            })
        );
    }

    #[test]
    fn a_packet_as_long_as_allowed_and_one_byte_longer() {
        // The contract over arbitrary packets is the fuzz property's, over
        // the seeds and a sweep of mutations of them (`tests/fuzz_seeds.rs`).
        for len in [MAX_STARTUP_PACKET_LEN, MAX_STARTUP_PACKET_LEN + 1] {
            let mut input = u32::try_from(len).unwrap().to_be_bytes().to_vec();
            input.extend_from_slice(&0x0003_0000u32.to_be_bytes());
            input.resize(len, b'a');
            let expected = match u32::try_from(len).unwrap() {
                long if len > MAX_STARTUP_PACKET_LEN => Err(StartupError::TooLong(long)),
                _ => Ok(Some(len)),
            };
            assert_eq!(classify(&input).map(|p| p.map(|(_, n)| n)), expected);
        }
    }
}
