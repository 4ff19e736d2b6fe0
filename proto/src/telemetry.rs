//! Device telemetry records: what the agent's collector makes of one printer
//! (identity, page counters, supplies, status, alerts), independent of how it
//! was read. Decoding lives in `dwa_agent::telemetry`; these are the types
//! that travel to the relay and into reports.
//!
//! Rules kept by the types:
//! - Anything a device may not report is an `Option`; absent is not zero.
//! - Printer-MIB special values stay meaningful ([`Level`]): `-3` "some
//!   remaining" is never shown as 0 %.
//! - A field that could not be decoded leaves a [`FieldError`] in the record
//!   instead of failing the whole device.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One device as decoded from an SNMP walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeviceRecord {
    /// The address the device was scanned at.
    pub address: String,
    pub sys_name: Option<String>,
    pub sys_descr: Option<String>,
    pub sys_object_id: Option<String>,
    pub sys_location: Option<String>,
    /// sysUpTime in hundredths of a second.
    pub uptime_ticks: Option<u64>,
    /// hrDeviceIndex of the printer row (or the Printer-MIB's index when the
    /// device has no hrDeviceTable); `None` when the device is no printer.
    pub printer_index: Option<u32>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    /// Lower-case, colon separated (`00:1b:a9:0b:a7:52`).
    pub mac: Option<String>,
    pub counters: Counters,
    pub supplies: Vec<Supply>,
    /// hrDeviceStatus name: unknown, running, warning, testing, down.
    pub device_status: Option<String>,
    /// hrPrinterStatus name: other, unknown, idle, printing, warmup.
    pub printer_status: Option<String>,
    pub error_states: Vec<ErrorState>,
    pub alerts: Vec<Alert>,
    pub console: Vec<String>,
    pub field_errors: Vec<FieldError>,
    /// The host name the scan target was written as, when it was one (the
    /// address above is what it resolved to at this scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// DNS name of the address (PTR record), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// NetBIOS name (node status: the unique workstation `<00>` name), when
    /// the device answers node status queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netbios_name: Option<String>,
    /// Where each identity and status field came from, field → source
    /// ([`SOURCE_FIELDS`]; sources such as `host-resources-mib`,
    /// `printer-mib`, `vendor:367`, `sysdescr`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    /// [`SOURCE_FIELDS`] that no source reported, after every fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The SNMP trap that triggered this reading, when a trap did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trap: Option<TrapEvent>,
}

/// Fields reported in [`DeviceRecord::sources`] or [`DeviceRecord::missing`].
pub const SOURCE_FIELDS: [&str; 10] = [
    "manufacturer",
    "model",
    "serial",
    "firmware",
    "mac",
    "counters.total",
    "device_status",
    "printer_status",
    "error_states",
    "supplies",
];

/// An SNMP trap or inform a device sent, as the agent received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrapEvent {
    /// RFC 3339 UTC, agent's clock.
    pub received_at: String,
    /// `v1`, `v2c` or `v2c-inform`.
    pub version: String,
    /// snmpTrapOID (v2c) or the v1 enterprise/generic/specific mapped to
    /// one (RFC 3584), dotted.
    pub trap_oid: String,
    /// Printer-MIB alert varbinds of the trap, when it carried them
    /// (prtAlertTable columns: severity, group, code, description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

/// Page counters. `None` means the device does not report that counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counters {
    pub total: Option<u64>,
    pub mono: Option<u64>,
    pub colour: Option<u64>,
    pub print: Option<u64>,
    pub copy: Option<u64>,
    pub scan: Option<u64>,
    pub fax: Option<u64>,
    /// Unit of `total` when it came from prtMarkerLifeCount
    /// (`impressions`, `sheets`, ...); `None` for vendor counters.
    pub unit: Option<String>,
    /// Where `total` came from: `printer-mib` or `vendor:<name>`.
    pub source: Option<String>,
}

/// A Printer-MIB level or capacity with its special values kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Level {
    /// An actual amount, in the supply's unit.
    Value(i64),
    /// -1: other / unrestricted (the device does not restrict this).
    Other,
    /// -2: unknown.
    Unknown,
    /// -3: "some remaining" (not empty, amount unknown). Never 0 %.
    SomeRemaining,
    /// The device did not report this column.
    Absent,
}

impl Level {
    /// Map a raw MIB integer. Other negative values are not defined by the MIB:
    /// `None` lets the caller record a field error.
    pub fn from_raw(raw: i64) -> Option<Level> {
        match raw {
            -1 => Some(Level::Other),
            -2 => Some(Level::Unknown),
            -3 => Some(Level::SomeRemaining),
            v if v >= 0 => Some(Level::Value(v)),
            _ => None,
        }
    }

