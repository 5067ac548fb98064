//! The PROXY protocol header (versions 1 and 2) that TCP load balancers put in
//! front of a connection to pass on the client's address.
//!
//! Parsing is a pure function over the bytes received so far, like the other
//! start-up parsers: `Ok(None)` while more bytes are needed, the header and
//! its length once complete, or an error as soon as the bytes prove it
//! malformed. Headers are small and bounded (107 bytes for v1, a 16-byte
//! preamble plus at most [`MAX_V2_PAYLOAD`] for v2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

/// The 12-byte signature that opens a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What opens a v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (from the specification).
const V1_MAX_LEN: usize = 107;
/// The v2 preamble: signature, version/command, family/protocol, length.
const V2_HEADER_LEN: usize = 16;
/// The largest v2 payload pgsni accepts: addresses plus TLVs that load
/// balancers add (connection ids, TLS details). Bounds what is buffered.
pub const MAX_V2_PAYLOAD: usize = 1024;

/// A parsed PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection from `source` to `destination`.
    Proxy {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A connection the proxy made itself (v2 LOCAL), such as a health check.
    Local,
    /// A proxied connection whose addresses are not given (v1 `UNKNOWN`, v2
    /// unspecified or Unix family): the socket's own peer address stands.
    Unknown,
}

/// Why bytes are not a valid PROXY header.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The connection does not start with a PROXY signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 header longer than 107 bytes, or without CRLF.
    #[error("PROXY v1 header too long")]
    V1TooLong,
    /// A v1 header that does not follow the grammar.
    #[error("malformed PROXY v1 header")]
    V1Malformed,
    /// A v2 header with a version other than 2 or an unknown command.
    #[error("PROXY v2 header with unknown version or command")]
    V2BadVersion,
    /// A v2 header whose payload is too short for its family or too long.
    #[error("PROXY v2 header with a bad length")]
    V2BadLength,
    /// A v2 PROXY header whose family/protocol byte is not one of the seven
    /// the specification defines.
    #[error("PROXY v2 header with an unknown address family or protocol")]
    V2BadFamily,
}

/// Whether `input` starts, or may yet start, with a PROXY header: used where
/// the header is optional. `None` means more bytes are needed to tell.
pub fn starts_with_header(input: &[u8]) -> Option<bool> {
    let matches = |signature: &[u8]| {
        let n = input.len().min(signature.len());
        input.get(..n) == signature.get(..n)
    };
    if !matches(V1_PREFIX) && !matches(&V2_SIGNATURE) {
        return Some(false);
    }
    if input.len() >= V1_PREFIX.len() && input.starts_with(V1_PREFIX) {
        return Some(true);
    }
    if input.len() >= V2_SIGNATURE.len() && input.starts_with(&V2_SIGNATURE) {
        return Some(true);
    }
    None
}

/// Parses a PROXY header at the start of `input`.
///
/// Contract: `Ok(None)` while `input` is a prefix of a header that may still
/// turn out valid; `Ok(Some((header, len)))` once complete, `len` being the
/// bytes it occupies; `Err` as soon as the bytes prove otherwise. Never
/// panics and never asks for more than 107 (v1) or 16 + [`MAX_V2_PAYLOAD`]
/// (v2) bytes.
pub fn parse(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    match starts_with_header(input) {
        None => Ok(None),
        Some(false) => Err(ProxyHeaderError::Missing),
        Some(true) if input.starts_with(V1_PREFIX) => parse_v1(input),
        Some(true) => parse_v2(input),
    }
}

