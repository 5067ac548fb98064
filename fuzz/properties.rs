//! What the fuzz targets check: one function per target.
//!
//! Each function takes one input, runs it through pgsni's parsers and panics
//! if a property fails. The targets in `fuzz_targets/` are one-line wrappers
//! around these functions, and `tests/fuzz_seeds.rs` includes this very file
//! to replay the committed seeds and every past crash through them with a
//! plain `cargo test`, so a regression shows without a fuzzer.
//!
//! | target | input (and seed) format |
//! |---|---|
//! | `client_hello` | a selector byte, then what a client sends after `S` |
//! | `client_hello_rustls` | what a client sends after `S` |
//! | `startup` | a client's first bytes |
//! | `startup_message` | a StartupMessage, length field included |
//! | `proxy_header` | a connection's first bytes, behind a load balancer |
//! | `routes_file` | a routes file |
//! | `route_lookup` | route patterns, one a line, then a server name as sent |
//!
//! The `client_hello` selector stretches into the lengths of the TCP segments
//! and of the TLS records the input is cut into (see [`Lengths`]); the first
//! segment ends where the selector points, as a fraction of 255.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use pgsni::routing::file::parse_bytes;
use pgsni::routing::table::{BackendTemplate, Pattern, Route, RouteTable};
use pgsni::tls::{
    is_valid_label, locate, read_client_hello, ClientHello, HelloError, HostName, Located,
    MAX_CLIENT_HELLO_BYTES,
};
use pgsni::wire::proxy_header::{
    self, encode_v2, ProxyHeader, ProxyHeaderError, MAX_V2_PAYLOAD, V2_SIGNATURE,
};
use pgsni::wire::startup::{
    classify, StartupError, StartupPacket, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE,
    MAX_STARTUP_PACKET_LEN, MIN_STARTUP_PACKET_LEN, SSL_REQUEST, TLS_HANDSHAKE_RECORD,
};

/// A property: panics if the input breaks it.
pub type Property = fn(&[u8]);

/// Every target, by the name of its file in `fuzz_targets/` and of its seed
/// directory.
pub const TARGETS: &[(&str, Property)] = &[
    ("client_hello", client_hello),
    ("client_hello_rustls", client_hello_rustls),
    ("startup", startup),
    ("startup_message", startup_message),
    ("proxy_header", proxy_header),
    ("routes_file", routes_file),
    ("route_lookup", route_lookup),
];

// ---------------------------------------------------------------------------
// client_hello
// ---------------------------------------------------------------------------

/// Record header: content type (1), legacy version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// The longest record fragment TLS allows.
const MAX_FRAGMENT_LEN: usize = 1 << 14;
/// Inputs up to this long get every prefix checked; longer ones only the
/// prefixes their TCP segments end at, to keep each run fast.
const EVERY_PREFIX_UP_TO: usize = 2048;

/// The ClientHello reader, fed arbitrary bytes whole and in pieces.
///
/// - `locate` and `read_client_hello` agree on every input.
/// - However the input is cut into TCP segments, reading it segment by
///   segment, as the proxy does, stops with the answer for the whole input:
///   every prefix is either Incomplete or already that answer.
/// - A located hello occupies what it says: one record holding the message,
///   or records whose fragments concatenate to it, never past the cap.
/// - The same handshake message framed in other records reads the same,
///   unless the records then exceed the cap.
/// - A server name that `HostName` accepts is in normal form after one
///   pass; ALPN names are never empty.
pub fn client_hello(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let whole = locate(input);
    let answer = read(input);
    match whole {
        Ok(Located::Incomplete) => assert_eq!(answer, Ok(None)),
        Err(error) => assert_eq!(answer, Err(error)),
        Ok(located) => {
            assert_ne!(answer, Ok(None), "located but not read");
            check_located(input, &located);
        }
    }

    let mut lengths = Lengths::new(selector, 0);
    let mut buffered = Vec::with_capacity(input.len());
    let mut end = input.len() * usize::from(selector) / usize::from(u8::MAX);
    let incremental = loop {
        buffered.extend_from_slice(&input[buffered.len()..end]);
        let partial = read(&buffered);
        if partial != Ok(None) || end == input.len() {
            break partial;
        }
        end = (end + lengths.next([1, 8, 64, 1500])).min(input.len());
    };
    assert_eq!(incremental, answer, "fed in segments, up to byte {end}");

    if input.len() <= EVERY_PREFIX_UP_TO {
        for end in 0..input.len() {
            match locate(&input[..end]) {
                Ok(Located::Incomplete) => {}
                prefix => assert_eq!(prefix, whole, "prefix of {end} bytes"),
            }
        }
    }

    if let Some(message) = message_of(&whole) {
        let records = frame(&message, &mut Lengths::new(selector, 1));
        let expected = if records.len() > MAX_CLIENT_HELLO_BYTES {
            Err(HelloError::TooLarge)
        } else {
            answer.clone().map(|hello| {
                hello.map(|hello| Hello {
                    consumed: records.len(),
                    ..hello
                })
            })
        };
        assert_eq!(read(&records), expected, "in other records");
    }

    if let Ok(Some(hello)) = &answer {
        if let Some(raw) = &hello.server_name {
            check_host_name(raw);
        }
        assert!(hello.alpn.iter().flatten().all(|p| !p.is_empty()));
    }

    // The message parser on its own, without the record layer in front.
    let _ = ClientHello::parse(input);
}

