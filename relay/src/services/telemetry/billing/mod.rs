//! Billing meter reports: per customer and period, each device's start and
//! end reading of every counter it reports, the pages in between, which
//! values are estimated, and the drops, resets and jumps flagged
//! (`docs/telemetry.md`, "Billing meter reports").
//!
//! - [`meter`]: the pure computation for one device.
//! - [`output`]: the report as CSV and XLSX.
//! - [`schedule`]: monthly reports by e-mail.
//! - this module: the period, the readings from the store, the audit.

pub mod meter;
pub mod output;
pub mod schedule;

use std::time::{Duration, UNIX_EPOCH};

use dwa_policy::roles::Action;
use dwa_proto::audit::Event;
use dwa_proto::telemetry::Counters;
use serde::Serialize;

use super::{alerts, inventory, Result, TelemetryError};
use crate::services::clock;
use crate::services::devices::Actor;
use crate::services::Services;
use meter::{Bounds, Line, Sample};

/// Longest period one report covers: bounds the work of one request.
pub const MAX_DAYS: i64 = 400;
/// Most readings of one device taken inside a period that are used (an
/// agent scanning every 5 minutes for 400 days stays below it).
pub const MAX_PERIOD_READINGS: i64 = 120_000;

const DAY: i64 = 86_400;

