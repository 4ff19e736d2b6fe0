//! `bench sweep`: the telemetry sweep of a site. A /20 of loopback addresses
//! (4094 hosts) holds N simulated printers (SNMP from the fleet simulator),
//! spread evenly; the other addresses are silent as on a LAN (the
//! simulator's black hole swallows their datagrams instead of loopback's
//! ICMP port-unreachable). The real release `dwa-agent scan` sweeps the
//! whole range; net-snmp's `snmpbulkwalk` walks only the live printers,
//! one after another and 16 at a time, as the reference. Reports wall time,
//! datagrams the simulator received, the agent's peak memory, and ratios.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dwa_sim::{BlackHole, Fleet, FleetConfig, SnmpOptions};
use tokio::process::Command;

use crate::{bin_dir, print_machine, Args};

#[derive(clap::Args)]
pub struct SweepArgs {
    /// Base of the /20 swept (loopback only).
    #[arg(long, default_value = "127.40.0.0")]
    network: Ipv4Addr,
    /// Live printers, spread evenly over the /20.
    #[arg(long, default_value_t = 256)]
    printers: u32,
    /// Extra argument for `dwa-agent scan` (repeatable), e.g.
    /// `--scan-arg=--concurrency=1024`; default: the agent's own settings.
    #[arg(long = "scan-arg", allow_hyphen_values = true)]
    scan_args: Vec<String>,
    /// snmpbulkwalk processes at once in the parallel reference.
    #[arg(long, default_value_t = 16)]
    netsnmp_parallel: usize,
    /// Skip the net-snmp reference.
    #[arg(long)]
    no_netsnmp: bool,
}

/// The goals stated for the sweep: whole sweep within this many seconds,
/// and this many times faster than net-snmp 16 at a time.
const GOAL_SECS: f64 = 5.0;
const GOAL_RATIO: f64 = 3.0;
const PREFIX: u32 = 20;

/// Datagrams the simulator received so far (printers and black hole).
fn datagrams(fleet: &Fleet) -> u64 {
    let printers: u64 = fleet
        .printers
        .iter()
        .filter_map(|p| p.snmp.as_ref())
        .map(|s| s.stats.received())
        .sum();
    printers + fleet.black_hole.as_ref().map(|b| b.received()).unwrap_or(0)
}

/// VmHWM of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

struct AgentRun {
    wall: Duration,
    found: usize,
    peak_kib: Option<u64>,
    datagrams: u64,
}

async fn run_agent(
    fleet: &Fleet,
    agent: &std::path::Path,
    range: &str,
    port: u16,
    extra: &[String],
    limit: Duration,
) -> Result<AgentRun> {
    let before = datagrams(fleet);
    let started = Instant::now();
    let mut child = Command::new(agent)
        .arg("scan")
        .arg(range)
        .args(["--port", &port.to_string(), "--format", "json"])
        .args(extra)
        .env("DWA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", agent.display()))?;
    let pid = child.id().context("agent pid")?;
    let mut stdout = child.stdout.take().context("agent stdout")?;
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut buf)
            .await
            .map(|_| buf)
    });
    // VmHWM is the peak so far: the last reading before exit is the peak,
    // short of whatever the final few milliseconds added.
    let mut peak = None;
    let status = loop {
        if let Some(k) = vm_hwm_kib(pid) {
            peak = Some(k);
        }
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if started.elapsed() > limit {
            let _ = child.kill().await;
            bail!("dwa-agent scan still running after {limit:?}");
        }
    };
    let wall = started.elapsed();
    let out = reader.await??;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await;
        }
        bail!("dwa-agent scan failed ({status}): {err}");
    }
    let json: serde_json::Value = serde_json::from_slice(&out).context("scan JSON")?;
    let found = json.as_array().map(|a| a.len()).unwrap_or(0);
    Ok(AgentRun {
        wall,
        found,
        peak_kib: peak,
        datagrams: datagrams(fleet) - before,
    })
}

