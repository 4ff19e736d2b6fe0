//! `bench`: throughput and latency of the DWA tunnel (relay → SSH → agent →
//! target) against a direct loopback connection and OpenSSH's `ssh -L`, and
//! (`bench web`) of a printer's web server through a DWA web session against
//! direct HTTP and OpenSSH's `ssh -R`, and (`bench sweep`) of the SNMP telemetry
//! sweep against net-snmp; all on this machine's loopback. See
//! docs/performance.md.

mod http;
mod measure;
mod procs;
mod setup;
mod sweep;
mod target;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::procs::{clock_ticks, cpu_ticks, own_cpu_ticks, Procs};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "DWA on loopback: the tunnel vs direct TCP vs OpenSSH ssh -L (default), \
             or `bench web`: a printer's web server through a web session vs direct HTTP vs OpenSSH ssh -R",
    after_help = "Examples:\n  \
                  bench                       tunnel bench with the defaults\n  \
                  bench web                   web-session bench with the defaults\n  \
                  bench sweep                 telemetry sweep: dwa-agent scan vs snmpbulkwalk\n  \
                  bench web --size-mib 64 --openssh-cipher aes256-gcm@openssh.com"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand)]
enum Cmd {
    /// The tunnel bench (also what runs without a subcommand): TCP direct vs
    /// `dwa-relay forward` vs `ssh -L`.
    Tunnel,
    /// The web-session bench: a simulated printer's web server reached by
    /// plain HTTP direct, through a DWA web session (HTTPS to the relay, SSH
    /// to the agent, HTTP to the printer), and through `ssh -R` (plain HTTP
    /// to the forwarded port on the sshd side).
    Web(web::WebArgs),
    /// The telemetry sweep: `dwa-agent scan` over a /20 of loopback
    /// addresses holding simulated SNMP printers (dead addresses silent),
    /// against net-snmp's snmpbulkwalk over the live printers.
    Sweep(sweep::SweepArgs),
}

/// Options (`global`: accepted before or after the subcommand); each says
/// which bench uses it when only one does.
#[derive(clap::Args)]
struct Args {
    /// Bytes per throughput measurement, in MiB.
    #[arg(long, default_value_t = 256, global = true)]
    size_mib: u64,
    /// Sequential 1 KiB round trips on one connection (tunnel bench).
    #[arg(long, default_value_t = 5000, global = true)]
    rtt_count: usize,
    /// Parallel connections for the concurrent latency test.
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,
    /// Round trips per connection in the concurrent test (tunnel bench).
    #[arg(long, default_value_t = 200, global = true)]
    concurrent_rtts: usize,
    /// Fresh connections in the connection-setup test (tunnel bench).
    #[arg(long, default_value_t = 200, global = true)]
    connects: usize,
    /// Runs of each throughput measurement; the median is reported.
    #[arg(long, default_value_t = 5, global = true)]
    repeat: usize,
    /// Agent transport: ssh, websocket or auto.
    #[arg(long, default_value = "ssh", value_parser = ["ssh", "websocket", "auto"], global = true)]
    transport: String,
    /// Cipher for the OpenSSH reference (ssh -c); default: OpenSSH's choice.
    #[arg(long, global = true)]
    openssh_cipher: Option<String>,
    /// Skip the OpenSSH reference.
    #[arg(long, global = true)]
    no_openssh: bool,
    /// Directory holding dwa-relay and dwa-agent (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Time limit of each single measurement, in seconds.
    #[arg(long, default_value_t = 300, global = true)]
    timeout_secs: u64,
    /// Keep the scratch directory (configs, logs) after the run.
    #[arg(long, global = true)]
    keep: bool,
}

const PATHS: [&str; 3] = ["direct", "dwa", "openssh"];
/// Throughput ratio over OpenSSH the DWA tunnel is meant to reach.
const GOAL: f64 = 1.5;

/// One path under test.
struct Path {
    name: &'static str,
    addr: SocketAddr,
    /// Processes carrying the data (name, pid) for CPU accounting, besides
    /// the bench itself; their descendants count with them (sshd's sessions).
    pids: Vec<(String, u32)>,
}

