//! Forwarding the encrypted bytes, untouched, in both directions.
//!
//! Each direction is a pump driven by readiness rather than by a buffer of
//! its own: it waits until the source socket is readable, then reads into
//! the worker thread's scratch buffer and writes straight on to the peer,
//! without awaiting in between. An idle session therefore holds no user-space
//! buffer at all (only its two sockets and a small task), which is what lets
//! one process keep tens of thousands of pooled connections open. Only when
//! the peer cannot take everything at once does the pump copy the remainder
//! into a buffer of its own, wait for the peer, and free it again.
//!
//! Syscalls are the cost that shows on a busy machine, so a short read is
//! taken as proof that the socket is drained: the pump tells the runtime so
//! instead of reading again only to be told `EAGAIN`.
//!
//! An EOF in one direction is passed on as a half-close (`shutdown(SHUT_WR)`)
//! while the other direction keeps going, because Postgres clients and
//! servers may still be sending after the peer has finished. An error in
//! either direction ends both.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::metrics::Counter;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::metrics::{ACTIVE_CONNECTIONS, FORWARDED_BYTES_TOTAL};
use crate::routing::table::TlsMode;

/// Size of each worker thread's scratch buffer: several TLS records per
/// read, so that bulk transfers take few syscalls.
const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    /// Scratch space shared by every pump on this thread. It is only borrowed
    /// inside one synchronous read-and-write step, never across an `.await`.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

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
///
/// The session is counted in `pgsni_active_connections` from this call until
/// the returned future is dropped.
pub fn forward(client: TcpStream, backend: TcpStream, route: &str, replayed: u64) -> Forward {
    // Two TCP sockets and opaque bytes: only a passthrough session is
    // forwarded here (a terminated one has TLS on the client side).
    let metrics = SessionMetrics::new(route, TlsMode::Passthrough.label());
    metrics.client_to_backend.increment(replayed);
    Forward {
        client,
        backend,
        upstream: Pump::default(),
        downstream: Pump::default(),
        metrics,
        replayed,
    }
}

/// A forwarding session: the future [`forward`] returns.
///
/// Written out by hand rather than as an `async fn`, because its size is what
/// every idle session costs: it holds the two sockets, two small pumps and
/// the metric handles, and waits through the sockets' own readiness slots
/// (`poll_read_ready`, `poll_write_ready`) instead of keeping a waiter for
/// each. An error in either direction ends both.
#[must_use = "futures do nothing unless polled"]
pub struct Forward {
    client: TcpStream,
    backend: TcpStream,
    /// Client to backend.
    upstream: Pump,
    /// Backend to client.
    downstream: Pump,
    metrics: SessionMetrics,
    replayed: u64,
}

impl Future for Forward {
    type Output = io::Result<Forwarded>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin, and so is `Forward`.
        let this = self.get_mut();
        let upstream = this.upstream.poll(
            cx,
            &this.client,
            &this.backend,
            &this.metrics.client_to_backend,
        )?;
        let downstream = this.downstream.poll(
            cx,
            &this.backend,
            &this.client,
            &this.metrics.backend_to_client,
        )?;
        if upstream.is_pending() || downstream.is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(Forwarded {
            client_to_backend: this.replayed + this.upstream.moved,
            backend_to_client: this.downstream.moved,
        }))
    }
}

/// One direction of a session.
#[derive(Default)]
struct Pump {
    /// Bytes the peer could not take yet; allocated only under backpressure.
    pending: Vec<u8>,
    /// How much of `pending` has been written since.
    flushed: usize,
    /// Bytes read from the source so far.
    moved: u64,
    /// The source's EOF has been passed on.
    done: bool,
}

