//! The device inventory: which device a reading is of, and the views
//! behind the device API and the fleet pages.
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
use dwa_store::devices::DeviceViewRow;
use dwa_store::readings::DeviceSlot;
use dwa_store::Tx;
use serde::Serialize;

use super::{AgentInfo, Result};
use crate::services::Services;

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

/// A MAC as the inventory keys it (lowercase), unless it is a placeholder
/// (all zeros, "unknown").
fn mac_key(mac: Option<&str>) -> Option<String> {
    mac.map(|m| m.trim().to_ascii_lowercase()).filter(|m| {
        m.chars().any(|c| !matches!(c, '0' | ':' | '-' | ' ')) && m != "unknown" && m != "n/a"
    })
}

/// Whether a reading of identity `key` may claim the device at its
/// address: the occupant has no identity yet (hand added), or one of the
/// two is a bare address, or they agree.
fn may_claim(occupant: Option<&str>, key: &str) -> bool {
    match occupant {
        None => true,
        Some(k) => rank(k) == 1 || rank(key) == 1 || k == key,
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

/// Finds or creates the device of `record` (see the module doc) and
/// records the sighting. Runs inside the caller's transaction.
pub async fn match_device(
    tx: &mut Tx,
    agent: &AgentInfo,
    record: &DeviceRecord,
    reading_id: &str,
    scan: &str,
    taken_at: &str,
    now: &str,
) -> Result<Matched> {
    let identity = record.identity();
    let key = identity.key();
    // The MAC is a second key even when a serial is the identity, so a
    // reading whose serial did not decode still finds its device.
    let mac = mac_key(record.mac.as_deref());
    let mut found: Option<DeviceSlot> = None;
    if matches!(identity, Identity::Serial(_)) {
        found = tx.device_with_identity(agent.customer_id, &key).await?;
    }
    if found.is_none() {
        if let Some(m) = &mac {
            found = tx.device_with_mac(agent.customer_id, m).await?;
        }
    }
    let at_address = tx.device_at(&agent.id, &record.address).await?;
    if found.is_none() {
        found = at_address
            .clone()
            .filter(|o| may_claim(o.identity.as_deref(), &key));
    }
    let (device_id, newest, created) = match found {
        Some(d) => {
            let newest = d.last_seen.as_deref().is_none_or(|l| taken_at >= l);
            if newest && (d.agent_id != agent.id || d.address != record.address) {
                if let Some(o) = at_address.as_ref().filter(|o| o.id != d.id) {
                    displace(tx, o).await?;
                }
                tx.move_device(d.id, &agent.id, &record.address).await?;
            }
            // Identity only gets stronger: a reading that lacks the serial
            // this time does not demote the device.
            let stronger = d.identity.as_deref().is_none_or(|k| rank(&key) >= rank(k));
            if newest && stronger {
                tx.set_device_identity(d.id, &key).await?;
            }
            (d.id, newest, false)
        }
        None => {
            if let Some(o) = &at_address {
                displace(tx, o).await?;
            }
            let name = record
                .sys_name
                .as_deref()
                .map(|n| n.chars().take(200).collect::<String>());
            let id = tx
                .add_discovered_device(&agent.id, &record.address, name.as_deref(), &key, now)
                .await?;
            (id, true, true)
        }
    };
    if newest {
        tx.note_newest_reading(device_id, mac.as_deref(), taken_at, reading_id, scan)
            .await?;
    } else {
        tx.note_older_reading(device_id, taken_at).await?;
    }
    Ok(Matched {
        device_id,
        newest,
        created,
    })
}

async fn displace(tx: &mut Tx, o: &DeviceSlot) -> Result<()> {
    tracing::info!(device = o.id, address = %o.address, "device displaced from its address by another device");
    tx.displace_device(o.id, &o.address).await?;
    Ok(())
}

/// A device's inventory row with its latest reading's record.
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

impl From<DeviceViewRow> for DeviceView {
    fn from(r: DeviceViewRow) -> Self {
        DeviceView {
            id: r.id,
            agent_id: r.agent_id,
            customer_id: r.customer_id,
            customer: r.customer,
            address: r.address,
            name: r.name,
            identity: r.identity,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            missed_scans: r.missed_scans,
            displaced_from: r.displaced_from,
            // Stored by us from a parsed record: a failure means a schema
            // change, shown as "no reading" rather than failing the list.
            record: r.record.and_then(|t| serde_json::from_str(&t).ok()),
            active_alerts: r.active_alerts,
        }
    }
}

/// Devices, optionally only those of `customers`.
pub async fn list(svc: &Services, customers: Option<&[i64]>) -> Result<Vec<DeviceView>> {
    let rows = svc.store.device_views(customers).await?;
    Ok(rows.into_iter().map(DeviceView::from).collect())
}

pub async fn get(svc: &Services, id: i64) -> Result<Option<DeviceView>> {
    Ok(svc.store.device_view(id).await?.map(DeviceView::from))
}

/// Lowest remaining percent over consumed supplies.
pub fn lowest_supply_percent(r: &DeviceRecord) -> Option<f32> {
    r.supplies
        .iter()
        .filter_map(|s| s.percent)
        .min_by(|a, b| a.total_cmp(b))
}

/// A device as the list shows it: the web-session target fields plus a
/// summary of its latest reading.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    pub id: i64,
    pub name: Option<String>,
    pub address: String,
    pub agent_id: String,
    pub customer_id: i64,
    pub customer: String,
    pub identity: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub missed_scans: i64,
    pub displaced_from: Option<String>,
    pub status: String,
    pub active_alerts: i64,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub mac: Option<String>,
    pub counters_total: Option<u64>,
    pub lowest_supply_percent: Option<f32>,
}

/// A device in detail: the summary, the full latest record, and (when
/// asked for) its active alerts.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    pub record: Option<DeviceRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Vec<super::alerts::AlertView>>,
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

    pub fn summary(&self) -> DeviceSummary {
        let r = self.record.as_ref();
        DeviceSummary {
            id: self.id,
            name: self.name.clone(),
            address: self.address.clone(),
            agent_id: self.agent_id.clone(),
            customer_id: self.customer_id,
            customer: self.customer.clone(),
            identity: self.identity.clone(),
            first_seen: self.first_seen.clone(),
            last_seen: self.last_seen.clone(),
            missed_scans: self.missed_scans,
            displaced_from: self.displaced_from.clone(),
            status: self.status(),
            active_alerts: self.active_alerts,
            manufacturer: r.and_then(|r| r.manufacturer.clone()),
            model: r.and_then(|r| r.model.clone()),
            serial: r.and_then(|r| r.serial.clone()),
            mac: r.and_then(|r| r.mac.clone()),
            counters_total: r.and_then(|r| r.counters.total),
            lowest_supply_percent: r.and_then(lowest_supply_percent),
        }
    }

    pub fn detail(&self) -> DeviceDetail {
        DeviceDetail {
            summary: self.summary(),
            record: self.record.clone(),
            alerts: None,
        }
    }
}

