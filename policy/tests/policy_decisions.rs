//! Decision tests for the agent's local policy and the relay check.
//!
//! Every rule is exercised at its boundaries so that a wrong rule (or a wrong
//! order of rules) fails at least one test. Only documentation, private and
//! special-purpose addresses appear here; nothing is connected to.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use dwa_policy::{
    default_ports, relay_decide, AgentPolicy, Decision, PolicyConfig, PolicyError, RelayCheck,
    Rule, SpecialKind, DEFAULT_PORTS,
};
use ipnetwork::IpNetwork;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("bad ip {s}: {e}"))
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap_or_else(|e| panic!("bad net {s}: {e}"))
}

fn cfg(allow: &[&str], deny: &[&str], ports: &[u16]) -> PolicyConfig {
    PolicyConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
        ports: ports.to_vec(),
    }
}

fn policy_own(allow: &[&str], deny: &[&str], own: &[&str]) -> AgentPolicy {
    AgentPolicy::from_config(
        &cfg(allow, deny, &DEFAULT_PORTS),
        own.iter().map(|s| ip(s)).collect(),
    )
    .expect("valid policy")
}

fn policy(allow: &[&str]) -> AgentPolicy {
    policy_own(allow, &[], &[])
}

/// Assert the decision for `addr`:80 and for ICMP (same address rules).
#[track_caller]
fn expect(p: &AgentPolicy, addr: &str, rule: Rule) {
    let d = p.decide(ip(addr), 80);
    assert_eq!(d.rule, rule, "{addr}:80 -> {}", d.reason());
    assert_eq!(d.allowed, matches!(rule, Rule::Allowed { .. }), "{addr}");
    assert_eq!(d.port, Some(80));
    let i = p.decide_icmp(ip(addr));
    assert_eq!(i.rule, rule, "{addr} icmp -> {}", i.reason());
    assert_eq!(i.allowed, d.allowed);
    assert_eq!(i.port, None);
    assert_eq!(i.addr, d.addr);
}

#[track_caller]
fn expect_allowed(p: &AgentPolicy, addr: &str, index: usize, network: &str) {
    expect(
        p,
        addr,
        Rule::Allowed {
            index,
            network: net(network),
        },
    );
}

#[track_caller]
fn expect_special(p: &AgentPolicy, addr: &str, kind: SpecialKind, block: &str) {
    expect(
        p,
        addr,
        Rule::Special {
            kind,
            network: net(block),
        },
    );
}

#[track_caller]
fn expect_range_broadcast(p: &AgentPolicy, addr: &str, index: usize, network: &str) {
    expect(
        p,
        addr,
        Rule::RangeBroadcast {
            index,
            network: net(network),
        },
    );
}

// ---------------------------------------------------------------------------
// Special blocks: first and last address, and one just outside.
// ---------------------------------------------------------------------------

/// Allow everything, so that only the special-block rule can deny.
fn allow_all() -> AgentPolicy {
    policy(&["0.0.0.0/0", "::/0"])
}

#[test]
fn ipv4_unspecified_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::Unspecified;
    expect_special(&p, "0.0.0.0", k, "0.0.0.0/8");
    expect_special(&p, "0.0.0.1", k, "0.0.0.0/8");
    expect_special(&p, "0.255.255.255", k, "0.0.0.0/8");
    expect_allowed(&p, "1.0.0.0", 0, "0.0.0.0/0");
}

#[test]
fn ipv4_loopback_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::Loopback;
    expect_allowed(&p, "126.255.255.255", 0, "0.0.0.0/0");
    expect_special(&p, "127.0.0.0", k, "127.0.0.0/8");
    expect_special(&p, "127.0.0.1", k, "127.0.0.0/8");
    expect_special(&p, "127.255.255.255", k, "127.0.0.0/8");
    expect_allowed(&p, "128.0.0.0", 0, "0.0.0.0/0");
}

#[test]
fn ipv4_link_local_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::LinkLocal;
    expect_allowed(&p, "169.253.255.255", 0, "0.0.0.0/0");
    expect_special(&p, "169.254.0.0", k, "169.254.0.0/16");
    expect_special(&p, "169.254.169.254", k, "169.254.0.0/16");
    expect_special(&p, "169.254.255.255", k, "169.254.0.0/16");
    expect_allowed(&p, "169.255.0.0", 0, "0.0.0.0/0");
}

#[test]
fn ipv4_multicast_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::Multicast;
    expect_allowed(&p, "223.255.255.255", 0, "0.0.0.0/0");
    expect_special(&p, "224.0.0.0", k, "224.0.0.0/4");
    expect_special(&p, "224.0.0.251", k, "224.0.0.0/4");
    expect_special(&p, "239.255.255.255", k, "224.0.0.0/4");
    // Just above multicast is the reserved block.
    expect_special(&p, "240.0.0.0", SpecialKind::Reserved, "240.0.0.0/4");
}

#[test]
fn ipv4_reserved_and_broadcast_boundaries() {
    let p = allow_all();
    expect_special(&p, "240.0.0.0", SpecialKind::Reserved, "240.0.0.0/4");
    expect_special(&p, "250.1.2.3", SpecialKind::Reserved, "240.0.0.0/4");
    expect_special(&p, "255.255.255.254", SpecialKind::Reserved, "240.0.0.0/4");
    expect_special(
        &p,
        "255.255.255.255",
        SpecialKind::Broadcast,
        "255.255.255.255/32",
    );
    // Just below reserved is multicast (tested above); just below multicast is
    // an ordinary address.
    expect_allowed(&p, "223.255.255.254", 0, "0.0.0.0/0");
}

#[test]
fn ipv6_unspecified_and_loopback() {
    let p = allow_all();
    expect_special(&p, "::", SpecialKind::Unspecified, "::/128");
    expect_special(&p, "::1", SpecialKind::Loopback, "::1/128");
    expect_allowed(&p, "::2", 1, "::/0");
    expect_allowed(&p, "::1:0", 1, "::/0");
}

#[test]
fn ipv6_link_local_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::LinkLocal;
    expect_allowed(&p, "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, "::/0");
    expect_special(&p, "fe80::", k, "fe80::/10");
    expect_special(&p, "fe80::1", k, "fe80::/10");
    expect_special(
        &p,
        "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        k,
        "fe80::/10",
    );
    expect_allowed(&p, "fec0::", 1, "::/0");
}

