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

use std::collections::HashMap;

use dwa_proto::telemetry::{DeviceRecord, ErrorState, Supply, SupplyClass};
use serde_json::{json, Value};
use sqlx::{Row, SqliteConnection};

use super::{AgentInfo, Range};
use crate::error::{RelayError, Result};
use crate::util::now_rfc3339;

pub const SUPPLY_LOW: &str = "supply_low";
pub const WASTE_FULL: &str = "waste_full";
pub const SILENT: &str = "silent";

/// Error states that raise an alert, with their alert kind.
const ERROR_KINDS: [(ErrorState, &str); 5] = [
    (ErrorState::NoPaper, "no_paper"),
    (ErrorState::Jammed, "jam"),
    (ErrorState::DoorOpen, "door_open"),
    (ErrorState::NoToner, "no_toner"),
    (ErrorState::ServiceRequested, "service_requested"),
];

/// Every kind, with its default threshold (None: the kind has none).
pub const KINDS: [(&str, Option<f64>); 8] = [
    (SUPPLY_LOW, Some(10.0)),
    (WASTE_FULL, Some(90.0)),
    ("no_paper", None),
    ("jam", None),
    ("door_open", None),
    ("no_toner", None),
    ("service_requested", None),
    (SILENT, Some(3.0)),
];

/// A customer's rules: kind → threshold, for the enabled kinds.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules(pub HashMap<String, Option<f64>>);

impl Default for Rules {
    fn default() -> Self {
        Rules(KINDS.iter().map(|(k, t)| (k.to_string(), *t)).collect())
    }
}

impl Rules {
    fn get(&self, kind: &str) -> Option<Option<f64>> {
        self.0.get(kind).copied()
    }

    /// The rules as the API shows them: every kind, enabled or not.
    pub fn view(&self) -> Value {
        json!(KINDS
            .iter()
            .map(
                |(k, _)| json!({"kind": k, "enabled": self.0.contains_key(*k),
                                 "threshold": self.0.get(*k).copied().flatten()})
            )
            .collect::<Vec<_>>())
    }
}

/// One rule as the API takes it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub kind: String,
    pub enabled: bool,
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// Checks rules before they are stored: known kinds, thresholds in range.
pub fn validate_rules(rules: &[RuleInput]) -> Result<()> {
    let bad = |m: String| Err(RelayError::Invalid(m));
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
            (Some(_), Some(t)) if r.kind == SILENT && !(1.0..=1000.0).contains(&t) => {
                return bad("silent: threshold is a number of scans, 1..=1000".into())
            }
            (Some(_), Some(t)) if !(0.0..=100.0).contains(&t) => {
                return bad(format!("{}: threshold is a percent, 0..=100", r.kind))
            }
            _ => {}
        }
    }
    Ok(())
}

pub async fn load_rules(conn: &mut SqliteConnection, customer: i64) -> Result<Rules> {
    let rows =
        sqlx::query("SELECT kind, enabled, threshold FROM alert_rules WHERE customer_id = ?")
            .bind(customer)
            .fetch_all(&mut *conn)
            .await?;
    let mut rules = Rules::default();
    for r in rows {
        let kind: String = r.get("kind");
        if r.get::<bool, _>("enabled") {
            let default = KINDS.iter().find(|(k, _)| *k == kind).and_then(|k| k.1);
            let t: Option<f64> = r.get("threshold");
            rules.0.insert(kind, t.or(default));
        } else {
            rules.0.remove(&kind);
        }
    }
    Ok(rules)
}

