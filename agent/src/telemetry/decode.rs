//! Decode an SNMP walk of a printer into a [`DeviceRecord`].
//!
//! Standard MIBs first (SNMPv2-MIB, HOST-RESOURCES-MIB, Printer-MIB v2,
//! IF-MIB/IP-MIB), vendor OIDs only where the standard ones are missing.
//! Nothing here panics on device data: a field that cannot be decoded adds a
//! [`FieldError`] and decoding continues.
//!
//! Decisions worth knowing:
//! - The printer is the hrDeviceTable row of type printer (any index); with
//!   no such row, the index used by the Printer-MIB tables, else the
//!   hrPrinterTable's row. A device that lacks one table still reports what
//!   the others say: status and error states come from the hrDeviceTable /
//!   hrPrinterTable row of that index even when hrDeviceType is missing.
//! - Every identity and status field falls back source by source (standard
//!   MIB, vendor MIB, sysDescr) before it is reported missing; the record
//!   says which source gave each field (`sources`) and which none had
//!   (`missing`).
//! - Manufacturer: the enterprise number of sysObjectID, unless sysDescr
//!   starts with another maker's name: rebadged devices (a Toshiba built on
//!   a Lexmark engine) keep the OEM's enterprise number, and the name on
//!   the device is the one a dealer knows it by. Vendor OIDs are still
//!   chosen by the enterprise number (the firmware is the engine maker's).
//! - A supply level above its max capacity is kept raw in `level`, gets no
//!   percentage, and leaves a field error (it is never clamped to 100 %).
//! - Supply colour comes from the colorant table; devices without one get the
//!   colour word of the description.
//! - Counters: `total` is prtMarkerLifeCount of the printer's first marker;
//!   vendor totals fill it only when the Printer-MIB has none.

use std::net::Ipv4Addr;

use dwa_proto::telemetry::{
    Alert, Counters, DeviceRecord, ErrorState, FieldError, Level, Supply, SupplyClass, SupplyKind,
    SOURCE_FIELDS,
};

use super::text::{display_string, strip_leading_controls};
use dwa_proto::snmprec::{Oid, Value, Walk};

const SYS: [u32; 7] = [1, 3, 6, 1, 2, 1, 1];
const IF_TYPE: [u32; 10] = [1, 3, 6, 1, 2, 1, 2, 2, 1, 3];
const IF_PHYS: [u32; 10] = [1, 3, 6, 1, 2, 1, 2, 2, 1, 6];
const IP_AD_IFINDEX: [u32; 10] = [1, 3, 6, 1, 2, 1, 4, 20, 1, 2];
const HR_DEVICE_ENTRY: [u32; 10] = [1, 3, 6, 1, 2, 1, 25, 3, 2, 1];
const HR_PRINTER_ENTRY: [u32; 10] = [1, 3, 6, 1, 2, 1, 25, 3, 5, 1];
const HR_TYPE_PRINTER: [u32; 10] = [1, 3, 6, 1, 2, 1, 25, 3, 1, 5];
const PRT: [u32; 7] = [1, 3, 6, 1, 2, 1, 43];
const ENTERPRISES: [u32; 6] = [1, 3, 6, 1, 4, 1];

/// Enterprise number → manufacturer (NOTES "Printer MIBs").
const VENDORS: &[(u32, &str)] = &[
    (11, "HP"),
    (1347, "Kyocera"),
    (1602, "Canon"),
    (367, "Ricoh"),
    (253, "Xerox"),
    (2435, "Brother"),
    (18334, "Konica Minolta"),
    (641, "Lexmark"),
    (2385, "Sharp"),
    (1248, "Epson"),
    (1129, "Toshiba TEC"),
    (236, "Samsung"),
    (2001, "OKI"),
    (674, "Dell"),
];

/// sysDescr words → manufacturer, when sysObjectID does not tell.
const DESCR_VENDORS: &[(&str, &str)] = &[
    ("hewlett", "HP"),
    ("hp ", "HP"),
    ("jetdirect", "HP"),
    ("kyocera", "Kyocera"),
    ("canon", "Canon"),
    ("ricoh", "Ricoh"),
    ("xerox", "Xerox"),
    ("brother", "Brother"),
    ("konica", "Konica Minolta"),
    ("lexmark", "Lexmark"),
    ("sharp", "Sharp"),
    ("epson", "Epson"),
    ("toshiba", "Toshiba TEC"),
    ("samsung", "Samsung"),
    ("oki", "OKI"),
    ("dell", "Dell"),
];

struct Ctx<'a> {
    walk: &'a Walk,
    errors: Vec<FieldError>,
    charset: Option<i64>,
}

