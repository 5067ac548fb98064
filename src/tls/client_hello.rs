//! Finding and reading the ClientHello, without decrypting anything.
//!
//! # Input
//!
//! The bytes a client sent after the Postgres `S` reply (or from its very
//! first byte, for direct TLS): TLS records of content type `handshake`,
//! arriving in whatever pieces TCP delivers them, possibly followed by more
//! records that pgsni does not read. A ClientHello usually sits in one record,
//! but RFC 8446 §5.1 lets a client split it over several, down to one byte per
//! record, and some anti-censorship clients do exactly that.
//!
//! # Two steps
//!
//! 1. [`locate`] walks the record layer over whatever has been buffered and
//!    says whether a whole ClientHello has arrived yet. It never copies.
//! 2. [`ClientHello::parse`] reads the handshake message. When the message is
//!    inside one record, it is parsed where it lies in the input; when it is
//!    spread over several, [`Fragments::reassemble`] first copies the pieces
//!    into a buffer the caller provides.
//!
//! [`read_client_hello`] does both, for callers that do not care which case
//! they are in. Nothing in this module allocates, panics or uses `unsafe`.
//!
//! # Exactness
//!
//! [`locate`] is meant to be called again each time more bytes arrive, and
//! its answer for a prefix never contradicts its answer for the whole:
//!
//! - for every prefix of a valid input it answers [`Located::Incomplete`];
//! - it fails as soon as the bytes received prove the record layer cannot
//!   carry a ClientHello (wrong content type or record version, an empty or
//!   oversized record, another record type interleaved, a handshake type
//!   other than ClientHello, a declared length too short for a ClientHello);
//! - it fails with [`HelloError::TooLarge`] as soon as the records needed are
//!   bound to exceed [`MAX_CLIENT_HELLO_BYTES`], so a caller that stops
//!   reading at that many bytes never waits for nothing;
//! - once it has answered, more input changes nothing: an error stays the
//!   same error, a located hello stays the same hello.
//!
//! Errors inside the message body (a bad extension, say) are reported by
//! [`ClientHello::parse`] once the whole message is there: the cap bounds how
//! long that can take.
//!
//! # Relation to rustls
//!
//! rustls serves as the oracle in tests and in the `client_hello_rustls`
//! fuzz target: whenever `rustls::server::Acceptor` accepts a ClientHello
//! that fits under the cap, this module accepts it too and reports the same
//! server name and ALPN protocols. The deliberate differences:
//!
//! - The record layer is stricter. Records longer than 2^14 bytes are refused
//!   (RFC 8446 §5.1; rustls tolerates up to 2^14 + 2047), and so is a hello
//!   needing more than [`MAX_CLIENT_HELLO_BYTES`] of records (rustls accepts
//!   handshake messages up to 64 KiB).
//! - The message body is looser. Only the fields needed to find the
//!   extensions, and the server_name and ALPN extensions themselves, are
//!   checked; rustls also parses key shares, PSK offers and the rest,
//!   requires null compression and signature_algorithms, and refuses a
//!   handshake message after the hello in the same flight. The backend's TLS
//!   stack sees the same bytes and judges them.
//! - The `host_name` is handed out raw, and judged by [`HostName::parse`]
//!   afterwards. rustls refuses names that are not DNS names, except that it
//!   ignores IP addresses; `HostName` accepts a dotted-quad address as a name
//!   (no route will match it), refuses an IPv6 address, and refuses
//!   everything else rustls refuses, save three kinds of name no route is
//!   likely to hold: labels that start or end with a hyphen, a last label
//!   that is a number (`db.123`, `db.0x1f`), and a 253-byte name sent with
//!   its trailing dot.
//! - Bytes that follow the ClientHello inside its last record are ignored and
//!   left to the backend to refuse.
//!
//! [`HostName::parse`]: super::server_name::HostName::parse

use super::alert::AlertDescription;

