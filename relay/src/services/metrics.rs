//! The relay's metrics: one registry, each instrument a field that the
//! service where the event happens updates (atomic counters, nothing on a
//! hot path takes a lock). What is already counted elsewhere (connected
//! agents, live sessions and tunnels, handshake slots) is not counted
//! twice: the `/metrics` adapter samples it into gauges at each scrape
//! ([`Metrics::sample`]). Names and labels follow Prometheus' conventions:
//! `dwa_relay_` prefix, `_total` counters, `_seconds` and `_bytes` units,
//! label values from fixed sets only (never an agent id or a user name).
//! Every metric is listed in docs/operations.md ("Metrics").

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwa_link::flow::StreamStats;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Why the relay refused a stream (`dwa_relay_streams_denied_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The agent is revoked.
    AgentRevoked,
    /// The agent's session has no control channel and no forward.
    NoRoute,
    /// The relay's own check (device not registered, port not allowed).
    RelayPolicy,
    /// The agent has `limits.max_streams_per_agent` streams open.
    StreamLimit,
    /// TLS toward the target through a plain SSH forward.
    TlsNeedsAgent,
    /// The agent's policy refused it.
    AgentPolicy,
}

impl DenyReason {
    pub const ALL: [DenyReason; 6] = [
        DenyReason::AgentRevoked,
        DenyReason::NoRoute,
        DenyReason::RelayPolicy,
        DenyReason::StreamLimit,
        DenyReason::TlsNeedsAgent,
        DenyReason::AgentPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::AgentRevoked => "agent_revoked",
            DenyReason::NoRoute => "no_route",
            DenyReason::RelayPolicy => "relay_policy",
            DenyReason::StreamLimit => "stream_limit",
            DenyReason::TlsNeedsAgent => "tls_needs_agent",
            DenyReason::AgentPolicy => "agent_policy",
        }
    }
}

/// Why a log-in failed (`dwa_relay_login_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong user name or password (the answer does not say which).
    Password,
    Locked,
    Deactivated,
    TotpRequired,
    TotpInvalid,
    TotpReused,
    /// Too many failures for the account or the source address.
    RateLimited,
}

impl LoginFailure {
    pub const ALL: [LoginFailure; 7] = [
        LoginFailure::Password,
        LoginFailure::Locked,
        LoginFailure::Deactivated,
        LoginFailure::TotpRequired,
        LoginFailure::TotpInvalid,
        LoginFailure::TotpReused,
        LoginFailure::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginFailure::Password => "password",
            LoginFailure::Locked => "locked",
            LoginFailure::Deactivated => "deactivated",
            LoginFailure::TotpRequired => "totp_required",
            LoginFailure::TotpInvalid => "totp_invalid",
            LoginFailure::TotpReused => "totp_reused",
            LoginFailure::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

type IntGauge = Gauge<i64, AtomicI64>;

/// What the adapter samples at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub agents: usize,
    pub web_sessions: usize,
    pub tunnels: usize,
    pub handshakes_in_use: usize,
    pub handshake_slots: usize,
}

/// The registry and its instruments. One per relay process, in
/// `Services::metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    agents_connected: IntGauge,
    handshakes_in_use: IntGauge,
    handshake_slots: IntGauge,
    web_sessions_live: IntGauge,
    tunnels_live: IntGauge,
    streams_opened: Counter,
    streams_open: IntGauge,
    streams_failed: Counter,
    streams_denied: Family<ReasonLabel, Counter>,
    stream_bytes: Family<DirectionLabel, Counter>,
    audit_write: Histogram,
    audit_in_flight: IntGauge,
    audit_failures: Counter,
    ingest_readings: Counter,
    ingest_rejected: Counter,
    login_failures: Family<ReasonLabel, Counter>,
    store: Family<OpLabel, Histogram>,
}

