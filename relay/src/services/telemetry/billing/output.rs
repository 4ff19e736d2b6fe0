//! A billing report as CSV (through `dwa_proto::csv`, the one CSV writer
//! with its formula rule) and as XLSX (`rust_xlsxwriter`). Both have the
//! same columns, one row per device and counter; a device with no counter
//! at all has one row saying so. In the XLSX an estimated value is shaded
//! and carries a note saying how it was found; the `*_basis` and
//! `estimated` columns say it in both formats.

use dwa_proto::csv::{Cell, CsvError, Table};
use rust_xlsxwriter::{Color, Format as XFormat, Note, Workbook, XlsxError};

use super::meter::{Flag, Line, Value};
use super::{day_of, stored_time, DeviceLines, Format, Report};
use crate::services::telemetry::{Result, TelemetryError};

pub const COLUMNS: [&str; 18] = [
    "customer",
    "device_id",
    "name",
    "address",
    "manufacturer",
    "model",
    "serial",
    "counter",
    "start",
    "start_basis",
    "start_taken_at",
    "end",
    "end_basis",
    "end_taken_at",
    "pages",
    "estimated",
    "flags",
    "period",
];

pub fn render(r: &Report, f: Format) -> Result<Vec<u8>> {
    match f {
        Format::Csv => to_csv(r),
        Format::Xlsx => to_xlsx(r),
    }
}

/// A boundary value's cells: value, basis, when its reading was taken.
fn value_cells(v: Option<&Value>) -> (Option<u64>, &'static str, Option<String>) {
    match v {
        Some(v) => (
            Some(v.value),
            v.basis.as_str(),
            v.basis.taken_at().map(stored_time),
        ),
        None => (None, "missing", None),
    }
}