/// Most readings one history request returns.
pub const MAX_HISTORY: i64 = 1000;

/// One reading of a device's history.
#[derive(Debug, Clone, Serialize)]
pub struct ReadingView {
    pub id: String,
    pub scan: String,
    pub taken_at: String,
    pub received_at: String,
    pub address: String,
    pub identity: String,
    pub record: serde_json::Value,
}

/// A device's readings, newest first, at most `limit`, taken at or after
/// `since` when given.
pub async fn readings(
    svc: &Services,
    device: i64,
    since: Option<&str>,
    limit: i64,
) -> Result<Vec<ReadingView>> {
    let rows = svc
        .store
        .device_readings(device, since, limit.clamp(1, MAX_HISTORY))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| ReadingView {
            record: serde_json::from_str(&r.record).unwrap_or(serde_json::Value::Null),
            id: r.id,
            scan: r.scan,
            taken_at: r.taken_at,
            received_at: r.received_at,
            address: r.address,
            identity: r.identity,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_macs_are_no_key() {
        assert_eq!(
            mac_key(Some(" 00:AA:01:02:03:04 ")).as_deref(),
            Some("00:aa:01:02:03:04")
        );
        for m in ["00:00:00:00:00:00", "unknown", "N/A", "", "000000000000"] {
            assert_eq!(mac_key(Some(m)), None, "{m}");
        }
    }

    #[test]
    fn only_agreeing_or_weak_identities_claim_an_address() {
        assert!(may_claim(None, "serial:hp:A"));
        assert!(may_claim(Some("address:10.0.0.5"), "serial:hp:A"));
        assert!(may_claim(Some("serial:hp:A"), "address:10.0.0.5"));
        assert!(may_claim(Some("serial:hp:A"), "serial:hp:A"));
        assert!(!may_claim(Some("serial:hp:A"), "serial:hp:B"));
        assert!(!may_claim(Some("mac:00:aa:00:00:00:01"), "serial:hp:B"));
    }
}
