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
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::cancel::{CancelTarget, Registration};
use super::forward::{self, Forwarded};
use super::limits::{HandshakeSlot, LimitExceeded, RouteSlot};
use super::logging::{Untrusted, Verdict};
use super::terminate::{self, Handoff};
use super::{backend, Context, Outcome, ProxyProtocol};
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

/// What a start-up holds across its steps, kept outside them so that the
/// exit can still use it.
#[derive(Debug)]
struct Progress {
    /// The step it is in, for a deadline to say where it hit.
    phase: Phase,
    /// The client's place under the per-address handshake limit: held until
    /// the session is routed, or its refusal delivered (a refusal in the
    /// broker's own TLS is a handshake like any other).
    handshake: Option<HandshakeSlot>,
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
    /// The client's address (from the PROXY header, if any).
    client: SocketAddr,
    server_name: Option<Box<str>>,
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
///
/// The start-up runs boxed, inside its own span: once the session is routed
/// both are freed, and the task holds only a `Forwarding`, which is what an
/// idle pooled session costs for as long as it lives. The forwarding state
/// is polled where it lies rather than moved into a nested future, each move
/// of which would keep another copy in the task.
pub async fn run(client: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let mut alive = context.lifecycle.session();
    let mut routed = {
        // client, server_name, route and mode are recorded once known, so
        // that every line about this connection carries them.
        let span = conn_span(peer, None, None, None, None);
        let start = Box::pin(start(client, peer, &context).instrument(span.clone()));
        tokio::select! {
            routed = start => routed,
            () = alive.closing() => {
                span.in_scope(|| info!(outcome = "drain_timeout", "session closed at the end of the drain period"));
                return;
            }
        }
    };
    let Some(session) = &mut routed else {
        return;
    };
    let ended = tokio::select! {
        result = &mut session.data => Ended::Forwarded(result),
        () = route_removed(&context, &session.labels.route) => Ended::RouteRemoved,
        () = alive.closing() => Ended::Drained,
    };
    session.log_end(ended);
}

/// The span every line about a connection is logged in. Fields given as
/// `None` are declared but empty until recorded; `client` differs from
/// `peer` behind a PROXY-protocol load balancer.
fn conn_span(
    peer: SocketAddr,
    client: Option<SocketAddr>,
    server_name: Option<&str>,
    route: Option<&str>,
    mode: Option<&'static str>,
) -> tracing::Span {
    tracing::info_span!(
        "conn",
        %peer,
        client = client.map(tracing::field::display),
        server_name = server_name.map(|name| tracing::field::display(Untrusted::str(name))),
        route,
        mode,
    )
}

/// Takes a connection through its start-up: to a passthrough session whose
/// backend has the ClientHello, returned for forwarding, or to its end (a
/// refusal, or a terminated session run to completion).
async fn start(mut client: TcpStream, peer: SocketAddr, context: &Context) -> Option<Forwarding> {
    let accepted = Instant::now();
    if let Err(error) = context.sockets.apply(&client) {
        debug!(%peer, %error, "cannot set socket options on client socket");
    }
    let mut progress = Progress {
        phase: Phase::Negotiate,
        handshake: None,
    };
    // Everything read during start-up, bounded by the parsers' caps; kept
    // here so that a refusal in the broker's own TLS can replay the hello.
    let mut buf = Vec::with_capacity(1024);
    let deadline = accepted + context.timeouts.handshake;
    let started = tokio::time::timeout_at(
        deadline,
        start_up(&mut client, peer, context, &mut progress, &mut buf),
    );
    let exit = match started.await {
        Ok(Ok(Started::Terminate(handoff))) => {
            let received = std::mem::take(&mut buf);
            // Boxed: a terminated session's TLS state is large, and keeping
            // it out of line keeps every passthrough start-up small.
            Box::pin(terminate::run(
                client, received, handoff, context, accepted, deadline,
            ))
            .await;
            return None;
        }
        Ok(Ok(Started::Passthrough(routed))) => {
            let hello = std::mem::take(&mut buf);
            let timing = Timing { accepted, deadline };
            return replay_hello(client, peer, routed, hello, context, timing).await;
        }
        Ok(Err(exit)) => exit,
        Err(_elapsed) => {
            let phase = progress.phase;
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
        !matches!(exit.reply, Reply::Postgres(_)) || !progress.phase.tls_started(),
        "a Postgres reply is only sent in plaintext"
    );
    // `progress` still holds the handshake slot while the reply goes out.
    send_reply(client, exit.reply, &buf, context, deadline).await;
    None
}

/// When a start-up began, and when it must be done.
#[derive(Clone, Copy, Debug)]
struct Timing {
    accepted: Instant,
    deadline: Instant,
}

/// Replays the ClientHello to the backend, in the kernel's data path where a
/// socket map is loaded and takes the pair, in user space otherwise.
async fn replay_hello(
    client: TcpStream,
    peer: SocketAddr,
    routed: Routed,
    hello: Vec<u8>,
    context: &Context,
    Timing { accepted, deadline }: Timing,
) -> Option<Forwarding> {
    let Routed {
        backend,
        route,
        client: client_addr,
        server_name,
        holds,
    } = routed;
    // The pair enters the map before the hello is replayed: the kernel only
    // redirects what arrives once a socket is in the map, and nothing can
    // arrive before the backend has the hello.
    let path = match &context.sockmap {
        Some(sockmap) => match sockmap.insert(client, backend) {
            Ok(spliced) => Ok(spliced),
            Err(refused) => {
                debug!(reason = %refused, "socket map refused the pair; forwarding in user space");
                Err(refused.into_sockets())
            }
        },
        None => Err((client, backend)),
    };
    let data = match path {
        Ok(mut spliced) => {
            if let Err(error) = spliced.replay(&hello).await {
                warn!(%error, "backend failed while receiving the ClientHello");
                record_exit(Outcome::BackendUnavailable);
                return None;
            }
            let route = route.clone();
            // Boxed: the kernel path is the exception, and its supervision
            // is kept out of every user-space session's size.
            DataPath::Kernel(Box::pin(async move { spliced.finished(&route).await }))
        }
        Err((client, mut backend)) => {
            // The ClientHello, exactly as received, is the first thing the
            // backend sees after its `S`.
            if let Err(error) = backend.write_all(&hello).await {
                warn!(%error, "backend failed while receiving the ClientHello");
                record_exit(Outcome::BackendUnavailable);
                let reply = no_backend(Outcome::BackendUnavailable, &route).reply;
                send_reply(client, reply, &hello, context, deadline).await;
                return None;
            }
            let replayed = hello.len() as u64;
            DataPath::User(forward::forward(client, backend, &route, replayed))
        }
    };
    Outcome::Routed.record();
    ::metrics::histogram!(HANDSHAKE_SECONDS).record(accepted.elapsed().as_secs_f64());
    Some(Forwarding {
        data,
        labels: Labels {
            peer,
            client: client_addr,
            server_name,
            route,
        },
        accepted,
        _holds: holds,
    })
}

/// A routed passthrough session, its backend holding the ClientHello: all
/// that the session keeps while bytes flow.
struct Forwarding {
    data: DataPath,
    labels: Labels,
    accepted: Instant,
    /// Its entry in the cancel registry and its place under the route's
    /// connection limit, released when the session ends.
    _holds: (Registration, RouteSlot),
}

/// Where a routed passthrough session's bytes are moved; completes when the
/// session ends, with its totals.
// The user-space variant is the common one and is meant to be inline: it is
// the session, and boxing it would add an allocation to every one.
#[allow(clippy::large_enum_variant)]
enum DataPath {
    /// Spliced in the kernel by the socket map.
    Kernel(Pin<Box<dyn Future<Output = io::Result<Forwarded>> + Send>>),
    /// Copied in user space.
    User(forward::Forward),
}

impl Future for DataPath {
    type Output = io::Result<Forwarded>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Kernel(spliced) => spliced.as_mut().poll(cx),
            Self::User(forward) => Pin::new(forward).poll(cx),
        }
    }
}