/// What the reader made of an input, owned so that answers for different
/// buffers compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hello {
    consumed: usize,
    legacy_version: u16,
    server_name: Option<Vec<u8>>,
    alpn: Option<Vec<Vec<u8>>>,
    offers_ech: bool,
}

/// Reads `input` the way the proxy does.
fn read(input: &[u8]) -> Result<Option<Hello>, HelloError> {
    let mut scratch = Vec::new();
    let Some(hello) = read_client_hello(input, &mut scratch)? else {
        return Ok(None);
    };
    let consumed = locate(input)
        .ok()
        .and_then(|located| located.consumed())
        .expect("read, so located");
    Ok(Some(Hello {
        consumed,
        legacy_version: hello.legacy_version(),
        server_name: hello.server_name().map(<[u8]>::to_vec),
        alpn: hello
            .has_alpn()
            .then(|| hello.alpn_protocols().map(<[u8]>::to_vec).collect()),
        offers_ech: hello.offers_ech(),
    }))
}

/// Checks a located hello against the records it claims, walked here
/// independently of the reader.
fn check_located(input: &[u8], located: &Located<'_>) {
    let consumed = located.consumed().expect("located");
    assert!(consumed <= MAX_CLIENT_HELLO_BYTES.min(input.len()));
    let fragments = fragments(&input[..consumed]);
    let carried: usize = fragments.iter().map(|f| f.len()).sum();
    assert_eq!(
        consumed,
        carried + RECORD_HEADER_LEN * fragments.len(),
        "whole records"
    );
    assert!(fragments
        .iter()
        .all(|f| (1..=MAX_FRAGMENT_LEN).contains(&f.len())));
    let message: Vec<u8> = fragments.concat();
    let declared = 4 + declared_len(&message).expect("a handshake header");
    assert_eq!(message[0], 1, "a ClientHello");
    // The records end with the one that completes the message.
    let before_last = carried - fragments.last().map_or(0, |f| f.len());
    assert!(before_last < declared && declared <= carried);

    match located {
        Located::Incomplete => unreachable!(),
        Located::Contiguous { message, .. } => {
            assert_eq!(fragments.len(), 1);
            assert_eq!(*message, &input[RECORD_HEADER_LEN..][..declared]);
        }
        Located::Fragmented(located) => {
            assert!(fragments.len() > 1);
            assert_eq!(located.message_len(), declared);
            let mut out = vec![0; declared];
            assert_eq!(located.reassemble(&mut out), Some(&message[..declared]));
            assert_eq!(located.reassemble(&mut out[..declared - 1]), None);
        }
    }
}

/// The fragments of the whole records at the start of `input`.
fn fragments(mut input: &[u8]) -> Vec<&[u8]> {
    let mut fragments = Vec::new();
    while let [_, _, _, hi, lo, rest @ ..] = input {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some((fragment, rest)) = rest.split_at_checked(len) else {
            break;
        };
        fragments.push(fragment);
        input = rest;
    }
    fragments
}

/// The handshake message of a located hello.
fn message_of(located: &Result<Located<'_>, HelloError>) -> Option<Vec<u8>> {
    match located {
        Ok(Located::Contiguous { message, .. }) => Some(message.to_vec()),
        Ok(Located::Fragmented(fragments)) => {
            let mut out = vec![0; fragments.message_len()];
            fragments.reassemble(&mut out).map(<[u8]>::to_vec)
        }
        _ => None,
    }
}

/// The body length a handshake message declares in its header.
fn declared_len(message: &[u8]) -> Option<usize> {
    let &[_, a, b, c, ..] = message else {
        return None;
    };
    usize::try_from(u32::from_be_bytes([0, a, b, c])).ok()
}

/// `message` in handshake records whose lengths `lengths` chooses.
fn frame(mut message: &[u8], lengths: &mut Lengths) -> Vec<u8> {
    let mut records = Vec::with_capacity(message.len() + 64);
    while !message.is_empty() {
        let len = lengths
            .next([1, 7, 300, MAX_FRAGMENT_LEN])
            .min(message.len());
        let (fragment, rest) = message.split_at(len);
        records.extend_from_slice(&[22, 3, 1]);
        records.extend_from_slice(&u16::try_from(len).expect("<= 2^14").to_be_bytes());
        records.extend_from_slice(fragment);
        message = rest;
    }
    records
}

/// A little xorshift generator that stretches the one selector byte of a
/// fuzz input into a sequence of lengths, so that one byte of input chooses
/// a whole segmentation, from one-byte pieces to full-sized ones.
struct Lengths(u32);

impl Lengths {
    /// A sequence for `selector`; different `stream`s give unrelated ones.
    fn new(selector: u8, stream: u32) -> Self {
        // xorshift needs a non-zero state.
        Self((u32::from(selector) << 8 | stream << 16 | 1).wrapping_mul(0x9e37_79b9) | 1)
    }

    /// A length from 1 to one of `scales`, which one chosen at random too.
    fn next(&mut self, scales: [usize; 4]) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        let scale = scales[(x >> 30) as usize];
        1 + x as usize % scale
    }
}

// ---------------------------------------------------------------------------
// client_hello_rustls
// ---------------------------------------------------------------------------

