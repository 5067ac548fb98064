//! Accepting connections and carrying them to their tenant.
//!
//! - [`listener`]: binds the public sockets and runs the accept loops.
//! - [`session`]: one connection's state machine: negotiate, read the
//!   ClientHello, route, connect the backend, forward.
//! - [`backend`]: connecting to a tenant and doing its SSLRequest exchange.
//! - [`dial`]: where backends may be (IP addresses a client spelled,
//!   `--backend-networks`), and connecting to them.
//! - [`resolve`]: backend host names, resolved asynchronously and cached.
//! - [`cancel`]: forwarding plaintext CancelRequests by client address.
//! - [`fallback`]: refusals a person can read, in the broker's own TLS.
//! - [`forward`]: copying the encrypted bytes in both directions.
//! - [`lifecycle`]: readiness, live sessions, and draining on shutdown.
//! - [`limits`]: connection limits for the broker, routes and addresses.
//! - [`logging`]: log lines a client cannot inflate.
//! - [`outcome`]: why a connection ended its start-up, for metrics and logs.
//! - [`terminate`]: terminated routes, whose TLS pgsni completes itself with
//!   the route's own certificate.

pub mod backend;
pub mod cancel;
pub mod dial;
pub mod fallback;
pub mod forward;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod outcome;
pub mod resolve;
pub mod session;
pub mod sockmap;
pub mod terminate;

use std::time::Duration;

use std::sync::Arc;

use crate::net::Networks;
use crate::routing::SharedTable;

pub use outcome::Outcome;

/// Default bound on the whole start-up: first packet, ClientHello, and a
/// connected backend.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on one backend attempt (TCP connect and its `S`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default bound on a trusted load balancer's PROXY header: it writes the
/// header with the connection, so anything slower is not a balancer.
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Timeouts that bound a session's start-up.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From accept until the backend has the ClientHello. After that there is
    /// deliberately no timeout: long queries and idle pools are normal.
    pub handshake: Duration,
    /// For each backend attempt: TCP connect plus its answer to SSLRequest.
    pub connect: Duration,
    /// From accept until a trusted load balancer's PROXY header is read
    /// (within the handshake deadline).
    pub proxy_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            connect: DEFAULT_CONNECT_TIMEOUT,
            proxy_header: DEFAULT_PROXY_HEADER_TIMEOUT,
        }
    }
}

/// Default idle time before TCP keepalive probes start: finds peers that
/// vanished without a FIN (a crashed host, a dropped NAT entry) on sessions
/// that may legitimately be idle for hours.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);

/// Options applied to every client and backend socket.
#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// TCP keepalive idle time; `None` leaves keepalive off.
    pub keepalive: Option<Duration>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            keepalive: Some(DEFAULT_KEEPALIVE),
        }
    }
}

impl SocketOptions {
    /// Applies the options, and TCP_NODELAY: start-up is a ping-pong of
    /// small messages, and forwarded TLS records must not wait for Nagle.
    pub fn apply(&self, stream: &tokio::net::TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(idle) = self.keepalive {
            // Probe every idle/6 after the idle time; give up after 6 probes.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval((idle / 6).max(Duration::from_secs(1)))
                .with_retries(6);
            socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)?;
        }
        Ok(())
    }
}

/// Whether a listener expects a PROXY protocol header (v1 or v2) from the
/// load balancer in front of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyProtocol {
    /// Connections come straight from clients.
    #[default]
    Off,
    /// A header is used when present; connections without one are accepted.
    Optional,
    /// Every connection must start with a header.
    Required,
}

/// What every session needs, shared read-only by all of them.
#[derive(Clone)]
pub struct Context {
    /// The routing table in force.
    pub routes: SharedTable,
    /// Start-up bounds.
    pub timeouts: Timeouts,
    /// Live sessions by client address, for plaintext CancelRequests.
    pub cancels: Arc<cancel::CancelRegistry>,
    /// Whether this listener's connections start with a PROXY header.
    pub proxy_protocol: ProxyProtocol,
    /// The peers whose PROXY headers are believed (the load balancers);
    /// a header from anyone else closes the connection.
    pub trusted_proxies: Networks,
    /// Options for client and backend sockets.
    pub sockets: SocketOptions,
    /// Readiness and live sessions, for draining.
    pub lifecycle: Arc<lifecycle::Lifecycle>,
    /// Connection limits.
    pub limits: Arc<limits::Limits>,
    /// Grace period after which sessions of a route removed by a reload are
    /// closed; `None` lets them go on.
    pub close_removed_after: Option<Duration>,
    /// The broker's own certificate for readable refusals after TLS has
    /// begun; `None` answers those with bare alerts.
    pub fallback: Option<fallback::Fallback>,
    /// The kernel data path for passthrough sessions, where it is enabled
    /// and loaded; `None` forwards in user space.
    pub sockmap: Option<sockmap::Sockmap>,
    /// The certificates and keys of terminated routes, and the CAs their
    /// backends are verified against.
    pub identities: Arc<terminate::identity::IdentityStore>,
    /// How a client without a server name may name its route in its
    /// StartupMessage (with `fallback` only).
    pub startup_routing: terminate::StartupRouting,
    /// Resolves backend names and decides which addresses may be dialled.
    pub dialer: Arc<dial::Dialer>,
}
