//! Host names and NetBIOS names, against real peers on loopback:
//! - dnsmasq (Debian) serves the lab's names: a scan target given as a
//!   host name is resolved, checked by the policy, and its record carries
//!   the target name; PTR names come from dnsmasq too (asked for a
//!   documentation address: a loopback one is "localhost", RFC 6761);
//! - the fleet simulator answers NetBIOS node status requests, and Samba's
//!   `nmblookup -A` (the real reader) reads its answers;
//! - Samba's `nmbd` (a real responder) answers the agent's request.
//!
//! Each peer is started here in a temp dir and stopped at the end; a test
//! whose peer is not installed says so and skips (scripts/test.sh installs
//! them). Addresses: 127.22.0.x, 127.22.1.x, 127.22.2.x.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwa_agent::telemetry::names::{resolve_targets, Names};
use dwa_agent::telemetry::netbios::{self, NetbiosOptions};
use dwa_policy::agent::{AgentPolicy, PolicyConfig};
use dwa_proto::telemetry::DeviceRecord;
use dwa_sim::{Fleet, FleetConfig, SnmpOptions};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn free_udp_port(on: &str) -> u16 {
    let s = UdpSocket::bind(format!("{on}:0")).expect("bind");
    s.local_addr().expect("addr").port()
}

fn installed(path: &str) -> bool {
    Path::new(path).exists()
}

/// A child process killed (and reaped) when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq answering only from its own records (no upstream, no hosts file).
fn dnsmasq(port: u16, records: &[(&str, &str)]) -> Peer {
    let mut cmd = Command::new("/usr/sbin/dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
        "--user=root",
        &format!("--port={port}"),
    ]);
    for (name, addr) in records {
        cmd.arg(format!("--host-record={name},{addr}"));
    }
    Peer(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    )
}

