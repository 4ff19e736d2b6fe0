//! A fully compromised relay tries every way out of the agent's policy.
//!
//! A real `dwa-agent` enrolls against a real `dwa-relay`; the real relay
//! then stops and a hostile one (`dwa_e2e_tests::hostile`, holding the real
//! SSH host key the agent pinned) takes its address. It asks for streams in
//! every notation, TLS and legacy TLS, other channel types, every
//! diagnostic, pushed scans and "scan now" floods, host names from a real
//! DNS server (dnsmasq) including one whose answer flips, and sends
//! unsolicited, garbage and oversized control frames.
//!
//! Asserted on the target side: every denied target is a real listener
//! (TCP, UDP, ICMP counted on a raw socket) on a loopback address of the
//! fixture's /24 or 127.0.0.1, and must see nothing; the allowed target
//! keeps answering between and after the attacks. Targets that cannot
//! have a listener (metadata, multicast, broadcast) must be refused by a
//! policy rule, which the agent decides before any connection is tried.
//!
//! Legacy TLS toward a denied target cannot be asked for directly (the
//! agent falls back to OpenSSL only after rustls failed on an address it
//! already checked), so the tests check that the fallback reconnects to
//! that checked address, also when the name's DNS answer changed between.
//! Host names reach the agent's system resolver (getaddrinfo), which only
//! asks port 53: the agent runs in a mount namespace of its own whose
//! /etc/resolv.conf names a dnsmasq on `<net>.53:53`.
//!
//! An own address the host gains after the agent started is refused too
//! (`an_own_address_added_after_start_is_still_refused`): the agent reads
//! its addresses again for each decision (`dwa_agent::policy`).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwa_e2e_tests::hostile::{
    EchoCounter, HostileRelay, HostileSession, LoopbackAlias, OtherChannel, UdpSink,
};
use dwa_e2e_tests::*;
use dwa_proto::control::{ControlMsg, Denial, Hello, ScanApplied, ScanSettings, TlsInfo};
use dwa_proto::diag::{DiagKind, DiagOutcome, DiagParams, DiagRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Rules that mean "refused before any connection": a policy decision, a
/// port that is no port, a name that did not resolve.
const POLICY_RULES: [&str; 8] = [
    "special",
    "deny_list",
    "own_address",
    "range_broadcast",
    "not_allowed",
    "port_not_allowed",
    "invalid_port",
    "resolve_failed",
];

/// A real relay used only to enroll, stopped; its SSH address now held by
/// a hostile relay with its host key; an agent enrolled with
/// `allow = [<net>.0/24]`, `deny = [<net>.66]`, one TCP port.
struct Lab {
    _relay: Relay,
    agent: Agent,
    hostile: HostileRelay,
    net: String,
    /// Echo target at `<net>.10:port`, allowed.
    ok: Target,
}

impl Lab {
    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.net)
    }

    /// The `.A.B` octets of the fixture's `127.A.B` prefix.
    fn octets(&self) -> (u8, u8) {
        let mut it = self
            .net
            .split('.')
            .skip(1)
            .map(|o| o.parse::<u8>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }

    /// The agent's next session with the hostile relay.
    async fn session(&mut self) -> HostileSession {
        self.hostile.session(Duration::from_secs(30)).await
    }
}

/// `port` must be free on 127.0.0.1 and every address of the new /24;
/// `snmp_port` goes to `[scan]`. The agent is not started yet.
async fn lab(port: u16, snmp_port: u16) -> Lab {
    let mut relay = Relay::init();
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let net = relay.net.clone();
    let allow = format!("{net}.0/24");
    let agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&allow],
            ports: &[port],
            transport: "ssh",
        },
    );
    agent.edit_config(|text| {
        let mut cfg: toml::Table = toml::from_str(text).expect("agent.toml");
        let policy = cfg
            .get_mut("policy")
            .and_then(toml::Value::as_table_mut)
            .expect("[policy]");
        policy.insert("deny".into(), vec![format!("{net}.66/32")].into());
        // No scan of its own: only what the hostile relay pushes.
        let mut scan = toml::Table::new();
        scan.insert("ranges".into(), Vec::<String>::new().into());
        scan.insert("interval".into(), "1h".into());
        scan.insert("snmp_port".into(), i64::from(snmp_port).into());
        scan.insert("timeout".into(), "300ms".into());
        scan.insert("retries".into(), 0.into());
        cfg.insert("scan".into(), scan.into());
        *text = toml::to_string(&cfg).expect("serialize");
    });
    // The real relay goes; the hostile one takes its SSH address.
    relay.stop();
    let hostile = HostileRelay::listen(&format!("{net}.1:{SSH_PORT}"), &relay.data).await;
    let ok = echo_target(&format!("{net}.10:{port}")).await;
    Lab {
        _relay: relay,
        agent,
        hostile,
        net,
        ok,
    }
}