/// The fields of a session's start-up span, kept so that its last lines
/// carry them without a span held open for as long as the session lives.
struct Labels {
    peer: SocketAddr,
    client: SocketAddr,
    server_name: Option<Box<str>>,
    route: Arc<str>,
}

/// How a forwarding session ended.
enum Ended {
    /// Both directions ended, or one failed.
    Forwarded(io::Result<Forwarded>),
    /// A reload removed its route and the grace period passed.
    RouteRemoved,
    /// The drain period ended.
    Drained,
}

impl Forwarding {
    /// Logs how the session ended, in a span with its start-up's fields.
    fn log_end(&self, ended: Ended) {
        let Labels {
            peer,
            client,
            server_name,
            route,
        } = &self.labels;
        let span = conn_span(
            *peer,
            Some(*client),
            server_name.as_deref(),
            Some(route),
            Some(TlsMode::Passthrough.label()),
        );
        let outcome = Outcome::Routed.as_str();
        let seconds = self.accepted.elapsed().as_secs_f64();
        span.in_scope(|| match ended {
            Ended::Forwarded(Ok(totals)) => info!(
                outcome,
                client_to_backend = totals.client_to_backend,
                backend_to_client = totals.backend_to_client,
                seconds,
                "session closed"
            ),
            Ended::Forwarded(Err(error)) => {
                info!(outcome, %error, seconds, "session closed by an error");
            }
            Ended::RouteRemoved => info!(outcome, "route removed by a reload; session closed"),
            Ended::Drained => info!(
                outcome = "drain_timeout",
                "session closed at the end of the drain period"
            ),
        });
    }
}

