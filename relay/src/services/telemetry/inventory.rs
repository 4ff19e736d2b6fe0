//! The device inventory: which device a reading is of, and the queries
//! behind the device API.
//!
//! Matching (inside the batch's transaction), for a reading taken by agent
//! A of customer C at address X with identity I:
//! 1. a serial identity matches the device of C holding it;
//! 2. else a MAC matches the device of C with that MAC (a device whose
//!    serial did not decode this time stays itself);
//! 3. else the device at A + X: claimed when it has no identity yet (hand
//!    added), or when its identity is weaker than or equal to a bare
//!    address; kept when the reading is weaker (an address-only reading
//!    cannot contradict a known serial);
//! 4. else a new device.
//!
//! A device found at another agent or address moves there (newest reading
//! only) and keeps its id. If a different device occupies the new place, the
//! occupant is *displaced*: the reading proves the address now belongs to
//! someone else, so the occupant's address becomes `displaced-<id>` (the
//! UNIQUE(agent, address) key stays intact), `displaced_from` keeps the old
//! address, and its history and id stay. Its next reading moves it back to a
//! real address.

use dwa_proto::telemetry::{DeviceRecord, Identity};
use serde_json::{json, Value};
use sqlx::{Row, SqliteConnection};

use super::AgentInfo;
use crate::error::Result;

/// Strength of an identity kind: a stronger one replaces a weaker one.
fn rank(key: &str) -> u8 {
    if key.starts_with("serial:") {
        3
    } else if key.starts_with("mac:") {
        2
    } else {
        1
    }
}

/// The device a reading matched, and whether the reading is the device's
/// newest (only the newest moves the device and drives its alerts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub device_id: i64,
    pub newest: bool,
    pub created: bool,
}

struct Found {
    id: i64,
    agent_id: String,
    address: String,
    identity: Option<String>,
    last_seen: Option<String>,
}

async fn find(conn: &mut SqliteConnection, sql: &str, a: &str, b: &str) -> Result<Option<Found>> {
    let r = sqlx::query(sql)
        .bind(a)
        .bind(b)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(r.map(|r| Found {
        id: r.get("id"),
        agent_id: r.get("agent_id"),
        address: r.get("address"),
        identity: r.get("identity"),
        last_seen: r.get("last_seen"),
    }))
}

const COLS: &str = "d.id, d.agent_id, d.address, d.identity, d.last_seen";