/// The most bytes of input pgsni buffers while waiting for a ClientHello,
/// record headers included.
///
/// Typical hellos are 200 to 600 bytes; a post-quantum key share brings them
/// to 1.5 to 2 KiB (libpq 18 with OpenSSL 3.5 sends 1577 bytes). Beyond this,
/// [`locate`] fails with [`HelloError::TooLarge`].
pub const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;

/// `ContentType handshake` (RFC 8446 §5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// Content type (1), legacy record version (2), fragment length (2).
const RECORD_HEADER_LEN: usize = 5;
/// The longest plaintext fragment a record may carry: 2^14 bytes.
const MAX_FRAGMENT_LEN: usize = 1 << 14;

/// `HandshakeType client_hello` (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Handshake type (1) and body length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The smallest possible ClientHello message, header included: version (2),
/// random (32), an empty session id (1), one cipher suite (2 + 2), one
/// compression method (1 + 1), and no extensions.
const MIN_MESSAGE_LEN: usize = HANDSHAKE_HEADER_LEN + 2 + 32 + 1 + 2 + 2 + 1 + 1;

/// The longest legacy session id (RFC 8446 §4.1.2).
const MAX_SESSION_ID_LEN: u8 = 32;

/// `server_name` (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// `application_layer_protocol_negotiation` (RFC 7301 §3.1).
const EXT_ALPN: u16 = 16;
/// `encrypted_client_hello` (draft-ietf-tls-esni).
const EXT_ECH: u16 = 0xfe0d;
/// `NameType host_name` (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0;

/// Why the bytes a client sent are not an acceptable ClientHello.
///
/// Each variant names the first problem found; [`HelloError::alert`] gives
/// the alert to send and [`HelloError::reason`] a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HelloError {
    /// The first record is not a handshake record: the client is not speaking
    /// TLS (or speaks SSL 2).
    #[error("first record is not a TLS handshake record")]
    NotHandshake,
    /// A record's legacy version is not `3.x`.
    #[error("record has an unknown protocol version")]
    BadRecordVersion,
    /// A record has an empty fragment, which RFC 8446 §5.1 forbids for
    /// handshake records.
    #[error("empty handshake record")]
    EmptyRecord,
    /// A record is longer than 2^14 bytes (RFC 8446 §5.1).
    #[error("record longer than 2^14 bytes")]
    RecordOverflow,
    /// The records carrying the ClientHello would exceed
    /// [`MAX_CLIENT_HELLO_BYTES`].
    #[error("ClientHello exceeds {MAX_CLIENT_HELLO_BYTES} bytes")]
    TooLarge,
    /// A record other than a handshake record arrived before the ClientHello
    /// was complete.
    #[error("non-handshake record interleaved with the ClientHello")]
    UnexpectedRecord,
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    /// The message ends before a field it declares, or is too short to hold
    /// the mandatory fields at all.
    #[error("ClientHello is truncated")]
    Truncated,
    /// Bytes are left over after a structure whose length is fixed by its
    /// container: after the message body, or after the extensions.
    #[error("trailing bytes in ClientHello")]
    TrailingData,
    /// The legacy session id is longer than 32 bytes.
    #[error("ClientHello session id longer than 32 bytes")]
    BadSessionId,
    /// The cipher suite list is empty or has an odd length.
    #[error("ClientHello cipher suite list is empty or malformed")]
    BadCipherSuites,
    /// The compression method list is empty.
    #[error("ClientHello offers no compression method")]
    BadCompressionMethods,
    /// Two extensions have the same type (RFC 8446 §4.2).
    #[error("ClientHello repeats an extension")]
    DuplicateExtension,
    /// The server_name extension is malformed: an empty name list, an empty
    /// host name, more than one host name, or lengths that do not add up.
    #[error("malformed server_name extension")]
    BadServerName,
    /// The server_name extension lists no `host_name`, only names of other
    /// types, which no RFC defines.
    #[error("server_name extension names no host")]
    NoHostName,
    /// The ALPN extension is malformed: an empty protocol list, an empty
    /// protocol name, or lengths that do not add up.
    #[error("malformed ALPN extension")]
    BadAlpn,
}

