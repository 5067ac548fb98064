//! One client connection, from accept to forwarding.
//!
//! The start-up is a small state machine, each step a function:
//!
//! ```text
//! Negotiate ──SSLRequest/S──▶ ReadHello ──SNI──▶ Route ──▶ ConnectBackend ──▶ forward
//!     │  └──────direct TLS──────▲                   │
//!     └─ GSSENCRequest/N: read the next packet      └─ terminated route, or no SNI with
//!                                                      --fallback-cert: terminate::run
//! ```
//!
//! The whole start-up runs under the handshake deadline; every exit is an
//! [`Exit`] naming its [`Outcome`] and what the client is told: a Postgres
//! ErrorResponse while the session is plaintext, a TLS alert once the client
//! has started TLS, or nothing when there is no one to tell.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::cancel::{CancelTarget, Registration};
use super::limits::{LimitExceeded, RouteSlot};
use super::terminate::{self, Handoff};
use super::{backend, forward, Context, Outcome, ProxyProtocol};
use crate::metrics::HANDSHAKE_SECONDS;
use crate::routing::table::TlsMode;
use crate::routing::Resolved;
use crate::tls::alert::{fatal_alert, AlertDescription};
use crate::tls::client_hello::{read_client_hello, MAX_CLIENT_HELLO_BYTES};
use crate::tls::server_name::HostName;
use crate::wire::proxy_header::{self, ProxyHeader, ProxyHeaderError};
use crate::wire::reply::{self, Refusal};
use crate::wire::startup::{classify, StartupPacket, MAX_STARTUP_PACKET_LEN};

/// How long a client refused by a limit has to send its first packet, so
/// that the refusal can be phrased for it; then it is simply closed.
const REFUSAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// ALPN protocol id of Postgres (PG17): required of direct-TLS clients.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The step a session is in; kept so that a deadline can say where it hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the first packet(s) in plaintext.
    Negotiate,
    /// TLS has begun; reading the ClientHello.
    ReadHello,
    /// Looking the server name up.
    Route,
    /// Trying the route's backends.
    ConnectBackend,
}

impl Phase {
    /// Whether the client has started TLS, which decides how to refuse it.
    fn tls_started(self) -> bool {
        self != Self::Negotiate
    }
}

/// What the client is told when its start-up is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Close without a word: the client is gone or said nothing we can
    /// answer.
    Close,
    /// A FATAL ErrorResponse (plaintext phase only).
    Postgres(Refusal),
    /// A fatal TLS alert (once TLS has begun).
    Alert(AlertDescription),
    /// Once TLS has begun with a hello pgsni understood: the refusal inside
    /// the broker's own TLS session where a fallback certificate is
    /// configured, the alert otherwise.
    Tls(AlertDescription, Refusal),
}

/// How a start-up ended without reaching forwarding.
#[derive(Clone, Debug)]
pub struct Exit {
    /// The metric outcome.
    pub outcome: Outcome,
    /// What to tell the client.
    pub reply: Reply,
}

impl Exit {
    fn new(outcome: Outcome, reply: Reply) -> Self {
        Self { outcome, reply }
    }

    fn silent(outcome: Outcome) -> Self {
        Self::new(outcome, Reply::Close)
    }
}

/// Where a start-up led.
enum Started {
    /// A passthrough route's backend has the ClientHello.
    Passthrough(Routed),
    /// A terminated route, or a client without a server name that the
    /// broker's own TLS session may route: [`terminate`] goes on.
    Terminate(Handoff),
}

/// A start-up that reached a backend, which has not seen the hello yet.
struct Routed {
    backend: TcpStream,
    route: Arc<str>,
    /// What the session holds while it lives: its entry in the cancel
    /// registry and its place under the route's connection limit.
    holds: (Registration, RouteSlot),
}

/// How the client began TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Negotiation {
    /// SSLRequest, then `S`.
    Classic,
    /// The ClientHello came first (PG17 `sslnegotiation=direct`).
    Direct,
}

/// Runs one connection to its end. Never fails: every exit is counted and
/// logged here.
pub async fn run(client: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let mut alive = context.lifecycle.session();
    tokio::select! {
        () = serve(client, peer, &context) => {}
        () = alive.closing() => info!(outcome = "drain_timeout", "session closed at the end of the drain period"),
    }
}