/// Walk every printer with `snmpbulkwalk`, `parallel` at a time.
async fn run_netsnmp(fleet: &Fleet, port: u16, parallel: usize) -> Result<(Duration, u64)> {
    let before = datagrams(fleet);
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let started = Instant::now();
    for p in &fleet.printers {
        let target = format!("{}:{port}", p.addr);
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let out = Command::new("snmpbulkwalk")
                .args(["-v2c", "-c", "public", "-Oqn", &target, "1.3.6.1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .output()
                .await
                .context("run snmpbulkwalk")?;
            if !out.status.success() || out.stdout.is_empty() {
                bail!(
                    "snmpbulkwalk {target}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((started.elapsed(), datagrams(fleet) - before))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub async fn run(args: Args, s: SweepArgs) -> Result<ExitCode> {
    print_machine("DWA telemetry sweep bench (loopback, simulated printers)");
    if !s.network.is_loopback() {
        bail!("--network must be in 127.0.0.0/8");
    }
    let base = u32::from(s.network) & !((1u32 << (32 - PREFIX)) - 1);
    let hosts = (1u32 << (32 - PREFIX)) - 2;
    if s.printers == 0 || s.printers > hosts {
        bail!("--printers must be 1..={hosts}");
    }
    // Evenly spread, never the network or broadcast address.
    let stride = hosts / s.printers;
    let live: Vec<IpAddr> = (0..s.printers)
        .map(|i| IpAddr::V4(Ipv4Addr::from(base + 1 + i * stride + stride / 2)))
        .collect();
    let range = format!("{}/{PREFIX}", Ipv4Addr::from(base));
    let fleet = Fleet::start(FleetConfig {
        addresses: live,
        http_port: 0,
        https_port: None,
        snmp_port: Some(0),
        snmp: SnmpOptions {
            black_hole: Some(BlackHole::Wildcard),
            ..SnmpOptions::default()
        },
        ..FleetConfig::default()
    })
    .await
    .context("start the simulated printers")?;
    let port = fleet.snmp_port.context("no SNMP port")?;
    let agent = bin_dir(&args)?.join("dwa-agent");
    println!("setup:");
    println!(
        "  range    {range} ({hosts} addresses), {} live printers, SNMP port {port}",
        s.printers
    );
    println!(
        "  agent    {} scan {range} --port {port} --format json {}",
        agent.display(),
        s.scan_args.join(" ")
    );
    println!("  dead addresses: silent (black hole on 0.0.0.0:{port})");

    let limit = Duration::from_secs(args.timeout_secs.max(900));
    let a = run_agent(&fleet, &agent, &range, port, &s.scan_args, limit).await?;
    println!("results:");
    println!(
        "  dwa-agent scan       {:>10}  found {}/{}  datagrams {}  peak RSS {}",
        secs(a.wall),
        a.found,
        s.printers,
        a.datagrams,
        a.peak_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into())
    );
    let mut ok = a.found == s.printers as usize;
    if !ok {
        println!(
            "  WARNING: the scan found {} of {} printers",
            a.found, s.printers
        );
    }
    let mut ratio16 = None;
    if s.no_netsnmp {
        println!("  net-snmp             skipped (--no-netsnmp)");
    } else if which("snmpbulkwalk") {
        let (seq, seq_dg) = run_netsnmp(&fleet, port, 1).await?;
        println!(
            "  snmpbulkwalk x1      {:>10}  (live printers only)  datagrams {seq_dg}",
            secs(seq)
        );
        let (par, par_dg) = run_netsnmp(&fleet, port, s.netsnmp_parallel).await?;
        println!(
            "  snmpbulkwalk x{:<2}     {:>10}  (live printers only)  datagrams {par_dg}",
            s.netsnmp_parallel,
            secs(par)
        );
        let r1 = seq.as_secs_f64() / a.wall.as_secs_f64();
        let r16 = par.as_secs_f64() / a.wall.as_secs_f64();
        println!("ratios (net-snmp time / dwa-agent sweep time; > 1: the agent is faster):");
        println!("  vs sequential        {r1:.2}x");
        println!("  vs {}-way             {r16:.2}x", s.netsnmp_parallel);
        ratio16 = Some(r16);
    } else {
        println!("  net-snmp             skipped: snmpbulkwalk not found (apt-get install snmp)");
    }
    println!("goals:");
    let fast = a.wall.as_secs_f64() <= GOAL_SECS;
    println!(
        "  whole sweep <= {GOAL_SECS} s: {} ({})",
        if fast { "met" } else { "NOT met" },
        secs(a.wall)
    );
    if let Some(r) = ratio16 {
        let met = r >= GOAL_RATIO;
        println!(
            "  >= {GOAL_RATIO}x faster than net-snmp {}-way: {} ({r:.2}x)",
            s.netsnmp_parallel,
            if met { "met" } else { "NOT met" }
        );
        ok &= met;
    }
    ok &= fast;
    fleet.shutdown().await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}
