//! Scripted clients and backends that speak the start-up protocol byte for
//! byte: what the protocol and trust tests drive the broker with.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::broker::Broker;

/// An SSLRequest packet.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// A GSSENCRequest packet.
pub const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// A genuine ClientHello from rustls, in one record.
pub fn client_hello(sni: Option<&str>, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // An IP-address server name makes rustls send no SNI, as libpq does.
    let name = rustls::pki_types::ServerName::try_from(sni.unwrap_or("127.0.0.1"))
        .unwrap()
        .to_owned();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    hello
}

/// What a scripted backend saw on one connection.
#[derive(Debug)]
pub struct Seen {
    /// A PROXY v2 header, when the backend expects one.
    pub proxy: Vec<u8>,
    /// The first 8 bytes: must be the SSLRequest.
    pub request: Vec<u8>,
    /// Everything after the `S` until the client's EOF.
    pub after_s: Vec<u8>,
}

/// A scripted Postgres backend: answers SSLRequest with `answer`, records
/// what follows until EOF, then sends `reply` and closes.
pub struct FakeBackend {
    /// Where it listens, as `127.0.0.1:PORT`.
    pub address: String,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakeBackend {
    /// Starts one on a free loopback port.
    pub async fn start(answer: u8, reply: Vec<u8>) -> FakeBackend {
        Self::start_with(answer, reply, false).await
    }

    /// Like [`FakeBackend::start`], reading a PROXY v2 header first when
    /// `proxy_protocol` is set.
    pub async fn start_with(answer: u8, reply: Vec<u8>, proxy_protocol: bool) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut proxy = Vec::new();
                    if proxy_protocol {
                        proxy.resize(16, 0);
                        if stream.read_exact(&mut proxy).await.is_err() {
                            return;
                        }
                        let len = u16::from_be_bytes([proxy[14], proxy[15]]) as usize;
                        proxy.resize(16 + len, 0);
                        stream.read_exact(&mut proxy[16..]).await.unwrap();
                    }
                    let mut request = vec![0u8; 8];
                    if stream.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    stream.write_all(&[answer]).await.unwrap();
                    let mut after_s = Vec::new();
                    if answer == b'S' {
                        let _ = stream.read_to_end(&mut after_s).await;
                        // Only now, after the client's half-close, reply.
                        let _ = stream.write_all(&reply).await;
                    }
                    let _ = tx.send(Seen {
                        proxy,
                        request,
                        after_s,
                    });
                });
            }
        });
        FakeBackend { address, seen }
    }

    /// What the next connection saw, once its client closed.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("backend saw no connection in time")
            .unwrap()
    }

    /// Whether no connection has been reported (yet).
    pub fn saw_nothing(&mut self) -> bool {
        self.seen.try_recv().is_err()
    }
}

/// A plain TCP connection to the broker's client port.
pub async fn connect(broker: &Broker) -> TcpStream {
    TcpStream::connect(broker.addr()).await.unwrap()
}

/// A TCP connection to the broker from `source`, an address of the
/// loopback network (127.0.0.0/8): lets a test be both a trusted load
/// balancer and an untrusted client on one machine.
pub async fn connect_from(broker: &Broker, source: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    socket.connect(broker.addr()).await.unwrap()
}

/// Begins TLS on `stream`: `opening` (a PROXY header, or nothing), an
/// SSLRequest, the broker's `S`, then `hello`. Returns the stream, its
/// session under way.
pub async fn begin_tls(mut stream: TcpStream, opening: &[u8], hello: &[u8]) -> TcpStream {
    let mut bytes = opening.to_vec();
    bytes.extend_from_slice(&SSL_REQUEST);
    stream.write_all(&bytes).await.unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    stream.write_all(hello).await.unwrap();
    stream
}

/// Everything the broker sends until it closes (within 10 s).
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the broker should close the connection")
        .expect("read until EOF");
    out
}

/// Parses a FATAL ErrorResponse into (SQLSTATE, message, hint).
pub fn error_response(bytes: &[u8]) -> (String, String, Option<String>) {
    assert_eq!(
        bytes.first(),
        Some(&b'E'),
        "not an ErrorResponse: {bytes:?}"
    );
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    assert_eq!(len + 1, bytes.len(), "one message, then close");
    let mut fields = std::collections::HashMap::new();
    for field in bytes[5..bytes.len() - 2].split(|&b| b == 0) {
        fields.insert(field[0], String::from_utf8(field[1..].to_vec()).unwrap());
    }
    assert_eq!(fields[&b'S'], "FATAL");
    assert_eq!(fields[&b'V'], "FATAL");
    (
        fields[&b'C'].clone(),
        fields[&b'M'].clone(),
        fields.get(&b'H').cloned(),
    )
}

/// A fatal TLS alert record.
pub fn alert(description: u8) -> Vec<u8> {
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Sends SSLRequest, then `hello`, and returns what the broker answers
/// until it closes.
pub async fn tls_refusal(broker: &Broker, hello: &[u8]) -> Vec<u8> {
    let mut client = connect(broker).await;
    client.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    client.write_all(hello).await.unwrap();
    read_to_end(&mut client).await
}

/// A PROXY v2 header for a TCP/IPv4 connection from `source`.
pub fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&5432u16.to_be_bytes());
    header
}