async fn serve(mut client: TcpStream, peer: SocketAddr, context: &Context) {
    let accepted = Instant::now();
    if let Err(error) = context.sockets.apply(&client) {
        debug!(%peer, %error, "cannot set socket options on client socket");
    }
    let mut phase = Phase::Negotiate;
    // Everything read during start-up, bounded by the parsers' caps; kept
    // here so that a refusal in the broker's own TLS can replay the hello.
    let mut buf = Vec::with_capacity(1024);
    let deadline = accepted + context.timeouts.handshake;
    // Boxed, so that its sizeable state is freed once the session is
    // routed: an idle session then holds only what forwarding needs.
    let started = tokio::time::timeout_at(
        deadline,
        Box::pin(start_up(&mut client, peer, context, &mut phase, &mut buf)),
    );
    let exit = match started.await {
        Ok(Ok(Started::Terminate(handoff))) => {
            let received = std::mem::take(&mut buf);
            // Boxed: a terminated session's TLS state is large, and keeping
            // it out of line keeps every passthrough session small.
            Box::pin(terminate::run(
                client, received, handoff, context, accepted, deadline,
            ))
            .await;
            return;
        }
        Ok(Ok(Started::Passthrough(routed))) => {
            let hello = std::mem::take(&mut buf);
            passthrough(client, routed, hello, context, accepted).await;
            return;
        }
        Ok(Err(exit)) => exit,
        Err(_elapsed) => {
            debug!(?phase, "handshake deadline reached");
            // A client inside TLS deserves an alert; a silent one gets a close.
            let reply = match phase {
                Phase::Route | Phase::ConnectBackend => {
                    Reply::Alert(AlertDescription::InternalError)
                }
                _ => Reply::Close,
            };
            Exit::new(Outcome::HandshakeTimeout, reply)
        }
    };
    record_exit(exit.outcome);
    debug_assert!(
        !matches!(exit.reply, Reply::Postgres(_)) || !phase.tls_started(),
        "a Postgres reply is only sent in plaintext"
    );
    send_reply(client, exit.reply, &buf, context).await;
}

/// Replays the ClientHello to the backend and forwards until the session
/// ends: in the kernel where a socket map is loaded and takes the pair, in
/// user space otherwise.
async fn passthrough(
    client: TcpStream,
    routed: Routed,
    hello: Vec<u8>,
    context: &Context,
    accepted: Instant,
) {
    let Routed {
        backend,
        route,
        holds: _holds,
    } = routed;
    let replayed = hello.len() as u64;
    // The pair enters the map before the hello is replayed: the kernel only
    // redirects what arrives once a socket is in the map, and nothing can
    // arrive before the backend has the hello.
    let path = match &context.sockmap {
        Some(sockmap) => match sockmap.insert(client, backend) {
            Ok(spliced) => DataPath::Kernel(spliced),
            Err(refused) => {
                debug!(reason = %refused, "socket map refused the pair; forwarding in user space");
                let (client, backend) = refused.into_sockets();
                DataPath::User(client, backend)
            }
        },
        None => DataPath::User(client, backend),
    };
    let (client, mut backend) = match path {
        DataPath::Kernel(mut spliced) => {
            if let Err(error) = spliced.replay(&hello).await {
                warn!(%error, "backend failed while receiving the ClientHello");
                record_exit(Outcome::BackendUnavailable);
                return;
            }
            drop(hello);
            routed_now(accepted);
            forwarding(
                Box::pin(spliced.finished(&route)),
                context,
                &route,
                accepted,
            )
            .await;
            return;
        }
        DataPath::User(client, backend) => (client, backend),
    };
    // The ClientHello, exactly as received, is the first thing the backend
    // sees after its `S`.
    if let Err(error) = backend.write_all(&hello).await {
        warn!(%error, "backend failed while receiving the ClientHello");
        record_exit(Outcome::BackendUnavailable);
        let reply = backend_unavailable(&route).reply;
        send_reply(client, reply, &hello, context).await;
        return;
    }
    drop(hello);
    routed_now(accepted);
    forwarding(
        Box::pin(forward::forward(client, backend, &route, replayed)),
        context,
        &route,
        accepted,
    )
    .await;
}