    pub fn value(self) -> Option<i64> {
        match self {
            Level::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// prtMarkerSuppliesType, the common values named; anything else is `Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplyKind {
    Other,
    Unknown,
    Toner,
    WasteToner,
    Ink,
    InkCartridge,
    InkRibbon,
    WasteInk,
    /// opc: the photoconductor drum.
    Drum,
    Developer,
    FuserOil,
    Fuser,
    CleanerUnit,
    TransferUnit,
    TonerCartridge,
    WastePaper,
    Staples,
    /// Any other prtMarkerSuppliesType number.
    Code(i64),
}

impl SupplyKind {
    pub fn from_code(code: i64) -> SupplyKind {
        match code {
            1 => SupplyKind::Other,
            2 => SupplyKind::Unknown,
            3 => SupplyKind::Toner,
            4 => SupplyKind::WasteToner,
            5 => SupplyKind::Ink,
            6 => SupplyKind::InkCartridge,
            7 => SupplyKind::InkRibbon,
            8 => SupplyKind::WasteInk,
            9 => SupplyKind::Drum,
            10 => SupplyKind::Developer,
            11 => SupplyKind::FuserOil,
            15 => SupplyKind::Fuser,
            18 => SupplyKind::CleanerUnit,
            20 => SupplyKind::TransferUnit,
            21 => SupplyKind::TonerCartridge,
            26 => SupplyKind::WastePaper,
            32 => SupplyKind::Staples,
            other => SupplyKind::Code(other),
        }
    }

    /// Kinds that are receptacles by nature (used when the class column is
    /// missing).
    pub fn is_waste(self) -> bool {
        matches!(
            self,
            SupplyKind::WasteToner | SupplyKind::WasteInk | SupplyKind::WastePaper
        )
    }
}

/// prtMarkerSuppliesClass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplyClass {
    /// 3: used up by printing (toner, drum...).
    Consumed,
    /// 4: fills up (waste toner); its level is the remaining space.
    Receptacle,
    /// 1 or any other value.
    Other,
}

/// One row of prtMarkerSuppliesTable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supply {
    /// prtMarkerSuppliesIndex (second index component).
    pub index: u32,
    pub description: Option<String>,
    pub kind: Option<SupplyKind>,
    /// Reported class, or inferred from a waste kind when not reported.
    pub class: Option<SupplyClass>,
    /// From the colorant table when the device has one, otherwise from a
    /// colour word in the description ("Black Toner" → "black").
    pub colour: Option<String>,
    pub level: Level,
    pub max: Level,
    /// Supply unit name (`percent`, `tenths_of_grams`, `impressions`...).
    pub unit: Option<String>,
    /// Remaining, in percent, for consumed supplies: level/max when max > 0,
    /// or the level itself when the unit is percent. `None` for special
    /// values, receptacles and levels above max (those also leave a field
    /// error; the raw level stays in `level`).
    pub percent: Option<f32>,
    /// For receptacles: how full, in percent (100 − remaining space).
    pub fullness_percent: Option<f32>,
}

/// hrPrinterDetectedErrorState bits, bit 0 = most significant bit of byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorState {
    LowPaper,
    NoPaper,
    LowToner,
    NoToner,
    DoorOpen,
    Jammed,
    Offline,
    ServiceRequested,
    InputTrayMissing,
    OutputTrayMissing,
    MarkerSupplyMissing,
    OutputNearFull,
    OutputFull,
    InputTrayEmpty,
    OverduePreventMaint,
}

impl ErrorState {
    /// In bit order.
    pub const ALL: [ErrorState; 15] = [
        ErrorState::LowPaper,
        ErrorState::NoPaper,
        ErrorState::LowToner,
        ErrorState::NoToner,
        ErrorState::DoorOpen,
        ErrorState::Jammed,
        ErrorState::Offline,
        ErrorState::ServiceRequested,
        ErrorState::InputTrayMissing,
        ErrorState::OutputTrayMissing,
        ErrorState::MarkerSupplyMissing,
        ErrorState::OutputNearFull,
        ErrorState::OutputFull,
        ErrorState::InputTrayEmpty,
        ErrorState::OverduePreventMaint,
    ];

    /// Set bits of the OCTET STRING (0, 1, 2 or more bytes; bits past 14 are
    /// ignored).
    pub fn from_bits(bytes: &[u8]) -> Vec<ErrorState> {
        ErrorState::ALL
            .iter()
            .enumerate()
            .filter(|(bit, _)| {
                bytes
                    .get(bit / 8)
                    .is_some_and(|b| b & (0x80 >> (bit % 8)) != 0)
            })
            .map(|(_, s)| *s)
            .collect()
    }
}

/// One row of prtAlertTable (rows disappear when the condition clears).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub index: u32,
    /// other, critical, warning, warning_binary_change_event, or `code_<n>`.
    pub severity: Option<String>,
    /// prtAlertCode number.
    pub code: Option<i64>,
    /// Name of the code when known (cover_open, jam, marker_toner_empty...).
    pub code_name: Option<String>,
    pub description: Option<String>,
    /// prtAlertGroup number (e.g. 11 = marker supplies).
    pub group: Option<i64>,
    pub group_index: Option<i64>,
    pub location: Option<i64>,
}

/// A field the device sent but that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Field path, e.g. `serial` or `supplies.3.level`.
    pub field: String,
    pub error: String,
}

