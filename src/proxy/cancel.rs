//! Carrying plaintext CancelRequests to the backends that can honour them.
//!
//! psql's Ctrl-C and `PQcancel` open a new, unencrypted connection that
//! carries only a backend pid and secret key: no TLS, so no server name to
//! route by. pgsni therefore remembers, per client IP address, which backends
//! that address has live sessions with, and forwards the 16-byte request
//! unchanged to each of them (at most a handful). Postgres ignores a key that
//! does not match, so a cancel can only ever stop a query of the sender's own
//! sessions; the per-address rate limit keeps one address from using pgsni
//! to knock on many backends.
//!
//! Addresses are keyed as for the other per-source budgets
//! ([`crate::net::source_key`]): an IPv6 client's whole prefix shares one
//! entry. Clients behind one NAT share an address, hence one cancel budget
//! and one set of targets: a neighbour can spend the budget. libpq 17's
//! encrypted cancel carries the server name and avoids this path entirely.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tracing::debug;

use super::dial;
use crate::metrics::CANCEL_REQUESTS_TOTAL;
use crate::net::{source_key, Networks};
use crate::wire::proxy_header;

/// Default for the most backends one CancelRequest is forwarded to.
pub const DEFAULT_MAX_TARGETS: usize = 4;
/// Cancels an address may send per second, on average.
const CANCELS_PER_SECOND: f64 = 5.0;
/// Cancels an address may send in a burst.
const CANCEL_BURST: f64 = 20.0;

/// How a plaintext CancelRequest was handled (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// Forwarded to at least one backend.
    Forwarded,
    /// Forwarded to at least one of the most recently used backends, but
    /// the address had sessions with more than the bound allows: the
    /// others were left out.
    Truncated,
    /// The address has no live session: nothing was forwarded.
    NoSession,
    /// The address sent too many cancels: nothing was forwarded.
    RateLimited,
    /// No backend could be reached.
    Failed,
}

impl CancelResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::Truncated => "truncated",
            Self::NoSession => "no_session",
            Self::RateLimited => "rate_limited",
            Self::Failed => "failed",
        }
    }
}

/// A backend a cancel may be sent to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CancelTarget {
    /// A backend reached over TCP.
    Tcp {
        /// The backend's socket address, as connected.
        addr: SocketAddr,
        /// Whether its connections start with a PROXY v2 header.
        proxy_protocol: bool,
    },
    /// A backend reached over its unix socket (a terminated route's).
    Unix(Arc<Path>),
}

/// The live sessions of one address with one backend.
#[derive(Debug)]
struct Sessions {
    /// How many are live.
    live: usize,
    /// When the latest session with this backend started, in registration
    /// order (kept while any of them lives): a cancel is most likely meant
    /// for the session the client opened last.
    latest: u64,
}

/// What pgsni knows about one client address.
#[derive(Debug)]
struct AddressState {
    /// Live sessions per backend.
    backends: HashMap<CancelTarget, Sessions>,
    /// Token bucket for cancels from this address.
    tokens: f64,
    refilled: Instant,
}

/// Live sessions by client address; shared by every session.
#[derive(Debug)]
pub struct CancelRegistry {
    addresses: DashMap<IpAddr, AddressState>,
    max_targets: usize,
    ipv6_source_prefix: u8,
    /// Registrations so far: orders sessions by start.
    registered: AtomicU64,
    /// `--backend-networks`: cancels go only to addresses inside (empty:
    /// anywhere). Targets are addresses sessions already reached, so this
    /// only guards the invariant that every backend connection is checked.
    backend_networks: Networks,
}

/// The backends one cancel goes to.
#[derive(Debug, PartialEq, Eq)]
struct Targets {
    /// The most recently used backends first, at most `max_targets`.
    backends: Vec<CancelTarget>,
    /// Whether the address had sessions with more backends than that.
    truncated: bool,
}

impl CancelRegistry {
    /// An empty registry that forwards each cancel to at most `max_targets`
    /// backends, grouping IPv6 clients by `ipv6_source_prefix` bits.
    pub fn new(max_targets: usize, ipv6_source_prefix: u8) -> Self {
        Self {
            addresses: DashMap::new(),
            max_targets,
            ipv6_source_prefix,
            registered: AtomicU64::new(0),
            backend_networks: Networks::none(),
        }
    }

    /// Sends cancels only to TCP backends inside `networks` (unless empty).
    pub fn with_backend_networks(mut self, networks: Networks) -> Self {
        self.backend_networks = networks;
        self
    }

    fn key(&self, client: IpAddr) -> IpAddr {
        source_key(client, self.ipv6_source_prefix)
    }