/// Where a routed passthrough session's bytes are moved.
enum DataPath {
    /// Spliced in the kernel by the socket map.
    Kernel(crate::proxy::sockmap::Spliced),
    /// Copied by [`forward::forward`].
    User(TcpStream, TcpStream),
}

/// Counts a routed session, the moment its first byte reached the backend.
fn routed_now(accepted: Instant) {
    Outcome::Routed.record();
    ::metrics::histogram!(HANDSHAKE_SECONDS).record(accepted.elapsed().as_secs_f64());
}

/// Runs a forwarding session to its end (or until a reload has removed its
/// route for the grace period) and logs how it ended.
///
/// The session comes boxed: async state machines keep a moved-in future
/// twice over, and the forwarding state is most of what an idle session
/// costs, so it is allocated once, on its own.
async fn forwarding(
    session: std::pin::Pin<Box<impl Future<Output = std::io::Result<forward::Forwarded>> + ?Sized>>,
    context: &Context,
    route: &str,
    accepted: Instant,
) {
    let outcome = Outcome::Routed.as_str();
    tokio::select! {
        result = session => match result {
            Ok(totals) => info!(
                outcome,
                client_to_backend = totals.client_to_backend,
                backend_to_client = totals.backend_to_client,
                seconds = accepted.elapsed().as_secs_f64(),
                "session closed"
            ),
            Err(error) => info!(
                outcome,
                %error,
                seconds = accepted.elapsed().as_secs_f64(),
                "session closed by an error"
            ),
        },
        () = route_removed(context, route) => {
            info!(outcome, "route removed by a reload; session closed");
        }
    }
}

/// Counts and logs a start-up that ended without forwarding.
pub(crate) fn record_exit(outcome: Outcome) {
    outcome.record();
    if outcome.is_notable() {
        info!(outcome = outcome.as_str(), "connection refused");
    } else {
        debug!(
            outcome = outcome.as_str(),
            "connection closed during start-up"
        );
    }
}

/// Completes once `route` has been missing from the table for the
/// configured grace period after a reload; never without the option.
///
/// Returned boxed, and allocated only when the option is set: it is part of
/// every forwarding session, and most run without it.
pub(crate) fn route_removed<'a>(
    context: &'a Context,
    route: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    match context.close_removed_after {
        Some(grace) => Box::pin(watch_route(context, route, grace)),
        // A zero-sized future: boxing it allocates nothing.
        None => Box::pin(std::future::pending()),
    }
}

async fn watch_route(context: &Context, route: &str, grace: std::time::Duration) {
    let mut generation = context.routes.subscribe();
    loop {
        if generation.changed().await.is_err() {
            // The routes outlive every session; nothing to watch otherwise.
            return std::future::pending().await;
        }
        if context.routes.load().has_route(route) {
            continue;
        }
        tokio::time::sleep(grace).await;
        if !context.routes.load().has_route(route) {
            return;
        }
    }
}

