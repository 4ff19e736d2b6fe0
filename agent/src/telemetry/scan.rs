//! One-shot scan: expand ranges, probe each address with bounded
//! concurrency, walk and decode the printers, format the result.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dwa_proto::csv::{Cell, CsvError, Table};
use dwa_proto::telemetry::{DeviceRecord, FieldError, Level, SupplyClass};
use ipnetwork::Ipv4Network;

use tracing::Instrument as _;

use super::decode::decode;
use super::discover::{discover, Answer, CommunityVersion, DiscoverOptions, SEND_RATE};
use super::names::Names;
use super::netbios::{self, NetbiosOptions};
use super::snmp::{answered, Client, SnmpError, Version, WALK_ROOTS};
use super::v3::V3Security;
use crate::policy::LivePolicy;

/// Most addresses one scan may cover.
pub const MAX_ADDRESSES: u64 = 65_536;
/// Most varbinds walked from one device.
pub const MAX_VARBINDS: usize = 5000;

/// A bad RANGE argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

/// Unicast only: no multicast, no limited broadcast, no 0.0.0.0 and nothing
/// from the reserved 240.0.0.0/4.
fn sendable(ip: Ipv4Addr) -> bool {
    !(ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() || ip.octets()[0] >= 240)
}

/// Expand one RANGE: `a.b.c.d`, `a.b.c.d/n`, `a.b.c.x-y` or any IPv4
/// `first-last` span (the form the relay's scan settings use), within the
/// address budget. IPv6 single addresses are accepted.
fn expand_one(s: &str, budget: u64) -> Result<Vec<IpAddr>, RangeError> {
    let s = s.trim();
    let bad = |why: &str| RangeError(format!("invalid range {s:?}: {why}"));
    if let Some((net, prefix)) = s.split_once('/') {
        let net: Ipv4Addr = net
            .parse()
            .map_err(|_| bad("expected IPv4 CIDR like 192.168.1.0/24"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        let n = Ipv4Network::new(net, prefix).map_err(|_| bad("prefix must be 0-32"))?;
        let size = 1u64 << (32 - u32::from(prefix));
        if size > budget {
            return Err(too_many());
        }
        let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
        let (lo, hi) = if prefix <= 30 {
            (first + 1, last - 1)
        } else {
            (first, last)
        };
        return Ok((lo..=hi)
            .map(Ipv4Addr::from)
            .filter(|ip| sendable(*ip))
            .map(IpAddr::V4)
            .collect());
    }
    if let Some((a, b)) = s.split_once('-') {
        let start: Ipv4Addr = a.parse().map_err(|_| bad("expected a.b.c.x-y"))?;
        let end: Ipv4Addr = match b.parse::<u8>() {
            Ok(last) => {
                let o = start.octets();
                Ipv4Addr::new(o[0], o[1], o[2], last)
            }
            Err(_) => b.parse().map_err(|_| bad("expected a.b.c.x-y"))?,
        };
        if end < start {
            return Err(bad("range end is before its start"));
        }
        if u64::from(u32::from(end) - u32::from(start)) + 1 > budget {
            return Err(too_many());
        }
        return Ok((u32::from(start)..=u32::from(end))
            .map(Ipv4Addr::from)
            .filter(|ip| sendable(*ip))
            .map(IpAddr::V4)
            .collect());
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| bad("expected an IP address, a CIDR or a.b.c.x-y"))?;
    let ok = match ip {
        IpAddr::V4(v4) => sendable(v4),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    };
    if !ok {
        return Err(bad("not a unicast address"));
    }
    Ok(vec![ip])
}

fn too_many() -> RangeError {
    RangeError(format!(
        "too many addresses: one scan covers at most {MAX_ADDRESSES}"
    ))
}

/// Expand all ranges, deduplicated, in the order given; at most
/// [`MAX_ADDRESSES`] in total.
pub fn expand_ranges<S: AsRef<str>>(ranges: &[S]) -> Result<Vec<IpAddr>, RangeError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in ranges {
        let budget = MAX_ADDRESSES - out.len() as u64;
        for ip in expand_one(r.as_ref(), budget)? {
            if seen.insert(ip) {
                out.push(ip);
            }
        }
        if out.len() as u64 > MAX_ADDRESSES {
            return Err(too_many());
        }
    }
    Ok(out)
}

/// Scan settings.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// SNMPv3 users, tried in order before the communities.
    pub v3: Vec<V3Security>,
    /// Tried in order, each with v2c then v1.
    pub communities: Vec<String>,
    pub port: u16,
    pub timeout: Duration,
    pub retries: u32,
    pub concurrency: usize,
    pub progress: bool,
    /// PTR lookups of the printers found (`None`: off).
    pub dns: Option<Arc<Names>>,
    /// NetBIOS node status of the printers found (IPv4; `None`: off).
    pub netbios: Option<NetbiosOptions>,
    /// Address → the host name it was written as (see `names`).
    pub target_names: Vec<(IpAddr, String)>,
    /// When given, a walk or NetBIOS request goes only to addresses it
    /// allows with the host's own addresses of the moment (a scan is long).
    pub policy: Option<Arc<LivePolicy>>,
}

