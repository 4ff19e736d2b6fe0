//! Alerts: raised and resolved as readings and finished scans arrive.
//!
//! An alert is active while its condition holds; when a newer reading shows
//! the condition gone it is resolved (`resolved_at`). There is at most one
//! active alert per (device, kind, subject) — a unique partial index in the
//! database, so a double evaluation cannot duplicate one.
//!
//! Conditions (rules per customer in `alert_rules`, defaults otherwise):
//! - `supply_low`: a consumed supply's remaining percent below the threshold
//!   (default 10). Special levels ("some remaining", unknown) are not low.
//! - `waste_full`: a receptacle (waste toner...) at or above the threshold
//!   fullness (default 90 %).
//! - `no_paper`, `jam`, `door_open`, `no_toner`, `service_requested`: the
//!   printer's detected error states.
//! - `silent`: the device was not in the agent's last N scans that covered
//!   its address (default 3).
//! - `counter_drop`, `counter_reset`, `counter_jump`: a page counter's step
//!   from the device's previous reading to this one went down, went down
//!   to near zero, or rose by more pages a day than the `counter_jump`
//!   threshold (default 50 000); subject: the counter. Judged as billing
//!   reports judge it ([`super::billing::meter::judge`]); the next reading
//!   with a normal step resolves it.

use std::collections::HashMap;

use dwa_proto::telemetry::{Counters, DeviceRecord, ErrorState, Supply, SupplyClass};
use dwa_store::alerts::{AlertRow, AlertState, NewAlert, RuleRow};
use dwa_store::Tx;
use serde::Serialize;

use super::billing::meter::{judge, Counter, FlagKind};
use super::{AgentInfo, Range, Result, TelemetryError};
use crate::services::Services;

pub const SUPPLY_LOW: &str = "supply_low";
pub const WASTE_FULL: &str = "waste_full";
pub const SILENT: &str = "silent";
pub const COUNTER_DROP: &str = "counter_drop";
pub const COUNTER_RESET: &str = "counter_reset";
pub const COUNTER_JUMP: &str = "counter_jump";

/// Error states that raise an alert, with their alert kind.
const ERROR_KINDS: [(ErrorState, &str); 5] = [
    (ErrorState::NoPaper, "no_paper"),
    (ErrorState::Jammed, "jam"),
    (ErrorState::DoorOpen, "door_open"),
    (ErrorState::NoToner, "no_toner"),
    (ErrorState::ServiceRequested, "service_requested"),
];

/// Every kind, with its default threshold (None: the kind has none).
pub const KINDS: [(&str, Option<f64>); 11] = [
    (SUPPLY_LOW, Some(10.0)),
    (WASTE_FULL, Some(90.0)),
    ("no_paper", None),
    ("jam", None),
    ("door_open", None),
    ("no_toner", None),
    ("service_requested", None),
    (SILENT, Some(3.0)),
    (COUNTER_DROP, None),
    (COUNTER_RESET, None),
    (COUNTER_JUMP, Some(50_000.0)),
];

/// Most e-mail recipients of one rule.
pub const MAX_RECIPIENTS: usize = 20;

/// How a rule's alerts are mailed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EmailMode {
    /// One message per alert raised or resolved.
    #[default]
    Immediate,
    /// One message per customer and recipients per `smtp.digest_interval`.
    Digest,
}

impl EmailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailMode::Immediate => "immediate",
            EmailMode::Digest => "digest",
        }
    }
}

/// Who gets a kind's alerts by e-mail, and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Email {
    /// Sorted, deduplicated.
    pub to: Vec<String>,
    pub mode: EmailMode,
}

/// A customer's rules: kind → threshold, for the enabled kinds; and the
/// kinds that are mailed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules(pub HashMap<String, Option<f64>>, pub HashMap<String, Email>);

impl Default for Rules {
    fn default() -> Self {
        Rules(
            KINDS.iter().map(|(k, t)| (k.to_string(), *t)).collect(),
            HashMap::new(),
        )
    }
}

