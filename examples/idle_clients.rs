//! Opens many idle TLS sessions through a Postgres TLS endpoint and keeps
//! them open: the client side of the memory scenario of the benchmark
//! harness (`benches/pgbench/`).
//!
//! Each session does what libpq does before authentication: `SSLRequest`,
//! expects `S`, then a TLS handshake (rustls, ring) naming `--server-name`
//! (sent as SNI and checked against the certificate, which must chain to
//! `--ca`). With `--echo BYTES` it then sends that much application data and
//! waits for it to come back (examples/tls_tenant.rs echoes), so that every
//! buffer on the path has carried data, as in a pooled session that has run
//! queries. Then it sits idle, reading and discarding anything that arrives
//! (TLS 1.3 session tickets).
//!
//! ```sh
//! cargo run --release --example idle_clients -- --connect 127.0.0.1:6432 \
//!     --server-name bench.db.example.com --ca ca.crt --count 10000
//! ```
//!
//! Talks to its caller line by line:
//!
//! - stdout `opened ok=N failed=M seconds=S` once every session has been
//!   attempted (the first error, if any, goes to stderr);
//! - stdin `status` → stdout `alive=N`, the sessions still open;
//! - stdin closed, SIGTERM or SIGINT → every session is closed and the
//!   process exits.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// `SSLRequest`: length 8, then the code 1234 << 16 | 5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Opens and holds idle TLS sessions to a Postgres endpoint.
#[derive(Debug, Parser)]
struct Args {
    /// Address to connect to.
    #[arg(long, value_name = "ADDR")]
    connect: SocketAddr,
    /// Server name to send as SNI and to verify the certificate against.
    #[arg(long, value_name = "NAME")]
    server_name: String,
    /// PEM file of the CA that issued the server certificate.
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// Sessions to open.
    #[arg(long, value_name = "N")]
    count: usize,
    /// Sessions being opened at the same time (a burst of thousands of
    /// handshakes at once would measure the accept backlog, not memory).
    #[arg(long, value_name = "N", default_value_t = 200)]
    concurrency: usize,
    /// Application bytes to send, and have echoed back, once the session is
    /// open (0: none, the session stays idle from the handshake on).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    echo: usize,
    /// Bound on opening one session (echo included), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

// One thread is plenty to open sessions at a modest concurrency, and leaves
// the cores to the proxy being measured.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let opener = Arc::new(Opener {
        addr: args.connect,
        connector: TlsConnector::from(Arc::new(client_config(&args.ca)?)),
        server_name: ServerName::try_from(args.server_name.clone())
            .with_context(|| format!("invalid server name {:?}", args.server_name))?,
        timeout: Duration::from_secs(args.timeout),
        echo: args.echo,
        alive: AtomicUsize::new(0),
    });

    // Stop requests are honoured in every phase, opening included.
    let mut term = signal(SignalKind::terminate())?;
    let mut commands = stdin_lines();

    let started = Instant::now();
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    tokio::spawn(open_all(
        opener.clone(),
        args.count,
        args.concurrency,
        outcome_tx,
    ));
    let (mut ok, mut failed) = (0usize, 0usize);
    while ok + failed < args.count {
        let outcome = tokio::select! {
            outcome = outcomes.recv() => outcome,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match outcome {
            Some(Ok(())) => ok += 1,
            Some(Err(error)) => {
                if failed == 0 {
                    eprintln!("idle_clients: first failure: {error}");
                }
                failed += 1;
            }
            None => break,
        }
    }
    println!(
        "opened ok={ok} failed={failed} seconds={:.2}",
        started.elapsed().as_secs_f64()
    );

    loop {
        tokio::select! {
            command = commands.recv() => match command.as_deref().map(str::trim) {
                None => break,
                Some("status") => println!("alive={}", opener.alive.load(Ordering::Relaxed)),
                Some("") => {}
                Some(other) => eprintln!("idle_clients: unknown command {other:?}"),
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Returning drops the runtime, and with it every session.
    Ok(())
}

/// What every session needs to open itself, and the count of open ones.
struct Opener {
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    timeout: Duration,
    echo: usize,
    alive: AtomicUsize,
}

/// Opens `count` sessions, `concurrency` at a time, and reports each outcome
/// on `outcomes`; every open session is then held by its own task.
async fn open_all(
    opener: Arc<Opener>,
    count: usize,
    concurrency: usize,
    outcomes: mpsc::UnboundedSender<Result<(), String>>,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    for _ in 0..count {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (opener, outcomes) = (opener.clone(), outcomes.clone());
        tokio::spawn(async move {
            let opened = tokio::time::timeout(opener.timeout, opener.open()).await;
            drop(permit);
            match opened {
                Ok(Ok(tls)) => {
                    opener.alive.fetch_add(1, Ordering::Relaxed);
                    let _ = outcomes.send(Ok(()));
                    drop(outcomes);
                    hold(tls).await;
                    opener.alive.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    let _ = outcomes.send(Err(error.to_string()));
                }
                Err(_) => {
                    let _ = outcomes.send(Err(format!("not open after {:?}", opener.timeout)));
                }
            }
        });
    }
}

fn client_config(ca: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("bad certificate in {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

impl Opener {
    /// `SSLRequest`, `S`, the TLS handshake, then the echo if any.
    async fn open(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let mut tcp = TcpStream::connect(self.addr).await?;
        tcp.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer != *b"S" {
            return Err(std::io::Error::other(format!(
                "the server answered {:?} to SSLRequest",
                answer[0].escape_ascii().to_string()
            )));
        }
        let mut tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        if self.echo > 0 {
            let mut data = vec![b'x'; self.echo];
            tls.write_all(&data).await?;
            tls.flush().await?;
            tls.read_exact(&mut data).await?;
        }
        Ok(tls)
    }
}

/// Reads and discards until the server closes the session or it fails.
async fn hold(mut tls: TlsStream<TcpStream>) {
    // Small on purpose: thousands of these sit parked at once.
    let mut sink = [0u8; 512];
    while let Ok(1..) = tls.read(&mut sink).await {}
}

/// Lines from stdin, read on a plain thread (stdin is blocking); the channel
/// closes when stdin does.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
