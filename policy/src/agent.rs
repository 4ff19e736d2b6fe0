//! The agent's local allowlist: the final authority on what the agent may
//! connect to.
//!
//! Even a fully compromised relay cannot make the agent connect outside this
//! policy. Names are resolved by the caller *before* the check and the
//! checked address is the one connected to ([`AgentPolicy::filter_resolved`]
//! returns exactly those addresses).
//!
//! Rules, evaluated in order; the first that decides wins:
//!
//! 1. Normalize the address: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) and the
//!    NAT64 well-known prefix (`64:ff9b::/96`) are decided as `a.b.c.d`.
//!    Configured networks are normalized the same way.
//! 2. Port ([`AgentPolicy::decide`] only): must be in `policy.ports`
//!    ([`Rule::PortNotAllowed`]).
//! 3. Deny list ([`Rule::DenyList`]).
//! 4. Special blocks (unspecified, loopback, link-local, multicast,
//!    broadcast, reserved): denied ([`Rule::Special`]) unless an allow entry
//!    lies entirely inside that block and contains the address.
//! 5. The agent host's own addresses: denied ([`Rule::OwnAddress`]) unless
//!    an allow entry is exactly that single host (/32 or /128).
//! 6. The network and broadcast address of an IPv4 allow entry with prefix
//!    <= 30: denied ([`Rule::RangeBroadcast`]) unless an allow entry names
//!    that address as a single host (/32).
//! 7. Allowed if inside an allow entry ([`Rule::Allowed`]), else
//!    [`Rule::NotAllowed`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Ports allowed when `policy.ports` is not given: HTTP, HTTPS, HTTP-alt,
/// raw/JetDirect and IPP.
pub const DEFAULT_PORTS: [u16; 5] = [80, 443, 8000, 9100, 631];

/// [`DEFAULT_PORTS`] as a `Vec` (serde default for [`PolicyConfig::ports`]).
pub fn default_ports() -> Vec<u16> {
    DEFAULT_PORTS.to_vec()
}

/// Raw config as written in `agent.toml`'s `[policy]` table. Networks stay
/// strings here so that validation errors can name the key and index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// CIDRs or single IPs the agent may reach (`"192.168.1.0/24"`,
    /// `"10.0.0.5"`, `"fd00::/64"`). Empty denies everything.
    #[serde(default)]
    pub allow: Vec<String>,
    /// CIDRs or single IPs always refused; checked before `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// TCP ports the agent may connect to.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
}

impl Default for PolicyConfig {
    /// Empty allow and deny lists and the [`DEFAULT_PORTS`] (the same as an
    /// empty `[policy]` table).
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            ports: default_ports(),
        }
    }
}

/// Kinds of special-purpose address blocks that are denied unless an allow
/// entry names them explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialKind {
    /// `0.0.0.0/8` ("this network"), `::/128`.
    Unspecified,
    /// `127.0.0.0/8`, `::1/128`.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255/32`.
    Broadcast,
    /// `240.0.0.0/4` (except the broadcast address).
    Reserved,
}

