//! Captures one real client's ClientHello, for tests, fuzz seeds and
//! benchmarks.
//!
//! Listens on 127.0.0.1, takes one connection, answers an `SSLRequest` with
//! `S` (a `GSSENCRequest` with `N`) or takes direct TLS as it comes, reads the
//! whole ClientHello with pgsni's own reader, writes its records exactly as
//! received to OUT, and closes. The client then fails its handshake, which is
//! expected. A client that starts a plaintext session (or sends a
//! CancelRequest) gets its start-up packet written to OUT instead.
//!
//! ```sh
//! cargo run --example capture_client_hello -- OUT.bin [PORT]
//! psql "host=alpha.db.example.com hostaddr=127.0.0.1 port=PORT sslmode=require"
//! openssl s_client -connect 127.0.0.1:PORT -servername alpha.db.example.com
//! ```
//!
//! With `--tokio-postgres` (or `--tokio-postgres-direct`) as the last
//! argument, it connects to itself with tokio-postgres and rustls, offering
//! ALPN `postgresql` as Postgres clients do.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pgsni::tls::{locate, read_client_hello, HostName, MAX_CLIENT_HELLO_BYTES};
use pgsni::wire::startup::{classify, StartupPacket};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, port, client) = match args.as_slice() {
        [out] => (out, 0, None),
        [out, flag] if flag.starts_with("--tokio-postgres") => (out, 0, Some(flag.as_str())),
        [out, port] => (out, port.parse().context("PORT")?, None),
        _ => bail!("usage: capture_client_hello OUT [PORT | --tokio-postgres[-direct]]"),
    };

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    if let Some(flag) = client {
        let direct = flag == "--tokio-postgres-direct";
        std::thread::spawn(move || connect_with_tokio_postgres(addr, direct));
    }

    let (mut stream, peer) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    eprintln!("connection from {peer}");

    let mut buffered = Vec::new();

    // The plaintext start-up: as many requests as the client makes before TLS.
    loop {
        let (answer, len): (u8, usize) = match classify(&buffered)? {
            None => {
                read_more(&mut stream, &mut buffered)?;
                continue;
            }
            Some((StartupPacket::DirectTls, _)) => {
                eprintln!("direct TLS");
                break;
            }
            // Refuse GSSAPI encryption: the client goes on with an SSLRequest.
            Some((StartupPacket::GssEncRequest, len)) => (b'N', len),
            Some((StartupPacket::SslRequest, len)) => (b'S', len),
            Some((other, len)) => {
                // A plaintext session or a cancel: keep the packet itself.
                std::fs::write(out, &buffered[..len]).with_context(|| format!("writing {out}"))?;
                eprintln!("wrote the {} ({len} bytes) to {out}", other.name());
                return Ok(());
            }
        };
        stream.write_all(&[answer])?;
        buffered.drain(..len);
        if answer == b'S' {
            eprintln!("SSLRequest");
            break;
        }
    }

    let mut scratch = Vec::new();
    while read_client_hello(&buffered, &mut scratch)?.is_none() {
        if buffered.len() >= MAX_CLIENT_HELLO_BYTES {
            bail!("no ClientHello within {MAX_CLIENT_HELLO_BYTES} bytes");
        }
        read_more(&mut stream, &mut buffered)?;
    }
    let consumed = locate(&buffered)?.consumed().context("complete")?;
    let records = &buffered[..consumed];
    std::fs::write(out, records).with_context(|| format!("writing {out}"))?;

    let hello = read_client_hello(records, &mut scratch)?.context("complete")?;
    let name = hello.server_name().map(HostName::parse);
    let alpn: Vec<_> = hello
        .alpn_protocols()
        .map(String::from_utf8_lossy)
        .collect();
    eprintln!(
        "wrote {consumed} bytes to {out}: server name {name:?}, ALPN {alpn:?}, ECH {}",
        hello.offers_ech()
    );
    Ok(())
}

/// Appends what the client sends next to `buffered`.
fn read_more(stream: &mut TcpStream, buffered: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0; 4096];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        bail!("client closed after {} bytes", buffered.len());
    }
    buffered.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Connects to `addr` the way an application using tokio-postgres with
/// rustls would. The handshake cannot succeed, so the outcome is ignored.
fn connect_with_tokio_postgres(addr: SocketAddr, direct: bool) {
    use tokio_postgres::config::{SslMode, SslNegotiation};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"postgresql".to_vec()];

    let mut config = tokio_postgres::Config::new();
    config
        .host("alpha.db.example.com")
        .hostaddr(addr.ip())
        .port(addr.port())
        .user("postgres")
        .ssl_mode(SslMode::Require);
    if direct {
        config.ssl_negotiation(SslNegotiation::Direct);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let _ = runtime.block_on(config.connect(tls));
}
