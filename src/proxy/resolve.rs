//! Resolving backend host names, asynchronously and with a cache.
//!
//! getaddrinfo blocks a thread of tokio's blocking pool for every lookup and
//! caches nothing, so each unknown label a client puts under a wildcard
//! route would cost a thread and a query. hickory-resolver instead resolves
//! on the runtime, honours `/etc/resolv.conf` (servers, search domains,
//! `ndots`, timeouts) and `/etc/hosts`, and caches answers, negative ones
//! included, by their TTL within the bounds below; a semaphore bounds how
//! many lookups run at once, so a flood of names queues here rather than at
//! the DNS servers.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::metrics::DNS_LOOKUPS_TOTAL;

/// The most lookups in flight at once; more wait for a turn (each attempt
/// stays bounded by the connect timeout).
pub const MAX_CONCURRENT_LOOKUPS: usize = 64;
/// Names (and negative answers) kept in the cache.
pub const CACHE_SIZE: usize = 4096;
/// Shortest time a name that does not exist is remembered, whatever its
/// zone's SOA says: a client repeating an unknown label then costs one query
/// per this period.
pub const NEGATIVE_TTL_FLOOR: Duration = Duration::from_secs(5);
/// Longest time a name that does not exist is remembered: a tenant created
/// after a client asked for it becomes reachable within this.
pub const NEGATIVE_TTL_CEILING: Duration = Duration::from_secs(30);
/// Longest time an answer is used without asking again, whatever its TTL: a
/// backend that moved is followed within this.
pub const POSITIVE_TTL_CEILING: Duration = Duration::from_secs(300);

/// Why a name did not resolve.
#[derive(Debug, Error)]
pub enum LookupError {
    /// The name does not exist, or has no address (NXDOMAIN, NODATA).
    #[error("{0:?} has no address")]
    NotFound(String),
    /// The lookup failed (no server answered, a server error, …).
    #[error("lookup of {name:?} failed: {reason}")]
    Failed {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

impl LookupError {
    /// The `result` metric label.
    fn label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Failed { .. } => "error",
        }
    }
}

/// A caching resolver shared by every session.
pub struct Resolver {
    inner: TokioResolver,
    /// Lookups in flight; see [`MAX_CONCURRENT_LOOKUPS`].
    permits: Semaphore,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver configured from `/etc/resolv.conf` and `/etc/hosts`.
    ///
    /// Where `/etc/resolv.conf` is missing, unreadable or names no server
    /// (minimal containers), it resolves from `/etc/hosts` (and `localhost`)
    /// alone and says so once: asking some public server instead would send
    /// internal names where nobody meant them to go.
    pub fn from_system() -> Result<Self, NetError> {
        let (config, options) = hickory_resolver::system_conf::read_system_conf()
            .unwrap_or_else(|error| {
                warn!(%error, "no usable /etc/resolv.conf: backend names resolve from /etc/hosts only");
                (ResolverConfig::from_parts(None, Vec::new(), Vec::new()), ResolverOpts::default())
            });
        Self::with_config(config, options)
    }

    /// A resolver with the given servers and options, to which pgsni's
    /// cache bounds are applied.
    pub fn with_config(
        config: ResolverConfig,
        mut options: ResolverOpts,
    ) -> Result<Self, NetError> {
        options.use_hosts_file = ResolveHosts::Always;
        // Both families, as getaddrinfo returns them: a backend reachable
        // over only one of them is still reached.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.cache_size = CACHE_SIZE as u64;
        options.negative_min_ttl = Some(NEGATIVE_TTL_FLOOR);
        options.negative_max_ttl = Some(NEGATIVE_TTL_CEILING);
        options.positive_max_ttl = Some(POSITIVE_TTL_CEILING);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()?;
        Ok(Self {
            inner,
            permits: Semaphore::new(MAX_CONCURRENT_LOOKUPS),
        })
    }