impl SpecialKind {
    /// Lower-case name used in reasons, e.g. `"link-local"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialKind::Unspecified => "unspecified",
            SpecialKind::Loopback => "loopback",
            SpecialKind::LinkLocal => "link-local",
            SpecialKind::Multicast => "multicast",
            SpecialKind::Broadcast => "broadcast",
            SpecialKind::Reserved => "reserved",
        }
    }

    /// Phrase used in reasons, e.g. `"a loopback address"`.
    fn phrase(self) -> &'static str {
        match self {
            SpecialKind::Unspecified => "an unspecified address",
            SpecialKind::Loopback => "a loopback address",
            SpecialKind::LinkLocal => "a link-local address",
            SpecialKind::Multicast => "a multicast address",
            SpecialKind::Broadcast => "the broadcast address",
            SpecialKind::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for SpecialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that decided a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// Allowed by `policy.allow[index]` (the entry that authorized it: the
    /// explicit entry for a special or own address, else the first match).
    Allowed { index: usize, network: IpNetwork },
    /// The port is not in `policy.ports`; `allowed_ports` is that list
    /// (sorted) so the reason can show it.
    PortNotAllowed { port: u16, allowed_ports: Vec<u16> },
    /// Refused by `policy.deny[index]`.
    DenyList { index: usize, network: IpNetwork },
    /// Inside special block `network` and no allow entry names it explicitly.
    Special {
        kind: SpecialKind,
        network: IpNetwork,
    },
    /// One of the agent host's own addresses, not named as a single host.
    OwnAddress,
    /// Network or broadcast address of `policy.allow[index]`.
    RangeBroadcast { index: usize, network: IpNetwork },
    /// Not inside any allow entry.
    NotAllowed,
}

impl Rule {
    /// The rule's snake_case name, as in its serialized `rule` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Allowed { .. } => "allowed",
            Rule::PortNotAllowed { .. } => "port_not_allowed",
            Rule::DenyList { .. } => "deny_list",
            Rule::Special { .. } => "special",
            Rule::OwnAddress => "own_address",
            Rule::RangeBroadcast { .. } => "range_broadcast",
            Rule::NotAllowed => "not_allowed",
        }
    }
}

/// A verdict on one connection target, with the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the agent may connect.
    pub allowed: bool,
    /// The address as decided: normalized (IPv4-mapped / NAT64 → IPv4).
    pub addr: IpAddr,
    /// The TCP port, or `None` for ICMP echo.
    pub port: Option<u16>,
    /// The rule that decided.
    pub rule: Rule,
}

impl Decision {
    /// One human line explaining the decision, starting with `allowed:` or
    /// `denied:`, naming the config key, index and network involved.
    pub fn reason(&self) -> String {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        format!("{verdict}: {}", self.explain())
    }

    fn explain(&self) -> String {
        let addr = self.addr;
        match &self.rule {
            Rule::Allowed { index, network } => {
                let mut s = format!("{addr} is in policy.allow[{index}] ({network})");
                if let Some((kind, _)) = special_block(addr) {
                    s.push_str(&format!(
                        ", which names this {} address explicitly,",
                        kind.as_str()
                    ));
                }
                if let Some(port) = self.port {
                    s.push_str(&format!(" and port {port} is in policy.ports"));
                }
                s
            }
            Rule::PortNotAllowed {
                port,
                allowed_ports,
            } => format!("port {port} is not in policy.ports {allowed_ports:?}"),
            Rule::DenyList { index, network } => {
                format!("{addr} is in policy.deny[{index}] ({network})")
            }
            Rule::Special { kind, network } => format!(
                "{addr} is {} ({network}) and no policy.allow entry names it",
                kind.phrase()
            ),
            Rule::OwnAddress => format!(
                "{addr} is one of the agent host's own addresses and no policy.allow \
                 entry names it as a single host ({})",
                host_suffix(addr)
            ),
            Rule::RangeBroadcast { index, network } => {
                let which = if network.network() == addr {
                    "network"
                } else {
                    "broadcast"
                };
                format!(
                    "{addr} is the {which} address of policy.allow[{index}] ({network}) \
                     and no policy.allow entry names it as a single host ({})",
                    host_suffix(addr)
                )
            }
            Rule::NotAllowed => format!("{addr} is not in any policy.allow entry"),
        }
    }
}

impl fmt::Display for Decision {
    /// `allow 192.168.1.20:80: 192.168.1.20 is in policy.allow[0] ...` or
    /// `deny 127.0.0.1 (icmp): 127.0.0.1 is a loopback address ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        match self.port {
            Some(port) => write!(
                f,
                "{verdict} {}: {}",
                SocketAddr::new(self.addr, port),
                self.explain()
            ),
            None => write!(f, "{verdict} {} (icmp): {}", self.addr, self.explain()),
        }
    }
}