impl HelloError {
    /// The alert to send the client before closing the connection.
    pub const fn alert(self) -> AlertDescription {
        match self {
            Self::NotHandshake | Self::UnexpectedRecord | Self::NotClientHello => {
                AlertDescription::UnexpectedMessage
            }
            Self::RecordOverflow | Self::TooLarge => AlertDescription::RecordOverflow,
            // As rustls does; the RFCs name no alert for either.
            Self::DuplicateExtension | Self::NoHostName => AlertDescription::IllegalParameter,
            Self::BadRecordVersion
            | Self::EmptyRecord
            | Self::Truncated
            | Self::TrailingData
            | Self::BadSessionId
            | Self::BadCipherSuites
            | Self::BadCompressionMethods
            | Self::BadServerName
            | Self::BadAlpn => AlertDescription::DecodeError,
        }
    }

    /// A short, fixed, `snake_case` description for logs and metric labels.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::NotHandshake => "not_handshake",
            Self::BadRecordVersion => "bad_record_version",
            Self::EmptyRecord => "empty_record",
            Self::RecordOverflow => "record_overflow",
            Self::TooLarge => "too_large",
            Self::UnexpectedRecord => "unexpected_record",
            Self::NotClientHello => "not_client_hello",
            Self::Truncated => "truncated",
            Self::TrailingData => "trailing_data",
            Self::BadSessionId => "bad_session_id",
            Self::BadCipherSuites => "bad_cipher_suites",
            Self::BadCompressionMethods => "bad_compression_methods",
            Self::DuplicateExtension => "duplicate_extension",
            Self::BadServerName => "bad_server_name",
            Self::NoHostName => "no_host_name",
            Self::BadAlpn => "bad_alpn",
        }
    }
}

/// Reads a ClientHello from the bytes buffered so far.
///
/// Returns `Ok(None)` while more bytes are needed, the parsed hello once its
/// last record has arrived, or the first error found. `scratch` is used only
/// when the hello spans several records: it is cleared and filled with the
/// reassembled message, which the returned hello then borrows. It is the
/// caller's `Vec` so that any allocation happens there, once per connection
/// at most, and only for fragmented hellos.
///
/// How many bytes of `input` the hello occupied is available from
/// [`locate`], which this calls.
pub fn read_client_hello<'a>(
    input: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> Result<Option<ClientHello<'a>>, HelloError> {
    let message = match locate(input)? {
        Located::Incomplete => return Ok(None),
        Located::Contiguous { message, .. } => message,
        Located::Fragmented(fragments) => {
            scratch.clear();
            scratch.reserve(fragments.message_len());
            fragments.for_each_piece(|piece| scratch.extend_from_slice(piece));
            scratch
        }
    };
    ClientHello::parse(message).map(Some)
}

/// Where the ClientHello is in the input, as far as [`locate`] can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located<'a> {
    /// No error so far, but the ClientHello is not complete yet.
    Incomplete,
    /// The whole handshake message is inside the first record.
    Contiguous {
        /// The handshake message, header included, ready for
        /// [`ClientHello::parse`].
        message: &'a [u8],
        /// How many bytes of input the record carrying it occupies.
        consumed: usize,
    },
    /// The handshake message spans several records and must be reassembled.
    Fragmented(Fragments<'a>),
}

impl Located<'_> {
    /// How many bytes of input the records carrying the ClientHello occupy,
    /// through the end of the record that completes it; `None` while
    /// incomplete.
    pub fn consumed(&self) -> Option<usize> {
        match self {
            Self::Incomplete => None,
            Self::Contiguous { consumed, .. } => Some(*consumed),
            Self::Fragmented(fragments) => Some(fragments.consumed()),
        }
    }
}

/// A ClientHello spread over several records, as found by [`locate`].
///
/// Only [`locate`] makes these, after checking every record header, so
/// reassembly cannot fail for want of well-formed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragments<'a> {
    /// The records carrying the message, from the first through the one
    /// completing it.
    records: &'a [u8],
    /// Length of the handshake message, header included.
    message_len: usize,
}