/// Counts and logs a start-up that ended without forwarding.
///
/// Lines are rate-limited per outcome (see [`Outcome::log_budget`]); the
/// counter is not.
pub(crate) fn record_exit(outcome: Outcome) {
    outcome.record();
    let notable = outcome.is_notable();
    if !notable && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Verdict::Write { suppressed } = outcome.log_budget() else {
        return;
    };
    let outcome = outcome.as_str();
    match (notable, suppressed) {
        (true, 0) => info!(outcome, "connection refused"),
        (true, _) => info!(
            outcome,
            suppressed, "connection refused (and {suppressed} more like it, not logged)"
        ),
        (false, 0) => debug!(outcome, "connection closed during start-up"),
        (false, _) => debug!(
            outcome,
            suppressed,
            "connection closed during start-up (and {suppressed} more like it, not logged)"
        ),
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
    progress: &mut Progress,
    buf: &mut Vec<u8>,
) -> Result<Started, Exit> {
    let (peer, destination) = identify(client, peer, context, buf).await?;
    // Admission, now that the client's address is known (even behind a load
    // balancer). The slot is held until the session is routed.
    let negotiation = match context.limits.admit(peer.ip(), context.lifecycle.active()) {
        Ok(slot) => {
            progress.handshake = Some(slot);
            negotiate(client, peer, context, buf, None).await?
        }
        // Over a limit, wait only briefly for the first packet: just long
        // enough to refuse in the form the client understands, which costs
        // the broker one small write.
        Err(limit) => {
            let refusing = negotiate(client, peer, context, buf, Some(limit));
            match tokio::time::timeout(REFUSAL_GRACE, refusing).await {
                Ok(negotiated) => negotiated?,
                Err(_) => return Err(Exit::silent(limit.into())),
            }
        }
    };

    progress.phase = Phase::ReadHello;
    let name = read_hello(client, buf, negotiation).await?;

    let span = tracing::Span::current();
    progress.phase = Phase::Route;
    // The rest of a terminated start-up happens inside pgsni's own TLS
    // session, still holding the handshake slot.
    let mut handoff = |route, route_slot| Handoff {
        route,
        direct: negotiation == Negotiation::Direct,
        peer,
        destination,
        handshake: progress.handshake.take(),
        route_slot,
    };
    let resolved = match route(context, name.as_ref()) {
        Ok(resolved) => resolved,
        // No server name and no default route: with the broker's own
        // identity, the StartupMessage may still name a terminated route.
        Err(_) if name.is_none() && context.fallback.is_some() => {
            return Ok(Started::Terminate(handoff(None, None)));
        }
        Err(exit) => return Err(exit),
    };
    span.record("route", &*resolved.route);
    // Before any handshake, for terminated routes too: a refusal for a
    // limit must cost the broker no TLS, so it is a bare alert.
    let route_slot = context
        .limits
        .admit_route(&resolved.route, resolved.max_connections)
        .map_err(|limit| {
            debug!("route connection limit reached");
            Exit::new(limit.into(), Reply::Alert(AlertDescription::InternalError))
        })?;
    if let TlsMode::Terminate(_) = resolved.mode {
        return Ok(Started::Terminate(handoff(
            Some(resolved),
            Some(route_slot),
        )));
    }
    span.record("mode", resolved.mode.label());

    progress.phase = Phase::ConnectBackend;
    let proxy_header = resolved
        .proxy_protocol
        .then(|| proxy_header::encode_v2(peer, destination));
    let (backend, address) = backend::connect_first(
        &resolved.backends,
        &context.dialer,
        context.timeouts.connect,
        proxy_header.as_deref(),
        &context.sockets,
    )
    .await
    .map_err(|unreached| {
        // The refusal's own line (rate-limited) says so at info.
        debug!("no backend available");
        no_backend(unreached.into(), &resolved.route)
    })?;
    debug!(backend = %address, ?negotiation, "routed");
    let backend_addr = backend.peer_addr().map_err(|error| {
        warn!(backend = %address, %error, "backend connection lost");
        no_backend(Outcome::BackendUnavailable, &resolved.route)
    })?;
    let cancel_target = CancelTarget::Tcp {
        addr: backend_addr,
        proxy_protocol: resolved.proxy_protocol,
    };
    Ok(Started::Passthrough(Routed {
        client: peer,
        server_name: name.map(|name| name.as_str().into()),
        holds: (
            context.cancels.register(peer.ip(), cancel_target),
            route_slot,
        ),
        backend,
        route: resolved.route,
    }))
}

/// Tells who the client is, and which address it connected to.
///
/// Without the PROXY protocol, or from a peer outside the trusted networks,
/// the client is the TCP peer: nothing it sends can say otherwise (a header
/// it sends anyway is refused in [`negotiate`]; on a listener that requires
/// one, such a peer is closed at once). From a trusted load balancer, the
/// header is read within its own short deadline, while the connection holds
/// one of the balancer's handshakes. Bytes after the header stay in `buf`.
async fn identify(
    client: &mut TcpStream,
    peer: SocketAddr,
    context: &Context,
    buf: &mut Vec<u8>,
) -> Result<(SocketAddr, SocketAddr), Exit> {
    let local = client.local_addr().map_err(|error| {
        debug!(%error, "socket has no local address");
        Exit::silent(Outcome::IoError)
    })?;
    let span = tracing::Span::current();
    let mode = context.proxy_protocol;
    if mode == ProxyProtocol::Off || !context.trusted_proxies.contains(peer.ip()) {
        span.record("client", tracing::field::display(peer));
        if mode == ProxyProtocol::Required {
            // Whatever it sends, a header could not be believed, and
            // without one this listener serves no one: close unread.
            debug!("peer outside the trusted proxies on a listener that requires a PROXY header");
            return Err(Exit::silent(Outcome::UntrustedProxyHeader));
        }
        return Ok((peer, local));
    }
    let _balancer = context.limits.admit_proxy(peer.ip()).map_err(|limit| {
        debug!(
            limit = limit.reason(),
            "load balancer over its handshake limit"
        );
        Exit::silent(limit.into())
    })?;
    let reading = read_proxy_header(client, peer, local, mode, buf);
    let identified = tokio::time::timeout(context.timeouts.proxy_header, reading)
        .await
        .unwrap_or_else(|_| {
            debug!("no PROXY header in time");
            Err(Exit::silent(Outcome::BadProxyHeader))
        })?;
    span.record("client", tracing::field::display(identified.0));
    Ok(identified)
}

/// Reads the PROXY header a trusted load balancer puts before the client's
/// bytes, and returns the client's address and the address it connected
/// to.
async fn read_proxy_header(
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    mode: ProxyProtocol,
    buf: &mut Vec<u8>,
) -> Result<(SocketAddr, SocketAddr), Exit> {
    let bad = |error: ProxyHeaderError| {
        debug!(%error, "PROXY header refused");
        Exit::silent(Outcome::BadProxyHeader)
    };
    loop {
        if mode == ProxyProtocol::Optional && proxy_header::starts_with_header(buf) == Some(false) {
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
            } => Ok((source, destination)),
            ProxyHeader::Unknown => Ok((peer, local)),
            // Load balancers' health checks: nothing to route, just close.
            ProxyHeader::Local => Err(Exit::silent(Outcome::HealthCheck)),
        };
    }
}