/// Name lookups in flight at once (they wait on other hosts' answers, not
/// on the walk budget).
const NAME_LOOKUPS: usize = 256;

/// DNS and NetBIOS names of a printer found at `ip`.
async fn add_names(rec: &mut DeviceRecord, ip: IpAddr, opts: &ScanOptions) {
    rec.target_name = opts
        .target_names
        .iter()
        .find(|(a, _)| *a == ip)
        .map(|(_, n)| n.clone());
    let dns = async {
        match &opts.dns {
            Some(n) => n.reverse(ip).await,
            None => None,
        }
    };
    let allowed = opts
        .policy
        .as_ref()
        .is_none_or(|p| p.recent().decide_icmp(ip).allowed);
    let nb = async {
        match (opts.netbios, ip) {
            (Some(o), IpAddr::V4(v4)) if allowed => netbios::query(v4, o).await,
            _ => None,
        }
    };
    let (dns, nb) = tokio::join!(dns, nb);
    rec.dns_name = dns;
    rec.netbios_name = nb;
}

/// What one address turned out to be.
#[derive(Debug)]
pub enum Outcome {
    Printer(Box<DeviceRecord>),
    /// An SNMP agent answered, but it is no printer.
    NotPrinter,
    /// An SNMPv3 engine answered but refused every v3 user (and no
    /// community worked): the last refusal, one line.
    Refused(String),
    Silent,
}

async fn walk_and_decode(ip: IpAddr, client: &Client) -> Outcome {
    let run = client.walk_all(WALK_ROOTS, MAX_VARBINDS).await;
    let mut rec = decode(&ip.to_string(), &run.walk);
    // A walk cut short leaves a trace in the record: missing values then
    // read as "could not read", not as "the device has none".
    for (root, e) in &run.failures {
        tracing::debug!(%ip, "walk of {root} cut short: {e}");
        rec.field_errors.push(FieldError {
            field: "walk".into(),
            error: format!("{root}: {e}"),
        });
    }
    if run.exhausted {
        rec.field_errors.push(FieldError {
            field: "walk".into(),
            error: format!("stopped after {MAX_VARBINDS} values"),
        });
    }
    match rec.printer_index {
        Some(_) => Outcome::Printer(Box::new(rec)),
        None => Outcome::NotPrinter,
    }
}

/// Each v3 user in turn; the first that answers is walked. `Err`: none
/// did, with the last refusal if an engine refused.
async fn try_v3(ip: IpAddr, opts: &ScanOptions) -> Result<Outcome, Option<String>> {
    let addr = SocketAddr::new(ip, opts.port);
    let mut refused = None;
    for sec in &opts.v3 {
        let client = Client::new(addr, Version::V3(sec.clone()), opts.timeout, opts.retries);
        match client.probe().await {
            Ok(resp) if answered(&resp) => return Ok(walk_and_decode(ip, &client).await),
            Ok(_) => {}
            Err(SnmpError::V3 { message, .. }) => {
                tracing::debug!(%ip, "{message}");
                refused = Some(message);
            }
            // No v3 engine answered discovery: other users cannot fare better.
            Err(e) => {
                tracing::debug!(%ip, user = sec.user(), "no answer: {e}");
                break;
            }
        }
    }
    Err(refused)
}

