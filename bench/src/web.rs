//! `bench web`: a simulated printer's embedded web server reached three ways
//! — plain HTTP direct; through a DWA web session (HTTPS to the relay's
//! session host, SSH to the agent, HTTP to the printer); and through
//! OpenSSH's `ssh -R` (plain HTTP to the port forwarded on the sshd side).
//! Download throughput, `GET /small` latency at concurrency 1 and N, and
//! the time from creating a web session to the first byte of its `/`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dwa_sim::{Fleet, FleetConfig};
use hyper::{header, HeaderMap, Method, StatusCode};
use tokio_rustls::TlsConnector;

use crate::http::{self, Conn, Endpoint};
use crate::procs::{clock_ticks, cpu_ticks, own_cpu_ticks, Procs};
use crate::setup::{self, RelayAgent, WebTuning};
use crate::{bounded, cell, load_average, measure, value, Args, Fig, RateAcc};

#[derive(clap::Args)]
pub struct WebArgs {
    /// Sequential `GET /small` on one keep-alive connection (after 200
    /// unrecorded ones).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// `GET /small` per connection in the concurrent test (--concurrency
    /// keep-alive connections at once).
    #[arg(long, default_value_t = 200)]
    concurrent_requests: usize,
    /// Web sessions created one after another for the "creation to first
    /// byte" figure (after one unrecorded).
    #[arg(long, default_value_t = 20)]
    sessions: usize,
    /// relay.toml `web.printer_connections` (printer connections per
    /// session, 1..=256); default: the relay's own default.
    #[arg(long)]
    printer_connections: Option<usize>,
}

const PRINTER_IP: &str = "127.77.1.20";
/// Rate limits set this high do not limit anything the bench does.
const UNLIMITED: u32 = 1_000_000;
/// Web sessions the bench creates per minute at most (measurement ones
/// plus the timed ones, sequentially).
const SESSIONS_PER_MINUTE: u32 = 1000;
const WARMUP_REQUESTS: usize = 200;

const GOAL_OF_DIRECT: f64 = 0.40;
const GOAL_OF_OPENSSH: f64 = 1.5;
const GOAL_ADDED_US: f64 = 500.0;
const GOAL_SESSION_MS: f64 = 20.0;

const PATHS: [&str; 3] = ["direct", "dwa", "openssh"];

struct WebPath {
    name: &'static str,
    ep: Endpoint,
    /// Processes carrying the requests, for CPU accounting (the bench itself,
    /// client and simulated printer, is counted apart).
    pids: Vec<(String, u32)>,
}

/// Latencies of one test on one path.
struct Lat {
    ns: Vec<u64>,
    /// Requests per second, all connections together.
    rate: f64,
    /// CPU µs per request of each process (the bench last).
    cpu: Vec<(String, f64)>,
    /// TCP connections the printer accepted during the test.
    printer_conns: u64,
}

/// The value of cookie `name` among the Set-Cookie headers.
fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, val) = v.split(';').next()?.trim().split_once('=')?;
            (k == name).then(|| val.to_string())
        })
}

/// The dealer API, as the bench's admin user with an API token.
struct Portal {
    ep: Endpoint,
    auth: String,
}

struct Created {
    id: String,
    url: String,
}

const JSON: (header::HeaderName, &str) = (header::CONTENT_TYPE, "application/json");

