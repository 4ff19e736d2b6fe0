//! Every bench subcommand, run the way `docs/performance.md` runs it but
//! with tiny sizes, so the benches keep working between measurements (a
//! bench CI never runs rots: `bench web` once stopped at its log-in). No
//! goal is checked here; the figures of such a short run mean nothing.
//! Needs `dwa-relay` and `dwa-agent` beside the bench binary
//! (`scripts/test.sh` builds them first) and OpenSSH's sshd for the
//! reference paths; skips, saying so, without them.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SMALL: [&str; 12] = [
    "--size-mib",
    "1",
    "--repeat",
    "1",
    "--rtt-count",
    "20",
    "--concurrency",
    "2",
    "--concurrent-rtts",
    "5",
    "--connects",
    "5",
];

/// Runs the bench; it must succeed and print `marker`.
fn run(args: &[&str], marker: &str) -> String {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args(["--timeout-secs", "120"])
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(marker),
        "bench {args:?} printed no {marker:?}:\n{stdout}\n{stderr}"
    );
    eprintln!("bench {} took {:?}", args[0], started.elapsed());
    stdout
}

#[test]
fn every_bench_subcommand_runs() {
    let dir = Path::new(env!("CARGO_BIN_EXE_bench"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    if !dir.join("dwa-relay").exists() || !dir.join("dwa-agent").exists() {
        eprintln!(
            "SKIPPED: dwa-relay or dwa-agent missing in {} (scripts/test.sh builds them)",
            dir.display()
        );
        return;
    }
    let openssh = Path::new("/usr/sbin/sshd").exists();
    let mut tail: Vec<&str> = Vec::new();
    if !openssh {
        eprintln!("no /usr/sbin/sshd: the OpenSSH references are skipped");
        tail.push("--no-openssh");
    }

    let mut tunnel = vec!["tunnel"];
    tunnel.extend(SMALL);
    tunnel.extend(&tail);
    run(&tunnel, "RESULT:");

    let mut web = vec![
        "web",
        "--requests",
        "20",
        "--concurrent-requests",
        "20",
        "--sessions",
        "2",
    ];
    web.extend(SMALL);
    web.extend(&tail);
    let out = run(&web, "RESULT:");
    assert!(out.contains("web sessions"), "{out}");

    // A /24 outside the e2e tests' loopback nets, four printers, no
    // net-snmp reference (its tools may be missing).
    let sweep = [
        "sweep",
        "--network",
        "127.250.0.0",
        "--prefix",
        "24",
        "--printers",
        "4",
        "--no-netsnmp",
    ];
    let out = run(&sweep, "found 4/4");
    assert!(out.contains("dwa-agent scan"), "{out}");
}