impl Fragments<'_> {
    /// How many bytes of input the records carrying the ClientHello occupy.
    pub fn consumed(&self) -> usize {
        self.records.len()
    }

    /// The length of the reassembled handshake message, header included.
    /// Never more than [`MAX_CLIENT_HELLO_BYTES`].
    pub fn message_len(&self) -> usize {
        self.message_len
    }

    /// Copies the handshake message out of its records into the start of
    /// `out` and returns it, ready for [`ClientHello::parse`].
    ///
    /// Returns `None` if `out` is shorter than [`Fragments::message_len`]; a
    /// buffer of [`MAX_CLIENT_HELLO_BYTES`] is always long enough.
    pub fn reassemble<'b>(&self, out: &'b mut [u8]) -> Option<&'b [u8]> {
        let out = out.get_mut(..self.message_len)?;
        let mut unfilled = &mut *out;
        self.for_each_piece(|piece| {
            if let Some((dst, rest)) =
                std::mem::take(&mut unfilled).split_at_mut_checked(piece.len())
            {
                dst.copy_from_slice(piece);
                unfilled = rest;
            }
        });
        Some(out)
    }

    /// Calls `f` with the message bytes in order: each record's fragment, the
    /// last one cut where the message ends.
    fn for_each_piece(&self, mut f: impl FnMut(&[u8])) {
        let mut records = self.records;
        let mut missing = self.message_len;
        while missing > 0 {
            let Some(([.., hi, lo], rest)) = records.split_first_chunk::<RECORD_HEADER_LEN>()
            else {
                return;
            };
            let Some((fragment, rest)) = rest.split_at_checked(record_len(*hi, *lo)) else {
                return;
            };
            let piece = fragment.get(..missing).unwrap_or(fragment);
            f(piece);
            missing = missing.saturating_sub(piece.len());
            records = rest;
        }
    }
}

/// Finds the ClientHello in the bytes buffered so far.
///
/// `input` starts at the first byte of the first TLS record. See the
/// [module documentation](self) for what counts as an error and for the
/// guarantee that an answer for a prefix never contradicts the answer for the
/// whole. The walk is linear in the number of records and touches only
/// record headers and the first four bytes of the message.
pub fn locate(input: &[u8]) -> Result<Located<'_>, HelloError> {
    let mut header = MessageHeader::default();
    // Bytes of input in complete records walked so far, and message bytes
    // they carry.
    let mut consumed: usize = 0;
    let mut carried: usize = 0;
    let mut rest = input;
    loop {
        let first = consumed == 0;
        let Some((record_header, after)) = rest.split_first_chunk() else {
            check_record_header_prefix(rest, first)?;
            return Ok(Located::Incomplete);
        };
        let fragment_len = check_record_header(*record_header, first)?;
        // Saturating: anything near usize::MAX is over the cap anyway.
        let record_end = consumed
            .saturating_add(RECORD_HEADER_LEN)
            .saturating_add(fragment_len);
        if record_end > MAX_CLIENT_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        let (fragment, tail) = match after.split_at_checked(fragment_len) {
            Some((fragment, tail)) => (fragment, Some(tail)),
            None => (after, None),
        };

        header.fill(fragment);
        let carried_through_here = carried.saturating_add(fragment_len);
        let message_len = header.check(carried_through_here, record_end)?;
        if let Some(message_len) = message_len.filter(|&len| len <= carried_through_here) {
            // The message ends in this record: done once the record is.
            let Some(records) = input.get(..record_end) else {
                return Ok(Located::Incomplete);
            };
            return Ok(match fragment.get(..message_len) {
                Some(message) if first => Located::Contiguous {
                    message,
                    consumed: record_end,
                },
                _ => Located::Fragmented(Fragments {
                    records,
                    message_len,
                }),
            });
        }

        let Some(tail) = tail else {
            return Ok(Located::Incomplete);
        };
        rest = tail;
        consumed = record_end;
        carried = carried_through_here;
    }
}

