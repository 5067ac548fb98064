//! Why a connection's start-up ended: one value per exit, feeding the
//! `pgsni_connections_total{outcome}` counter and the session's log line.

use super::backend::Unreached;
use super::limits::LimitExceeded;
use super::logging::{seconds_now, LineBudget, Verdict};
use crate::metrics::CONNECTIONS_TOTAL;

/// How a connection's start-up ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A backend has the ClientHello; bytes are being forwarded.
    Routed,
    /// A plaintext StartupMessage was refused with an ErrorResponse.
    PlaintextRefused,
    /// Bytes arrived behind the SSLRequest before the `S` (possible injection).
    DataAfterSslRequest,
    /// The first packet was not valid Postgres.
    BadRequest,
    /// A plaintext CancelRequest (not carried by this version).
    CancelRequest,
    /// The ClientHello was malformed or too large.
    BadClientHello,
    /// A direct-TLS hello without ALPN `postgresql`.
    NoApplicationProtocol,
    /// The hello carried no server name.
    NoServerName,
    /// The server name is not a valid DNS name.
    InvalidServerName,
    /// No route matches the server name.
    UnknownServerName,
    /// No backend of the route could be reached or agreed to TLS.
    BackendUnavailable,
    /// A backend's address was refused by policy: an IP address spelled by
    /// the client's server name, or outside `--backend-networks`.
    BackendNotAllowed,
    /// The TLS handshake with the route's own certificate (a terminated
    /// route, or the broker's certificate for a client without a server
    /// name) failed: the client refused the certificate, or went away.
    TlsHandshakeFailed,
    /// A client without a server name named a passthrough route in its
    /// StartupMessage: that route's TLS must run end to end, so only its
    /// server name reaches it.
    ServerNameRequired,
    /// The start-up did not finish within the handshake deadline.
    HandshakeTimeout,
    /// The client closed the connection during start-up.
    ClientClosed,
    /// A socket error during start-up.
    IoError,
    /// A PROXY header was required and missing, or malformed.
    BadProxyHeader,
    /// A PROXY header from a peer outside `--trusted-proxies`, or any
    /// connection from such a peer on a listener that requires the header.
    UntrustedProxyHeader,
    /// A PROXY v2 LOCAL connection (a load balancer's health check).
    HealthCheck,
    /// Refused: `--max-connections` reached.
    LimitGlobal,
    /// Refused: the route's `max_connections` reached.
    LimitRoute,
    /// Refused: too many handshakes in flight from the client's address.
    LimitSourceHandshakes,
    /// Refused: too many new connections per second from the address.
    LimitSourceRate,
}

impl From<LimitExceeded> for Outcome {
    fn from(limit: LimitExceeded) -> Self {
        match limit {
            LimitExceeded::Global => Self::LimitGlobal,
            LimitExceeded::Route => Self::LimitRoute,
            LimitExceeded::SourceHandshakes => Self::LimitSourceHandshakes,
            LimitExceeded::SourceRate => Self::LimitSourceRate,
        }
    }
}

impl From<Unreached> for Outcome {
    fn from(unreached: Unreached) -> Self {
        match unreached {
            Unreached::NotAllowed => Self::BackendNotAllowed,
            Unreached::Unavailable => Self::BackendUnavailable,
        }
    }
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::PlaintextRefused => "plaintext_refused",
            Self::DataAfterSslRequest => "data_after_ssl_request",
            Self::BadRequest => "bad_request",
            Self::CancelRequest => "cancel_request",
            Self::BadClientHello => "bad_client_hello",
            Self::NoApplicationProtocol => "no_application_protocol",
            Self::NoServerName => "no_server_name",
            Self::InvalidServerName => "invalid_server_name",
            Self::UnknownServerName => "unknown_server_name",
            Self::BackendUnavailable => "backend_unavailable",
            Self::BackendNotAllowed => "backend_not_allowed",
            Self::TlsHandshakeFailed => "tls_handshake_failed",
            Self::ServerNameRequired => "server_name_required",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::ClientClosed => "client_closed",
            Self::IoError => "io_error",
            Self::BadProxyHeader => "bad_proxy_header",
            Self::UntrustedProxyHeader => "untrusted_proxy_header",
            Self::HealthCheck => "health_check",
            Self::LimitGlobal => "limit_global",
            Self::LimitRoute => "limit_route",
            Self::LimitSourceHandshakes => "limit_source_handshakes",
            Self::LimitSourceRate => "limit_source_rate",
        }
    }

    /// Whether a refusal is worth a line at the default log level: what a
    /// tenant or an operator would look for. Garbage, timeouts and probes
    /// stay at debug, so that a flood of them cannot flood the log.
    pub fn is_notable(self) -> bool {
        !matches!(
            self,
            Self::BadRequest
                | Self::CancelRequest
                | Self::BadClientHello
                | Self::TlsHandshakeFailed
                | Self::HandshakeTimeout
                | Self::ClientClosed
                | Self::IoError
                | Self::HealthCheck
        )
    }

    /// Counts one connection with this outcome.
    pub fn record(self) {
        ::metrics::counter!(CONNECTIONS_TOTAL, "outcome" => self.as_str()).increment(1);
    }

    /// Whether a line about one more connection with this outcome may be
    /// written now, and how many were left out before it: refusal lines
    /// are rate-limited per outcome, so that a flood of one kind costs a
    /// few lines a second and hides no other kind.
    pub fn log_budget(self) -> Verdict {
        static BUDGETS: [LineBudget; 64] = [const { LineBudget::new() }; 64];
        // A fieldless enum's discriminant: far fewer than 64 variants.
        match BUDGETS.get(self as usize) {
            Some(budget) => budget.take(seconds_now()),
            None => Verdict::Write { suppressed: 0 },
        }
    }
}