    /// Records a live session from `client` to `backend`; the session is
    /// forgotten when the returned guard is dropped.
    pub fn register(self: &Arc<Self>, client: IpAddr, backend: CancelTarget) -> Registration {
        let client = self.key(client);
        let started = self.registered.fetch_add(1, Ordering::Relaxed);
        let mut state = self
            .addresses
            .entry(client)
            .or_insert_with(|| AddressState {
                backends: HashMap::new(),
                tokens: CANCEL_BURST,
                refilled: Instant::now(),
            });
        let sessions = state
            .backends
            .entry(backend.clone())
            .or_insert(Sessions { live: 0, latest: 0 });
        sessions.live += 1;
        sessions.latest = sessions.latest.max(started);
        Registration {
            registry: self.clone(),
            client,
            backend,
        }
    }

    /// The backends `client` has live sessions with, most recently used
    /// first, if its rate allows one more cancel now.
    fn targets(&self, client: IpAddr) -> Result<Targets, CancelResult> {
        let Some(mut state) = self.addresses.get_mut(&self.key(client)) else {
            return Err(CancelResult::NoSession);
        };
        let now = Instant::now();
        let elapsed = now.duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * CANCELS_PER_SECOND).min(CANCEL_BURST);
        state.refilled = now;
        if state.tokens < 1.0 {
            return Err(CancelResult::RateLimited);
        }
        state.tokens -= 1.0;
        let mut backends: Vec<_> = state.backends.iter().collect();
        // Not the map's order, which would pick the same few every time.
        backends.sort_unstable_by_key(|(_, sessions)| std::cmp::Reverse(sessions.latest));
        let truncated = backends.len() > self.max_targets;
        Ok(Targets {
            backends: backends
                .into_iter()
                .take(self.max_targets)
                .map(|(target, _)| target.clone())
                .collect(),
            truncated,
        })
    }

    /// Forwards `request` (a complete CancelRequest packet) from `client` to
    /// the backends its address has sessions with, each attempt bounded by
    /// `timeout`.
    pub async fn forward(
        &self,
        client: SocketAddr,
        request: &[u8],
        timeout: Duration,
    ) -> CancelResult {
        let result = match self.targets(client.ip()) {
            Err(result) => result,
            Ok(Targets {
                backends,
                truncated,
            }) => {
                let mut delivered = 0;
                for target in backends {
                    if let CancelTarget::Tcp { addr, .. } = &target {
                        if let Err(refused) = dial::allowed(&self.backend_networks, addr.ip()) {
                            debug!(?target, %refused, "cancel not sent");
                            continue;
                        }
                    }
                    let attempt = tokio::time::timeout(timeout, deliver(client, &target, request));
                    match attempt.await {
                        Ok(Ok(())) => delivered += 1,
                        Ok(Err(error)) => debug!(?target, %error, "cancel not delivered"),
                        Err(_) => debug!(?target, "cancel not delivered in time"),
                    }
                }
                if delivered > 0 && truncated {
                    CancelResult::Truncated
                } else if delivered > 0 {
                    CancelResult::Forwarded
                } else {
                    CancelResult::Failed
                }
            }
        };
        ::metrics::counter!(CANCEL_REQUESTS_TOTAL, "result" => result.as_str()).increment(1);
        debug!(result = result.as_str(), "plaintext CancelRequest");
        result
    }

    fn unregister(&self, client: IpAddr, backend: &CancelTarget) {
        // Remove the address entirely once its last session ends, so that
        // memory follows live sessions, not every address ever seen.
        self.addresses.remove_if_mut(&client, |_, state| {
            if let Some(sessions) = state.backends.get_mut(backend) {
                sessions.live -= 1;
                if sessions.live == 0 {
                    state.backends.remove(backend);
                }
            }
            state.backends.is_empty()
        });
    }

    /// The number of client addresses with live sessions.
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }
}

/// A live session in the registry; dropping it forgets the session.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    /// The client's key in the registry.
    client: IpAddr,
    backend: CancelTarget,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(self.client, &self.backend);
    }
}