/// The ClientHello reader against rustls's server-side `Acceptor`.
///
/// - Whatever rustls accepts, pgsni reads the same way: the same server name
///   (once normalised) and the same ALPN offer. The exceptions are the ones
///   the module documentation of `pgsni::tls::client_hello` lists: records
///   over 2^14 bytes and hellos over `MAX_CLIENT_HELLO_BYTES` are refused,
///   and an IP address rustls ignores is handed out as a name.
/// - Whatever pgsni accepts and rustls does not, rustls must accept once
///   everything pgsni does not read is taken away: by design, pgsni checks
///   only the fields that lead to the extensions, and the server_name and
///   ALPN extensions. If rustls still refuses, the name is the cause, and
///   `HostName` must refuse it too, save for the names the module
///   documentation lists.
pub fn client_hello_rustls(input: &[u8]) {
    let ours = read(input);
    match (rustls_accept(input), ours) {
        (Oracle::Accepted(theirs), Ok(Some(hello))) => assert_same_reading(&theirs, &hello),
        (Oracle::Accepted(_), Err(error @ (HelloError::RecordOverflow | HelloError::TooLarge))) => {
            let (records, longest) = hello_records(input).expect("rustls found a whole hello");
            match error {
                HelloError::RecordOverflow => assert!(longest > MAX_FRAGMENT_LEN),
                _ => assert!(records > MAX_CLIENT_HELLO_BYTES, "{records} bytes"),
            }
        }
        (Oracle::Accepted(theirs), ours) => panic!("rustls read {theirs:?}, pgsni {ours:?}"),
        (_, Ok(Some(hello))) => explain_acceptance(&hello),
        _ => {}
    }
}

/// What rustls's Acceptor makes of an input.
#[derive(Debug)]
enum Oracle {
    Incomplete,
    Rejected,
    Accepted(Reading),
}

/// The server name and ALPN offer rustls read.
#[derive(Debug)]
struct Reading {
    server_name: Option<String>,
    alpn: Option<Vec<Vec<u8>>>,
}

fn rustls_accept(mut input: &[u8]) -> Oracle {
    let mut acceptor = rustls::server::Acceptor::default();
    while !input.is_empty() {
        match acceptor.read_tls(&mut input) {
            Ok(0) => break,
            Ok(_) => {}
            // Its buffer is full: more than it will take for a hello.
            Err(_) => return Oracle::Rejected,
        }
    }
    match acceptor.accept() {
        Ok(None) => Oracle::Incomplete,
        Err(_) => Oracle::Rejected,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Oracle::Accepted(Reading {
                server_name: hello.server_name().map(str::to_owned),
                alpn: hello
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect()),
            })
        }
    }
}

fn assert_same_reading(theirs: &Reading, ours: &Hello) {
    assert_eq!(ours.alpn, theirs.alpn, "ALPN");
    match (&theirs.server_name, &ours.server_name) {
        (Some(theirs), Some(raw)) => {
            let theirs = theirs.strip_suffix('.').unwrap_or(theirs);
            let ours = HostName::parse(raw).map(|name| name.to_string());
            assert_eq!(ours.as_deref(), Ok(&*theirs.to_ascii_lowercase()));
        }
        (None, None) => {}
        // rustls ignores an IP address sent as a name; pgsni hands it out,
        // and no route can match it.
        (None, Some(raw)) => assert!(
            std::str::from_utf8(raw).is_ok_and(|raw| raw.parse::<IpAddr>().is_ok()),
            "rustls saw no name in {raw:?}"
        ),
        (Some(theirs), None) => panic!("rustls read a name {theirs:?}, pgsni none"),
    }
}

/// pgsni accepted a hello that rustls refused or is still waiting on.
fn explain_acceptance(hello: &Hello) {
    let bare = bare_hello(hello);
    match rustls_accept(&bare) {
        // rustls objected to something pgsni leaves to the backend.
        Oracle::Accepted(theirs) => assert_same_reading(&theirs, &read(&bare).unwrap().unwrap()),
        Oracle::Incomplete => panic!("rustls waits for more of a whole hello: {bare:?}"),
        Oracle::Rejected => {
            let raw = hello.server_name.as_deref().unwrap_or_else(|| {
                panic!("rustls refuses {:?} and it is not the name", hello.alpn)
            });
            if let Ok(name) = HostName::parse(raw) {
                assert!(
                    rustls_refuses(&name, raw),
                    "rustls refuses {name:?}, HostName accepts it"
                );
            }
        }
    }
}

/// The names `HostName` accepts and rustls refuses, as the module
/// documentation of `pgsni::tls::client_hello` lists them: labels that start
/// or end with a hyphen, a last label that is a number (decimal, or hex
/// after `0x`), and a 253-byte name whose trailing dot makes 254.
fn rustls_refuses(name: &HostName, raw: &[u8]) -> bool {
    let hyphen_at_edge = name
        .labels()
        .any(|label| label.starts_with('-') || label.ends_with('-'));
    let last = name.labels().next_back().unwrap_or_default();
    let number = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    hyphen_at_edge || number || raw.len() > pgsni::tls::server_name::MAX_NAME_LEN
}