impl Ctx<'_> {
    fn err(&mut self, field: impl Into<String>, error: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            error: error.into(),
        });
    }

    fn get(&self, oid: &[u32]) -> Option<&Value> {
        self.walk.get(oid)
    }

    /// A display string; a non-string value is a field error.
    fn string(&mut self, field: &str, oid: &[u32]) -> Option<String> {
        let v = self.get(oid)?.clone();
        self.string_of(field, &v)
    }

    fn string_of(&mut self, field: &str, v: &Value) -> Option<String> {
        match v {
            Value::OctetString(b) => {
                let s = display_string(b, self.charset);
                (!s.is_empty()).then_some(s)
            }
            other => {
                self.err(
                    field,
                    format!("expected OCTET STRING, got {}", other.type_name()),
                );
                None
            }
        }
    }

    /// Any integer-like value (INTEGER, Counter32/64, Gauge32, TimeTicks):
    /// devices disagree on the type of counters.
    fn int(&mut self, field: &str, oid: &[u32]) -> Option<i64> {
        let v = self.get(oid)?.clone();
        self.int_of(field, &v)
    }

    fn int_of(&mut self, field: &str, v: &Value) -> Option<i64> {
        match *v {
            Value::Integer(i) => Some(i),
            Value::Counter32(u) | Value::Gauge32(u) | Value::TimeTicks(u) => Some(i64::from(u)),
            Value::Counter64(u) => match i64::try_from(u) {
                Ok(i) => Some(i),
                Err(_) => {
                    self.err(field, format!("value {u} out of range"));
                    None
                }
            },
            ref other => {
                self.err(
                    field,
                    format!("expected a number, got {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A counter: integer-like and not negative.
    fn counter(&mut self, field: &str, oid: &[u32]) -> Option<u64> {
        let i = self.int(field, oid)?;
        match u64::try_from(i) {
            Ok(u) => Some(u),
            Err(_) => {
                self.err(field, format!("negative counter {i}"));
                None
            }
        }
    }
}

fn cat(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut v = a.to_vec();
    v.extend_from_slice(b);
    v
}

/// Decode one device. `address` is the address it was scanned at.
pub fn decode(address: &str, walk: &Walk) -> DeviceRecord {
    let mut cx = Ctx {
        walk,
        errors: Vec::new(),
        charset: None,
    };
    let mut rec = DeviceRecord {
        address: address.to_string(),
        ..DeviceRecord::default()
    };

    rec.sys_descr = cx.string("sys_descr", &cat(&SYS, &[1, 0]));
    rec.sys_object_id = match walk.get(&cat(&SYS, &[2, 0])) {
        None => None,
        Some(Value::ObjectId(o)) => Some(o.to_string()),
        Some(other) => {
            let t = other.type_name();
            cx.err(
                "sys_object_id",
                format!("expected OBJECT IDENTIFIER, got {t}"),
            );
            None
        }
    };
    rec.uptime_ticks = cx.counter("uptime_ticks", &cat(&SYS, &[3, 0]));
    rec.sys_name = cx.string("sys_name", &cat(&SYS, &[5, 0]));
    rec.sys_location = cx.string("sys_location", &cat(&SYS, &[6, 0]));

    let (hr_index, prt_index) = printer_indexes(walk);
    rec.printer_index = prt_index.or(hr_index);
    if rec.printer_index.is_none() {
        cx.err(
            "printer_index",
            "no printer row in hrDeviceTable and no Printer-MIB tables",
        );
    }
    let pi = rec.printer_index.unwrap_or(1);
    // prtLocalizationCharacterSet of the printer's first localization row.
    let charset_oid = cat(&PRT, &[7, 1, 1, 4, pi]);
    cx.charset = walk
        .subtree(&charset_oid)
        .next()
        .and_then(|(_, v)| match v {
            Value::Integer(i) => Some(*i),
            _ => None,
        });

    let mut sources: Vec<(&'static str, String)> = Vec::new();
    if let Some((m, src)) = manufacturer(&rec) {
        rec.manufacturer = Some(m);
        sources.push(("manufacturer", src.to_string()));
    }
    // Vendor OIDs are chosen by enterprise number; when sysObjectID is
    // missing or broken, by the manufacturer recognised from sysDescr.
    let vendor_pen = enterprise(&rec).or_else(|| {
        let m = rec.manufacturer.as_deref()?;
        VENDORS.iter().find(|(_, n)| *n == m).map(|(p, _)| *p)
    });
    // The row of hrDeviceTable/hrPrinterTable that describes the printer.
    let status_index = hr_index.or_else(|| status_row(walk, rec.printer_index));

    if let Some((s, src)) = serial(&mut cx, pi, vendor_pen, rec.sys_descr.as_deref()) {
        rec.serial = Some(s);
        sources.push(("serial", src));
    }
    if let Some((m, src)) = model(
        &mut cx,
        status_index,
        vendor_pen,
        rec.serial.as_deref(),
        rec.sys_descr.as_deref(),
    ) {
        rec.model = Some(m);
        sources.push(("model", src));
    }
    if rec.manufacturer.is_none() {
        // Last resort: a maker's name at the start of the model text.
        if let Some(m) = rec.model.as_deref().and_then(descr_vendor) {
            rec.manufacturer = Some(m.0.to_string());
            sources.push(("manufacturer", "model".to_string()));
        }
    }
    if let Some((f, src)) = firmware(&mut cx, vendor_pen, rec.sys_descr.as_deref()) {
        rec.firmware = Some(f);
        sources.push(("firmware", src));
    }
    rec.mac = mac(&mut cx, address);
    if rec.mac.is_some() {
        sources.push(("mac", "if-mib".to_string()));
    }
    rec.counters = counters(&mut cx, pi, vendor_pen);
    if let Some(src) = &rec.counters.source {
        sources.push(("counters.total", src.clone()));
    }
    rec.supplies = supplies(&mut cx, pi);
    if !rec.supplies.is_empty() {
        sources.push(("supplies", "printer-mib".to_string()));
    }

    if let Some(h) = status_index {
        rec.device_status = cx
            .int("device_status", &cat(&HR_DEVICE_ENTRY, &[5, h]))
            .map(|s| {
                name_of(
                    s,
                    &[
                        (1, "unknown"),
                        (2, "running"),
                        (3, "warning"),
                        (4, "testing"),
                        (5, "down"),
                    ],
                )
            });
        rec.printer_status = cx
            .int("printer_status", &cat(&HR_PRINTER_ENTRY, &[1, h]))
            .map(|s| {
                name_of(
                    s,
                    &[
                        (1, "other"),
                        (2, "unknown"),
                        (3, "idle"),
                        (4, "printing"),
                        (5, "warmup"),
                    ],
                )
            });
        match walk.get(&cat(&HR_PRINTER_ENTRY, &[2, h])) {
            None => {}
            Some(Value::OctetString(b)) => {
                rec.error_states = ErrorState::from_bits(b);
                sources.push(("error_states", "host-resources-mib".to_string()));
            }
            Some(other) => {
                let t = other.type_name();
                cx.err("error_states", format!("expected OCTET STRING, got {t}"));
            }
        }
        if rec.device_status.is_some() {
            sources.push(("device_status", "host-resources-mib".to_string()));
        }
        if rec.printer_status.is_some() {
            sources.push(("printer_status", "host-resources-mib".to_string()));
        }
    }
    rec.alerts = alerts(&mut cx, pi);
    rec.console = console(&mut cx, pi);
    rec.field_errors = cx.errors;
    rec.sources = sources
        .into_iter()
        .map(|(f, s)| (f.to_string(), s))
        .collect();
    // A field that could not be decoded is an error, not "missing".
    rec.missing = SOURCE_FIELDS
        .iter()
        .filter(|f| !rec.sources.contains_key(**f))
        .filter(|f| !rec.field_errors.iter().any(|e| e.field == **f))
        .map(|f| f.to_string())
        .collect();
    rec
}

/// The hrDeviceTable/hrPrinterTable row of a printer whose hrDeviceType is
/// missing: the Printer-MIB's index (RFC 3805 indexes its tables by
/// hrDeviceIndex) when that row exists, else the only hrPrinterTable row.
fn status_row(walk: &Walk, printer_index: Option<u32>) -> Option<u32> {
    let has_row = |i: u32| {
        walk.get(&cat(&HR_DEVICE_ENTRY, &[5, i])).is_some()
            || walk.get(&cat(&HR_DEVICE_ENTRY, &[3, i])).is_some()
            || walk.get(&cat(&HR_PRINTER_ENTRY, &[1, i])).is_some()
            || walk.get(&cat(&HR_PRINTER_ENTRY, &[2, i])).is_some()
    };
    if let Some(i) = printer_index.filter(|i| has_row(*i)) {
        return Some(i);
    }
    let rows = hr_printer_rows(walk);
    match rows[..] {
        [only] => Some(only),
        _ => None,
    }
}

/// Indexes of hrPrinterTable rows.
fn hr_printer_rows(walk: &Walk) -> Vec<u32> {
    let mut rows = Vec::new();
    for col in [1u32, 2] {
        for (idx, _) in walk.subtree(&cat(&HR_PRINTER_ENTRY, &[col])) {
            if let [i] = idx {
                if !rows.contains(i) {
                    rows.push(*i);
                }
            }
        }
    }
    rows
}

fn name_of(code: i64, names: &[(i64, &str)]) -> String {
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("code_{code}"))
}

/// (hrDeviceIndex of the printer row, index used by the Printer-MIB tables).
fn printer_indexes(walk: &Walk) -> (Option<u32>, Option<u32>) {
    let types = cat(&HR_DEVICE_ENTRY, &[2]);
    let hr = walk.subtree(&types).find_map(|(idx, v)| match v {
        Value::ObjectId(Oid(o)) if o[..] == HR_TYPE_PRINTER[..] && idx.len() == 1 => Some(idx[0]),
        _ => None,
    });
    // Printer-MIB tables indexed by hrDeviceIndex: general, marker, supplies.
    let mut prt_indexes: Vec<u32> = Vec::new();
    for table in [[5u32, 1, 1], [10, 2, 1], [11, 1, 1]] {
        for (suffix, _) in walk.subtree(&cat(&PRT, &table)) {
            // suffix = column, hrDeviceIndex, ...
            if let Some(&i) = suffix.get(1) {
                if !prt_indexes.contains(&i) {
                    prt_indexes.push(i);
                }
            }
        }
    }
    let prt = match hr {
        Some(h) if prt_indexes.contains(&h) || prt_indexes.is_empty() => Some(h),
        _ => prt_indexes.iter().min().copied(),
    };
    // Neither hrDeviceType nor Printer-MIB rows: an hrPrinterTable row
    // still says this is a printer.
    let from_hr_printer = || hr_printer_rows(walk).into_iter().min();
    (hr, prt.or(hr).or_else(from_hr_printer))
}

fn enterprise(rec: &DeviceRecord) -> Option<u32> {
    let oid = Oid::parse(rec.sys_object_id.as_deref()?).ok()?;
    oid.starts_with(&ENTERPRISES)
        .then(|| oid.0.get(ENTERPRISES.len()).copied())
        .flatten()
}

/// The maker named in a text, and whether the text starts with it.
fn descr_vendor(text: &str) -> Option<(&'static str, bool)> {
    let descr = format!("{} ", text.to_ascii_lowercase());
    DESCR_VENDORS.iter().find_map(|(word, name)| {
        if descr.starts_with(word) {
            Some((*name, true))
        } else {
            descr
                .contains(&format!(" {}", word.trim_end()))
                .then_some((*name, false))
        }
    })
}

/// Manufacturer and its source (see the module docs for rebadged devices).
fn manufacturer(rec: &DeviceRecord) -> Option<(String, &'static str)> {
    let by_pen = enterprise(rec)
        .and_then(|pen| VENDORS.iter().find(|(p, _)| *p == pen))
        .map(|(_, name)| *name);
    let by_descr = rec.sys_descr.as_deref().and_then(descr_vendor);
    match (by_pen, by_descr) {
        (Some(p), Some((d, true))) if p != d => Some((d.to_string(), "sysdescr")),
        (Some(p), _) => Some((p.to_string(), "sysobjectid")),
        (None, Some((d, _))) => Some((d.to_string(), "sysdescr")),
        (None, None) => None,
    }
}

fn serial(
    cx: &mut Ctx,
    pi: u32,
    pen: Option<u32>,
    descr: Option<&str>,
) -> Option<(String, String)> {
    if let Some(s) = cx.string("serial", &cat(&PRT, &[5, 1, 1, 17, pi])) {
        return Some((s, "printer-mib".into()));
    }
    // Vendor fallbacks (NOTES): HP PML serial (0x01 0x15 prefixed), Brother,
    // Ricoh.
    let vendor: &[&[u32]] = match pen {
        Some(11) => &[&[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 1, 3, 3, 0]],
        Some(2435) => &[&[1, 3, 6, 1, 4, 1, 2435, 2, 3, 9, 4, 2, 1, 5, 5, 1, 0]],
        Some(367) => &[&[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 2, 1, 4, 0]],
        _ => &[],
    };
    if let Some(s) = vendor_string(cx, vendor) {
        return Some((s, vendor_source(pen)));
    }
    // JetDirect sysDescr carries "SN:<serial>,".
    let d = descr?;
    let start = d.find("SN:")? + 3;
    let sn: String = d[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!sn.is_empty()).then_some((sn, "sysdescr".into()))
}

fn vendor_source(pen: Option<u32>) -> String {
    format!("vendor:{}", pen.unwrap_or(0))
}

/// The first of `oids` that holds a non-empty string (vendor strings may
/// start with control bytes, HP's PML does).
fn vendor_string(cx: &Ctx, oids: &[&[u32]]) -> Option<String> {
    oids.iter().find_map(|oid| match cx.get(oid) {
        Some(Value::OctetString(b)) => {
            let s = display_string(strip_leading_controls(b), None);
            (!s.is_empty()).then_some(s)
        }
        _ => None,
    })
}

fn model(
    cx: &mut Ctx,
    hr: Option<u32>,
    pen: Option<u32>,
    serial: Option<&str>,
    descr: Option<&str>,
) -> Option<(String, String)> {
    let from_hr = hr.and_then(|h| cx.string("model", &cat(&HR_DEVICE_ENTRY, &[3, h])));
    if let Some(m) = from_hr {
        return Some((clean_model(&m, serial), "host-resources-mib".into()));
    }
    // Vendor model strings (Ricoh's product name).
    let vendor: &[&[u32]] = match pen {
        Some(367) => &[&[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 1, 1, 1, 0]],
        _ => &[],
    };
    if let Some(m) = vendor_string(cx, vendor) {
        return Some((m, vendor_source(pen)));
    }
    // IEEE 1284 device ID ("MFG:...;MDL:<model>;") anywhere under enterprises.
    for (_, v) in cx.walk.subtree(&ENTERPRISES) {
        if let Value::OctetString(b) = v {
            let s = String::from_utf8_lossy(b);
            if let Some(p) = s.find("MDL:") {
                let m = s[p + 4..].split(';').next().unwrap_or("").trim();
                if !m.is_empty() {
                    return Some((m.to_string(), "ieee1284".into()));
                }
            }
        }
    }
    model_from_descr(descr?).map(|m| (m, "sysdescr".into()))
}

/// The model at the head of a sysDescr: up to the first `,`, `;` or ` / `,
/// without a trailing `version …` or firmware number (Lexmark-built
/// devices: "TOSHIBA e-STUDIO338CS version CXTZJ.230.307 kernel …"; Ricoh:
/// "RICOH MP C2503 1.35 / RICOH Network Printer …").
fn model_from_descr(descr: &str) -> Option<String> {
    let head = descr.split([',', ';']).next()?;
    let head = head.split(" / ").next()?;
    let head = head.split(" version ").next()?;
    let mut words: Vec<&str> = head.split_whitespace().collect();
    // A trailing firmware number ("1.35"): digits and dots only.
    if words.len() > 1
        && words
            .last()
            .is_some_and(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
    {
        words.pop();
    }
    let m = words.join(" ");
    (!m.is_empty()).then_some(m)
}

/// Collapse whitespace and cut at a service tag / serial token (Dell puts
/// "<model> <service tag> <firmware>" into hrDeviceDescr).
fn clean_model(raw: &str, serial: Option<&str>) -> String {
    let tag = serial.map(|s| s.split('-').next().unwrap_or(s));
    let mut words = Vec::new();
    for w in raw.split_whitespace() {
        if tag.is_some_and(|t| !t.is_empty() && (w == t || Some(w) == serial)) {
            break;
        }
        words.push(w);
    }
    words.join(" ")
}

fn firmware(cx: &mut Ctx, pen: Option<u32>, descr: Option<&str>) -> Option<(String, String)> {
    let oids: &[&[u32]] = match pen {
        Some(1602) => &[&[1, 3, 6, 1, 4, 1, 1602, 1, 1, 1, 4, 0]],
        Some(367) => &[&[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 1, 1, 2, 0]],
        Some(2435) => &[&[1, 3, 6, 1, 4, 1, 2435, 2, 4, 3, 1240, 6, 5, 0]],
        Some(674) => &[&[1, 3, 6, 1, 4, 1, 674, 10898, 100, 1, 1, 1, 0]],
        Some(18334) => &[&[1, 3, 6, 1, 4, 1, 18334, 1, 1, 1, 1, 6, 1, 0]],
        Some(11) => &[&[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 1, 3, 5, 0]],
        _ => &[],
    };
    if let Some(f) = vendor_string(cx, oids) {
        return Some((f, vendor_source(pen)));
    }
    firmware_from_descr(descr?).map(|f| (f, "sysdescr".into()))
}

/// Firmware named in a sysDescr: "… version <fw> …" (Lexmark-built
/// devices), "Firmware Ver.<fw>" (Brother), "; SS <fw>," (Xerox system
/// software).
fn firmware_from_descr(descr: &str) -> Option<String> {
    let after = |marker: &str| {
        let start = descr.find(marker)? + marker.len();
        let tok: String = descr[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ';')
            .collect();
        (!tok.is_empty() && tok.chars().any(|c| c.is_ascii_digit())).then_some(tok)
    };
    after(" version ")
        .or_else(|| after("Firmware Ver."))
        .or_else(|| after("; SS "))
}

fn format_mac(b: &[u8]) -> Option<String> {
    if b.len() != 6 || b.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0xff) {
        return None;
    }
    Some(
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// MAC of the interface holding `address`; else the interface of a
/// non-loopback unicast address; else the first usable ifPhysAddress of a
/// non-loopback interface.
fn mac(cx: &mut Ctx, address: &str) -> Option<String> {
    let walk = cx.walk;
    let is_loopback_if =
        |idx: u32| matches!(walk.get(&cat(&IF_TYPE, &[idx])), Some(Value::Integer(24)));
    let mac_of = |idx: u32| match walk.get(&cat(&IF_PHYS, &[idx])) {
        Some(Value::OctetString(b)) if !is_loopback_if(idx) => format_mac(b),
        _ => None,
    };
    let ifindex = |v: &Value| match *v {
        Value::Integer(i) => u32::try_from(i).ok(),
        _ => None,
    };
    if let Ok(ip) = address.parse::<Ipv4Addr>() {
        let key = cat(&IP_AD_IFINDEX, &ip.octets().map(u32::from));
        if let Some(m) = walk.get(&key).and_then(ifindex).and_then(mac_of) {
            return Some(m);
        }
    }
    for (suffix, v) in walk.subtree(&IP_AD_IFINDEX) {
        let Ok(o): Result<[u32; 4], _> = suffix.try_into() else {
            continue;
        };
        if o.iter().any(|&x| x > 255) {
            continue;
        }
        let ip = Ipv4Addr::new(o[0] as u8, o[1] as u8, o[2] as u8, o[3] as u8);
        if ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            continue;
        }
        if let Some(m) = ifindex(v).and_then(mac_of) {
            return Some(m);
        }
    }
    let mut malformed = None;
    for (suffix, v) in walk.subtree(&IF_PHYS) {
        let [idx] = suffix else { continue };
        if let Value::OctetString(b) = v {
            if !b.is_empty() && b.len() != 6 {
                malformed = Some(b.len());
            }
        }
        if let Some(m) = mac_of(*idx) {
            return Some(m);
        }
    }
    if let Some(len) = malformed {
        cx.err("mac", format!("ifPhysAddress of {len} bytes is no MAC"));
    }
    None
}

fn counter_unit(code: i64) -> String {
    name_of(
        code,
        &[
            (3, "ten_thousandths_of_inches"),
            (4, "micrometers"),
            (5, "characters"),
            (6, "lines"),
            (7, "impressions"),
            (8, "sheets"),
            (9, "dot_row"),
            (11, "hours"),
            (16, "feet"),
            (17, "meters"),
        ],
    )
}

fn counters(cx: &mut Ctx, pi: u32, pen: Option<u32>) -> Counters {
    let mut c = Counters::default();
    let life = cat(&PRT, &[10, 2, 1, 4, pi]);
    let first_marker = cx
        .walk
        .subtree(&life)
        .next()
        .map(|(s, v)| (s.to_vec(), v.clone()));
    if let Some((marker, v)) = first_marker {
        if let Some(i) = cx.int_of("counters.total", &v) {
            match u64::try_from(i) {
                Ok(u) => {
                    c.total = Some(u);
                    c.source = Some("printer-mib".into());
                    let unit_oid = cat(&cat(&PRT, &[10, 2, 1, 3, pi]), &marker);
                    c.unit = cx.int("counters.unit", &unit_oid).map(counter_unit);
                }
                Err(_) => cx.err("counters.total", format!("negative counter {i}")),
            }
        }
    }
    let e = |tail: &[u32]| cat(&ENTERPRISES, tail);
    let mut vendor_total = None;
    match pen {
        Some(11) => {
            let base = e(&[11, 2, 3, 9, 4, 2, 1, 4, 1, 2]);
            vendor_total = cx.counter("counters.total", &cat(&base, &[5, 0]));
            c.mono = cx.counter("counters.mono", &cat(&base, &[6, 0]));
            c.colour = cx.counter("counters.colour", &cat(&base, &[7, 0]));
        }
        Some(1347) => {
            vendor_total = cx.counter("counters.total", &e(&[1347, 43, 10, 1, 1, 12, 1, 1]));
            let f = e(&[1347, 42, 3, 1, 1, 1, 1]);
            c.print = cx.counter("counters.print", &cat(&f, &[1]));
            c.copy = cx.counter("counters.copy", &cat(&f, &[2]));
            c.fax = cx.counter("counters.fax", &cat(&f, &[4]));
        }
        Some(367) => {
            // Counter table: type column .2, value column .9, same row index.
            let table = e(&[367, 3, 2, 1, 2, 19, 5, 1]);
            let rows: Vec<(Vec<u32>, Value)> = cx
                .walk
                .subtree(&cat(&table, &[2]))
                .map(|(s, v)| (s.to_vec(), v.clone()))
                .collect();
            for (row, ty) in rows {
                let Some(ty) = cx.int_of("counters.ricoh_type", &ty) else {
                    continue;
                };
                let slot = match ty {
                    10 => &mut vendor_total,
                    200..=203 => &mut c.copy,
                    400..=403 => &mut c.print,
                    870 | 871 => &mut c.scan,
                    _ => continue,
                };
                if slot.is_none() {
                    let value = cx.counter("counters", &cat(&cat(&table, &[9]), &row));
                    *slot = value;
                }
            }
        }
        Some(253) => {
            let base = e(&[253, 8, 53, 13, 2, 1, 6, 1, 20]);
            vendor_total = cx.counter("counters.total", &cat(&base, &[1]));
            c.colour = cx.counter("counters.colour", &cat(&base, &[33]));
            c.mono = cx.counter("counters.mono", &cat(&base, &[34]));
        }
        Some(1602) => {
            let base = e(&[1602, 1, 11, 1, 3, 1, 4]);
            c.copy = cx.counter("counters.copy", &cat(&base, &[101]));
            c.print = cx.counter("counters.print", &cat(&base, &[301]));
            c.scan = cx.counter("counters.scan", &cat(&base, &[501]));
        }
        Some(2435) => {
            vendor_total = cx.counter("counters.total", &e(&[2435, 2, 3, 9, 4, 2, 1, 5, 5, 10, 0]));
        }
        _ => {}
    }
    if c.total.is_none() && vendor_total.is_some() {
        c.total = vendor_total;
        c.source = Some(format!("vendor:{}", pen.unwrap_or(0)));
    }
    c
}

fn supply_unit(code: i64) -> String {
    name_of(
        code,
        &[
            (1, "other"),
            (2, "unknown"),
            (3, "ten_thousandths_of_inches"),
            (4, "micrometers"),
            (7, "impressions"),
            (8, "sheets"),
            (11, "hours"),
            (12, "thousandths_of_ounces"),
            (13, "tenths_of_grams"),
            (14, "hundredths_of_fluid_ounces"),
            (15, "tenths_of_milliliters"),
            (16, "feet"),
            (17, "meters"),
            (18, "items"),
            (19, "percent"),
        ],
    )
}

const COLOUR_WORDS: &[&str] = &[
    "matte black",
    "photo black",
    "light cyan",
    "light magenta",
    "black",
    "cyan",
    "magenta",
    "yellow",
];

/// Colour words of Chinese and Japanese descriptions (UTF-8, as Ricoh's
/// Asian firmware sends them: "黑色碳粉" = black toner).
const CJK_COLOURS: &[(&str, &str)] = &[
    ("黑", "black"),
    ("黒", "black"),
    ("ブラック", "black"),
    ("青", "cyan"),
    ("シアン", "cyan"),
    ("洋红", "magenta"),
    ("洋紅", "magenta"),
    ("品红", "magenta"),
    ("マゼンタ", "magenta"),
    ("黄", "yellow"),
    ("黃", "yellow"),
    ("イエロー", "yellow"),
];

fn colour_from_description(d: &str) -> Option<String> {
    if let Some((_, c)) = CJK_COLOURS.iter().find(|(w, _)| d.contains(w)) {
        return Some(c.to_string());
    }
    let d = d.to_ascii_lowercase();
    COLOUR_WORDS
        .iter()
        .find(|w| {
            d.match_indices(**w).any(|(i, _)| {
                let before = d[..i].chars().next_back();
                let after = d[i + w.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_alphanumeric())
                    && !after.is_some_and(|c| c.is_ascii_alphanumeric())
            })
        })
        .map(|w| w.to_string())
}

/// Row indexes of a table whose columns 2..=9 are `col(c).<row>`: the union
/// over all columns, sorted (some devices omit whole columns).
fn table_rows(cx: &Ctx, col: impl Fn(u32) -> Vec<u32>) -> Vec<u32> {
    let rows: std::collections::BTreeSet<u32> = (2..=9)
        .flat_map(|c| {
            let prefix = col(c);
            cx.walk
                .subtree(&prefix)
                .filter_map(|(s, _)| match s {
                    [i] => Some(*i),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rows.into_iter().collect()
}

fn supplies(cx: &mut Ctx, pi: u32) -> Vec<Supply> {
    let col = |c: u32| cat(&PRT, &[11, 1, 1, c, pi]);
    let rows = table_rows(cx, col);
    let mut out = Vec::new();
    for i in rows {
        let f = |name: &str| format!("supplies.{i}.{name}");
        let description = cx.string(&f("description"), &cat(&col(6), &[i]));
        let kind = cx
            .int(&f("kind"), &cat(&col(5), &[i]))
            .map(SupplyKind::from_code);
        let class = match cx.int(&f("class"), &cat(&col(4), &[i])) {
            Some(3) => Some(SupplyClass::Consumed),
            Some(4) => Some(SupplyClass::Receptacle),
            Some(_) => Some(SupplyClass::Other),
            None if kind.is_some_and(SupplyKind::is_waste) => Some(SupplyClass::Receptacle),
            None => kind.map(|_| SupplyClass::Consumed),
        };
        let unit_code = cx.int(&f("unit"), &cat(&col(7), &[i]));
        let mut level_of = |name: &str, c: u32| -> Level {
            let field = f(name);
            match cx.int(&field, &cat(&col(c), &[i])) {
                None => Level::Absent,
                Some(raw) => Level::from_raw(raw).unwrap_or_else(|| {
                    cx.err(&field, format!("undefined negative value {raw}"));
                    Level::Unknown
                }),
            }
        };
        let max = level_of("max", 8);
        let level = level_of("level", 9);
        // Colour: colorant table joined on the colorant index.
        let colorant = cx.int(&f("colorant"), &cat(&col(3), &[i]));
        let mut colour = None;
        if let Some(ci) = colorant
            .filter(|c| *c > 0)
            .and_then(|c| u32::try_from(c).ok())
        {
            colour = cx.string(&f("colour"), &cat(&PRT, &[12, 1, 1, 4, pi, ci]));
            colour = colour.map(|c| c.to_ascii_lowercase());
        }
        if colour.is_none() {
            colour = description.as_deref().and_then(colour_from_description);
        }
        // Percentage of the capacity; never from special values.
        let mut pct = match (level, max) {
            (Level::Value(l), Level::Value(m)) if m > 0 => Some(l as f64 * 100.0 / m as f64),
            (Level::Value(l), _) if unit_code == Some(19) => Some(l as f64),
            _ => None,
        };
        if let Some(p) = pct.filter(|p| *p > 100.0) {
            cx.err(
                f("level"),
                format!("level {level:?} above max capacity {max:?} ({p:.0} %); kept raw, no percentage"),
            );
            pct = None;
        }
        let receptacle = class == Some(SupplyClass::Receptacle);
        out.push(Supply {
            index: i,
            description,
            kind,
            class,
            colour,
            level,
            max,
            unit: unit_code.map(supply_unit),
            percent: if receptacle {
                None
            } else {
                pct.map(|p| p as f32)
            },
            fullness_percent: if receptacle {
                pct.map(|p| (100.0 - p) as f32)
            } else {
                None
            },
        });
    }
    out
}

pub(crate) fn alert_code_name(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "other",
        2 => "unknown",
        3 => "cover_open",
        4 => "cover_closed",
        5 => "interlock_open",
        6 => "interlock_closed",
        8 => "jam",
        13 => "subunit_life_almost_over",
        14 => "subunit_life_over",
        501 => "door_open",
        801 => "input_media_tray_missing",
        807 => "input_media_supply_low",
        808 => "input_media_supply_empty",
        901 => "output_media_tray_missing",
        902 => "output_media_tray_almost_full",
        903 => "output_media_tray_full",
        1101 => "marker_toner_empty",
        1104 => "marker_toner_almost_empty",
        1107 => "marker_waste_toner_receptacle_almost_full",
        1109 => "marker_waste_toner_receptacle_full",
        1112 => "marker_opc_life_over",
        1115 => "marker_toner_cartridge_missing",
        _ => return None,
    })
}

fn alerts(cx: &mut Ctx, pi: u32) -> Vec<Alert> {
    let col = |c: u32| cat(&PRT, &[18, 1, 1, c, pi]);
    let rows = table_rows(cx, col);
    rows.into_iter()
        .map(|i| {
            let f = |n: &str| format!("alerts.{i}.{n}");
            let code = cx.int(&f("code"), &cat(&col(7), &[i]));
            Alert {
                index: i,
                severity: cx.int(&f("severity"), &cat(&col(2), &[i])).map(|s| {
                    name_of(
                        s,
                        &[
                            (1, "other"),
                            (3, "critical"),
                            (4, "warning"),
                            (5, "warning_binary_change_event"),
                        ],
                    )
                }),
                code,
                code_name: code.and_then(alert_code_name).map(str::to_string),
                description: cx.string(&f("description"), &cat(&col(8), &[i])),
                group: cx.int(&f("group"), &cat(&col(4), &[i])),
                group_index: cx.int(&f("group_index"), &cat(&col(5), &[i])),
                location: cx.int(&f("location"), &cat(&col(6), &[i])),
            }
        })
        .collect()
}

fn console(cx: &mut Ctx, pi: u32) -> Vec<String> {
    let base = cat(&PRT, &[16, 5, 1, 2, pi]);
    let lines: Vec<(Vec<u32>, Value)> = cx
        .walk
        .subtree(&base)
        .map(|(s, v)| (s.to_vec(), v.clone()))
        .collect();
    lines
        .into_iter()
        .filter_map(|(s, v)| {
            let n = s.first().copied().unwrap_or(0);
            cx.string_of(&format!("console.{n}"), &v)
        })
        .collect()
}