impl Rules {
    fn get(&self, kind: &str) -> Option<Option<f64>> {
        self.0.get(kind).copied()
    }

    /// The threshold of an enabled kind that has one.
    pub fn threshold(&self, kind: &str) -> Option<f64> {
        self.get(kind).flatten()
    }

    /// Who gets `kind`'s alerts by e-mail (none: nobody).
    pub fn email(&self, kind: &str) -> Option<&Email> {
        self.1.get(kind).filter(|e| !e.to.is_empty())
    }

    /// The rules as the API shows them: every kind, enabled or not.
    pub fn view(&self) -> Vec<RuleView> {
        KINDS
            .iter()
            .map(|(k, _)| RuleView {
                kind: k,
                enabled: self.0.contains_key(*k),
                threshold: self.0.get(*k).copied().flatten(),
                email_to: self.1.get(*k).map(|e| e.to.clone()).unwrap_or_default(),
                email_mode: self.1.get(*k).map(|e| e.mode).unwrap_or_default(),
            })
            .collect()
    }

    /// The rules from a customer's stored rows (kinds without a row keep
    /// their default).
    pub fn from_rows(rows: &[RuleRow]) -> Rules {
        let mut rules = Rules::default();
        for r in rows {
            // Rows are written by `store_rules` only; one that does not
            // parse is treated as no recipients rather than failing ingest.
            let to: Vec<String> = serde_json::from_str(&r.email_to).unwrap_or_default();
            if !to.is_empty() {
                let mode = if r.email_mode == "digest" {
                    EmailMode::Digest
                } else {
                    EmailMode::Immediate
                };
                rules.1.insert(r.kind.clone(), Email { to, mode });
            }
            if r.enabled {
                let default = KINDS.iter().find(|(k, _)| *k == r.kind).and_then(|k| k.1);
                rules.0.insert(r.kind.clone(), r.threshold.or(default));
            } else {
                rules.0.remove(&r.kind);
            }
        }
        rules
    }
}

/// One rule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    pub kind: &'static str,
    pub enabled: bool,
    pub threshold: Option<f64>,
    /// E-mail recipients of this kind's alerts.
    pub email_to: Vec<String>,
    pub email_mode: EmailMode,
}

/// One rule as the API takes it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub kind: String,
    pub enabled: bool,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// E-mail recipients (at most 20); empty: none.
    #[serde(default)]
    pub email_to: Vec<String>,
    #[serde(default)]
    pub email_mode: EmailMode,
}

impl RuleInput {
    /// As the audit record of a rule change shows it.
    pub fn audited(&self) -> dwa_proto::audit::AlertRule {
        dwa_proto::audit::AlertRule {
            kind: self.kind.clone(),
            enabled: self.enabled,
            threshold: self.threshold,
            email_to: Some(self.email_to.clone()),
            email_mode: Some(self.email_mode.as_str().into()),
        }
    }
}

/// Checks rules before they are stored: known kinds, thresholds in range.
pub fn validate_rules(rules: &[RuleInput]) -> Result<()> {
    let bad = |m: String| Err(TelemetryError::Invalid(m));
    if rules.len() > KINDS.len() {
        return bad(format!("at most {} rules", KINDS.len()));
    }
    for r in rules {
        let Some((_, default)) = KINDS.iter().find(|(k, _)| *k == r.kind) else {
            return bad(format!(
                "unknown alert kind {:?} (one of: {})",
                r.kind,
                KINDS.map(|k| k.0).join(", ")
            ));
        };
        match (default, r.threshold) {
            (None, Some(_)) => return bad(format!("{} takes no threshold", r.kind)),
            (Some(_), Some(t)) => {
                // Each kind's threshold is in its own unit.
                let (range, unit) = match r.kind.as_str() {
                    SILENT => (1.0..=1000.0, "a number of scans, 1..=1000"),
                    COUNTER_JUMP => (1.0..=10_000_000.0, "pages a day, 1..=10000000"),
                    _ => (0.0..=100.0, "a percent, 0..=100"),
                };
                if !range.contains(&t) {
                    return bad(format!("{}: threshold is {unit}", r.kind));
                }
            }
            _ => {}
        }
        recipients(&r.kind, &r.email_to)?;
    }
    Ok(())
}