fn parse_v1(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let window = input.get(..V1_MAX_LEN).unwrap_or(input);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let line = window.get(..end).ok_or(ProxyHeaderError::V1Malformed)?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::V1Malformed)?;
    let mut fields = line.split(' ');
    let malformed = ProxyHeaderError::V1Malformed;
    if fields.next() != Some("PROXY") {
        return Err(malformed);
    }
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Unknown,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(malformed);
            let (source_ip, destination_ip) = (next()?, next()?);
            let (source_port, destination_port) = (next()?, next()?);
            if fields.next().is_some() {
                return Err(malformed);
            }
            let ip = |text: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip = match family {
                    "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
                    _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
                };
                ip.map_err(|_| malformed)
            };
            let port = |text: &str| -> Result<u16, ProxyHeaderError> {
                // No sign, no leading zeros: the grammar is strict.
                if text.starts_with('+') || (text.len() > 1 && text.starts_with('0')) {
                    return Err(malformed);
                }
                text.parse().map_err(|_| malformed)
            };
            ProxyHeader::Proxy {
                source: SocketAddr::new(ip(source_ip)?, port(source_port)?),
                destination: SocketAddr::new(ip(destination_ip)?, port(destination_port)?),
            }
        }
        _ => return Err(malformed),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(input: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let Some((preamble, rest)) = input.split_first_chunk::<V2_HEADER_LEN>() else {
        return Ok(None);
    };
    let [.., version_command, family, len_hi, len_lo] = *preamble;
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let is_local = match version_command {
        0x20 => true,
        0x21 => false,
        _ => return Err(ProxyHeaderError::V2BadVersion),
    };
    if len > MAX_V2_PAYLOAD {
        return Err(ProxyHeaderError::V2BadLength);
    }
    // A LOCAL header's family is ignored, as the specification says; a
    // PROXY header's family and length are checked before waiting for the
    // payload, so that a bad one is refused without reading further.
    let address_len = if is_local { 0 } else { v2_address_len(family)? };
    if len < address_len {
        return Err(ProxyHeaderError::V2BadLength);
    }
    let Some(payload) = rest.get(..len) else {
        return Ok(None);
    };
    let total = V2_HEADER_LEN + len;
    if is_local {
        return Ok(Some((ProxyHeader::Local, total)));
    }
    // Only TCP over IP carries an address pgsni can use; UDP, Unix and
    // unspecified addresses leave the socket's own peer address standing.
    let header = match family {
        0x11 => {
            let (addresses, _tlvs) = payload
                .split_first_chunk::<12>()
                .ok_or(ProxyHeaderError::V2BadLength)?;
            let [s0, s1, s2, s3, d0, d1, d2, d3, sp0, sp1, dp0, dp1] = *addresses;
            ProxyHeader::Proxy {
                source: SocketAddr::from(([s0, s1, s2, s3], u16::from_be_bytes([sp0, sp1]))),
                destination: SocketAddr::from(([d0, d1, d2, d3], u16::from_be_bytes([dp0, dp1]))),
            }
        }
        0x21 => {
            let (addresses, _tlvs) = payload
                .split_first_chunk::<36>()
                .ok_or(ProxyHeaderError::V2BadLength)?;
            let bad = ProxyHeaderError::V2BadLength;
            let (source, rest) = addresses.split_first_chunk::<16>().ok_or(bad)?;
            let (destination, ports) = rest.split_first_chunk::<16>().ok_or(bad)?;
            let &[sp0, sp1, dp0, dp1] = ports else {
                return Err(bad);
            };
            ProxyHeader::Proxy {
                source: SocketAddr::from((*source, u16::from_be_bytes([sp0, sp1]))),
                destination: SocketAddr::from((*destination, u16::from_be_bytes([dp0, dp1]))),
            }
        }
        _ => ProxyHeader::Unknown,
    };
    Ok(Some((header, total)))
}

/// The length of the address block a v2 PROXY header's family/protocol byte
/// calls for. The specification lists seven values (unspecified, then TCP
/// and UDP over IPv4, IPv6 and Unix sockets) and says receivers must refuse
/// any other.
fn v2_address_len(family: u8) -> Result<usize, ProxyHeaderError> {
    match family {
        0x00 => Ok(0),
        0x11 | 0x12 => Ok(12),
        0x21 | 0x22 => Ok(36),
        // Two `sun_path` buffers of 108 bytes each.
        0x31 | 0x32 => Ok(216),
        _ => Err(ProxyHeaderError::V2BadFamily),
    }
}