/// Replaces a customer's rules (kinds not given return to their default).
pub async fn store_rules(db: &crate::db::Db, customer: i64, rules: &[RuleInput]) -> Result<()> {
    validate_rules(rules)?;
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM alert_rules WHERE customer_id = ?")
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    for r in rules {
        sqlx::query(
            "INSERT INTO alert_rules (customer_id, kind, enabled, threshold) VALUES (?, ?, ?, ?)",
        )
        .bind(customer)
        .bind(&r.kind)
        .bind(r.enabled)
        .bind(r.threshold)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
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

/// An alert raised or resolved, for the webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alert_id: i64,
    pub raised: bool,
}

async fn raise(
    conn: &mut SqliteConnection,
    device: i64,
    customer: i64,
    c: &Condition,
) -> Result<Change> {
    let id = sqlx::query(
        "INSERT INTO alerts (device_id, customer_id, kind, subject, message, value, raised_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(device)
    .bind(customer)
    .bind(&c.0)
    .bind(&c.1)
    .bind(&c.2)
    .bind(c.3)
    .bind(now_rfc3339())
    .execute(&mut *conn)
    .await?
    .last_insert_rowid();
    Ok(Change {
        alert_id: id,
        raised: true,
    })
}

async fn resolve(conn: &mut SqliteConnection, id: i64) -> Result<Change> {
    sqlx::query("UPDATE alerts SET resolved_at = ? WHERE id = ? AND resolved_at IS NULL")
        .bind(now_rfc3339())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Change {
        alert_id: id,
        raised: false,
    })
}

/// Brings a device's reading-driven alerts in line with its newest record;
/// a reading also ends a `silent` alert.
pub async fn evaluate_reading(
    conn: &mut SqliteConnection,
    device: i64,
    customer: i64,
    record: &DeviceRecord,
    rules: &Rules,
) -> Result<Vec<Change>> {
    let want = conditions(record, rules);
    let active = sqlx::query(
        "SELECT id, kind, subject FROM alerts WHERE device_id = ? AND resolved_at IS NULL",
    )
    .bind(device)
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = vec![];
    let mut have = vec![];
    for r in &active {
        let (id, kind, subject): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
        if want.iter().any(|c| c.0 == kind && c.1 == subject) {
            have.push((kind, subject));
        } else {
            changes.push(resolve(conn, id).await?);
        }
    }
    for c in &want {
        if !have.iter().any(|(k, s)| *k == c.0 && *s == c.1) {
            changes.push(raise(conn, device, customer, c).await?);
        }
    }
    Ok(changes)
}

/// After a scan: the agent's devices whose address the scan covered but
/// that it did not see count one more missed scan; `silent` is raised at
/// the threshold. Devices never read by telemetry (hand-added only) and
/// displaced ones are not counted.
pub async fn evaluate_scan_done(
    conn: &mut SqliteConnection,
    agent: &AgentInfo,
    scan: &str,
    ranges: &[String],
    rules: &Rules,
) -> Result<Vec<Change>> {
    let parsed: Vec<Range> = ranges.iter().filter_map(|r| Range::parse(r).ok()).collect();
    let rows = sqlx::query(
        "SELECT id, address, missed_scans FROM devices WHERE agent_id = ? AND last_seen IS NOT NULL \
         AND displaced_from IS NULL AND (last_scan IS NULL OR last_scan != ?)",
    )
    .bind(&agent.id)
    .bind(scan)
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = vec![];
    for r in rows {
        let (id, address, missed): (i64, String, i64) = (r.get(0), r.get(1), r.get(2));
        let covered = match address.parse() {
            // Ranges we cannot read (a newer agent's syntax): count anyway.
            Ok(ip) => parsed.is_empty() || parsed.iter().any(|p| p.contains(ip)),
            Err(_) => false,
        };
        if !covered {
            continue;
        }
        let missed = missed + 1;
        sqlx::query("UPDATE devices SET missed_scans = ? WHERE id = ?")
            .bind(missed)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        if let Some(Some(t)) = rules.get(SILENT) {
            if missed as f64 >= t {
                let c = (
                    SILENT.to_string(),
                    String::new(),
                    format!("not seen in the last {missed} scans"),
                    Some(missed as f64),
                );
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM alerts WHERE device_id = ? AND kind = ? AND resolved_at IS NULL",
                )
                .bind(id)
                .bind(SILENT)
                .fetch_optional(&mut *conn)
                .await?;
                if exists.is_none() {
                    changes.push(raise(conn, id, agent.customer_id, &c).await?);
                }
            }
        }
    }
    Ok(changes)
}

