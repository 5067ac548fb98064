//! Forwarding the encrypted bytes, untouched, in both directions.
//!
//! Each direction is a loop of read and write. An EOF in one direction is
//! passed on as a half-close (`shutdown(SHUT_WR)`) while the other direction
//! keeps going, because Postgres clients and servers may still be sending
//! after the peer has finished. An error in either direction ends both.

use std::io;

use ::metrics::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::{ACTIVE_CONNECTIONS, FORWARDED_BYTES_TOTAL};

/// Bytes read per call: one full TLS record plus its header fits.
const CHUNK: usize = 16 * 1024 + 256;

/// Totals of one forwarded session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Bytes from the client to the backend.
    pub client_to_backend: u64,
    /// Bytes from the backend to the client.
    pub backend_to_client: u64,
}

/// Forwards between `client` and `backend` until both directions have ended,
/// counting bytes under `route`. `replayed` is the number of client bytes
/// already written to the backend during start-up (the ClientHello), counted
/// here so that the totals cover the whole session.
pub async fn forward(
    mut client: TcpStream,
    mut backend: TcpStream,
    route: &str,
    replayed: u64,
) -> io::Result<Forwarded> {
    let _active = ActiveGuard::new(route);
    let upstream = ::metrics::counter!(FORWARDED_BYTES_TOTAL, "route" => route.to_owned(), "direction" => "client_to_backend");
    let downstream = ::metrics::counter!(FORWARDED_BYTES_TOTAL, "route" => route.to_owned(), "direction" => "backend_to_client");
    upstream.increment(replayed);
    let (mut client_read, mut client_write) = client.split();
    let (mut backend_read, mut backend_write) = backend.split();
    let (client_to_backend, backend_to_client) = tokio::try_join!(
        pump(&mut client_read, &mut backend_write, &upstream),
        pump(&mut backend_read, &mut client_write, &downstream),
    )?;
    Ok(Forwarded {
        client_to_backend: replayed + client_to_backend,
        backend_to_client,
    })
}

/// Copies `from` to `to` until EOF, then half-closes `to`.
async fn pump<R, W>(from: &mut R, to: &mut W, counter: &Counter) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // The peer may already be gone; its own direction reports that.
            let _ = to.shutdown().await;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        counter.increment(n as u64);
        total += n as u64;
    }
}

/// Keeps `pgsni_active_connections{route}` up to date for one session.
struct ActiveGuard(::metrics::Gauge);

impl ActiveGuard {
    fn new(route: &str) -> Self {
        let gauge = ::metrics::gauge!(ACTIVE_CONNECTIONS, "route" => route.to_owned());
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
