//! Scheduled telemetry in `dwa-agent run`: scan the configured ranges every
//! `scan.interval` (and when the relay says "scan now"), spool each scan's
//! readings and its end marker in one transaction, nudge the uploader.
//!
//! Settings pushed by the relay (`ScanConfig`) may change the ranges and the
//! interval, within the agent's own rules: every range must lie inside the
//! local ceiling (`policy.allow`, which defaults to the local scan ranges),
//! and the relay cannot make the agent scan more often than once a minute
//! (neither by the interval nor by a flood of "scan now"). Every address a
//! scan sends to passes the same full address policy as a stream (deny
//! list, loopback and other special blocks, the agent's own addresses), at
//! every scan: a range inside the ceiling may still hold denied hosts.
//! Credentials (communities, SNMPv3 users) never come from the relay. Pushed
//! settings live in memory: the relay sends them again after every
//! (re)connect, and until then the local configuration applies.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dwa_policy::agent::AgentPolicy;
use dwa_proto::control::{ScanApplied, ScanSettings};
use dwa_proto::telemetry::{IngestItem, Reading, ScanDone, TrapEvent};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::names::{self, Names};
use super::scan::{self, ScanOptions};
use super::spool::Spool;
use crate::error::{AgentError, Result};
use crate::policy::LivePolicy;

/// Bounds on an interval pushed by the relay.
pub const MIN_PUSHED_INTERVAL: Duration = Duration::from_secs(60);
pub const MAX_PUSHED_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Least time between two scans the relay asks for ("scan now"): a flood
/// of requests costs one scan a minute, the rest wait and merge.
pub const MIN_SCAN_NOW_GAP: Duration = Duration::from_secs(60);

/// When a pending "scan now" may run, given when the last one the relay
/// asked for started. Pure: the time is passed in.
pub fn scan_now_due(last_request: Option<Instant>, now: Instant) -> Instant {
    match last_request {
        Some(last) => (last + MIN_SCAN_NOW_GAP).max(now),
        None => now,
    }
}

/// The addresses of a scan the policy lets the agent send to (normalized:
/// the address checked is the address sent to), how many it refused, and
/// the first refusal's reason. Pure.
pub fn allowed_targets(
    policy: &AgentPolicy,
    addrs: Vec<IpAddr>,
) -> (Vec<IpAddr>, usize, Option<String>) {
    let mut refused = 0;
    let mut first = None;
    let allowed = addrs
        .into_iter()
        .filter_map(|ip| {
            let d = policy.decide_icmp(ip);
            if d.allowed {
                return Some(d.addr);
            }
            refused += 1;
            first.get_or_insert_with(|| format!("{ip}: {}", d.reason()));
            None
        })
        .collect();
    (allowed, refused, first)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to scan and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ranges: Vec<String>,
    pub interval: Duration,
}

/// Applies relay settings to the local plan. Pure: the ceiling decides.
pub fn apply(local: &Plan, policy: &AgentPolicy, s: &ScanSettings) -> (Plan, ScanApplied) {
    let mut refused = Vec::new();
    let ranges = match &s.ranges {
        None => local.ranges.clone(),
        Some(wanted) => wanted
            .iter()
            .filter(|r| {
                // The ceiling first: it is the reason that matters to a
                // reviewer; then whether the scanner can take the form.
                let why = match bounds(r) {
                    None => Some("not an address, CIDR network or first-last span".into()),
                    Some((first, last)) if !policy.covers_span(first, last) => Some(
                        "outside this agent's ceiling (policy.allow in agent.toml)".to_string(),
                    ),
                    // A single host the policy refuses is said so now; wider
                    // ranges are filtered address by address at each scan.
                    Some((first, last)) if first == last && !policy.decide_icmp(first).allowed => {
                        Some(format!(
                            "refused by this agent's policy: {}",
                            policy.decide_icmp(first).reason()
                        ))
                    }
                    Some(_) => scan::expand_ranges(&[r.as_str()]).err().map(|e| e.0),
                };
                match why {
                    Some(why) => {
                        refused.push(((*r).clone(), why));
                        false
                    }
                    None => true,
                }
            })
            .cloned()
            .collect(),
    };
    let interval = match s.interval_secs {
        None => local.interval,
        Some(secs) => Duration::from_secs(secs).clamp(MIN_PUSHED_INTERVAL, MAX_PUSHED_INTERVAL),
    };
    let applied = ScanApplied {
        ranges: ranges.clone(),
        interval_secs: interval.as_secs(),
        refused,
    };
    (Plan { ranges, interval }, applied)
}

