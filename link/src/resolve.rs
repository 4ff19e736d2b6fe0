//! Names our own clients resolve before connecting to the relay.
//!
//! RFC 6761 §6.3: `localhost` and every name under it are loopback, and
//! name lookups should say so without asking DNS. Many system resolvers
//! know only `localhost` itself (from /etc/hosts), so the default domain
//! `dwa.localhost` would not resolve on a fresh machine: we answer these
//! names here. Other names go to the system resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The loopback addresses (IPv4 first) for `host` if it is `localhost` or a
/// name under it (any case, one trailing dot allowed); `None` otherwise.
pub fn localhost_addrs(host: &str, port: u16) -> Option<[SocketAddr; 2]> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let under = match name.strip_suffix("localhost") {
        Some("") => true,
        // Every label before `localhost` must be non-empty.
        Some(prefix) => prefix
            .strip_suffix('.')
            .is_some_and(|p| !p.is_empty() && p.split('.').all(|l| !l.is_empty())),
        None => false,
    };
    under.then_some([
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(host: &str) -> bool {
        match localhost_addrs(host, 8443) {
            Some(a) => {
                assert_eq!(a[0], "127.0.0.1:8443".parse().unwrap());
                assert_eq!(a[1], "[::1]:8443".parse().unwrap());
                true
            }
            None => false,
        }
    }

    #[test]
    fn localhost_and_names_under_it_are_loopback() {
        for h in [
            "localhost",
            "localhost.",
            "LocalHost",
            "dwa.localhost",
            "relay-test.dwa.localhost",
            "s-0123.DWA.LOCALHOST.",
        ] {
            assert!(loopback(h), "{h}");
        }
    }

    #[test]
    fn other_names_are_left_to_the_resolver() {
        for h in [
            "",
            ".",
            "example.com",
            "localhost.example.com",
            "notlocalhost",
            "dwa-localhost",
            ".localhost",
            "a..localhost",
            "localhost..",
            "127.0.0.1",
            "::1",
        ] {
            assert!(!loopback(h), "{h}");
        }
    }
}