// ---------------------------------------------------------------- upload

/// Where agents upload spooled telemetry, on the relay's HTTPS port.
pub const INGEST_PATH: &str = "/agent/v1/ingest";
/// Most items in one upload; the agent sends at most this many.
pub const MAX_BATCH_ITEMS: usize = 256;
/// Largest accepted upload body (a reading is typically 2–10 KiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One spooled unit of telemetry. Ids are random (128-bit hex) and chosen by
/// the agent when the item is spooled, so a retried upload is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Items are built once per device per scan and serialized at once; boxing
// the reading would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum IngestItem {
    Reading(Reading),
    /// Sent after the readings of a scan: lets the relay tell which known
    /// devices were not seen (the "silent for N scans" alert).
    ScanDone(ScanDone),
}

impl IngestItem {
    pub fn id(&self) -> &str {
        match self {
            IngestItem::Reading(r) => &r.id,
            IngestItem::ScanDone(s) => &s.id,
        }
    }
}

/// One device as read by one scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub id: String,
    /// Id of the scan that took it (the `ScanDone` item's id).
    pub scan: String,
    /// RFC 3339 UTC, agent's clock.
    pub taken_at: String,
    pub record: DeviceRecord,
}

/// The end of one scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanDone {
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    /// `schedule`, `relay` (scan now) or `startup`.
    pub trigger: String,
    /// The ranges scanned, as configured (after the ceiling).
    pub ranges: Vec<String>,
    /// Addresses probed and printers found.
    pub addresses: u32,
    pub found: u32,
}

/// Body of `POST INGEST_PATH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    pub items: Vec<IngestItem>,
}

/// The relay's answer to a batch (HTTP 200). Every item of the batch is in
/// exactly one list; the agent deletes both kinds from its spool. An item
/// already stored before (a retried upload) is `accepted` again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IngestAck {
    pub accepted: Vec<String>,
    /// Items that can never be stored (invalid); retrying would not help.
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub id: String,
    pub error: String,
}

/// How a device is recognised across scans and address changes:
/// manufacturer + serial where known, else MAC, else the address (which the
/// relay scopes to the agent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Identity {
    Serial(String),
    Mac(String),
    Address(String),
}

impl Identity {
    /// Stable text form, e.g. `serial:hp:CNB1234567`, `mac:00:1b:a9:0b:a7:52`.
    pub fn key(&self) -> String {
        match self {
            Identity::Serial(s) => format!("serial:{s}"),
            Identity::Mac(m) => format!("mac:{m}"),
            Identity::Address(a) => format!("address:{a}"),
        }
    }
}

fn usable(s: &Option<String>) -> Option<&str> {
    let t = s.as_deref()?.trim();
    // Placeholders some devices report instead of a serial or MAC.
    let junk = t.is_empty()
        || t.chars()
            .all(|c| c == '0' || c == ':' || c == '-' || c == ' ')
        || t.eq_ignore_ascii_case("unknown")
        || t.eq_ignore_ascii_case("n/a");
    (!junk).then_some(t)
}

impl DeviceRecord {
    pub fn identity(&self) -> Identity {
        if let Some(serial) = usable(&self.serial) {
            let vendor = usable(&self.manufacturer)
                .map(|m| m.to_ascii_lowercase())
                .unwrap_or_default();
            return Identity::Serial(format!("{vendor}:{serial}"));
        }
        if let Some(mac) = usable(&self.mac) {
            return Identity::Mac(mac.to_ascii_lowercase());
        }
        Identity::Address(self.address.clone())
    }
}

#[cfg(test)]
mod upload_tests {
    use super::*;

    #[test]
    fn identity_prefers_serial_then_mac_then_address() {
        let mut r = DeviceRecord {
            address: "10.0.0.5".into(),
            ..Default::default()
        };
        assert_eq!(r.identity().key(), "address:10.0.0.5");
        r.mac = Some("00:00:00:00:00:00".into());
        assert_eq!(
            r.identity().key(),
            "address:10.0.0.5",
            "zero MAC is no identity"
        );
        r.mac = Some("00:1B:A9:0B:A7:52".into());
        assert_eq!(r.identity().key(), "mac:00:1b:a9:0b:a7:52");
        r.serial = Some("  ".into());
        assert_eq!(r.identity().key(), "mac:00:1b:a9:0b:a7:52");
        r.serial = Some("CNB1234567".into());
        r.manufacturer = Some("HP".into());
        assert_eq!(r.identity().key(), "serial:hp:CNB1234567");
    }

    #[test]
    fn items_round_trip_with_their_type_tag() {
        let item = IngestItem::ScanDone(ScanDone {
            id: "ab".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:05Z".into(),
            trigger: "schedule".into(),
            ranges: vec!["10.0.0.0/24".into()],
            addresses: 254,
            found: 3,
        });
        let text = serde_json::to_string(&item).unwrap();
        assert!(text.contains("\"type\":\"scan_done\""), "{text}");
        let back: IngestItem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, item);
        assert_eq!(back.id(), "ab");
    }
}
