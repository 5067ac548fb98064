//! The routing table: server-name patterns and their backends.
//!
//! A table is built once (by [`crate::routing::file`]) and never mutated;
//! reloads build a new one. Lookup is two hash probes whatever the table size:
//! the exact name, then the name's parent for a one-label wildcard.
//!
//! A route also says how its sessions' TLS is carried ([`TlsMode`]): passed
//! through untouched (the default), or terminated by pgsni with a certificate
//! of the route's own. The table only names the files; reading them is the
//! proxy's business, so that a table of passthrough routes never touches a key.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::literal;
use crate::tls::server_name::HostName;

/// What a route matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this (normalised) name.
    Exact(String),
    /// Any name made of one label followed by this suffix: `*.suffix`.
    Wildcard {
        /// The normalised suffix, without the leading `*.`.
        suffix: String,
    },
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard { suffix } => write!(f, "*.{suffix}"),
        }
    }
}

/// Why a pattern or backend address in a routes file is invalid.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RouteError {
    /// The server name is not a valid DNS name or `*.` wildcard.
    #[error("invalid server_name {name:?}: {reason}")]
    ServerName {
        /// The name as written.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend is not `host:port`, or its template is malformed.
    #[error("invalid backend {backend:?}: {reason}")]
    Backend {
        /// The backend as written.
        backend: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route without any backend.
    #[error("route {0:?} has no backends")]
    NoBackends(String),
    /// Two routes with the same pattern.
    #[error("server_name {0:?} appears in more than one route")]
    Duplicate(String),
    /// More than one route is marked `default`.
    #[error("route {0:?} is a second default route; at most one may be")]
    SecondDefault(String),
    /// A default route's backends use `{1}`, which a hello without a name
    /// cannot fill.
    #[error("default route {0:?} cannot use {{1}} in its backends")]
    DefaultWithPlaceholder(String),
}

/// The prefix of a unix-socket backend: `unix:/run/postgresql/.s.PGSQL.5432`
/// names the socket file itself.
pub const UNIX_PREFIX: &str = "unix:";

/// The longest unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

/// The longest label a wildcard can capture, which bounds what `{1}` adds to
/// a unix socket path.
const MAX_LABEL: usize = 63;

impl Pattern {
    /// Parses a `server_name` from the routes file: a DNS name, or `*.` and a
    /// DNS name. Normalised the way client names are (lowercase, one trailing
    /// dot dropped), so that comparison is plain equality.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let invalid = |reason: String| RouteError::ServerName {
            name: text.to_owned(),
            reason,
        };
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, text),
        };
        let host = HostName::parse(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        if name.contains('*') {
            return Err(invalid(
                "'*' may only stand alone as the leftmost label".into(),
            ));
        }
        let normalised = host.as_str().to_owned();
        Ok(if wildcard {
            Self::Wildcard { suffix: normalised }
        } else {
            Self::Exact(normalised)
        })
    }
}

/// One piece of a backend address template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{1}`: the label the wildcard matched.
    Captured,
}

/// A backend address, possibly with `{1}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTemplate {
    segments: Vec<Segment>,
}

impl BackendTemplate {
    /// Whether the address has a `{1}` placeholder.
    pub fn has_placeholder(&self) -> bool {
        self.segments.contains(&Segment::Captured)
    }

    /// Whether this is a unix-socket backend (`unix:/path`).
    pub fn is_unix(&self) -> bool {
        matches!(self.segments.first(), Some(Segment::Literal(text)) if text.starts_with(UNIX_PREFIX))
    }