/// `reset at 2026-07-12T00:00:00.000Z: 52000 -> 30; …`
fn flags_text(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| {
            format!(
                "{} at {}: {} -> {}",
                f.kind.as_str(),
                stored_time(f.at),
                f.from,
                f.to
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The rows of one device: `None` for the row of a device without counters.
fn lines(d: &DeviceLines) -> Vec<Option<&Line>> {
    if d.lines.is_empty() {
        vec![None]
    } else {
        d.lines.iter().map(Some).collect()
    }
}

fn period(r: &Report) -> String {
    format!("{}..{}", r.period.from, day_of(r.period.end - 86_400))
}

pub fn to_csv(r: &Report) -> Result<Vec<u8>> {
    let err = |e: CsvError| TelemetryError::Internal(e.to_string());
    let mut t = Table::new(COLUMNS).map_err(err)?;
    let p = period(r);
    for d in &r.devices {
        for l in lines(d) {
            let (s, sb, st) = value_cells(l.and_then(|l| l.start.as_ref()));
            let (e, eb, et) = value_cells(l.and_then(|l| l.end.as_ref()));
            t.row(vec![
                Cell::text(&r.customer),
                Cell::number(d.device_id),
                Cell::opt_text(d.name.as_deref()),
                Cell::text(&d.address),
                Cell::opt_text(d.manufacturer.as_deref()),
                Cell::opt_text(d.model.as_deref()),
                Cell::opt_text(d.serial.as_deref()),
                Cell::opt_text(l.map(|l| l.counter.as_str())),
                Cell::opt_number(s),
                Cell::text(sb),
                Cell::opt_text(st.as_deref()),
                Cell::opt_number(e),
                Cell::text(eb),
                Cell::opt_text(et.as_deref()),
                Cell::opt_number(l.and_then(|l| l.pages)),
                Cell::text(if l.is_none_or(Line::estimated) {
                    "yes"
                } else {
                    "no"
                }),
                Cell::text(&l.map(|l| flags_text(&l.flags)).unwrap_or_default()),
                Cell::text(&p),
            ])
            .map_err(err)?;
        }
    }
    Ok(t.finish().map_err(err)?.into_bytes())
}

fn xerr(e: XlsxError) -> TelemetryError {
    TelemetryError::Internal(format!("XLSX: {e}"))
}

pub fn to_xlsx(r: &Report) -> Result<Vec<u8>> {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Billing").map_err(xerr)?;
    let bold = XFormat::new().set_bold();
    // Estimated values stand out without hiding the number.
    let estimated = XFormat::new()
        .set_background_color(Color::RGB(0xFF_F2_CC))
        .set_italic();
    let flagged = XFormat::new().set_font_color(Color::RGB(0xC0_00_00));
    for (c, h) in COLUMNS.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &bold)
            .map_err(xerr)?;
    }
    let p = period(r);
    let mut row: u32 = 1;
    for d in &r.devices {
        for l in lines(d) {
            let text = |ws: &mut rust_xlsxwriter::Worksheet, c: u16, s: Option<&str>| {
                match s {
                    Some(s) => ws.write_string(row, c, s).map(|_| ()),
                    None => Ok(()),
                }
                .map_err(xerr)
            };
            text(ws, 0, Some(r.customer.as_str()))?;
            ws.write_number(row, 1, d.device_id as f64).map_err(xerr)?;
            text(ws, 2, d.name.as_deref())?;
            text(ws, 3, Some(d.address.as_str()))?;
            text(ws, 4, d.manufacturer.as_deref())?;
            text(ws, 5, d.model.as_deref())?;
            text(ws, 6, d.serial.as_deref())?;
            text(ws, 7, l.map(|l| l.counter.as_str()))?;
            for (col, v) in [
                (8u16, l.and_then(|l| l.start.as_ref())),
                (11, l.and_then(|l| l.end.as_ref())),
            ] {
                let (n, basis, taken) = value_cells(v);
                if let (Some(n), Some(v)) = (n, v) {
                    if v.basis.estimated() {
                        ws.write_number_with_format(row, col, n as f64, &estimated)
                            .map_err(xerr)?;
                        let why = match taken.as_deref() {
                            Some(t) => format!("Estimated ({basis}): the reading of {t}"),
                            None => format!("Estimated ({basis}) between the readings around it"),
                        };
                        ws.insert_note(row, col, &Note::new(why).set_author("DWA"))
                            .map_err(xerr)?;
                    } else {
                        ws.write_number(row, col, n as f64).map_err(xerr)?;
                    }
                }
                text(ws, col + 1, Some(basis))?;
                text(ws, col + 2, taken.as_deref())?;
            }
            if let Some(pages) = l.and_then(|l| l.pages) {
                ws.write_number(row, 14, pages as f64).map_err(xerr)?;
            }
            let est = l.is_none_or(Line::estimated);
            text(ws, 15, Some(if est { "yes" } else { "no" }))?;
            if let Some(l) = l.filter(|l| !l.flags.is_empty()) {
                ws.write_string_with_format(row, 16, flags_text(&l.flags), &flagged)
                    .map_err(xerr)?;
            }
            text(ws, 17, Some(p.as_str()))?;
            row += 1;
        }
    }
    ws.autofit();
    wb.save_to_buffer().map_err(xerr)
}

#[cfg(test)]
mod tests {
    use super::super::meter::{compute, Bounds, Sample};
    use super::super::Period;
    use super::*;
    use dwa_proto::telemetry::Counters;

    const DAY: i64 = 86_400;

    fn report() -> Report {
        let p = Period::new("2026-07-01", "2026-07-31").unwrap();
        let s = |at: i64, total: u64, colour: Option<u64>| Sample {
            at,
            counters: Counters {
                total: Some(total),
                colour,
                ..Counters::default()
            },
        };
        let samples = [
            s(p.start - 3_600, 1_000, None),
            s(p.start + 10 * DAY, 52_000, Some(500)),
            s(p.start + 11 * DAY, 20, Some(700)),
            s(p.end + 10 * DAY, 2_020, Some(2_700)),
        ];
        let lines = compute(&samples, p.start, p.end, &Bounds::default());
        Report {
            customer_id: 1,
            customer: "=acme".into(),
            period: p,
            max_pages_per_day: 50_000,
            devices: vec![
                DeviceLines {
                    device_id: 7,
                    name: Some("Front desk".into()),
                    address: "10.0.0.5".into(),
                    manufacturer: Some("HP".into()),
                    model: Some("M404".into()),
                    serial: Some("X1".into()),
                    lines,
                },
                DeviceLines {
                    device_id: 8,
                    name: None,
                    address: "10.0.0.6".into(),
                    manufacturer: None,
                    model: None,
                    serial: None,
                    lines: vec![],
                },
            ],
        }
    }

    #[test]
    fn csv_rows_per_counter_with_bases_and_flags() {
        let out = String::from_utf8(to_csv(&report()).unwrap()).unwrap();
        let mut rd = csv::Reader::from_reader(out.as_bytes());
        assert_eq!(rd.headers().unwrap().iter().collect::<Vec<_>>(), COLUMNS);
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        let col = |n: &str| COLUMNS.iter().position(|h| *h == n).unwrap();
        let t = &rows[0];
        assert_eq!(&t[col("customer")], "'=acme");
        assert_eq!(&t[col("counter")], "total");
        assert_eq!(&t[col("start")], "1000");
        assert_eq!(&t[col("start_basis")], "measured");
        assert_eq!(&t[col("start_taken_at")], "2026-06-30T23:00:00.000Z");
        // 20 days after the reset's 20, 2/3 of the way to 2 020.
        assert_eq!(&t[col("end_basis")], "interpolated");
        assert_eq!(&t[col("end")], "1353");
        // Up 51 000, the reset's 20 pages since, then 1 333.
        assert_eq!(&t[col("pages")], "52353");
        assert_eq!(&t[col("estimated")], "yes");
        assert_eq!(
            &t[col("flags")],
            "reset at 2026-07-12T00:00:00.000Z: 52000 -> 20"
        );
        let c = &rows[1];
        assert_eq!(&c[col("counter")], "colour");
        assert_eq!(&c[col("start_basis")], "nearest");
        assert_eq!(&c[col("start")], "500");
        assert_eq!(&c[col("period")], "2026-07-01..2026-07-31");
        let none = &rows[2];
        assert_eq!(&none[col("device_id")], "8");
        assert_eq!(&none[col("counter")], "");
        assert_eq!(&none[col("start_basis")], "missing");
        assert_eq!(&none[col("pages")], "");
    }

    #[test]
    fn xlsx_reads_back_with_the_same_values() {
        use calamine::{Data, Reader, Xlsx};
        let bytes = to_xlsx(&report()).unwrap();
        let mut wb = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
        let ws = wb.worksheet_range("Billing").unwrap();
        let cell = |r: u32, n: &str| {
            let c = COLUMNS.iter().position(|h| *h == n).unwrap() as u32;
            ws.get_value((r, c)).cloned().unwrap_or(Data::Empty)
        };
        assert_eq!(cell(0, "pages"), Data::String("pages".into()));
        // Text is text in XLSX: no formula, so no defusing either.
        assert_eq!(cell(1, "customer"), Data::String("=acme".into()));
        assert_eq!(cell(1, "start"), Data::Float(1_000.0));
        assert_eq!(cell(1, "end"), Data::Float(1_353.0));
        assert_eq!(cell(1, "end_basis"), Data::String("interpolated".into()));
        assert_eq!(cell(1, "pages"), Data::Float(52_353.0));
        assert_eq!(cell(2, "counter"), Data::String("colour".into()));
        assert_eq!(cell(2, "pages"), Data::Float(1_533.0));
        assert_eq!(cell(3, "start_basis"), Data::String("missing".into()));
        assert_eq!(cell(3, "start"), Data::Empty);
    }
}