/// Sends `request` from `client` to one backend, after a PROXY header if the
/// backend expects one.
async fn deliver(client: SocketAddr, target: &CancelTarget, request: &[u8]) -> std::io::Result<()> {
    async fn send(mut stream: impl AsyncWrite + Unpin, packet: &[u8]) -> std::io::Result<()> {
        stream.write_all(packet).await?;
        stream.shutdown().await
    }
    match target {
        CancelTarget::Tcp {
            addr,
            proxy_protocol,
        } => {
            let mut packet = Vec::with_capacity(64);
            if *proxy_protocol {
                packet.extend(proxy_header::encode_v2(client, *addr));
            }
            packet.extend_from_slice(request);
            send(TcpStream::connect(addr).await?, &packet).await
        }
        CancelTarget::Unix(path) => send(UnixStream::connect(path).await?, request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const CANCEL: [u8; 16] = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 1, 2, 3, 4];

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn from(last: u8) -> SocketAddr {
        SocketAddr::new(ip(last), 40000)
    }

    fn target(addr: SocketAddr) -> CancelTarget {
        CancelTarget::Tcp {
            addr,
            proxy_protocol: false,
        }
    }

    #[tokio::test]
    async fn forwards_to_the_backends_of_the_same_address_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let registry = Arc::new(CancelRegistry::new(DEFAULT_MAX_TARGETS, 64));
        let session = registry.register(ip(1), target(backend));

        let timeout = Duration::from_secs(2);
        assert_eq!(
            registry.forward(from(2), &CANCEL, timeout).await,
            CancelResult::NoSession
        );
        assert_eq!(
            registry.forward(from(1), &CANCEL, timeout).await,
            CancelResult::Forwarded
        );
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, CANCEL, "forwarded unchanged");

        drop(session);
        assert_eq!(registry.addresses(), 0, "forgotten with its last session");
        assert_eq!(
            registry.forward(from(1), &CANCEL, timeout).await,
            CancelResult::NoSession
        );
    }

    #[tokio::test]
    async fn backends_behind_proxy_protocol_get_the_header_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let registry = Arc::new(CancelRegistry::new(DEFAULT_MAX_TARGETS, 64));
        let _session = registry.register(
            ip(1),
            CancelTarget::Tcp {
                addr: backend,
                proxy_protocol: true,
            },
        );
        let result = registry
            .forward(from(1), &CANCEL, Duration::from_secs(2))
            .await;
        assert_eq!(result, CancelResult::Forwarded);
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        let (header, len) = proxy_header::parse(&received).unwrap().unwrap();
        assert_eq!(
            header,
            proxy_header::ProxyHeader::Proxy {
                source: from(1),
                destination: backend
            }
        );
        assert_eq!(&received[len..], CANCEL);
    }

    #[tokio::test]
    async fn unix_socket_backends_get_the_request_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path: Arc<Path> = dir.path().join(".s.PGSQL.5432").into();
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let registry = Arc::new(CancelRegistry::new(DEFAULT_MAX_TARGETS, 64));
        let _session = registry.register(ip(1), CancelTarget::Unix(path));
        let result = registry
            .forward(from(1), &CANCEL, Duration::from_secs(2))
            .await;
        assert_eq!(result, CancelResult::Forwarded);
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, CANCEL);
    }

    #[tokio::test]
    async fn no_cancel_leaves_the_backend_networks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let registry = Arc::new(
            CancelRegistry::new(DEFAULT_MAX_TARGETS, 64)
                .with_backend_networks("10.0.0.0/8".parse().unwrap()),
        );
        let _session = registry.register(ip(1), target(backend));
        let result = registry
            .forward(from(1), &CANCEL, Duration::from_secs(2))
            .await;
        assert_eq!(result, CancelResult::Failed);
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a cancel reached a backend outside");
    }

    #[tokio::test]
    async fn at_most_max_targets_and_rate_limited() {
        let registry = Arc::new(CancelRegistry::new(2, 64));
        let backend = |port| target(SocketAddr::from(([127, 0, 0, 1], port)));
        let mut sessions = Vec::new();
        for port in [1, 2, 3, 4, 5, 1] {
            sessions.push(registry.register(ip(1), backend(port)));
        }
        assert_eq!(
            registry.targets(ip(1)).unwrap(),
            Targets {
                backends: vec![backend(1), backend(5)],
                truncated: true
            },
            "the most recently started sessions' backends first"
        );
        sessions.remove(3); // the session with backend 4
        sessions.push(registry.register(ip(1), backend(3)));
        assert_eq!(
            registry.targets(ip(1)).unwrap().backends,
            vec![backend(3), backend(1)]
        );
        let mut limited = false;
        for _ in 0..(CANCEL_BURST as usize + 1) {
            limited |= registry.targets(ip(1)) == Err(CancelResult::RateLimited);
        }
        assert!(limited, "a burst beyond the bucket is refused");
    }

    #[tokio::test]
    async fn a_fan_out_cut_to_the_bound_is_counted_as_truncated() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let registry = Arc::new(CancelRegistry::new(1, 64));
        let _older = registry.register(ip(1), target(SocketAddr::from(([127, 0, 0, 1], 1))));
        let _newer = registry.register(ip(1), target(live));
        let result = registry
            .forward(from(1), &CANCEL, Duration::from_secs(2))
            .await;
        assert_eq!(result, CancelResult::Truncated);
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, CANCEL, "the newest session's backend has it");
    }

    #[test]
    fn an_ipv6_prefix_is_one_address() {
        let registry = Arc::new(CancelRegistry::new(4, 64));
        let backend = target(SocketAddr::from(([127, 0, 0, 1], 1)));
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let _session = registry.register(v6("2001:db8:0:1::1"), backend.clone());
        assert_eq!(
            registry.targets(v6("2001:db8:0:1::ffff")).unwrap().backends,
            vec![backend]
        );
        assert_eq!(
            registry.targets(v6("2001:db8:0:2::1")),
            Err(CancelResult::NoSession)
        );
        assert_eq!(registry.addresses(), 1);
    }
}