#[test]
fn ipv6_multicast_block_boundaries() {
    let p = allow_all();
    let k = SpecialKind::Multicast;
    expect_allowed(&p, "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, "::/0");
    expect_special(&p, "ff00::", k, "ff00::/8");
    expect_special(&p, "ff02::1", k, "ff00::/8");
    expect_special(&p, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", k, "ff00::/8");
}

/// Walk each IPv4 special block's edges numerically: one before, first,
/// last, one after.
#[test]
fn ipv4_special_edges_walk() {
    let p = allow_all();
    let blocks: [(SpecialKind, &str); 6] = [
        (SpecialKind::Unspecified, "0.0.0.0/8"),
        (SpecialKind::Loopback, "127.0.0.0/8"),
        (SpecialKind::LinkLocal, "169.254.0.0/16"),
        (SpecialKind::Multicast, "224.0.0.0/4"),
        (SpecialKind::Reserved, "240.0.0.0/4"),
        (SpecialKind::Broadcast, "255.255.255.255/32"),
    ];
    let kind_of = |a: u32| -> Option<SpecialKind> {
        if a == u32::MAX {
            return Some(SpecialKind::Broadcast);
        }
        blocks
            .iter()
            .find(|(_, b)| net(b).contains(IpAddr::V4(Ipv4Addr::from(a))))
            .map(|(k, _)| *k)
    };
    for (kind, block) in blocks {
        let n = net(block);
        let first = u32::from(match n.network() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        });
        let last = u32::from(match n.broadcast() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        });
        assert_eq!(kind_of(first), Some(kind));
        // The reserved block's last address is the (more specific) broadcast.
        if last != u32::MAX {
            assert_eq!(kind_of(last), Some(kind));
        }
        let probes = [
            first.checked_sub(1),
            Some(first),
            first.checked_add(1),
            last.checked_sub(1),
            Some(last),
            last.checked_add(1),
        ];
        for a in probes.into_iter().flatten() {
            let addr = IpAddr::V4(Ipv4Addr::from(a));
            let d = p.decide(addr, 443);
            match kind_of(a) {
                Some(k) => {
                    assert!(!d.allowed, "{addr}");
                    assert!(
                        matches!(d.rule, Rule::Special { kind, .. } if kind == k),
                        "{addr}: {:?}",
                        d.rule
                    );
                }
                None => assert!(d.allowed, "{addr}: {}", d.reason()),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Explicit naming of special blocks.
// ---------------------------------------------------------------------------

#[test]
fn explicit_loopback_subnet_is_allowed() {
    let p = policy(&["127.20.0.0/24"]);
    expect_allowed(&p, "127.20.0.5", 0, "127.20.0.0/24");
    expect_allowed(&p, "127.20.0.1", 0, "127.20.0.0/24");
    expect_allowed(&p, "127.20.0.254", 0, "127.20.0.0/24");
    // Still its own network/broadcast addresses.
    expect_range_broadcast(&p, "127.20.0.0", 0, "127.20.0.0/24");
    expect_range_broadcast(&p, "127.20.0.255", 0, "127.20.0.0/24");
    // Other loopback addresses are not named.
    expect_special(&p, "127.0.0.1", SpecialKind::Loopback, "127.0.0.0/8");
    expect_special(&p, "127.20.1.1", SpecialKind::Loopback, "127.0.0.0/8");
    // Mapped form of a named loopback address is allowed too.
    expect_allowed(&p, "::ffff:127.20.0.5", 0, "127.20.0.0/24");
}

#[test]
fn the_whole_special_block_counts_as_explicit() {
    let p = policy(&["127.0.0.0/8"]);
    expect_allowed(&p, "127.0.0.1", 0, "127.0.0.0/8");
    expect_allowed(&p, "127.255.255.254", 0, "127.0.0.0/8");
    expect_range_broadcast(&p, "127.0.0.0", 0, "127.0.0.0/8");
    expect_range_broadcast(&p, "127.255.255.255", 0, "127.0.0.0/8");
    expect(&p, "128.0.0.1", Rule::NotAllowed);
}

#[test]
fn slash_zero_and_supernets_are_not_explicit() {
    for allow in ["0.0.0.0/0", "127.0.0.0/7", "96.0.0.0/3", "0.0.0.0/1"] {
        let p = policy(&[allow]);
        expect_special(&p, "127.0.0.1", SpecialKind::Loopback, "127.0.0.0/8");
    }
    for allow in [
        "128.0.0.0/1",
        "160.0.0.0/3",
        "169.0.0.0/8",
        "169.254.0.0/15",
    ] {
        let p = policy(&[allow]);
        expect_special(&p, "169.254.1.1", SpecialKind::LinkLocal, "169.254.0.0/16");
    }
    for allow in ["224.0.0.0/3", "128.0.0.0/1"] {
        let p = policy(&[allow]);
        expect_special(&p, "224.0.0.1", SpecialKind::Multicast, "224.0.0.0/4");
        expect_special(&p, "240.0.0.1", SpecialKind::Reserved, "240.0.0.0/4");
    }
    let p = policy(&["::/0"]);
    expect_special(&p, "::1", SpecialKind::Loopback, "::1/128");
    expect_special(&p, "::", SpecialKind::Unspecified, "::/128");
    expect_special(&p, "fe80::1", SpecialKind::LinkLocal, "fe80::/10");
    expect_special(&p, "ff02::1", SpecialKind::Multicast, "ff00::/8");
    // ::/127 holds both :: and ::1 but lies inside neither /128 block.
    let p = policy(&["::/127"]);
    expect_special(&p, "::1", SpecialKind::Loopback, "::1/128");
    expect_special(&p, "::", SpecialKind::Unspecified, "::/128");
    // fe80::/9 is larger than the link-local block.
    let p = policy(&["fe00::/7"]);
    expect_special(&p, "fe80::1", SpecialKind::LinkLocal, "fe80::/10");
}

#[test]
fn explicit_names_of_other_special_blocks() {
    let p = policy(&["169.254.10.0/24"]);
    expect_allowed(&p, "169.254.10.20", 0, "169.254.10.0/24");
    expect_special(
        &p,
        "169.254.11.20",
        SpecialKind::LinkLocal,
        "169.254.0.0/16",
    );

    let p = policy(&["239.255.255.250"]);
    expect_allowed(&p, "239.255.255.250", 0, "239.255.255.250/32");
    expect_special(&p, "239.255.255.251", SpecialKind::Multicast, "224.0.0.0/4");

    let p = policy(&["255.255.255.255/32"]);
    expect_allowed(&p, "255.255.255.255", 0, "255.255.255.255/32");
    expect_special(&p, "255.255.255.254", SpecialKind::Reserved, "240.0.0.0/4");

    // The reserved block does not name the broadcast address inside it.
    let p = policy(&["240.0.0.0/4"]);
    expect_allowed(&p, "240.0.0.1", 0, "240.0.0.0/4");
    expect_special(
        &p,
        "255.255.255.255",
        SpecialKind::Broadcast,
        "255.255.255.255/32",
    );

    let p = policy(&["0.0.0.0/8"]);
    expect_allowed(&p, "0.1.2.3", 0, "0.0.0.0/8");

    let p = policy(&["::1"]);
    expect_allowed(&p, "::1", 0, "::1/128");
    expect_special(&p, "::", SpecialKind::Unspecified, "::/128");

    let p = policy(&["fe80::/64"]);
    expect_allowed(&p, "fe80::1", 0, "fe80::/64");
    expect_special(&p, "fe80:0:0:1::1", SpecialKind::LinkLocal, "fe80::/10");

    let p = policy(&["ff02::/16"]);
    expect_allowed(&p, "ff02::fb", 0, "ff02::/16");
    expect_special(&p, "ff05::fb", SpecialKind::Multicast, "ff00::/8");
}

#[test]
fn explicit_entry_is_reported_even_after_a_broader_one() {
    let p = policy(&["0.0.0.0/0", "127.20.0.0/24"]);
    expect_allowed(&p, "127.20.0.5", 1, "127.20.0.0/24");
    expect_allowed(&p, "192.0.2.7", 0, "0.0.0.0/0");
}

// ---------------------------------------------------------------------------
// Normalization: IPv4-mapped and NAT64.
// ---------------------------------------------------------------------------

#[test]
fn mapped_addresses_are_decided_as_ipv4() {
    let p = policy(&["192.168.1.0/24", "::/0"]);
    expect_special(&p, "::ffff:127.0.0.1", SpecialKind::Loopback, "127.0.0.0/8");
    expect_special(
        &p,
        "::ffff:169.254.1.1",
        SpecialKind::LinkLocal,
        "169.254.0.0/16",
    );
    expect_special(&p, "::ffff:0.0.0.0", SpecialKind::Unspecified, "0.0.0.0/8");
    expect_special(
        &p,
        "::ffff:224.0.0.1",
        SpecialKind::Multicast,
        "224.0.0.0/4",
    );
    expect_special(
        &p,
        "::ffff:255.255.255.255",
        SpecialKind::Broadcast,
        "255.255.255.255/32",
    );
    expect_allowed(&p, "::ffff:192.168.1.20", 0, "192.168.1.0/24");
    expect_range_broadcast(&p, "::ffff:192.168.1.255", 0, "192.168.1.0/24");
    // ::/0 does not cover mapped addresses: they are decided as IPv4.
    expect(&p, "::ffff:10.0.0.1", Rule::NotAllowed);

    let d = p.decide(ip("::ffff:192.168.1.20"), 80);
    assert_eq!(d.addr, ip("192.168.1.20"));
    let d = p.decide(ip("::ffff:127.0.0.1"), 80);
    assert_eq!(d.addr, ip("127.0.0.1"));
}

#[test]
fn nat64_addresses_are_decided_as_ipv4() {
    let p = policy(&["192.168.1.0/24", "::/0"]);
    expect_special(&p, "64:ff9b::7f00:1", SpecialKind::Loopback, "127.0.0.0/8");
    expect_special(
        &p,
        "64:ff9b::127.0.0.1",
        SpecialKind::Loopback,
        "127.0.0.0/8",
    );
    expect_special(
        &p,
        "64:ff9b::169.254.169.254",
        SpecialKind::LinkLocal,
        "169.254.0.0/16",
    );
    expect_allowed(&p, "64:ff9b::192.168.1.20", 0, "192.168.1.0/24");
    assert_eq!(
        p.decide(ip("64:ff9b::c0a8:114"), 9100).addr,
        ip("192.168.1.20")
    );
    // Outside the /96 well-known prefix: an ordinary IPv6 address.
    expect_allowed(&p, "64:ff9b:1::7f00:1", 1, "::/0");
}

#[test]
fn mapped_and_nat64_config_entries_are_normalized() {
    let p = policy(&["::ffff:192.168.1.0/120", "64:ff9b::10.0.0.0/104"]);
    assert_eq!(p.allow(), vec![net("192.168.1.0/24"), net("10.0.0.0/8")]);
    expect_allowed(&p, "192.168.1.20", 0, "192.168.1.0/24");
    expect_allowed(&p, "::ffff:192.168.1.20", 0, "192.168.1.0/24");
    expect_allowed(&p, "10.1.2.3", 1, "10.0.0.0/8");
    expect_allowed(&p, "64:ff9b::10.1.2.3", 1, "10.0.0.0/8");

    let p = policy(&["::ffff:127.0.0.0/104"]);
    expect_allowed(&p, "127.0.0.1", 0, "127.0.0.0/8");
}

// ---------------------------------------------------------------------------
// Allow-range boundaries.
// ---------------------------------------------------------------------------

#[test]
fn ipv4_slash24_boundaries() {
    let p = policy(&["192.168.1.0/24"]);
    expect(&p, "192.168.0.255", Rule::NotAllowed);
    expect_range_broadcast(&p, "192.168.1.0", 0, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.1", 0, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.254", 0, "192.168.1.0/24");
    expect_range_broadcast(&p, "192.168.1.255", 0, "192.168.1.0/24");
    expect(&p, "192.168.2.0", Rule::NotAllowed);
    expect(&p, "192.168.2.1", Rule::NotAllowed);
}

#[test]
fn ipv4_slash30_slash31_slash32() {
    let p = policy(&["10.0.0.4/30", "10.0.1.0/31", "10.0.2.5/32", "10.0.3.9"]);
    expect(&p, "10.0.0.3", Rule::NotAllowed);
    expect_range_broadcast(&p, "10.0.0.4", 0, "10.0.0.4/30");
    expect_allowed(&p, "10.0.0.5", 0, "10.0.0.4/30");
    expect_allowed(&p, "10.0.0.6", 0, "10.0.0.4/30");
    expect_range_broadcast(&p, "10.0.0.7", 0, "10.0.0.4/30");
    expect(&p, "10.0.0.8", Rule::NotAllowed);
    // /31 point-to-point: both addresses usable.
    expect(&p, "10.0.0.255", Rule::NotAllowed);
    expect_allowed(&p, "10.0.1.0", 1, "10.0.1.0/31");
    expect_allowed(&p, "10.0.1.1", 1, "10.0.1.0/31");
    expect(&p, "10.0.1.2", Rule::NotAllowed);
    // /32 hosts, with or without the suffix.
    expect(&p, "10.0.2.4", Rule::NotAllowed);
    expect_allowed(&p, "10.0.2.5", 2, "10.0.2.5/32");
    expect(&p, "10.0.2.6", Rule::NotAllowed);
    expect(&p, "10.0.3.8", Rule::NotAllowed);
    expect_allowed(&p, "10.0.3.9", 3, "10.0.3.9/32");
    expect(&p, "10.0.3.10", Rule::NotAllowed);
}

#[test]
fn ipv4_slash_zero() {
    let p = policy(&["0.0.0.0/0"]);
    expect_allowed(&p, "1.0.0.0", 0, "0.0.0.0/0");
    expect_allowed(&p, "192.0.2.1", 0, "0.0.0.0/0");
    expect_allowed(&p, "223.255.255.255", 0, "0.0.0.0/0");
    // /0 does not cover IPv6.
    expect(&p, "2001:db8::1", Rule::NotAllowed);
}

#[test]
fn ipv6_ranges_have_no_broadcast() {
    let p = policy(&["fd00::/64", "2001:db8::5/128", "2001:db8:1::/127"]);
    expect(
        &p,
        "fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        Rule::NotAllowed,
    );
    expect(&p, "fd00::ffff:ffff:ffff:ffff:ffff", Rule::NotAllowed);
    expect_allowed(&p, "fd00::", 0, "fd00::/64");
    expect_allowed(&p, "fd00::1", 0, "fd00::/64");
    expect_allowed(&p, "fd00::ffff:ffff:ffff:ffff", 0, "fd00::/64");
    expect(&p, "fd00:0:0:1::", Rule::NotAllowed);
    expect(&p, "2001:db8::4", Rule::NotAllowed);
    expect_allowed(&p, "2001:db8::5", 1, "2001:db8::5/128");
    expect(&p, "2001:db8::6", Rule::NotAllowed);
    expect_allowed(&p, "2001:db8:1::", 2, "2001:db8:1::/127");
    expect_allowed(&p, "2001:db8:1::1", 2, "2001:db8:1::/127");
    expect(&p, "2001:db8:1::2", Rule::NotAllowed);
    // IPv6 entries never match IPv4 addresses.
    expect(&p, "192.168.1.20", Rule::NotAllowed);
    let p = policy(&["::/0"]);
    expect_allowed(&p, "2001:db8::1", 0, "::/0");
    expect(&p, "192.0.2.1", Rule::NotAllowed);
}

#[test]
fn first_matching_entry_is_reported() {
    let p = policy(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"]);
    expect_allowed(&p, "10.1.2.3", 0, "10.0.0.0/8");
    let p = policy(&["10.1.2.0/24", "10.1.0.0/16", "10.0.0.0/8"]);
    expect_allowed(&p, "10.1.2.3", 0, "10.1.2.0/24");
    expect_allowed(&p, "10.1.3.3", 1, "10.1.0.0/16");
    expect_allowed(&p, "10.2.3.3", 2, "10.0.0.0/8");
}

#[test]
fn host_bits_in_entries_are_normalized() {
    let p = policy(&["192.168.1.77/24"]);
    assert_eq!(p.allow(), vec![net("192.168.1.0/24")]);
    expect_range_broadcast(&p, "192.168.1.0", 0, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.5", 0, "192.168.1.0/24");
}

// ---------------------------------------------------------------------------
// Network / broadcast address of allow ranges.
// ---------------------------------------------------------------------------

#[test]
fn range_broadcast_unless_named_as_host() {
    let p = policy(&["192.168.1.0/24", "192.168.1.255/32"]);
    expect_range_broadcast(&p, "192.168.1.0", 0, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.255", 1, "192.168.1.255/32");

    let p = policy(&["192.168.1.0", "192.168.1.0/24"]);
    expect_allowed(&p, "192.168.1.0", 0, "192.168.1.0/32");
    expect_range_broadcast(&p, "192.168.1.255", 1, "192.168.1.0/24");

    // A /31 naming it is not a single host.
    let p = policy(&["192.168.1.0/24", "192.168.1.254/31"]);
    expect_range_broadcast(&p, "192.168.1.255", 0, "192.168.1.0/24");
}

#[test]
fn range_broadcast_of_any_overlapping_entry() {
    let p = policy(&["192.168.0.0/16", "192.168.1.0/24"]);
    expect_range_broadcast(&p, "192.168.0.0", 0, "192.168.0.0/16");
    expect_range_broadcast(&p, "192.168.255.255", 0, "192.168.0.0/16");
    expect_range_broadcast(&p, "192.168.1.0", 1, "192.168.1.0/24");
    expect_range_broadcast(&p, "192.168.1.255", 1, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.1", 0, "192.168.0.0/16");
    expect_allowed(&p, "192.168.2.255", 0, "192.168.0.0/16");
}

// ---------------------------------------------------------------------------
// Own addresses.
// ---------------------------------------------------------------------------

#[test]
fn own_address_denied_inside_range_and_allowed_as_host() {
    let own = ["192.168.1.10", "fd00::10"];
    let p = policy_own(&["192.168.1.0/24", "fd00::/64"], &[], &own);
    expect(&p, "192.168.1.10", Rule::OwnAddress);
    expect(&p, "::ffff:192.168.1.10", Rule::OwnAddress);
    expect(&p, "fd00::10", Rule::OwnAddress);
    expect_allowed(&p, "192.168.1.11", 0, "192.168.1.0/24");
    expect_allowed(&p, "fd00::11", 1, "fd00::/64");

    let p = policy_own(
        &["192.168.1.0/24", "fd00::/64", "192.168.1.10/32", "fd00::10"],
        &[],
        &own,
    );
    expect_allowed(&p, "192.168.1.10", 2, "192.168.1.10/32");
    expect_allowed(&p, "fd00::10", 3, "fd00::10/128");

    // Anything but the exact single host does not count.
    let p = policy_own(&["192.168.1.10/31", "fd00::10/127"], &[], &own);
    expect(&p, "192.168.1.10", Rule::OwnAddress);
    expect(&p, "fd00::10", Rule::OwnAddress);
    expect_allowed(&p, "192.168.1.11", 0, "192.168.1.10/31");
}

#[test]
fn own_address_given_mapped_is_normalized() {
    let p = policy_own(&["192.168.1.0/24"], &[], &["::ffff:192.168.1.10"]);
    assert_eq!(p.own_addresses(), vec![ip("192.168.1.10")]);
    expect(&p, "192.168.1.10", Rule::OwnAddress);
    let p = policy_own(
        &["192.168.1.0/24", "::ffff:192.168.1.10/128"],
        &[],
        &["192.168.1.10"],
    );
    expect_allowed(&p, "192.168.1.10", 1, "192.168.1.10/32");
}

#[test]
fn own_address_outside_allow_is_still_own_address() {
    let p = policy_own(&["192.168.1.0/24"], &[], &["10.9.9.9"]);
    expect(&p, "10.9.9.9", Rule::OwnAddress);
}

#[test]
fn own_loopback_needs_special_and_host_naming() {
    // Special is decided first.
    let p = policy_own(&["0.0.0.0/0"], &[], &["127.0.0.1"]);
    expect_special(&p, "127.0.0.1", SpecialKind::Loopback, "127.0.0.0/8");
    // Explicit loopback subnet passes rule 4, but the own address needs /32.
    let p = policy_own(&["127.0.0.0/24"], &[], &["127.0.0.1"]);
    expect(&p, "127.0.0.1", Rule::OwnAddress);
    expect_allowed(&p, "127.0.0.2", 0, "127.0.0.0/24");
    let p = policy_own(&["127.0.0.0/24", "127.0.0.1"], &[], &["127.0.0.1"]);
    expect_allowed(&p, "127.0.0.1", 1, "127.0.0.1/32");
}

// ---------------------------------------------------------------------------
// Deny list.
// ---------------------------------------------------------------------------

#[test]
fn deny_beats_allow() {
    let p = policy_own(
        &["192.168.1.0/24", "192.168.1.200/32", "fd00::/64"],
        &["192.168.1.128/25", "192.168.1.50", "fd00::bad"],
        &[],
    );
    expect_allowed(&p, "192.168.1.127", 0, "192.168.1.0/24");
    expect(
        &p,
        "192.168.1.128",
        Rule::DenyList {
            index: 0,
            network: net("192.168.1.128/25"),
        },
    );
    // Deny beats an explicit /32 allow too.
    expect(
        &p,
        "192.168.1.200",
        Rule::DenyList {
            index: 0,
            network: net("192.168.1.128/25"),
        },
    );
    expect(
        &p,
        "192.168.1.50",
        Rule::DenyList {
            index: 1,
            network: net("192.168.1.50/32"),
        },
    );
    expect_allowed(&p, "192.168.1.49", 0, "192.168.1.0/24");
    expect_allowed(&p, "192.168.1.51", 0, "192.168.1.0/24");
    expect(
        &p,
        "::ffff:192.168.1.50",
        Rule::DenyList {
            index: 1,
            network: net("192.168.1.50/32"),
        },
    );
    expect(
        &p,
        "fd00::bad",
        Rule::DenyList {
            index: 2,
            network: net("fd00::bad/128"),
        },
    );
    expect_allowed(&p, "fd00::bae", 2, "fd00::/64");
}

#[test]
fn deny_beats_special_explicit_and_own_rules() {
    let p = policy_own(
        &["127.20.0.0/24", "10.0.0.1"],
        &["127.20.0.5", "10.0.0.0/8"],
        &["10.0.0.1"],
    );
    expect(
        &p,
        "127.20.0.5",
        Rule::DenyList {
            index: 0,
            network: net("127.20.0.5/32"),
        },
    );
    expect(
        &p,
        "10.0.0.1",
        Rule::DenyList {
            index: 1,
            network: net("10.0.0.0/8"),
        },
    );
    // Deny also wins over a not-allowed address (reported as deny list).
    expect(
        &p,
        "10.9.9.9",
        Rule::DenyList {
            index: 1,
            network: net("10.0.0.0/8"),
        },
    );
}

#[test]
fn deny_entries_match_mapped_forms() {
    // A mapped deny entry is normalized to IPv4.
    let p = policy_own(&["10.0.0.0/8"], &["::ffff:10.1.0.0/112"], &[]);
    assert_eq!(p.deny(), vec![net("10.1.0.0/16")]);
    expect(
        &p,
        "10.1.2.3",
        Rule::DenyList {
            index: 0,
            network: net("10.1.0.0/16"),
        },
    );
    // An IPv6 deny entry that covers the raw mapped form also denies it.
    let p = policy_own(&["10.0.0.0/8"], &["::/0"], &[]);
    expect(
        &p,
        "::ffff:10.1.2.3",
        Rule::DenyList {
            index: 0,
            network: net("::/0"),
        },
    );
    expect_allowed(&p, "10.1.2.3", 0, "10.0.0.0/8");
}

// ---------------------------------------------------------------------------
// Ports.
// ---------------------------------------------------------------------------

#[test]
fn every_default_port_is_allowed_and_others_are_not() {
    let p = policy(&["192.168.1.0/24"]);
    for port in DEFAULT_PORTS {
        let d = p.decide(ip("192.168.1.20"), port);
        assert!(d.allowed, "{port}: {}", d.reason());
    }
    let mut allowed = Vec::new();
    for port in 0..=u16::MAX {
        let d = p.decide(ip("192.168.1.20"), port);
        if d.allowed {
            allowed.push(port);
        } else {
            assert_eq!(
                d.rule,
                Rule::PortNotAllowed {
                    port,
                    allowed_ports: vec![80, 443, 631, 8000, 9100]
                }
            );
        }
    }
    assert_eq!(allowed, vec![80, 443, 631, 8000, 9100]);
}

#[test]
fn port_rule_comes_first() {
    let p = policy_own(&["192.168.1.0/24"], &["192.168.1.20"], &["192.168.1.10"]);
    for addr in [
        "192.168.1.20",
        "127.0.0.1",
        "192.168.1.10",
        "10.0.0.1",
        "192.168.1.255",
    ] {
        let d = p.decide(ip(addr), 22);
        assert!(!d.allowed);
        assert!(
            matches!(d.rule, Rule::PortNotAllowed { port: 22, .. }),
            "{addr}: {:?}",
            d.rule
        );
    }
}

#[test]
fn icmp_ignores_ports() {
    let p = AgentPolicy::from_config(&cfg(&["192.168.1.0/24"], &[], &[9100]), vec![]).unwrap();
    assert!(!p.decide(ip("192.168.1.20"), 80).allowed);
    assert!(p.decide(ip("192.168.1.20"), 9100).allowed);
    assert!(p.decide_icmp(ip("192.168.1.20")).allowed);
    assert!(!p.decide_icmp(ip("127.0.0.1")).allowed);
}

#[test]
fn custom_ports_are_sorted_and_deduplicated() {
    let p = AgentPolicy::from_config(&cfg(&["192.168.1.0/24"], &[], &[8443, 80, 80, 515]), vec![])
        .unwrap();
    assert_eq!(p.ports(), vec![80, 515, 8443]);
    assert!(p.decide(ip("192.168.1.20"), 8443).allowed);
    assert!(p.decide(ip("192.168.1.20"), 515).allowed);
    assert!(!p.decide(ip("192.168.1.20"), 443).allowed);
}

// ---------------------------------------------------------------------------
// Configuration errors.
// ---------------------------------------------------------------------------

#[test]
fn bad_cidr_names_key_and_index() {
    let err = AgentPolicy::from_config(
        &cfg(&["192.168.1.0/24", "10.0.0.1", "10.0.0/33"], &[], &[80]),
        vec![],
    )
    .unwrap_err();
    assert!(
        matches!(err, PolicyError::InvalidNetwork { ref key, ref value, .. }
        if key == "policy.allow[2]" && value == "10.0.0/33")
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("policy.allow[2]: invalid network \"10.0.0/33\": "),
        "{msg}"
    );

    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "banana",
        "",
        "10.0.0.0/",
        "fe80::1%eth0",
        "1.2.3.4.5",
    ] {
        let err =
            AgentPolicy::from_config(&cfg(&["10.0.0.0/8"], &["10.1.0.0/16", bad], &[80]), vec![])
                .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("policy.deny[1]: invalid network \"{bad}\": ")),
            "{msg}"
        );
    }
}

#[test]
fn port_zero_names_key_and_index() {
    let err = AgentPolicy::from_config(&cfg(&[], &[], &[80, 0, 443]), vec![]).unwrap_err();
    assert_eq!(
        err,
        PolicyError::InvalidPort {
            key: "policy.ports[1]".into(),
            port: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "policy.ports[1]: port 0 is not a valid port"
    );
}

#[test]
fn empty_ports_is_an_error() {
    let err = AgentPolicy::from_config(&cfg(&["10.0.0.0/8"], &[], &[]), vec![]).unwrap_err();
    assert_eq!(err, PolicyError::EmptyPorts);
    assert!(err.to_string().starts_with("policy.ports: "));
}

#[test]
fn empty_allow_is_valid_and_denies_everything() {
    let p = AgentPolicy::from_config(&cfg(&[], &[], &DEFAULT_PORTS), vec![]).unwrap();
    for addr in ["192.168.1.20", "10.0.0.1", "fd00::1", "2001:db8::1"] {
        expect(&p, addr, Rule::NotAllowed);
    }
    expect_special(&p, "127.0.0.1", SpecialKind::Loopback, "127.0.0.0/8");
}

#[test]
fn whitespace_around_entries_is_ignored() {
    let p = policy(&[" 192.168.1.0/24 "]);
    assert_eq!(p.allow(), vec![net("192.168.1.0/24")]);
}

#[test]
fn serde_config_defaults_and_unknown_keys() {
    let c: PolicyConfig = serde_json::from_str(r#"{"allow": ["192.168.1.0/24"]}"#).unwrap();
    assert_eq!(c.ports, default_ports());
    assert!(c.deny.is_empty());
    let c: PolicyConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, PolicyConfig::default());
    assert_eq!(PolicyConfig::default().ports, DEFAULT_PORTS.to_vec());

    let err = serde_json::from_str::<PolicyConfig>(r#"{"allow": [], "alow": ["10.0.0.0/8"]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `alow`"), "{err}");
    let err = serde_json::from_str::<PolicyConfig>(r#"{"port": [80]}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `port`"), "{err}");
    // Ports out of range fail at deserialization.
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"ports": [65536]}"#).is_err());
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"ports": [-1]}"#).is_err());

    let c = cfg(&["10.0.0.0/8"], &["10.1.0.0/16"], &[80]);
    let back: PolicyConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

// ---------------------------------------------------------------------------
// filter_resolved.
// ---------------------------------------------------------------------------

#[test]
fn filter_resolved_mixed_list() {
    let p = policy_own(
        &["192.168.1.0/24", "fd00::/64"],
        &["192.168.1.66"],
        &["192.168.1.10"],
    );
    let addrs = [
        ip("127.0.0.1"),
        ip("192.168.1.20"),
        ip("fe80::1"),
        ip("::ffff:192.168.1.21"),
        ip("192.168.1.66"),
        ip("192.168.1.10"),
        ip("10.0.0.1"),
        ip("fd00::20"),
        ip("192.168.1.20"),
        ip("192.168.1.255"),
        ip("64:ff9b::192.168.1.22"),
    ];
    assert_eq!(
        p.filter_resolved(&addrs, 80).unwrap(),
        vec![
            ip("192.168.1.20"),
            ip("192.168.1.21"),
            ip("fd00::20"),
            ip("192.168.1.22")
        ]
    );
}

#[test]
fn filter_resolved_none_allowed_explains_first() {
    let p = policy_own(&["192.168.1.0/24"], &["192.168.1.66"], &["192.168.1.10"]);
    let d = p
        .filter_resolved(&[ip("::ffff:127.0.0.1"), ip("192.168.1.66")], 80)
        .unwrap_err();
    assert_eq!(d.addr, ip("127.0.0.1"));
    assert_eq!(
        d.rule,
        Rule::Special {
            kind: SpecialKind::Loopback,
            network: net("127.0.0.0/8")
        }
    );
    let d = p
        .filter_resolved(&[ip("192.168.1.66"), ip("127.0.0.1")], 80)
        .unwrap_err();
    assert!(matches!(d.rule, Rule::DenyList { index: 0, .. }));
    let d = p
        .filter_resolved(&[ip("192.168.1.10"), ip("10.0.0.1")], 443)
        .unwrap_err();
    assert_eq!(d.rule, Rule::OwnAddress);
    assert_eq!(d.port, Some(443));
    // The port rule applies to every address.
    let d = p
        .filter_resolved(&[ip("192.168.1.20"), ip("192.168.1.21")], 22)
        .unwrap_err();
    assert!(matches!(d.rule, Rule::PortNotAllowed { port: 22, .. }));
    assert_eq!(d.addr, ip("192.168.1.20"));
}

#[test]
fn filter_resolved_single_and_empty() {
    let p = policy(&["192.168.1.0/24"]);
    assert_eq!(
        p.filter_resolved(&[ip("192.168.1.20")], 631).unwrap(),
        vec![ip("192.168.1.20")]
    );
    assert_eq!(p.filter_resolved(&[], 631).unwrap(), Vec::<IpAddr>::new());
    // Later allowed address is returned even if the first is denied.
    assert_eq!(
        p.filter_resolved(&[ip("10.0.0.1"), ip("192.168.1.30")], 9100)
            .unwrap(),
        vec![ip("192.168.1.30")]
    );
}

// ---------------------------------------------------------------------------
// Reasons.
// ---------------------------------------------------------------------------

#[test]
fn reason_strings_name_rule_and_network() {
    let p = policy_own(
        &["192.168.1.0/24", "127.20.0.0/24", "fd00::/64"],
        &["192.168.1.128/25"],
        &["192.168.1.10", "fd00::10"],
    );
    let r = |a: &str, port: u16| p.decide(ip(a), port).reason();

    assert_eq!(
        r("192.168.1.20", 80),
        "allowed: 192.168.1.20 is in policy.allow[0] (192.168.1.0/24) and port 80 is in policy.ports"
    );
    assert_eq!(
        r("127.0.0.1", 80),
        "denied: 127.0.0.1 is a loopback address (127.0.0.0/8) and no policy.allow entry names it"
    );
    assert_eq!(
        r("192.168.1.20", 22),
        "denied: port 22 is not in policy.ports [80, 443, 631, 8000, 9100]"
    );
    assert_eq!(
        r("192.168.1.200", 80),
        "denied: 192.168.1.200 is in policy.deny[0] (192.168.1.128/25)"
    );
    assert_eq!(
        r("169.254.1.1", 80),
        "denied: 169.254.1.1 is a link-local address (169.254.0.0/16) and no policy.allow entry names it"
    );
    assert_eq!(
        r("fe80::1", 80),
        "denied: fe80::1 is a link-local address (fe80::/10) and no policy.allow entry names it"
    );
    assert_eq!(
        r("224.0.0.1", 80),
        "denied: 224.0.0.1 is a multicast address (224.0.0.0/4) and no policy.allow entry names it"
    );
    assert_eq!(
        r("255.255.255.255", 80),
        "denied: 255.255.255.255 is the broadcast address (255.255.255.255/32) and no policy.allow entry names it"
    );
    assert_eq!(
        r("0.0.0.0", 80),
        "denied: 0.0.0.0 is an unspecified address (0.0.0.0/8) and no policy.allow entry names it"
    );
    assert_eq!(
        r("240.0.0.1", 80),
        "denied: 240.0.0.1 is a reserved address (240.0.0.0/4) and no policy.allow entry names it"
    );
    assert_eq!(
        r("192.168.1.10", 80),
        "denied: 192.168.1.10 is one of the agent host's own addresses and no policy.allow entry names it as a single host (/32)"
    );
    assert_eq!(
        r("fd00::10", 80),
        "denied: fd00::10 is one of the agent host's own addresses and no policy.allow entry names it as a single host (/128)"
    );
    assert_eq!(
        r("192.168.1.0", 80),
        "denied: 192.168.1.0 is the network address of policy.allow[0] (192.168.1.0/24) and no policy.allow entry names it as a single host (/32)"
    );
    assert_eq!(
        r("127.20.0.255", 80),
        "denied: 127.20.0.255 is the broadcast address of policy.allow[1] (127.20.0.0/24) and no policy.allow entry names it as a single host (/32)"
    );
    assert_eq!(
        r("10.0.0.1", 80),
        "denied: 10.0.0.1 is not in any policy.allow entry"
    );
    assert_eq!(
        r("127.20.0.5", 631),
        "allowed: 127.20.0.5 is in policy.allow[1] (127.20.0.0/24), which names this loopback address explicitly, and port 631 is in policy.ports"
    );
    assert_eq!(
        p.decide_icmp(ip("192.168.1.20")).reason(),
        "allowed: 192.168.1.20 is in policy.allow[0] (192.168.1.0/24)"
    );
    // Mapped input is reported in its normalized form.
    assert_eq!(
        r("::ffff:127.0.0.1", 80),
        "denied: 127.0.0.1 is a loopback address (127.0.0.0/8) and no policy.allow entry names it"
    );
}

#[test]
fn display_starts_with_verdict() {
    let p = policy(&["192.168.1.0/24"]);
    let allow = p.decide(ip("192.168.1.20"), 80).to_string();
    assert!(allow.starts_with("allow 192.168.1.20:80: "), "{allow}");
    assert!(allow.contains("policy.allow[0] (192.168.1.0/24)"));
    let deny = p.decide(ip("127.0.0.1"), 80).to_string();
    assert!(deny.starts_with("deny 127.0.0.1:80: "), "{deny}");
    assert!(deny.contains("loopback"));
    let icmp = p.decide_icmp(ip("::1")).to_string();
    assert!(icmp.starts_with("deny ::1 (icmp): "), "{icmp}");
}

#[test]
fn decision_serializes_with_rule_tag() {
    let p = policy(&["192.168.1.0/24"]);
    let d = p.decide(ip("::ffff:127.0.0.1"), 80);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "allowed": false,
            "addr": "127.0.0.1",
            "port": 80,
            "rule": {"rule": "special", "kind": "loopback", "network": "127.0.0.0/8"}
        })
    );
    let back: Decision = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);

    let d = p.decide(ip("192.168.1.20"), 443);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v["rule"],
        serde_json::json!({"rule": "allowed", "index": 0, "network": "192.168.1.0/24"})
    );
    let v = serde_json::to_value(p.decide_icmp(ip("169.254.1.1"))).unwrap();
    assert_eq!(v["port"], serde_json::Value::Null);
    assert_eq!(v["rule"]["kind"], "link_local");
    let v = serde_json::to_value(p.decide(ip("192.168.1.20"), 22)).unwrap();
    assert_eq!(v["rule"]["rule"], "port_not_allowed");
    assert_eq!(v["rule"]["port"], 22);
}

// ---------------------------------------------------------------------------
// Table-driven walk.
// ---------------------------------------------------------------------------

/// One fixed policy exercising every rule, and a large table of targets.
#[test]
fn table_of_decisions() {
    let p = policy_own(
        &[
            "192.168.1.0/24",   // 0
            "10.0.0.0/30",      // 1
            "10.1.1.1",         // 2
            "127.20.0.0/24",    // 3
            "fd00::/64",        // 4
            "fe80::/64",        // 5
            "192.168.1.77/32",  // 6 (own address named as host)
            "192.168.1.255/32", // 7 (broadcast named as host)
            "169.254.7.0/24",   // 8
            "0.0.0.0/0",        // 9 (never explicit for special blocks)
        ],
        &["192.168.1.128/26", "fd00::dead", "203.0.113.0/24"],
        &["192.168.1.10", "fd00::10", "192.168.1.77", "10.9.9.9"],
    );

    // (address, port, expected rule name, reported index if any)
    #[rustfmt::skip]
    let table: &[(&str, u16, &str, Option<usize>)] = &[
        // ordinary allowed
        ("192.168.1.1", 80, "allowed", Some(0)),
        ("192.168.1.20", 443, "allowed", Some(0)),
        ("192.168.1.20", 8000, "allowed", Some(0)),
        ("192.168.1.20", 9100, "allowed", Some(0)),
        ("192.168.1.20", 631, "allowed", Some(0)),
        ("192.168.1.127", 80, "allowed", Some(0)),
        ("192.168.1.192", 80, "allowed", Some(0)),
        ("192.168.1.254", 80, "allowed", Some(0)),
        ("::ffff:192.168.1.20", 80, "allowed", Some(0)),
        ("64:ff9b::192.168.1.20", 80, "allowed", Some(0)),
        ("10.0.0.1", 80, "allowed", Some(1)),
        ("10.0.0.2", 80, "allowed", Some(1)),
        ("10.1.1.1", 80, "allowed", Some(2)),
        ("127.20.0.1", 80, "allowed", Some(3)),
        ("127.20.0.254", 80, "allowed", Some(3)),
        ("fd00::1", 80, "allowed", Some(4)),
        ("fd00::ffff:ffff:ffff:ffff", 80, "allowed", Some(4)),
        ("fe80::1", 80, "allowed", Some(5)),
        ("fe80::ffff:ffff:ffff:ffff", 80, "allowed", Some(5)),
        ("192.168.1.77", 80, "allowed", Some(6)),
        ("192.168.1.255", 80, "allowed", Some(7)),
        ("169.254.7.1", 80, "allowed", Some(8)),
        ("::ffff:169.254.7.1", 80, "allowed", Some(8)),
        ("192.0.2.10", 80, "allowed", Some(9)),
        ("198.51.100.10", 80, "allowed", Some(9)),
        ("172.16.0.1", 80, "allowed", Some(9)),
        ("1.0.0.0", 80, "allowed", Some(9)),
        ("126.255.255.255", 80, "allowed", Some(9)),
        ("128.0.0.0", 80, "allowed", Some(9)),
        ("169.253.255.255", 80, "allowed", Some(9)),
        ("169.255.0.0", 80, "allowed", Some(9)),
        ("223.255.255.255", 80, "allowed", Some(9)),
        // ports
        ("192.168.1.20", 22, "port_not_allowed", None),
        ("192.168.1.20", 0, "port_not_allowed", None),
        ("192.168.1.20", 79, "port_not_allowed", None),
        ("192.168.1.20", 81, "port_not_allowed", None),
        ("192.168.1.20", 8080, "port_not_allowed", None),
        ("192.168.1.20", 65535, "port_not_allowed", None),
        ("127.0.0.1", 22, "port_not_allowed", None),
        ("203.0.113.5", 23, "port_not_allowed", None),
        // deny list
        ("192.168.1.128", 80, "deny_list", Some(0)),
        ("192.168.1.150", 80, "deny_list", Some(0)),
        ("192.168.1.191", 80, "deny_list", Some(0)),
        ("::ffff:192.168.1.130", 80, "deny_list", Some(0)),
        ("fd00::dead", 80, "deny_list", Some(1)),
        ("203.0.113.0", 80, "deny_list", Some(2)),
        ("203.0.113.255", 443, "deny_list", Some(2)),
        // special
        ("0.0.0.0", 80, "special", None),
        ("0.255.255.255", 80, "special", None),
        ("127.0.0.1", 80, "special", None),
        ("127.255.255.255", 80, "special", None),
        ("127.20.1.1", 80, "special", None),
        ("::ffff:127.0.0.1", 80, "special", None),
        ("64:ff9b::7f00:1", 80, "special", None),
        ("169.254.0.0", 80, "special", None),
        ("169.254.169.254", 80, "special", None),
        ("169.254.255.255", 80, "special", None),
        ("::ffff:169.254.1.1", 80, "special", None),
        ("224.0.0.0", 80, "special", None),
        ("239.255.255.255", 80, "special", None),
        ("240.0.0.0", 80, "special", None),
        ("255.255.255.254", 80, "special", None),
        ("255.255.255.255", 80, "special", None),
        ("::", 80, "special", None),
        ("::1", 80, "special", None),
        ("fe80:0:0:1::1", 80, "special", None),
        ("febf::1", 80, "special", None),
        ("ff02::1", 80, "special", None),
        ("ff00::", 80, "special", None),
        // own addresses
        ("192.168.1.10", 80, "own_address", None),
        ("::ffff:192.168.1.10", 80, "own_address", None),
        ("fd00::10", 80, "own_address", None),
        ("10.9.9.9", 80, "own_address", None),
        // network / broadcast of ranges
        ("192.168.1.0", 80, "range_broadcast", Some(0)),
        ("10.0.0.0", 80, "range_broadcast", Some(1)),
        ("10.0.0.3", 80, "range_broadcast", Some(1)),
        ("127.20.0.0", 80, "range_broadcast", Some(3)),
        ("127.20.0.255", 80, "range_broadcast", Some(3)),
        ("169.254.7.0", 80, "range_broadcast", Some(8)),
        ("169.254.7.255", 80, "range_broadcast", Some(8)),
        // not allowed (IPv6 outside fd00::/64; IPv4 is all covered by /0)
        ("fd00:0:0:1::1", 80, "not_allowed", None),
        ("2001:db8::1", 80, "not_allowed", None),
        ("fec0::1", 80, "not_allowed", None),
        ("64:ff9b:1::1", 80, "not_allowed", None),
    ];

    assert!(table.len() > 80);
    for &(addr, port, name, index) in table {
        let d = p.decide(ip(addr), port);
        assert_eq!(d.rule.name(), name, "{addr}:{port} -> {}", d.reason());
        assert_eq!(d.allowed, name == "allowed", "{addr}:{port}");
        let got_index = match d.rule {
            Rule::Allowed { index, .. }
            | Rule::DenyList { index, .. }
            | Rule::RangeBroadcast { index, .. } => Some(index),
            _ => None,
        };
        assert_eq!(got_index, index, "{addr}:{port} -> {}", d.reason());
        // Reason agrees with the verdict and names the key involved.
        let reason = d.reason();
        assert!(
            reason.starts_with(if d.allowed { "allowed: " } else { "denied: " }),
            "{reason}"
        );
        match &d.rule {
            Rule::Allowed { index, network } | Rule::RangeBroadcast { index, network } => {
                assert!(
                    reason.contains(&format!("policy.allow[{index}] ({network})")),
                    "{reason}"
                );
            }
            Rule::DenyList { index, network } => {
                assert!(
                    reason.contains(&format!("policy.deny[{index}] ({network})")),
                    "{reason}"
                );
            }
            Rule::Special { kind, network } => {
                assert!(reason.contains(kind.as_str()), "{reason}");
                assert!(reason.contains(&format!("({network})")), "{reason}");
            }
            Rule::PortNotAllowed { port, .. } => {
                assert!(
                    reason.contains(&format!("port {port} is not in policy.ports")),
                    "{reason}"
                );
            }
            Rule::OwnAddress => assert!(reason.contains("own addresses"), "{reason}"),
            Rule::NotAllowed => assert!(reason.contains("not in any policy.allow"), "{reason}"),
        }
        // ICMP agrees with TCP on every allowed port.
        if name != "port_not_allowed" {
            assert_eq!(p.decide_icmp(ip(addr)).rule, d.rule, "{addr} icmp");
        }
    }
}

/// Walk every address of 192.168.0.0/22 under an overlapping policy and
/// compare with an independent statement of the rules.
#[test]
fn walk_of_a_whole_block() {
    let p = policy_own(
        &["192.168.1.0/24", "192.168.2.0/25", "192.168.2.200"],
        &["192.168.1.64/28"],
        &["192.168.1.5"],
    );
    for a in u32::from(Ipv4Addr::new(192, 168, 0, 0))..=u32::from(Ipv4Addr::new(192, 168, 3, 255)) {
        let v4 = Ipv4Addr::from(a);
        let o = v4.octets();
        let expected = match (o[2], o[3]) {
            (1, 64..=79) => "deny_list",
            (1, 5) => "own_address",
            (1, 0) | (1, 255) | (2, 0) | (2, 127) => "range_broadcast",
            (1, _) | (2, 1..=126) | (2, 200) => "allowed",
            _ => "not_allowed",
        };
        for addr in [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())] {
            let d = p.decide(addr, 9100);
            assert_eq!(d.rule.name(), expected, "{addr}: {}", d.reason());
            assert_eq!(d.addr, IpAddr::V4(v4));
        }
    }
}

// ---------------------------------------------------------------------------
// Relay check (agent policy and relay agree on ports).
// ---------------------------------------------------------------------------

#[test]
fn relay_uses_agent_ports() {
    let p = policy(&["192.168.1.0/24"]);
    let ports = p.ports();
    for port in [22u16, 80, 443, 631, 8000, 8080, 9100] {
        let r = relay_decide(&RelayCheck {
            device_registered: true,
            port,
            agent_ports: &ports,
        });
        assert_eq!(
            r.allowed,
            p.decide(ip("192.168.1.20"), port).allowed,
            "{port}"
        );
        let r = relay_decide(&RelayCheck {
            device_registered: false,
            port,
            agent_ports: &ports,
        });
        assert!(!r.allowed);
        assert!(r.reason.contains("not registered"));
    }
}
