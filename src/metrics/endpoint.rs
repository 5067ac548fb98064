//! A deliberately small HTTP/1.1 endpoint serving `GET /metrics`, and the
//! health probes `GET /healthz` (the process is alive) and `GET /readyz`
//! (routes loaded, listening, not draining).
//!
//! Scrapers send one short request per connection; anything else gets a
//! short error. Every connection is bounded: a request head of
//! [`MAX_REQUEST_HEAD`] bytes read within [`REQUEST_TIMEOUT`], and a response
//! written within [`WRITE_TIMEOUT`]. A slow or hostile client therefore costs
//! one small task for a bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

/// Request heads larger than this are refused. A scraper's head is a few
/// hundred bytes; this is the limit most HTTP servers use.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A scraper must finish its request head within this time, so a silent
/// client or one that sends a byte at a time frees its slot.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole response must be written (and the write side shut) within this
/// time, so a client that never reads frees its slot. It is Prometheus's
/// default scrape timeout: a scraper still waiting after it has given up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint asks the broker when a request comes.
#[derive(Clone)]
pub struct Probes {
    /// Whether the broker is ready for new connections.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Sets the sampled gauges, just before `/metrics` is rendered.
    pub sample: Arc<dyn Fn() + Send + Sync>,
}

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, probes: Probes) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                let probes = probes.clone();
                tokio::spawn(async move {
                    if let Err(error) = respond(stream, &handle, &probes).await {
                        debug!(%peer, %error, "metrics request failed");
                    }
                });
            }
            Err(error) => {
                debug!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Reads one request from `stream` and writes its response, each under its
/// deadline.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handle: &PrometheusHandle,
    probes: &Probes,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    // A head cut off at the bound is refused rather than served by its
    // first line: whatever follows was never read.
    let too_large = head.len() >= MAX_REQUEST_HEAD && !ends_head(&head);
    let (status, content_type, body) = match request_target(&head) {
        _ if too_large => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n".to_owned(),
        ),
        Some(("GET", "/metrics")) => {
            (probes.sample)();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        Some(("GET", "/healthz")) => ("200 OK", "text/plain", "ok\n".to_owned()),
        Some(("GET", "/readyz")) if (probes.ready)() => {
            ("200 OK", "text/plain", "ready\n".to_owned())
        }
        Some(("GET", "/readyz")) => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        Some(("GET", _)) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        Some(_) => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
        None => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take the response in time",
        )),
    }
}

/// Reads until the blank line that ends a request head, or until
/// [`MAX_REQUEST_HEAD`] bytes, whichever comes first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !ends_head(&head) && head.len() < MAX_REQUEST_HEAD {
        let room = chunk.len().min(MAX_REQUEST_HEAD - head.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
}

/// Whether `head` holds the blank line that ends a request head.
fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The method and path of the request line, without the query string.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next()?.starts_with("HTTP/1.").then_some(())?;
    let path = target.split('?').next()?;
    Some((method, path))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::{read_head, request_target, respond, Probes, MAX_REQUEST_HEAD, WRITE_TIMEOUT};

    /// Probes of a broker that is always ready.
    fn probes() -> Probes {
        Probes {
            ready: Arc::new(|| true),
            sample: Arc::new(|| {}),
        }
    }

    /// A handle on a recorder of its own, for tests that need no metric.
    fn local_handle() -> PrometheusHandle {
        PrometheusBuilder::new().build_recorder().handle()
    }

    #[test]
    fn parses_request_line() {
        assert_eq!(
            request_target(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target(b"garbage"), None);
        assert_eq!(request_target(b"GET /metrics SPDY\r\n"), None);
    }

    /// A client that sends its request and never reads the answer loses the
    /// connection at the write timeout.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reads_is_cut_off_at_the_write_timeout() {
        let request = b"GET /healthz HTTP/1.1\r\n\r\n";
        // Room for the request but not for the answer, as a full socket
        // buffer would be.
        let (mut client, server) = tokio::io::duplex(request.len() + 4);
        client.write_all(request).await.expect("send the request");
        let start = Instant::now();
        let handle = local_handle();
        let served = tokio::spawn(async move { respond(server, &handle, &probes()).await });

        let outcome = tokio::time::timeout(WRITE_TIMEOUT * 3, served)
            .await
            .expect("the endpoint gave up on the client")
            .expect("respond does not panic");
        let error = outcome.expect_err("the answer could not be written");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= WRITE_TIMEOUT && waited < WRITE_TIMEOUT + Duration::from_secs(1),
            "cut off after {waited:?}"
        );
        let mut seen = Vec::new();
        client
            .read_to_end(&mut seen)
            .await
            .expect("the client sees the connection end");
        assert!(seen.len() <= request.len() + 4);
    }

    /// A request head that never ends is read up to the bound and refused,
    /// not served by its first line.
    #[tokio::test]
    async fn a_head_over_the_bound_is_refused() {
        let mut request = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
        request.resize(4 * MAX_REQUEST_HEAD, b'a');
        let (mut client, mut server) = tokio::io::duplex(request.len() + 1024);
        client.write_all(&request).await.expect("send the request");
        let head = read_head(&mut server).await.expect("read the head");
        assert_eq!(head.len(), MAX_REQUEST_HEAD);

        let (mut client, server) = tokio::io::duplex(request.len() + 1024);
        client.write_all(&request).await.expect("send the request");
        let handle = local_handle();
        respond(server, &handle, &probes())
            .await
            .expect("the refusal is written");
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        assert!(
            answer.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