/// Finds or creates the device of `record` (see the module doc) and
/// records the sighting. Runs inside the caller's transaction.
pub async fn match_device(
    conn: &mut SqliteConnection,
    agent: &AgentInfo,
    record: &DeviceRecord,
    reading_id: &str,
    scan: &str,
    taken_at: &str,
) -> Result<Matched> {
    let identity = record.identity();
    let key = identity.key();
    // The MAC is a second key even when a serial is the identity, so a
    // reading whose serial did not decode still finds its device.
    let mac = record
        .mac
        .as_deref()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| {
            m.chars().any(|c| !matches!(c, '0' | ':' | '-' | ' ')) && m != "unknown" && m != "n/a"
        });
    let customer = agent.customer_id.to_string();
    let in_customer = |col: &str| {
        format!(
            "SELECT {COLS} FROM devices d JOIN agents a ON a.id = d.agent_id \
             WHERE a.customer_id = ? AND d.{col} = ? ORDER BY d.id LIMIT 1"
        )
    };
    let mut found = None;
    if matches!(identity, Identity::Serial(_)) {
        found = find(conn, &in_customer("identity"), &customer, &key).await?;
    }
    if found.is_none() {
        if let Some(m) = &mac {
            found = find(conn, &in_customer("mac"), &customer, m).await?;
        }
    }
    let at_address = find(
        conn,
        &format!("SELECT {COLS} FROM devices d WHERE d.agent_id = ? AND d.address = ?"),
        &agent.id,
        &record.address,
    )
    .await?;
    if found.is_none() {
        if let Some(o) = &at_address {
            let same = match &o.identity {
                None => true,
                Some(k) => rank(k) == 1 || rank(&key) == 1 || *k == key,
            };
            if same {
                found = at_address.as_ref().map(|o| Found {
                    id: o.id,
                    agent_id: o.agent_id.clone(),
                    address: o.address.clone(),
                    identity: o.identity.clone(),
                    last_seen: o.last_seen.clone(),
                });
            }
        }
    }
    let (device_id, newest, created) = match found {
        Some(d) => {
            let newest = d.last_seen.as_deref().is_none_or(|l| taken_at >= l);
            if newest && (d.agent_id != agent.id || d.address != record.address) {
                if let Some(o) = at_address.as_ref().filter(|o| o.id != d.id) {
                    displace(conn, o.id, &o.address).await?;
                }
                sqlx::query(
                    "UPDATE devices SET agent_id = ?, address = ?, displaced_from = NULL WHERE id = ?",
                )
                .bind(&agent.id)
                .bind(&record.address)
                .bind(d.id)
                .execute(&mut *conn)
                .await?;
            }
            // Identity only gets stronger: a reading that lacks the serial
            // this time does not demote the device.
            let stronger = d.identity.as_deref().is_none_or(|k| rank(&key) >= rank(k));
            if newest && stronger {
                sqlx::query("UPDATE devices SET identity = ? WHERE id = ?")
                    .bind(&key)
                    .bind(d.id)
                    .execute(&mut *conn)
                    .await?;
            }
            (d.id, newest, false)
        }
        None => {
            if let Some(o) = &at_address {
                displace(conn, o.id, &o.address).await?;
            }
            let id = sqlx::query(
                "INSERT INTO devices (agent_id, address, name, created_at, identity) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&agent.id)
            .bind(&record.address)
            .bind(record.sys_name.as_deref().map(|n| n.chars().take(200).collect::<String>()))
            .bind(crate::util::now_rfc3339())
            .bind(&key)
            .execute(&mut *conn)
            .await?
            .last_insert_rowid();
            (id, true, true)
        }
    };
    if newest {
        sqlx::query(
            "UPDATE devices SET mac = COALESCE(?, mac), last_seen = ?, latest_reading = ?, \
             last_scan = ?, missed_scans = 0, first_seen = COALESCE(first_seen, ?) WHERE id = ?",
        )
        .bind(&mac)
        .bind(taken_at)
        .bind(reading_id)
        .bind(scan)
        .bind(taken_at)
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    } else {
        // An older reading (a spool drained late) can still be the first.
        sqlx::query("UPDATE devices SET first_seen = MIN(COALESCE(first_seen, ?), ?) WHERE id = ?")
            .bind(taken_at)
            .bind(taken_at)
            .bind(device_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Matched {
        device_id,
        newest,
        created,
    })
}

async fn displace(conn: &mut SqliteConnection, id: i64, address: &str) -> Result<()> {
    tracing::info!(device = id, %address, "device displaced from its address by another device");
    sqlx::query("UPDATE devices SET address = ?, displaced_from = ? WHERE id = ?")
        .bind(format!("displaced-{id}"))
        .bind(address)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A device's inventory row with its latest reading's summary.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub id: i64,
    pub agent_id: String,
    pub customer_id: i64,
    pub customer: String,
    pub address: String,
    pub name: Option<String>,
    pub identity: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub missed_scans: i64,
    pub displaced_from: Option<String>,
    pub record: Option<DeviceRecord>,
    pub active_alerts: i64,
}

const VIEW_SELECT: &str = "SELECT d.id, d.agent_id, a.customer_id, c.name AS customer, d.address, d.name, \
    d.identity, d.first_seen, d.last_seen, d.missed_scans, d.displaced_from, r.record, \
    (SELECT COUNT(*) FROM alerts x WHERE x.device_id = d.id AND x.resolved_at IS NULL) AS active_alerts \
    FROM devices d JOIN agents a ON a.id = d.agent_id JOIN customers c ON c.id = a.customer_id \
    LEFT JOIN readings r ON r.id = d.latest_reading";

fn view_from(r: &sqlx::sqlite::SqliteRow) -> DeviceView {
    let record: Option<String> = r.get("record");
    DeviceView {
        id: r.get("id"),
        agent_id: r.get("agent_id"),
        customer_id: r.get("customer_id"),
        customer: r.get("customer"),
        address: r.get("address"),
        name: r.get("name"),
        identity: r.get("identity"),
        first_seen: r.get("first_seen"),
        last_seen: r.get("last_seen"),
        missed_scans: r.get("missed_scans"),
        displaced_from: r.get("displaced_from"),
        // Stored by us from a parsed record: a failure means a schema change.
        record: record.and_then(|t| serde_json::from_str(&t).ok()),
        active_alerts: r.get("active_alerts"),
    }
}

/// Devices, optionally only those of `customers`.
pub async fn list(db: &crate::db::Db, customers: Option<&[i64]>) -> Result<Vec<DeviceView>> {
    let rows = sqlx::query(&format!("{VIEW_SELECT} ORDER BY d.id"))
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(view_from)
        .filter(|d| customers.is_none_or(|c| c.contains(&d.customer_id)))
        .collect())
}