/// Checks the bytes of a record header that have arrived so far, which may
/// be none or all of them.
fn check_record_header_prefix(prefix: &[u8], first: bool) -> Result<(), HelloError> {
    if let Some(&content_type) = prefix.first() {
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return Err(if first {
                HelloError::NotHandshake
            } else {
                HelloError::UnexpectedRecord
            });
        }
    }
    // Like rustls, accept any 3.x: clients put 3.1 here for compatibility with
    // old middleboxes, and SSL 3.0 stacks put 3.0.
    match prefix.get(1) {
        Some(&major) if major != 3 => Err(HelloError::BadRecordVersion),
        _ => Ok(()),
    }
}

/// Checks a complete record header and returns its fragment length.
fn check_record_header(header: [u8; RECORD_HEADER_LEN], first: bool) -> Result<usize, HelloError> {
    check_record_header_prefix(&header, first)?;
    let [_, _, _, hi, lo] = header;
    match record_len(hi, lo) {
        0 => Err(HelloError::EmptyRecord),
        len if len > MAX_FRAGMENT_LEN => Err(HelloError::RecordOverflow),
        len => Ok(len),
    }
}

fn record_len(hi: u8, lo: u8) -> usize {
    usize::from(u16::from_be_bytes([hi, lo]))
}

/// The handshake header at the start of the message, as much of it as the
/// records have delivered so far. It may itself be split across records.
#[derive(Debug, Default)]
struct MessageHeader {
    bytes: [u8; HANDSHAKE_HEADER_LEN],
    filled: usize,
}

impl MessageHeader {
    /// Takes as many header bytes from the start of `fragment` as are
    /// still missing.
    fn fill(&mut self, fragment: &[u8]) {
        let missing = self.bytes.get_mut(self.filled..).unwrap_or_default();
        for (slot, &byte) in missing.iter_mut().zip(fragment) {
            *slot = byte;
        }
        self.filled = self
            .filled
            .saturating_add(fragment.len())
            .min(HANDSHAKE_HEADER_LEN);
    }

    /// Checks the header bytes seen so far and returns the message length,
    /// header included, once all of them are known.
    ///
    /// The records walked so far, the current one included, carry `carried`
    /// message bytes and end at `input_len` once complete. Errors are only
    /// reported when every possible value of the missing bytes leads to the
    /// same error, which keeps a prefix's answer consistent with the whole's.
    fn check(&self, carried: usize, input_len: usize) -> Result<Option<usize>, HelloError> {
        if self.filled == 0 {
            return Ok(None);
        }
        let [msg_type, length @ ..] = self.bytes;
        if msg_type != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello);
        }

        // Bound the length by filling the missing bytes with 0x00 and 0xff.
        let known = self.filled.saturating_sub(1);
        let (mut low, mut high) = ([0x00; 3], [0xff; 3]);
        for ((low, high), byte) in low.iter_mut().zip(&mut high).zip(length).take(known) {
            (*low, *high) = (byte, byte);
        }
        let shortest = u24(low).saturating_add(HANDSHAKE_HEADER_LEN);
        let longest = u24(high).saturating_add(HANDSHAKE_HEADER_LEN);

        if longest < MIN_MESSAGE_LEN {
            return Err(HelloError::Truncated);
        }
        // The input needed grows with the length, so if the shortest
        // possible message cannot fit, none can.
        if shortest >= MIN_MESSAGE_LEN
            && min_input_len(shortest, carried, input_len) > MAX_CLIENT_HELLO_BYTES
        {
            return Err(HelloError::TooLarge);
        }
        Ok((shortest == longest).then_some(shortest))
    }
}

