//! Test helpers for the `tls` module: genuine ClientHellos from rustls, ways
//! to re-split them into records, a builder for hand-made hellos, and the
//! rustls `Acceptor` as an oracle.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

/// The name the test clients ask for.
pub(crate) const SERVER_NAME: &str = "alpha.db.example.com";
/// The ALPN protocol Postgres clients offer for direct TLS.
pub(crate) const POSTGRESQL: &[u8] = b"postgresql";

const CONTENT_TYPE_HANDSHAKE: u8 = 22;

/// A root store trusting one freshly made self-signed certificate, so the
/// client config is realistic. Made once per test binary.
fn roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let ca = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).unwrap();
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            Arc::new(roots)
        })
        .clone()
}

/// A rustls client config offering `alpn` and the given protocol versions.
pub(crate) fn client_config(
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots())
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The first flight of a rustls client connecting to `server_name`: a
/// single handshake record carrying its ClientHello.
pub(crate) fn rustls_hello_with(config: Arc<ClientConfig>, server_name: &str) -> Vec<u8> {
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut client = ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// [`rustls_hello_with`] for TLS 1.2 and 1.3 and the given ALPN protocols.
pub(crate) fn rustls_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    rustls_hello_with(client_config(alpn, rustls::ALL_VERSIONS), server_name)
}

/// The concatenated fragments of the records in `records`: for a client's
/// first flight, the ClientHello message.
pub(crate) fn handshake_message(mut records: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    while let [_, _, _, hi, lo, rest @ ..] = records {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (fragment, rest) = rest.split_at(len);
        message.extend_from_slice(fragment);
        records = rest;
    }
    assert!(records.is_empty(), "partial record");
    message
}

/// One record of `content_type` carrying `fragment`, TLS 1.0 record version
/// as clients use for their first flight.
pub(crate) fn record(content_type: u8, fragment: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 0x03, 0x01];
    out.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
    out.extend_from_slice(fragment);
    out
}

/// `message` framed as handshake records whose fragments have the given
/// lengths, then one more record for whatever is left.
pub(crate) fn records_split_at(message: &[u8], lengths: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = message;
    for &len in lengths {
        let (fragment, tail) = rest.split_at(len);
        out.extend(record(CONTENT_TYPE_HANDSHAKE, fragment));
        rest = tail;
    }
    if !rest.is_empty() {
        out.extend(record(CONTENT_TYPE_HANDSHAKE, rest));
    }
    out
}

/// `message` framed as handshake records of `chunk` bytes each (the last
/// may be shorter).
pub(crate) fn records_of(message: &[u8], chunk: usize) -> Vec<u8> {
    message
        .chunks(chunk)
        .flat_map(|fragment| record(CONTENT_TYPE_HANDSHAKE, fragment))
        .collect()
}

/// What rustls's server-side `Acceptor` makes of some input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Oracle {
    /// It wants more bytes.
    Incomplete,
    /// It refused the input.
    Rejected,
    /// It accepted a ClientHello with this server name and ALPN offer.
    Accepted {
        server_name: Option<String>,
        alpn: Option<Vec<Vec<u8>>>,
    },
}

/// Feeds `input` to a fresh `rustls::server::Acceptor`.
pub(crate) fn rustls_accept(mut input: &[u8]) -> Oracle {
    let mut acceptor = rustls::server::Acceptor::default();
    while !input.is_empty() {
        match acceptor.read_tls(&mut input as &mut dyn Read) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Oracle::Rejected,
        }
    }
    match acceptor.accept() {
        Ok(None) => Oracle::Incomplete,
        Err(_) => Oracle::Rejected,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Oracle::Accepted {
                server_name: hello.server_name().map(str::to_owned),
                alpn: hello
                    .alpn()
                    .map(|protocols| protocols.map(<[u8]>::to_vec).collect()),
            }
        }
    }
}

/// `bytes` behind a big-endian u16 length.
pub(crate) fn u16_prefixed(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// The body of a server_name extension listing `(name_type, name)` entries.
pub(crate) fn sni_body(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name_type, name) in entries {
        list.push(*name_type);
        list.extend(u16_prefixed(name));
    }
    u16_prefixed(&list)
}

/// The body of an ALPN extension offering `protocols`.
pub(crate) fn alpn_body(protocols: &[&[u8]]) -> Vec<u8> {
    let mut list = Vec::new();
    for protocol in protocols {
        list.push(u8::try_from(protocol.len()).unwrap());
        list.extend_from_slice(protocol);
    }
    u16_prefixed(&list)
}

/// A hand-made ClientHello, minimal unless told otherwise: TLS 1.2 legacy
/// version, zero random, empty session id, one cipher suite, null
/// compression, no extensions block at all.
#[derive(Debug, Clone)]
pub(crate) struct HelloBuilder {
    pub(crate) legacy_version: u16,
    pub(crate) session_id: Vec<u8>,
    /// The cipher suite list body, without its length.
    pub(crate) cipher_suites: Vec<u8>,
    /// The compression method list body, without its length.
    pub(crate) compression_methods: Vec<u8>,
    /// The extensions block body, without its length; `None` for no block.
    pub(crate) extensions: Option<Vec<u8>>,
}