/// The state machine: negotiate, read the hello, route, connect the backend.
async fn start_up(
    client: &mut TcpStream,
    peer: SocketAddr,
    context: &Context,
    phase: &mut Phase,
    buf: &mut Vec<u8>,
) -> Result<Started, Exit> {
    let (peer, destination) = read_proxy_header(client, peer, context.proxy_protocol, buf).await?;
    // Admission, now that the client's address is known (even behind a load
    // balancer). The slot is held until the session is routed.
    let admission = context.limits.admit(peer.ip(), context.lifecycle.active());
    let negotiation = match &admission {
        Ok(_slot) => negotiate(client, peer, context, buf, None).await?,
        // Over a limit, wait only briefly for the first packet: just long
        // enough to refuse in the form the client understands.
        Err(limit) => {
            let refusing = negotiate(client, peer, context, buf, Some(*limit));
            match tokio::time::timeout(REFUSAL_GRACE, refusing).await {
                Ok(negotiated) => negotiated?,
                Err(_) => return Err(Exit::silent((*limit).into())),
            }
        }
    };

    *phase = Phase::ReadHello;
    let name = read_hello(client, buf, negotiation).await?;

    let span = tracing::Span::current();
    *phase = Phase::Route;
    // The rest of a terminated start-up happens inside pgsni's own TLS
    // session, still holding the handshake slot.
    let handoff = |route| Handoff {
        route,
        direct: negotiation == Negotiation::Direct,
        peer,
        destination,
        handshake: admission.ok(),
    };
    let resolved = match route(context, name.as_ref()) {
        Ok(resolved) => resolved,
        // No server name and no default route: with the broker's own
        // identity, the StartupMessage may still name a terminated route.
        Err(_) if name.is_none() && context.fallback.is_some() => {
            return Ok(Started::Terminate(handoff(None)));
        }
        Err(exit) => return Err(exit),
    };
    span.record("route", &*resolved.route);
    if let TlsMode::Terminate(_) = resolved.mode {
        return Ok(Started::Terminate(handoff(Some(resolved))));
    }
    span.record("mode", resolved.mode.label());
    let route_slot = context
        .limits
        .admit_route(&resolved.route, resolved.max_connections)
        .map_err(|limit| {
            debug!("route connection limit reached");
            Exit::new(
                limit.into(),
                Reply::Tls(
                    AlertDescription::InternalError,
                    Refusal::too_many_connections(limit.reason()),
                ),
            )
        })?;

    *phase = Phase::ConnectBackend;
    let proxy_header = resolved
        .proxy_protocol
        .then(|| proxy_header::encode_v2(peer, destination));
    let Some((backend, address)) = backend::connect_first(
        &resolved.backends,
        context.timeouts.connect,
        proxy_header.as_deref(),
        &context.sockets,
    )
    .await
    else {
        warn!("no backend available");
        return Err(backend_unavailable(&resolved.route));
    };
    debug!(backend = %address, ?negotiation, "routed");
    let backend_addr = backend.peer_addr().map_err(|error| {
        warn!(backend = %address, %error, "backend connection lost");
        backend_unavailable(&resolved.route)
    })?;
    let cancel_target = CancelTarget::Tcp {
        addr: backend_addr,
        proxy_protocol: resolved.proxy_protocol,
    };
    Ok(Started::Passthrough(Routed {
        holds: (
            context.cancels.register(peer.ip(), cancel_target),
            route_slot,
        ),
        backend,
        route: resolved.route,
    }))
}

/// Reads the PROXY header a load balancer puts before the client's bytes,
/// when this listener expects one, and returns the client's address and the
/// address it connected to. Bytes after the header stay in `buf`.
async fn read_proxy_header(
    client: &mut TcpStream,
    peer: SocketAddr,
    mode: ProxyProtocol,
    buf: &mut Vec<u8>,
) -> Result<(SocketAddr, SocketAddr), Exit> {
    let local = client.local_addr().map_err(|error| {
        debug!(%error, "socket has no local address");
        Exit::silent(Outcome::IoError)
    })?;
    let span = tracing::Span::current();
    if mode == ProxyProtocol::Off {
        span.record("client", tracing::field::display(peer));
        return Ok((peer, local));
    }
    let bad = |error: ProxyHeaderError| {
        debug!(%error, "PROXY header refused");
        Exit::silent(Outcome::BadProxyHeader)
    };
    loop {
        if mode == ProxyProtocol::Optional && proxy_header::starts_with_header(buf) == Some(false) {
            span.record("client", tracing::field::display(peer));
            return Ok((peer, local));
        }
        let Some((header, len)) = proxy_header::parse(buf).map_err(bad)? else {
            read_more(client, buf, proxy_header::MAX_V2_PAYLOAD + 16).await?;
            continue;
        };
        buf.drain(..len);
        return match header {
            ProxyHeader::Proxy {
                source,
                destination,
            } => {
                span.record("client", tracing::field::display(source));
                Ok((source, destination))
            }
            ProxyHeader::Unknown => {
                span.record("client", tracing::field::display(peer));
                Ok((peer, local))
            }
            // Load balancers' health checks: nothing to route, just close.
            ProxyHeader::Local => Err(Exit::silent(Outcome::HealthCheck)),
        };
    }
}