fn host_suffix(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "/32"
    } else {
        "/128"
    }
}

/// The NAT64 well-known prefix `64:ff9b::/96` (RFC 6052), first 6 segments.
const NAT64_SEGMENTS: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// The IPv4 address embedded in an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64
/// well-known (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(v6: &Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if v6.segments()[..6] == NAT64_SEGMENTS {
        let o = v6.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

/// Normalize an address the way the policy decides it: IPv4-mapped IPv6
/// and NAT64 well-known-prefix addresses become their embedded IPv4 address;
/// everything else is returned unchanged.
pub fn normalize_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => embedded_v4(&v6).map_or(addr, IpAddr::V4),
    }
}

/// Normalize a configured network: clear host bits (`10.0.0.5/24` becomes
/// `10.0.0.0/24`) and turn IPv6 networks that lie entirely inside
/// `::ffff:0:0/96` or `64:ff9b::/96` into the equivalent IPv4 network, so
/// they match the normalized addresses.
fn normalize_net(net: IpNetwork) -> IpNetwork {
    match net {
        IpNetwork::V4(n) => Ipv4Network::new(n.network(), n.prefix())
            .map(IpNetwork::V4)
            .unwrap_or(net),
        IpNetwork::V6(n) => {
            let base = n.network();
            let prefix = n.prefix();
            if prefix >= 96 {
                if let Some(v4) = embedded_v4(&base) {
                    if let Ok(v4net) = Ipv4Network::new(v4, prefix - 96) {
                        return IpNetwork::V4(v4net);
                    }
                }
            }
            Ipv6Network::new(base, prefix)
                .map(IpNetwork::V6)
                .unwrap_or(net)
        }
    }
}

/// Whether `inner` lies entirely inside `outer` (same family, at least as
/// long a prefix, and its first address inside `outer`).
fn net_inside(inner: &IpNetwork, outer: &IpNetwork) -> bool {
    inner.is_ipv4() == outer.is_ipv4()
        && inner.prefix() >= outer.prefix()
        && outer.contains(inner.network())
}

/// Whether `net` is exactly the single host `addr` (/32 or /128).
fn is_single_host(net: &IpNetwork, addr: IpAddr) -> bool {
    let full = if net.is_ipv4() { 32 } else { 128 };
    net.prefix() == full && net.network() == addr
}

fn v4net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNetwork {
    IpNetwork::V4(
        Ipv4Network::new_checked(Ipv4Addr::new(a, b, c, d), prefix).expect("prefix <= 32"),
    )
}

fn v6net(addr: Ipv6Addr, prefix: u8) -> IpNetwork {
    IpNetwork::V6(Ipv6Network::new_checked(addr, prefix).expect("prefix <= 128"))
}

/// The special blocks, most specific first (255.255.255.255/32 lies inside
/// 240.0.0.0/4 and must be found first).
fn special_blocks() -> [(SpecialKind, IpNetwork); 10] {
    [
        (SpecialKind::Broadcast, v4net(255, 255, 255, 255, 32)),
        (SpecialKind::Unspecified, v4net(0, 0, 0, 0, 8)),
        (SpecialKind::Loopback, v4net(127, 0, 0, 0, 8)),
        (SpecialKind::LinkLocal, v4net(169, 254, 0, 0, 16)),
        (SpecialKind::Multicast, v4net(224, 0, 0, 0, 4)),
        (SpecialKind::Reserved, v4net(240, 0, 0, 0, 4)),
        (SpecialKind::Unspecified, v6net(Ipv6Addr::UNSPECIFIED, 128)),
        (SpecialKind::Loopback, v6net(Ipv6Addr::LOCALHOST, 128)),
        (
            SpecialKind::LinkLocal,
            v6net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        ),
        (
            SpecialKind::Multicast,
            v6net(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        ),
    ]
}

/// The most specific special block containing `addr` (after
/// normalization), if any.
pub fn special_block(addr: IpAddr) -> Option<(SpecialKind, IpNetwork)> {
    let addr = normalize_addr(addr);
    special_blocks()
        .into_iter()
        .find(|(_, net)| net.contains(addr))
}

/// The validated agent policy. Build with [`AgentPolicy::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    allow: Vec<IpNetwork>,
    deny: Vec<IpNetwork>,
    ports: Vec<u16>,
    own: Vec<IpAddr>,
}

