//! Connecting to a tenant's backend.
//!
//! A Postgres backend expects the same opening as from any client: an
//! SSLRequest, answered by `S`, and only then the ClientHello. Sending both at
//! once would make it refuse the session (unencrypted data after SSLRequest),
//! so the exchange is done in full before the caller writes the hello.

use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::warn;

use super::dial::{DialError, Dialer};
use super::logging::LineBudget;
use super::SocketOptions;
use crate::routing::table::Backend;
use crate::wire::reply;

/// Budget of "backend attempt failed" lines (see [`LineBudget`]).
static ATTEMPT_LINES: LineBudget = LineBudget::new();

/// Why one backend attempt failed.
#[derive(Debug, Error)]
pub enum AttemptError {
    /// TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// Policy refused the address, its name did not resolve, or no address
    /// accepted the connection.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Writing the SSLRequest or reading the answer failed.
    #[error("SSLRequest exchange failed: {0}")]
    Exchange(#[source] io::Error),
    /// The backend answered `N`: it does not do TLS.
    #[error("backend refused TLS (answered N)")]
    Refused,
    /// The backend answered something else (an ErrorResponse, for example).
    #[error("backend answered SSLRequest with byte {0:#04x}")]
    Unexpected(u8),
    /// The backend closed before answering.
    #[error("backend closed before answering SSLRequest")]
    Closed,
    /// Connect plus answer took longer than the connect timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

impl AttemptError {
    /// Whether policy refused the backend (see [`crate::proxy::dial`]).
    pub fn is_not_allowed(&self) -> bool {
        matches!(self, Self::Dial(DialError::NotAllowed(_)))
    }
}

/// Why no backend of a route was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreached {
    /// Policy refused at least one backend, and no other was reached: the
    /// `backend_not_allowed` outcome.
    NotAllowed,
    /// Every backend was tried and failed.
    Unavailable,
}

impl Unreached {
    /// Folds one failed attempt into what is said of the whole route.
    pub fn with(self, not_allowed: bool) -> Self {
        if not_allowed {
            Self::NotAllowed
        } else {
            self
        }
    }
}

/// Tries `addresses` in order; returns the first backend that agreed to TLS,
/// with its address, or why none did (each failure is logged).
/// `proxy_header`, when given, is sent first on every connection.
pub async fn connect_first<'a>(
    addresses: &'a [Backend],
    dialer: &Dialer,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
    options: &SocketOptions,
) -> Result<(TcpStream, &'a Backend), Unreached> {
    let mut unreached = Unreached::Unavailable;
    for address in addresses {
        let attempt = attempt(address, dialer, proxy_header, options);
        let attempt = tokio::time::timeout(timeout, attempt).await;
        match attempt.unwrap_or(Err(AttemptError::TimedOut(timeout))) {
            Ok(stream) => return Ok((stream, address)),
            Err(error) => {
                // A wildcard route's backends follow the client's label, so
                // these lines are the client's to cause: rate-limited.
                if let Some(suppressed) = ATTEMPT_LINES.allow() {
                    warn!(backend = %address, %error, suppressed, "backend attempt failed");
                }
                unreached = unreached.with(error.is_not_allowed());
            }
        }
    }
    Err(unreached)
}

/// Connects to one backend and completes its SSLRequest exchange, after the
/// PROXY header if one is given.
pub async fn attempt(
    address: &Backend,
    dialer: &Dialer,
    proxy_header: Option<&[u8]>,
    options: &SocketOptions,
) -> Result<TcpStream, AttemptError> {
    let mut stream = dialer.connect(address).await?;
    options.apply(&stream).map_err(AttemptError::Connect)?;
    let mut opening = proxy_header.unwrap_or_default().to_vec();
    opening.extend_from_slice(&reply::ssl_request());
    stream
        .write_all(&opening)
        .await
        .map_err(AttemptError::Exchange)?;
    let mut answer = [0u8; 1];
    // Exactly one byte: anything the backend sends after `S` belongs to TLS.
    match stream
        .read(&mut answer)
        .await
        .map_err(AttemptError::Exchange)?
    {
        0 => Err(AttemptError::Closed),
        _ => match answer[0] {
            b'S' => Ok(stream),
            b'N' => Err(AttemptError::Refused),
            other => Err(AttemptError::Unexpected(other)),
        },
    }
}
