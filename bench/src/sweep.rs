//! `bench sweep`: the telemetry sweep of a site. A /20 of loopback addresses
//! (4094 hosts; `--prefix 16`: a /16, 65 534 hosts) holds N simulated
//! printers (SNMP and NetBIOS from the fleet simulator), spread evenly;
//! the other addresses are silent as on a LAN (the
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
    /// Base of the network swept (loopback only).
    #[arg(long, default_value = "127.40.0.0")]
    network: Ipv4Addr,
    /// Prefix length of the network swept: 20 (4094 addresses) or 16
    /// (65 534), or anything in 16..=24 without a stated goal.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(16..=24))]
    prefix: u32,
    /// Live printers, spread evenly; default 256 on a /20, 1024 on a /16
    /// (one in 16 and one in 64 addresses).
    #[arg(long)]
    printers: Option<u32>,
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

/// The goals stated for the sweep, by prefix: whole sweep within this many
/// seconds, the agent's peak RSS within this many MiB; and (/20) this many
/// times faster than net-snmp 16 at a time.
fn goals(prefix: u32) -> (Option<f64>, Option<f64>) {
    match prefix {
        20 => (Some(5.0), None),
        16 => (Some(60.0), Some(64.0)),
        _ => (None, None),
    }
}
const GOAL_RATIO: f64 = 3.0;

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
    /// Printers whose record carries a NetBIOS name.
    named: usize,
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
    let named = json
        .as_array()
        .map(|a| a.iter().filter(|r| r["netbios_name"].is_string()).count())
        .unwrap_or(0);
    Ok(AgentRun {
        wall,
        found,
        named,
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
    let prefix = s.prefix;
    let base = u32::from(s.network) & !((1u32 << (32 - prefix)) - 1);
    let hosts = (1u32 << (32 - prefix)) - 2;
    let printers = s
        .printers
        .unwrap_or(if prefix <= 16 { 1024 } else { 256.min(hosts) });
    if printers == 0 || printers > hosts {
        bail!("--printers must be 1..={hosts}");
    }
    // Evenly spread, never the network or broadcast address.
    let stride = hosts / printers;
    let live: Vec<IpAddr> = (0..printers)
        .map(|i| IpAddr::V4(Ipv4Addr::from(base + 1 + i * stride + stride / 2)))
        .collect();
    let range = format!("{}/{prefix}", Ipv4Addr::from(base));
    let fleet = Fleet::start(FleetConfig {
        addresses: live,
        http_port: 0,
        https_port: None,
        snmp_port: Some(0),
        // Printers answer NetBIOS node status on one shared free port,
        // given to the agent (its lookups are part of every sweep).
        netbios_port: Some(0),
        snmp: SnmpOptions {
            black_hole: Some(BlackHole::Wildcard),
            ..SnmpOptions::default()
        },
        ..FleetConfig::default()
    })
    .await
    .context("start the simulated printers")?;
    let port = fleet.snmp_port.context("no SNMP port")?;
    let netbios_port = fleet.netbios_port.context("no NetBIOS port")?;
    let mut scan_args = vec!["--netbios-port".to_string(), netbios_port.to_string()];
    scan_args.extend(s.scan_args.iter().cloned());
    let agent = bin_dir(&args)?.join("dwa-agent");
    println!("setup:");
    println!(
        "  range    {range} ({hosts} addresses), {printers} live printers, SNMP port {port}, \
         NetBIOS port {netbios_port}"
    );
    println!(
        "  agent    {} scan {range} --port {port} --format json {}",
        agent.display(),
        scan_args.join(" ")
    );
    println!("  dead addresses: silent (black hole on 0.0.0.0:{port})");

    let limit = Duration::from_secs(args.timeout_secs.max(900));
    let a = run_agent(&fleet, &agent, &range, port, &scan_args, limit).await?;
    println!("results:");
    println!(
        "  dwa-agent scan       {:>10}  found {}/{}  datagrams {}  peak RSS {}",
        secs(a.wall),
        a.found,
        printers,
        a.datagrams,
        a.peak_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into())
    );
    let mut ok = a.found == printers as usize && a.named == printers as usize;
    if a.found != printers as usize {
        println!(
            "  WARNING: the scan found {} of {printers} printers",
            a.found
        );
    }
    if a.named != printers as usize {
        println!(
            "  WARNING: {} of {} printers found have their NetBIOS name",
            a.named, a.found
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
    let (goal_secs, goal_mib) = goals(prefix);
    if let Some(g) = goal_secs {
        let fast = a.wall.as_secs_f64() <= g;
        println!(
            "  whole sweep <= {g} s: {} ({})",
            if fast { "met" } else { "NOT met" },
            secs(a.wall)
        );
        ok &= fast;
    }
    if let Some(g) = goal_mib {
        let mib = a.peak_kib.map(|k| k as f64 / 1024.0);
        let small = mib.is_some_and(|m| m <= g);
        println!(
            "  agent peak RSS <= {g} MiB: {} ({})",
            if small { "met" } else { "NOT met" },
            mib.map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "?".into())
        );
        ok &= small;
    }
    if goal_secs.is_none() && goal_mib.is_none() {
        println!("  none stated for a /{prefix}");
    }
    if let Some(r) = ratio16.filter(|_| prefix == 20) {
        let met = r >= GOAL_RATIO;
        println!(
            "  >= {GOAL_RATIO}x faster than net-snmp {}-way: {} ({r:.2}x)",
            s.netsnmp_parallel,
            if met { "met" } else { "NOT met" }
        );
        ok &= met;
    }
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