pub async fn get(db: &crate::db::Db, id: i64) -> Result<Option<DeviceView>> {
    let r = sqlx::query(&format!("{VIEW_SELECT} WHERE d.id = ?"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(r.as_ref().map(view_from))
}

/// Lowest remaining percent over consumed supplies.
pub fn lowest_supply_percent(r: &DeviceRecord) -> Option<f32> {
    r.supplies
        .iter()
        .filter_map(|s| s.percent)
        .min_by(|a, b| a.total_cmp(b))
}

impl DeviceView {
    /// Status: `displaced`, `silent` (missed scans), the printer's own, or
    /// `unknown` before any reading.
    pub fn status(&self) -> String {
        if self.displaced_from.is_some() {
            return "displaced".into();
        }
        if self.missed_scans > 0 {
            return "silent".into();
        }
        let Some(r) = &self.record else {
            return "unknown".into();
        };
        if !r.error_states.is_empty() {
            return "error".into();
        }
        r.printer_status
            .clone()
            .or_else(|| r.device_status.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    /// The list entry: the web-session target fields plus the summary.
    pub fn summary(&self) -> Value {
        let r = self.record.as_ref();
        json!({
            "id": self.id, "name": self.name, "address": self.address,
            "agent_id": self.agent_id, "customer_id": self.customer_id, "customer": self.customer,
            "identity": self.identity, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "missed_scans": self.missed_scans, "displaced_from": self.displaced_from,
            "status": self.status(), "active_alerts": self.active_alerts,
            "manufacturer": r.and_then(|r| r.manufacturer.clone()),
            "model": r.and_then(|r| r.model.clone()),
            "serial": r.and_then(|r| r.serial.clone()),
            "mac": r.and_then(|r| r.mac.clone()),
            "counters_total": r.and_then(|r| r.counters.total),
            "lowest_supply_percent": r.and_then(lowest_supply_percent),
        })
    }

    /// The detail: the summary and the full latest record.
    pub fn detail(&self) -> Value {
        let mut v = self.summary();
        v["record"] = json!(self.record);
        v
    }
}

/// Most readings one history request returns.
pub const MAX_HISTORY: i64 = 1000;

/// A device's readings, newest first, at most `limit`, taken at or after
/// `since` when given.
pub async fn readings(
    db: &crate::db::Db,
    device: i64,
    since: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>> {
    let rows = sqlx::query(
        "SELECT id, scan, taken_at, received_at, address, identity, record FROM readings \
         WHERE device_id = ?1 AND (?2 IS NULL OR taken_at >= ?2) ORDER BY taken_at DESC, id LIMIT ?3",
    )
    .bind(device)
    .bind(since)
    .bind(limit.clamp(1, MAX_HISTORY))
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let record: String = r.get("record");
            json!({
                "id": r.get::<String, _>("id"), "scan": r.get::<String, _>("scan"),
                "taken_at": r.get::<String, _>("taken_at"), "received_at": r.get::<String, _>("received_at"),
                "address": r.get::<String, _>("address"), "identity": r.get::<String, _>("identity"),
                "record": serde_json::from_str::<Value>(&record).unwrap_or(Value::Null),
            })
        })
        .collect())
}