impl Default for HelloBuilder {
    fn default() -> Self {
        Self {
            legacy_version: 0x0303,
            session_id: Vec::new(),
            // TLS_AES_128_GCM_SHA256 and TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
            cipher_suites: vec![0x13, 0x01, 0xc0, 0x2f],
            compression_methods: vec![0],
            extensions: None,
        }
    }
}

impl HelloBuilder {
    /// Appends an extension with a raw body.
    pub(crate) fn extension(mut self, ext_type: u16, body: &[u8]) -> Self {
        let block = self.extensions.get_or_insert_with(Vec::new);
        block.extend_from_slice(&ext_type.to_be_bytes());
        block.extend(u16_prefixed(body));
        self
    }

    /// Appends a server_name extension naming one host.
    pub(crate) fn sni(self, host_name: &[u8]) -> Self {
        self.extension(0, &sni_body(&[(0, host_name)]))
    }

    /// Appends an ALPN extension.
    pub(crate) fn alpn(self, protocols: &[&[u8]]) -> Self {
        self.extension(16, &alpn_body(protocols))
    }

    /// Appends what rustls needs to accept a TLS 1.3 hello: supported
    /// versions, groups, signature schemes and a key share.
    pub(crate) fn tls13(self) -> Self {
        self.extension(43, &[2, 0x03, 0x04])
            .extension(10, &[0, 2, 0x00, 0x1d])
            .extension(13, &[0, 2, 0x08, 0x04])
            .extension(
                51,
                &u16_prefixed(&[&[0x00, 0x1d, 0x00, 0x20][..], &[7; 32]].concat()),
            )
    }

    /// The ClientHello body.
    pub(crate) fn body(&self) -> Vec<u8> {
        let mut out = self.legacy_version.to_be_bytes().to_vec();
        out.extend_from_slice(&[0; 32]);
        out.push(u8::try_from(self.session_id.len()).unwrap());
        out.extend_from_slice(&self.session_id);
        out.extend(u16_prefixed(&self.cipher_suites));
        out.push(u8::try_from(self.compression_methods.len()).unwrap());
        out.extend_from_slice(&self.compression_methods);
        if let Some(extensions) = &self.extensions {
            out.extend(u16_prefixed(extensions));
        }
        out
    }

    /// The handshake message: type, 24-bit length, body.
    pub(crate) fn message(&self) -> Vec<u8> {
        handshake_message_of(1, &self.body())
    }

    /// The message in a single handshake record.
    pub(crate) fn record(&self) -> Vec<u8> {
        record(CONTENT_TYPE_HANDSHAKE, &self.message())
    }
}

/// A handshake message of type `msg_type` around `body`.
pub(crate) fn handshake_message_of(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let mut out = vec![msg_type, len[1], len[2], len[3]];
    out.extend_from_slice(body);
    out
}

/// A hello as a browser-like client sends it, with GREASE (RFC 8701) and an
/// outer `encrypted_client_hello` extension (draft-ietf-tls-esni): GREASE
/// values among the cipher suites, extension types, versions, groups and key
/// shares, and the ECH public name in server_name.
pub(crate) fn grease_ech_hello() -> Vec<u8> {
    let ech_outer = [
        &[0x00][..],                 // ECHClientHelloType outer
        &[0x00, 0x01, 0x00, 0x01],   // HKDF-SHA256, AES-128-GCM
        &[0x42],                     // config_id
        &u16_prefixed(&[0x11; 32]),  // enc: the client's HPKE share
        &u16_prefixed(&[0x22; 208]), // payload: the encrypted inner hello
    ]
    .concat();
    let key_shares = [
        &[0x4a, 0x4a, 0x00, 0x01, 0x00][..],
        &[0x00, 0x1d, 0x00, 0x20],
        &[7; 32],
    ]
    .concat();
    HelloBuilder {
        session_id: vec![0x33; 32],
        cipher_suites: vec![0x6a, 0x6a, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f],
        ..HelloBuilder::default()
    }
    .extension(0x0a0a, &[])
    .sni(b"public.db.example.com")
    .extension(43, &[6, 0x7a, 0x7a, 0x03, 0x04, 0x03, 0x03])
    .extension(10, &u16_prefixed(&[0x4a, 0x4a, 0x00, 0x1d, 0x00, 0x17]))
    .extension(13, &[0, 4, 0x04, 0x03, 0x08, 0x04])
    .extension(51, &u16_prefixed(&key_shares))
    .alpn(&[POSTGRESQL])
    .extension(0xfe0d, &ech_outer)
    .extension(0xfafa, &[0])
    .record()
}