/// A rule's recipients, checked (lettre's address syntax), sorted and
/// deduplicated.
pub fn recipients(kind: &str, to: &[String]) -> Result<Vec<String>> {
    if to.len() > MAX_RECIPIENTS {
        return Err(TelemetryError::Invalid(format!(
            "{kind}: at most {MAX_RECIPIENTS} e-mail recipients"
        )));
    }
    let mut out = vec![];
    for a in to {
        let a = a.trim();
        if a.parse::<lettre::Address>().is_err() {
            return Err(TelemetryError::Invalid(format!(
                "{kind}: {:?} is not an e-mail address",
                a.chars().take(80).collect::<String>()
            )));
        }
        out.push(a.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The customer's rules, inside a transaction.
pub async fn load_rules(tx: &mut Tx, customer: i64) -> Result<Rules> {
    Ok(Rules::from_rows(&tx.alert_rules(customer).await?))
}

/// The customer's rules.
pub async fn rules(svc: &Services, customer: i64) -> Result<Rules> {
    Ok(Rules::from_rows(&svc.store.alert_rules(customer).await?))
}

/// Replaces a customer's rules and audits the change (`via`: the portal,
/// when it came from there). The caller has checked the permission.
pub async fn replace_rules(
    svc: &Services,
    customer: i64,
    rules: &[RuleInput],
    actor: &str,
    via: Option<&str>,
) -> Result<()> {
    store_rules(svc, customer, rules).await?;
    svc.audit
        .record(
            dwa_proto::audit::Event::TelemetryAlertRules {
                customer,
                rules: rules.iter().map(RuleInput::audited).collect(),
                via: via.map(str::to_string),
            },
            actor,
            None,
        )
        .await;
    Ok(())
}

/// Replaces a customer's rules (kinds not given return to their default).
pub async fn store_rules(svc: &Services, customer: i64, rules: &[RuleInput]) -> Result<()> {
    validate_rules(rules)?;
    let mut rows = vec![];
    for r in rules {
        rows.push(RuleRow {
            kind: r.kind.clone(),
            enabled: r.enabled,
            threshold: r.threshold,
            email_to: serde_json::to_string(&recipients(&r.kind, &r.email_to)?)
                .map_err(|e| TelemetryError::Internal(format!("recipients: {e}")))?,
            email_mode: r.email_mode.as_str().into(),
        });
    }
    Ok(svc.store.replace_alert_rules(customer, &rows).await?)
}

/// How a supply is named in alerts and reports: its description, else its
/// colour and kind, else its index.
pub fn supply_label(s: &Supply) -> String {
    if let Some(d) = s
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        return d.chars().take(80).collect();
    }
    let kind = s
        .kind
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "supply".into());
    match s.colour.as_deref() {
        Some(c) => format!("{c} {kind}"),
        None => format!("{kind} {}", s.index),
    }
}

/// A condition that holds now: (kind, subject, message, value).
type Condition = (String, String, String, Option<f64>);

/// The conditions of one record under `rules`.
pub fn conditions(record: &DeviceRecord, rules: &Rules) -> Vec<Condition> {
    let mut out: Vec<Condition> = vec![];
    for s in &record.supplies {
        let receptacle = s.class == Some(SupplyClass::Receptacle)
            || (s.class.is_none() && s.kind.is_some_and(|k| k.is_waste()));
        if receptacle {
            if let (Some(Some(t)), Some(full)) = (rules.get(WASTE_FULL), s.fullness_percent) {
                if f64::from(full) >= t {
                    let label = supply_label(s);
                    out.push((
                        WASTE_FULL.into(),
                        label.clone(),
                        format!("{label} is {full:.0} % full"),
                        Some(full.into()),
                    ));
                }
            }
        } else if let (Some(Some(t)), Some(p)) = (rules.get(SUPPLY_LOW), s.percent) {
            if f64::from(p) < t {
                let label = supply_label(s);
                out.push((
                    SUPPLY_LOW.into(),
                    label.clone(),
                    format!("{label} at {p:.0} %"),
                    Some(p.into()),
                ));
            }
        }
    }
    for (state, kind) in ERROR_KINDS {
        if record.error_states.contains(&state) && rules.get(kind).is_some() {
            out.push((
                kind.into(),
                String::new(),
                format!("printer reports {kind}"),
                None,
            ));
        }
    }
    // Two supplies with one label would collide on (kind, subject).
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    out
}

/// The conditions of a counter step from `prev` (taken `t0`, unix
/// seconds) to `now` (taken `t1`) under `rules`.
pub fn counter_conditions(
    prev: &Counters,
    now: &Counters,
    t0: i64,
    t1: i64,
    rules: &Rules,
) -> Vec<Condition> {
    let b = super::billing::bounds(rules);
    let mut out = vec![];
    for c in Counter::ALL {
        let (Some(from), Some(to)) = (c.of(prev), c.of(now)) else {
            continue;
        };
        let Some(flag) = judge(from, to, t0, t1, &b) else {
            continue;
        };
        let (kind, what) = match flag {
            FlagKind::Drop => (COUNTER_DROP, "went down"),
            FlagKind::Reset => (COUNTER_RESET, "was reset"),
            FlagKind::Jump => (COUNTER_JUMP, "jumped implausibly"),
        };
        if rules.get(kind).is_none() {
            continue;
        }
        out.push((
            kind.into(),
            c.as_str().into(),
            format!("{} counter {what}: {from} -> {to}", c.as_str()),
            Some(to as f64),
        ));
    }
    out
}

/// An alert raised or resolved, for the webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alert_id: i64,
    pub raised: bool,
}

