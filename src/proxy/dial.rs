//! Turning a backend address into a TCP connection, under the operator's
//! policy on where backends may be.
//!
//! Every TCP connection to a backend goes through [`Dialer::connect`]:
//! passthrough and terminated routes, fixed and templated backends. It
//!
//! 1. refuses an expanded `{1}` template whose host is an IP address in any
//!    form (`127.1`, `2130706433`, …): the client spelled that address, the
//!    operator did not (see [`crate::routing::literal`]);
//! 2. takes an address the routes file wrote as it is, and resolves a name
//!    through the cached [`Resolver`];
//! 3. with `--backend-networks`, keeps only the resolved addresses inside
//!    those networks, so that whatever a name resolves to, nothing outside
//!    them is ever dialled.
//!
//! Unix-socket backends involve neither DNS nor networks and never get here.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;
use tokio::net::TcpStream;
use tracing::debug;

use super::resolve::{LookupError, Resolver};
use crate::net::Networks;
use crate::routing::literal;
use crate::routing::table::Backend;

/// Why policy refused a backend address.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NotAllowed {
    /// A `{1}` template expanded to an IP address: the client's label chose
    /// the destination.
    #[error("the client's server name made the backend host an IP address")]
    ClientChosenAddress,
    /// Every address of the backend lies outside `--backend-networks`.
    #[error("{0} is outside --backend-networks")]
    OutsideNetworks(IpAddr),
}

/// Why one backend could not be dialled.
#[derive(Debug, Error)]
pub enum DialError {
    /// Refused by policy before any packet was sent to it.
    #[error("backend not allowed: {0}")]
    NotAllowed(#[from] NotAllowed),
    /// Its name did not resolve.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Not `host:port` (the routes file parser prevents this).
    #[error("not a host:port address")]
    Malformed,
    /// No address of it accepted the connection.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
}

/// Where a backend address leads before DNS: an address, or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// An address the routes file wrote itself.
    Address(SocketAddr),
    /// A host name to resolve, and the port.
    Name(&'a str, u16),
}

/// What policy makes of `backend` before any lookup: a refusal for an IP
/// address the client spelled, otherwise the address or the name to resolve.
pub fn target(backend: &Backend) -> Result<Target<'_>, DialError> {
    let (host, port) = backend
        .as_str()
        .rsplit_once(':')
        .ok_or(DialError::Malformed)?;
    let port: u16 = port.parse().map_err(|_| DialError::Malformed)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    if backend.is_client_chosen() && literal::is_ip_literal(bare) {
        return Err(NotAllowed::ClientChosenAddress.into());
    }
    match literal::canonical_ip(host) {
        Some(ip) => Ok(Target::Address(SocketAddr::new(ip, port))),
        None => Ok(Target::Name(host, port)),
    }
}

/// Whether a backend at `ip` may be reached under `--backend-networks`
/// `networks`: inside them, or anywhere when none were given. Every backend
/// connection is checked here, cancels included.
pub fn allowed(networks: &Networks, ip: IpAddr) -> Result<(), NotAllowed> {
    if networks.is_empty() || networks.contains(ip) {
        Ok(())
    } else {
        Err(NotAllowed::OutsideNetworks(ip))
    }
}

/// Dials backends: resolution, then the network policy.
pub struct Dialer {
    resolver: Resolver,
    /// `--backend-networks`; empty means any address.
    networks: Networks,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("networks", &self.networks.to_string())
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// A dialer resolving through `resolver` and, unless `networks` is
    /// empty, dialling only addresses inside it.
    pub fn new(resolver: Resolver, networks: Networks) -> Self {
        Self { resolver, networks }
    }

    /// Whether `ip` may be dialled (see [`allowed`]).
    pub fn allows(&self, ip: IpAddr) -> Result<(), NotAllowed> {
        allowed(&self.networks, ip)
    }

    /// The addresses `backend` may be dialled at, in the order to try them.
    pub async fn addresses(&self, backend: &Backend) -> Result<Vec<SocketAddr>, DialError> {
        let candidates = match target(backend)? {
            Target::Address(addr) => vec![addr],
            Target::Name(host, port) => self
                .resolver
                .lookup(host)
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = candidates
            .into_iter()
            .filter(|addr| match self.allows(addr.ip()) {
                Ok(()) => true,
                Err(error) => {
                    debug!(%backend, %addr, "address outside --backend-networks skipped");
                    refused.get_or_insert(error);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(error)) => Err(error.into()),
            _ => Ok(allowed),
        }
    }

    /// Connects to the first address of `backend` that accepts.
    pub async fn connect(&self, backend: &Backend) -> Result<TcpStream, DialError> {
        let mut last = None;
        for addr in self.addresses(backend).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    debug!(%backend, %addr, %error, "connect failed");
                    last = Some(error);
                }
            }
        }
        Err(DialError::Connect(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address to connect to")
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::BackendTemplate;
    use hickory_resolver::config::{ResolverConfig, ResolverOpts};

    fn expanded(template: &str, label: &str) -> Backend {
        let template = BackendTemplate::parse(template, true).unwrap();
        let address = template.expand(label);
        if template.has_placeholder() {
            Backend::client_chosen(address)
        } else {
            Backend::fixed(address)
        }
    }

    fn offline() -> Resolver {
        Resolver::with_config(
            ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
            ResolverOpts::default(),
        )
        .expect("a resolver without servers builds")
    }

    #[test]
    fn labels_that_spell_addresses_are_refused() {
        for label in ["127", "0x7f", "0177", "10"] {
            let backend = expanded("{1}.0.0.1:5432", label);
            assert!(
                matches!(
                    target(&backend),
                    Err(DialError::NotAllowed(NotAllowed::ClientChosenAddress))
                ),
                "{backend}"
            );
        }
        let name = expanded("{1}.0.0.1:5432", "tenant");
        assert_eq!(target(&name).unwrap(), Target::Name("tenant.0.0.1", 5432));
    }

    #[test]
    fn addresses_the_routes_file_wrote_skip_dns() {
        let fixed = Backend::fixed("10.0.0.7:5432");
        assert_eq!(
            target(&fixed).unwrap(),
            Target::Address("10.0.0.7:5432".parse().unwrap())
        );
        let v6 = Backend::fixed("[::1]:6000");
        assert_eq!(
            target(&v6).unwrap(),
            Target::Address("[::1]:6000".parse().unwrap())
        );
        let name = expanded("{1}-rw.{1}.svc:5432", "t7");
        assert_eq!(target(&name).unwrap(), Target::Name("t7-rw.t7.svc", 5432));
    }

    #[tokio::test]
    async fn networks_bound_every_resolved_address() {
        let inside = Dialer::new(offline(), "127.0.0.0/8,::1".parse().unwrap());
        let outside = Dialer::new(offline(), "10.0.0.0/8".parse().unwrap());
        let anywhere = Dialer::new(offline(), Networks::none());
        for backend in [
            Backend::fixed("127.0.0.1:5432"),
            Backend::fixed("localhost:5432"),
        ] {
            assert!(!inside.addresses(&backend).await.unwrap().is_empty());
            assert!(!anywhere.addresses(&backend).await.unwrap().is_empty());
            assert!(matches!(
                outside.addresses(&backend).await,
                Err(DialError::NotAllowed(NotAllowed::OutsideNetworks(_)))
            ));
        }
        assert!(inside.allows("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(outside.allows("127.0.0.1".parse().unwrap()).is_err());
    }
}