/// The least input a message of `message_len` bytes can take, given that
/// records ending at `input_len` carry its first `carried` bytes: the rest
/// needs at least one more record header.
fn min_input_len(message_len: usize, carried: usize, input_len: usize) -> usize {
    match message_len.saturating_sub(carried) {
        0 => input_len,
        missing => input_len
            .saturating_add(RECORD_HEADER_LEN)
            .saturating_add(missing),
    }
}

fn u24([a, b, c]: [u8; 3]) -> usize {
    usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)
}

/// What pgsni needs from a ClientHello, borrowed from the message bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    legacy_version: u16,
    server_name: Option<&'a [u8]>,
    /// The validated `protocol_name_list`.
    alpn: Option<&'a [u8]>,
    offers_ech: bool,
}

impl<'a> ClientHello<'a> {
    /// Parses one complete ClientHello handshake message, 4-byte handshake
    /// header included, as [`locate`] or [`Fragments::reassemble`] return it.
    ///
    /// The fixed fields are checked as strictly as needed to find the
    /// extensions: legacy version, random, a session id of at most 32 bytes,
    /// a non-empty even-length cipher suite list, a non-empty compression
    /// method list, then either nothing or an extensions block whose length
    /// matches the bytes left. Among the extensions, duplicates are refused
    /// and server_name and ALPN are checked in full; the others (GREASE
    /// included) are skipped unread. `message` must hold exactly one message.
    pub fn parse(message: &'a [u8]) -> Result<Self, HelloError> {
        let mut r = Reader::new(message);
        if r.u8().ok_or(HelloError::Truncated)? != HANDSHAKE_CLIENT_HELLO {
            return Err(HelloError::NotClientHello);
        }
        let body = r
            .u24()
            .and_then(|len| r.take(len))
            .ok_or(HelloError::Truncated)?;
        if !r.is_empty() {
            return Err(HelloError::TrailingData);
        }
        Self::parse_body(Reader::new(body))
    }

    fn parse_body(mut r: Reader<'a>) -> Result<Self, HelloError> {
        let legacy_version = r.u16().ok_or(HelloError::Truncated)?;
        let _random = r.array::<32>().ok_or(HelloError::Truncated)?;

        let session_id_len = r.u8().ok_or(HelloError::Truncated)?;
        if session_id_len > MAX_SESSION_ID_LEN {
            return Err(HelloError::BadSessionId);
        }
        r.take(usize::from(session_id_len))
            .ok_or(HelloError::Truncated)?;

        let cipher_suites = r.prefixed_u16().ok_or(HelloError::Truncated)?;
        if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
            return Err(HelloError::BadCipherSuites);
        }
        let compression_methods = r.prefixed_u8().ok_or(HelloError::Truncated)?;
        if compression_methods.is_empty() {
            return Err(HelloError::BadCompressionMethods);
        }

