//! Terminated routes: pgsni completes the client's TLS session itself.
//!
//! A route with `tls = "terminate"` names a certificate and key of its own.
//! Once the session state machine has routed the ClientHello to such a
//! route, it hands the connection over here, and the start-up goes on:
//!
//! ```text
//! handshake (route's identity, ALPN "postgresql") ──▶ StartupMessage ──▶ backend ──▶ replay ──▶ forward
//!                     the hello already read is replayed to rustls ──┘        └─ TCP or unix socket;
//!                                                                               plaintext, or SSLRequest + TLS
//! ```
//!
//! The whole of it stays under the session's handshake deadline. Once TLS is
//! up, every refusal is a Postgres FATAL inside it (backends down, a route's
//! limit), which psql prints; a client that verifies the certificate gets
//! the route's own, so `verify-full` works as it does against the tenant.
//! A CancelRequest inside TLS (libpq 17's `PQcancelCreate`) is carried to
//! the backend over the route's backend connection.
//!
//! The same path serves clients that send no server name, when the broker
//! has its own certificate (`--fallback-cert`) and no route is the default:
//! TLS is completed with that certificate and the route is read from the
//! StartupMessage, either `options=-c pgsni.server_name=NAME` or, with
//! `--database-route-separator`, a database name `NAME<separator>DBNAME`.
//! The routing key is taken out before the message is replayed, so the
//! backend sees the client's own options and database. Only terminated
//! routes can be reached this way: a passthrough route's TLS session must
//! run end to end with the tenant, which this one cannot.
//!
//! - [`identity`]: the routes' certificates and keys, re-read as they
//!   rotate, and the CAs backends are verified against.
//! - [`backend`]: the connection to the backend.

pub mod backend;
pub mod identity;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use ::metrics::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use self::backend::BackendStream;
use super::cancel::Registration;
use super::fallback::Rewind;
use super::forward::SessionMetrics;
use super::limits::{HandshakeSlot, RouteSlot};
use super::logging::Untrusted;
use super::session::{self, ALPN_POSTGRESQL};
use super::{Context, Outcome};
use crate::metrics::HANDSHAKE_SECONDS;
use crate::routing::table::{Resolved, TlsMode};
use crate::tls::alert::{fatal_alert, AlertDescription};
use crate::tls::server_name::HostName;
use crate::wire::proxy_header;
use crate::wire::reply::Refusal;
use crate::wire::startup::{
    classify, StartupPacket, MAX_STARTUP_PACKET_LEN, MIN_STARTUP_PACKET_LEN,
};
use crate::wire::startup_message::{join_options, split_options, StartupMessage};

/// The setting a client without a server name names its route with:
/// `options=-c pgsni.server_name=NAME`.
pub const SERVER_NAME_SETTING: &str = "pgsni.server_name";

/// The `mode` metric label of terminated sessions ([`TlsMode::label`]).
const MODE: &str = "terminate";

/// How long a refusal inside TLS may take to be delivered.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// How a client that sent no server name may name its route in its
/// StartupMessage (besides `options=-c pgsni.server_name=NAME`, always
/// understood).
#[derive(Clone, Debug, Default)]
pub struct StartupRouting {
    /// With a separator, a database name `NAME<separator>DBNAME` routes to
    /// `NAME`, and the backend sees `DBNAME`.
    pub database_separator: Option<String>,
}

/// A connection the session state machine hands over once its hello has
/// been read.
pub(crate) struct Handoff {
    /// The terminated route the server name chose; `None` when the client
    /// sent no server name, to be routed by its StartupMessage.
    pub route: Option<Resolved>,
    /// Whether the client began with direct TLS, which must negotiate ALPN
    /// `postgresql`.
    pub direct: bool,
    /// The client's address (from the PROXY header when there is one).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
    /// The client's place under the per-address handshake limit, held
    /// until the session reaches its backend.
    pub handshake: Option<HandshakeSlot>,
    /// The session's place under its route's limit, taken before the
    /// handshake when the server name chose the route (a refusal for a
    /// limit costs no TLS); `None` when the route is still to be named.
    pub route_slot: Option<RouteSlot>,
}

