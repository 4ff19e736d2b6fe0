//! Billing meter reports end to end: readings uploaded as an agent signs
//! them, then the June report of the customer from the API (CSV and XLSX,
//! read back with calamine) and from `dwa-relay report billing`, with the
//! same numbers; the reset in June flagged and raised as an alert; each
//! report audited. A due schedule mails last month's report as XLSX
//! through aiosmtpd (skipped without it, like `alerts_email`).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calamine::{Data, Reader, Xlsx};
use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::smtp::{self, Lab};
use dwa_e2e_tests::*;
use dwa_proto::telemetry::{Counters, DeviceRecord, IngestItem, Reading};
use dwa_relay::services::telemetry::billing;
use mail_parser::MimeHeaders as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn record(address: &str, total: u64, colour: u64) -> DeviceRecord {
    DeviceRecord {
        address: address.into(),
        manufacturer: Some("HP".into()),
        model: Some("Color LaserJet M479".into()),
        serial: Some("BILL123".into()),
        counters: Counters {
            total: Some(total),
            colour: Some(colour),
            ..Counters::default()
        },
        ..Default::default()
    }
}

/// Uploads readings `(taken_at, total, colour)` of one printer, in order.
async fn upload(api: &Api, agent: &Agent, address: &str, readings: &[(&str, u64, u64)]) {
    let items = readings
        .iter()
        .enumerate()
        .map(|(i, (taken_at, total, colour))| {
            IngestItem::Reading(Reading {
                id: format!("b1110000000000000000000000000{i:03}"),
                scan: "5ca90000000000000000000000000001".into(),
                taken_at: (*taken_at).into(),
                record: record(address, *total, *colour),
            })
        })
        .collect();
    dwa_e2e_tests::browser::ingest_signed(api, agent, items).await;
}

/// The XLSX report's "Billing" sheet: a cell by row and column name.
fn sheet(bytes: Vec<u8>) -> impl Fn(u32, &str) -> Data {
    let mut wb = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    let ws = wb.worksheet_range("Billing").unwrap();
    let head: Vec<String> = (0..ws.width() as u32)
        .map(|c| {
            ws.get_value((0, c))
                .map(|d| d.to_string())
                .unwrap_or_default()
        })
        .collect();
    move |r: u32, n: &str| {
        let c = head.iter().position(|h| h == n).unwrap() as u32;
        ws.get_value((r, c)).cloned().unwrap_or(Data::Empty)
    }
}