        let mut hello = Self {
            legacy_version,
            server_name: None,
            alpn: None,
            offers_ech: false,
        };
        // RFC 5246 §7.4.1.2: a hello without extensions simply ends here.
        if r.is_empty() {
            return Ok(hello);
        }
        let extensions = r.prefixed_u16().ok_or(HelloError::Truncated)?;
        if !r.is_empty() {
            return Err(HelloError::TrailingData);
        }
        hello.read_extensions(Reader::new(extensions))?;
        Ok(hello)
    }

    fn read_extensions(&mut self, mut r: Reader<'a>) -> Result<(), HelloError> {
        let mut seen = ExtensionSet::new();
        while !r.is_empty() {
            let ext_type = r.u16().ok_or(HelloError::Truncated)?;
            let body = r.prefixed_u16().ok_or(HelloError::Truncated)?;
            if !seen.insert(ext_type) {
                return Err(HelloError::DuplicateExtension);
            }
            match ext_type {
                EXT_SERVER_NAME => self.server_name = Some(parse_server_name(body)?),
                EXT_ALPN => self.alpn = Some(parse_alpn(body)?),
                // An outer ECH hello carries the public name in server_name,
                // which is all a router may know; the rest is for the backend.
                EXT_ECH => self.offers_ech = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// The `legacy_version` field: `0x0303` (TLS 1.2) for any modern client,
    /// TLS 1.3 included, which announces itself in `supported_versions`.
    pub fn legacy_version(&self) -> u16 {
        self.legacy_version
    }

    /// The SNI `host_name`, exactly as sent: not validated, not normalised.
    ///
    /// `None` if the client sent no server_name extension. Pass the bytes to
    /// [`HostName::parse`] before trusting them.
    ///
    /// [`HostName::parse`]: super::server_name::HostName::parse
    pub fn server_name(&self) -> Option<&'a [u8]> {
        self.server_name
    }

    /// Whether the client sent an ALPN extension at all.
    pub fn has_alpn(&self) -> bool {
        self.alpn.is_some()
    }

    /// The ALPN protocol names offered, in the client's order of preference;
    /// empty if there was no ALPN extension.
    pub fn alpn_protocols(&self) -> Protocols<'a> {
        Protocols {
            list: self.alpn.unwrap_or_default(),
        }
    }

    /// Whether `protocol` is among the ALPN protocols offered.
    pub fn offers_alpn(&self, protocol: &[u8]) -> bool {
        self.alpn_protocols().any(|offered| offered == protocol)
    }

    /// Whether this is an ECH outer hello (draft-ietf-tls-esni): its server
    /// name is then the public name, and the name the client really wants is
    /// encrypted.
    pub fn offers_ech(&self) -> bool {
        self.offers_ech
    }
}

/// Reads the body of a server_name extension (RFC 6066 §3) and returns the
/// `host_name`:
///
/// ```text
/// struct { NameType name_type; opaque HostName<1..2^16-1>; } ServerName;
/// struct { ServerName server_name_list<1..2^16-1> } ServerNameList;
/// ```
///
/// The list must not be empty, a `host_name` must not be empty, and there
/// must be exactly one (RFC 6066 forbids two names of one type). Other name
/// types are undefined, so nothing says how long their entries are: like
/// rustls, stop reading the list at the first one, keep the `host_name` seen
/// before it, and refuse the hello if there was none.
fn parse_server_name(body: &[u8]) -> Result<&[u8], HelloError> {
    let mut body = Reader::new(body);
    let list = body.prefixed_u16().ok_or(HelloError::BadServerName)?;
    if list.is_empty() || !body.is_empty() {
        return Err(HelloError::BadServerName);
    }

    let mut list = Reader::new(list);
    let mut host_name = None;
    while let Some(name_type) = list.u8() {
        if name_type != NAME_TYPE_HOST_NAME {
            break;
        }
        let name = list.prefixed_u16().ok_or(HelloError::BadServerName)?;
        if name.is_empty() || host_name.is_some() {
            return Err(HelloError::BadServerName);
        }
        host_name = Some(name);
    }
    host_name.ok_or(HelloError::NoHostName)
}

/// Reads the body of an ALPN extension (RFC 7301 §3.1) and returns the
/// validated `protocol_name_list`:
///
/// ```text
/// opaque ProtocolName<1..2^8-1>;
/// struct { ProtocolName protocol_name_list<2..2^16-1> } ProtocolNameList;
/// ```
fn parse_alpn(body: &[u8]) -> Result<&[u8], HelloError> {
    let mut body = Reader::new(body);
    let list = body.prefixed_u16().ok_or(HelloError::BadAlpn)?;
    if list.is_empty() || !body.is_empty() {
        return Err(HelloError::BadAlpn);
    }
    let mut names = Reader::new(list);
    while !names.is_empty() {
        match names.prefixed_u8() {
            Some(name) if !name.is_empty() => {}
            _ => return Err(HelloError::BadAlpn),
        }
    }
    Ok(list)
}

/// The ALPN protocol names a client offers, in its order of preference.
///
/// Iterating yields each name's bytes. The list was validated when the hello
/// was parsed, so every name is non-empty.
#[derive(Debug, Clone, Default)]
pub struct Protocols<'a> {
    /// The rest of a validated `protocol_name_list`.
    list: &'a [u8],
}