/// The client's side: pgsni's TLS session, over the socket with the hello
/// it already read replayed in front.
type ClientTls = TlsStream<Rewind<TcpStream>>;

/// A terminated start-up that reached its backend.
struct Terminated {
    client: ClientTls,
    backend: BackendStream,
    route: Arc<str>,
    /// Client bytes already written to the backend (the StartupMessage).
    replayed: usize,
    /// Held while the session lives: its entry in the cancel registry and
    /// its place under the route's connection limit.
    holds: (Registration, RouteSlot),
}

/// A start-up that ends here, and what the client is told inside TLS.
struct Refused {
    outcome: Outcome,
    refusal: Option<Refusal>,
}

impl Refused {
    fn silent(outcome: Outcome) -> Self {
        Self {
            outcome,
            refusal: None,
        }
    }

    fn with(outcome: Outcome, refusal: Refusal) -> Self {
        Self {
            outcome,
            refusal: Some(refusal),
        }
    }

    fn backend_unavailable(route: &str) -> Self {
        Self::with(
            Outcome::BackendUnavailable,
            Refusal::backend_unavailable(route),
        )
    }

    /// No backend reached. A policy refusal is told to the client as an
    /// unavailable backend: where backends may be is not its business.
    fn unreached(unreached: crate::proxy::backend::Unreached, route: &str) -> Self {
        Self::with(unreached.into(), Refusal::backend_unavailable(route))
    }
}

/// Runs a handed-over connection to its end: the rest of the start-up under
/// the handshake `deadline`, then forwarding. Never fails: every exit is
/// counted and logged here.
pub(crate) async fn run(
    client: TcpStream,
    received: Vec<u8>,
    handoff: Handoff,
    context: &Context,
    accepted: Instant,
    deadline: Instant,
) {
    tracing::Span::current().record("mode", MODE);
    let starting = start(client, received, handoff, context);
    let session = match tokio::time::timeout_at(deadline, starting).await {
        Ok(Ok(session)) => session,
        Ok(Err(outcome)) => return session::record_exit(outcome),
        Err(_elapsed) => {
            debug!("handshake deadline reached");
            return session::record_exit(Outcome::HandshakeTimeout);
        }
    };
    Outcome::Routed.record();
    ::metrics::histogram!(HANDSHAKE_SECONDS).record(accepted.elapsed().as_secs_f64());

    let Terminated {
        client,
        backend,
        route,
        replayed,
        holds: _holds,
    } = session;
    let metrics = SessionMetrics::new(&route, MODE);
    metrics.client_to_backend.increment(replayed as u64);
    let mut client = Counted::new(client, metrics.client_to_backend.clone());
    let mut backend = Counted::new(backend, metrics.backend_to_client.clone());
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut backend) => match result {
            Ok((up, down)) => debug!(%route, client_to_backend = up, backend_to_client = down, "session ended"),
            Err(error) => debug!(%route, %error, "session ended with an error"),
        },
        () = session::route_removed(context, &route) => {
            info!(%route, "route removed by a reload; session closed");
        }
    }
}

