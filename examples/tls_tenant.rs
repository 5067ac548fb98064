//! A light TLS "tenant" for the memory scenario of the benchmark harness
//! (`benches/pgbench/`).
//!
//! PostgreSQL cannot hold ten thousand sessions on a small machine (one
//! process each), so the idle-session scenario points the proxies at this
//! instead: it answers the 8-byte `SSLRequest` with `S`, completes the TLS
//! handshake with the tenant certificate (rustls, ring), then holds the
//! connection, echoing whatever application data arrives, until the peer
//! closes it. Nothing Postgres happens after TLS; nothing needs to, since the
//! proxies under test never look past the ClientHello. (The echo lets
//! examples/idle_clients.rs push data through every buffer on the path before
//! the session goes idle.)
//!
//! ```sh
//! cargo run --release --example tls_tenant -- --listen 127.0.0.1:0 \
//!     --cert server.crt --key server.key
//! ```
//!
//! Prints `listening on ADDR` on stdout once bound (so port 0 works), and a
//! count of failed start-ups on stderr now and then when there are any.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// `SSLRequest`: length 8, then the code 1234 << 16 | 5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Bound on the start-up (SSLRequest and handshake), so that a stuck client
/// does not pin a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS endpoint that speaks just enough Postgres to be routed to.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PEM certificate chain (leaf first).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

// One thread: the tenant only handshakes and then sleeps on reads, and the
// machine's cores are better left to the proxy being measured.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&args)?));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);

    let failures = Arc::new(AtomicU64::new(0));
    tokio::spawn(report_failures(failures.clone()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and the like: wait for descriptors to free up.
                eprintln!("tls_tenant: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            match start(stream, acceptor).await {
                Ok(tls) => hold(tls).await,
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

fn server_config(args: &Args) -> anyhow::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&args.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", args.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&args.key)
        .with_context(|| format!("cannot read a private key from {}", args.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(config)
}

/// The start of one connection: `SSLRequest` → `S`, then the TLS handshake.
async fn start(
    mut stream: TcpStream,
    acceptor: TlsAcceptor,
) -> std::io::Result<TlsStream<TcpStream>> {
    let start = async {
        let mut request = [0u8; 8];
        stream.read_exact(&mut request).await?;
        if request != SSL_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected an SSLRequest",
            ));
        }
        stream.write_all(b"S").await?;
        acceptor.accept(stream).await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, start)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Echoes application data until the peer goes away. Clients of the harness
/// just close their sockets (no close_notify), so how the session ends is not
/// an error worth reporting.
async fn hold(mut tls: TlsStream<TcpStream>) {
    // One whole TLS record of plaintext, so that an echoed record goes back
    // as one record too.
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = tls.read(&mut buf).await {
        if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
            break;
        }
    }
}

/// Prints the number of failed connections every few seconds while it grows.
async fn report_failures(failures: Arc<AtomicU64>) {
    let mut reported = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = failures.load(Ordering::Relaxed);
        if now != reported {
            eprintln!("tls_tenant: {now} connections failed or were reset so far");
            reported = now;
        }
    }
}