/// A TCP port free on 127.0.0.1 (the loopback target binds it at once).
async fn loopback_target() -> Target {
    echo_target("127.0.0.1:0").await
}

/// Accepts and hangs up at once: what an old printer does to a TLS 1.2+
/// ClientHello, so the agent falls back to legacy TLS.
async fn hangup_target(addr: &str) -> Target {
    serve_target(addr, |s| async move { drop(s) }).await
}

/// The allowed target answers through the hostile relay.
async fn serves(s: &mut HostileSession, lab_ok: &Target) {
    let host = lab_ok.addr.ip().to_string();
    let mut st = s
        .stream(&host, u32::from(lab_ok.addr.port()), false)
        .await
        .unwrap_or_else(|r| panic!("the allowed target was refused: {r:?}"));
    st.write_all(b"still here\n").await.expect("write");
    let mut back = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), st.read_exact(&mut back))
        .await
        .expect("the allowed target did not answer in time")
        .expect("read");
    assert_eq!(&back, b"still here\n");
    let _ = st.shutdown().await;
}

/// Asks for a stream that must be refused by a policy rule; returns a line
/// for the failure report if it was not.
async fn refused(s: &mut HostileSession, host: &str, port: u32, tls: bool) -> Option<String> {
    match s.stream(host, port, tls).await {
        Ok(_) => Some(format!("{host:?}:{port} tls={tls}: ACCEPTED by the agent")),
        Err(r) if POLICY_RULES.contains(&r.rule()) => {
            println!("{host:?}:{port} tls={tls}: refused, {}", r.rule());
            None
        }
        Err(r) => Some(format!(
            "{host:?}:{port} tls={tls}: refused, but not by the policy before connecting: {r:?}"
        )),
    }
}