/// Result of one measurement on one path.
#[derive(Clone)]
pub(crate) enum Fig {
    /// Median MiB/s, every run's MiB/s, and CPU seconds per run of each
    /// tunnel process and of the bench (client + target server).
    Rate {
        mib_s: f64,
        all: Vec<f64>,
        cpu: Vec<(String, f64)>,
    },
    /// A latency percentile in µs, and round trips per second.
    Lat {
        us: f64,
        rate: f64,
    },
    Failed(String),
    Skipped,
}

fn main() -> ExitCode {
    let Cli { cmd, args } = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        let sigterm = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        // Dropping `run` (on a signal) drops its Procs guard: children die.
        let bench = async move {
            match cmd {
                Some(Cmd::Web(w)) => web::run(args, w).await,
                Some(Cmd::Sweep(s)) => sweep::run(args, s).await,
                Some(Cmd::Tunnel) | None => run(args).await,
            }
        };
        tokio::select! {
            r = bench => match r {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); ExitCode::from(130) }
            _ = sigterm => { eprintln!("terminated"); ExitCode::from(143) }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}

pub(crate) fn machine_info() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1048576.0))
        .unwrap_or_else(|| "unknown".into());
    vec![
        ("load".into(), load_average()),
        ("nproc".into(), nproc),
        ("cpu".into(), model),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
    ]
}

#[derive(Clone, Copy)]
enum LatKind {
    Sequential,
    Concurrent,
    Connect,
}

/// Latencies in ns, and the seconds they took together (for the rate).
async fn latency(kind: LatKind, addr: SocketAddr, args: &Args) -> Result<(Vec<u64>, f64)> {
    let busy = |v: &[u64]| v.iter().sum::<u64>() as f64 / 1e9;
    Ok(match kind {
        LatKind::Sequential => {
            let v = measure::rtt(addr, args.rtt_count, 200).await?;
            let s = busy(&v);
            (v, s)
        }
        LatKind::Concurrent => {
            let (v, wall) =
                measure::rtt_concurrent(addr, args.concurrency, args.concurrent_rtts).await?;
            (v, wall.as_secs_f64())
        }
        LatKind::Connect => {
            let v = measure::connects(addr, args.connects).await?;
            let s = busy(&v);
            (v, s)
        }
    })
}

/// The 1/5/15-minute load averages; other work on the machine skews figures.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Where dwa-relay and dwa-agent are: --bin-dir, else next to this binary.
pub(crate) fn bin_dir(args: &Args) -> Result<PathBuf> {
    Ok(match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir of the bench binary")?
            .to_path_buf(),
    })
}

/// Prints the machine block both benches start with.
pub(crate) fn print_machine(title: &str) {
    println!("{title}");
    println!("machine:");
    for (k, v) in machine_info() {
        println!("  {k:<8} {v}");
    }
    println!("  (a load average well above 0 means other work is running: figures will be noisy)");
}

/// Throughput runs of one path, and the CPU each process used during them.
pub(crate) struct RateAcc {
    all: Vec<f64>,
    ticks: Vec<u64>,
    own: u64,
    err: Option<String>,
}

impl RateAcc {
    pub(crate) fn new(pids: &[(String, u32)]) -> Self {
        Self {
            all: Vec::new(),
            ticks: vec![0; pids.len()],
            own: 0,
            err: None,
        }
    }

    /// One run of `units` (MiB, MB, ...) timed by `f`; after a failure the
    /// path's further runs are skipped.
    pub(crate) async fn run(
        &mut self,
        pids: &[(String, u32)],
        units: f64,
        f: impl Future<Output = Result<Duration>>,
    ) {
        if self.err.is_some() {
            return;
        }
        let before: Vec<u64> = pids.iter().map(|(_, pid)| cpu_ticks(&[*pid])).collect();
        let own_before = own_cpu_ticks();
        let r = f.await;
        for ((t, (_, pid)), b) in self.ticks.iter_mut().zip(pids).zip(before) {
            *t += cpu_ticks(&[*pid]).saturating_sub(b);
        }
        self.own += own_cpu_ticks().saturating_sub(own_before);
        match r {
            Ok(d) => self.all.push(units / d.as_secs_f64()),
            Err(e) => self.err = Some(format!("{e:#}")),
        }
    }