/// Encodes a v2 PROXY header for a connection from `source` to
/// `destination`, as pgsni sends it to backends that expect one. Mixed
/// families (an IPv4 client through an IPv6 listener) are sent as IPv6, with
/// the IPv4 address mapped.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = Vec::with_capacity(V2_HEADER_LEN + 36);
    header.extend_from_slice(&V2_SIGNATURE);
    header.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            header.extend_from_slice(&[0x11, 0, 12]);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            header.extend_from_slice(&[0x21, 0, 36]);
            header.extend_from_slice(&v6(s).octets());
            header.extend_from_slice(&v6(d).octets());
        }
    }
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let input = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 5432\r\n\0\0\0\x08";
        assert_eq!(
            parse(input),
            Ok(Some((
                ProxyHeader::Proxy {
                    source: addr("192.0.2.1:56324"),
                    destination: addr("198.51.100.2:5432")
                },
                46
            )))
        );
        let input = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 5432\r\n";
        assert_eq!(
            parse(input).unwrap().unwrap().0,
            ProxyHeader::Proxy {
                source: addr("[2001:db8::1]:4000"),
                destination: addr("[2001:db8::2]:5432")
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Unknown, 15)))
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 5432 extra\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 5432\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 5432\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        ] {
            assert_eq!(parse(bad), Err(ProxyHeaderError::V1Malformed), "{bad:?}");
        }
        assert_eq!(parse(&[b'P'; 1][..]), Ok(None));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert_eq!(parse(&long), Err(ProxyHeaderError::V1TooLong));
    }

    #[test]
    fn v2_round_trip() {
        for (source, destination) in [
            (addr("192.0.2.1:56324"), addr("198.51.100.2:5432")),
            (addr("[2001:db8::1]:4000"), addr("[2001:db8::2]:5432")),
        ] {
            let mut input = encode_v2(source, destination);
            let len = input.len();
            input.extend_from_slice(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]);
            assert_eq!(
                parse(&input),
                Ok(Some((
                    ProxyHeader::Proxy {
                        source,
                        destination
                    },
                    len
                )))
            );
            for end in 0..len {
                assert_eq!(parse(&input[..end]), Ok(None), "prefix of {end}");
            }
        }
    }

    #[test]
    fn v2_mixed_families_are_sent_as_ipv6() {
        let header = encode_v2(addr("192.0.2.1:1"), addr("[2001:db8::2]:5432"));
        let (parsed, _) = parse(&header).unwrap().unwrap();
        assert_eq!(
            parsed,
            ProxyHeader::Proxy {
                source: addr("[::ffff:192.0.2.1]:1"),
                destination: addr("[2001:db8::2]:5432")
            }
        );
    }

    #[test]
    fn v2_local_unspec_and_errors() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Some((ProxyHeader::Local, 16))));
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(parse(&unspec), Ok(Some((ProxyHeader::Unknown, 16))));
        let mut version = V2_SIGNATURE.to_vec();
        version.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert_eq!(parse(&version), Err(ProxyHeaderError::V2BadVersion));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&short), Err(ProxyHeaderError::V2BadLength));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyHeaderError::V2BadLength));
    }

    #[test]
    fn detection_for_optional_mode() {
        assert_eq!(starts_with_header(b""), None);
        assert_eq!(starts_with_header(b"PRO"), None);
        assert_eq!(starts_with_header(b"\r\n\r\n"), None);
        assert_eq!(starts_with_header(&[0, 0, 0, 8]), Some(false));
        assert_eq!(starts_with_header(&[0x16, 3, 1]), Some(false));
        assert_eq!(starts_with_header(b"PROXY "), Some(true));
        assert_eq!(starts_with_header(&V2_SIGNATURE), Some(true));
        assert_eq!(parse(&[0, 0, 0, 8]), Err(ProxyHeaderError::Missing));
    }

    #[test]
    fn v2_families_outside_the_specification_are_refused() {
        for family in [0x01, 0x02, 0x10, 0x13, 0x20, 0x33, 0x41, 0xff] {
            let mut input = V2_SIGNATURE.to_vec();
            input.extend_from_slice(&[0x21, family, 0, 36]);
            assert_eq!(
                parse(&input),
                Err(ProxyHeaderError::V2BadFamily),
                "{family:#x}"
            );
            // A LOCAL header's family is ignored.
            input[12] = 0x20;
            input.resize(16 + 36, 0);
            assert_eq!(parse(&input), Ok(Some((ProxyHeader::Local, 52))));
        }
        // UDP and Unix sockets: well-formed, but no address to use.
        for (family, len) in [(0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)] {
            let mut input = V2_SIGNATURE.to_vec();
            input.extend_from_slice(&[0x21, family, 0, len - 1]);
            assert_eq!(parse(&input), Err(ProxyHeaderError::V2BadLength));
            input[15] = len;
            input.resize(16 + usize::from(len), 7);
            let whole = Ok(Some((ProxyHeader::Unknown, input.len())));
            assert_eq!(parse(&input), whole, "{family:#x}");
        }
    }

    /// Valid headers of every kind, with a few bytes of what follows them.
    fn valid_headers() -> Vec<Vec<u8>> {
        let v2 = |command: u8, family: u8, payload: &[u8]| {
            let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
            [&V2_SIGNATURE[..], &[command, family], &len, payload].concat()
        };
        // A TLV as AWS's load balancers add one: type 0xEA, the endpoint id.
        let tlv = [&[0xea, 0, 9, 1][..], b"vpce-1234"].concat();
        let v4 = encode_v2(addr("192.0.2.1:56324"), addr("198.51.100.2:5432"));
        let mut with_tlv = [&v4[..], &tlv].concat();
        with_tlv[15] += u8::try_from(tlv.len()).unwrap();
        vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 5432\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.9 0 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
            v4,
            encode_v2(addr("[2001:db8::1]:4000"), addr("[2001:db8::2]:5432")),
            with_tlv,
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x00, &[1, 2, 3]),
            v2(0x21, 0x12, &[9; 12]),
            v2(0x21, 0x31, &[b'/'; 216]),
        ]
    }

    #[test]
    fn valid_headers_are_read_whole() {
        // Their contract (prefixes, bounds, re-encoding) is checked by the
        // fuzz property, over the seeds and a sweep of mutations of them
        // (`tests/fuzz_seeds.rs`).
        for header in valid_headers() {
            let read = parse(&header).map(|h| h.map(|(_, len)| len));
            assert_eq!(read, Ok(Some(header.len())), "{header:?}");
            // What follows a header on the wire stays unread.
            let behind = [&header[..], &crate::wire::startup::SSL_REQUEST].concat();
            assert_eq!(parse(&behind), parse(&header));
        }
    }
}
