//! `GET /api/v1/devices.csv`: one row per device. Fixed columns first,
//! then one `supply_<name>_percent` column per supply name found in the
//! fleet (named by description, else colour and kind: `Black Toner` →
//! `supply_black_toner_percent`), sorted. Cells are quoted by the `csv`
//! crate; text that a spreadsheet would run as a formula gets a `'` first.

use std::collections::{BTreeMap, BTreeSet};

use super::alerts::supply_label;
use super::inventory::DeviceView;
use super::{Result, TelemetryError};

const FIXED: [&str; 23] = [
    "device_id",
    "customer",
    "agent_id",
    "name",
    "address",
    "identity",
    "manufacturer",
    "model",
    "serial",
    "mac",
    "firmware",
    "location",
    "first_seen",
    "last_seen",
    "status",
    "counter_total",
    "counter_mono",
    "counter_colour",
    "counter_print",
    "counter_copy",
    "counter_scan",
    "counter_fax",
    "counter_unit",
];

/// `Black Toner (K)` → `black_toner_k`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let t = out.trim_end_matches('_');
    if t.is_empty() {
        "unnamed".into()
    } else {
        t.chars().take(60).collect()
    }
}

/// Defuses spreadsheet formulas in text cells.
fn text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Supply columns of one device: column name → percent (remaining for
/// consumed supplies, fullness for receptacles is `..._full_percent`).
fn supplies(d: &DeviceView) -> BTreeMap<String, f32> {
    let mut out = BTreeMap::new();
    let Some(r) = &d.record else { return out };
    for s in &r.supplies {
        let base = slug(&supply_label(s));
        let (col, v) = match (s.percent, s.fullness_percent) {
            (Some(p), _) => (format!("supply_{base}_percent"), p),
            (None, Some(f)) => (format!("supply_{base}_full_percent"), f),
            _ => continue,
        };
        // Two supplies with one name: keep both, the second by index.
        let col = if out.contains_key(&col) {
            col.replace("_percent", &format!("_{}_percent", s.index))
        } else {
            col
        };
        out.insert(col, v);
    }
    out
}

pub fn to_csv(devices: &[DeviceView]) -> Result<Vec<u8>> {
    let per: Vec<BTreeMap<String, f32>> = devices.iter().map(supplies).collect();
    let cols: BTreeSet<&String> = per.iter().flat_map(|m| m.keys()).collect();
    let mut w = csv::Writer::from_writer(vec![]);
    let err = |e: csv::Error| TelemetryError::Internal(format!("CSV: {e}"));
    let mut head: Vec<&str> = FIXED.to_vec();
    head.extend(cols.iter().map(|c| c.as_str()));
    w.write_record(&head).map_err(err)?;
    for (d, sup) in devices.iter().zip(&per) {
        let r = d.record.as_ref();
        let c = r.map(|r| &r.counters);
        let mut row = vec![
            d.id.to_string(),
            text(&d.customer),
            text(&d.agent_id),
            text(d.name.as_deref().unwrap_or("")),
            text(&d.address),
            text(d.identity.as_deref().unwrap_or("")),
            text(&opt(r.and_then(|r| r.manufacturer.clone()))),
            text(&opt(r.and_then(|r| r.model.clone()))),
            text(&opt(r.and_then(|r| r.serial.clone()))),
            text(&opt(r.and_then(|r| r.mac.clone()))),
            text(&opt(r.and_then(|r| r.firmware.clone()))),
            text(&opt(r.and_then(|r| r.sys_location.clone()))),
            opt(d.first_seen.clone()),
            opt(d.last_seen.clone()),
            d.status(),
            opt(c.and_then(|c| c.total)),
            opt(c.and_then(|c| c.mono)),
            opt(c.and_then(|c| c.colour)),
            opt(c.and_then(|c| c.print)),
            opt(c.and_then(|c| c.copy)),
            opt(c.and_then(|c| c.scan)),
            opt(c.and_then(|c| c.fax)),
            text(&opt(c.and_then(|c| c.unit.clone()))),
        ];
        for col in &cols {
            row.push(sup.get(*col).map(|p| format!("{p:.1}")).unwrap_or_default());
        }
        w.write_record(&row).map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| TelemetryError::Internal(format!("CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_proto::telemetry::{DeviceRecord, Level, Supply, SupplyClass, SupplyKind};

    fn supply(index: u32, desc: Option<&str>, colour: Option<&str>, pct: Option<f32>) -> Supply {
        Supply {
            index,
            description: desc.map(str::to_string),
            kind: Some(SupplyKind::Toner),
            class: Some(SupplyClass::Consumed),
            colour: colour.map(str::to_string),
            level: Level::Value(5),
            max: Level::Value(100),
            unit: None,
            percent: pct,
            fullness_percent: None,
        }
    }

    fn view(id: i64, name: &str, record: Option<DeviceRecord>) -> DeviceView {
        DeviceView {
            id,
            agent_id: "agt_a".into(),
            customer_id: 1,
            customer: "acme, \"east\"".into(),
            address: "10.0.0.5".into(),
            name: Some(name.into()),
            identity: Some("serial:hp:X1".into()),
            first_seen: None,
            last_seen: None,
            missed_scans: 0,
            displaced_from: None,
            record,
            active_alerts: 0,
        }
    }

    #[test]
    fn columns_quoting_and_formulas() {
        let mut r = DeviceRecord {
            address: "10.0.0.5".into(),
            ..Default::default()
        };
        r.counters.total = Some(12345);
        r.supplies = vec![
            supply(1, Some("Black Toner"), Some("black"), Some(5.0)),
            supply(2, None, Some("cyan"), Some(80.0)),
        ];
        let devices = vec![
            view(1, "=HYPERLINK(\"x\")", Some(r)),
            view(2, "line\nbreak", None),
        ];
        let out = String::from_utf8(to_csv(&devices).unwrap()).unwrap();
        let mut rd = csv::Reader::from_reader(out.as_bytes());
        let head: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
        assert!(
            head.contains(&"supply_black_toner_percent".to_string()),
            "{head:?}"
        );
        assert!(
            head.contains(&"supply_cyan_toner_percent".to_string()),
            "{head:?}"
        );
        assert_eq!(head[0], "device_id");
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        let col = |n: &str| head.iter().position(|h| h == n).unwrap();
        assert_eq!(&rows[0][col("name")], "'=HYPERLINK(\"x\")");
        assert_eq!(&rows[0][col("customer")], "acme, \"east\"");
        assert_eq!(&rows[0][col("counter_total")], "12345");
        assert_eq!(&rows[0][col("supply_black_toner_percent")], "5.0");
        assert_eq!(&rows[1][col("name")], "line\nbreak");
        assert_eq!(&rows[1][col("supply_black_toner_percent")], "");
        assert_eq!(&rows[1][col("status")], "unknown");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Black Toner (K)"), "black_toner_k");
        assert_eq!(slug("  --  "), "unnamed");
    }
}