fn parse_networks(key: &str, values: &[String]) -> Result<Vec<IpNetwork>, PolicyError> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            value
                .trim()
                .parse::<IpNetwork>()
                .map(normalize_net)
                .map_err(|source| PolicyError::InvalidNetwork {
                    key: format!("{key}[{i}]"),
                    value: value.clone(),
                    source,
                })
        })
        .collect()
}

/// `addrs` normalized, first occurrences kept.
fn dedup_normalized(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = Vec::with_capacity(addrs.len());
    for addr in addrs.into_iter().map(normalize_addr) {
        if !own.contains(&addr) {
            own.push(addr);
        }
    }
    own
}

impl AgentPolicy {
    /// Validate `cfg`. `own_addresses` are the agent host's own interface
    /// addresses (gathered by the caller; [`AgentPolicy::with_own_addresses`]
    /// replaces them as the host's addresses change).
    ///
    /// Errors name the key and index, e.g.
    /// `policy.allow[2]: invalid network "10.0.0/33": ...` or
    /// `policy.ports[1]: port 0 is not a valid port`. An empty `ports` list
    /// is an error; an empty `allow` list is valid and denies everything.
    /// Networks with host bits set are accepted and normalized
    /// (`10.0.0.5/24` → `10.0.0.0/24`); duplicate ports are merged.
    pub fn from_config(
        cfg: &PolicyConfig,
        own_addresses: Vec<IpAddr>,
    ) -> Result<Self, PolicyError> {
        let allow = parse_networks("policy.allow", &cfg.allow)?;
        let deny = parse_networks("policy.deny", &cfg.deny)?;
        if cfg.ports.is_empty() {
            return Err(PolicyError::EmptyPorts);
        }
        if let Some(i) = cfg.ports.iter().position(|&p| p == 0) {
            return Err(PolicyError::InvalidPort {
                key: format!("policy.ports[{i}]"),
                port: 0,
            });
        }
        let mut ports = cfg.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Ok(Self {
            allow,
            deny,
            ports,
            own: dedup_normalized(own_addresses),
        })
    }

    /// This policy with `own_addresses` as the agent host's own addresses,
    /// replacing the ones it was built with (normalized and deduplicated as
    /// in [`AgentPolicy::from_config`]). The host's addresses change while
    /// the agent runs (DHCP, a new interface): the caller reads them again
    /// and decides with the policy this returns.
    pub fn with_own_addresses(&self, own_addresses: Vec<IpAddr>) -> Self {
        Self {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            ports: self.ports.clone(),
            own: dedup_normalized(own_addresses),
        }
    }

    /// Decide a TCP connection to `addr`:`port`.
    pub fn decide(&self, addr: IpAddr, port: u16) -> Decision {
        let normalized = normalize_addr(addr);
        let rule = if self.ports.binary_search(&port).is_err() {
            Rule::PortNotAllowed {
                port,
                allowed_ports: self.ports.clone(),
            }
        } else {
            self.address_rule(addr, normalized)
        };
        Decision {
            allowed: matches!(rule, Rule::Allowed { .. }),
            addr: normalized,
            port: Some(port),
            rule,
        }
    }