    /// Parses `host:port` (host a DNS name, an IPv4 address or a bracketed
    /// IPv6 address) or `unix:/absolute/path` (a socket file), where `{1}` may
    /// stand for the captured label when `allow_capture` is set (wildcard
    /// routes). Whether a unix socket suits the route is the route's check.
    pub fn parse(text: &str, allow_capture: bool) -> Result<Self, RouteError> {
        let invalid = |reason| RouteError::Backend {
            backend: text.to_owned(),
            reason,
        };
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (literal, tail) = rest.split_at(open);
            let tail = tail
                .strip_prefix("{1}")
                .ok_or_else(|| invalid("the only placeholder is {1}"))?;
            if !allow_capture {
                return Err(invalid("{1} needs a wildcard server_name"));
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(literal.to_owned()));
            }
            segments.push(Segment::Captured);
            rest = tail;
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        if segments
            .iter()
            .any(|s| matches!(s, Segment::Literal(l) if l.contains('}')))
        {
            return Err(invalid("unbalanced '}'"));
        }
        let template = Self { segments };
        // Any label a client can make us capture is a valid DNS label, so a
        // sample label proves the shape of every address this can expand to.
        // A DNS label has no '/' or '.', so it cannot climb out of a socket
        // path's directory either; only the path's length depends on it.
        if template.is_unix() {
            validate_unix_path(&template.expand(&"x".repeat(MAX_LABEL))).map_err(invalid)?;
        } else {
            validate_address(&template.expand("x")).map_err(invalid)?;
            template.validate_capture_in_host().map_err(invalid)?;
        }
        Ok(template)
    }

    /// Checks that a `{1}` in a TCP backend's host is followed by a fixed
    /// domain (`{1}.db.internal`, `{1}-rw.{1}.svc`). A bare or trailing
    /// capture (`{1}`, `db-{1}`, `10.0.0.{1}`) would let the client choose
    /// the host outright: `localhost`, or an address in one of the many
    /// forms getaddrinfo accepts.
    fn validate_capture_in_host(&self) -> Result<(), &'static str> {
        // The port cannot hold `{1}` (the sample expansion checked it), so
        // the host is everything before the last ':'.
        let marked = self.expand("{1}");
        let host = marked.rsplit_once(':').map_or(&*marked, |(host, _)| host);
        let Some((_, after)) = host.rsplit_once("{1}") else {
            return Ok(());
        };
        match after.strip_prefix('.') {
            Some(domain) if !domain.is_empty() => Ok(()),
            _ => Err("{1} must be followed by a fixed domain (as in {1}.db.internal:5432): a host that ends in {1} is chosen by the client"),
        }
    }

    /// The address with `label` in place of every `{1}`.
    ///
    /// `label` must be a valid DNS label (see [`crate::tls::server_name::is_valid_label`]; lookup
    /// passes a label of a validated [`HostName`]), which is what keeps a
    /// hostile name from turning into an arbitrary address. Templates without
    /// placeholders ignore it.
    pub fn expand(&self, label: &str) -> String {
        let mut address = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => address.push_str(text),
                Segment::Captured => address.push_str(label),
            }
        }
        address
    }
}

/// Checks that `address` is `unix:` and an absolute path that fits a socket
/// address.
fn validate_unix_path(address: &str) -> Result<(), &'static str> {
    let path = address.strip_prefix(UNIX_PREFIX).unwrap_or(address);
    if !path.starts_with('/') {
        return Err("a unix socket path must be absolute");
    }
    if path.len() > MAX_UNIX_PATH {
        return Err("a unix socket path is at most 107 bytes (63 for each {1})");
    }
    if path.contains('\0') {
        return Err("a unix socket path cannot hold a NUL byte");
    }
    Ok(())
}

/// Checks that `address` is `host:port` with a usable host and port.
fn validate_address(address: &str) -> Result<(), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("expected host:port")?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err("port must be 1-65535"),
        Ok(_) => {}
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| "invalid IPv6 address");
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if literal::is_ip_literal(host) {
        // getaddrinfo would have read it as an address; pgsni resolves
        // names through DNS only, so say what to write instead.
        return Err("write an IPv4 address as four decimal numbers (a.b.c.d)");
    }
    HostName::parse(host.as_bytes())
        .map(drop)
        .map_err(|_| "host must be a DNS name, an IPv4 address or [IPv6]")
}

/// Where a terminated route's certificate chain and private key live (PEM
/// files). Two routes naming the same files share one loaded identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityFiles {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The leaf's private key.
    pub private_key: PathBuf,
}

/// How a terminated route reaches its backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendTls {
    /// Plaintext: a private network or a unix socket.
    Disable,
    /// TLS without verifying the backend's certificate, like libpq's
    /// `sslmode=require`: safe from eavesdropping, not from impersonation.
    Require,
    /// TLS, with the backend's certificate verified against `ca` for the
    /// backend's host name, like libpq's `sslmode=verify-full`.
    VerifyFull {
        /// The CA certificates (PEM) the backend's certificate must chain to.
        ca: PathBuf,
    },
}

impl BackendTls {
    /// The name used in the routes file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull { .. } => "verify-full",
        }
    }
}