impl Portal {
    /// Logs in (cookie), creates an API token, and uses the token from then on.
    async fn login(ra: &RelayAgent, tls: &TlsConnector) -> Result<Self> {
        let ep = Endpoint {
            addr: ra.https,
            host: format!("{}:{}", ra.domain, ra.https.port()),
            tls: Some(tls.clone()),
            cookie: None,
        };
        let mut c = ep.connect().await?;
        let mut body = serde_json::json!({"username": "admin", "password": ra.admin_password});
        // Admins use two-factor by default: the code from init's secret.
        if let Some(uri) = &ra.admin_totp_uri {
            let totp = totp_rs::TOTP::from_url(uri)
                .map_err(|e| anyhow::anyhow!("init's admin TOTP URI: {e}"))?;
            body["totp"] = totp
                .generate_current()
                .context("two-factor code: the clock")?
                .into();
        }
        let a = c
            .call(
                Method::POST,
                "/api/v1/login",
                &[JSON],
                Some(body.to_string().into()),
            )
            .await?;
        if a.status != StatusCode::OK {
            bail!("log-in: {} {}", a.status, String::from_utf8_lossy(&a.body));
        }
        let cookie = set_cookie(&a.headers, "__Host-dwa_session")
            .context("log-in: no __Host-dwa_session cookie")?;
        let cookie = format!("__Host-dwa_session={cookie}");
        // A cookie-authenticated write carries the log-in's CSRF token.
        let answer: serde_json::Value =
            serde_json::from_slice(&a.body).context("log-in: the answer is not JSON")?;
        let csrf = answer["csrf_token"]
            .as_str()
            .context("log-in: no csrf_token")?
            .to_string();
        let csrf_header = header::HeaderName::from_static("x-csrf-token");
        let a = c
            .call(
                Method::POST,
                "/api/v1/tokens",
                &[
                    JSON,
                    (header::COOKIE, cookie.as_str()),
                    (csrf_header, csrf.as_str()),
                ],
                Some(r#"{"name":"bench"}"#.into()),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!("token: {} {}", a.status, String::from_utf8_lossy(&a.body));
        }
        let token = a.json()?["token"]
            .as_str()
            .context("token: no \"token\" field")?
            .to_string();
        Ok(Self {
            ep,
            auth: format!("Bearer {token}"),
        })
    }

    async fn create(&self, c: &mut Conn, device: i64, port: u16) -> Result<Created> {
        let a = c
            .call(
                Method::POST,
                &format!("/api/v1/devices/{device}/web-sessions"),
                &[JSON, (header::AUTHORIZATION, self.auth.as_str())],
                Some(serde_json::json!({ "port": port }).to_string().into()),
            )
            .await?;
        if a.status != StatusCode::CREATED {
            bail!(
                "web session: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
        }
        let v = a.json()?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("web session: no {k:?} field"))
        };
        Ok(Created {
            id: field("id")?,
            url: field("url")?,
        })
    }

    async fn delete(&self, c: &mut Conn, id: &str) -> Result<()> {
        let a = c
            .call(
                Method::DELETE,
                &format!("/api/v1/web-sessions/{id}"),
                &[(header::AUTHORIZATION, self.auth.as_str())],
                None,
            )
            .await?;
        if a.status != StatusCode::OK {
            bail!("end web session: {}", a.status);
        }
        Ok(())
    }
}

/// Enters a session as a browser does: a new TLS connection to the relay
/// named as the session host, the ticket exchanged for the session cookie.
/// Returns the session's endpoint (cookie included) and that connection.
async fn enter(relay: SocketAddr, tls: &TlsConnector, url: &str) -> Result<(Endpoint, Conn)> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("session URL {url:?}: not https"))?;
    let slash = rest
        .find('/')
        .with_context(|| format!("session URL {url:?}: no path"))?;
    let (authority, path) = rest.split_at(slash);
    let mut ep = Endpoint {
        addr: relay,
        host: authority.to_string(),
        tls: Some(tls.clone()),
        cookie: None,
    };
    let mut c = ep.connect().await?;
    let a = c.call(Method::GET, path, &[], None).await?;
    if a.status != StatusCode::SEE_OTHER {
        bail!("ticket exchange: {} (expected 303)", a.status);
    }
    let v = set_cookie(&a.headers, "__Host-dwa_ws").context("ticket exchange: no cookie")?;
    ep.cookie = Some(format!("__Host-dwa_ws={v}"));
    c.set_cookie(ep.cookie.clone());
    Ok((ep, c))
}