/// First and last address of a range as written: CIDR, address,
/// `a.b.c.x-y` or `first-last`.
fn bounds(r: &str) -> Option<(IpAddr, IpAddr)> {
    let r = r.trim();
    if let Some((a, b)) = r.split_once('-') {
        let first: IpAddr = a.trim().parse().ok()?;
        let last = match (first, b.trim().parse::<u8>()) {
            (IpAddr::V4(v4), Ok(x)) => {
                let o = v4.octets();
                IpAddr::V4(std::net::Ipv4Addr::new(o[0], o[1], o[2], x))
            }
            _ => b.trim().parse().ok()?,
        };
        return Some((first, last));
    }
    let net = r
        .parse::<ipnetwork::IpNetwork>()
        .ok()
        .or_else(|| r.parse::<IpAddr>().ok().map(ipnetwork::IpNetwork::from))?;
    Some(match net {
        ipnetwork::IpNetwork::V4(n) => (n.network().into(), n.broadcast().into()),
        ipnetwork::IpNetwork::V6(n) => (n.network().into(), n.broadcast().into()),
    })
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub struct Collector {
    /// agent.toml's plan (replaced on SIGHUP, see [`Collector::reconfigure`]).
    local: Mutex<Plan>,
    /// The relay's last settings, applied again to a reloaded local plan.
    relay_settings: Mutex<ScanSettings>,
    policy: Arc<LivePolicy>,
    /// Template for each scan (credentials, port, timeouts, concurrency).
    options: Mutex<ScanOptions>,
    /// Resolves host-name ranges at each scan.
    names: Arc<Names>,
    spool: Spool,
    /// The uploader's nudge.
    uploader: Arc<Notify>,
    plan: Mutex<Plan>,
    /// Pending "scan now" request, if any.
    now: Mutex<Option<String>>,
    wake: Notify,
    /// Told of each scan spooled (`dwa-agent status`).
    status: std::sync::OnceLock<Arc<crate::status::StatusBoard>>,
}

impl Collector {
    /// Reports each scan spooled to `board` from now on.
    pub fn report_to(&self, board: Arc<crate::status::StatusBoard>) {
        let _ = self.status.set(board);
    }

    pub fn new(
        local: Plan,
        policy: Arc<LivePolicy>,
        options: ScanOptions,
        names: Arc<Names>,
        spool: Spool,
        uploader: Arc<Notify>,
    ) -> Collector {
        Collector {
            plan: Mutex::new(local.clone()),
            local: Mutex::new(local),
            relay_settings: Mutex::new(ScanSettings::default()),
            policy,
            options: Mutex::new(options),
            names,
            spool,
            uploader,
            now: Mutex::new(None),
            wake: Notify::new(),
            status: std::sync::OnceLock::new(),
        }
    }

    pub fn plan(&self) -> Plan {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Relay settings: adopt what the ceiling allows, say what was refused.
    pub fn configure(&self, s: &ScanSettings) -> ScanApplied {
        *lock(&self.relay_settings) = s.clone();
        // Each scan decides its addresses again (`scan_with`).
        let local = lock(&self.local).clone();
        let (plan, applied) = apply(&local, &self.policy.recent(), s);
        for (range, why) in &applied.refused {
            tracing::warn!(%range, "scan range from the relay refused: {why}");
        }
        tracing::info!(ranges = ?plan.ranges, interval = ?plan.interval, "scan settings from the relay");
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
        self.wake.notify_one();
        applied
    }

    /// agent.toml changed (SIGHUP): its ranges, interval and SNMP settings
    /// from now on, under the relay's last settings as `configure` applies
    /// them. A running scan finishes with the settings it started with.
    pub fn reconfigure(&self, local: Plan, options: ScanOptions) -> ScanApplied {
        *lock(&self.options) = options;
        let settings = lock(&self.relay_settings).clone();
        let (plan, applied) = apply(&local, &self.policy.recent(), &settings);
        *lock(&self.local) = local;
        tracing::info!(ranges = ?plan.ranges, interval = ?plan.interval, "scan settings from agent.toml");
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = plan;
        self.wake.notify_one();
        applied
    }

    /// The relay asked for a scan now.
    pub fn scan_now(&self, request: String) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = Some(request);
        self.wake.notify_one();
    }

    /// Scans at start, then on schedule or request, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut trigger = "startup".to_string();
        let mut last_request: Option<Instant> = None;
        loop {
            let plan = self.plan();
            let started = Instant::now();
            if plan.ranges.is_empty() {
                tracing::info!("no scan ranges configured: telemetry idle");
            } else {
                let scan = self.scan_once(&plan, &trigger);
                tokio::select! {
                    r = scan => if let Err(e) = r {
                        tracing::error!(error = %e, "scan could not be spooled");
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
            // Wait for the next scan: the schedule (counted from this scan's
            // start, re-read when the settings change) or a request, at
            // most one request a minute (see `scan_now_due`).
            trigger = loop {
                let now = Instant::now();
                let pending = self.now.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                let request_at = pending.then(|| scan_now_due(last_request, now));
                if request_at.is_some_and(|at| at <= now) {
                    if let Some(req) = self.now.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        last_request = Some(now);
                        break format!("relay:{req}");
                    }
                }
                let due = started + self.plan().interval;
                if due <= now {
                    break "schedule".to_string();
                }
                if request_at.is_some() {
                    tracing::debug!("scan requested within a minute of the last one: deferred");
                }
                let wake_at = request_at.map_or(due, |at| at.min(due));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake_at.into()) => {}
                    _ = self.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            };
        }
    }

    /// A printer alert trap from `ip`: scan that one printer now; its
    /// reading carries the trap (see `traps`).
    pub async fn scan_trap(&self, ip: IpAddr, trap: TrapEvent) -> Result<ScanDone> {
        let plan = Plan {
            ranges: vec![ip.to_string()],
            interval: self.plan().interval,
        };
        self.scan_with(&plan, "trap", Some(trap)).await
    }

    /// One scan: readings and the end marker go to the spool together.
    pub async fn scan_once(&self, plan: &Plan, trigger: &str) -> Result<ScanDone> {
        self.scan_with(plan, trigger, None).await
    }

    async fn scan_with(
        &self,
        plan: &Plan,
        trigger: &str,
        trap: Option<TrapEvent>,
    ) -> Result<ScanDone> {
        let started_at = now_text();
        // Host names are resolved at every scan; each address they give is
        // checked by the policy, and only allowed ones are scanned.
        let policy = self.policy.now();
        let resolved = names::resolve_targets(&self.names, Some(&policy), &plan.ranges).await;
        for (target, why) in &resolved.refused {
            tracing::warn!(%target, "scan target skipped: {why}");
        }
        let expanded =
            scan::expand_ranges(&resolved.ranges).map_err(|e| AgentError::Config(e.0))?;
        let (addrs, refused, first) = allowed_targets(&policy, expanded);
        if let Some(first) = first {
            tracing::warn!(
                refused,
                "scan addresses refused by the policy, e.g. {first}"
            );
        }
        let addresses = addrs.len() as u32;
        let mut options = lock(&self.options).clone();
        options.target_names = resolved.names;
        let report = scan::scan(addrs, options).await;
        for (ip, why) in &report.refused {
            tracing::warn!(%ip, "SNMPv3 refused: {why}");
        }
        let scan_id = random_id();
        let taken_at = now_text();
        let done = ScanDone {
            id: scan_id.clone(),
            started_at,
            finished_at: taken_at.clone(),
            trigger: trigger.to_string(),
            ranges: plan.ranges.clone(),
            addresses,
            found: report.devices.len() as u32,
        };
        let mut items: Vec<IngestItem> = report
            .devices
            .into_iter()
            .map(|mut record| {
                record.trap = trap.clone();
                IngestItem::Reading(Reading {
                    id: random_id(),
                    scan: scan_id.clone(),
                    taken_at: taken_at.clone(),
                    record,
                })
            })
            .collect();
        items.push(IngestItem::ScanDone(done.clone()));
        let was_empty = self.spool.stats().await.is_ok_and(|s| s.pending == 0);
        self.spool.push(&items).await?;
        if let Some(b) = self.status.get() {
            b.scanned(
                crate::status::ScanSeen {
                    at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    id: done.id.clone(),
                    trigger: done.trigger.clone(),
                    addresses: done.addresses,
                    found: done.found,
                },
                was_empty,
            );
        }
        tracing::info!(scan = %scan_id, trigger, addresses, found = done.found, "scan spooled");
        self.uploader.notify_one();
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_policy::agent::PolicyConfig;

    fn policy(allow: &[&str]) -> AgentPolicy {
        let cfg = PolicyConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..PolicyConfig::default()
        };
        AgentPolicy::from_config(&cfg, vec![]).unwrap()
    }

    fn policy_with(allow: &[&str], deny: &[&str], own: &[&str]) -> AgentPolicy {
        let cfg = PolicyConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..PolicyConfig::default()
        };
        let own = own.iter().map(|a| a.parse().unwrap()).collect();
        AgentPolicy::from_config(&cfg, own).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_pushed_host_the_policy_refuses_is_refused_with_the_reason() {
        let p = policy_with(&["127.31.0.0/24"], &["127.31.0.9/32"], &[]);
        let s = ScanSettings {
            ranges: Some(vec!["127.31.0.9".into(), "127.31.0.10".into()]),
            interval_secs: None,
        };
        let (plan, applied) = apply(&local(), &p, &s);
        assert_eq!(plan.ranges, ["127.31.0.10"]);
        assert_eq!(applied.refused.len(), 1, "{:?}", applied.refused);
        assert_eq!(applied.refused[0].0, "127.31.0.9");
        assert!(
            applied.refused[0].1.contains("deny"),
            "{:?}",
            applied.refused
        );

        // Inside a ceiling of everything, loopback is still special.
        let all = policy_with(&["0.0.0.0/0"], &[], &[]);
        let s = ScanSettings {
            ranges: Some(vec!["127.0.0.1".into(), "169.254.169.254".into()]),
            interval_secs: None,
        };
        let (plan, applied) = apply(&local(), &all, &s);
        assert!(plan.ranges.is_empty(), "{:?}", plan.ranges);
        assert_eq!(applied.refused.len(), 2);
    }

    #[test]
    fn every_scanned_address_passes_the_full_address_policy() {
        let p = policy_with(&["0.0.0.0/0"], &["10.1.0.9/32"], &["10.1.0.7"]);
        let wanted = ips(&[
            "10.1.0.8",
            "10.1.0.9",
            "10.1.0.7",
            "127.0.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:10.1.0.10",
        ]);
        let (allowed, refused, first) = allowed_targets(&p, wanted);
        assert_eq!(allowed, ips(&["10.1.0.8", "10.1.0.10"]));
        assert_eq!(refused, 6);
        assert!(first.is_some_and(|f| f.starts_with("10.1.0.9")));

        let (allowed, refused, first) = allowed_targets(&p, vec![]);
        assert!(allowed.is_empty() && refused == 0 && first.is_none());
    }

    #[test]
    fn scan_now_runs_at_most_once_a_minute() {
        let t0 = Instant::now();
        assert_eq!(scan_now_due(None, t0), t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(scan_now_due(Some(t0), later), t0 + MIN_SCAN_NOW_GAP);
        let much_later = t0 + MIN_SCAN_NOW_GAP + Duration::from_secs(1);
        assert_eq!(scan_now_due(Some(t0), much_later), much_later);
    }

    fn local() -> Plan {
        Plan {
            ranges: vec!["10.1.0.0/24".into()],
            interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn relay_settings_narrow_but_never_widen() {
        let p = policy(&["10.1.0.0/16"]);
        let s = ScanSettings {
            ranges: Some(vec![
                "10.1.7.0/24".into(),
                "10.0.0.0/8".into(),
                "192.168.1.0/24".into(),
                "10.1.9.9".into(),
                "nonsense".into(),
                "10.1.3.250-10.1.4.5".into(),
                "10.1.255.250-10.2.0.5".into(),
            ]),
            interval_secs: Some(120),
        };
        let (plan, applied) = apply(&local(), &p, &s);
        assert_eq!(
            plan.ranges,
            ["10.1.7.0/24", "10.1.9.9", "10.1.3.250-10.1.4.5"]
        );
        assert_eq!(plan.interval, Duration::from_secs(120));
        let refused: Vec<_> = applied.refused.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            refused,
            [
                "10.0.0.0/8",
                "192.168.1.0/24",
                "nonsense",
                "10.1.255.250-10.2.0.5"
            ]
        );
        assert!(applied.refused[0].1.contains("ceiling"));
        assert_eq!(applied.ranges, plan.ranges);
    }

    #[test]
    fn absent_settings_keep_local_ones_and_intervals_are_clamped() {
        let p = policy(&["10.1.0.0/16"]);
        let (plan, applied) = apply(&local(), &p, &ScanSettings::default());
        assert_eq!(plan, local());
        assert!(applied.refused.is_empty());
        let fast = ScanSettings {
            ranges: None,
            interval_secs: Some(1),
        };
        assert_eq!(apply(&local(), &p, &fast).0.interval, MIN_PUSHED_INTERVAL);
        let slow = ScanSettings {
            ranges: Some(vec![]),
            interval_secs: Some(u64::MAX / 2),
        };
        let (plan, _) = apply(&local(), &p, &slow);
        assert_eq!(plan.interval, MAX_PUSHED_INTERVAL);
        assert!(plan.ranges.is_empty(), "the relay may stop scanning");
    }
}