/// Completes TLS with the route's identity (or the broker's, for a client
/// without a server name) and goes on to the backend. Refusals after the
/// handshake are told inside TLS.
async fn start(
    mut client: TcpStream,
    received: Vec<u8>,
    handoff: Handoff,
    context: &Context,
) -> Result<Terminated, Outcome> {
    let acceptor = match handoff.route.as_ref().map(|r| &r.mode) {
        Some(TlsMode::Terminate(termination)) => context
            .identities
            .identity(&termination.identity)
            .map(|identity| identity.acceptor().clone()),
        // Never handed over: its TLS is the tenant's.
        Some(TlsMode::Passthrough) => None,
        // A client without a server name, handed over only when the broker
        // has an identity of its own.
        None => context.fallback.as_ref().map(|f| f.acceptor().clone()),
    };
    let Some(acceptor) = acceptor else {
        // Only between a reload's swap and a session that routed by the
        // table before it; the client is still waiting for a ServerHello.
        warn!("no identity loaded for this terminated route");
        let alert = fatal_alert(AlertDescription::InternalError);
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, client.write_all(&alert)).await;
        return Err(Outcome::BackendUnavailable);
    };
    let mut tls = acceptor
        .accept(Rewind::new(received, client))
        .await
        .map_err(|error| {
            debug!(%error, "TLS handshake failed");
            Outcome::TlsHandshakeFailed
        })?;
    // Offered only "postgresql", so a direct-TLS client that offered it has
    // it; checked anyway, since direct TLS without it is what PG17 refuses.
    if handoff.direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        debug!("direct TLS without ALPN \"postgresql\"");
        return Err(Outcome::NoApplicationProtocol);
    }
    match begin(&mut tls, handoff, context).await {
        Ok(begun) => Ok(begun.with_client(tls)),
        Err(refused) => {
            // Best effort: the client may already be gone. A clean TLS close
            // matters even without a refusal: after a cancel, libpq reads
            // to the end and takes a close without close_notify for an error.
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
                if let Some(refusal) = &refused.refusal {
                    tls.write_all(&refusal.encode()).await?;
                }
                tls.shutdown().await
            })
            .await;
            Err(refused.outcome)
        }
    }
}

/// What [`begin`] makes, short of the client's stream it borrowed.
struct Begun {
    backend: BackendStream,
    route: Arc<str>,
    replayed: usize,
    holds: (Registration, RouteSlot),
}

impl Begun {
    fn with_client(self, client: ClientTls) -> Terminated {
        Terminated {
            client,
            backend: self.backend,
            route: self.route,
            replayed: self.replayed,
            holds: self.holds,
        }
    }
}

/// Inside TLS: reads the StartupMessage, settles the route, connects the
/// backend and replays the message to it.
async fn begin(tls: &mut ClientTls, handoff: Handoff, context: &Context) -> Result<Begun, Refused> {
    let packet = read_packet(tls).await?;
    let mut startup = match classify(&packet) {
        Ok(Some((StartupPacket::Startup { .. }, _))) => {
            StartupMessage::parse(&packet).map_err(|error| {
                debug!(%error, "invalid StartupMessage");
                Refused::with(Outcome::BadRequest, Refusal::INVALID_STARTUP_PACKET)
            })?
        }
        Ok(Some((StartupPacket::CancelRequest { .. }, _))) => {
            cancel(&packet, handoff, context).await;
            return Err(Refused::silent(Outcome::CancelRequest));
        }
        other => {
            debug!(packet = ?other.map(|p| p.map(|(p, _)| p.name())), "not a StartupMessage inside TLS");
            return Err(Refused::with(
                Outcome::BadRequest,
                Refusal::INVALID_STARTUP_PACKET,
            ));
        }
    };
    let resolved = match handoff.route {
        Some(resolved) => resolved,
        None => route_by_startup(&mut startup, context)?,
    };
    let route = resolved.route.clone();
    let Some(termination) = resolved.mode.termination() else {
        debug!(%route, "passthrough route named in a StartupMessage");
        return Err(Refused::with(
            Outcome::ServerNameRequired,
            Refusal::server_name_required(&route),
        ));
    };
    let slot = match handoff.route_slot {
        Some(slot) => slot,
        // Routed by the StartupMessage, inside the broker's own TLS: the
        // limit can only be checked now.
        None => context
            .limits
            .admit_route(&route, resolved.max_connections)
            .map_err(|limit| {
                debug!("route connection limit reached");
                Refused::with(limit.into(), Refusal::too_many_connections(limit.reason()))
            })?,
    };
    let security = context
        .identities
        .backend_security(&termination.backend_tls)
        .ok_or_else(|| {
            warn!("backend CA of this terminated route not loaded");
            Refused::backend_unavailable(&route)
        })?;
    let proxy_header = resolved
        .proxy_protocol
        .then(|| proxy_header::encode_v2(handoff.peer, handoff.destination));
    let (mut backend, address) = backend::connect_first(
        &resolved.backends,
        &context.dialer,
        &security,
        context.timeouts.connect,
        proxy_header.as_deref(),
        &context.sockets,
    )
    .await
    .map_err(|unreached| {
        debug!("no backend available");
        Refused::unreached(unreached, &route)
    })?;
    let message = startup.encode();
    let sent = async {
        backend.write_all(&message).await?;
        backend.flush().await?;
        backend.cancel_target(resolved.proxy_protocol)
    };
    let target = sent.await.map_err(|error| {
        warn!(backend = %address, %error, "backend failed while receiving the StartupMessage");
        Refused::backend_unavailable(&route)
    })?;
    debug!(backend = %address, backend_tls = termination.backend_tls.as_str(), "routed");
    // No longer a handshake: the client's address may start another.
    drop(handoff.handshake);
    Ok(Begun {
        backend,
        route,
        replayed: message.len(),
        holds: (context.cancels.register(handoff.peer.ip(), target), slot),
    })
}