/// Every backend of `route` failed.
fn backend_unavailable(route: &str) -> Exit {
    Exit::new(
        Outcome::BackendUnavailable,
        Reply::Tls(
            AlertDescription::InternalError,
            Refusal::backend_unavailable(route),
        ),
    )
}

/// Finds the route for `name`, or for a hello without a name the default
/// route, if the table has one.
fn route(context: &Context, name: Option<&HostName>) -> Result<Resolved, Exit> {
    let routes = context.routes.load();
    match name {
        Some(name) => routes.lookup(name).ok_or_else(|| {
            Exit::new(
                Outcome::UnknownServerName,
                Reply::Tls(
                    AlertDescription::UnrecognizedName,
                    Refusal::unknown_server_name(name.as_str()),
                ),
            )
        }),
        None => routes.lookup_default().ok_or_else(|| {
            debug!("ClientHello without a server name, and no default route");
            Exit::new(
                Outcome::NoServerName,
                Reply::Tls(AlertDescription::UnrecognizedName, Refusal::NO_SERVER_NAME),
            )
        }),
    }
}

/// Reads plaintext packets until the client starts TLS. On return, `buf`
/// holds only bytes of the TLS stream.
///
/// With `refuse` set, a connection limit refuses the client as soon as its
/// first packet shows how to say so; plaintext cancels still go through.
async fn negotiate(
    client: &mut TcpStream,
    peer: SocketAddr,
    context: &Context,
    buf: &mut Vec<u8>,
    refuse: Option<LimitExceeded>,
) -> Result<Negotiation, Exit> {
    let mut answered_gssenc = false;
    loop {
        let (packet, len) = match classify(buf) {
            Ok(Some(classified)) => classified,
            Ok(None) => {
                read_more(client, buf, MAX_STARTUP_PACKET_LEN).await?;
                continue;
            }
            Err(error) => {
                debug!(%error, "invalid start-up packet");
                return Err(Exit::new(
                    Outcome::BadRequest,
                    Reply::Postgres(Refusal::INVALID_STARTUP_PACKET),
                ));
            }
        };
        if let Some(limit) = refuse {
            debug!(limit = limit.reason(), "connection refused by a limit");
            match packet {
                StartupPacket::CancelRequest { .. } => {}
                StartupPacket::DirectTls => {
                    return Err(Exit::new(
                        limit.into(),
                        Reply::Tls(
                            AlertDescription::InternalError,
                            Refusal::too_many_connections(limit.reason()),
                        ),
                    ))
                }
                _ => {
                    return Err(Exit::new(
                        limit.into(),
                        Reply::Postgres(Refusal::too_many_connections(limit.reason())),
                    ))
                }
            }
        }
        match packet {
            StartupPacket::SslRequest => {
                if buf.len() > len {
                    debug!(extra = buf.len() - len, "unencrypted data after SSLRequest");
                    return Err(Exit::new(
                        Outcome::DataAfterSslRequest,
                        Reply::Postgres(Refusal::DATA_AFTER_SSL_REQUEST),
                    ));
                }
                buf.clear();
                write(client, &reply::ssl_accept()).await?;
                return Ok(Negotiation::Classic);
            }
            StartupPacket::DirectTls => return Ok(Negotiation::Direct),
            StartupPacket::GssEncRequest if !answered_gssenc => {
                answered_gssenc = true;
                buf.drain(..len);
                write(client, &reply::gssenc_refuse()).await?;
            }
            StartupPacket::GssEncRequest => {
                debug!("second GSSENCRequest");
                return Err(Exit::new(
                    Outcome::BadRequest,
                    Reply::Postgres(Refusal::INVALID_STARTUP_PACKET),
                ));
            }
            StartupPacket::Startup { major, minor } => {
                debug!(major, minor, "plaintext StartupMessage refused");
                return Err(Exit::new(
                    Outcome::PlaintextRefused,
                    Reply::Postgres(Refusal::PLAINTEXT),
                ));
            }
            StartupPacket::CancelRequest { .. } => {
                // As Postgres does: no answer, the connection just closes.
                let request = buf.get(..len).unwrap_or_default();
                context
                    .cancels
                    .forward(peer, request, context.timeouts.connect)
                    .await;
                return Err(Exit::silent(Outcome::CancelRequest));
            }
        }
    }
}

