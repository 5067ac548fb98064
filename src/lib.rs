//! pgsni: a PostgreSQL edge listener that routes TLS sessions by server name
//! (SNI) without ever decrypting them.
//!
//! # Layout
//!
//! The modules follow the path of one connection:
//!
//! - [`wire`]: the plaintext Postgres start-up packets (SSLRequest,
//!   GSSENCRequest, StartupMessage, …) and the replies pgsni writes itself.
//! - [`tls`]: the ClientHello reader (record reassembly, SNI and ALPN), server
//!   name validation, and TLS alerts.
//! - [`routing`]: the routing table, its file format, and the watcher that
//!   swaps in a new table when the file changes.
//! - [`proxy`]: the listener, the per-connection state machine, the backend
//!   connector and the byte forwarder.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`cli`]: command-line parsing and the `serve` / `check` commands.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod tls;
pub mod wire;
