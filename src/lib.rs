//! pgsni: a PostgreSQL edge listener that routes TLS sessions by server name
//! (SNI), passing them through without decrypting them, or terminating them
//! with a route's own certificate where the route says so.
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
//! - [`net`]: networks (CIDR lists) that decide whom pgsni trusts and
//!   reaches, and how client addresses are grouped for per-source budgets.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`cli`]: command-line parsing and the `serve` / `check` commands.
//!
//! Beside the broker:
//!
//! - [`certs`]: `pgsni certs`, a small CA issuing tenant and client
//!   certificates.
//! - [`demo`]: `pgsni demo`, the broker in front of two TLS tenants on this
//!   machine.
// Unsafe code is denied everywhere except in `proxy::sockmap::sys`, the one
// module that makes raw `bpf(2)` and epoll system calls; it opts out with
// `#![allow(unsafe_code)]` and explains each block.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod certs;
pub mod cli;
pub mod demo;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod routing;
pub mod tls;
pub mod wire;