/// Reads until `buf` holds a complete ClientHello and returns its validated
/// server name, or `None` when it carries none. `buf` keeps every byte read,
/// to be replayed to the backend.
async fn read_hello(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    negotiation: Negotiation,
) -> Result<Option<HostName>, Exit> {
    // Only hellos split across records need this; it stays empty otherwise.
    let mut scratch = Vec::new();
    loop {
        let hello = match read_client_hello(buf, &mut scratch) {
            Ok(Some(hello)) => hello,
            Ok(None) => {
                read_more(client, buf, MAX_CLIENT_HELLO_BYTES).await?;
                continue;
            }
            Err(error) => {
                debug!(reason = error.reason(), "invalid ClientHello");
                return Err(Exit::new(
                    Outcome::BadClientHello,
                    Reply::Alert(error.alert()),
                ));
            }
        };
        let name = hello.server_name().map(HostName::parse);
        if let Some(Ok(name)) = &name {
            tracing::Span::current().record("server_name", name.as_str());
        }
        if negotiation == Negotiation::Direct && !hello.offers_alpn(ALPN_POSTGRESQL) {
            debug!("direct TLS without ALPN \"postgresql\"");
            return Err(Exit::new(
                Outcome::NoApplicationProtocol,
                Reply::Alert(AlertDescription::NoApplicationProtocol),
            ));
        }
        let (Some(name), Some(raw)) = (name, hello.server_name()) else {
            return Ok(None);
        };
        return name.map(Some).map_err(|error| {
            info!(server_name = %raw.escape_ascii(), %error, "invalid server name");
            Exit::new(
                Outcome::InvalidServerName,
                Reply::Tls(
                    AlertDescription::UnrecognizedName,
                    Refusal::INVALID_SERVER_NAME,
                ),
            )
        });
    }
}

/// Appends what the client sent next to `buf`, never growing it past `cap`.
async fn read_more(client: &mut TcpStream, buf: &mut Vec<u8>, cap: usize) -> Result<(), Exit> {
    let room = cap.saturating_sub(buf.len());
    if room == 0 {
        // The parsers refuse before their cap; this guards the invariant.
        return Err(Exit::new(
            Outcome::BadClientHello,
            Reply::Alert(AlertDescription::RecordOverflow),
        ));
    }
    match client.read_buf(&mut (&mut *buf).limit(room)).await {
        Ok(0) => Err(Exit::silent(Outcome::ClientClosed)),
        Ok(_) => Ok(()),
        Err(error) => {
            debug!(%error, "read failed during start-up");
            Err(Exit::silent(Outcome::IoError))
        }
    }
}

async fn write(client: &mut TcpStream, bytes: &[u8]) -> Result<(), Exit> {
    client.write_all(bytes).await.map_err(|error| {
        debug!(%error, "write failed during start-up");
        Exit::silent(Outcome::IoError)
    })
}

/// Tells the client why it is refused, then closes. `received` is what the
/// client sent since TLS began, replayed to the broker's own TLS session
/// when a refusal is given there.
async fn send_reply(mut client: TcpStream, reply: Reply, received: &[u8], context: &Context) {
    let bytes = match (reply, &context.fallback) {
        (Reply::Close, _) => return,
        (Reply::Postgres(refusal), _) => refusal.encode().to_vec(),
        (Reply::Tls(_, refusal), Some(fallback)) => {
            // Boxed: the TLS state is large and rarely needed.
            if let Err(error) = Box::pin(fallback.refuse(client, received, &refusal)).await {
                debug!(%error, "refusal in the broker's own TLS session not delivered");
            }
            return;
        }
        (Reply::Alert(description) | Reply::Tls(description, _), _) => {
            fatal_alert(description).to_vec()
        }
    };
    // Best effort: the client may already be gone.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        client.write_all(&bytes).await?;
        client.shutdown().await
    })
    .await;
}