    /// Decide an ICMP echo to `addr`: the same address rules, no port rule.
    pub fn decide_icmp(&self, addr: IpAddr) -> Decision {
        let normalized = normalize_addr(addr);
        let rule = self.address_rule(addr, normalized);
        Decision {
            allowed: matches!(rule, Rule::Allowed { .. }),
            addr: normalized,
            port: None,
            rule,
        }
    }

    /// Filter the addresses a name resolved to. Returns the allowed ones in
    /// the given order, normalized (so the address connected to is exactly
    /// the address checked) and without duplicates. When none is allowed,
    /// returns the [`Decision`] for the first address so the caller can
    /// report why. An empty input yields `Ok` with an empty list (there is
    /// no address to explain); the caller must treat that as "nothing to
    /// connect to".
    pub fn filter_resolved(&self, addrs: &[IpAddr], port: u16) -> Result<Vec<IpAddr>, Decision> {
        let mut allowed = Vec::new();
        let mut first: Option<Decision> = None;
        for &addr in addrs {
            let d = self.decide(addr, port);
            if d.allowed {
                if !allowed.contains(&d.addr) {
                    allowed.push(d.addr);
                }
            } else if first.is_none() {
                first = Some(d);
            }
        }
        match first {
            Some(d) if allowed.is_empty() => Err(d),
            _ => Ok(allowed),
        }
    }

    /// Allowed ports, sorted ascending, without duplicates.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// Allow entries in config order (normalized).
    pub fn allow(&self) -> Vec<IpNetwork> {
        self.allow.clone()
    }

    /// Whether every address of `net` is inside one allow entry: the test a
    /// scan range pushed by the relay must pass (it may narrow the agent's
    /// ceiling, never widen it).
    pub fn covers(&self, net: IpNetwork) -> bool {
        let (first, last) = match net {
            IpNetwork::V4(n) => (IpAddr::V4(n.network()), IpAddr::V4(n.broadcast())),
            IpNetwork::V6(n) => (IpAddr::V6(n.network()), IpAddr::V6(n.broadcast())),
        };
        self.covers_span(first, last)
    }

    /// [`AgentPolicy::covers`] for the span `first..=last` (an allow entry
    /// is contiguous, so holding both ends means holding all of it).
    pub fn covers_span(&self, first: IpAddr, last: IpAddr) -> bool {
        let (first, last) = (normalize_addr(first), normalize_addr(last));
        first <= last
            && self
                .allow
                .iter()
                .any(|a| a.contains(first) && a.contains(last))
    }

    /// Deny entries in config order (normalized).
    pub fn deny(&self) -> Vec<IpNetwork> {
        self.deny.clone()
    }

