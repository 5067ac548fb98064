//! The public sockets and their accept loops.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tracing::error;

use super::{session, Context};
use crate::metrics::ACCEPT_ERRORS_TOTAL;

/// Pending connections the kernel may queue: bursts of reconnecting pools are
/// normal at a database edge.
const BACKLOG: i32 = 1024;

/// The first pause after an accept error; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause after repeated accept errors (EMFILE under a flood).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Binds a listening socket on `addr`.
///
/// IPv6 sockets are IPv6-only, so that `[::]:5432` and `0.0.0.0:5432` can be
/// given together. `SO_REUSEADDR` lets a restarted broker bind at once while
/// old connections sit in TIME_WAIT, and `SO_REUSEPORT` lets a new broker
/// bind beside an old one that is draining, for upgrades without downtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, context: Arc<Context>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                tokio::spawn(session::run(stream, peer, context.clone()));
            }
            Err(error) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the
                // queued connections wait in the backlog until descriptors free up.
                ::metrics::counter!(ACCEPT_ERRORS_TOTAL, "kind" => error_kind(&error)).increment(1);
                error!(%error, pause = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn error_kind(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(24) => "emfile",
        Some(23) => "enfile",
        Some(105) => "enobufs",
        Some(12) => "enomem",
        _ => "other",
    }
}