/// Reads one length-prefixed start-up packet, within Postgres's bounds.
async fn read_packet(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, Refused> {
    let failed = |error: io::Error| {
        debug!(%error, "read failed during start-up");
        Refused::silent(match error.kind() {
            io::ErrorKind::UnexpectedEof => Outcome::ClientClosed,
            _ => Outcome::IoError,
        })
    };
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(failed)?;
    let declared = u32::from_be_bytes(len) as usize;
    if !(MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN).contains(&declared) {
        debug!(declared, "start-up packet length out of bounds");
        return Err(Refused::with(
            Outcome::BadRequest,
            Refusal::INVALID_STARTUP_PACKET,
        ));
    }
    let mut packet = vec![0u8; declared];
    packet[..4].copy_from_slice(&len);
    stream.read_exact(&mut packet[4..]).await.map_err(failed)?;
    Ok(packet)
}

/// Carries a CancelRequest received inside TLS to the backend: over the
/// route's own backend connection, or, for a client without a server name,
/// like a plaintext cancel, to the backends its address has sessions with.
async fn cancel(packet: &[u8], handoff: Handoff, context: &Context) {
    let Some(resolved) = handoff.route else {
        context
            .cancels
            .forward(handoff.peer, packet, context.timeouts.connect)
            .await;
        return;
    };
    let Some(security) = resolved
        .mode
        .termination()
        .and_then(|t| context.identities.backend_security(&t.backend_tls))
    else {
        return;
    };
    let proxy_header = resolved
        .proxy_protocol
        .then(|| proxy_header::encode_v2(handoff.peer, handoff.destination));
    let connected = backend::connect_first(
        &resolved.backends,
        &context.dialer,
        &security,
        context.timeouts.connect,
        proxy_header.as_deref(),
        &context.sockets,
    )
    .await;
    let Ok((mut backend, address)) = connected else {
        return;
    };
    // Postgres answers nothing and closes once it has signalled the query;
    // waiting for that keeps the client's cancel from returning earlier
    // than it would against Postgres itself.
    let delivered = tokio::time::timeout(context.timeouts.connect, async {
        backend.write_all(packet).await?;
        backend.flush().await?;
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).await.map(drop)
    })
    .await;
    match delivered {
        // A close without close_notify still follows the cancel.
        Ok(Ok(())) => debug!(backend = %address, "cancel forwarded"),
        Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
            debug!(backend = %address, "cancel forwarded")
        }
        Ok(Err(error)) => debug!(backend = %address, %error, "cancel not delivered"),
        Err(_) => debug!(backend = %address, "cancel not delivered in time"),
    }
}

