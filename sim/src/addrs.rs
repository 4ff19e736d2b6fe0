//! Parses the address specifications the `dwa-sim` binary accepts.

use std::net::{IpAddr, Ipv4Addr};

use crate::SimError;

/// Most printers one simulator runs.
pub const MAX_ADDRESSES: usize = 4096;

/// Expands address specifications, in order, into a list of at most
/// [`MAX_ADDRESSES`]. Each spec is a comma-separated list of:
/// - a single IPv4 or IPv6 address: `127.30.0.1`, `::1`;
/// - an IPv4 range in the last octet: `127.30.0.1-127.30.0.10` or `127.30.0.1-10`;
/// - an IPv4 CIDR block: `127.30.0.0/28` (its hosts: network and broadcast
///   addresses are left out for prefixes up to /30, as on a real LAN).
pub fn parse_addresses<S: AsRef<str>>(specs: &[S]) -> Result<Vec<IpAddr>, SimError> {
    let mut out = Vec::new();
    for spec in specs {
        for part in spec.as_ref().split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let added = parse_one(part)?;
            if out.len() + added.len() > MAX_ADDRESSES {
                return Err(SimError::TooManyAddresses(MAX_ADDRESSES));
            }
            out.extend(added);
        }
    }
    Ok(out)
}

fn bad(spec: &str, why: &str) -> SimError {
    SimError::Address {
        spec: spec.to_string(),
        reason: why.to_string(),
    }
}

fn parse_one(spec: &str) -> Result<Vec<IpAddr>, SimError> {
    if let Some((net, prefix)) = spec.split_once('/') {
        let net: Ipv4Addr = net
            .parse()
            .map_err(|_| bad(spec, "CIDR blocks are IPv4 only"))?;
        let prefix: u32 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad(spec, "prefix must be 0..=32"))?;
        let size = 1u64 << (32 - prefix);
        // Checked before expanding: a /8 would otherwise build 16M entries.
        if size > MAX_ADDRESSES as u64 + 2 {
            return Err(SimError::TooManyAddresses(MAX_ADDRESSES));
        }
        let base = u32::from(net) & u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        let (first, last) = if prefix <= 30 {
            (base as u64 + 1, base as u64 + size - 2)
        } else {
            (base as u64, base as u64 + size - 1)
        };
        return Ok((first..=last)
            .map(|a| IpAddr::V4(Ipv4Addr::from(a as u32)))
            .collect());
    }
    if let Some((a, b)) = spec.split_once('-') {
        let start: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| bad(spec, "ranges are IPv4 only"))?;
        let b = b.trim();
        let end_octet: u8 = match b.parse::<Ipv4Addr>() {
            Ok(end) if end.octets()[..3] == start.octets()[..3] => end.octets()[3],
            Ok(_) => return Err(bad(spec, "a range may only vary the last octet")),
            Err(_) => b
                .parse()
                .map_err(|_| bad(spec, "range end must be an address or a last octet"))?,
        };
        let [p, q, r, s] = start.octets();
        if end_octet < s {
            return Err(bad(spec, "range end is before its start"));
        }
        return Ok((s..=end_octet)
            .map(|o| IpAddr::V4(Ipv4Addr::new(p, q, r, o)))
            .collect());
    }
    let ip: IpAddr = spec
        .parse()
        .map_err(|_| bad(spec, "not an address, range or CIDR block"))?;
    Ok(vec![ip])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn singles_ranges_and_cidr() {
        let got = parse_addresses(&["127.30.0.1-127.30.0.3", "127.30.1.5,::1", "127.30.2.9-10"])
            .expect("parse");
        assert_eq!(
            got,
            vec![
                v4("127.30.0.1"),
                v4("127.30.0.2"),
                v4("127.30.0.3"),
                v4("127.30.1.5"),
                v4("::1"),
                v4("127.30.2.9"),
                v4("127.30.2.10"),
            ]
        );
        let cidr = parse_addresses(&["127.30.3.0/29"]).expect("cidr");
        assert_eq!(cidr.first(), Some(&v4("127.30.3.1")));
        assert_eq!(cidr.last(), Some(&v4("127.30.3.6")));
        assert_eq!(cidr.len(), 6);
        assert_eq!(
            parse_addresses(&["127.30.3.7/32"]).expect("/32"),
            vec![v4("127.30.3.7")]
        );
    }

    #[test]
    fn rejects_bad_specs_and_caps_the_count() {
        for spec in [
            "127.30.0.5-127.30.0.1",
            "127.30.0.1-127.30.1.1",
            "127.30.0.1-300",
            "printer",
            "::1/120",
            "127.0.0.0/33",
        ] {
            assert!(
                matches!(parse_addresses(&[spec]), Err(SimError::Address { .. })),
                "{spec} should be rejected"
            );
        }
        assert!(matches!(
            parse_addresses(&["127.0.0.0/8"]),
            Err(SimError::TooManyAddresses(4096))
        ));
        // /20 holds 4094 hosts: fits; two more singles exceed the cap.
        assert_eq!(
            parse_addresses(&["127.40.0.0/20"]).expect("/20").len(),
            4094
        );
        assert!(matches!(
            parse_addresses(&["127.40.0.0/20", "127.41.0.1-3"]),
            Err(SimError::TooManyAddresses(_))
        ));
    }
}