fn community_client(ip: IpAddr, opts: &ScanOptions, version: Version, community: &str) -> Client {
    Client::new(
        SocketAddr::new(ip, opts.port),
        version,
        opts.timeout,
        opts.retries,
    )
    .with_community(community.as_bytes())
}

/// Probe one address on its own: each v3 user, then each community (v2c
/// then v1); the first that answers is walked. Costs `timeout × attempts`
/// per version and community on a silent address: [`scan`] runs
/// discovery first and uses this only where discovery cannot help.
pub async fn scan_one(ip: IpAddr, opts: &ScanOptions) -> Outcome {
    let refused = match try_v3(ip, opts).await {
        Ok(outcome) => return outcome,
        Err(r) => r,
    };
    for community in &opts.communities {
        for version in [Version::V2c, Version::V1] {
            let client = community_client(ip, opts, version.clone(), community);
            match client.probe().await {
                Ok(resp) if answered(&resp) => return walk_and_decode(ip, &client).await,
                Ok(_) => {}
                Err(e) => tracing::debug!(%ip, ?version, "no answer: {e}"),
            }
        }
    }
    match refused {
        Some(r) => Outcome::Refused(r),
        None => Outcome::Silent,
    }
}

/// Walk an address discovery found: v3 users first if its engine answered
/// (as [`scan_one`]), then the community that answered discovery.
async fn scan_found(ip: IpAddr, answer: Answer, opts: &ScanOptions) -> Outcome {
    let mut refused = None;
    if answer.v3 && !opts.v3.is_empty() {
        match try_v3(ip, opts).await {
            Ok(outcome) => return outcome,
            Err(r) => refused = r,
        }
    }
    let Some((version, c)) = answer.community else {
        return refused.map_or(Outcome::Silent, Outcome::Refused);
    };
    let Some(community) = opts.communities.get(c) else {
        return Outcome::Silent;
    };
    let version = match version {
        CommunityVersion::V2c => Version::V2c,
        CommunityVersion::V1 => Version::V1,
    };
    walk_and_decode(ip, &community_client(ip, opts, version, community)).await
}

/// The printers found, in address order, and the addresses whose SNMPv3
/// engine refused the credentials.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub devices: Vec<DeviceRecord>,
    pub refused: Vec<(IpAddr, String)>,
}