/// No backend of `route` was reached: each failed (`backend_unavailable`),
/// or policy refused one (`backend_not_allowed`, see [`super::dial`]). The
/// client hears only that no backend is available: where backends may be
/// is not its business.
fn no_backend(outcome: Outcome, route: &str) -> Exit {
    Exit::new(
        outcome,
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
            // Only a peer outside the trusted networks, or a client behind a
            // trusted balancer adding a header of its own, gets here with
            // one: it is never believed.
            Err(_)
                if context.proxy_protocol != ProxyProtocol::Off
                    && proxy_header::starts_with_header(buf) != Some(false) =>
            {
                debug!("PROXY header from an untrusted peer");
                return Err(Exit::silent(Outcome::UntrustedProxyHeader));
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
                // No handshake for a refusal: the alert is all it costs.
                StartupPacket::DirectTls => {
                    return Err(Exit::new(
                        limit.into(),
                        Reply::Alert(AlertDescription::InternalError),
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
            let shown = Untrusted::str(name.as_str());
            tracing::Span::current().record("server_name", tracing::field::display(shown));
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
            // The refusal itself is logged (rate-limited) with the exit.
            debug!(server_name = %Untrusted(raw), %error, "invalid server name");
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
///
/// A refusal in the broker's own TLS session is a handshake: it runs within
/// the session's `deadline`, while the caller still holds its handshake
/// slot, so that it is bounded and counted like any other.
async fn send_reply(
    mut client: TcpStream,
    reply: Reply,
    received: &[u8],
    context: &Context,
    deadline: Instant,
) {
    let bytes = match (reply, &context.fallback) {
        (Reply::Close, _) => return,
        (Reply::Postgres(refusal), _) => refusal.encode().to_vec(),
        (Reply::Tls(_, refusal), Some(fallback)) => {
            // Boxed: the TLS state is large and rarely needed.
            let refusing = Box::pin(fallback.refuse(client, received, &refusal));
            match tokio::time::timeout_at(deadline, refusing).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    debug!(%error, "refusal in the broker's own TLS session not delivered");
                }
                Err(_) => debug!("refusal in the broker's own TLS session cut at the deadline"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `session` returns, without making one.
    fn future_size<Session, Fut>(_session: Session) -> usize
    where
        Session: FnOnce(TcpStream, SocketAddr, Arc<Context>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every connection's task is allocated at the size of [`run`]'s future
    /// and keeps it for as long as the session lives, so this is most of
    /// what an idle pooled session costs. Moving the forwarding state into a
    /// nested future, or holding start-up state across forwarding, has
    /// tripled it before (2.4 KB).
    #[test]
    fn the_task_of_a_session_stays_small() {
        let size = future_size(run);
        assert!(size <= 1024, "a session's task future is {size} bytes");
        let forwarding = std::mem::size_of::<Forwarding>();
        assert!(
            forwarding <= 512,
            "the forwarding state is {forwarding} bytes"
        );
    }
}