async fn raise(
    tx: &mut Tx,
    device: i64,
    customer: i64,
    c: &Condition,
    now: &str,
) -> Result<Change> {
    let id = tx
        .raise_alert(&NewAlert {
            device_id: device,
            customer_id: customer,
            kind: &c.0,
            subject: &c.1,
            message: &c.2,
            value: c.3,
            raised_at: now,
        })
        .await?;
    Ok(Change {
        alert_id: id,
        raised: true,
    })
}

/// The device's reading before the newest one, as counter alerts compare.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub prev: &'a Counters,
    pub prev_at: i64,
    pub at: i64,
}

/// Brings a device's reading-driven alerts in line with its newest record
/// (and the counter step to it from the previous reading, when there is
/// one); a reading also ends a `silent` alert.
pub async fn evaluate_reading(
    tx: &mut Tx,
    device: i64,
    customer: i64,
    record: &DeviceRecord,
    step: Option<Step<'_>>,
    rules: &Rules,
    now: &str,
) -> Result<Vec<Change>> {
    let mut want = conditions(record, rules);
    if let Some(s) = step {
        want.extend(counter_conditions(
            s.prev,
            &record.counters,
            s.prev_at,
            s.at,
            rules,
        ));
    }
    let active = tx.active_alerts_of(device).await?;
    let mut changes = vec![];
    let mut have = vec![];
    for a in active {
        if want.iter().any(|c| c.0 == a.kind && c.1 == a.subject) {
            have.push((a.kind, a.subject));
        } else {
            tx.resolve_alert(a.id, now).await?;
            changes.push(Change {
                alert_id: a.id,
                raised: false,
            });
        }
    }
    for c in &want {
        if !have.iter().any(|(k, s)| *k == c.0 && *s == c.1) {
            changes.push(raise(tx, device, customer, c, now).await?);
        }
    }
    Ok(changes)
}

