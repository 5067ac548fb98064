//! Refusals a person can read, once TLS has begun.
//!
//! A client refused after its ClientHello (an unknown name, backends down, a
//! limit) would normally get a bare TLS alert. With a fallback certificate
//! configured, pgsni instead completes the handshake itself, with its own
//! certificate, reads the client's StartupMessage and answers with a Postgres
//! FATAL ErrorResponse that says what happened. A client that verifies the
//! certificate (`verify-full`) sees a name mismatch instead, which is also
//! clear; no tenant key is ever involved.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::wire::reply::Refusal;
use crate::wire::startup::MAX_STARTUP_PACKET_LEN;

/// How long a refused client has to finish the handshake and send its
/// StartupMessage.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker's own TLS identity, used only to refuse.
#[derive(Clone)]
pub struct Fallback {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback").finish_non_exhaustive()
    }
}

impl Fallback {
    /// Loads a certificate chain and its private key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read certificates from {}", cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read a private key from {}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the certificate and key do not match")?;
        // Direct-TLS clients require ALPN "postgresql", as PG17 servers do.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor presenting the broker's own certificate; also the TLS
    /// session in which a client without a server name may name its route
    /// (see [`super::terminate`]).
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Completes TLS with `client`, replaying `received` (the bytes already
    /// read: the ClientHello) first, reads the StartupMessage and answers
    /// with `refusal`. Best effort: a client that goes away is not an error.
    pub async fn refuse(
        &self,
        client: TcpStream,
        received: &[u8],
        refusal: &Refusal,
    ) -> io::Result<()> {
        let session = async {
            let stream = Rewind::new(received.to_vec(), client);
            let mut tls = self.acceptor.accept(stream).await?;
            read_startup_packet(&mut tls).await?;
            tls.write_all(&refusal.encode()).await?;
            tls.shutdown().await
        };
        tokio::time::timeout(REFUSAL_TIMEOUT, session)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

/// Reads one length-prefixed start-up packet (the StartupMessage, or a
/// CancelRequest) and discards it: only its arrival matters.
async fn read_startup_packet(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_PACKET_LEN).contains(&len) {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.map(drop)
}

/// A stream that first yields bytes already read from it: the ClientHello
/// pgsni read to route, replayed to its own TLS acceptor.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// Yields `prefix`, then what `inner` yields.
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this
            .prefix
            .get(this.offset..)
            .filter(|rest| !rest.is_empty())
        {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                // A terminated session lives on: let the hello go.
                this.prefix = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rewind_replays_then_reads_on() {
        let (mut writer, reader) = tokio::io::duplex(64);
        writer.write_all(b" world").await.unwrap();
        drop(writer);
        let mut stream = Rewind::new(b"hello".to_vec(), reader);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