/// One alert as the API and the webhook show it.
pub async fn alert_json(conn: &mut SqliteConnection, id: i64) -> Result<Value> {
    let r = sqlx::query(
        "SELECT x.id, x.kind, x.subject, x.message, x.value, x.raised_at, x.resolved_at, \
         x.customer_id, c.name AS customer, d.id AS device_id, d.name AS device_name, d.address, d.agent_id \
         FROM alerts x JOIN devices d ON d.id = x.device_id JOIN customers c ON c.id = x.customer_id \
         WHERE x.id = ?",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row_json(&r))
}

fn row_json(r: &sqlx::sqlite::SqliteRow) -> Value {
    let resolved: Option<String> = r.get("resolved_at");
    json!({
        "id": r.get::<i64, _>("id"), "kind": r.get::<String, _>("kind"),
        "subject": r.get::<String, _>("subject"), "message": r.get::<String, _>("message"),
        "value": r.get::<Option<f64>, _>("value"), "raised_at": r.get::<String, _>("raised_at"),
        "state": if resolved.is_some() { "resolved" } else { "active" },
        "resolved_at": resolved,
        "customer": {"id": r.get::<i64, _>("customer_id"), "name": r.get::<String, _>("customer")},
        "device": {"id": r.get::<i64, _>("device_id"), "name": r.get::<Option<String>, _>("device_name"),
                   "address": r.get::<String, _>("address"), "agent_id": r.get::<String, _>("agent_id")},
    })
}

const ALERT_SELECT: &str = "SELECT x.id, x.kind, x.subject, x.message, x.value, x.raised_at, x.resolved_at, \
    x.customer_id, c.name AS customer, d.id AS device_id, d.name AS device_name, d.address, d.agent_id \
    FROM alerts x JOIN devices d ON d.id = x.device_id JOIN customers c ON c.id = x.customer_id";

/// A device's active alerts (at most one per kind and subject: few).
pub async fn active_for_device(db: &crate::db::Db, device: i64) -> Result<Vec<Value>> {
    let rows = sqlx::query(&format!(
        "{ALERT_SELECT} WHERE x.device_id = ? AND x.resolved_at IS NULL ORDER BY x.id"
    ))
    .bind(device)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(row_json).collect())
}

/// Most alerts one list request returns.
pub const MAX_LIST: i64 = 1000;

/// Alerts by state (`active`, `resolved`, `all`), newest first, optionally
/// only those of `customers`.
pub async fn list(
    db: &crate::db::Db,
    state: &str,
    customers: Option<&[i64]>,
    limit: i64,
) -> Result<Vec<Value>> {
    let cond = match state {
        "active" => "x.resolved_at IS NULL",
        "resolved" => "x.resolved_at IS NOT NULL",
        "all" => "1",
        other => {
            return Err(RelayError::Invalid(format!(
                "state {other:?}: expected active, resolved or all"
            )))
        }
    };
    // The customer filter is applied in SQL so the limit counts visible rows.
    let scope = customers.map(|c| serde_json::to_string(c).unwrap_or_else(|_| "[]".into()));
    let rows = sqlx::query(&format!(
        "SELECT x.id, x.kind, x.subject, x.message, x.value, x.raised_at, x.resolved_at, \
         x.customer_id, c.name AS customer, d.id AS device_id, d.name AS device_name, d.address, d.agent_id \
         FROM alerts x JOIN devices d ON d.id = x.device_id JOIN customers c ON c.id = x.customer_id \
         WHERE {cond} AND (?1 IS NULL OR x.customer_id IN (SELECT value FROM json_each(?1))) \
         ORDER BY x.id DESC LIMIT ?2"
    ))
    .bind(scope)
    .bind(limit.clamp(1, MAX_LIST))
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.iter().map(row_json).collect())
}
