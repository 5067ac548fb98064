//! Admission limits: how many connections the broker, a route and one client
//! address may hold, and how fast one address may open them.
//!
//! Limits are checked where the information exists: the global and
//! per-address limits once the client's address is known (after any PROXY
//! header), the per-route limit once the server name is routed. State is kept
//! in concurrent maps, per address only while the address has handshakes in
//! flight or a recent burst to remember, so memory follows live clients.
//!
//! Per-source state is keyed by [`source_key`]: an IPv4 address, or the
//! IPv6 prefix (a /64 by default) that one holder controls, so that rotating
//! through the addresses of one's own prefix buys no fresh budget.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::net::{source_key, DEFAULT_IPV6_SOURCE_PREFIX};

/// Configured limits; `None` means unlimited.
#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    /// Sessions the whole broker may hold (handshaking or forwarding).
    pub max_connections: Option<usize>,
    /// Handshakes one client address may have in flight at once.
    pub max_handshakes_per_source: Option<usize>,
    /// New connections one client address may open per second (with a
    /// burst of as many).
    pub max_connection_rate_per_source: Option<u32>,
    /// The prefix length IPv6 clients are grouped by (see [`source_key`]).
    pub ipv6_source_prefix: u8,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_handshakes_per_source: None,
            max_connection_rate_per_source: None,
            ipv6_source_prefix: DEFAULT_IPV6_SOURCE_PREFIX,
        }
    }
}

/// Which limit refused a connection (the outcome label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    /// `--max-connections`.
    Global,
    /// A route's `max_connections`.
    Route,
    /// `--max-handshakes-per-source`.
    SourceHandshakes,
    /// `--max-connection-rate-per-source`.
    SourceRate,
}

impl LimitExceeded {
    /// What the refused client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Global => "too many connections: the server's connection limit is reached",
            Self::Route => "too many connections: this database's connection limit is reached",
            Self::SourceHandshakes => {
                "too many connections: too many connection attempts in progress from your address"
            }
            Self::SourceRate => {
                "too many connections: too many new connections per second from your address"
            }
        }
    }
}

#[derive(Debug)]
struct SourceState {
    handshakes: usize,
    tokens: f64,
    refilled: Instant,
}

/// The broker's admission state, shared by every session.
#[derive(Debug, Default)]
pub struct Limits {
    config: LimitConfig,
    sources: DashMap<IpAddr, SourceState>,
    routes: DashMap<Arc<str>, usize>,
}

impl Limits {
    /// Limits with `config`.
    pub fn new(config: LimitConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            ..Self::default()
        })
    }

    /// Admits a new connection from `source` while `active` sessions
    /// (this one included) are alive. The returned slot holds one of the
    /// address's concurrent handshakes until dropped.
    pub fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        active: usize,
    ) -> Result<HandshakeSlot, LimitExceeded> {
        if self.config.max_connections.is_some_and(|max| active > max) {
            return Err(LimitExceeded::Global);
        }
        self.admit_source(source, true)
    }

    /// Admits a connection from a trusted load balancer at `proxy` while it
    /// has yet to send its PROXY header: it holds one of the balancer's
    /// concurrent handshakes (so that a balancer, or whoever opens
    /// connections from its address, cannot park unbounded silent
    /// connections), but spends none of its rate: every client behind the
    /// balancer shares that address, and each is charged on its own address
    /// once the header names it.
    pub fn admit_proxy(self: &Arc<Self>, proxy: IpAddr) -> Result<HandshakeSlot, LimitExceeded> {
        self.admit_source(proxy, false)
    }

    /// Takes one of `address`'s concurrent handshakes, and one token of its
    /// rate when `spend_rate` is set.
    fn admit_source(
        self: &Arc<Self>,
        address: IpAddr,
        spend_rate: bool,
    ) -> Result<HandshakeSlot, LimitExceeded> {
        let source = source_key(address, self.config.ipv6_source_prefix);
        let now = Instant::now();
        let mut state = self.sources.entry(source).or_insert_with(|| SourceState {
            handshakes: 0,
            tokens: self.burst(),
            refilled: now,
        });
        if let Some(rate) = self
            .config
            .max_connection_rate_per_source
            .filter(|_| spend_rate)
        {
            let elapsed = now.duration_since(state.refilled).as_secs_f64();
            state.tokens = (state.tokens + elapsed * f64::from(rate)).min(self.burst());
            state.refilled = now;
            if state.tokens < 1.0 {
                return Err(LimitExceeded::SourceRate);
            }
            state.tokens -= 1.0;
        }
        if self
            .config
            .max_handshakes_per_source
            .is_some_and(|max| state.handshakes >= max)
        {
            return Err(LimitExceeded::SourceHandshakes);
        }
        state.handshakes += 1;
        Ok(HandshakeSlot {
            limits: self.clone(),
            source,
        })
    }

    /// Admits one more session on `route`, whose limit is `max`. The slot
    /// counts against the route until dropped; counts are kept by route
    /// pattern, so they carry over a reload.
    pub fn admit_route(
        self: &Arc<Self>,
        route: &Arc<str>,
        max: Option<usize>,
    ) -> Result<RouteSlot, LimitExceeded> {
        let mut count = self.routes.entry(route.clone()).or_default();
        if max.is_some_and(|max| *count >= max) {
            return Err(LimitExceeded::Route);
        }
        *count += 1;
        Ok(RouteSlot {
            limits: self.clone(),
            route: route.clone(),
        })
    }

    /// Forgets addresses with no handshake in flight whose rate bucket has
    /// refilled: they would be recreated identical. Run now and then.
    pub fn sweep(&self) {
        let now = Instant::now();
        let refill = self.refill_time();
        self.sources
            .retain(|_, state| state.handshakes > 0 || now.duration_since(state.refilled) < refill);
    }

    /// Addresses currently remembered.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    fn burst(&self) -> f64 {
        self.config
            .max_connection_rate_per_source
            .map_or(f64::INFINITY, f64::from)
    }

    /// How long an untouched bucket takes to refill completely.
    fn refill_time(&self) -> Duration {
        match self.config.max_connection_rate_per_source {
            Some(_) => Duration::from_secs(1),
            None => Duration::ZERO,
        }
    }
}