async fn resolves(names: &Names, host: &str) -> Result<Vec<IpAddr>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match names.resolve(host).await {
            Ok(a) => return Ok(a),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn policy(allow: &[&str]) -> AgentPolicy {
    let cfg = PolicyConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ..PolicyConfig::default()
    };
    AgentPolicy::from_config(&cfg, vec![]).expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_name_targets_are_resolved_checked_and_named() {
    if !installed("/usr/sbin/dnsmasq") {
        println!("skipping: dnsmasq not installed (scripts/test.sh installs dnsmasq-base)");
        return;
    }
    let dns_port = free_udp_port("127.0.0.1");
    let _dns = dnsmasq(
        dns_port,
        &[
            ("mfp-a.lab.test", "127.22.0.1"),
            // A documentation address (RFC 5737): only its PTR is asked, of
            // dnsmasq; nothing is ever sent to it.
            ("mfp-doc.lab.test", "192.0.2.10"),
            ("outside.lab.test", "127.22.9.9"),
        ],
    );
    let server = SocketAddr::new(ip("127.0.0.1"), dns_port);
    let names = Names::new(&[server]).expect("resolver");
    assert_eq!(
        resolves(&names, "mfp-a.lab.test")
            .await
            .expect("dnsmasq answers"),
        [ip("127.22.0.1")]
    );
    // PTR: dnsmasq's host-record gives the reverse too; none for .11.
    // Loopback addresses have none (127.in-addr.arpa is "localhost").
    assert_eq!(
        names.reverse(ip("192.0.2.10")).await.as_deref(),
        Some("mfp-doc.lab.test")
    );
    assert_eq!(names.reverse(ip("192.0.2.11")).await, None);
    assert_eq!(names.reverse(ip("127.22.0.1")).await, None);

    // The policy decides after resolution: outside.lab.test resolves, but
    // to an address outside the allowed range; a name that does not
    // resolve is reported, and plain ranges pass through.
    let p = policy(&["127.22.0.0/24"]);
    let targets: Vec<String> = [
        "mfp-a.lab.test",
        "outside.lab.test",
        "nope.lab.test",
        "127.22.0.2",
    ]
    .map(String::from)
    .to_vec();
    let r = resolve_targets(&names, Some(&p), &targets).await;
    assert_eq!(r.ranges, ["127.22.0.1", "127.22.0.2"]);
    assert_eq!(r.names, [(ip("127.22.0.1"), "mfp-a.lab.test".to_string())]);
    let refused: Vec<&str> = r.refused.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(refused, ["outside.lab.test (127.22.9.9)", "nope.lab.test"]);
    assert!(r.refused[0].1.contains("policy"), "{:?}", r.refused);

    // The real binary: scan by name; NetBIOS from the simulator.
    let fleet = Fleet::start(FleetConfig {
        netbios_port: Some(0),
        ..FleetConfig::snmp(
            vec![ip("127.22.0.1"), ip("127.22.0.2")],
            SnmpOptions::default(),
        )
    })
    .await
    .expect("fleet");
    let snmp = fleet.snmp_port.expect("snmp port");
    let nb = fleet.netbios_port.expect("netbios port");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dwa-agent"))
            .args(["scan", "mfp-a.lab.test", "127.22.0.2", "--format", "json"])
            .args([
                "--port",
                &snmp.to_string(),
                "--netbios-port",
                &nb.to_string(),
            ])
            .args(["--dns-server", &server.to_string(), "--timeout", "500ms"])
            .env("DWA_LOG", "warn")
            .output()
            .expect("run dwa-agent")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<DeviceRecord> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(recs.len(), 2, "{recs:?}");
    let (a, b) = (&recs[0], &recs[1]);
    assert_eq!(a.address, "127.22.0.1");
    assert_eq!(a.target_name.as_deref(), Some("mfp-a.lab.test"));
    assert_eq!(a.dns_name, None, "a loopback address has no PTR name");
    assert_eq!(a.netbios_name, fleet.printers[0].netbios_name);
    assert!(a.netbios_name.is_some());
    assert_eq!(b.target_name, None);
    assert_eq!(b.netbios_name, fleet.printers[1].netbios_name);
    assert_ne!(a.netbios_name, b.netbios_name);

    // Without NetBIOS: the names stay empty and nothing is asked.
    let out = Command::new(env!("CARGO_BIN_EXE_dwa-agent"))
        .args([
            "scan",
            "127.22.0.2",
            "--format",
            "json",
            "--no-netbios",
            "--no-dns-names",
        ])
        .args(["--port", &snmp.to_string()])
        .output()
        .expect("run dwa-agent");
    let recs: Vec<DeviceRecord> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (recs[0].netbios_name.as_deref(), recs[0].dns_name.as_deref()),
        (None, None)
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmblookup_reads_the_simulators_node_status() {
    if !installed("/usr/bin/nmblookup") {
        println!("skipping: nmblookup not installed (scripts/test.sh installs samba-common-bin)");
        return;
    }
    // nmblookup asks port 137 only: the simulated printer must be there.
    let fleet = match Fleet::start(FleetConfig {
        netbios_port: Some(netbios::PORT),
        ..FleetConfig::snmp(vec![ip("127.22.1.1")], SnmpOptions::default())
    })
    .await
    {
        Ok(f) => f,
        Err(e) => {
            println!("skipping: cannot bind 127.22.1.1:137 ({e}); needs root");
            return;
        }
    };
    let want = fleet.printers[0].netbios_name.clone().expect("name");
    let mac = fleet.printers[0]
        .snmp
        .as_ref()
        .expect("snmp")
        .identity
        .mac
        .replace(':', "-")
        .to_ascii_uppercase();
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("smb.conf");
    std::fs::write(&conf, "[global]\n").expect("smb.conf");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/nmblookup")
            .arg("-s")
            .arg(&conf)
            .args(["-A", "127.22.1.1"])
            .output()
            .expect("run nmblookup")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line_of = |suffix: &str| {
        text.lines()
            .find(|l| l.contains(&want) && l.contains(suffix))
            .unwrap_or_else(|| panic!("no {want} {suffix} in:\n{text}"))
            .to_string()
    };
    assert!(line_of("<00>").contains("<ACTIVE>"), "{text}");
    assert!(!line_of("<00>").contains("<GROUP>"), "{text}");
    assert!(line_of("<20>").contains("<ACTIVE>"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("WORKGROUP") && l.contains("<GROUP>")),
        "{text}"
    );
    assert!(text.contains(&format!("MAC Address = {mac}")), "{text}");

    // The agent's own request reads the same answer.
    let opts = NetbiosOptions {
        port: netbios::PORT,
        timeout: Duration::from_millis(500),
        retries: 1,
    };
    let got = netbios::query(Ipv4Addr::new(127, 22, 1, 1), opts).await;
    assert_eq!(got.as_deref(), Some(want.as_str()));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmbd_answers_the_agents_node_status_request() {
    if !installed("/usr/sbin/nmbd") {
        println!("skipping: nmbd not installed (scripts/test.sh installs samba)");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    for sub in ["lock", "state", "cache", "private", "pid", "log"] {
        std::fs::create_dir_all(d.join(sub)).expect("dir");
    }
    let conf = d.join("smb.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nnetbios name = DWANMBDTEST\nworkgroup = DWALAB\n\
             interfaces = 127.22.2.1/8\nbind interfaces only = yes\n\
             lock directory = {0}/lock\nstate directory = {0}/state\n\
             cache directory = {0}/cache\nprivate dir = {0}/private\n\
             pid directory = {0}/pid\nncalrpc dir = {0}/lock\n\
             log file = {0}/log/nmbd.log\n",
            d.display()
        ),
    )
    .expect("smb.conf");
    let port = free_udp_port("127.22.2.1");
    let _nmbd = Peer(
        Command::new("/usr/sbin/nmbd")
            .args([
                "--foreground",
                "--no-process-group",
                "-p",
                &port.to_string(),
            ])
            .arg("-s")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nmbd"),
    );
    let opts = NetbiosOptions {
        port,
        timeout: Duration::from_millis(300),
        retries: 0,
    };
    // nmbd registers its names a moment after it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let name = loop {
        if let Some(n) = netbios::query(Ipv4Addr::new(127, 22, 2, 1), opts).await {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "nmbd did not answer; its log:\n{}",
            std::fs::read_to_string(d.join("log/nmbd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(name, "DWANMBDTEST");
    // No answer from an address where nothing listens.
    assert_eq!(
        netbios::query(Ipv4Addr::new(127, 22, 2, 9), opts).await,
        None
    );
}
