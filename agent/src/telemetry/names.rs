//! Names around a scan: scan targets written as host names (resolved at
//! each scan, every address then checked by the agent's policy), and the
//! DNS name (PTR) of every device found.
//!
//! DNS goes through `hickory-resolver`: the system's resolv.conf and
//! /etc/hosts, or the servers in `scan.dns_servers`. Each lookup is bounded
//! ([`LOOKUP_TIMEOUT`], one attempt per server). Names under `localhost`
//! are loopback and loopback addresses have no PTR name (RFC 6761, RFC
//! 6303's locally served 127.in-addr.arpa): neither is sent to a DNS server
//! (unless servers are configured, for `localhost` names), so a lab fleet
//! on loopback causes no DNS traffic off the host.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dwa_policy::agent::AgentPolicy;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use crate::error::{AgentError, Result};

/// One DNS lookup, all attempts included.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most addresses one host name may contribute to a scan.
pub const MAX_ADDRESSES_PER_NAME: usize = 16;

/// The agent's resolver.
#[derive(Clone)]
pub struct Names {
    resolver: TokioResolver,
    /// Servers were configured: loopback lookups go to them too.
    explicit: bool,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("explicit", &self.explicit)
            .finish_non_exhaustive()
    }
}

/// `host`, `host:port`, `[v6]:port` → a DNS server address (port 53 by
/// default).
pub fn parse_server(s: &str) -> std::result::Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an address or address:port"))
}

/// Whether `s` is written like a host name (RFC 1123 labels), not an
/// address or a range.
pub fn is_host_name(s: &str) -> bool {
    let s = s.trim().trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.parse::<IpAddr>().is_err()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        // A dotted quad with a bad octet is a typo, not a name; so is a
        // range (`10.0.0.1-20`): a top-level label is never numeric.
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        && s
            .split_once('-')
            .is_none_or(|(a, _)| a.parse::<IpAddr>().is_err())
}

fn under_localhost(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n == "localhost" || n.ends_with(".localhost")
}

impl Names {
    /// The system's resolver, or one asking only `servers`.
    pub fn new(servers: &[SocketAddr]) -> Result<Names> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(b) => b,
                // No usable resolv.conf: names resolve from /etc/hosts only.
                Err(e) => {
                    tracing::warn!("system DNS configuration unusable ({e}): /etc/hosts only");
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], vec![]),
                        provider,
                    )
                }
            }
        } else {
            let name_servers = servers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], name_servers),
                provider,
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = LOOKUP_TIMEOUT;
        opts.attempts = 1;
        if !servers.is_empty() {
            // Only the servers named: no /etc/hosts either.
            opts.use_hosts_file = ResolveHosts::Never;
        }
        let resolver = builder
            .build()
            .map_err(|e| AgentError::Config(format!("DNS resolver: {e}")))?;
        Ok(Names {
            resolver,
            explicit: !servers.is_empty(),
        })
    }

    /// Addresses of `host` (A and AAAA), at most
    /// [`MAX_ADDRESSES_PER_NAME`]. Names under `localhost` are loopback.
    pub async fn resolve(&self, host: &str) -> std::result::Result<Vec<IpAddr>, String> {
        if under_localhost(host) && !self.explicit {
            return Ok(vec![IpAddr::from([127, 0, 0, 1])]);
        }
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT * 2, self.resolver.lookup_ip(host))
            .await
            .map_err(|_| format!("no DNS answer for {host} within {LOOKUP_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !out.contains(&ip) && out.len() < MAX_ADDRESSES_PER_NAME {
                out.push(ip);
            }
        }
        if out.is_empty() {
            return Err(format!("{host} has no address"));
        }
        Ok(out)
    }

    /// The PTR name of `ip` without its final dot, if it has one.
    pub async fn reverse(&self, ip: IpAddr) -> Option<String> {
        // 127.in-addr.arpa is served locally (RFC 6761/6303: every loopback
        // address is "localhost"): no device name there.
        if ip.is_loopback() {
            return None;
        }
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT * 2, self.resolver.reverse_lookup(ip))
            .await
            .ok()?
            .ok()?;
        lookup.answers().iter().find_map(|r| match &r.data {
            RData::PTR(p) => {
                let n = p.0.to_utf8();
                let n = n.trim_end_matches('.');
                let usable = !n.is_empty() && n.len() <= 253 && !under_localhost(n);
                usable.then(|| n.to_string())
            }
            _ => None,
        })
    }
}

/// Scan targets after name resolution.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Ranges as written, host names replaced by their addresses.
    pub ranges: Vec<String>,
    /// Address → the host name it came from.
    pub names: Vec<(IpAddr, String)>,
    /// (target, why): names that did not resolve, addresses the policy
    /// refused.
    pub refused: Vec<(String, String)>,
}

/// Replaces host names among `ranges` with their addresses, each checked
/// by `policy` (when given) after resolution: only addresses the policy
/// allows are scanned, and the checked address is the one scanned.
pub async fn resolve_targets(
    names: &Names,
    policy: Option<&AgentPolicy>,
    ranges: &[String],
) -> Resolved {
    let mut out = Resolved::default();
    for r in ranges {
        if !is_host_name(r) {
            out.ranges.push(r.clone());
            continue;
        }
        let host = r.trim().trim_end_matches('.').to_ascii_lowercase();
        match names.resolve(&host).await {
            Err(why) => out.refused.push((r.clone(), why)),
            Ok(addrs) => {
                for ip in addrs {
                    if let Some(p) = policy {
                        let d = p.decide_icmp(ip);
                        if !d.allowed {
                            out.refused
                                .push((format!("{r} ({ip})"), format!("policy: {}", d.reason())));
                            continue;
                        }
                    }
                    out.ranges.push(ip.to_string());
                    out.names.push((ip, host.clone()));
                }
            }
        }
    }
    out
}

/// Shared between the scan tasks.
pub type SharedNames = Arc<Names>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_told_from_ranges() {
        for name in [
            "printer-3",
            "mfp.lab.example.com",
            "mfp.lab.example.com.",
            "x1",
        ] {
            assert!(is_host_name(name), "{name}");
        }
        for not in [
            "10.0.0.1",
            "10.0.0.0/24",
            "10.0.0.1-20",
            "10.0.0.1-10.0.0.9",
            "fd00::1",
            "300.1.1.1",
            "-bad",
            "a..b",
            "under_score",
            "",
        ] {
            assert!(!is_host_name(not), "{not}");
        }
        assert_eq!(parse_server("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_server("127.0.0.1").unwrap().port(), 53);
        assert!(parse_server("dns.example").is_err());
    }
}