/// A hello holding only what pgsni reads from `hello`, plus what rustls
/// needs to accept one (null compression, signature_algorithms), in one
/// record.
fn bare_hello(hello: &Hello) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, ext_type: u16, body: &[u8]) {
        out.extend_from_slice(&ext_type.to_be_bytes());
        out.extend(u16_prefixed(body));
    }
    let mut extensions = Vec::new();
    extension(&mut extensions, 13, &[0, 2, 0x08, 0x04]);
    if let Some(name) = &hello.server_name {
        let entry = [&[0][..], &u16_prefixed(name)].concat();
        extension(&mut extensions, 0, &u16_prefixed(&entry));
    }
    if let Some(protocols) = &hello.alpn {
        let mut list = Vec::new();
        for protocol in protocols {
            list.push(u8::try_from(protocol.len()).expect("read from one byte"));
            list.extend_from_slice(protocol);
        }
        extension(&mut extensions, 16, &u16_prefixed(&list));
    }

    let mut body = vec![3, 3]; // legacy version: TLS 1.2
    body.extend_from_slice(&[0; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend(u16_prefixed(&extensions));
    let [_, a, b, c] = u32::try_from(body.len()).expect("small").to_be_bytes();
    let message = [&[1, a, b, c][..], &body].concat();
    [&[22, 3, 1][..], &u16_prefixed(&message)].concat()
}

fn u16_prefixed(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("fits a u16 vector");
    [&len.to_be_bytes()[..], bytes].concat()
}

/// How many bytes of input the records carrying the first handshake message
/// take, and the longest of those records; `None` if the input stops first.
fn hello_records(mut input: &[u8]) -> Option<(usize, usize)> {
    let (mut consumed, mut longest) = (0, 0);
    let mut message = Vec::new();
    loop {
        let [_, _, _, hi, lo, rest @ ..] = input else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (fragment, rest) = rest.split_at_checked(len)?;
        message.extend_from_slice(fragment);
        (consumed, longest) = (consumed + RECORD_HEADER_LEN + len, longest.max(len));
        input = rest;
        if declared_len(&message).is_some_and(|len| message.len() >= 4 + len) {
            return Some((consumed, longest));
        }
    }
}

// ---------------------------------------------------------------------------
// startup
// ---------------------------------------------------------------------------

/// The start-up packet classifier.
///
/// - Every prefix of the input is either "need more" or already the answer
///   for the whole input, and the classifier never needs more than
///   `MAX_STARTUP_PACKET_LEN` bytes to answer.
/// - A classified packet re-encodes to exactly the bytes it occupies: the
///   byte-exact SSLRequest and GSSENCRequest, a CancelRequest's process id
///   and key, a StartupMessage's version; direct TLS consumes nothing.
/// - An error names what the header says, and stays the same whatever
///   follows; a classified packet classifies the same on its own.
pub fn startup(input: &[u8]) {
    let whole = classify(input);
    for end in 0..input.len() {
        match classify(&input[..end]) {
            Ok(None) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {end} bytes"),
        }
    }
    match whole {
        Err(_) => assert_eq!(classify(&[input, &[0; 16]].concat()), whole),
        Ok(Some((_, len))) if len > 0 => {
            assert_eq!(classify(&input[..len]), whole, "on its own");
        }
        _ => {}
    }

    let header = |at: usize| {
        input
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")))
    };
    match whole {
        Ok(None) => assert!(input.len() < MAX_STARTUP_PACKET_LEN, "waits forever"),
        Ok(Some((StartupPacket::DirectTls, len))) => {
            assert_eq!(len, 0);
            assert_eq!(input.first(), Some(&TLS_HANDSHAKE_RECORD));
        }
        Ok(Some((packet, len))) => {
            assert_ne!(input.first(), Some(&TLS_HANDSHAKE_RECORD));
            assert!((MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN).contains(&len));
            assert_eq!(header(0), u32::try_from(len).ok());
            let code = header(4).expect("a code");
            let encoded: Vec<u8> = match packet {
                StartupPacket::SslRequest => SSL_REQUEST.to_vec(),
                StartupPacket::GssEncRequest => [8, GSSENC_REQUEST_CODE]
                    .iter()
                    .flat_map(|n: &u32| n.to_be_bytes())
                    .collect(),
                StartupPacket::CancelRequest {
                    process_id,
                    secret_key,
                } => {
                    assert!((4..=256).contains(&secret_key.len()));
                    let header = [len as u32, CANCEL_REQUEST_CODE, process_id];
                    let header = header.iter().flat_map(|n| n.to_be_bytes());
                    header.chain(secret_key.iter().copied()).collect()
                }
                StartupPacket::Startup { major, minor } => {
                    assert_ne!(major, 1234, "request codes are not versions");
                    assert_eq!(code, u32::from(major) << 16 | u32::from(minor));
                    input[..len].to_vec()
                }
                StartupPacket::DirectTls => unreachable!(),
            };
            assert_eq!(encoded, &input[..len], "{}", packet.name());
        }
        Err(StartupError::TooShort(len)) => {
            assert_eq!(header(0), Some(len));
            assert!((len as usize) < MIN_STARTUP_PACKET_LEN);
        }
        Err(StartupError::TooLong(len)) => {
            assert_eq!(header(0), Some(len));
            assert!(len as usize > MAX_STARTUP_PACKET_LEN);
        }
        Err(StartupError::UnknownRequest(code)) => {
            assert_eq!(header(4), Some(code));
            assert_eq!(code >> 16, 1234);
        }
        Err(StartupError::BadLength { len, .. }) => assert_eq!(header(0), Some(len)),
    }
    if input.starts_with(&SSL_REQUEST) {
        assert_eq!(whole, Ok(Some((StartupPacket::SslRequest, 8))));
    }
}

// ---------------------------------------------------------------------------
// startup_message
// ---------------------------------------------------------------------------

/// The StartupMessage reader of terminated routes, against a model.
///
/// - `StartupMessage::parse` accepts exactly what the model below accepts
///   (the length field equals the packet's length, within Postgres's
///   bounds; protocol 3.x; NUL-terminated names and values, names not
///   empty; a final NUL as the last byte), and then `classify` calls it a
///   StartupMessage of that length.
/// - Each parameter reads as its last occurrence; an unchanged message is
///   replayed byte for byte.
/// - Replacing or removing a parameter changes that parameter only, and
///   the packet it encodes to parses back.
/// - `split_options` and `join_options` round-trip whatever arguments the
///   input's bytes split into.
pub fn startup_message(input: &[u8]) {
    use pgsni::wire::startup_message::{join_options, split_options, StartupMessage};

    let model = model_parameters(input);
    let message = match StartupMessage::parse(input) {
        Ok(message) => message,
        Err(error) => {
            assert_eq!(model, None, "refused with {error}");
            let arguments = split_options(input);
            let kept: Vec<Vec<u8>> = arguments
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect();
            assert_eq!(split_options(&join_options(&arguments)), kept);
            return;
        }
    };
    let parameters = model.expect("the model accepts it too");
    let minor = u16::from_be_bytes([input[6], input[7]]);
    assert_eq!(
        classify(input),
        Ok(Some((
            StartupPacket::Startup { major: 3, minor },
            input.len()
        )))
    );
    assert!(matches!(message.encode(), Cow::Borrowed(bytes) if bytes == input));
    let last = |parameters: &[(Vec<u8>, Vec<u8>)], name: &[u8]| {
        parameters
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let names: Vec<&str> = parameters
        .iter()
        .filter_map(|(name, _)| std::str::from_utf8(name).ok())
        .collect();
    for &name in &names {
        assert_eq!(
            message.get(name).map(<[u8]>::to_vec),
            last(&parameters, name.as_bytes())
        );
    }

    // Rewrite the first parameter, then remove the last, as a terminated
    // route does with its routing keys.
    let mut changed = message.clone();
    let mut expected = parameters.clone();
    if let Some(&name) = names.first() {
        changed.replace(name, Some(&b"rewritten"[..]));
        for (key, value) in &mut expected {
            if key == name.as_bytes() {
                *value = b"rewritten".to_vec();
            }
        }
    }
    if let Some(&name) = names.last() {
        changed.replace(name, None);
        expected.retain(|(key, _)| key != name.as_bytes());
    }
    let encoded = changed.encode();
    assert_eq!(model_parameters_unbounded(&encoded), Some(expected));

    if let Some(options) = message.get("options") {
        let arguments = split_options(options);
        assert_eq!(
            split_options(&join_options(&arguments)),
            arguments
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        );
    }
}

/// The parameters of a StartupMessage, read with none of the parser's code;
/// `None` if it is not one.
fn model_parameters(packet: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if !(MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN).contains(&packet.len()) {
        return None;
    }
    model_parameters_unbounded(packet)
}

/// [`model_parameters`] without the bounds on the length, for messages
/// rewritten with longer values.
fn model_parameters_unbounded(packet: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if packet.len() < 8 || packet[..4] != u32::try_from(packet.len()).ok()?.to_be_bytes() {
        return None;
    }
    if packet[4..6] != [0, 3] {
        return None;
    }
    // Strings, each ending in NUL; the last, empty one ends the list.
    let body = packet[8..].strip_suffix(&[0])?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    let strings: Vec<&[u8]> = body.strip_suffix(&[0])?.split(|&b| b == 0).collect();
    if !strings.len().is_multiple_of(2) || strings.iter().step_by(2).any(|name| name.is_empty()) {
        return None;
    }
    Some(
        strings
            .chunks(2)
            .map(|pair| (pair[0].to_vec(), pair[1].to_vec()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// proxy_header
// ---------------------------------------------------------------------------

/// The PROXY header parser on its own, and against the `ppp` crate.
///
/// On its own, as the unit tests in `src/wire/proxy_header.rs` check it:
/// `starts_with_header` and `parse` agree on whether a header is there;
/// every prefix is incomplete or already the final answer; incomplete never
/// asks for more than 107 bytes (v1) or 16 + `MAX_V2_PAYLOAD` (v2); an
/// accepted v2 header occupies 16 bytes plus its declared length, a v1
/// header runs to its first CRLF; a header parses the same on its own, and
/// its addresses encode back to it.
///
/// Against `ppp`: whatever one accepts, the other accepts, with the same
/// length and the same addresses, save for these differences, each checked
/// by repairing the input and asking again:
///
/// 1. A v2 payload over `MAX_V2_PAYLOAD` (1024) bytes: pgsni refuses it to
///    bound what a client makes it buffer; `ppp` takes up to 65535.
/// 2. A v2 PROXY header whose family/protocol byte is not one of the seven
///    the specification defines (`0x00`, `0x11`, `0x12`, `0x21`, `0x22`,
///    `0x31`, `0x32`): the specification says receivers must refuse it, and
///    pgsni does; `ppp` checks the two halves apart and accepts, say,
///    `0x10` (IPv4, unspecified protocol).
/// 3. A v2 LOCAL header: the specification says the receiver ignores the
///    family and address block, and pgsni does; `ppp` checks them.
/// 4. A v1 port with a `+` sign or leading zeros: the grammar allows
///    digits only, without leading zeros, and pgsni refuses them; `ppp`
///    uses `u16::from_str`, which takes `+5432` and `05432`.
/// 5. A v1 `UNKNOWN` line whose rest has a CR before the CRLF, or more than
///    four space-separated words: the specification says the receiver
///    ignores everything up to the CRLF, and pgsni does; `ppp` stops at the
///    first CR and splits the line at most seven ways, so it refuses both.
/// 6. A v1 line with a lone LF word in it (`… \n`, between spaces or at
///    the end): `ppp` takes that word for the end of the line and accepts
///    the header without a CRLF (ending it at the next CR and the byte
///    after it, or at the end of what has arrived); pgsni waits for the
///    CRLF the specification's grammar requires (or refuses past 107
///    bytes, or refuses what follows the addresses).
///
/// Where `ppp` reads UDP or Unix addresses, or a PROXY header of the
/// unspecified family, pgsni has no address it can use and says
/// `Unknown`: the socket's own peer address stands. That is mapping, not a
/// difference: [`ppp_reading`] does it.
pub fn proxy_header(input: &[u8]) {
    check_proxy_header(input);
    let ours = proxy_header::parse(input);
    // 6: what ppp reads up to a lone LF word is no header for pgsni.
    let theirs = ppp_reading(input).filter(|theirs| !ends_at_a_lone_lf(input, theirs));
    match (&ours, &theirs) {
        (Ok(Some(ours)), Some(theirs)) => assert_eq!(ours, theirs, "pgsni and ppp"),
        (_, Some(theirs)) => explain_ppp_acceptance(input, &ours, theirs),
        (Ok(Some(ours)), None) => explain_pgsni_acceptance(input, ours),
        _ => {}
    }
}

/// Whether `ppp` read a v1 header that ends without a CRLF, having taken a
/// lone LF word for the end of the line: difference 6.
fn ends_at_a_lone_lf(input: &[u8], theirs: &(ProxyHeader, usize)) -> bool {
    let line = &input[..theirs.1];
    if !line.starts_with(b"PROXY ") || line.ends_with(b"\r\n") {
        return false;
    }
    assert!(line.contains(&b'\n'), "ppp ended {line:?} at no LF");
    assert!(
        !line.windows(2).any(|pair| pair == b"\r\n"),
        "ppp's header holds a CRLF before its end"
    );
    true
}

/// What pgsni would make of the header `ppp` reads in `input`, and its
/// length; `None` if `ppp` refuses it or wants more.
fn ppp_reading(input: &[u8]) -> Option<(ProxyHeader, usize)> {
    use ppp::{v1, v2, HeaderResult};
    match HeaderResult::parse(input) {
        HeaderResult::V1(Ok(header)) => {
            let header_len = header.header.len();
            let reading = match header.addresses {
                v1::Addresses::Unknown => ProxyHeader::Unknown,
                v1::Addresses::Tcp4(a) => ProxyHeader::Proxy {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Tcp6(a) => ProxyHeader::Proxy {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
            };
            Some((reading, header_len))
        }
        HeaderResult::V2(Ok(header)) => {
            let reading = match (header.command, header.protocol, header.addresses) {
                (v2::Command::Local, ..) => ProxyHeader::Local,
                (_, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => ProxyHeader::Proxy {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (_, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => ProxyHeader::Proxy {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                _ => ProxyHeader::Unknown,
            };
            Some((reading, header.len()))
        }
        _ => None,
    }
}

/// `ppp` accepted a header that pgsni refuses or waits on: one of the
/// differences 1, 2 and 4 listed at [`proxy_header`].
fn explain_ppp_acceptance(
    input: &[u8],
    ours: &Result<Option<(ProxyHeader, usize)>, ProxyHeaderError>,
    theirs: &(ProxyHeader, usize),
) {
    let repaired = match ours {
        // 1: only the length can be at fault; ppp read the same header.
        Err(ProxyHeaderError::V2BadLength) => {
            assert!(theirs.1 > 16 + MAX_V2_PAYLOAD, "{theirs:?}");
            return;
        }
        // 2: a family byte outside the seven, which ppp took as its
        // halves: an unspecified family or protocol, so no address; as
        // the unspecified family, pgsni agrees.
        Err(ProxyHeaderError::V2BadFamily) => {
            assert!([0x01, 0x02, 0x10, 0x20, 0x30].contains(&input[13]));
            assert_eq!(theirs.0, ProxyHeader::Unknown);
            let mut repaired = input.to_vec();
            repaired[13] = 0x00;
            repaired
        }
        // 4: a port with a '+' sign or leading zeros.
        Err(ProxyHeaderError::V1Malformed) => {
            let line = std::str::from_utf8(&input[..theirs.1]).expect("ppp read text");
            let fields: Vec<&str> = line.trim_end_matches("\r\n").split(' ').collect();
            let unusual =
                |port: &&str| port.starts_with('+') || (port.len() > 1 && port.starts_with('0'));
            assert!(
                fields.len() == 6 && fields[4..].iter().any(unusual),
                "ppp accepted {line:?}"
            );
            let ports: Vec<String> = fields[4..]
                .iter()
                .map(|port| port.parse::<u16>().expect("ppp read a port").to_string())
                .collect();
            let ports = ports.iter().map(String::as_str);
            let unsigned = fields[..4]
                .iter()
                .copied()
                .chain(ports)
                .collect::<Vec<_>>()
                .join(" ");
            assert_eq!(theirs.1, line.len());
            let unsigned = format!("{unsigned}\r\n");
            assert_eq!(
                proxy_header::parse(unsigned.as_bytes()),
                Ok(Some((theirs.0, unsigned.len())))
            );
            return;
        }
        other => panic!("ppp read {theirs:?}, pgsni {other:?}"),
    };
    assert_eq!(
        proxy_header::parse(&repaired),
        Ok(Some(*theirs)),
        "once repaired"
    );
}

/// pgsni accepted a header that `ppp` refuses or waits on: one of the
/// differences 3, 5 and 6 listed at [`proxy_header`].
fn explain_pgsni_acceptance(input: &[u8], ours: &(ProxyHeader, usize)) {
    let mut repaired = input[..ours.1].to_vec();
    match ours.0 {
        // 3: LOCAL, whatever the family and address block; ppp agrees once
        // the family is unspecified.
        ProxyHeader::Local => repaired[13] = 0x00,
        // 5 and 6: v1 UNKNOWN whose ignored rest ppp cannot skip: a CR or
        // a LF in it, or more than four words; ppp agrees once the rest is
        // one word.
        ProxyHeader::Unknown if repaired.starts_with(b"PROXY UNKNOWN") => {
            let rest = &mut repaired[b"PROXY UNKNOWN".len()..ours.1 - 2];
            let words = rest.split(|&b| b == b' ').count() - 1;
            let breaks = rest.iter().any(|&b| b == b'\r' || b == b'\n');
            assert!(breaks || words > 4, "ppp refused {input:?}");
            for byte in rest.iter_mut().skip(1) {
                if [b'\r', b'\n', b' '].contains(byte) {
                    *byte = b'_';
                }
            }
        }
        _ => panic!("pgsni read {ours:?}, ppp nothing"),
    }
    assert_eq!(ppp_reading(&repaired), Some(*ours), "once repaired");
}

/// `parse` and `starts_with_header` on their own; see [`proxy_header`].
fn check_proxy_header(input: &[u8]) {
    let whole = proxy_header::parse(input);
    match proxy_header::starts_with_header(input) {
        Some(false) => assert_eq!(whole, Err(ProxyHeaderError::Missing)),
        None => assert_eq!(whole, Ok(None)),
        Some(true) => assert_ne!(whole, Err(ProxyHeaderError::Missing)),
    }
    // Headers are at most 16 + 1024 bytes: every prefix stays cheap.
    for end in 0..input.len().min(16 + MAX_V2_PAYLOAD + 1) {
        match proxy_header::parse(&input[..end]) {
            Ok(None) => {}
            prefix => assert_eq!(prefix, whole, "prefix of {end} bytes"),
        }
    }
    let v2 = input.starts_with(&V2_SIGNATURE);
    let Ok(Some((header, len))) = whole else {
        if whole == Ok(None) {
            assert!(input.len() < if v2 { 16 + MAX_V2_PAYLOAD } else { 107 });
        }
        return;
    };
    let bytes = &input[..len];
    assert_eq!(proxy_header::parse(bytes), whole, "on its own");
    if v2 {
        assert_eq!(
            len,
            16 + usize::from(u16::from_be_bytes([input[14], input[15]]))
        );
        match header {
            ProxyHeader::Local => assert_eq!(input[12], 0x20),
            ProxyHeader::Unknown => assert!(![0x11, 0x21].contains(&input[13])),
            ProxyHeader::Proxy {
                source,
                destination,
            } => {
                let encoded = encode_v2(source, destination);
                assert_eq!(encoded[..14], bytes[..14]);
                assert_eq!(encoded[16..], bytes[16..encoded.len()]);
            }
        }
        return;
    }
    assert!(len <= 107 && bytes.ends_with(b"\r\n"));
    assert!(!bytes[..len - 1].windows(2).any(|w| w == b"\r\n"));
    match header {
        ProxyHeader::Local => panic!("v1 has no LOCAL"),
        ProxyHeader::Unknown => assert!(bytes.starts_with(b"PROXY UNKNOWN")),
        ProxyHeader::Proxy {
            source,
            destination,
        } => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let text = format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
            let reparsed = proxy_header::parse(text.as_bytes());
            assert_eq!(reparsed, Ok(Some((header, text.len()))));
        }
    }
}

// ---------------------------------------------------------------------------
// routes_file and route_lookup
// ---------------------------------------------------------------------------

/// The routes-file parser, and lookups in the tables it builds.
///
/// - Any bytes are refused cleanly, with a line inside the file, or make a
///   table.
/// - Every pattern in a table is in normal form: parsing its text again
///   gives the same pattern.
/// - Looking up the names a file mentions, and names its patterns make,
///   finds what a linear scan of the routes finds; whatever label a wildcard
///   captures, its backends stay `host:port` with the port as written and a
///   host of DNS-name bytes (or a bracketed IPv6 address), or a terminated
///   route's `unix:/absolute/path`.
pub fn routes_file(data: &[u8]) {
    let table = match parse_bytes(data) {
        Ok(table) => table,
        Err(error) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            if let Some(line) = error.line {
                assert!((1..=lines).contains(&line), "line {line} of {lines}");
            }
            assert!(!error.reason.is_empty());
            return;
        }
    };
    assert!(std::str::from_utf8(data).is_ok());

    let mut names = Vec::new();
    for route in table.routes() {
        let pattern = route.pattern();
        assert_eq!(Pattern::parse(&pattern.to_string()).as_ref(), Ok(pattern));
        let base = match pattern {
            Pattern::Exact(name) => name,
            Pattern::Wildcard { suffix } => suffix,
        };
        for label in ["x", "0", "-", "_", &"z".repeat(63)] {
            names.push(format!("{label}.{base}"));
        }
        names.push(base.clone());
    }
    let mentioned = data
        .split(|b| !(b.is_ascii_alphanumeric() || b"-_.".contains(b)))
        .map(|token| String::from_utf8_lossy(token).into_owned());
    names.extend(mentioned.take(64));

    for name in names {
        if let Ok(name) = HostName::parse(name.as_bytes()) {
            check_lookup(&table, &name);
        }
    }
}

/// The server-name matcher against a linear scan of the routes.
///
/// The input's lines but the last are route patterns (those `Pattern`
/// refuses are skipped, repeats must make `RouteTable::new` fail); the last
/// line is a server name as a client sends it. Each route gets one backend
/// that says which route it is, so a lookup is checked down to the
/// expanded address.
pub fn route_lookup(data: &[u8]) {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let query = lines.pop().unwrap_or_default();

    let mut routes: Vec<Route> = Vec::new();
    for line in lines {
        let Ok(Ok(pattern)) = std::str::from_utf8(line).map(Pattern::parse) else {
            continue;
        };
        assert_eq!(Pattern::parse(&pattern.to_string()).as_ref(), Ok(&pattern));
        let route = numbered_route(pattern.clone(), routes.len());
        if routes.iter().any(|r| r.pattern() == &pattern) {
            let repeated = [&routes[..], &[route]].concat();
            assert!(RouteTable::new(repeated).is_err(), "{pattern} twice");
            continue;
        }
        routes.push(route);
    }
    let table = RouteTable::new(routes).expect("no pattern twice");

    check_host_name(query);
    let Ok(name) = HostName::parse(query) else {
        return;
    };
    check_lookup(&table, &name);
    let expected = model_lookup(&table, &name).map(|index| match table.routes()[index].pattern() {
        Pattern::Exact(_) => format!("exact-{index}.backend:5432"),
        Pattern::Wildcard { .. } => format!("{}.w-{index}.backend:5432", name.first_label()),
    });
    let resolved = table.lookup(&name).map(|resolved| {
        resolved
            .backends
            .iter()
            .map(|backend| backend.as_str().to_owned())
            .collect::<Vec<_>>()
    });
    assert_eq!(resolved, expected.map(|address| vec![address]));
}

/// A route whose one backend names its `index`.
fn numbered_route(pattern: Pattern, index: usize) -> Route {
    let (backend, wildcard) = match pattern {
        Pattern::Exact(_) => (format!("exact-{index}.backend:5432"), false),
        Pattern::Wildcard { .. } => (format!("{{1}}.w-{index}.backend:5432"), true),
    };
    let backend = BackendTemplate::parse(&backend, wildcard).expect("a valid template");
    Route::new(pattern, vec![backend]).expect("one backend")
}

/// Which route a linear scan picks for `name`: an exact pattern equal to
/// the name, else a wildcard whose suffix is everything after the first
/// label.
fn model_lookup(table: &RouteTable, name: &HostName) -> Option<usize> {
    let routes = table.routes();
    let exact = routes.iter().position(
        |route| matches!(route.pattern(), Pattern::Exact(exact) if exact == name.as_str()),
    );
    exact.or_else(|| {
        let (_, parent) = name.as_str().split_once('.')?;
        routes.iter().position(
            |route| matches!(route.pattern(), Pattern::Wildcard { suffix } if suffix == parent),
        )
    })
}

/// Checks `table.lookup(name)` against [`model_lookup`], and every address
/// it resolves to.
fn check_lookup(table: &RouteTable, name: &HostName) {
    let resolved = table.lookup(name);
    let expected =
        model_lookup(table, name).map(|index| table.routes()[index].pattern().to_string());
    assert_eq!(
        resolved.as_ref().map(|resolved| &*resolved.route),
        expected.as_deref(),
        "route for {name}"
    );
    for address in resolved.iter().flat_map(|resolved| &resolved.backends) {
        let address = address.as_str();
        // A terminated route's unix socket: an absolute path that fits a
        // socket address, whatever label a wildcard captured.
        if let Some(path) = address.strip_prefix("unix:") {
            assert!(path.starts_with('/') && path.len() <= 107, "{address}");
            continue;
        }
        let (host, port) = address.rsplit_once(':').expect("host:port");
        assert!(port.parse::<u16>().is_ok_and(|port| port != 0), "{address}");
        match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => assert!(v6.parse::<Ipv6Addr>().is_ok(), "{address}"),
            None => assert!(
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{name} expands to {address}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Server names
// ---------------------------------------------------------------------------

/// `HostName::parse` on raw bytes: what it accepts is the lowercase of the
/// raw name less one trailing dot, made of valid labels, and a fixed point;
/// what it refuses it refuses in any letter case.
fn check_host_name(raw: &[u8]) {
    let lower = raw.to_ascii_lowercase();
    match HostName::parse(raw) {
        Ok(name) => {
            assert_eq!(name.as_bytes(), lower.strip_suffix(b".").unwrap_or(&lower));
            assert!(name.labels().all(|label| is_valid_label(label.as_bytes())));
            assert_eq!(HostName::parse(name.as_bytes()).as_ref(), Ok(&name));
            assert_eq!(HostName::parse(&lower).as_ref(), Ok(&name));
            let rejoined = match name.parent() {
                Some(parent) => format!("{}.{parent}", name.first_label()),
                None => name.first_label().to_owned(),
            };
            assert_eq!(rejoined, name.as_str());
        }
        Err(error) => assert_eq!(HostName::parse(&lower), Err(error)),
    }
}
