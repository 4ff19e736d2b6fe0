//! `dwa-agent scan` against real printer walks served by snmpsim over UDP on
//! loopback: the values the decoder tests assert for these walks must come
//! through real SNMP unchanged. Skips (with a message) when the shared
//! fixtures or the snmpsim venv at /opt/snmpsim are missing.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/snmprec");
const RESPONDER: &str = "/opt/snmpsim/bin/snmpsim-command-responder";

struct Sim {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    _cache: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address of our own, so parallel test runs do not collide.
fn loopback(last: u8) -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 100 + (pid % 100) as u8, (pid / 100 % 250) as u8, last)
}

fn start_snmpsim() -> Option<Sim> {
    let data = Path::new(FIXTURES);
    if !data.join("jetdirect_m880.snmprec").is_file() {
        eprintln!("SKIP: shared fixtures not found at {}", data.display());
        return None;
    }
    if !Path::new(RESPONDER).is_file() {
        eprintln!("SKIP: {RESPONDER} missing (scripts/test.sh installs snmpsim)");
        return None;
    }
    let ip = loopback(1);
    let port = UdpSocket::bind((ip, 0))
        .expect("bind loopback")
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        cache.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let data: PathBuf = data.canonicalize().unwrap();
    let child = Command::new(RESPONDER)
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--cache-dir={}", cache.path().display()))
        .arg(format!("--agent-udpv4-endpoint={ip}:{port}"))
        .args(["--process-user=nobody", "--process-group=nogroup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start snmpsim");
    let sim = Sim {
        child,
        ip,
        port,
        _cache: cache,
    };
    // Wait until it answers a GET of sysDescr.
    let deadline = Instant::now() + Duration::from_secs(60);
    let oid = snmp2::Oid::from(&[1, 3, 6, 1, 2, 1, 1, 1, 0]).unwrap();
    loop {
        let mut s = snmp2::SyncSession::new_v2c(
            SocketAddr::from((ip, port)),
            b"jetdirect_m880",
            Some(Duration::from_millis(500)),
            1,
        )
        .unwrap();
        if s.get(&oid).is_ok() {
            return Some(sim);
        }
        assert!(Instant::now() < deadline, "snmpsim did not answer in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dwa-agent"))
        .args(args)
        .env("DWA_LOG", "warn")
        .output()
        .expect("run dwa-agent")
}

fn scan_json(sim: &Sim, communities: &[&str], extra: &[&str]) -> Vec<Json> {
    let ip = sim.ip.to_string();
    let port = sim.port.to_string();
    let mut args = vec!["scan", ip.as_str(), "--port", port.as_str()];
    for c in communities {
        args.extend(["--community", c]);
    }
    args.extend(["--format", "json"]);
    if !extra.contains(&"--timeout") {
        args.extend(["--timeout", "2s"]);
    }
    args.extend(extra);
    let out = agent(&args);
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Json>(&out.stdout)
        .expect("JSON output")
        .as_array()
        .expect("a JSON array")
        .clone()
}

struct Expect {
    community: &'static str,
    vendor: &'static str,
    model: &'static str,
    serial: Option<&'static str>,
    total: Option<u64>,
    /// (supply index, level value)
    black: (u64, i64),
}

/// The same values `telemetry_walks.rs` asserts for these walks.
const EXPECT: &[Expect] = &[
    Expect {
        community: "jetdirect_m880",
        vendor: "HP",
        model: "HP Color LaserJet flow MFP M880",
        serial: None,
        total: None,
        black: (1, 92),
    },
    Expect {
        community: "ricoh_mpc3002",
        vendor: "Ricoh",
        model: "RICOH Aficio MP C3002",
        serial: Some("W492KB03439"),
        total: Some(271_871),
        black: (1, 40),
    },
    Expect {
        community: "jetdirect_m130nw",
        vendor: "HP",
        model: "HP LaserJet MFP M130nw",
        serial: Some("VNCRC48198"),
        total: Some(15232),
        black: (1, 28),
    },
    Expect {
        community: "konica_c250i",
        vendor: "Konica Minolta",
        model: "KONICA MINOLTA bizhub C250i",
        serial: Some("AA2M021115700"),
        total: Some(33810),
        black: (4, 86),
    },
    Expect {
        community: "xerox",
        vendor: "Xerox",
        model: "AltaLink C8045",
        serial: None,
        total: None,
        black: (1, 1060),
    },
];

fn check(rec: &Json, e: &Expect, address: &str) {
    let name = e.community;
    assert_eq!(rec["address"], address, "{name}");
    assert_eq!(rec["manufacturer"], e.vendor, "{name}");
    assert_eq!(rec["model"], e.model, "{name}");
    assert_eq!(rec["serial"].as_str(), e.serial, "{name}");
    assert_eq!(rec["counters"]["total"].as_u64(), e.total, "{name}");
    let supply = rec["supplies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["index"].as_u64() == Some(e.black.0))
        .unwrap_or_else(|| panic!("{name}: no supply {}", e.black.0));
    assert_eq!(supply["colour"], "black", "{name}");
    assert_eq!(supply["level"]["kind"], "value", "{name}");
    assert_eq!(supply["level"]["value"].as_i64(), Some(e.black.1), "{name}");
}

#[test]
fn scan_against_snmpsim() {
    let Some(sim) = start_snmpsim() else { return };
    let started = Instant::now();
    let address = sim.ip.to_string();

    // One community each: the walk through real SNMP decodes like the file.
    for e in EXPECT {
        let recs = scan_json(&sim, &[e.community], &[]);
        assert_eq!(recs.len(), 1, "{}: {recs:?}", e.community);
        check(&recs[0], e, &address);
    }

    // Communities are tried in order; the first that answers wins.
    let recs = scan_json(&sim, &["jetdirect_m880", "ricoh_mpc3002"], &[]);
    assert_eq!(recs.len(), 1);
    check(&recs[0], &EXPECT[0], &address);
    let recs = scan_json(
        &sim,
        &["wrong", "ricoh_mpc3002"],
        &["--timeout", "300ms", "--retries", "0"],
    );
    assert_eq!(recs.len(), 1);
    check(&recs[0], &EXPECT[1], &address);

    // A wrong community: snmpsim stays silent; no device, bounded time
    // (v2c then v1, each timeout × (retries + 1)).
    let t = Instant::now();
    let recs = scan_json(&sim, &["wrong"], &["--timeout", "300ms", "--retries", "1"]);
    assert!(recs.is_empty(), "{recs:?}");
    assert!(
        t.elapsed() < Duration::from_millis(2 * 300 * 2 + 1500),
        "took {:?}",
        t.elapsed()
    );

    // Table and CSV carry the same device.
    let port = sim.port.to_string();
    let out = agent(&[
        "scan",
        &address,
        "--port",
        &port,
        "--community",
        "ricoh_mpc3002",
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().nth(1).expect("one device row");
    for word in [
        address.as_str(),
        "Ricoh",
        "W492KB03439",
        "271871",
        "00:26:73:54:e2:6a",
    ] {
        assert!(line.contains(word), "{word} missing in {table}");
    }
    let out = agent(&[
        "scan",
        &address,
        "--port",
        &port,
        "--community",
        "ricoh_mpc3002",
        "--format",
        "csv",
    ]);
    assert!(out.status.success());
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut lines = csv.lines();
    let head = lines.next().unwrap();
    assert!(head.starts_with("address,name,manufacturer,model,serial,mac"));
    assert!(head.contains("Black Toner (black)"), "{head}");
    let row = lines.next().expect("one device row");
    assert!(row.starts_with(&format!("{address},")), "{row}");
    assert!(
        row.contains("W492KB03439") && row.contains(",271871,"),
        "{row}"
    );
    assert!(lines.next().is_none());

    // The global --json means --format json.
    let out = agent(&[
        "--json",
        "scan",
        &address,
        "--port",
        &port,
        "--community",
        "konica_c250i",
    ]);
    let recs: Vec<Json> = serde_json::from_slice(&out.stdout).expect("JSON");
    check(&recs[0], &EXPECT[3], &address);

    eprintln!("snmpsim scan tests took {:?}", started.elapsed());
}

#[test]
fn silent_address_yields_no_device_in_bounded_time() {
    // Nothing listens here (a loopback address of our own, no simulator).
    let ip = loopback(2).to_string();
    let t = Instant::now();
    let out = agent(&[
        "scan",
        &ip,
        "--port",
        "16161",
        "--timeout",
        "300ms",
        "--retries",
        "1",
        "--format",
        "json",
    ]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Json> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(recs.is_empty());
    // timeout × (retries + 1), for v2c and v1, plus slack for process start.
    assert!(
        took < Duration::from_millis(2 * 300 * 2 + 1500),
        "took {took:?}"
    );
}

#[test]
fn bad_range_is_a_one_line_error() {
    // Loopback only: a bug here must not send anything anywhere else
    // (multicast/broadcast rejection is unit-tested in scan.rs).
    for bad in [
        "127.0.0.20-10",
        "127.0.0.0/8",
        // Neither an address nor a host name (a name would be resolved).
        "not an ip",
        "127.0.1.5-127.0.0.1",
    ] {
        let out = agent(&["scan", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{bad}: {err}");
        assert!(err.starts_with("error: "), "{bad}: {err}");
        assert!(out.stdout.is_empty(), "{bad}");
    }
}