impl Pump {
    /// Copies `from` to `to` as far as the sockets allow without waiting;
    /// ready once `from` has reached EOF and `to` has been half-closed.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counter: &Counter,
    ) -> Poll<io::Result<()>> {
        while !self.done {
            // Bytes the peer refused go first: nothing more is read until it
            // has taken them, so a slow reader slows its writer down instead
            // of growing a buffer here.
            while let Some(rest) = self
                .pending
                .get(self.flushed..)
                .filter(|rest| !rest.is_empty())
            {
                ready!(to.poll_write_ready(cx))?;
                match to.try_write(rest) {
                    Ok(written) => self.flushed += written,
                    // `try_write` has cleared the stale readiness.
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
            }
            if self.flushed > 0 {
                // Freed, so that an idle session holds no buffer.
                self.pending = Vec::new();
                self.flushed = 0;
            }

            ready!(from.poll_read_ready(cx))?;
            let mut step = None;
            match from.try_io(Interest::READABLE, || {
                relay(from, to, &mut self.pending, &mut step)
            }) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
            match step {
                None => {}
                Some(Step::Eof) => {
                    // The peer may already be gone; its own direction reports that.
                    let _ = SockRef::from(to).shutdown(Shutdown::Write);
                    self.done = true;
                }
                Some(Step::Moved { read }) => {
                    counter.increment(read as u64);
                    self.moved += read as u64;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// What one read-and-write step did.
#[derive(Clone, Copy)]
enum Step {
    /// The source reached EOF.
    Eof,
    /// `read` bytes were read and written on (or kept as pending).
    Moved { read: usize },
}

/// One synchronous step: read what `from` has into the thread's scratch
/// buffer and write it on to `to`, keeping in `pending` what `to` refused.
/// What happened is left in `step`.
///
/// Runs inside `try_io(READABLE)` on `from`, where returning `WouldBlock`
/// clears `from`'s read readiness. Only the state of `from` may cause that: a
/// full `to` is no reason to stop watching `from`.
fn relay(
    from: &TcpStream,
    to: &TcpStream,
    pending: &mut Vec<u8>,
    step: &mut Option<Step>,
) -> io::Result<()> {
    SCRATCH.with_borrow_mut(|scratch| {
        let read = (&*SockRef::from(from)).read(scratch)?;
        if read == 0 {
            *step = Some(Step::Eof);
            return Ok(());
        }
        let data = &scratch[..read];
        let written = match (&*SockRef::from(to)).write(data) {
            Ok(written) => written,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(error) => return Err(error),
        };
        pending.extend_from_slice(&data[written..]);
        *step = Some(Step::Moved { read });
        if read < scratch.len() {
            // A short read drained the socket. Saying so clears the read
            // readiness now, instead of after one more read that could only
            // return EAGAIN. Bytes arriving meanwhile raise a newer readiness
            // event, which this does not clear.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    })
}

/// The live metrics of one session: its place in
/// `pgsni_active_connections{route,mode}` while it lives, and its byte
/// counters in `pgsni_forwarded_bytes_total{route,direction,mode}`.
pub struct SessionMetrics {
    _active: ActiveGuard,
    /// Bytes from the client to the backend.
    pub client_to_backend: Counter,
    /// Bytes from the backend to the client.
    pub backend_to_client: Counter,
}

impl SessionMetrics {
    /// Counts one more active session of `route` in `mode` (a
    /// [`TlsMode::label`]) until dropped.
    pub fn new(route: &str, mode: &'static str) -> Self {
        let counter = |direction: &'static str| ::metrics::counter!(FORWARDED_BYTES_TOTAL, "route" => route.to_owned(), "direction" => direction, "mode" => mode);
        Self {
            _active: ActiveGuard::new(route, mode),
            client_to_backend: counter("client_to_backend"),
            backend_to_client: counter("backend_to_client"),
        }
    }
}

/// Keeps `pgsni_active_connections{route,mode}` up to date for one session.
struct ActiveGuard(::metrics::Gauge);

impl ActiveGuard {
    fn new(route: &str, mode: &'static str) -> Self {
        let gauge =
            ::metrics::gauge!(ACTIVE_CONNECTIONS, "route" => route.to_owned(), "mode" => mode);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (connected, accepted) = tokio::join!(connect, listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Reads to EOF in small pieces, so that the writer outpaces the reader.
    async fn read_slowly(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 1000];
        loop {
            match stream.read(&mut chunk).await.unwrap() {
                0 => return received,
                n => received.extend_from_slice(&chunk[..n]),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_readers_get_every_byte_in_order_both_ways() {
        let (mut client, client_side) = socket_pair().await;
        let (backend_side, mut backend) = socket_pair().await;
        let session = tokio::spawn(forward(client_side, backend_side, "test", 0));

        // Far more than the socket buffers hold, so the pumps must wait for
        // slow readers (the pending path) as well as take the fast path.
        let upstream = pattern(24 << 20, 1);
        let downstream = pattern(24 << 20, 2);
        let (mut client_read, mut client_write) = client.split();
        let (mut backend_read, mut backend_write) = backend.split();
        let send_up = async {
            client_write.write_all(&upstream).await.unwrap();
            client_write.shutdown().await.unwrap();
        };
        let send_down = async {
            backend_write.write_all(&downstream).await.unwrap();
            backend_write.shutdown().await.unwrap();
        };
        let ((), (), got_up, got_down) = tokio::join!(
            send_up,
            send_down,
            read_slowly(&mut backend_read),
            read_slowly(&mut client_read),
        );
        assert!(got_up == upstream, "client-to-backend bytes differ");
        assert!(got_down == downstream, "backend-to-client bytes differ");
        let totals = session.await.unwrap().unwrap();
        assert_eq!(totals.client_to_backend, upstream.len() as u64);
        assert_eq!(totals.backend_to_client, downstream.len() as u64);
    }

    #[tokio::test]
    async fn a_half_close_is_passed_on_and_the_other_way_keeps_flowing() {
        let (mut client, client_side) = socket_pair().await;
        let (backend_side, mut backend) = socket_pair().await;
        let session = tokio::spawn(forward(client_side, backend_side, "test", 0));
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        backend.write_all(b"reply after EOF").await.unwrap();
        drop(backend);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after EOF");
        session.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_reset_ends_both_directions() {
        let (client, client_side) = socket_pair().await;
        let (backend_side, _backend) = socket_pair().await;
        let session = tokio::spawn(forward(client_side, backend_side, "test", 0));
        // Linger 0 makes close send RST. The backend stays open and silent,
        // so only the error can end the session.
        SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        let outcome = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session must end promptly")
            .unwrap();
        assert!(outcome.is_err(), "a reset is reported as an error");
    }
}