/// The report's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "csv" => Ok(Format::Csv),
            "xlsx" => Ok(Format::Xlsx),
            _ => Err(TelemetryError::Invalid(format!(
                "format {:?}: expected csv or xlsx",
                s.chars().take(20).collect::<String>()
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// A billing period: whole UTC days, `from` to `to` inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
    /// Unix seconds: the start of `from`, the end of `to` (exclusive).
    #[serde(skip)]
    pub start: i64,
    #[serde(skip)]
    pub end: i64,
}

/// `YYYY-MM-DD` at 00:00 UTC, in unix seconds.
pub fn parse_day(field: &str, s: &str) -> Result<i64> {
    let bad = || TelemetryError::Invalid(format!("{field}: expected a date YYYY-MM-DD"));
    let s = s.trim();
    if s.len() != 10 || !s.is_char_boundary(10) {
        return Err(bad());
    }
    let t = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| bad())?;
    Ok(clock::unix(t))
}

impl Period {
    pub fn new(from: &str, to: &str) -> Result<Period> {
        let start = parse_day("from", from)?;
        let last = parse_day("to", to)?;
        if last < start {
            return Err(TelemetryError::Invalid("to is before from".into()));
        }
        if (last - start) / DAY + 1 > MAX_DAYS {
            return Err(TelemetryError::Invalid(format!(
                "a period is at most {MAX_DAYS} days"
            )));
        }
        Ok(Period {
            from: from.trim().into(),
            to: to.trim().into(),
            start,
            end: last + DAY,
        })
    }

    /// The calendar month before the one `now` (unix seconds) is in.
    pub fn previous_month(now: i64) -> Period {
        let (y, m) = year_month(now);
        let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
        let from = format!("{py:04}-{pm:02}-01");
        let start = parse_day("from", &from).unwrap_or(0);
        let end = parse_day("to", &format!("{y:04}-{m:02}-01")).unwrap_or(start);
        Period {
            from,
            to: day_of(end - DAY),
            start,
            end,
        }
    }
}

/// (year, month) of a unix time, UTC.
fn year_month(t: i64) -> (i64, u32) {
    let d = day_of(t);
    let y = d.get(0..4).and_then(|s| s.parse().ok()).unwrap_or(1970);
    let m = d.get(5..7).and_then(|s| s.parse().ok()).unwrap_or(1);
    (y, m)
}

/// `YYYY-MM-DD` of a unix time, UTC.
pub fn day_of(t: i64) -> String {
    let st = UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    clock::rfc3339(st).chars().take(10).collect()
}

/// Unix seconds as the store's text time.
fn stored_time(t: i64) -> String {
    clock::rfc3339(UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

/// One device of the report.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceLines {
    pub device_id: i64,
    pub name: Option<String>,
    pub address: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Empty: no reading of this device has a counter.
    pub lines: Vec<Line>,
}

/// A customer's billing report for one period.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub customer_id: i64,
    pub customer: String,
    pub period: Period,
    pub max_pages_per_day: u64,
    pub devices: Vec<DeviceLines>,
}

impl Report {
    /// Flags over all devices and counters.
    pub fn flags(&self) -> u64 {
        self.devices
            .iter()
            .flat_map(|d| &d.lines)
            .map(|l| l.flags.len() as u64)
            .sum()
    }
}

/// The part of a stored record the report reads.
#[derive(serde::Deserialize)]
struct CountersOnly {
    #[serde(default)]
    counters: Counters,
}

/// The customer's bounds: the `counter_jump` rule's threshold is the most
/// pages a day that are plausible.
pub fn bounds(rules: &alerts::Rules) -> Bounds {
    let mut b = Bounds::default();
    if let Some(t) = rules.threshold(alerts::COUNTER_JUMP) {
        b.max_pages_per_day = t as u64;
    }
    b
}

/// Computes the report (no audit: [`produce`] audits).
pub async fn compute(svc: &Services, customer: i64, period: &Period) -> Result<Report> {
    let c = svc
        .store
        .customer(customer)
        .await?
        .ok_or_else(|| TelemetryError::NotFound(format!("no customer {customer}")))?;
    let b = bounds(&alerts::rules(svc, customer).await?);
    let (start, end) = (stored_time(period.start), stored_time(period.end));
    let mut devices = vec![];
    let only = [customer];
    for d in inventory::list(svc, Some(&only[..])).await? {
        let rows = svc
            .store
            .period_readings(d.id, &start, &end, MAX_PERIOD_READINGS)
            .await?;
        let mut samples = Vec::with_capacity(rows.len());
        for r in rows {
            let at = humantime::parse_rfc3339(&r.taken_at).map(clock::unix);
            match (at, serde_json::from_str::<CountersOnly>(&r.record)) {
                (Ok(at), Ok(c)) => samples.push(Sample {
                    at,
                    counters: c.counters,
                }),
                // Written by ingest only; one that does not parse is left out
                // rather than failing the whole report.
                _ => tracing::warn!(device = d.id, "billing: a stored reading does not parse"),
            }
        }
        let rec = d.record.as_ref();
        devices.push(DeviceLines {
            device_id: d.id,
            name: d.name.clone(),
            address: d.address.clone(),
            manufacturer: rec.and_then(|r| r.manufacturer.clone()),
            model: rec.and_then(|r| r.model.clone()),
            serial: rec.and_then(|r| r.serial.clone()),
            lines: meter::compute(&samples, period.start, period.end, &b),
        });
    }
    Ok(Report {
        customer_id: customer,
        customer: c.name,
        period: period.clone(),
        max_pages_per_day: b.max_pages_per_day,
        devices,
    })
}

/// Who may see the customer's billing report: whoever may view its
/// telemetry; a command on the relay host.
fn authorize(by: &Actor<'_>, customer: i64) -> Result<()> {
    match by {
        Actor::User(p) => Ok(p.require(Action::ViewTelemetry, Some(customer))?),
        Actor::Local(_) => Ok(()),
    }
}

/// The report as a file, audited (`telemetry.billing_report`).
pub async fn produce(
    svc: &Services,
    by: Actor<'_>,
    customer: i64,
    period: &Period,
    format: Format,
) -> Result<(Report, Vec<u8>)> {
    authorize(&by, customer)?;
    let report = compute(svc, customer, period).await?;
    let bytes = output::render(&report, format)?;
    audit(svc, &by.name(), &report, format).await?;
    Ok((report, bytes))
}

/// One `telemetry.billing_report` record.
pub async fn audit(svc: &Services, actor: &str, report: &Report, format: Format) -> Result<()> {
    svc.audit
        .append(
            Event::TelemetryBillingReport {
                customer: report.customer_id,
                name: report.customer.clone(),
                from: report.period.from.clone(),
                to: report.period.to.clone(),
                format: format.as_str().into(),
                devices: report.devices.len() as u64,
                flags: report.flags(),
            },
            actor,
            None,
        )
        .await?;
    Ok(())
}

/// The file name a report is offered under.
pub fn file_name(report: &Report, format: Format) -> String {
    format!(
        "billing-{}-{}-{}.{}",
        super::report::slug(&report.customer),
        report.period.from,
        report.period.to,
        format.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_whole_days_with_the_last_included() {
        let p = Period::new("2026-07-01", "2026-07-31").unwrap();
        assert_eq!(p.start, 1_782_864_000);
        assert_eq!(p.end - p.start, 31 * DAY);
        for (from, to) in [
            ("2026-07-31", "2026-07-01"),
            ("2026-7-1", "2026-07-31"),
            ("yesterday", "2026-07-31"),
            ("2025-01-01", "2026-07-31"),
            ("2026-07-01", "2026-07-01T00:00"),
        ] {
            assert!(Period::new(from, to).is_err(), "{from} {to}");
        }
    }

    #[test]
    fn previous_month_of_any_day() {
        let p = Period::previous_month(1_782_864_000 + 3 * DAY); // 2026-07-04
        assert_eq!(
            (p.from.as_str(), p.to.as_str()),
            ("2026-06-01", "2026-06-30")
        );
        assert_eq!(p.end, 1_782_864_000);
        let p = Period::previous_month(parse_day("t", "2026-01-15").unwrap());
        assert_eq!(
            (p.from.as_str(), p.to.as_str()),
            ("2025-12-01", "2025-12-31")
        );
    }
}