/// Routes a client that sent no server name by the name its StartupMessage
/// carries, taking that name out of the message.
fn route_by_startup(startup: &mut StartupMessage, context: &Context) -> Result<Resolved, Refused> {
    let Some(raw) = take_server_name(startup, &context.startup_routing) else {
        debug!("no server name, neither in the hello nor in the StartupMessage");
        return Err(Refused::with(
            Outcome::NoServerName,
            Refusal::NO_ROUTE_NAMED,
        ));
    };
    let name = HostName::parse(&raw).map_err(|error| {
        debug!(server_name = %Untrusted(&raw), %error, "invalid server name in the StartupMessage");
        Refused::with(Outcome::InvalidServerName, Refusal::INVALID_SERVER_NAME)
    })?;
    tracing::Span::current().record("server_name", name.as_str());
    context.routes.load().lookup(&name).ok_or_else(|| {
        Refused::with(
            Outcome::UnknownServerName,
            Refusal::unknown_server_name(name.as_str()),
        )
    })
}

/// Takes the route's server name out of `startup`: from its options
/// (`-c pgsni.server_name=NAME` and the other spellings the server
/// accepts), else, with a separator configured, from its database name
/// (`NAME<separator>DBNAME`, leaving `DBNAME`).
fn take_server_name(startup: &mut StartupMessage, routing: &StartupRouting) -> Option<Vec<u8>> {
    if let Some(options) = startup.get("options") {
        let mut arguments = split_options(options);
        if let Some(name) = take_setting(&mut arguments, SERVER_NAME_SETTING) {
            let rest = (!arguments.is_empty()).then(|| join_options(&arguments));
            startup.replace("options", rest.as_deref());
            return Some(name);
        }
    }
    let separator = routing.database_separator.as_deref()?.as_bytes();
    let database = startup.get("database")?;
    let at = database
        .windows(separator.len())
        .position(|window| window == separator)?;
    let name = database[..at].to_vec();
    let rest = database[at + separator.len()..].to_vec();
    startup.replace("database", Some(&rest));
    Some(name)
}

/// Removes every argument that sets `setting` (`-c NAME=VALUE`,
/// `-cNAME=VALUE`, `--NAME=VALUE`; names compared as the server does:
/// case-insensitively, `-` as `_`) and returns the last value set.
fn take_setting(arguments: &mut Vec<Vec<u8>>, setting: &str) -> Option<Vec<u8>> {
    let value_of = |assignment: &[u8]| -> Option<Vec<u8>> {
        let at = assignment.iter().position(|&b| b == b'=')?;
        let (name, value) = (&assignment[..at], &assignment[at + 1..]);
        let same = name.len() == setting.len()
            && name.iter().zip(setting.bytes()).all(|(&a, b)| {
                let a = if a == b'-' { b'_' } else { a };
                a.eq_ignore_ascii_case(&b)
            });
        same.then(|| value.to_vec())
    };
    let mut found = None;
    let mut kept = Vec::with_capacity(arguments.len());
    let mut rest = std::mem::take(arguments).into_iter().peekable();
    while let Some(argument) = rest.next() {
        let value = if argument == b"-c" {
            rest.peek().and_then(|next| value_of(next))
        } else if let Some(assignment) = argument
            .strip_prefix(b"-c")
            .or_else(|| argument.strip_prefix(b"--"))
        {
            value_of(assignment)
        } else {
            None
        };
        match value {
            Some(value) => {
                if argument == b"-c" {
                    rest.next();
                }
                found = Some(value);
            }
            None => kept.push(argument),
        }
    }
    *arguments = kept;
    found
}