/// What a terminated route needs: its own identity, and how to reach its
/// backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Termination {
    /// The certificate and key pgsni presents for this route.
    pub identity: IdentityFiles,
    /// How the backend connection is protected.
    pub backend_tls: BackendTls,
}

/// How a route carries its sessions' TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// The TLS session runs end to end between the client and the backend;
    /// pgsni forwards its encrypted bytes and holds no key for it.
    #[default]
    Passthrough,
    /// pgsni completes the TLS session itself with the route's certificate,
    /// reads the StartupMessage and opens its own connection to the backend.
    Terminate(Arc<Termination>),
}

impl TlsMode {
    /// The `mode` metric label: `passthrough` or `terminate`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Passthrough => "passthrough",
            Self::Terminate(_) => "terminate",
        }
    }

    /// The termination settings, for a terminated route.
    pub fn termination(&self) -> Option<&Arc<Termination>> {
        match self {
            Self::Passthrough => None,
            Self::Terminate(termination) => Some(termination),
        }
    }
}

/// A route: a pattern and the backends tried in order.
#[derive(Clone, Debug)]
pub struct Route {
    pattern: Pattern,
    /// The pattern as shown in logs and in the `route` metric label.
    label: Arc<str>,
    backends: Vec<BackendTemplate>,
    /// Whether hellos without a server name are sent here.
    default: bool,
    /// Whether backend connections start with a PROXY v2 header.
    proxy_protocol: bool,
    /// The most sessions this route may hold at once.
    max_connections: Option<usize>,
    /// Passthrough, or terminated with the route's own certificate.
    mode: TlsMode,
}

impl Route {
    /// Builds a route; `backends` must be non-empty.
    pub fn new(pattern: Pattern, backends: Vec<BackendTemplate>) -> Result<Self, RouteError> {
        if backends.is_empty() {
            return Err(RouteError::NoBackends(pattern.to_string()));
        }
        Ok(Self {
            label: pattern.to_string().into(),
            pattern,
            backends,
            default: false,
            proxy_protocol: false,
            max_connections: None,
            mode: TlsMode::Passthrough,
        })
    }

    /// Sets how the route carries TLS (passthrough by default).
    pub fn with_mode(mut self, mode: TlsMode) -> Self {
        self.mode = mode;
        self
    }

    /// How the route carries TLS.
    pub fn mode(&self) -> &TlsMode {
        &self.mode
    }

    /// Checks that every backend suits the route: a unix socket speaks
    /// neither TLS (Postgres does not offer it there) nor the PROXY protocol
    /// (whose header carries TCP addresses), so it needs a terminated route
    /// with `backend_tls = "disable"` and no PROXY header. On failure, the
    /// index of the offending backend comes with the error.
    pub fn check_backends(&self) -> Result<(), (usize, RouteError)> {
        for (index, backend) in self.backends.iter().enumerate() {
            if !backend.is_unix() {
                continue;
            }
            let reason = match &self.mode {
                TlsMode::Passthrough => {
                    "a unix-socket backend needs tls = \"terminate\": Postgres does not offer TLS on a unix socket"
                }
                TlsMode::Terminate(termination)
                    if termination.backend_tls != BackendTls::Disable =>
                {
                    "a unix-socket backend needs backend_tls = \"disable\": Postgres does not offer TLS on a unix socket"
                }
                TlsMode::Terminate(_) if self.proxy_protocol => {
                    "a unix-socket backend cannot take a PROXY header"
                }
                TlsMode::Terminate(_) => continue,
            };
            return Err((
                index,
                RouteError::Backend {
                    backend: backend.expand("{1}"),
                    reason,
                },
            ));
        }
        Ok(())
    }

    /// Caps the sessions this route may hold at once.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Makes backend connections start with a PROXY protocol v2 header that
    /// carries the client's address (for PgBouncer, HAProxy and others that
    /// read it).
    pub fn with_proxy_protocol(mut self) -> Self {
        self.proxy_protocol = true;
        self
    }

    /// Marks this route as the one for hellos that carry no server name
    /// (libpq before 14, IP-literal hosts, some drivers).
    pub fn into_default(mut self) -> Result<Self, RouteError> {
        if self.backends.iter().any(BackendTemplate::has_placeholder) {
            return Err(RouteError::DefaultWithPlaceholder(self.label.to_string()));
        }
        self.default = true;
        Ok(self)
    }