/// Whether a device at `address` was in a scan of `ranges`. Ranges the
/// relay cannot read (a newer agent's syntax) are skipped; a scan with
/// none it can read counts as covering every address.
pub fn covered(address: &str, ranges: &[Range]) -> bool {
    match address.parse() {
        Ok(ip) => ranges.is_empty() || ranges.iter().any(|p| p.contains(ip)),
        Err(_) => false,
    }
}

/// After a scan: the agent's devices whose address the scan covered but
/// that it did not see count one more missed scan; `silent` is raised at
/// the threshold. Devices never read by telemetry (hand-added only) and
/// displaced ones are not counted.
pub async fn evaluate_scan_done(
    tx: &mut Tx,
    agent: &AgentInfo,
    scan: &str,
    ranges: &[String],
    rules: &Rules,
    now: &str,
) -> Result<Vec<Change>> {
    let parsed: Vec<Range> = ranges.iter().filter_map(|r| Range::parse(r).ok()).collect();
    let mut changes = vec![];
    for d in tx.scan_candidates(&agent.id, scan).await? {
        if !covered(&d.address, &parsed) {
            continue;
        }
        let missed = d.missed_scans + 1;
        tx.set_missed_scans(d.id, missed).await?;
        if let Some(Some(t)) = rules.get(SILENT) {
            if missed as f64 >= t && !tx.has_active_alert(d.id, SILENT).await? {
                let c = (
                    SILENT.to_string(),
                    String::new(),
                    format!("not seen in the last {missed} scans"),
                    Some(missed as f64),
                );
                changes.push(raise(tx, d.id, agent.customer_id, &c, now).await?);
            }
        }
    }
    Ok(changes)
}

/// The customer an alert belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertCustomer {
    pub id: i64,
    pub name: String,
}

/// The device an alert is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDevice {
    pub id: i64,
    pub name: Option<String>,
    pub address: String,
    pub agent_id: String,
}

/// One alert as the API and the webhook show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub message: String,
    pub value: Option<f64>,
    pub raised_at: String,
    /// `active` or `resolved`.
    pub state: &'static str,
    pub resolved_at: Option<String>,
    pub customer: AlertCustomer,
    pub device: AlertDevice,
}

impl From<AlertRow> for AlertView {
    fn from(r: AlertRow) -> Self {
        AlertView {
            id: r.id,
            kind: r.kind,
            subject: r.subject,
            message: r.message,
            value: r.value,
            raised_at: r.raised_at,
            state: if r.resolved_at.is_some() {
                "resolved"
            } else {
                "active"
            },
            resolved_at: r.resolved_at,
            customer: AlertCustomer {
                id: r.customer_id,
                name: r.customer,
            },
            device: AlertDevice {
                id: r.device_id,
                name: r.device_name,
                address: r.address,
                agent_id: r.agent_id,
            },
        }
    }
}

/// A device's active alerts (at most one per kind and subject: few).
pub async fn active_for_device(svc: &Services, device: i64) -> Result<Vec<AlertView>> {
    let rows = svc.store.device_active_alerts(device).await?;
    Ok(rows.into_iter().map(AlertView::from).collect())
}

/// Most alerts one list request returns.
pub const MAX_LIST: i64 = 1000;

/// Alerts by state (`active`, `resolved`, `all`), newest first, optionally
/// only those of `customers`.
pub async fn list(
    svc: &Services,
    state: &str,
    customers: Option<&[i64]>,
    limit: i64,
) -> Result<Vec<AlertView>> {
    let state = match state {
        "active" => AlertState::Active,
        "resolved" => AlertState::Resolved,
        "all" => AlertState::All,
        other => {
            return Err(TelemetryError::Invalid(format!(
                "state {other:?}: expected active, resolved or all"
            )))
        }
    };
    let rows = svc
        .store
        .alerts(state, customers, limit.clamp(1, MAX_LIST))
        .await?;
    Ok(rows.into_iter().map(AlertView::from).collect())
}