/// A stream whose reads are counted as they happen, so that the byte
/// counters move while a session runs: what is read from one side is what
/// is written to the other.
struct Counted<S> {
    inner: S,
    counter: Counter,
}

impl<S> Counted<S> {
    fn new(inner: S, counter: Counter) -> Self {
        Self { inner, counter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.counter.increment((buf.filled().len() - before) as u64);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(parameters: &[(&str, &str)]) -> StartupMessage {
        let packet = crate::wire::startup_message::tests::packet(0x0003_0000, parameters);
        StartupMessage::parse(&packet).unwrap()
    }

    fn by_database(separator: &str) -> StartupRouting {
        StartupRouting {
            database_separator: Some(separator.into()),
        }
    }

    #[test]
    fn the_server_name_is_taken_out_of_the_options() {
        for options in [
            "-c pgsni.server_name=alpha.db.example.com",
            "-cpgsni.server_name=alpha.db.example.com",
            "--pgsni.server_name=alpha.db.example.com",
            "--PGSNI.SERVER-NAME=alpha.db.example.com",
        ] {
            let mut message = startup(&[("user", "u"), ("options", options), ("database", "d")]);
            let name = take_server_name(&mut message, &StartupRouting::default());
            assert_eq!(
                name.as_deref(),
                Some(&b"alpha.db.example.com"[..]),
                "{options}"
            );
            assert_eq!(message.get("options"), None, "{options}");
            assert_eq!(message.get("database"), Some(&b"d"[..]));
        }

        let mut message = startup(&[(
            "options",
            r"-c search_path=a\ b -c pgsni.server_name=x.example.com --work_mem=4MB",
        )]);
        let name = take_server_name(&mut message, &StartupRouting::default());
        assert_eq!(name.as_deref(), Some(&b"x.example.com"[..]));
        assert_eq!(
            message.get("options"),
            Some(&br"-c search_path=a\ b --work_mem=4MB"[..]),
            "the client's own options are kept"
        );
    }

    #[test]
    fn the_server_name_is_taken_out_of_the_database_name() {
        let mut message = startup(&[("database", "alpha.db.example.com/app")]);
        assert_eq!(
            take_server_name(&mut message, &StartupRouting::default()),
            None,
            "only with a separator configured"
        );
        let name = take_server_name(&mut message, &by_database("/"));
        assert_eq!(name.as_deref(), Some(&b"alpha.db.example.com"[..]));
        assert_eq!(message.get("database"), Some(&b"app"[..]));

        let mut message = startup(&[("database", "app")]);
        assert_eq!(take_server_name(&mut message, &by_database("/")), None);
        assert_eq!(
            message.encode().len(),
            startup(&[("database", "app")]).encode().len()
        );

        // The options win, and the database name is then left alone.
        let mut message = startup(&[
            ("database", "beta.db.example.com/app"),
            ("options", "-c pgsni.server_name=alpha.db.example.com"),
        ]);
        let name = take_server_name(&mut message, &by_database("/"));
        assert_eq!(name.as_deref(), Some(&b"alpha.db.example.com"[..]));
        assert_eq!(
            message.get("database"),
            Some(&b"beta.db.example.com/app"[..])
        );
    }

    #[test]
    fn the_mode_label_is_the_routes() {
        let mode = TlsMode::Terminate(Arc::new(crate::routing::table::Termination {
            identity: crate::routing::table::IdentityFiles {
                certificate: "a.pem".into(),
                private_key: "a.key".into(),
            },
            backend_tls: crate::routing::table::BackendTls::Disable,
        }));
        assert_eq!(MODE, mode.label());
    }

    #[test]
    fn other_settings_are_left_alone() {
        let mut arguments = split_options(b"-c pgsni.server_names=x -c -c pgsni.server_name");
        assert_eq!(take_setting(&mut arguments, SERVER_NAME_SETTING), None);
        assert_eq!(arguments.len(), 5);
    }
}
