//! A deliberately small HTTP/1.1 endpoint serving `GET /metrics`, and the
//! health probes `GET /healthz` (the process is alive) and `GET /readyz`
//! (routes loaded, listening, not draining).
//!
//! Scrapers send one short request per connection; anything else gets a
//! short error. Every connection is bounded: at most [`MAX_CONNECTIONS`] at
//! once (the next ones are answered 503 and closed without waiting), a
//! request head of [`MAX_REQUEST_HEAD`] bytes read within [`REQUEST_TIMEOUT`],
//! and a response written within [`WRITE_TIMEOUT`]. A slow or hostile client
//! therefore costs one small task for a bounded time, and many of them cannot
//! exhaust the process's descriptors; they can still crowd out scrapers while
//! they hold the slots, which is why the endpoint belongs on an internal
//! address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::debug;

/// Connections served at once; further ones are refused until one ends.
/// A Prometheus server or two and the orchestrator's probes need a handful
/// at a time, so 64 leaves room for many scrapers while bounding what a
/// flood of connections holds: a task, a descriptor, a head buffer and a
/// rendered body each.
pub const MAX_CONNECTIONS: usize = 64;
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

/// What a connection over [`MAX_CONNECTIONS`] is sent, without waiting for
/// its request, before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\ntoo many clients\n";

/// What the endpoint asks the broker when a request comes.
#[derive(Clone)]
pub struct Probes {
    /// Whether the broker is ready for new connections.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Sets the sampled gauges, just before `/metrics` is rendered.
    pub sample: Arc<dyn Fn() + Send + Sync>,
}

/// Serves the endpoint on `listener` until the task is dropped.
///
/// Connections beyond [`MAX_CONNECTIONS`] are sent a fixed 503 without
/// waiting for their request, closed, and counted in
/// [`METRICS_CONNECTIONS_REFUSED_TOTAL`](super::METRICS_CONNECTIONS_REFUSED_TOTAL).
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, probes: Probes) {
    // Registered at zero, so that a rate over it is defined before the first
    // refusal.
    ::metrics::counter!(super::METRICS_CONNECTIONS_REFUSED_TOTAL).increment(0);
    // One permit per connection served; a task holds its permit until its
    // connection is closed.
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refuse(&stream);
                    debug!(%peer, "metrics connection refused: too many clients");
                    continue;
                };
                let handle = handle.clone();
                let probes = probes.clone();
                tokio::spawn(async move {
                    if let Err(error) = respond(stream, &handle, &probes).await {
                        debug!(%peer, %error, "metrics request failed");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                debug!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends [`REFUSAL`] if the socket takes it at once, and counts the refusal;
/// the caller then drops (closes) the stream. Nothing waits, so refusing
/// costs the accept loop little more than accepting.
fn refuse(stream: &TcpStream) {
    ::metrics::counter!(super::METRICS_CONNECTIONS_REFUSED_TOTAL).increment(1);
    // Whatever request has already arrived is taken off the socket, without
    // waiting for more and without parsing it: closing a socket with unread
    // bytes resets the connection, and the reset would hide the 503 from a
    // scraper whose request came with its connection.
    let mut discard = [0u8; 1024];
    let _ = stream.try_read(&mut discard);
    // A fresh socket's send buffer holds this easily; if it does not, the
    // client is closed without an answer, which tells it the same.
    let _ = stream.try_write(REFUSAL);
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
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::{
        bind, read_head, request_target, respond, serve, Probes, MAX_CONNECTIONS, MAX_REQUEST_HEAD,
        REFUSAL, REQUEST_TIMEOUT, WRITE_TIMEOUT,
    };
    use crate::metrics::METRICS_CONNECTIONS_REFUSED_TOTAL;

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

    /// The refusals counted so far by the process-wide recorder.
    fn refused(handle: &PrometheusHandle) -> f64 {
        handle
            .render()
            .lines()
            .find_map(|line| {
                let value = line.strip_prefix(METRICS_CONNECTIONS_REFUSED_TOTAL)?;
                value.trim().parse().ok()
            })
            .unwrap_or(0.0)
    }

    /// Everything the endpoint answers to `request` on a new connection.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the endpoint");
        stream.write_all(request).await.expect("send the request");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .expect("read the answer");
        answer
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

    #[test]
    fn refusal_is_well_formed() {
        let text = std::str::from_utf8(REFUSAL).expect("the refusal is ASCII");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .expect("the refusal has a blank line");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    }

    /// An attacker holding every slot with idle connections gets the next
    /// ones refused at once and counted; the idle ones are closed at the
    /// request timeout, and then a scrape is served again.
    #[tokio::test(start_paused = true)]
    async fn connections_over_the_cap_are_refused_and_idle_ones_closed() {
        let handle = crate::metrics::install();
        let listener = bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind on loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let server = tokio::spawn(serve(listener, handle.clone(), probes()));
        let start = Instant::now();

        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.expect("connect idle"));
        }
        let before = refused(&handle);
        for _ in 0..3 {
            let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
            assert!(
                answer.starts_with(b"HTTP/1.1 503 "),
                "over the cap: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let mut silent = TcpStream::connect(addr).await.expect("connect one more");
        let mut answer = Vec::new();
        silent
            .read_to_end(&mut answer)
            .await
            .expect("a silent client over the cap is closed, not reset");
        assert!(answer.starts_with(b"HTTP/1.1 503 "));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "refused at once, not after {:?}",
            start.elapsed()
        );
        assert!(refused(&handle) - before >= 4.0, "{}", handle.render());

        for mut stream in idle {
            let mut byte = [0u8; 1];
            let n = stream
                .read(&mut byte)
                .await
                .expect("an idle connection is closed, not reset");
            assert_eq!(n, 0, "an idle connection gets no answer");
        }
        let waited = start.elapsed();
        assert!(
            waited >= REQUEST_TIMEOUT && waited < REQUEST_TIMEOUT + Duration::from_secs(1),
            "idle connections closed after {waited:?}"
        );

        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        server.abort();
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