impl<'a> Iterator for Protocols<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut r = Reader::new(self.list);
        let name = r.prefixed_u8()?;
        self.list = r.rest;
        Some(name)
    }
}

impl std::iter::FusedIterator for Protocols<'_> {}

/// The extension types seen so far in one hello, to refuse duplicates
/// without allocating (rustls uses a `BTreeSet`).
///
/// Real hellos carry a dozen or two extensions, which a short list handles
/// best, behind a 256-bit filter of hashed types so that a new type is
/// usually known new without scanning the list. But the count is the
/// client's to choose (16 KiB has room for 4,000 empty extensions), so past
/// [`FEW_EXTENSIONS`] the set turns into a bitmap over all 2^16 types,
/// keeping the work linear. The bitmap's 8 KiB of stack are reserved either
/// way but only cleared when needed, which is most of the saving.
#[allow(clippy::large_enum_variant)] // On the stack on purpose: never moved.
enum ExtensionSet {
    Few {
        types: [u16; FEW_EXTENSIONS],
        len: usize,
        /// One bit per hash of the types in `types`: a clear bit proves a
        /// type new.
        filter: Filter,
    },
    Many(Bitmap),
}

const FEW_EXTENSIONS: usize = 32;

/// One bit for each of the 2^16 extension types.
type Bitmap = [u64; 1024];

/// 256 bits, for hashes of extension types.
type Filter = [u64; 4];

impl ExtensionSet {
    fn new() -> Self {
        Self::Few {
            types: [0; FEW_EXTENSIONS],
            len: 0,
            filter: [0; 4],
        }
    }

    /// Adds `ext_type`, returning whether it was new.
    fn insert(&mut self, ext_type: u16) -> bool {
        match self {
            Self::Few { types, len, filter } => {
                // Fibonacci hashing: the top 8 bits of the product spread
                // neighbouring and GREASE types over the 256 bits.
                let hash = ext_type.wrapping_mul(0x9e37) >> 8;
                let bit = 1 << (hash % 64);
                // `hash / 64` is always below the filter's 4 words.
                let Some(word) = filter.get_mut(usize::from(hash / 64)) else {
                    return false;
                };
                if *word & bit != 0 && types.get(..*len).unwrap_or_default().contains(&ext_type) {
                    return false;
                }
                if let Some(slot) = types.get_mut(*len) {
                    *slot = ext_type;
                    *len = len.saturating_add(1);
                    *word |= bit;
                    return true;
                }
                let mut bitmap: Bitmap = [0; 1024];
                for &seen in types.iter() {
                    set_bit(&mut bitmap, seen);
                }
                let new = set_bit(&mut bitmap, ext_type);
                *self = Self::Many(bitmap);
                new
            }
            Self::Many(bitmap) => set_bit(bitmap, ext_type),
        }
    }
}

/// Sets the bit for `ext_type`, returning whether it was clear.
fn set_bit(bitmap: &mut Bitmap, ext_type: u16) -> bool {
    let bit = 1 << (ext_type % 64);
    // `ext_type / 64` is always below the bitmap's 1024 words.
    let Some(word) = bitmap.get_mut(usize::from(ext_type / 64)) else {
        return false;
    };
    let new = *word & bit == 0;
    *word |= bit;
    new
}

/// A cursor over TLS wire data in the manner of rustls's `codec::Reader`:
/// every read is checked, and running out of bytes is a `None`, never a
/// panic.
#[derive(Debug, Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (taken, rest) = self.rest.split_first_chunk()?;
        self.rest = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&byte, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(byte)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().copied().map(u16::from_be_bytes)
    }

    fn u24(&mut self) -> Option<usize> {
        self.array().copied().map(u24)
    }

    /// A `<0..2^8-1>` vector: a one-byte length, then that many bytes.
    fn prefixed_u8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A `<0..2^16-1>` vector: a two-byte length, then that many bytes.
    fn prefixed_u16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
#[path = "client_hello_test.rs"]
mod tests;