/// 0.5 ms .. about 16 s: a local SQLite commit with `synchronous = FULL`
/// takes milliseconds; seconds mean a stalled disk or lock contention.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("dwa_relay");
        let r = &mut root;
        let mut m = Metrics {
            // Replaced by `root` below, once the instruments are in it.
            registry: Registry::default(),
            agents_connected: reg(r, "agents_connected", "Agents with an authenticated session."),
            handshakes_in_use: reg(
                r,
                "ssh_handshakes_in_progress",
                "SSH handshake slots in use (connect to authenticated).",
            ),
            handshake_slots: reg(
                r,
                "ssh_handshake_slots",
                "SSH handshake slots in all (limits.max_handshakes).",
            ),
            web_sessions_live: reg(r, "web_sessions_live", "Device Web Access sessions live."),
            tunnels_live: reg(r, "tunnels_live", "Raw TCP tunnels live."),
            streams_opened: reg(r, "streams_opened", "Streams opened through agents."),
            streams_open: reg(r, "streams_open", "Streams open through agents now."),
            streams_failed: reg(
                r,
                "streams_failed",
                "Streams that did not open for want of an answer (agent not connected, timeout, audit down).",
            ),
            streams_denied: reg(
                r,
                "streams_denied",
                "Streams refused, by the relay's check or the agent's policy, by reason.",
            ),
            stream_bytes: {
                let f = Family::<DirectionLabel, Counter>::default();
                r.register_with_unit(
                    "stream",
                    "Bytes carried by streams that ended: up is client to device, down is device to client.",
                    Unit::Bytes,
                    f.clone(),
                );
                f
            },
            audit_write: {
                let h = Histogram::new(latency_buckets());
                r.register_with_unit(
                    "audit_write_duration",
                    "Time to append one audit record (waiting for the chain included).",
                    Unit::Seconds,
                    h.clone(),
                );
                h
            },
            audit_in_flight: reg(
                r,
                "audit_writes_in_flight",
                "Audit appends waiting for or writing to the chain (its queue depth).",
            ),
            audit_failures: reg(r, "audit_write_failures", "Audit appends that failed."),
            ingest_readings: reg(
                r,
                "ingest_readings",
                "Telemetry readings accepted from agents (re-sent ones included).",
            ),
            ingest_rejected: reg(
                r,
                "ingest_items_rejected",
                "Telemetry items rejected as invalid.",
            ),
            login_failures: reg(r, "login_failures", "Failed log-ins, by reason."),
            store: {
                let f = Family::<OpLabel, Histogram>::new_with_constructor(
                    (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
                );
                r.register_with_unit(
                    "store_duration",
                    "Time of store work: write transactions, lock wait included.",
                    Unit::Seconds,
                    f.clone(),
                );
                f
            },
        };
        // Every label value exists from the start: a dashboard's rate()
        // sees the first event, and absent series do not mean zero.
        for d in DenyReason::ALL {
            let _ = m
                .streams_denied
                .get_or_create(&ReasonLabel { reason: d.as_str() });
        }
        for l in LoginFailure::ALL {
            let _ = m
                .login_failures
                .get_or_create(&ReasonLabel { reason: l.as_str() });
        }
        for direction in ["up", "down"] {
            let _ = m.stream_bytes.get_or_create(&DirectionLabel { direction });
        }
        let _ = m.store.get_or_create(&OpLabel { op: "transaction" });
        m.registry = root;
        m
    }

    /// The gauges of what other registries count, at scrape time.
    pub fn sample(&self, live: Live) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.agents_connected.set(n(live.agents));
        self.web_sessions_live.set(n(live.web_sessions));
        self.tunnels_live.set(n(live.tunnels));
        self.handshakes_in_use.set(n(live.handshakes_in_use));
        self.handshake_slots.set(n(live.handshake_slots));
    }

    /// The Prometheus text format (0.0.4), which `promtool check metrics`
    /// reads.
    pub fn encode_text(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry)?;
        Ok(s)
    }

    /// OpenMetrics text, for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)?;
        Ok(s)
    }

    /// A stream opened; the guard counts it open, and its bytes when it
    /// is dropped.
    pub fn stream_opened(&self, stats: Arc<StreamStats>) -> StreamGauge {
        self.streams_opened.inc();
        self.streams_open.inc();
        StreamGauge {
            open: self.streams_open.clone(),
            bytes: self.stream_bytes.clone(),
            stats,
        }
    }

    pub fn stream_denied(&self, why: DenyReason) {
        self.streams_denied
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    pub fn stream_failed(&self) {
        self.streams_failed.inc();
    }

    /// An audit append starts; the guard ends it (and times it).
    pub fn audit_write(&self) -> AuditWrite<'_> {
        self.audit_in_flight.inc();
        AuditWrite {
            m: self,
            started: std::time::Instant::now(),
        }
    }

    pub fn readings(&self, accepted: u64, rejected: u64) {
        self.ingest_readings.inc_by(accepted);
        self.ingest_rejected.inc_by(rejected);
    }

    pub fn login_failed(&self, why: LoginFailure) {
        self.login_failures
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }
}

fn reg<M>(r: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let m = M::default();
    r.register(name, help, m.clone());
    m
}

