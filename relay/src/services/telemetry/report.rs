//! `GET /api/v1/devices.csv`: one row per device. Fixed columns first,
//! then one `supply_<name>_percent` column per supply name found in the
//! fleet (named by description, else colour and kind: `Black Toner` →
//! `supply_black_toner_percent`), sorted. Written by `dwa_proto::csv`, the
//! one CSV writer: text that a spreadsheet would run as a formula gets a
//! `'` first.

use std::collections::{BTreeMap, BTreeSet};

use dwa_proto::csv::{Cell, CsvError, Table};
use dwa_proto::telemetry::{Counters, DeviceRecord};

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
    let err = |e: CsvError| TelemetryError::Internal(e.to_string());
    let head = FIXED.iter().copied().chain(cols.iter().map(|c| c.as_str()));
    let mut t = Table::new(head).map_err(err)?;
    for (d, sup) in devices.iter().zip(&per) {
        let r = d.record.as_ref();
        let c = r.map(|r| &r.counters);
        let text = |f: fn(&DeviceRecord) -> &Option<String>| {
            Cell::opt_text(r.and_then(|r| f(r).as_deref()))
        };
        let count = |f: fn(&Counters) -> Option<u64>| Cell::opt_number(c.and_then(f));
        let mut row = vec![
            Cell::number(d.id),
            Cell::text(&d.customer),
            Cell::text(&d.agent_id),
            Cell::opt_text(d.name.as_deref()),
            Cell::text(&d.address),
            Cell::opt_text(d.identity.as_deref()),
            text(|r| &r.manufacturer),
            text(|r| &r.model),
            text(|r| &r.serial),
            text(|r| &r.mac),
            text(|r| &r.firmware),
            text(|r| &r.sys_location),
            Cell::opt_text(d.first_seen.as_deref()),
            Cell::opt_text(d.last_seen.as_deref()),
            Cell::text(&d.status()),
            count(|c| c.total),
            count(|c| c.mono),
            count(|c| c.colour),
            count(|c| c.print),
            count(|c| c.copy),
            count(|c| c.scan),
            count(|c| c.fax),
            Cell::opt_text(c.and_then(|c| c.unit.as_deref())),
        ];
        for col in &cols {
            row.push(
                sup.get(*col)
                    .map_or_else(Cell::empty, |p| Cell::decimal(f64::from(*p), 1)),
            );
        }
        t.row(row).map_err(err)?;
    }
    Ok(t.finish().map_err(err)?.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_proto::telemetry::{Level, Supply, SupplyClass, SupplyKind};

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