    /// The addresses of `host`, from the cache where it has them. Counted in
    /// `pgsni_dns_lookups_total{result}`.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let result = self.lookup_uncounted(host).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(error) => error.label(),
        };
        ::metrics::counter!(DNS_LOOKUPS_TOTAL, "result" => label).increment(1);
        result
    }

    async fn lookup_uncounted(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let failed = |reason: String| LookupError::Failed {
            name: host.to_owned(),
            reason,
        };
        // The semaphore is never closed; a failure here would be a bug, and
        // is reported as a failed lookup rather than a panic.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|error| failed(error.to_string()))?;
        match self.inner.lookup_ip(host).await {
            Ok(found) => {
                let addresses: Vec<IpAddr> = found.iter().collect();
                if addresses.is_empty() {
                    Err(LookupError::NotFound(host.to_owned()))
                } else {
                    Ok(addresses)
                }
            }
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => {
                Err(LookupError::NotFound(host.to_owned()))
            }
            Err(error) => Err(failed(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A DNS server on loopback that answers every query NXDOMAIN (with an
    /// SOA whose minimum is `soa_minimum` seconds) and counts the queries.
    async fn nxdomain_server(soa_minimum: u32) -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let query = &buf[..len];
                // Header: same id, QR=1, RD copied, RA=1, RCODE=3; one
                // question (echoed), no answer, one authority (SOA).
                let mut reply = Vec::with_capacity(len + 64);
                reply.extend_from_slice(&query[..2]);
                reply.push(0x80 | (query[2] & 0x01));
                reply.push(0x83);
                reply.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
                // The question only: the query may carry an EDNS record
                // after it, which this reply does not answer.
                let mut end = 12;
                while let Some(&len) = query.get(end).filter(|&&len| len > 0) {
                    end += 1 + usize::from(len);
                }
                let question = query.get(12..end + 5).unwrap_or_default();
                reply.extend_from_slice(question);
                // SOA for the root: name, type 6, class IN, TTL, rdata.
                let mut rdata = vec![0, 0]; // mname ".", rname "."
                for value in [1u32, 3600, 600, 86400, soa_minimum] {
                    rdata.extend_from_slice(&value.to_be_bytes());
                }
                reply.extend_from_slice(&[0, 0, 6, 0, 1]);
                reply.extend_from_slice(&soa_minimum.to_be_bytes());
                reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                reply.extend_from_slice(&rdata);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, queries)
    }

    fn resolver_for(server: SocketAddr) -> Resolver {
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let name_server = NameServerConfig::new(server.ip(), true, vec![udp]);
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
        let mut options = ResolverOpts::default();
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        Resolver::with_config(config, options).expect("a resolver for one UDP server builds")
    }

    #[tokio::test]
    async fn unknown_names_are_asked_once_and_remembered_at_least_the_floor() {
        // The zone says to remember the answer for 0 s; the floor keeps it.
        let (server, queries) = nxdomain_server(0).await;
        let resolver = resolver_for(server);
        for _ in 0..5 {
            let error = resolver.lookup("nope.pgsni.test.").await.unwrap_err();
            assert!(matches!(error, LookupError::NotFound(_)), "{error}");
        }
        let asked = queries.load(Ordering::SeqCst);
        // One query per address family, and none for the repeats.
        assert!((1..=2).contains(&asked), "{asked} queries for one name");
        resolver.lookup("other.pgsni.test.").await.unwrap_err();
        assert!(
            queries.load(Ordering::SeqCst) > asked,
            "another name is asked"
        );
    }

    #[tokio::test]
    async fn lookups_in_flight_are_bounded() {
        // A server that never answers: every lookup holds its permit until
        // it times out.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = Arc::new(resolver_for(silent.local_addr().unwrap()));
        let mut lookups = tokio::task::JoinSet::new();
        for i in 0..MAX_CONCURRENT_LOOKUPS + 10 {
            let resolver = resolver.clone();
            lookups.spawn(async move { resolver.lookup(&format!("n{i}.pgsni.test.")).await });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(resolver.permits.available_permits(), 0);
        let mut buf = [0u8; 512];
        let mut names = std::collections::HashSet::new();
        while let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(100), silent.recv_from(&mut buf)).await
        {
            names.insert(buf[12..len].to_vec());
        }
        // Each name is asked once per address family; names beyond the
        // bound wait for a permit instead.
        assert!(
            names.len() <= 2 * MAX_CONCURRENT_LOOKUPS,
            "{} questions in flight",
            names.len()
        );
        lookups.abort_all();
    }

    #[tokio::test]
    async fn hosts_and_localhost_need_no_server() {
        // No server at all: what a container without resolv.conf has.
        let resolver = Resolver::with_config(
            ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
            ResolverOpts::default(),
        )
        .expect("a resolver without servers builds");
        let addresses = resolver.lookup("localhost").await.unwrap();
        assert!(addresses.iter().all(IpAddr::is_loopback), "{addresses:?}");
        assert!(resolver.lookup("tenant.localhost.").await.is_ok());
        assert!(resolver.lookup("db.pgsni.test.").await.is_err());
    }
}