    /// The median, every run, and CPU seconds per run of each process.
    pub(crate) fn fig(self, pids: &[(String, u32)]) -> Fig {
        let ticks = clock_ticks() as f64;
        let n = self.all.len().max(1) as f64;
        let per_run = |t: u64| t as f64 / ticks / n;
        let mut cpu: Vec<(String, f64)> = pids
            .iter()
            .zip(&self.ticks)
            .map(|((name, _), t)| (name.clone(), per_run(*t)))
            .collect();
        cpu.push(("bench".into(), per_run(self.own)));
        match self.err {
            Some(e) => Fig::Failed(e),
            None => {
                let mut s = self.all.clone();
                s.sort_by(f64::total_cmp);
                Fig::Rate {
                    mib_s: s[s.len() / 2],
                    all: self.all,
                    cpu,
                }
            }
        }
    }
}

/// Runs `f` under the per-measurement time limit.
pub(crate) async fn bounded<T>(limit: Duration, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("timed out after {limit:?}"))?
}

async fn run(args: Args) -> Result<ExitCode> {
    print_machine("DWA tunnel benchmark (loopback only)");
    let bins = bin_dir(&args)?;
    let limit = Duration::from_secs(args.timeout_secs);
    let size = args.size_mib * 1024 * 1024;
    let mut procs = Procs::new(args.keep)?;
    println!("  scratch  {}", procs.dir.display());

    // Target server.
    let listener = tokio::net::TcpListener::bind("127.77.1.10:0")
        .await
        .context("bind the target server on 127.77.1.10")?;
    let target_addr = listener.local_addr()?;
    let server = tokio::spawn(target::serve(listener));
    println!("setup:");
    println!("  target server on {target_addr}");

    let dwa = setup::dwa(&mut procs, &bins, target_addr, &args.transport).await?;
    let relay_version = setup::relay_version(&bins).await;

    let ossh = if args.no_openssh {
        println!("  OpenSSH reference skipped (--no-openssh)");
        None
    } else if setup::openssh_available() {
        match setup::openssh(&mut procs, target_addr, args.openssh_cipher.as_deref()).await {
            Ok(o) => Some(o),
            Err(e) => {
                println!("  OpenSSH reference unavailable, skipping its columns: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let mut paths = vec![
        Path {
            name: "direct",
            addr: target_addr,
            pids: vec![],
        },
        Path {
            name: "dwa",
            addr: dwa.listen,
            pids: procs.pids(setup::DWA_PROCS),
        },
    ];
    if let Some(o) = &ossh {
        paths.push(Path {
            name: "openssh",
            addr: o.listen,
            pids: procs.pids(setup::OPENSSH_PROCS),
        });
    }

    // Sanity and warm-up: every path echoes and carries 16 MiB.
    for p in &paths {
        bounded(limit, measure::rtt(p.addr, 10, 0))
            .await
            .with_context(|| format!("{} path does not echo", p.name))?;
        bounded(limit, measure::download(p.addr, 16 << 20))
            .await
            .with_context(|| format!("{} path warm-up", p.name))?;
    }

    println!(
        "measuring ({} MiB per transfer, median of {} runs; {} round trips; {}x{} concurrent; {} connects)...",
        args.size_mib, args.repeat, args.rtt_count, args.concurrency, args.concurrent_rtts, args.connects
    );
    let mut rows: Vec<(String, [Fig; 3])> = Vec::new();
    let throughput: [(&str, u8); 3] = [
        ("download (G), MiB/s", b'G'),
        ("upload (S), MiB/s", b'S'),
        ("echo full-duplex (E), MiB/s each way", b'E'),
    ];
    for (label, mode) in throughput {
        // Runs interleave the paths (direct, dwa, openssh, direct, ...) so
        // that a noisy moment on the machine does not hit one path only.
        let mut acc: Vec<RateAcc> = paths.iter().map(|p| RateAcc::new(&p.pids)).collect();
        for _ in 0..args.repeat.max(1) {
            for (p, a) in paths.iter().zip(acc.iter_mut()) {
                let f = async {
                    match mode {
                        b'G' => bounded(limit, measure::download(p.addr, size)).await,
                        b'S' => bounded(limit, measure::upload(p.addr, size)).await,
                        _ => bounded(limit, measure::echo(p.addr, size)).await,
                    }
                };
                a.run(&p.pids, args.size_mib as f64, f).await;
            }
        }
        let mut figs = [Fig::Skipped, Fig::Skipped, Fig::Skipped];
        for (p, a) in paths.iter().zip(acc) {
            let i = PATHS.iter().position(|n| *n == p.name).unwrap_or(0);
            figs[i] = a.fig(&p.pids);
        }
        rows.push((label.to_string(), figs));
    }

    let lat_kinds = [
        (LatKind::Sequential, "1 KiB round trip".to_string()),
        (
            LatKind::Concurrent,
            format!("1 KiB round trip x{} conns", args.concurrency),
        ),
        (LatKind::Connect, "connect + first round trip".to_string()),
    ];
    for (kind, label) in lat_kinds {
        let mut p50 = [Fig::Skipped, Fig::Skipped, Fig::Skipped];
        let mut p99 = [Fig::Skipped, Fig::Skipped, Fig::Skipped];
        for p in &paths {
            let i = PATHS.iter().position(|n| *n == p.name).unwrap_or(0);
            match bounded(limit, latency(kind, p.addr, &args)).await {
                Ok((mut v, secs)) => {
                    let rate = v.len() as f64 / secs;
                    p50[i] = Fig::Lat {
                        us: measure::percentile_us(&mut v, 0.5),
                        rate,
                    };
                    p99[i] = Fig::Lat {
                        us: measure::percentile_us(&mut v, 0.99),
                        rate,
                    };
                }
                Err(e) => {
                    p50[i] = Fig::Failed(format!("{e:#}"));
                    p99[i] = Fig::Failed(format!("{e:#}"));
                }
            }
        }
        rows.push((format!("{label} p50, µs"), p50));
        rows.push((format!("{label} p99, µs"), p99));
    }
    server.abort();
    println!("  load average at the end: {}", load_average());

    let failed = report(&args, &rows, &dwa, ossh.as_ref(), &relay_version);
    drop(procs);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn cell(f: &Fig) -> String {
    match f {
        Fig::Rate { mib_s, .. } => format!("{mib_s:.0}"),
        Fig::Lat { us, .. } => format!("{us:.1}"),
        Fig::Failed(_) => "FAILED".into(),
        Fig::Skipped => "-".into(),
    }
}

pub(crate) fn value(f: &Fig) -> Option<f64> {
    match f {
        Fig::Rate { mib_s, .. } => Some(*mib_s),
        Fig::Lat { us, .. } => Some(*us),
        _ => None,
    }
}

/// Prints the results; returns whether any measurement failed.
fn report(
    args: &Args,
    rows: &[(String, [Fig; 3])],
    dwa: &setup::Dwa,
    ossh: Option<&setup::OpenSsh>,
    relay_version: &str,
) -> bool {
    println!();
    println!("paths:");
    println!("  direct   client -> 127.77.1.10 target (no tunnel)");
    println!(
        "  dwa      client -> dwa-relay forward -> SSH ({}) -> dwa-agent {} -> target  [{relay_version}]",
        args.transport, dwa.agent_id
    );
    match ossh {
        Some(o) => println!(
            "  openssh  client -> ssh -L -> sshd 127.77.0.2 -> target  [{}; cipher {}]",
            o.version,
            o.cipher.as_deref().unwrap_or("unknown")
        ),
        None => println!("  openssh  (not measured)"),
    }
    println!();
    println!(
        "{:<40} {:>9} {:>9} {:>9}  {:>12} {:>12}",
        "measurement", "direct", "dwa", "openssh", "dwa/direct", "dwa/openssh"
    );
    let mut failed = false;
    let mut goal_rows: Vec<(String, Option<f64>)> = Vec::new();
    for (label, figs) in rows {
        let (d, w, o) = (value(&figs[0]), value(&figs[1]), value(&figs[2]));
        let is_rate = label.contains("MiB/s");
        let (vs_direct, vs_ossh) = if is_rate {
            (
                d.zip(w).map(|(d, w)| format!("{:.2}x", w / d)),
                o.zip(w).map(|(o, w)| format!("{:.2}x", w / o)),
            )
        } else {
            // Latency: added time over direct, and the ratio to OpenSSH.
            (
                d.zip(w).map(|(d, w)| format!("{:+.1}", w - d)),
                o.zip(w).map(|(o, w)| format!("{:.2}x", w / o)),
            )
        };
        println!(
            "{:<40} {:>9} {:>9} {:>9}  {:>12} {:>12}",
            label,
            cell(&figs[0]),
            cell(&figs[1]),
            cell(&figs[2]),
            vs_direct.unwrap_or_else(|| "-".into()),
            vs_ossh.unwrap_or_else(|| "-".into())
        );
        if is_rate {
            goal_rows.push((label.clone(), o.zip(w).map(|(o, w)| w / o)));
        }
        failed |= figs.iter().any(|f| matches!(f, Fig::Failed(_)));
    }
    println!("(latency columns: dwa/direct is the latency dwa adds over direct, in µs)");

    println!();
    println!(
        "throughput runs (MiB/s) and CPU seconds per run, per process (bench = client + target server):"
    );
    for (label, figs) in rows {
        for (i, f) in figs.iter().enumerate() {
            if let Fig::Rate { all, cpu, .. } = f {
                let runs: Vec<String> = all.iter().map(|x| format!("{x:.0}")).collect();
                let cpu: Vec<String> = cpu.iter().map(|(n, s)| format!("{n} {s:.2}")).collect();
                println!(
                    "  {:<38} {:<8} runs [{}]  cpu s: {}",
                    label,
                    PATHS[i],
                    runs.join(", "),
                    cpu.join(", ")
                );
            }
        }
    }
    println!();
    println!("round-trip rates (round trips per second, all connections together):");
    for (label, figs) in rows.iter().filter(|(l, _)| l.ends_with("p50, µs")) {
        let r: Vec<String> = figs
            .iter()
            .map(|f| match f {
                Fig::Lat { rate, .. } => format!("{rate:.0}"),
                _ => "-".into(),
            })
            .collect();
        println!(
            "  {:<38} direct {:>8}  dwa {:>8}  openssh {:>8}",
            label.trim_end_matches(" p50, µs"),
            r[0],
            r[1],
            r[2]
        );
    }

    for (label, figs) in rows {
        for (i, f) in figs.iter().enumerate() {
            if let Fig::Failed(e) = f {
                println!("FAILED: {label} on {}: {e}", PATHS[i]);
            }
        }
    }

    println!();
    let mut missed = false;
    let mut evaluated = false;
    for (label, ratio) in &goal_rows {
        match ratio {
            Some(r) => {
                evaluated = true;
                let ok = *r >= GOAL;
                missed |= !ok;
                println!(
                    "goal dwa >= {GOAL}x openssh, {label}: {r:.2}x -> {}",
                    if ok { "met" } else { "GOAL MISSED" }
                );
            }
            None => println!("goal dwa >= {GOAL}x openssh, {label}: not evaluated"),
        }
    }
    if !evaluated {
        println!("throughput goal not evaluated (no OpenSSH figures)");
    } else if missed {
        println!("RESULT: goal missed (dwa throughput below {GOAL}x OpenSSH on at least one measurement)");
    } else {
        println!("RESULT: goal met");
    }
    if failed {
        println!("RESULT: some measurements FAILED (see above)");
    }
    failed
}