/// A CSV report's rows as (column → value) maps.
fn csv_rows(bytes: &[u8]) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut rd = csv::Reader::from_reader(bytes);
    let head: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    rd.records()
        .map(|r| {
            let r = r.unwrap();
            head.iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn june_report_from_api_and_cli_has_the_pages_estimates_and_reset() {
    let mut relay = Relay::init_with(|_| {});
    relay.start();
    let c = relay.ok(&["customer", "add", "acme"]);
    let customer = c["id"].as_i64().unwrap();
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    let api = Api::new(&relay);
    // An hour before June, mid-June, a reset (a new formatter board), then
    // two hours into July. Colour has no reading near the end of June.
    upload(
        &api,
        &agent,
        &relay.ip(10),
        &[
            ("2026-05-31T23:00:00Z", 10_000, 2_000),
            ("2026-06-10T00:00:00Z", 15_000, 2_500),
            ("2026-06-20T00:00:00Z", 40, 2_600),
            ("2026-07-01T02:00:00Z", 1_040, 3_000),
        ],
    )
    .await;

    let admin = Api::login(&relay, "admin", &relay.admin_password).await;
    let get = |format: &'static str| {
        let url = format!(
            "{}/customers/{customer}/billing?from=2026-06-01&to=2026-06-30&format={format}",
            admin.base
        );
        let client = admin.client.clone();
        async move {
            let r = client.get(url).send().await.expect("billing");
            let status = r.status();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, ct, r.bytes().await.unwrap().to_vec())
        }
    };

    let (status, ct, body) = get("csv").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(ct.starts_with("text/csv"), "{ct}");
    let rows = csv_rows(&body);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let total = &rows[0];
    assert_eq!(total["counter"], "total");
    assert_eq!(total["serial"], "BILL123");
    assert_eq!(total["start"], "10000");
    assert_eq!(total["start_basis"], "measured");
    assert_eq!(total["end"], "1040");
    assert_eq!(total["end_basis"], "measured");
    // 5 000 up to the reset, 40 after it, 1 000 since.
    assert_eq!(total["pages"], "6040");
    assert_eq!(total["estimated"], "no");
    assert_eq!(
        total["flags"],
        "reset at 2026-06-20T00:00:00.000Z: 15000 -> 40"
    );
    let colour = &rows[1];
    assert_eq!(colour["counter"], "colour");
    assert_eq!(colour["pages"], "1000");
    assert_eq!(colour["flags"], "");

    let (status, ct, body) = get("xlsx").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.contains("spreadsheetml"), "{ct}");
    let cell = sheet(body);
    assert_eq!(cell(1, "counter"), Data::String("total".into()));
    assert_eq!(cell(1, "pages"), Data::Float(6_040.0));
    assert_eq!(cell(2, "start"), Data::Float(2_000.0));
    assert_eq!(cell(2, "pages"), Data::Float(1_000.0));

    // The same from the command line.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("june.csv");
    let v = relay.ok(&[
        "report",
        "billing",
        "--customer",
        "acme",
        "--from",
        "2026-06-01",
        "--to",
        "2026-06-30",
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(v["devices"], 1, "{v}");
    assert_eq!(v["flags"], 1, "{v}");
    let rows = csv_rows(&std::fs::read(&out).unwrap());
    assert_eq!(rows[0]["pages"], "6040");

    // Bad periods are 400s.
    let (status, _) = admin
        .call(
            Method::GET,
            &format!("/customers/{customer}/billing?from=2026-06-30&to=2026-06-01"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The reset was raised as an alert when the reading arrived.
    let (status, alerts) = admin.call(Method::GET, "/alerts?state=all", None).await;
    assert_eq!(status, StatusCode::OK);
    let resets: Vec<&Value> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "counter_reset")
        .collect();
    assert_eq!(resets.len(), 1, "{alerts}");
    assert_eq!(resets[0]["subject"], "total");
    assert_eq!(resets[0]["message"], "total counter was reset: 15000 -> 40");

    // Three reports, three audit records (the refused one made none).
    let audited = relay.audit_kind("telemetry.billing_report");
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert_eq!(audited[0]["detail"]["format"], "csv");
    assert_eq!(audited[1]["detail"]["format"], "xlsx");
    assert_eq!(audited[2]["detail"]["from"], "2026-06-01");
    assert_eq!(audited[2]["detail"]["flags"], 1);
    assert!(audited[0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("user:admin"));
}

/// The attachment of a saved message: (file name, bytes).
fn attachment(data: &str) -> (String, Vec<u8>) {
    let msg = mail_parser::MessageParser::default()
        .parse(data.as_bytes())
        .expect("a MIME message");
    let a = msg.attachment(0).expect("an attachment");
    (
        a.attachment_name().unwrap_or_default().to_string(),
        a.contents().to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_schedule_mails_last_months_report_as_xlsx() {
    if !smtp::available() {
        eprintln!(
            "SKIP telemetry_billing schedule: no {} (scripts/test.sh installs aiosmtpd)",
            smtp::PYTHON
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::new(tmp.path());
    let section = lab.smtp_section("1h");
    let mut relay = Relay::init_with(move |cfg| cfg.push_str(&section));
    relay.start();
    let _server = lab.start();
    let customer = relay.ok(&["customer", "add", "acme"])["id"]
        .as_i64()
        .unwrap();
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    let api = Api::new(&relay);

    // Last calendar month: read an hour before it, mid-month, and two
    // hours after it (both boundaries measured).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let month = billing::Period::previous_month(now);
    let at = |t: i64| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(t as u64))
            .to_string()
    };
    let (before, mid, after) = (
        at(month.start - 3_600),
        at(month.start + 14 * 86_400),
        at(month.end + 7_200),
    );
    upload(
        &api,
        &agent,
        &relay.ip(10),
        &[
            (before.as_str(), 100_000, 50),
            (mid.as_str(), 103_000, 450),
            (after.as_str(), 104_200, 650),
        ],
    )
    .await;

    let admin = Api::login(&relay, "admin", &relay.admin_password).await;
    let (s, v) = admin
        .call(
            Method::PUT,
            &format!("/customers/{customer}/billing-schedule"),
            Some(serde_json::json!({"day": 29, "format": "xlsx", "email_to": ["b@acme.example"]})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "day 29 is not in every month: {v}"
    );
    // Day 1: due today, whatever today is.
    let (s, v) = admin
        .call(
            Method::PUT,
            &format!("/customers/{customer}/billing-schedule"),
            Some(serde_json::json!({"day": 1, "format": "xlsx",
                "email_to": ["billing@acme.example", "ops@acme.example"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["email_to"].as_array().map(Vec::len), Some(2), "{v}");

    assert_eventually!(
        !lab.arrived().is_empty(),
        Duration::from_secs(40),
        "no message\nsmtpd: {}\n{}",
        lab.log(),
        relay.logs()
    );
    let m = &lab.arrived()[0];
    assert_eq!(m["tls"], true, "{m}");
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains(&format!(
            "Subject: [DWA] acme: billing meter report {}..{}",
            month.from, month.to
        )),
        "{data}"
    );
    let (name, bytes) = attachment(data);
    assert_eq!(
        name,
        format!("billing-acme-{}-{}.xlsx", month.from, month.to)
    );
    let cell = sheet(bytes);
    assert_eq!(cell(1, "counter"), Data::String("total".into()));
    assert_eq!(cell(1, "start"), Data::Float(100_000.0));
    assert_eq!(cell(1, "end"), Data::Float(104_200.0));
    assert_eq!(cell(1, "pages"), Data::Float(4_200.0));
    assert_eq!(cell(1, "estimated"), Data::String("no".into()));
    assert_eq!(cell(2, "counter"), Data::String("colour".into()));
    assert_eq!(cell(2, "pages"), Data::Float(600.0));

    // Once a month: the schedule records it and nothing more is sent.
    let (_, v) = admin
        .call(
            Method::GET,
            &format!("/customers/{customer}/billing-schedule"),
            None,
        )
        .await;
    assert_eq!(v["last_from"], month.from.as_str(), "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lab.arrived().len(), 1);
    let audited = relay.audit_kind("telemetry.billing_report");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["actor"], "relay");
    assert_eq!(audited[0]["detail"]["format"], "xlsx");
}