    /// The pattern this route matches.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Whether this is the route for hellos without a server name.
    pub fn is_default(&self) -> bool {
        self.default
    }

    fn resolve(&self, label: &str) -> Resolved {
        Resolved {
            route: self.label.clone(),
            backends: self
                .backends
                .iter()
                .map(|template| Backend {
                    address: template.expand(label),
                    client_chosen: template.has_placeholder(),
                })
                .collect(),
            proxy_protocol: self.proxy_protocol,
            max_connections: self.max_connections,
            mode: self.mode.clone(),
        }
    }
}

/// One backend of a routing decision: its address, and whether a label the
/// client sent is part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    address: String,
    /// Set for an expanded `{1}` template: such an address may name only
    /// what the template's fixed domain allows, never an address the client
    /// spelled (see [`Backend::is_client_chosen`]).
    client_chosen: bool,
}

impl Backend {
    /// A backend written in full in the routes file.
    pub fn fixed(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            client_chosen: false,
        }
    }

    /// An expanded `{1}` template's address, as [`RouteTable::lookup`]
    /// makes it.
    #[cfg(test)]
    pub(crate) fn client_chosen(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            client_chosen: true,
        }
    }

    /// The address: `host:port`, or `unix:/path` on a terminated route.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// Whether part of the address came from the client's server name (a
    /// `{1}` template). The client then chose part of the destination, so
    /// an address that turns out to be an IP literal was not the operator's.
    pub fn is_client_chosen(&self) -> bool {
        self.client_chosen
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

impl PartialEq<&str> for Backend {
    fn eq(&self, other: &&str) -> bool {
        self.address == *other
    }
}

impl PartialEq<String> for Backend {
    fn eq(&self, other: &String) -> bool {
        self.address == *other
    }
}

/// A routing decision, owned so that it outlives the table snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The matching route's pattern (the `route` metric label).
    pub route: Arc<str>,
    /// Backend addresses (`host:port`, or `unix:/path` on a terminated
    /// route), in the order to try them.
    pub backends: Vec<Backend>,
    /// Whether backend connections start with a PROXY v2 header.
    pub proxy_protocol: bool,
    /// The most sessions the route may hold at once.
    pub max_connections: Option<usize>,
    /// Passthrough, or terminated with the route's own certificate.
    pub mode: TlsMode,
}

/// An immutable set of routes with constant-time lookup.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    /// The route for hellos without a server name, if any.
    default: Option<usize>,
}