/// Per-session phases, in nanoseconds.
#[derive(Default)]
struct SessionTimes {
    post: Vec<u64>,
    enter: Vec<u64>,
    first: Vec<u64>,
    total: Vec<u64>,
}

/// `n` sessions one after another (after one unrecorded): POST on an open
/// portal connection, then a new connection to the session host for the
/// ticket, then `GET /` until its response head (the printer's 302) is in.
/// Each session is ended afterwards, outside the timing.
async fn session_times(
    relay: SocketAddr,
    tls: &TlsConnector,
    portal: &Portal,
    device: i64,
    port: u16,
    n: usize,
) -> Result<SessionTimes> {
    let mut pc = portal.ep.connect().await?;
    let mut out = SessionTimes::default();
    let ns = |a: Instant, b: Instant| b.duration_since(a).as_nanos() as u64;
    for i in 0..=n {
        let t0 = Instant::now();
        let cr = portal.create(&mut pc, device, port).await?;
        let t1 = Instant::now();
        let (_, mut c) = enter(relay, tls, &cr.url).await?;
        let t2 = Instant::now();
        let r = c.send(Method::GET, "/", &[], None).await?;
        let t3 = Instant::now();
        let status = r.status();
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        http_body_util::BodyExt::collect(r.into_body())
            .await
            .context("GET / body")?;
        // The printer answers `/` with a redirect to its log-in page; our
        // own error pages are 4xx/5xx.
        if status != StatusCode::FOUND || !location.contains("/login.html") {
            bail!("GET / through the session: {status} {location:?}, expected the printer's 302 to /login.html");
        }
        portal.delete(&mut pc, &cr.id).await?;
        if i > 0 {
            out.post.push(ns(t0, t1));
            out.enter.push(ns(t1, t2));
            out.first.push(ns(t2, t3));
            out.total.push(ns(t0, t3));
        }
    }
    Ok(out)
}

/// CPU ticks of each process and of the bench, now.
fn cpu_now(pids: &[(String, u32)]) -> (Vec<u64>, u64) {
    (
        pids.iter().map(|(_, pid)| cpu_ticks(&[*pid])).collect(),
        own_cpu_ticks(),
    )
}

/// CPU µs per request since `before`, per process and the bench last.
fn cpu_per_request(
    pids: &[(String, u32)],
    before: (Vec<u64>, u64),
    requests: usize,
) -> Vec<(String, f64)> {
    let (after, own) = cpu_now(pids);
    let us = |t: u64| t as f64 / clock_ticks() as f64 * 1e6 / requests.max(1) as f64;
    let mut v: Vec<(String, f64)> = pids
        .iter()
        .zip(after.iter().zip(&before.0))
        .map(|((n, _), (a, b))| (n.clone(), us(a.saturating_sub(*b))))
        .collect();
    v.push(("bench".into(), us(own.saturating_sub(before.1))));
    v
}