    /// The agent host's own addresses (normalized, without duplicates).
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        self.own.clone()
    }

    /// Index of the allow entry that is exactly the single host `addr`.
    fn single_host_entry(&self, addr: IpAddr) -> Option<usize> {
        self.allow.iter().position(|a| is_single_host(a, addr))
    }

    /// Rules 3–7 for `addr` (`raw` is the address as given, `addr` its
    /// normalized form).
    fn address_rule(&self, raw: IpAddr, addr: IpAddr) -> Rule {
        // 3. Deny list. Matched against both forms so that a deny entry can
        //    never be sidestepped by writing the address differently.
        if let Some((index, network)) = self
            .deny
            .iter()
            .enumerate()
            .find(|(_, d)| d.contains(addr) || d.contains(raw))
        {
            return Rule::DenyList {
                index,
                network: *network,
            };
        }

        // The allow entry that explicitly authorized an otherwise-denied
        // address, reported instead of the first containing entry.
        let mut authorized_by: Option<usize> = None;

        // 4. Special blocks: only an allow entry inside the block counts.
        if let Some((kind, block)) = special_block(addr) {
            match self
                .allow
                .iter()
                .position(|a| net_inside(a, &block) && a.contains(addr))
            {
                Some(i) => authorized_by = Some(i),
                None => {
                    return Rule::Special {
                        kind,
                        network: block,
                    }
                }
            }
        }

        // 5. The agent host's own addresses: only an exact single host counts.
        if self.own.contains(&addr) {
            match self.single_host_entry(addr) {
                Some(i) => authorized_by = Some(i),
                None => return Rule::OwnAddress,
            }
        }

        // 6. Network/broadcast address of an IPv4 allow range (prefix <= 30).
        if addr.is_ipv4() {
            if let Some((index, network)) = self.allow.iter().enumerate().find(|(_, a)| {
                a.is_ipv4() && a.prefix() <= 30 && (a.network() == addr || a.broadcast() == addr)
            }) {
                match self.single_host_entry(addr) {
                    Some(i) => authorized_by = Some(i),
                    None => {
                        return Rule::RangeBroadcast {
                            index,
                            network: *network,
                        }
                    }
                }
            }
        }

        // 7. Inside an allow entry?
        match authorized_by.or_else(|| self.allow.iter().position(|a| a.contains(addr))) {
            Some(index) => Rule::Allowed {
                index,
                network: self.allow[index],
            },
            None => Rule::NotAllowed,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn covers_only_ranges_inside_one_allow_entry() {
        let cfg = PolicyConfig {
            allow: vec!["10.1.0.0/16".into(), "192.168.5.7".into()],
            ..PolicyConfig::default()
        };
        let p = AgentPolicy::from_config(&cfg, vec![]).unwrap();
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert!(p.covers(n("10.1.2.0/24")));
        assert!(p.covers(n("10.1.0.0/16")));
        assert!(p.covers(n("192.168.5.7/32")));
        assert!(!p.covers(n("10.0.0.0/8")), "wider than the ceiling");
        assert!(!p.covers(n("10.2.0.0/24")));
        assert!(!p.covers(n("192.168.5.0/24")));
        assert!(!p.covers(n("::/0")));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.covers_span(ip("10.1.0.200"), ip("10.1.3.7")));
        assert!(!p.covers_span(ip("10.0.255.200"), ip("10.1.3.7")));
        assert!(!p.covers_span(ip("10.1.3.7"), ip("10.1.0.200")), "reversed");
    }
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn policy(allow: &[&str], deny: &[&str], own: &[&str]) -> AgentPolicy {
        let cfg = PolicyConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ports: default_ports(),
        };
        AgentPolicy::from_config(&cfg, own.iter().map(|s| ip(s)).collect()).unwrap()
    }

    #[test]
    fn normalize_mapped_and_nat64() {
        assert_eq!(normalize_addr(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(normalize_addr(ip("64:ff9b::10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(normalize_addr(ip("64:ff9b::7f00:1")), ip("127.0.0.1"));
        // Not NAT64 well-known: 64:ff9b:1::/48 local-use prefix stays IPv6.
        assert_eq!(normalize_addr(ip("64:ff9b:1::1")), ip("64:ff9b:1::1"));
        assert_eq!(normalize_addr(ip("fd00::1")), ip("fd00::1"));
        assert_eq!(normalize_addr(ip("::1")), ip("::1"));
        assert_eq!(normalize_addr(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn normalize_networks() {
        assert_eq!(normalize_net(net("10.0.0.5/24")), net("10.0.0.0/24"));
        assert_eq!(
            normalize_net(net("::ffff:192.168.1.0/120")),
            net("192.168.1.0/24")
        );
        assert_eq!(normalize_net(net("64:ff9b::a00:0/104")), net("10.0.0.0/8"));
        assert_eq!(normalize_net(net("::ffff:10.0.0.1")), net("10.0.0.1/32"));
        // Shorter than /96: cannot be expressed as IPv4, stays IPv6.
        assert_eq!(normalize_net(net("::ffff:0:0/95")), net("::fffe:0:0/95"));
        assert_eq!(normalize_net(net("fd00::1/64")), net("fd00::/64"));
    }

    #[test]
    fn inside_relation() {
        assert!(net_inside(&net("127.0.0.0/8"), &net("127.0.0.0/8")));
        assert!(net_inside(&net("127.20.0.0/24"), &net("127.0.0.0/8")));
        assert!(!net_inside(&net("127.0.0.0/7"), &net("127.0.0.0/8")));
        assert!(!net_inside(&net("0.0.0.0/0"), &net("127.0.0.0/8")));
        assert!(!net_inside(&net("128.0.0.0/24"), &net("127.0.0.0/8")));
        assert!(!net_inside(&net("::/0"), &net("0.0.0.0/0")));
        assert!(!net_inside(&net("0.0.0.0/0"), &net("::/0")));
    }

    #[test]
    fn special_block_picks_most_specific() {
        assert_eq!(
            special_block(ip("255.255.255.255")),
            Some((SpecialKind::Broadcast, net("255.255.255.255/32")))
        );
        assert_eq!(
            special_block(ip("255.255.255.254")),
            Some((SpecialKind::Reserved, net("240.0.0.0/4")))
        );
        assert_eq!(special_block(ip("128.0.0.1")), None);
        assert_eq!(
            special_block(ip("::ffff:169.254.1.1")),
            Some((SpecialKind::LinkLocal, net("169.254.0.0/16")))
        );
    }

    #[test]
    fn rule_order_deny_before_special_and_port_first() {
        let p = policy(&["127.0.0.0/8"], &["127.0.0.1"], &[]);
        assert_eq!(
            p.decide(ip("127.0.0.1"), 80).rule,
            Rule::DenyList {
                index: 0,
                network: net("127.0.0.1/32")
            }
        );
        assert!(matches!(
            p.decide(ip("127.0.0.1"), 22).rule,
            Rule::PortNotAllowed { port: 22, .. }
        ));
        assert!(p.decide(ip("127.0.0.2"), 80).allowed);
    }

    #[test]
    fn broadcast_of_slash_zero_is_special_not_range() {
        let p = policy(&["0.0.0.0/0"], &[], &[]);
        assert!(matches!(
            p.decide(ip("255.255.255.255"), 80).rule,
            Rule::Special {
                kind: SpecialKind::Broadcast,
                ..
            }
        ));
        assert!(matches!(
            p.decide(ip("0.0.0.0"), 80).rule,
            Rule::Special {
                kind: SpecialKind::Unspecified,
                ..
            }
        ));
    }

    #[test]
    fn reserved_entry_does_not_name_broadcast() {
        let p = policy(&["240.0.0.0/4"], &[], &[]);
        assert!(p.decide(ip("240.0.0.1"), 80).allowed);
        assert!(matches!(
            p.decide(ip("255.255.255.255"), 80).rule,
            Rule::Special {
                kind: SpecialKind::Broadcast,
                ..
            }
        ));
        let p = policy(&["255.255.255.255/32"], &[], &[]);
        assert!(p.decide(ip("255.255.255.255"), 80).allowed);
    }

    #[test]
    fn authorizing_entry_is_reported() {
        let p = policy(&["0.0.0.0/0", "127.20.0.0/24"], &[], &[]);
        assert_eq!(
            p.decide(ip("127.20.0.5"), 80).rule,
            Rule::Allowed {
                index: 1,
                network: net("127.20.0.0/24")
            }
        );
        let p = policy(
            &["192.168.1.0/24", "192.168.1.10/32"],
            &[],
            &["192.168.1.10"],
        );
        assert_eq!(
            p.decide(ip("192.168.1.10"), 80).rule,
            Rule::Allowed {
                index: 1,
                network: net("192.168.1.10/32")
            }
        );
    }

    #[test]
    fn own_addresses_are_replaced_not_added() {
        let p = policy(
            &["192.168.1.0/24", "192.168.1.20/32"],
            &[],
            &["192.168.1.10"],
        );
        assert_eq!(p.decide(ip("192.168.1.30"), 80).rule.name(), "allowed");
        assert_eq!(p.decide(ip("192.168.1.10"), 80).rule, Rule::OwnAddress);

        // The host gained .30 (and .20, named as a single host) and lost .10.
        let now = p.with_own_addresses(vec![
            ip("::ffff:192.168.1.30"),
            ip("192.168.1.30"),
            ip("192.168.1.20"),
        ]);
        assert_eq!(
            now.own_addresses(),
            vec![ip("192.168.1.30"), ip("192.168.1.20")]
        );
        assert_eq!(now.decide(ip("192.168.1.30"), 80).rule, Rule::OwnAddress);
        assert_eq!(
            now.decide(ip("::ffff:192.168.1.30"), 80).rule,
            Rule::OwnAddress
        );
        assert_eq!(now.decide_icmp(ip("192.168.1.30")).rule, Rule::OwnAddress);
        assert_eq!(
            now.filter_resolved(&[ip("192.168.1.30")], 80)
                .map_err(|d| d.rule),
            Err(Rule::OwnAddress)
        );
        assert!(now.decide(ip("192.168.1.20"), 80).allowed, "named /32");
        assert!(now.decide(ip("192.168.1.10"), 80).allowed, "no longer own");
        // The rest of the policy is the same; the original is unchanged.
        assert_eq!(
            (now.allow(), now.deny(), now.ports()),
            (p.allow(), p.deny(), p.ports())
        );
        assert_eq!(p.own_addresses(), vec![ip("192.168.1.10")]);
        assert!(now.with_own_addresses(vec![]).own_addresses().is_empty());
    }

    #[test]
    fn default_config_has_default_ports() {
        let cfg = PolicyConfig::default();
        assert_eq!(cfg.ports, DEFAULT_PORTS.to_vec());
        let p = AgentPolicy::from_config(&cfg, vec![]).unwrap();
        assert_eq!(p.ports(), vec![80, 443, 631, 8000, 9100]);
        assert!(p.allow().is_empty());
        assert_eq!(p.decide(ip("192.168.1.20"), 80).rule, Rule::NotAllowed);
    }

    #[test]
    fn rule_names_match_serde_tags() {
        let rules = [
            Rule::Allowed {
                index: 0,
                network: net("10.0.0.0/8"),
            },
            Rule::PortNotAllowed {
                port: 22,
                allowed_ports: vec![80],
            },
            Rule::DenyList {
                index: 0,
                network: net("10.0.0.0/8"),
            },
            Rule::Special {
                kind: SpecialKind::Loopback,
                network: net("127.0.0.0/8"),
            },
            Rule::OwnAddress,
            Rule::RangeBroadcast {
                index: 0,
                network: net("10.0.0.0/8"),
            },
            Rule::NotAllowed,
        ];
        for rule in rules {
            let v = serde_json::to_value(&rule).unwrap();
            assert_eq!(v["rule"], rule.name());
            let back: Rule = serde_json::from_value(v).unwrap();
            assert_eq!(back, rule);
        }
    }

    #[test]
    fn display_includes_verdict_and_target() {
        let p = policy(&["192.168.1.0/24", "fd00::/64"], &[], &[]);
        assert_eq!(
            p.decide(ip("192.168.1.20"), 80).to_string(),
            "allow 192.168.1.20:80: 192.168.1.20 is in policy.allow[0] (192.168.1.0/24) \
             and port 80 is in policy.ports"
        );
        assert_eq!(
            p.decide_icmp(ip("127.0.0.1")).to_string(),
            "deny 127.0.0.1 (icmp): 127.0.0.1 is a loopback address (127.0.0.0/8) \
             and no policy.allow entry names it"
        );
        assert!(p
            .decide(ip("fd00::5"), 443)
            .to_string()
            .starts_with("allow [fd00::5]:443: "));
    }
}