impl RouteTable {
    /// Builds a table, refusing two routes with the same pattern and
    /// backends that do not suit their route (see [`Route::check_backends`]).
    pub fn new(routes: Vec<Route>) -> Result<Self, (usize, RouteError)> {
        let mut exact = HashMap::with_capacity(routes.len());
        let mut wildcard = HashMap::new();
        let mut default = None;
        for (index, route) in routes.iter().enumerate() {
            route
                .check_backends()
                .map_err(|(_, error)| (index, error))?;
            if route.default && default.replace(index).is_some() {
                return Err((index, RouteError::SecondDefault(route.label.to_string())));
            }
            let (map, key) = match &route.pattern {
                Pattern::Exact(name) => (&mut exact, name),
                Pattern::Wildcard { suffix } => (&mut wildcard, suffix),
            };
            if map.insert(key.clone(), index).is_some() {
                return Err((index, RouteError::Duplicate(route.label.to_string())));
            }
        }
        Ok(Self {
            routes,
            exact,
            wildcard,
            default,
        })
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The termination settings of every terminated route, in file order:
    /// what must be loaded before this table can be put in force.
    pub fn terminations(&self) -> impl Iterator<Item = &Termination> {
        self.routes
            .iter()
            .filter_map(|route| route.mode.termination().map(|t| &**t))
    }

    /// Finds the route for `name`: an exact match wins over a wildcard, and a
    /// wildcard matches exactly one leftmost label.
    pub fn lookup(&self, name: &HostName) -> Option<Resolved> {
        if let Some(&index) = self.exact.get(name.as_str()) {
            // Exact routes have no {1}, so there is no label to pass.
            return Some(self.routes[index].resolve(""));
        }
        let &index = self.wildcard.get(name.parent()?)?;
        Some(self.routes[index].resolve(name.first_label()))
    }

    /// Whether a route with this pattern (as in [`Resolved::route`]) is in
    /// the table.
    pub fn has_route(&self, pattern: &str) -> bool {
        match pattern.strip_prefix("*.") {
            Some(suffix) => self.wildcard.contains_key(suffix),
            None => self.exact.contains_key(pattern),
        }
    }

    /// The route for a hello that carries no server name, if one is marked
    /// `default`.
    pub fn lookup_default(&self) -> Option<Resolved> {
        self.default.map(|index| self.routes[index].resolve(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> HostName {
        HostName::parse(text.as_bytes()).unwrap()
    }

    fn route(pattern: &str, backends: &[&str]) -> Route {
        let pattern = Pattern::parse(pattern).unwrap();
        let wildcard = matches!(pattern, Pattern::Wildcard { .. });
        let backends = backends
            .iter()
            .map(|b| BackendTemplate::parse(b, wildcard).unwrap())
            .collect();
        Route::new(pattern, backends).unwrap()
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("alpha.db.example.com", &["10.0.1.5:5432", "10.0.1.6:5432"]),
            route(
                "*.data-1.use1.example.com",
                &["{1}-rw.{1}.svc.cluster.local:5432"],
            ),
            route("special.data-1.use1.example.com", &["[::1]:6000"]),
        ])
        .unwrap()
    }

    #[test]
    fn exact_match_keeps_backend_order() {
        let resolved = table().lookup(&name("ALPHA.db.example.com.")).unwrap();
        assert_eq!(&*resolved.route, "alpha.db.example.com");
        assert_eq!(resolved.backends, ["10.0.1.5:5432", "10.0.1.6:5432"]);
    }

    #[test]
    fn wildcard_substitutes_the_label() {
        let resolved = table()
            .lookup(&name("tenant-7.data-1.use1.example.com"))
            .unwrap();
        assert_eq!(&*resolved.route, "*.data-1.use1.example.com");
        assert_eq!(
            resolved.backends,
            ["tenant-7-rw.tenant-7.svc.cluster.local:5432"]
        );
    }

    #[test]
    fn exact_wins_over_wildcard() {
        let resolved = table()
            .lookup(&name("special.data-1.use1.example.com"))
            .unwrap();
        assert_eq!(resolved.backends, ["[::1]:6000"]);
    }

    #[test]
    fn has_route_by_pattern() {
        let table = table();
        assert!(table.has_route("alpha.db.example.com"));
        assert!(table.has_route("*.data-1.use1.example.com"));
        assert!(!table.has_route("beta.db.example.com"));
        assert!(!table.has_route("*.db.example.com"));
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let table = table();
        assert!(table.lookup(&name("data-1.use1.example.com")).is_none());
        assert!(table.lookup(&name("a.b.data-1.use1.example.com")).is_none());
        assert!(table.lookup(&name("beta.db.example.com")).is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let error = RouteTable::new(vec![
            route("a.example.com", &["127.0.0.1:1"]),
            route("A.example.com.", &["127.0.0.1:2"]),
        ])
        .unwrap_err();
        assert_eq!(error.0, 1);
        assert!(matches!(error.1, RouteError::Duplicate(_)));
    }

    #[test]
    fn at_most_one_default_without_placeholders() {
        let table = RouteTable::new(vec![
            route("a.example.com", &["127.0.0.1:1"]),
            route("b.example.com", &["127.0.0.1:2"])
                .into_default()
                .unwrap(),
        ])
        .unwrap();
        assert_eq!(table.lookup_default().unwrap().backends, ["127.0.0.1:2"]);
        assert!(self::table().lookup_default().is_none());

        let error = RouteTable::new(vec![
            route("a.example.com", &["127.0.0.1:1"])
                .into_default()
                .unwrap(),
            route("b.example.com", &["127.0.0.1:2"])
                .into_default()
                .unwrap(),
        ])
        .unwrap_err();
        assert_eq!(error.0, 1);
        assert!(matches!(error.1, RouteError::SecondDefault(_)));

        let templated = route("*.example.com", &["{1}.svc:5432"]).into_default();
        assert!(matches!(
            templated,
            Err(RouteError::DefaultWithPlaceholder(_))
        ));
        assert!(route("*.example.com", &["fixed.svc:5432"])
            .into_default()
            .is_ok());
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "a*.example.com",
            "**.x",
            "a b",
            "a..b",
            "é.com",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn unix_backends() {
        let template = BackendTemplate::parse("unix:/run/{1}/.s.PGSQL.5432", true).unwrap();
        assert!(template.is_unix());
        assert_eq!(template.expand("t7"), "unix:/run/t7/.s.PGSQL.5432");
        assert!(!BackendTemplate::parse("10.0.0.1:5432", false)
            .unwrap()
            .is_unix());
        for bad in [
            "unix:relative/.s.PGSQL.5432",
            "unix:",
            &format!("unix:/{}", "d".repeat(107)),
            &format!("unix:/{}/{{1}}", "d".repeat(45)),
        ] {
            assert!(
                BackendTemplate::parse(bad, true).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn unix_backends_only_on_plaintext_terminated_routes() {
        let terminated = |backend_tls| {
            TlsMode::Terminate(Arc::new(Termination {
                identity: IdentityFiles {
                    certificate: "a.pem".into(),
                    private_key: "a.key".into(),
                },
                backend_tls,
            }))
        };
        let unix = route(
            "a.example.com",
            &["127.0.0.1:1", "unix:/run/pg/.s.PGSQL.5432"],
        );
        let (index, error) = unix.check_backends().unwrap_err();
        assert_eq!(index, 1);
        assert!(error.to_string().contains("terminate"), "{error}");
        assert!(RouteTable::new(vec![unix.clone()]).is_err());

        let plaintext = unix.clone().with_mode(terminated(BackendTls::Disable));
        assert!(plaintext.check_backends().is_ok());
        assert!(plaintext
            .clone()
            .with_proxy_protocol()
            .check_backends()
            .is_err());
        let encrypted = unix.with_mode(terminated(BackendTls::Require));
        assert!(encrypted.check_backends().is_err());

        let table =
            RouteTable::new(vec![plaintext, route("b.example.com", &["127.0.0.1:2"])]).unwrap();
        assert_eq!(table.terminations().count(), 1);
        assert_eq!(
            table.lookup(&name("a.example.com")).unwrap().mode.label(),
            "terminate"
        );
        assert_eq!(
            table.lookup(&name("b.example.com")).unwrap().mode.label(),
            "passthrough"
        );
    }

    #[test]
    fn bad_backends() {
        for bad in [
            "host",
            "host:",
            "host:0",
            "host:70000",
            "[::1:5432",
            "a/b:5432",
            "user@host:5432",
            "{2}.svc:5432",
            "x}.svc:5432",
            "{1}.svc:{1}",
            // The client would choose the host.
            "{1}:5432",
            "db-{1}:5432",
            "10.0.0.{1}:5432",
            "{1}.:5432",
            "a.{1}:5432",
            // Addresses only getaddrinfo reads as such.
            "127.1:5432",
            "2130706433:5432",
            "0x7f000001:5432",
            "017700000001:5432",
        ] {
            assert!(
                BackendTemplate::parse(bad, true).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(BackendTemplate::parse("{1}.svc:5432", false).is_err());
        assert!(BackendTemplate::parse("{1}.svc:5432", true).is_ok());
        assert!(BackendTemplate::parse("127.0.0.1:5432", false).is_ok());
        for good in [
            "{1}.svc:5432",
            "{1}-rw.{1}.svc:5432",
            "db-{1}.internal:5432",
        ] {
            assert!(BackendTemplate::parse(good, true).is_ok(), "{good}");
        }
        let error = BackendTemplate::parse("{1}:5432", true).unwrap_err();
        assert!(error.to_string().contains("fixed domain"), "{error}");
    }

    #[test]
    fn expanded_templates_are_marked_as_chosen_by_the_client() {
        let table = RouteTable::new(vec![
            route("*.wild.example.com", &["{1}.svc:5432", "10.0.0.1:5432"]),
            route("fixed.example.com", &["db.internal:5432"]),
        ])
        .unwrap();
        let wild = table.lookup(&name("t7.wild.example.com")).unwrap();
        assert_eq!(wild.backends, ["t7.svc:5432", "10.0.0.1:5432"]);
        assert!(wild.backends[0].is_client_chosen());
        assert!(!wild.backends[1].is_client_chosen());
        let fixed = table.lookup(&name("fixed.example.com")).unwrap();
        assert!(!fixed.backends[0].is_client_chosen());
    }
}