/// Counts an open stream until dropped (however the stream ends), then
/// adds its bytes.
#[derive(Debug)]
pub struct StreamGauge {
    open: IntGauge,
    bytes: Family<DirectionLabel, Counter>,
    stats: Arc<StreamStats>,
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.open.dec();
        let up = self.stats.sent.load(Ordering::Relaxed);
        let down = self.stats.received.load(Ordering::Relaxed);
        for (direction, n) in [("up", up), ("down", down)] {
            self.bytes
                .get_or_create(&DirectionLabel { direction })
                .inc_by(n);
        }
    }
}

/// One audit append in flight; [`AuditWrite::done`] records how it went.
pub struct AuditWrite<'a> {
    m: &'a Metrics,
    started: std::time::Instant,
}

impl AuditWrite<'_> {
    pub fn done(self, ok: bool) {
        self.m
            .audit_write
            .observe(self.started.elapsed().as_secs_f64());
        if !ok {
            self.m.audit_failures.inc();
        }
    }
}

impl Drop for AuditWrite<'_> {
    /// Also when the append's future is dropped half-way.
    fn drop(&mut self) {
        self.m.audit_in_flight.dec();
    }
}

impl dwa_store::Observer for Metrics {
    fn observe(&self, op: dwa_store::Op, took: Duration) {
        let op = match op {
            dwa_store::Op::Transaction => "transaction",
        };
        self.store
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_events_show() {
        let m = Metrics::new();
        m.login_failed(LoginFailure::Password);
        m.stream_denied(DenyReason::RelayPolicy);
        let stats = Arc::new(StreamStats::default());
        let g = m.stream_opened(stats.clone());
        stats.sent.fetch_add(3, Ordering::Relaxed);
        stats.received.fetch_add(5, Ordering::Relaxed);
        m.audit_write().done(true);
        m.sample(Live {
            agents: 2,
            ..Live::default()
        });
        let t = m.encode_text().unwrap();
        for line in [
            "dwa_relay_login_failures_total{reason=\"password\"} 1",
            "dwa_relay_login_failures_total{reason=\"locked\"} 0",
            "dwa_relay_streams_denied_total{reason=\"relay_policy\"} 1",
            "dwa_relay_streams_opened_total 1",
            "dwa_relay_streams_open 1",
            "dwa_relay_audit_write_duration_seconds_count 1",
            "dwa_relay_audit_writes_in_flight 0",
            "dwa_relay_agents_connected 2",
            "# TYPE dwa_relay_store_duration_seconds histogram",
        ] {
            assert!(t.lines().any(|l| l == line), "{line:?} missing in\n{t}");
        }
        drop(g);
        let t = m.encode_text().unwrap();
        for line in [
            "dwa_relay_streams_open 0",
            "dwa_relay_stream_bytes_total{direction=\"up\"} 3",
            "dwa_relay_stream_bytes_total{direction=\"down\"} 5",
        ] {
            assert!(
                t.lines().any(|l| l == line),
                "{line:?} missing in
{t}"
            );
        }
        assert!(m.encode_openmetrics().unwrap().ends_with("# EOF\n"));
    }

    /// The metric names in `text` (each `dwa_relay_…` word).
    fn names_in(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("dwa_relay_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            })
            .collect()
    }

    /// The families the relay exposes (`# TYPE` lines).
    fn families() -> std::collections::BTreeMap<String, String> {
        let text = Metrics::new().encode_text().unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    fn doc(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_dashboard_queries_only_metrics_the_relay_exposes() {
        let fam = families();
        let exposed = |n: &str| {
            fam.contains_key(n)
                || ["_bucket", "_sum", "_count"].iter().any(|s| {
                    n.strip_suffix(s)
                        .is_some_and(|b| fam.get(b).is_some_and(|t| t == "histogram"))
                })
        };
        let dash: serde_json::Value = serde_json::from_str(&doc("docs/grafana-dashboard.json"))
            .expect("docs/grafana-dashboard.json is JSON");
        let panels = dash["panels"].as_array().expect("panels");
        assert!(panels.len() >= 10);
        let mut used = std::collections::BTreeSet::new();
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for n in names_in(expr) {
                    assert!(exposed(&n), "{n} (panel {:?}) is not exposed", p["title"]);
                    used.insert(n);
                }
            }
        }
        assert!(used.len() >= 12, "{used:?}");
    }

    #[test]
    fn operations_md_lists_every_metric() {
        let listed = names_in(&doc("docs/operations.md"));
        for n in families().keys() {
            assert!(listed.contains(n), "{n} is not in docs/operations.md");
        }
    }
}