/// Every listener count that is not 0, named.
fn reached(targets: &[(&str, &Target)]) -> Vec<String> {
    targets
        .iter()
        .filter(|(_, t)| t.count() > 0)
        .map(|(name, t)| format!("{name} ({}) got {} connection(s)", t.addr, t.count()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_any_notation_never_reach_a_denied_target() {
    let lo = loopback_target().await;
    let port = lo.addr.port();
    let mut lab = lab(port, 161).await;
    let (a, b) = lab.octets();
    let net = lab.net.clone();
    // `.20` is one of the host's own addresses from before the agent
    // starts (inside the allowed /24, so only the own-address rule stops it).
    let own = LoopbackAlias::add(&lab.ip(20));
    let denied = echo_target(&format!("{net}.66:{port}")).await;
    let own_t = echo_target(&format!("{net}.20:{port}")).await;
    let net0 = echo_target(&format!("{net}.0:{port}")).await;
    let bcast = echo_target(&format!("{net}.255:{port}")).await;
    let other_port = echo_target(&format!("{net}.10:0")).await;
    let legacy = hangup_target(&format!("{net}.11:{port}")).await;
    let unix_dir = tempfile::tempdir().expect("tempdir");
    let unix_path = unix_dir.path().join("agent.sock");
    let unix = tokio::net::UnixListener::bind(&unix_path).expect("unix listener");
    let unix_seen = Arc::new(AtomicBool::new(false));
    let seen = unix_seen.clone();
    tokio::spawn(async move {
        if unix.accept().await.is_ok() {
            seen.store(true, Ordering::SeqCst);
        }
    });
    if own.is_none() {
        println!("note: could not add {net}.20 to lo (not root?): the own-address case only checks the refusal");
    }
    // Started now that the own address exists.
    lab.agent.start();
    let mut s = lab.session().await;
    serves(&mut s, &lab.ok).await;

    let m = |h: u8| format!("::ffff:{net}.{h}");
    let int = |h: u8| (u32::from_be_bytes([127, a, b, h])).to_string();
    let hex = |h: u8| format!("0x7f.{a:#x}.{b:#x}.{h:#x}");
    let oct = |h: u8| format!("0177.0{a:o}.0{b:o}.0{h:o}");
    let targets: Vec<String> = [
        // Loopback in every notation getaddrinfo or the parser takes.
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "0177.1",
        "127.0.0.1.",
        "localhost",
        "localhost.",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b::127.0.0.1",
        // Unspecified: connecting to it reaches this host.
        "0.0.0.0",
        "0",
        "::",
        "::ffff:0.0.0.0",
        // Metadata, link-local, multicast, broadcast, reserved.
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "169.254.1.1",
        "fe80::1",
        "fe80::1%lo",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "255.255.255.255",
        "240.0.0.1",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        // The denied host (policy.deny) in every notation.
        lab.ip(66),
        m(66),
        format!("64:ff9b::{net}.66"),
        int(66),
        hex(66),
        oct(66),
        // The agent's own address, the /24's network and broadcast address.
        lab.ip(20),
        m(20),
        int(20),
        lab.ip(0),
        lab.ip(255),
        m(255),
        hex(255),
    ])
    .collect();
    let mut failures = Vec::new();
    for tls in [false, true] {
        for host in &targets {
            failures.extend(refused(&mut s, host, u32::from(port), tls).await);
        }
        // The allowed host on ports the policy does not list, and port
        // numbers that only fit a u32 (one truncates to the allowed port).
        let ok_before = lab.ok.count();
        for p in [
            u32::from(other_port.addr.port()),
            0,
            65_536 + u32::from(port),
            u32::MAX,
        ] {
            failures.extend(refused(&mut s, &lab.ip(10), p, tls).await);
        }
        assert_eq!(
            lab.ok.count(),
            ok_before,
            "a truncated port reached the allowed target"
        );
    }
    let targets_seen = reached(&[
        ("loopback 127.0.0.1", &lo),
        ("denied host .66", &denied),
        ("own address .20", &own_t),
        ("network address .0", &net0),
        ("broadcast address .255", &bcast),
        ("allowed host, unlisted port", &other_port),
    ]);
    none_got_through("attacks", &failures, &targets_seen, &lab.agent.logs());
    serves(&mut s, &lab.ok).await;

    // Legacy TLS: the fallback reconnects to the address already checked
    // (the hang-up target twice: rustls, then OpenSSL), nowhere else.
    let r = s.stream(&lab.ip(11), u32::from(port), true).await;
    assert!(
        matches!(&r, Err(r) if r.rule() == "tls_failed"),
        "{:?}",
        r.as_ref().err()
    );
    assert_eventually!(
        legacy.count() == 2,
        Duration::from_secs(5),
        "rustls then legacy TLS should each connect once, got {}",
        legacy.count()
    );

    // Channel types the agent does not use, and a stream with an
    // originator that is not the relay's: all refused, even toward the
    // allowed target.
    let ok_before = lab.ok.count();
    let unix_str = unix_path.to_string_lossy().to_string();
    for kind in [
        OtherChannel::DirectTcpip {
            host: lab.ip(10),
            port: u32::from(port),
            originator: "127.0.0.1".into(),
            originator_port: 4242,
        },
        OtherChannel::DirectTcpip {
            host: lab.ip(66),
            port: u32::from(port),
            originator: "dwa-relay+legacy".into(),
            originator_port: 1,
        },
        OtherChannel::ForwardedTcpip {
            address: lab.ip(10),
            port: u32::from(port),
        },
        OtherChannel::ForwardedTcpip {
            address: "127.0.0.1".into(),
            port: u32::from(port),
        },
        OtherChannel::Session,
        OtherChannel::X11,
        OtherChannel::AgentForward,
        OtherChannel::DirectStreamlocal(unix_str.clone()),
        OtherChannel::ForwardedStreamlocal(unix_str.clone()),
    ] {
        let what = format!("{kind:?}");
        assert!(
            s.open_other(kind).await.is_err(),
            "the agent accepted {what}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        lab.ok.count(),
        ok_before,
        "an unused channel type reached the allowed target"
    );
    assert_eq!(lo.count(), 0, "an unused channel type reached loopback");
    assert_eq!(
        denied.count(),
        0,
        "an unused channel type reached the denied host"
    );
    assert!(
        !unix_seen.load(Ordering::SeqCst),
        "a streamlocal channel reached a Unix socket"
    );
    serves(&mut s, &lab.ok).await;
    drop(own);
}

/// `ip addr add` after the agent started: the new address is one of the
/// host's own, inside the allowed /24, and the stream opened at once must
/// be refused (found as a hole by this test: the agent used to read its
/// own addresses once, at start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_address_added_after_start_is_still_refused() {
    let lo = loopback_target().await;
    let port = lo.addr.port();
    let mut lab = lab(port, 161).await;
    lab.agent.start();
    let mut s = lab.session().await;
    serves(&mut s, &lab.ok).await;
    let Some(alias) = LoopbackAlias::add(&lab.ip(30)) else {
        println!("skipping: cannot add an address to lo (needs root and iproute2)");
        return;
    };
    let late = echo_target(&format!("{}:{port}", lab.ip(30))).await;
    let r = s.stream(&lab.ip(30), u32::from(port), false).await;
    let d = diag(
        &mut s,
        "late",
        &lab.ip(30),
        params(DiagKind::Http, Some(port), None),
    )
    .await;
    let got = late.count();
    drop(alias);
    assert!(
        matches!(&r, Err(r) if r.rule() == "own_address") && got == 0,
        "an own address added after start: {:?}, {got} connection(s) reached it",
        r.as_ref().err()
    );
    assert!(
        matches!(&d, DiagOutcome::Refused { rule, .. } if rule == "own_address"),
        "a diagnostic at an own address added after start: {d:?}"
    );
    serves(&mut s, &lab.ok).await;
}

/// One diagnostic; waits for its result.
async fn diag(
    s: &mut HostileSession,
    request: &str,
    target: &str,
    diag: DiagRequest,
) -> DiagOutcome {
    s.send(ControlMsg::Diag {
        request: request.to_string(),
        target: target.to_string(),
        diag,
    });
    s.wait_for(
        |m| match m {
            ControlMsg::DiagResult {
                request: r,
                outcome,
            } if r == request => Some(outcome.clone()),
            _ => None,
        },
        Duration::from_secs(15),
    )
    .await
    .unwrap_or_else(|| panic!("no result for diagnostic {request} at {target}"))
}

fn params(kind: DiagKind, port: Option<u16>, tls: Option<bool>) -> DiagRequest {
    DiagRequest::from_params(&DiagParams {
        kind: Some(kind),
        port,
        count: (kind == DiagKind::Ping).then_some(2),
        interval_ms: Some(200),
        timeout_ms: Some(300),
        tls,
        ..DiagParams::default()
    })
    .expect("a valid diagnostic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_and_pushed_scans_never_reach_a_denied_target() {
    let lo = loopback_target().await;
    let port = lo.addr.port();
    let lo_snmp = UdpSink::bind("127.0.0.1:0").await;
    let snmp_port = lo_snmp.addr.port();
    let mut lab = lab(port, snmp_port).await;
    lab.agent.start();
    let net = lab.net.clone();
    let (a, b) = lab.octets();
    let echoes = EchoCounter::start();
    if echoes.is_none() {
        println!("note: no raw ICMP socket (not root?): pings are checked by their refusal only");
    }
    let denied = echo_target(&format!("{net}.66:{port}")).await;
    let bcast = echo_target(&format!("{net}.255:{port}")).await;
    let other_port = echo_target(&format!("{net}.10:0")).await;
    let denied_snmp = UdpSink::bind(&format!("{net}.66:{snmp_port}")).await;
    let net0_snmp = UdpSink::bind(&format!("{net}.0:{snmp_port}")).await;
    let bcast_snmp = UdpSink::bind(&format!("{net}.255:{snmp_port}")).await;
    let sinks = [
        ("loopback 127.0.0.1", &lo_snmp),
        ("denied host .66", &denied_snmp),
        ("network address .0", &net0_snmp),
        ("broadcast address .255", &bcast_snmp),
    ];
    let allowed_snmp = UdpSink::bind(&format!("{net}.10:{snmp_port}")).await;
    let mut s = lab.session().await;
    serves(&mut s, &lab.ok).await;

    // Every diagnostic kind at every denied target, in several notations.
    let kinds = [
        params(DiagKind::Ping, None, None),
        params(DiagKind::Tcp, Some(port), None),
        // No port: "every port of the policy".
        params(DiagKind::Tcp, None, None),
        params(DiagKind::Http, Some(port), Some(false)),
        params(DiagKind::Http, Some(port), Some(true)),
        params(DiagKind::Ipp, Some(port), None),
        params(DiagKind::Pjl, Some(port), None),
    ];
    let targets = [
        "127.0.0.1".to_string(),
        "0x7f.1".into(),
        "2130706433".into(),
        "::ffff:127.0.0.1".into(),
        "64:ff9b::7f00:1".into(),
        "localhost".into(),
        "0.0.0.0".into(),
        "169.254.169.254".into(),
        "224.0.0.1".into(),
        "255.255.255.255".into(),
        lab.ip(66),
        format!("0x7f.{a:#x}.{b:#x}.0x42"),
        format!("::ffff:{net}.66"),
        lab.ip(255),
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for t in &targets {
        for k in &kinds {
            n += 1;
            match diag(&mut s, &format!("d{n}"), t, k.clone()).await {
                DiagOutcome::Refused { rule, .. } if POLICY_RULES.contains(&rule.as_str()) => {}
                other => failures.push(format!("{:?} at {t:?}: {other:?}", k.kind)),
            }
        }
    }
    // The allowed host on a port the policy does not list.
    let p2 = other_port.addr.port();
    for k in [
        params(DiagKind::Http, Some(p2), None),
        params(DiagKind::Ipp, Some(p2), None),
        params(DiagKind::Pjl, Some(p2), None),
    ] {
        n += 1;
        match diag(&mut s, &format!("d{n}"), &lab.ip(10), k.clone()).await {
            DiagOutcome::Refused { rule, .. } if rule == "port_not_allowed" => {}
            other => failures.push(format!(
                "{:?} at the allowed host, port {p2}: {other:?}",
                k.kind
            )),
        }
    }
    n += 1;
    let tcp = diag(
        &mut s,
        &format!("d{n}"),
        &lab.ip(10),
        params(DiagKind::Tcp, Some(p2), None),
    )
    .await;
    println!("tcp diagnostic at an unlisted port: {tcp:?}");
    // A request outside the protocol's bounds, at the allowed host.
    let mut wild = params(DiagKind::Ping, None, None);
    wild.count = 100_000;
    wild.interval_ms = 0;
    n += 1;
    let o = diag(&mut s, &format!("d{n}"), &lab.ip(10), wild).await;
    if !matches!(o, DiagOutcome::Failed { .. }) {
        failures.push(format!("an out-of-bounds ping was run: {o:?}"));
    }
    // A flood at the denied host: refused or turned away as busy.
    for i in 0..50 {
        s.send(ControlMsg::Diag {
            request: format!("flood{i}"),
            target: lab.ip(66),
            diag: params(DiagKind::Ping, None, None),
        });
    }
    for i in 0..50 {
        let want = format!("flood{i}");
        let o = s
            .wait_for(
                |m| match m {
                    ControlMsg::DiagResult { request, outcome } if *request == want => {
                        Some(outcome.clone())
                    }
                    _ => None,
                },
                Duration::from_secs(15),
            )
            .await;
        match o {
            Some(DiagOutcome::Refused { .. }) | Some(DiagOutcome::Failed { .. }) => {}
            other => failures.push(format!("flooded ping {i}: {other:?}")),
        }
    }
    let mut seen = reached(&[
        ("loopback 127.0.0.1", &lo),
        ("denied host .66", &denied),
        ("broadcast address .255", &bcast),
        ("allowed host, unlisted port", &other_port),
    ]);
    if let Some(e) = &echoes {
        for dst in ["127.0.0.1", &lab.ip(66), &lab.ip(255), &lab.ip(10)] {
            if e.count(dst) > 0 {
                seen.push(format!(
                    "{} ICMP echo request(s) reached {dst}",
                    e.count(dst)
                ));
            }
        }
    }
    assert!(
        failures.is_empty() && seen.is_empty(),
        "diagnostics that got through:\n{}\n{}",
        failures.join("\n"),
        seen.join("\n")
    );
    serves(&mut s, &lab.ok).await;

    // Pushed scan settings aimed everywhere: only what lies inside the
    // ceiling is kept, and the scan skips the denied addresses in it.
    let wanted: Vec<String> = [
        "127.0.0.1",
        "127.0.0.0/8",
        "0.0.0.0/0",
        "0x7f.1",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "224.0.0.1",
        "255.255.255.255",
    ]
    .map(String::from)
    .into_iter()
    .chain([lab.ip(66), lab.ip(255), format!("{net}.0/24")])
    .collect();
    s.send(ControlMsg::ScanConfig(ScanSettings {
        ranges: Some(wanted),
        interval_secs: Some(0),
    }));
    let applied = s
        .wait_for(
            |m| match m {
                ControlMsg::ScanConfigApplied(a) => Some(a.clone()),
                _ => None,
            },
            Duration::from_secs(10),
        )
        .await
        .expect("the agent's answer to the pushed settings");
    assert_eq!(applied.ranges, [format!("{net}.0/24")], "{applied:?}");
    assert!(
        applied.interval_secs >= 60,
        "interval not clamped: {applied:?}"
    );
    // A flood of "scan now": one scan.
    for i in 0..100 {
        s.send(ControlMsg::ScanNow {
            request: format!("flood{i}"),
        });
    }
    assert_eventually!(
        scans_spooled(&lab.agent) >= 1,
        Duration::from_secs(40),
        "the requested scan did not run\n{}",
        lab.agent.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        scans_spooled(&lab.agent),
        1,
        "a scan-now flood ran more than one scan"
    );
    assert!(allowed_snmp.count() > 0, "the allowed host was not scanned");
    let reached_udp: Vec<String> = sinks
        .iter()
        .filter(|(_, s)| s.count() > 0)
        .map(|(n, s)| format!("{n}: {} SNMP datagram(s)", s.count()))
        .collect();
    assert!(
        reached_udp.is_empty(),
        "pushed scans reached: {reached_udp:?}"
    );
    serves(&mut s, &lab.ok).await;
}

/// Scans the agent spooled because the relay asked.
fn scans_spooled(agent: &Agent) -> usize {
    agent
        .logs()
        .lines()
        .filter(|l| l.contains("scan spooled") && l.contains("relay:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_control_frames_leave_the_agent_serving() {
    let lo = loopback_target().await;
    let port = lo.addr.port();
    let mut lab = lab(port, 161).await;
    lab.agent.start();
    let mut s = lab.session().await;
    serves(&mut s, &lab.ok).await;

    // Unsolicited messages, each well formed: ignored, the session stays.
    let hello = s.hello.clone().expect("hello");
    for m in [
        ControlMsg::Hello(Hello {
            allow: vec!["0.0.0.0/0".into()],
            ports: vec![22],
            ..hello
        }),
        ControlMsg::Welcome {
            relay_version: "x".into(),
            window: u32::MAX,
        },
        ControlMsg::Credit {
            stream: 999,
            bytes: u32::MAX,
        },
        ControlMsg::Denied(Denial {
            stream: 1,
            host: "127.0.0.1".into(),
            port,
            rule: "allowed".into(),
            reason: "trust me".into(),
        }),
        ControlMsg::TlsInfo(TlsInfo {
            stream: 1,
            cert_sha256: "00".into(),
            version: "TLSv1_3".into(),
            cipher: "none".into(),
        }),
        ControlMsg::DiagResult {
            request: "nobody asked".into(),
            outcome: DiagOutcome::Failed { reason: "x".into() },
        },
        ControlMsg::ScanConfigApplied(ScanApplied::default()),
        ControlMsg::Pong { seq: 7 },
    ] {
        assert!(s.send(m));
    }
    // Raw bytes below must not interleave with frames still queued.
    assert!(s.send(ControlMsg::Ping { seq: 40 }));
    let pong = s
        .wait_for(
            |m| matches!(m, ControlMsg::Pong { seq: 40 }).then_some(()),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        pong.is_some(),
        "no pong after unsolicited messages\n{}",
        lab.agent.logs()
    );
    // Extended data (stderr) on the control channel is not control data.
    let _ = s
        .handle
        .extended_data(s.control_channel(), 1, b"\x00\x00\x00\x03{x}".to_vec())
        .await;
    // A ping written one byte per SSH packet is still one ping.
    let frame = dwa_proto::control::encode(&ControlMsg::Ping { seq: 41 });
    for byte in frame {
        assert!(s.send_raw(vec![byte]).await);
    }
    let pong = s
        .wait_for(
            |m| matches!(m, ControlMsg::Pong { seq: 41 }).then_some(()),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        pong.is_some(),
        "no pong for a byte-by-byte ping\n{}",
        lab.agent.logs()
    );
    // A ping flood in one write: answered as far as the queue goes.
    let flood: Vec<u8> = (0..20_000u64)
        .flat_map(|seq| dwa_proto::control::encode(&ControlMsg::Ping { seq: 1_000 + seq }))
        .collect();
    assert!(s.send_raw(flood).await);
    serves(&mut s, &lab.ok).await;
    assert!(
        !s.ended(Duration::from_millis(200)).await,
        "an unsolicited message ended the session"
    );

    // Broken frames end the session (the stream is out of sync); the agent
    // reconnects and serves again after each.
    let max = dwa_proto::control::MAX_FRAME;
    let mut oversized = ((max + 1) as u32).to_be_bytes().to_vec();
    oversized.extend(vec![b'A'; max + 1]);
    let mut endless = u32::MAX.to_be_bytes().to_vec();
    endless.extend(vec![0xffu8; 4096]);
    let body = br#"{"type":"launch_missiles","target":"127.0.0.1"}"#;
    let mut unknown = (body.len() as u32).to_be_bytes().to_vec();
    unknown.extend_from_slice(body);
    let body = br#"{"type":"diag","request":7}"#;
    let mut mistyped = (body.len() as u32).to_be_bytes().to_vec();
    mistyped.extend_from_slice(body);
    let attacks: [(&str, Vec<u8>); 5] = [
        ("oversized frame", oversized),
        ("4 GiB length prefix", endless),
        ("garbage JSON", b"\x00\x00\x00\x05{x:1}".to_vec()),
        ("unknown message type", unknown),
        ("wrong field types", mistyped),
    ];
    for (what, bytes) in attacks {
        assert!(s.send_raw(bytes).await, "{what}: could not send");
        assert!(
            s.ended(Duration::from_secs(10)).await,
            "{what}: the agent kept a session whose control stream is out of sync"
        );
        s = lab.session().await;
        serves(&mut s, &lab.ok).await;
    }
    assert_eq!(lo.count(), 0, "a control frame reached loopback");
}

/// dnsmasq answering from hosts files only, on port 53 of `addr` (the
/// agent's system resolver cannot be given a port). SIGHUP re-reads them.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(addr: &str, hosts: &[&Path]) -> Dnsmasq {
        let mut cmd = Command::new("/usr/sbin/dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--user=root",
            "--local-ttl=0",
        ])
        .arg(format!("--listen-address={addr}"));
        for h in hosts {
            cmd.arg(format!("--addn-hosts={}", h.display()));
        }
        Dnsmasq(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq"),
        )
    }

    fn reload(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGHUP);
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flipping name's hosts file: rewrite, then make dnsmasq re-read it.
struct Flip {
    path: std::path::PathBuf,
    dns: Arc<Dnsmasq>,
}

impl Flip {
    fn set(&self, addr: &str) {
        std::fs::write(&self.path, format!("{addr} flip.lab.test\n")).expect("write hosts");
        self.dns.reload();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_a_real_dns_server_are_checked_after_resolution() {
    if !Path::new("/usr/sbin/dnsmasq").exists() {
        println!("skipping: dnsmasq not installed (scripts/test.sh installs dnsmasq-base)");
        return;
    }
    let unshare_ok = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !unshare_ok {
        println!("skipping: no private mount namespace (unshare -m) for the agent's resolv.conf");
        return;
    }
    let lo = loopback_target().await;
    let port = lo.addr.port();
    let mut lab = lab(port, 161).await;
    let net = lab.net.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let resolv = tmp.path().join("resolv.conf");
    let names = tmp.path().join("names.hosts");
    let flip_path = tmp.path().join("flip.hosts");
    // The agent's own resolv.conf, in a mount namespace of its own: glibc
    // asks port 53 only, so dnsmasq listens on port 53 of <net>.53.
    std::fs::write(
        &resolv,
        format!("nameserver {net}.53\noptions timeout:1 attempts:2\n"),
    )
    .expect("resolv.conf");
    std::fs::write(
        &names,
        [
            format!("{net}.10 ok.lab.test"),
            format!("{net}.66 denied.lab.test"),
            "127.0.0.1 loop.lab.test".into(),
            "0.0.0.0 zero.lab.test".into(),
            "169.254.169.254 meta.lab.test".into(),
            "::ffff:127.0.0.1 mapped.lab.test".into(),
            "64:ff9b::7f00:1 nat64.lab.test".into(),
            format!("::ffff:{net}.66 mapped-denied.lab.test"),
            format!("{net}.255 bcast.lab.test"),
            // Two answers: the denied one first.
            format!("{net}.66 mixed.lab.test"),
            format!("{net}.10 mixed.lab.test"),
        ]
        .join("\n")
            + "\n",
    )
    .expect("hosts");
    std::fs::write(&flip_path, format!("{net}.10 flip.lab.test\n")).expect("hosts");
    let dns = Arc::new(Dnsmasq::start(&format!("{net}.53"), &[&names, &flip_path]));
    let flip = Arc::new(Flip {
        path: flip_path.clone(),
        dns: dns.clone(),
    });
    let denied = echo_target(&format!("{net}.66:{port}")).await;
    let bcast = echo_target(&format!("{net}.255:{port}")).await;
    let resolv_s = resolv.to_string_lossy().to_string();
    lab.agent.start_wrapped(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        &resolv_s,
    ]);
    let mut s = lab.session().await;
    // dnsmasq answers once it is up; the allowed name proves both ends.
    let mut up = false;
    for _ in 0..50 {
        if s.stream("ok.lab.test", u32::from(port), false)
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "ok.lab.test never resolved for the agent\n{}",
        lab.agent.logs()
    );
    serves(&mut s, &lab.ok).await;

    let mut failures = Vec::new();
    for tls in [false, true] {
        for name in [
            "denied.lab.test",
            "loop.lab.test",
            "zero.lab.test",
            "meta.lab.test",
            "mapped.lab.test",
            "nat64.lab.test",
            "mapped-denied.lab.test",
            "bcast.lab.test",
            "nx.lab.test",
        ] {
            failures.extend(refused(&mut s, name, u32::from(port), tls).await);
        }
    }
    // Denied and allowed answers together: only the allowed one is used.
    let before = lab.ok.count();
    let mut st = s
        .stream("mixed.lab.test", u32::from(port), false)
        .await
        .unwrap_or_else(|r| panic!("mixed.lab.test: {r:?}"));
    st.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), st.read_exact(&mut one))
        .await
        .expect("echo")
        .expect("read");
    assert_eq!(
        lab.ok.count(),
        before + 1,
        "mixed.lab.test did not go to the allowed address"
    );
    // Diagnostics by name.
    for (i, k) in [
        params(DiagKind::Ping, None, None),
        params(DiagKind::Tcp, Some(port), None),
        params(DiagKind::Http, Some(port), None),
    ]
    .into_iter()
    .enumerate()
    {
        for name in ["denied.lab.test", "loop.lab.test", "meta.lab.test"] {
            match diag(&mut s, &format!("n{i}{name}"), name, k.clone()).await {
                DiagOutcome::Refused { .. } => {}
                other => failures.push(format!("{:?} at {name}: {other:?}", k.kind)),
            }
        }
    }

    // The flipping name: each answer is checked when it is used.
    flip.set(&lab.ip(66));
    tokio::time::sleep(Duration::from_millis(300)).await;
    match s.stream("flip.lab.test", u32::from(port), false).await {
        Err(r) if r.rule() == "deny_list" => {}
        other => failures.push(format!("flip.lab.test -> .66: {:?}", other.err())),
    }
    flip.set(&lab.ip(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(r) = s.stream("flip.lab.test", u32::from(port), false).await {
        failures.push(format!("flip.lab.test -> .10 refused: {r:?}"));
    }
    // Flipping under load: no stream may land on the denied answer.
    let flipper = {
        let flip = flip.clone();
        let (ok, bad) = (lab.ip(10), lab.ip(66));
        tokio::spawn(async move {
            for i in 0..60 {
                flip.set(if i % 2 == 0 { &bad } else { &ok });
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let (mut opened, mut refusals) = (0, 0);
    for _ in 0..30 {
        match s.stream("flip.lab.test", u32::from(port), false).await {
            Ok(_) => opened += 1,
            Err(r) if r.rule() == "deny_list" || r.rule() == "resolve_failed" => refusals += 1,
            Err(r) => failures.push(format!("flip.lab.test under flipping: {r:?}")),
        }
    }
    let _ = flipper.await;
    println!("flipping name: {opened} streams opened (to .10), {refusals} refused");

    // Legacy TLS after a flip: the hang-up target flips the answer to the
    // denied host before it hangs up, so a fallback that resolved again
    // would land there; it must reconnect to the checked address.
    flip.set(&lab.ip(11));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flipped = Arc::new(AtomicBool::new(false));
    let legacy = {
        let (flip, flipped, bad) = (flip.clone(), flipped.clone(), lab.ip(66));
        serve_target(&format!("{}:{port}", lab.ip(11)), move |sock| {
            let (flip, flipped, bad) = (flip.clone(), flipped.clone(), bad.clone());
            async move {
                if !flipped.swap(true, Ordering::SeqCst) {
                    flip.set(&bad);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                drop(sock);
            }
        })
        .await
    };
    let r = s.stream("flip.lab.test", u32::from(port), true).await;
    assert!(
        matches!(&r, Err(r) if r.rule() == "tls_failed"),
        "{:?}",
        r.as_ref().err()
    );
    assert_eventually!(
        legacy.count() == 2,
        Duration::from_secs(5),
        "rustls then legacy TLS should each reach the checked address once, got {}",
        legacy.count()
    );

    let seen = reached(&[
        ("loopback 127.0.0.1", &lo),
        ("denied host .66", &denied),
        ("broadcast address .255", &bcast),
    ]);
    none_got_through("name attacks", &failures, &seen, &lab.agent.logs());
    serves(&mut s, &lab.ok).await;
    drop(dns);
}

/// Fails naming every attack that got through: refusals that did not come
/// (`failures`) and targets that saw traffic (`seen`).
fn none_got_through(what: &str, failures: &[String], seen: &[String], log: &str) {
    assert!(
        failures.is_empty() && seen.is_empty(),
        "{what} that got through:\n{}\n{}\nagent log:\n{log}",
        failures.join("\n"),
        seen.join("\n"),
    );
}