pub async fn run(args: Args, w: WebArgs) -> Result<ExitCode> {
    crate::print_machine("DWA web-session benchmark (loopback only)");
    let bins = crate::bin_dir(&args)?;
    let limit = Duration::from_secs(args.timeout_secs);
    let size = args.size_mib * 1024 * 1024;
    let mut procs = Procs::new(args.keep)?;
    println!("  scratch  {}", procs.dir.display());
    println!("setup:");

    let ip: IpAddr = PRINTER_IP.parse()?;
    let fleet = Fleet::start(FleetConfig {
        addresses: vec![ip],
        http_port: 0,
        https_port: None,
        ..Default::default()
    })
    .await
    .with_context(|| format!("start the simulated printer on {PRINTER_IP}"))?;
    let printer = fleet
        .printers
        .first()
        .context("the fleet has no printer")?
        .clone();
    let printer_addr = printer.http_addr();
    let stats = printer.stats.clone();
    println!("  simulated printer (dwa-sim, in the bench process) on http://{printer_addr}");

    let tuning = WebTuning {
        requests_per_second: UNLIMITED,
        request_burst: UNLIMITED,
        sessions_per_minute: SESSIONS_PER_MINUTE,
        printer_connections: w.printer_connections,
    };
    let ra = setup::relay_agent(
        &mut procs,
        &bins,
        &[printer_addr.port()],
        &args.transport,
        Some(&tuning),
    )
    .await?;
    println!(
        "  relay.toml [web] changed for the bench: requests_per_second = {UNLIMITED}, \
         request_burst = {UNLIMITED}, sessions_per_minute = {SESSIONS_PER_MINUTE}, printer_connections = {}",
        w.printer_connections
            .map_or("relay default".to_string(), |n| n.to_string())
    );
    let device = setup::device_add(&ra, ip).await?;
    let relay_version = setup::relay_version(&bins).await;

    let ossh = if args.no_openssh {
        println!("  OpenSSH reference skipped (--no-openssh)");
        None
    } else if setup::openssh_available() {
        match setup::openssh_reverse(&mut procs, printer_addr, args.openssh_cipher.as_deref()).await
        {
            Ok(o) => Some(o),
            Err(e) => {
                println!("  OpenSSH reference unavailable, skipping its column: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let tls = http::tls_trusting(&ra.cert_pem())?;
    let portal = Portal::login(&ra, &tls)
        .await
        .context("log in to the relay")?;
    let session = {
        let mut pc = portal.ep.connect().await?;
        let cr = portal.create(&mut pc, device, printer_addr.port()).await?;
        let (ep, _) = enter(ra.https, &tls, &cr.url).await?;
        println!(
            "  web session {} -> device {device} port {}",
            ep.host,
            printer_addr.port()
        );
        ep
    };

    let mut paths = vec![
        WebPath {
            name: "direct",
            ep: Endpoint::plain(printer_addr),
            pids: vec![],
        },
        WebPath {
            name: "dwa",
            ep: session,
            pids: procs.pids(setup::DWA_PROCS),
        },
    ];
    if let Some(o) = &ossh {
        paths.push(WebPath {
            name: "openssh",
            ep: Endpoint::plain(o.listen),
            pids: procs.pids(setup::OPENSSH_PROCS),
        });
    }

    // Sanity and warm-up: every path serves /small and 16 MiB that hash to
    // the printer's content.
    for p in &paths {
        bounded(limit, http::small_sequential(&p.ep, 10, 0))
            .await
            .with_context(|| format!("{} path: GET /small", p.name))?;
        bounded(limit, http::download(&p.ep, 16 << 20, true))
            .await
            .with_context(|| format!("{} path: download warm-up", p.name))?;
    }

    println!(
        "measuring ({} MiB per download, median of {} runs; {} sequential requests; {}x{} concurrent; {} sessions)...",
        args.size_mib, args.repeat, w.requests, args.concurrency, w.concurrent_requests, w.sessions
    );
    // Downloads: runs interleave the paths so a noisy moment on the machine
    // does not hit one path only. MB/s (10^6 bytes), as the goals are stated.
    let mut acc: Vec<RateAcc> = paths.iter().map(|p| RateAcc::new(&p.pids)).collect();
    for _ in 0..args.repeat.max(1) {
        for (p, a) in paths.iter().zip(acc.iter_mut()) {
            a.run(
                &p.pids,
                size as f64 / 1e6,
                bounded(limit, http::download(&p.ep, size, false)),
            )
            .await;
        }
    }
    let mut download = [Fig::Skipped, Fig::Skipped, Fig::Skipped];
    for (p, a) in paths.iter().zip(acc) {
        download[idx(p.name)] = a.fig(&p.pids);
    }

    // Latency: sequential on one connection, then concurrent.
    let mut seq: [Option<Result<Lat>>; 3] = [None, None, None];
    let mut conc: [Option<Result<Lat>>; 3] = [None, None, None];
    for p in &paths {
        let before = cpu_now(&p.pids);
        let conns = stats.connections();
        let r = bounded(
            limit,
            http::small_sequential(&p.ep, w.requests, WARMUP_REQUESTS),
        )
        .await
        .map(|ns| {
            let busy = ns.iter().sum::<u64>() as f64 / 1e9;
            Lat {
                rate: ns.len() as f64 / busy,
                cpu: cpu_per_request(&p.pids, before, w.requests + WARMUP_REQUESTS),
                printer_conns: stats.connections() - conns,
                ns,
            }
        });
        seq[idx(p.name)] = Some(r);
    }
    for p in &paths {
        let before = cpu_now(&p.pids);
        let conns = stats.connections();
        let n = args.concurrency * (w.concurrent_requests + 1);
        let r = bounded(
            limit,
            http::small_concurrent(&p.ep, args.concurrency, w.concurrent_requests),
        )
        .await
        .map(|(ns, wall)| Lat {
            rate: ns.len() as f64 / wall.as_secs_f64(),
            cpu: cpu_per_request(&p.pids, before, n),
            printer_conns: stats.connections() - conns,
            ns,
        });
        conc[idx(p.name)] = Some(r);
    }

    // Session creation to first byte.
    let dwa_pids = procs.pids(setup::DWA_PROCS);
    let before = cpu_now(&dwa_pids);
    let sessions = bounded(
        limit,
        session_times(
            ra.https,
            &tls,
            &portal,
            device,
            printer_addr.port(),
            w.sessions,
        ),
    )
    .await;
    let session_cpu = cpu_per_request(&dwa_pids, before, w.sessions + 1);
    println!("  load average at the end: {}", load_average());
    drop(fleet);

    println!();
    println!("paths (all to the simulated printer {printer_addr}, GET over HTTP/1.1 keep-alive):");
    println!("  direct   client -> HTTP -> printer");
    println!(
        "  dwa      client -> HTTPS (TLS 1.3) relay web session {} -> SSH ({}) -> dwa-agent {} -> HTTP -> printer  [{relay_version}]",
        ra.https, args.transport, ra.agent_id
    );
    match &ossh {
        Some(o) => {
            println!(
                "  openssh  client -> HTTP -> sshd's forwarded port {} -> SSH -> ssh -R (at the site) -> HTTP -> printer  [{}; cipher {}]",
                o.listen,
                o.version,
                o.cipher.as_deref().unwrap_or("unknown")
            );
            println!("           NB: no TLS on the openssh path's client leg (plain HTTP to sshd's port); dwa's client leg is HTTPS");
        }
        None => println!("  openssh  (not measured)"),
    }

    let failed = report(&args, &w, &download, &seq, &conc, &sessions, &session_cpu);
    drop(procs);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn idx(name: &str) -> usize {
    PATHS.iter().position(|n| *n == name).unwrap_or(0)
}

fn p_us(r: &Option<Result<Lat>>, q: f64) -> Option<f64> {
    match r {
        Some(Ok(l)) => {
            let mut v = l.ns.clone();
            Some(measure::percentile_us(&mut v, q))
        }
        _ => None,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.2}x"))
}

fn row(label: &str, cells: [String; 3], vs_direct: String, vs_ossh: String) {
    println!(
        "{label:<44} {:>9} {:>9} {:>9}  {vs_direct:>11} {vs_ossh:>12}",
        cells[0], cells[1], cells[2]
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "GOAL MISSED"
    }
}

/// Prints the results; returns whether any measurement failed.
fn report(
    args: &Args,
    w: &WebArgs,
    download: &[Fig; 3],
    seq: &[Option<Result<Lat>>; 3],
    conc: &[Option<Result<Lat>>; 3],
    sessions: &Result<SessionTimes>,
    session_cpu: &[(String, f64)],
) -> bool {
    let mut failed = false;
    println!();
    row(
        "measurement",
        ["direct".into(), "dwa".into(), "openssh".into()],
        "dwa/direct".into(),
        "dwa/openssh".into(),
    );
    let (d, x, o) = (
        value(&download[0]),
        value(&download[1]),
        value(&download[2]),
    );
    row(
        &format!("download {} MiB, MB/s", args.size_mib),
        [cell(&download[0]), cell(&download[1]), cell(&download[2])],
        ratio(d.zip(x).map(|(d, x)| x / d)),
        ratio(o.zip(x).map(|(o, x)| x / o)),
    );
    let mut added: Vec<(String, Option<f64>)> = Vec::new();
    for (label, lat) in [
        ("GET /small (1 KiB) c=1".to_string(), seq),
        (format!("GET /small (1 KiB) c={}", args.concurrency), conc),
    ] {
        for (q, qn) in [(0.5, "p50"), (0.99, "p99")] {
            let v: Vec<Option<f64>> = lat.iter().map(|r| p_us(r, q)).collect();
            row(
                &format!("{label} {qn}, µs"),
                [opt(v[0], 1), opt(v[1], 1), opt(v[2], 1)],
                v[0].zip(v[1])
                    .map_or("-".into(), |(d, x)| format!("{:+.1}", x - d)),
                ratio(v[2].zip(v[1]).map(|(o, x)| x / o)),
            );
        }
        let p50: Vec<Option<f64>> = lat.iter().map(|r| p_us(r, 0.5)).collect();
        let add = |i: usize| p50[0].zip(p50[i]).map(|(d, x)| x - d);
        row(
            &format!("{label} added p50, µs"),
            [
                "-".into(),
                add(1).map_or("-".into(), |v| format!("{v:+.1}")),
                add(2).map_or("-".into(), |v| format!("{v:+.1}")),
            ],
            String::new(),
            String::new(),
        );
        added.push((label, add(1)));
    }
    let session_p50 = sessions.as_ref().ok().map(|s| {
        let mut v = s.total.clone();
        measure::percentile_us(&mut v, 0.5) / 1000.0
    });
    row(
        "web session POST -> first byte of /, p50, ms",
        ["-".into(), opt(session_p50, 2), "-".into()],
        String::new(),
        String::new(),
    );
    println!("(dwa/direct on latency rows: µs dwa adds over direct; MB/s = 10^6 bytes/s)");
    if args.openssh_cipher.is_none() {
        println!("(openssh with its default cipher; --openssh-cipher picks another)");
    }

    println!();
    println!("download runs (MB/s) and CPU seconds per run, per process (bench = client + simulated printer):");
    for (i, f) in download.iter().enumerate() {
        if let Fig::Rate { all, cpu, .. } = f {
            let runs: Vec<String> = all.iter().map(|x| format!("{x:.0}")).collect();
            let cpu: Vec<String> = cpu.iter().map(|(n, s)| format!("{n} {s:.2}")).collect();
            println!(
                "  {:<8} runs [{}]  cpu s: {}",
                PATHS[i],
                runs.join(", "),
                cpu.join(", ")
            );
        }
    }
    println!();
    println!("latency distribution (µs; mean and max show a tail the percentiles hide):");
    for (label, lat) in [
        ("c=1".to_string(), seq),
        (format!("c={}", args.concurrency), conc),
    ] {
        for (i, r) in lat.iter().enumerate() {
            if let Some(Ok(l)) = r {
                let mut v = l.ns.clone();
                let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1000.0;
                let p999 = measure::percentile_us(&mut v, 0.999);
                let max = measure::percentile_us(&mut v, 1.0);
                let slow = v.iter().filter(|&&n| n > 100_000_000).count();
                println!(
                    "  {label:<5} {:<8} mean {mean:>9.1}  p99.9 {p999:>10.1}  max {max:>10.1}  over 100 ms: {slow}",
                    PATHS[i]
                );
            }
        }
    }
    println!();
    println!("request rates (all connections together) and CPU µs per request, per process:");
    for (label, lat) in [
        ("c=1".to_string(), seq),
        (format!("c={}", args.concurrency), conc),
    ] {
        for (i, r) in lat.iter().enumerate() {
            if let Some(Ok(l)) = r {
                let cpu: Vec<String> = l.cpu.iter().map(|(n, s)| format!("{n} {s:.0}")).collect();
                println!(
                    "  {label:<5} {:<8} {:>8.0} req/s  cpu µs/req: {:<32} printer connections opened: {}",
                    PATHS[i],
                    l.rate,
                    cpu.join(", "),
                    l.printer_conns
                );
            }
        }
    }
    match sessions {
        Ok(s) => {
            let pct = |v: &[u64], q: f64| {
                let mut v = v.to_vec();
                measure::percentile_us(&mut v, q) / 1000.0
            };
            println!();
            println!(
                "web sessions ({} timed, one after another; ms p50 / max):",
                s.total.len()
            );
            for (label, v) in [
                ("POST /api/v1/devices/{id}/web-sessions", &s.post),
                ("new TLS connection + ticket exchange (303)", &s.enter),
                ("GET / until the response head", &s.first),
                ("total", &s.total),
            ] {
                println!("  {label:<44} {:>7.2} / {:>7.2}", pct(v, 0.5), pct(v, 1.0));
            }
            let cpu: Vec<String> = session_cpu
                .iter()
                .map(|(n, us)| format!("{n} {:.2}", us / 1000.0))
                .collect();
            println!(
                "  CPU ms per session (incl. the untimed DELETE): {}",
                cpu.join(", ")
            );
        }
        Err(e) => {
            failed = true;
            println!("FAILED: web sessions: {e:#}");
        }
    }
    for (i, f) in download.iter().enumerate() {
        if let Fig::Failed(e) = f {
            failed = true;
            println!("FAILED: download on {}: {e}", PATHS[i]);
        }
    }
    for (label, lat) in [("c=1", seq), ("concurrent", conc)] {
        for (i, r) in lat.iter().enumerate() {
            if let Some(Err(e)) = r {
                failed = true;
                println!("FAILED: GET /small {label} on {}: {e:#}", PATHS[i]);
            }
        }
    }

    println!();
    let mut missed = false;
    let mut goal = |what: String,
                    got: Option<f64>,
                    ok: fn(f64) -> bool,
                    fmt: &dyn Fn(f64) -> String| {
        match got {
            Some(v) => {
                missed |= !ok(v);
                println!("goal {what}: {} -> {}", fmt(v), verdict(ok(v)));
            }
            None => println!("goal {what}: not evaluated"),
        }
    };
    goal(
        format!("dwa download >= {:.0} % of direct", GOAL_OF_DIRECT * 100.0),
        d.zip(x).map(|(d, x)| x / d),
        |r| r >= GOAL_OF_DIRECT,
        &|r| format!("{:.0} %", r * 100.0),
    );
    goal(
        format!("dwa download >= {GOAL_OF_OPENSSH}x openssh"),
        o.zip(x).map(|(o, x)| x / o),
        |r| r >= GOAL_OF_OPENSSH,
        &|r| format!("{r:.2}x"),
    );
    for (label, a) in &added {
        goal(
            format!("dwa added p50 <= {GOAL_ADDED_US:.0} µs, {label}"),
            *a,
            |v| v <= GOAL_ADDED_US,
            &|v| format!("{v:+.1} µs"),
        );
    }
    goal(
        format!(
            "web session creation -> first byte <= {GOAL_SESSION_MS:.0} ms (p50 of {})",
            w.sessions
        ),
        session_p50,
        |v| v <= GOAL_SESSION_MS,
        &|v| format!("{v:.2} ms"),
    );
    println!(
        "RESULT: {}",
        if missed {
            "at least one goal missed (see above)"
        } else {
            "every evaluated goal met"
        }
    );
    if failed {
        println!("RESULT: some measurements FAILED (see above)");
    }
    failed
}
