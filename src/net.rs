//! Address networks (CIDR blocks) that decide whom pgsni trusts or reaches:
//! load balancers allowed to speak the PROXY protocol, networks backends may
//! live in. Also how a client address becomes the key of its per-source
//! budgets.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// A list of networks, given as `CIDR[,CIDR…]` (a bare address is a /32 or
/// a /128). Matching treats an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
/// as a dual-stack socket reports IPv4 peers) as the IPv4 address it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// No network at all: matches nothing.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// Parses networks separated by `separator` (`,` on the command line,
    /// `;` inside a `--listen` option, where `,` separates options).
    pub fn parse_list(text: &str, separator: char) -> Result<Self, String> {
        text.split(separator)
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` lies in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the list holds a network of prefix length 0 (`0.0.0.0/0` or
    /// `::/0`): every address of that family.
    pub fn covers_a_whole_family(&self) -> bool {
        self.0.iter().any(|net| net.prefix_len() == 0)
    }

    /// Appends the networks of `other`.
    pub fn extend(&mut self, other: &Networks) {
        self.0.extend_from_slice(&other.0);
    }
}

/// Several lists as one: a repeatable option's values.
impl<'a> FromIterator<&'a Networks> for Networks {
    fn from_iter<I: IntoIterator<Item = &'a Networks>>(lists: I) -> Self {
        let mut all = Self::none();
        for list in lists {
            all.extend(list);
        }
        all
    }
}

impl FromStr for Networks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_list(text, ',')
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// Parses `ADDR/LEN` or a bare address. Host bits must be zero
/// (`10.0.0.1/8` is refused): such a typo would otherwise silently trust a
/// network other than the one meant.
fn parse_network(text: &str) -> Result<IpNet, String> {
    if !text.contains('/') {
        return text
            .parse::<IpAddr>()
            .map(|ip| IpNet::from(ip.to_canonical()))
            .map_err(|_| format!("invalid network {text:?}: expected e.g. 10.0.0.0/8"));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("invalid network {text:?}: expected e.g. 10.0.0.0/8"))?;
    if net.trunc() != net {
        return Err(format!(
            "invalid network {text:?}: host bits are set (did you mean {}?)",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Default prefix length that IPv6 clients are grouped by for per-source
/// budgets: a /64 is what one subscriber or host is usually given.
pub const DEFAULT_IPV6_SOURCE_PREFIX: u8 = 64;

/// The key a client address is counted under in per-source budgets (rate
/// and handshake limits, cancel affinity). IPv4 addresses are their own
/// key; IPv6 addresses are cut to `ipv6_prefix` bits, since a single holder
/// of a /64 has 2^64 addresses to rotate through.
pub fn source_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn lists_parse_and_match() {
        let nets: Networks = "10.0.0.0/8, 192.0.2.7,2001:db8::/32".parse().unwrap();
        assert!(nets.contains(ip("10.200.0.1")));
        assert!(nets.contains(ip("192.0.2.7")));
        assert!(!nets.contains(ip("192.0.2.8")));
        assert!(nets.contains(ip("2001:db8:1::5")));
        assert!(!nets.contains(ip("2001:db9::1")));
        assert!(!nets.covers_a_whole_family());
        assert_eq!(nets.to_string(), "10.0.0.0/8,192.0.2.7/32,2001:db8::/32");
    }

    #[test]
    fn ipv4_mapped_addresses_match_their_ipv4_network() {
        let nets: Networks = "127.0.0.0/8".parse().unwrap();
        assert!(nets.contains(ip("::ffff:127.0.0.1")));
        let mapped: Networks = "::ffff:10.0.0.1".parse().unwrap();
        assert!(mapped.contains(ip("10.0.0.1")));
    }

    #[test]
    fn typos_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "example.com",
            "10.0.0/8",
            "::1/129",
        ] {
            assert!(bad.parse::<Networks>().is_err(), "{bad}");
        }
        assert!("".parse::<Networks>().unwrap().is_empty());
    }

    #[test]
    fn everything() {
        let all: Networks = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(all.covers_a_whole_family());
        assert!(all.contains(ip("203.0.113.9")) && all.contains(ip("2001:db8::1")));
        assert!(!Networks::none().contains(ip("127.0.0.1")));
    }

    #[test]
    fn repeated_lists_add_up() {
        let lists: Vec<Networks> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
        let all: Networks = lists.iter().collect();
        assert_eq!(all.to_string(), "10.0.0.0/8,192.0.2.0/24");
        assert!(std::iter::empty::<&Networks>()
            .collect::<Networks>()
            .is_empty());
    }

    #[test]
    fn ipv6_sources_are_grouped_by_prefix() {
        let a = source_key(ip("2001:db8:1:2:aaaa::1"), 64);
        let b = source_key(ip("2001:db8:1:2:bbbb::9"), 64);
        let c = source_key(ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(source_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(source_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(source_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
    }
}