/// One handshake in flight from one address.
#[derive(Debug)]
pub struct HandshakeSlot {
    limits: Arc<Limits>,
    source: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some(mut state) = self.limits.sources.get_mut(&self.source) {
            state.handshakes = state.handshakes.saturating_sub(1);
        }
    }
}

/// One session counted against a route's limit.
#[derive(Debug)]
pub struct RouteSlot {
    limits: Arc<Limits>,
    route: Arc<str>,
}

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.limits.routes.remove_if_mut(&self.route, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn global_limit_counts_this_session() {
        let limits = Limits::new(LimitConfig {
            max_connections: Some(2),
            ..LimitConfig::default()
        });
        assert!(limits.admit(ip(1), 2).is_ok());
        assert_eq!(limits.admit(ip(1), 3).unwrap_err(), LimitExceeded::Global);
    }

    #[test]
    fn concurrent_handshakes_per_source() {
        let limits = Limits::new(LimitConfig {
            max_handshakes_per_source: Some(2),
            ..LimitConfig::default()
        });
        let a = limits.admit(ip(1), 1).unwrap();
        let _b = limits.admit(ip(1), 2).unwrap();
        assert_eq!(
            limits.admit(ip(1), 3).unwrap_err(),
            LimitExceeded::SourceHandshakes
        );
        assert!(
            limits.admit(ip(2), 3).is_ok(),
            "other addresses are not affected"
        );
        drop(a);
        assert!(limits.admit(ip(1), 3).is_ok());
    }

    #[test]
    fn ipv6_sources_share_the_budget_of_their_prefix() {
        let limits = Limits::new(LimitConfig {
            max_handshakes_per_source: Some(1),
            ..LimitConfig::default()
        });
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let _held = limits.admit(v6("2001:db8:1:2::1"), 1).unwrap();
        assert_eq!(
            limits.admit(v6("2001:db8:1:2:ffff::9"), 2).unwrap_err(),
            LimitExceeded::SourceHandshakes,
            "another address of the same /64 is the same source"
        );
        assert!(limits.admit(v6("2001:db8:1:3::1"), 2).is_ok());

        let per_address = Limits::new(LimitConfig {
            max_handshakes_per_source: Some(1),
            ipv6_source_prefix: 128,
            ..LimitConfig::default()
        });
        let _held = per_address.admit(v6("2001:db8:1:2::1"), 1).unwrap();
        assert!(per_address.admit(v6("2001:db8:1:2::2"), 2).is_ok());
    }

    #[test]
    fn a_balancer_waiting_for_headers_holds_handshakes_but_spends_no_rate() {
        let limits = Limits::new(LimitConfig {
            max_handshakes_per_source: Some(2),
            max_connection_rate_per_source: Some(1),
            ..LimitConfig::default()
        });
        let balancer = ip(9);
        let first = limits.admit_proxy(balancer).unwrap();
        let _second = limits.admit_proxy(balancer).unwrap();
        assert_eq!(
            limits.admit_proxy(balancer).unwrap_err(),
            LimitExceeded::SourceHandshakes
        );
        drop(first);
        for _ in 0..10 {
            drop(limits.admit_proxy(balancer).unwrap());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn connection_rate_per_source_refills() {
        let limits = Limits::new(LimitConfig {
            max_connection_rate_per_source: Some(5),
            ..LimitConfig::default()
        });
        for _ in 0..5 {
            drop(limits.admit(ip(1), 1).unwrap());
        }
        assert_eq!(
            limits.admit(ip(1), 1).unwrap_err(),
            LimitExceeded::SourceRate
        );
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(
            limits.admit(ip(1), 1).is_ok(),
            "two tokens back after 400 ms"
        );

        tokio::time::advance(Duration::from_secs(2)).await;
        limits.sweep();
        assert_eq!(
            limits.sources(),
            0,
            "idle, refilled addresses are forgotten"
        );
    }

    #[test]
    fn route_limit_and_release() {
        let limits = Limits::new(LimitConfig::default());
        let route: Arc<str> = "alpha.db.example.com".into();
        let first = limits.admit_route(&route, Some(1)).unwrap();
        assert_eq!(
            limits.admit_route(&route, Some(1)).unwrap_err(),
            LimitExceeded::Route
        );
        assert!(
            limits.admit_route(&route, None).is_ok(),
            "no limit, no refusal"
        );
        drop(first);
        assert!(limits.admit_route(&route, Some(1)).is_ok());
    }
}
