//! Accepting connections and carrying them to their tenant.
//!
//! - [`listener`]: binds the public sockets and runs the accept loops.
//! - [`session`]: one connection's state machine: negotiate, read the
//!   ClientHello, route, connect the backend, forward.
//! - [`backend`]: connecting to a tenant and doing its SSLRequest exchange.
//! - [`cancel`]: forwarding plaintext CancelRequests by client address.
//! - [`forward`]: copying the encrypted bytes in both directions.
//! - [`outcome`]: why a connection ended its start-up, for metrics and logs.

pub mod backend;
pub mod cancel;
pub mod forward;
pub mod listener;
pub mod outcome;
pub mod session;

use std::time::Duration;

use std::sync::Arc;

use crate::routing::SharedTable;

pub use outcome::Outcome;

/// Default bound on the whole start-up: first packet, ClientHello, and a
/// connected backend.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on one backend attempt (TCP connect and its `S`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Timeouts that bound a session's start-up.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From accept until the backend has the ClientHello. After that there is
    /// deliberately no timeout: long queries and idle pools are normal.
    pub handshake: Duration,
    /// For each backend attempt: TCP connect plus its answer to SSLRequest.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
            connect: DEFAULT_CONNECT_TIMEOUT,
        }
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
}