/// Scan every address: discovery over one socket finds the responders
/// (see [`super::discover`]), and each is walked as soon as it is found,
/// with at most `opts.concurrency` walks in flight.
pub async fn scan(addrs: Vec<IpAddr>, opts: ScanOptions) -> ScanReport {
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(addrs.len() as u64);
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
        {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opts = Arc::new(opts);
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let name_sem = Arc::new(tokio::sync::Semaphore::new(NAME_LOOKUPS));
    let mut set = tokio::task::JoinSet::new();
    let spawn = |set: &mut tokio::task::JoinSet<_>, ip: IpAddr, answer: Option<Answer>| {
        let (opts, sem, name_sem, bar) = (opts.clone(), sem.clone(), name_sem.clone(), bar.clone());
        set.spawn(
            async move {
                let permit = sem.acquire_owned().await.ok()?;
                // The targets were decided before the scan (the agent's
                // ranges, or what a person typed); what can change since is
                // which addresses are this host's own.
                if opts.policy.as_ref().is_some_and(|p| {
                    p.recent().decide_icmp(ip).rule == dwa_policy::agent::Rule::OwnAddress
                }) {
                    tracing::debug!(%ip, "not walked: an address of this host now");
                    bar.inc(1);
                    return Some((ip, Outcome::Silent));
                }
                let mut outcome = match answer {
                    Some(a) => scan_found(ip, a, &opts).await,
                    // Discovery failed: the old way, address by address.
                    None => scan_one(ip, &opts).await,
                };
                // The walk slot is free again while names are looked up.
                drop(permit);
                if let Outcome::Printer(rec) = &mut outcome {
                    let _names = name_sem.acquire_owned().await.ok()?;
                    add_names(rec, ip, &opts).await;
                }
                bar.inc(1);
                Some((ip, outcome))
            }
            .instrument(tracing::debug_span!("scan", %ip)),
        );
    };

    let dopts = DiscoverOptions {
        communities: opts.communities.clone(),
        v3: !opts.v3.is_empty(),
        port: opts.port,
        timeout: opts.timeout,
        retries: opts.retries,
        rate: SEND_RATE,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let all = Arc::new(addrs);
    let discovery = {
        let all = all.clone();
        let span = tracing::info_span!("discover", addresses = all.len());
        tokio::spawn(async move { discover(&all, &dopts, tx).await }.instrument(span))
    };
    let mut reported = HashSet::new();
    while let Some(d) = rx.recv().await {
        reported.insert(d.ip);
        match d.answer {
            Some(a) => spawn(&mut set, d.ip, Some(a)),
            None => bar.inc(1),
        }
    }
    let failed = match discovery.await {
        Ok(Ok(stats)) => {
            tracing::debug!(?stats, "discovery done");
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(e) = failed {
        tracing::warn!("{e}; probing address by address instead");
        for ip in all.iter().filter(|ip| !reported.contains(ip)) {
            spawn(&mut set, *ip, None);
        }
    }

    let mut found = Vec::new();
    let mut refused = Vec::new();
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Some((ip, Outcome::Printer(r)))) => {
                bar.set_message(format!("{} found", found.len() + 1));
                found.push((ip, *r));
            }
            Ok(Some((ip, Outcome::Refused(why)))) => refused.push((ip, why)),
            _ => {}
        }
    }
    bar.finish_and_clear();
    found.sort_by_key(|(ip, _)| *ip);
    refused.sort();
    ScanReport {
        devices: found.into_iter().map(|(_, r)| r).collect(),
        refused,
    }
}

// ------------------------------------------------------------------ output

/// Output format of `dwa-agent scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Lowest remaining percentage over the consumed supplies.
pub fn lowest_percent(r: &DeviceRecord) -> Option<f32> {
    r.supplies
        .iter()
        .filter(|s| s.class != Some(SupplyClass::Receptacle))
        .filter_map(|s| s.percent)
        .min_by(|a, b| a.total_cmp(b))
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn percent(p: f32) -> String {
    format!("{}%", (p * 10.0).round() / 10.0)
}

/// Fixed-width table, one device per line.
pub fn table(records: &[DeviceRecord]) -> String {
    let head = [
        "ADDRESS",
        "MANUFACTURER",
        "MODEL",
        "SERIAL",
        "MAC",
        "TOTAL",
        "LOWEST SUPPLY",
    ];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            [
                r.address.clone(),
                opt(&r.manufacturer).to_string(),
                opt(&r.model).to_string(),
                opt(&r.serial).to_string(),
                opt(&r.mac).to_string(),
                r.counters
                    .total
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into()),
                lowest_percent(r).map(percent).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

fn supply_label(s: &dwa_proto::telemetry::Supply) -> String {
    let d = s
        .description
        .clone()
        .unwrap_or_else(|| format!("supply {}", s.index));
    match &s.colour {
        Some(c) => format!("{d} ({c})"),
        None => d,
    }
}

fn supply_cell(s: &dwa_proto::telemetry::Supply) -> String {
    let level = match s.level {
        Level::Value(v) => v.to_string(),
        Level::Other => "other".into(),
        Level::Unknown => "unknown".into(),
        Level::SomeRemaining => "some remaining".into(),
        Level::Absent => String::new(),
    };
    let pct = s.percent.or(s.fullness_percent.map(|f| 100.0 - f));
    match (s.max, pct) {
        (Level::Value(m), Some(p)) => format!("{level}/{m} ({})", percent(p)),
        (_, Some(p)) => format!("{level} ({})", percent(p)),
        (Level::Value(m), None) => format!("{level}/{m}"),
        _ => level,
    }
}

/// CSV: identity columns, counters, then one column per supply label seen
/// (`dwa_proto::csv`: every string here came from a device, so every text
/// cell goes through the formula rule).
pub fn csv(records: &[DeviceRecord]) -> Result<String, CsvError> {
    let mut supplies: Vec<String> = Vec::new();
    for r in records {
        for s in &r.supplies {
            let l = supply_label(s);
            if !supplies.contains(&l) {
                supplies.push(l);
            }
        }
    }
    let head = [
        "address",
        "name",
        "manufacturer",
        "model",
        "serial",
        "mac",
        "dns_name",
        "netbios_name",
        "firmware",
        "location",
        "total",
        "mono",
        "colour",
        "print",
        "copy",
        "scan",
        "fax",
    ];
    let mut t = Table::new(
        head.iter()
            .copied()
            .chain(supplies.iter().map(String::as_str)),
    )?;
    for r in records {
        let s = |o: &Option<String>| Cell::opt_text(o.as_deref());
        let c = &r.counters;
        let mut cells = vec![
            Cell::text(&r.address),
            s(&r.sys_name),
            s(&r.manufacturer),
            s(&r.model),
            s(&r.serial),
            s(&r.mac),
            s(&r.dns_name),
            s(&r.netbios_name),
            s(&r.firmware),
            s(&r.sys_location),
            Cell::opt_number(c.total),
            Cell::opt_number(c.mono),
            Cell::opt_number(c.colour),
            Cell::opt_number(c.print),
            Cell::opt_number(c.copy),
            Cell::opt_number(c.scan),
            Cell::opt_number(c.fax),
        ];
        for label in &supplies {
            cells.push(Cell::text(
                &r.supplies
                    .iter()
                    .find(|x| &supply_label(x) == label)
                    .map(supply_cell)
                    .unwrap_or_default(),
            ));
        }
        t.row(cells)?;
    }
    t.finish()
}

/// Render in the given format (JSON: an array of device records).
pub fn render(records: &[DeviceRecord], format: Format) -> Result<String, CsvError> {
    Ok(match format {
        Format::Table => table(records),
        Format::Csv => csv(records)?,
        Format::Json => {
            let mut s = serde_json::to_string_pretty(records).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_skips_network_and_broadcast() {
        let a = expand_ranges(&["10.0.0.0/30"]).unwrap();
        assert_eq!(a, vec![v4("10.0.0.1"), v4("10.0.0.2")]);
        let a = expand_ranges(&["10.0.0.4/31"]).unwrap();
        assert_eq!(a, vec![v4("10.0.0.4"), v4("10.0.0.5")]);
        assert_eq!(expand_ranges(&["10.0.0.0/24"]).unwrap().len(), 254);
        assert_eq!(expand_ranges(&["10.0.0.0/16"]).unwrap().len(), 65_534);
    }

    #[test]
    fn dash_ranges_single_and_dedup() {
        let a = expand_ranges(&[
            "192.168.1.10-12",
            "192.168.1.11",
            "192.168.1.12-192.168.1.13",
        ])
        .unwrap();
        assert_eq!(
            a,
            [
                "192.168.1.10",
                "192.168.1.11",
                "192.168.1.12",
                "192.168.1.13"
            ]
            .map(v4)
        );
    }

    #[test]
    fn spans_may_cross_a_24_within_the_budget() {
        let a = expand_ranges(&["192.168.1.254-192.168.2.1"]).unwrap();
        assert_eq!(
            a,
            [
                "192.168.1.254",
                "192.168.1.255",
                "192.168.2.0",
                "192.168.2.1"
            ]
            .map(v4)
        );
    }

    #[test]
    fn bad_input_and_caps() {
        for bad in [
            "10.0.0.0/15",
            "10.0.0.0/33",
            "192.168.1.20-10",
            "10.0.0.0-10.2.0.0",
            "printer",
            "224.0.0.1",
            "255.255.255.255",
            "10.0.0.1-300",
        ] {
            let e = expand_ranges(&[bad]).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        assert!(expand_ranges(&["10.0.0.0/16", "10.1.0.0/16"]).is_err());
        assert!(expand_ranges(&["224.0.0.0/24", "255.255.255.0/24"])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn csv_quotes_and_defuses_what_devices_say() {
        let rec = DeviceRecord {
            address: "10.0.0.5".into(),
            model: Some("LaserJet, \"M404\"".into()),
            sys_location: Some("=HYPERLINK(\"http://x\")".into()),
            ..Default::default()
        };
        let out = csv(&[rec]).unwrap();
        let row = out.lines().nth(1).unwrap();
        assert!(row.contains("\"LaserJet, \"\"M404\"\"\""), "{row}");
        assert!(row.contains("'=HYPERLINK"), "{row}");
        assert_eq!(csv(&[]).unwrap().lines().count(), 1);
    }
}
