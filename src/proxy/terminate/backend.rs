//! A terminated route's own connection to its backend.
//!
//! Unlike a passthrough session, which replays the client's ClientHello, a
//! terminated session is a new Postgres client of the backend: over TCP or a
//! unix socket, in plaintext (`backend_tls = "disable"`) or in a TLS session
//! of pgsni's after the usual SSLRequest exchange (`require`, `verify-full`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tracing::warn;

use super::identity::BackendSecurity;
use crate::proxy::backend::{self as passthrough, AttemptError, Unreached};
use crate::proxy::cancel::CancelTarget;
use crate::proxy::dial::Dialer;
use crate::proxy::logging::LineBudget;
use crate::proxy::SocketOptions;
use crate::routing::table::{Backend, UNIX_PREFIX};

/// Budget of "backend attempt failed" lines (see [`LineBudget`]).
static ATTEMPT_LINES: LineBudget = LineBudget::new();

/// Why one backend attempt failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// Connecting, or the SSLRequest exchange, failed.
    #[error(transparent)]
    Attempt(#[from] AttemptError),
    /// The backend's address has no host name a certificate can be checked
    /// for.
    #[error("no server name for TLS in {0:?}")]
    ServerName(String),
    /// The TLS handshake failed (for `verify-full`, a certificate that does
    /// not chain to the CA or does not name the host).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The routes file keeps TLS and PROXY headers away from unix sockets;
    /// this guards that invariant.
    #[error("a unix socket carries neither TLS nor a PROXY header")]
    UnixSocket,
    /// Connect plus handshake took longer than the connect timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A connection to a terminated route's backend.
#[derive(Debug)]
pub enum BackendStream {
    /// Plaintext over TCP.
    Tcp(TcpStream),
    /// Plaintext over a unix socket.
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// Where a plaintext CancelRequest for this session's backend goes
    /// (Postgres takes cancels in plaintext even where it requires TLS for
    /// sessions); `proxy_protocol` when the backend expects a PROXY header.
    pub fn cancel_target(&self, proxy_protocol: bool) -> io::Result<CancelTarget> {
        let tcp = |stream: &TcpStream| -> io::Result<CancelTarget> {
            Ok(CancelTarget::Tcp {
                addr: stream.peer_addr()?,
                proxy_protocol,
            })
        };
        match self {
            Self::Tcp(stream) => tcp(stream),
            Self::Tls(stream) => tcp(stream.get_ref().0),
            Self::Unix(stream) => {
                let addr = stream.peer_addr()?;
                let path = addr
                    .as_pathname()
                    .ok_or_else(|| io::Error::other("unix socket without a path"))?;
                Ok(CancelTarget::Unix(Arc::from(path)))
            }
        }
    }
}

/// Tries `addresses` in order; returns the first backend that connected
/// (and, for TLS, completed its handshake), with its address, or why none
/// did (each failure is logged).
pub async fn connect_first<'a>(
    addresses: &'a [Backend],
    dialer: &Dialer,
    security: &BackendSecurity,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
    options: &SocketOptions,
) -> Result<(BackendStream, &'a Backend), Unreached> {
    let mut unreached = Unreached::Unavailable;
    for address in addresses {
        let attempt = attempt(address, dialer, security, proxy_header, options);
        let attempt = tokio::time::timeout(timeout, attempt).await;
        match attempt.unwrap_or(Err(ConnectError::TimedOut(timeout))) {
            Ok(stream) => return Ok((stream, address)),
            Err(error) => {
                // A wildcard route's backends follow the client's label, so
                // these lines are the client's to cause: rate-limited.
                if let Some(suppressed) = ATTEMPT_LINES.allow() {
                    warn!(backend = %address, %error, suppressed, "backend attempt failed");
                }
                let not_allowed = matches!(&error, ConnectError::Attempt(e) if e.is_not_allowed());
                unreached = unreached.with(not_allowed);
            }
        }
    }
    Err(unreached)
}

/// Connects to one backend as `security` says. Unix sockets are local files
/// named by the routes file: neither DNS nor `--backend-networks` applies.
async fn attempt(
    backend: &Backend,
    dialer: &Dialer,
    security: &BackendSecurity,
    proxy_header: Option<&[u8]>,
    options: &SocketOptions,
) -> Result<BackendStream, ConnectError> {
    let address = backend.as_str();
    if let Some(path) = address.strip_prefix(UNIX_PREFIX) {
        if proxy_header.is_some() || !matches!(security, BackendSecurity::Plain) {
            return Err(ConnectError::UnixSocket);
        }
        let stream = UnixStream::connect(path)
            .await
            .map_err(AttemptError::Connect)?;
        return Ok(BackendStream::Unix(stream));
    }
    let connector = match security {
        BackendSecurity::Plain => {
            let mut stream = dialer.connect(backend).await.map_err(AttemptError::from)?;
            options.apply(&stream).map_err(AttemptError::Connect)?;
            if let Some(header) = proxy_header {
                stream
                    .write_all(header)
                    .await
                    .map_err(AttemptError::Exchange)?;
            }
            return Ok(BackendStream::Tcp(stream));
        }
        BackendSecurity::Tls(connector) => connector,
    };
    let name = server_name(address).ok_or_else(|| ConnectError::ServerName(address.into()))?;
    // The SSLRequest exchange is the passthrough path's, byte for byte.
    let stream = passthrough::attempt(backend, dialer, proxy_header, options).await?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(ConnectError::Tls)?;
    Ok(BackendStream::Tls(Box::new(tls)))
}

/// The name a backend's certificate must carry: the host of `host:port`,
/// a DNS name or an IP address.
fn server_name(address: &str) -> Option<ServerName<'static>> {
    let (host, _port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).ok()
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_backend_addresses() {
        let name = |address| server_name(address).map(|n| n.to_str().into_owned());
        assert_eq!(name("db.internal:5432").as_deref(), Some("db.internal"));
        assert_eq!(name("10.0.0.7:5432").as_deref(), Some("10.0.0.7"));
        assert_eq!(name("[::1]:5432").as_deref(), Some("::1"));
        assert_eq!(name("nohost"), None);
    }
}
