//! A deliberately small HTTP/1.1 endpoint serving `GET /metrics`, and the
//! health probes `GET /healthz` (the process is alive) and `GET /readyz`
//! (routes loaded, listening, not draining).
//!
//! Scrapers send one short request per connection; anything else gets a
//! short error. Request heads are bounded in size and time so that a slow or
//! hostile scraper costs one small task and nothing more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Request heads larger than this are refused.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A scraper must finish its request head within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

async fn respond(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    probes: &Probes,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match request_target(&head) {
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
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the blank line that ends a request head, or the bound.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(head)
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
    use super::request_target;

    #[test]
    fn parses_request_line() {
        assert_eq!(
            request_target(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target(b"garbage"), None);
        assert_eq!(request_target(b"GET /metrics SPDY\r\n"), None);
    }
}
