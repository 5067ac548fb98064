//! Which host strings are addresses rather than names.
//!
//! getaddrinfo (through `inet_aton`) reads far more than dotted quads as an
//! IPv4 address: `2130706433`, `0x7f000001`, `017700000001`, `127.1` and
//! `0x7f.0.0.01` are all 127.0.0.1. A name built from a label the client sent
//! could therefore name an address, so the routing code must know every form,
//! not just the one [`std::net::Ipv4Addr`] parses.

use std::net::{IpAddr, Ipv4Addr};

/// Whether a resolver could take `host` as an IP address without asking DNS:
/// an IPv6 address (bracketed or not, with or without a zone), or an IPv4
/// address in any form `inet_aton` accepts (one to four parts, each decimal,
/// octal with a leading `0`, or hexadecimal with `0x`).
///
/// The answer errs towards "address": a host made only of numeric parts is
/// one even where its value would overflow, since refusing it costs nothing
/// and a resolver more lenient than glibc's is conceivable.
pub fn is_ip_literal(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.contains(':') {
        // Only an IPv6 address (or garbage no resolver takes as a name) has
        // a colon in its host.
        return true;
    }
    let parts: Vec<&str> = host.split('.').collect();
    (1..=4).contains(&parts.len()) && parts.iter().all(|part| numeric_part(part).is_some())
}

/// The IPv4 address `inet_aton` reads `host` as, if any: what an address
/// that [`is_ip_literal`] flags would have reached.
pub fn loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts = host
        .split('.')
        .map(numeric_part)
        .collect::<Option<Vec<u64>>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|&part| part > 0xff) {
        return None;
    }
    // The last part fills every byte the leading parts did not.
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 32 && *last >= 1u64 << last_bits || *last > u64::from(u32::MAX) {
        return None;
    }
    let value = leading
        .iter()
        .enumerate()
        .fold(*last, |value, (index, &part)| {
            value | part << (24 - 8 * index as u32)
        });
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// Whether `host` is an address written the way [`std::net::IpAddr`] parses
/// it (a dotted quad, or IPv6 in brackets or not): the only way a routes file
/// may write one.
pub fn canonical_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The value of one part of an `inet_aton` address: `0x` hexadecimal, `0`
/// octal, or decimal. `None` for anything else, and for values that do not
/// fit 64 bits (which no address part does anyway).
fn numeric_part(part: &str) -> Option<u64> {
    if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        // glibc takes a bare "0x" as 0.
        if hex.is_empty() {
            return Some(0);
        }
        return hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten();
    }
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if part.len() > 1 && part.starts_with('0') {
        // "08" is not octal, but it is digits: count it as a number, to err
        // towards refusing.
        return Some(u64::from_str_radix(part, 8).unwrap_or(u64::MAX));
    }
    part.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_loopback_is_an_address() {
        let loopback = Ipv4Addr::new(127, 0, 0, 1);
        for form in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "017700000001",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "0177.0.0.1",
            "0x7f.0.0.0x1",
        ] {
            assert!(is_ip_literal(form), "{form}");
            assert_eq!(loose_ipv4(form), Some(loopback), "{form}");
        }
    }

    #[test]
    fn ipv6_and_odd_numbers_are_addresses_too() {
        for form in [
            "::1",
            "[::1]",
            "fe80::1%eth0",
            "08",
            "1.2.3.4.",
            "0x",
            "99999999999",
        ] {
            assert!(is_ip_literal(form), "{form}");
        }
    }

    #[test]
    fn names_are_not_addresses() {
        for name in [
            "db.internal",
            "127.0.0.1.nip.io",
            "1.2.3.4.5",
            "0x7g",
            "a1",
            "1-2",
            "",
            "tenant.0x1.svc",
        ] {
            assert!(!is_ip_literal(name), "{name}");
        }
    }

    #[test]
    fn canonical_forms_only() {
        assert!(canonical_ip("10.0.0.1").is_some());
        assert!(canonical_ip("[::1]").is_some());
        assert!(canonical_ip("127.1").is_none());
        assert!(canonical_ip("2130706433").is_none());
        assert_eq!(loose_ipv4("256.1.1.1"), None);
        assert_eq!(loose_ipv4("1.2.3.4.5"), None);
        assert_eq!(loose_ipv4("1.16777216"), None);
        assert_eq!(loose_ipv4("10.65535"), Some(Ipv4Addr::new(10, 0, 255, 255)));
    }
}
