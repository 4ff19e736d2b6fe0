//! E-mail alerts end to end: the real relay, signed uploads raising
//! alerts, and aiosmtpd on loopback with STARTTLS (a certificate the
//! relay trusts through `smtp.ca_file`) saving what arrives. The immediate
//! rule's message comes through an SMTP outage (the server starts after
//! the alert); the digest rule's alerts arrive as one message.
//!
//! Skips with a message without /opt/aiosmtpd (`scripts/test.sh` installs
//! it).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::smtp::{self, Lab};
use dwa_e2e_tests::*;
use dwa_proto::telemetry::{
    DeviceRecord, ErrorState, IngestBatch, IngestItem, Level, Reading, Supply, SupplyClass,
    SupplyKind, INGEST_PATH,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn record(address: &str, serial: &str, toner: f32, errors: Vec<ErrorState>) -> DeviceRecord {
    DeviceRecord {
        address: address.into(),
        manufacturer: Some("HP".into()),
        model: Some("LaserJet M404".into()),
        serial: Some(serial.into()),
        error_states: errors,
        supplies: vec![Supply {
            index: 1,
            description: Some("Black Toner".into()),
            kind: Some(SupplyKind::Toner),
            class: Some(SupplyClass::Consumed),
            colour: Some("black".into()),
            level: Level::Value(toner as i64),
            max: Level::Value(100),
            unit: Some("percent".into()),
            percent: Some(toner),
            fullness_percent: None,
        }],
        ..Default::default()
    }
}

async fn upload(api: &Api, key: &russh::keys::PrivateKey, agent: &str, items: Vec<IngestItem>) {
    let body = serde_json::to_vec(&IngestBatch { items }).unwrap();
    let auth = dwa_link::agent_auth::sign(key, agent, "POST", INGEST_PATH, now(), &body).unwrap();
    let r = api
        .client
        .post(format!("https://dwa.localhost:{HTTPS_PORT}{INGEST_PATH}"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn reading(n: u8, address: &str, record: DeviceRecord) -> IngestItem {
    IngestItem::Reading(Reading {
        id: format!("7e0000000000000000000000000000{n:02x}"),
        scan: "5ca90000000000000000000000000001".into(),
        taken_at: "2026-11-22T10:00:00Z".into(),
        record: DeviceRecord {
            address: address.into(),
            ..record
        },
    })
}

async fn wait_for(lab: &Lab, n: usize, secs: u64, relay: &Relay) -> Vec<Value> {
    assert_eventually!(
        lab.arrived().len() >= n,
        Duration::from_secs(secs),
        "{} of {n} messages\nsmtpd: {}\n{}",
        lab.arrived().len(),
        lab.log(),
        relay.logs()
    );
    lab.arrived()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_arrive_by_email_immediately_and_as_a_digest() {
    if !smtp::available() {
        eprintln!(
            "SKIP alerts_email: no {} (scripts/test.sh installs aiosmtpd)",
            smtp::PYTHON
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::new(tmp.path());
    let section = lab.smtp_section("10s");

    let mut relay = Relay::init_with(move |cfg| {
        let edited: Vec<String> = cfg
            .lines()
            .map(|l| {
                if l.starts_with("retry_base = ") {
                    "retry_base = \"1s\"".into()
                } else {
                    l.to_string()
                }
            })
            .collect();
        *cfg = edited.join("\n");
        cfg.push_str(&section);
    });
    relay.start();
    let customer = relay.ok(&["customer", "add", "acme"])["id"]
        .as_i64()
        .unwrap_or(1);
    let allow = format!("{}/24", relay.ip(0));
    let agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&allow],
            ports: &[80],
            transport: "ssh",
        },
    );
    let key = russh::keys::load_secret_key(agent.key_path(), None).expect("agent key");
    let anon = Api::new(&relay);
    let admin = Api::login(&relay, "admin", &relay.admin_password).await;

    // Bad recipients are refused; then the rules: low toner at once to two
    // addresses, an open door as a digest to a third.
    let (s, v) = admin
        .call(
            Method::PUT,
            &format!("/customers/{customer}/alert-rules"),
            Some(json!([{"kind": "supply_low", "enabled": true, "email_to": ["not an address"]}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let many: Vec<String> = (0..21).map(|i| format!("u{i}@acme.example")).collect();
    let (s, _) = admin
        .call(
            Method::PUT,
            &format!("/customers/{customer}/alert-rules"),
            Some(json!([{"kind": "supply_low", "enabled": true, "email_to": many}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "recipients are bounded");
    let (s, v) = admin
        .call(
            Method::PUT,
            &format!("/customers/{customer}/alert-rules"),
            Some(json!([
                {"kind": "supply_low", "enabled": true,
                 "email_to": ["ops@acme.example", "tech@acme.example"], "email_mode": "immediate"},
                {"kind": "door_open", "enabled": true,
                 "email_to": ["digest@acme.example"], "email_mode": "digest"},
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let low = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "supply_low")
        .unwrap()
        .clone();
    assert_eq!(low["email_mode"], "immediate");
    assert_eq!(low["email_to"].as_array().map(Vec::len), Some(2));

    // An SMTP outage: the alert is raised before the server is up.
    let a = relay.ip(10);
    upload(
        &anon,
        &key,
        &agent.id,
        vec![reading(1, &a, record(&a, "CNB001", 4.0, vec![]))],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(lab.arrived().is_empty());
    let _server = lab.start();

    let got = wait_for(&lab, 1, 40, &relay).await;
    let m = &got[0];
    assert_eq!(m["tls"], true, "STARTTLS was used: {m}");
    assert_eq!(m["from"], "dwa@relay.example");
    let mut rcpt: Vec<&str> = m["rcpt"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    rcpt.sort();
    assert_eq!(rcpt, ["ops@acme.example", "tech@acme.example"]);
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [DWA] acme: supply_low (Black Toner) raised on"),
        "{data}"
    );
    assert!(data.contains(&a), "device address in the body: {data}");
    assert!(data.contains("Black Toner at 4 %"), "{data}");

    // Three open doors in one upload: one digest message.
    let items: Vec<IngestItem> = (0..3u8)
        .map(|i| {
            let addr = relay.ip(20 + i);
            reading(
                2 + i,
                &addr,
                record(
                    &addr,
                    &format!("CND00{i}"),
                    80.0,
                    vec![ErrorState::DoorOpen],
                ),
            )
        })
        .collect();
    upload(&anon, &key, &agent.id, items).await;
    let got = wait_for(&lab, 2, 40, &relay).await;
    let d = &got[1];
    assert_eq!(d["rcpt"], json!(["digest@acme.example"]));
    let data = d["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [DWA] acme: 3 alert changes"),
        "{data}"
    );
    for i in 0..3u8 {
        assert!(data.contains(&relay.ip(20 + i)), "{data}");
    }
    assert_eq!(data.matches("Alert raised: door_open").count(), 3, "{data}");
    // Nothing more: the digest was one message.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lab.arrived().len(), 2);

    // Audited as summaries: delivered, counts, no addresses.
    let audit = relay.audit_kind("telemetry.alert_email");
    assert_eq!(audit.len(), 2, "{audit:?}");
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains("acme.example"), "{text}");
    assert!(
        text.contains("\"digest\"") && text.contains("\"delivered\""),
        "{text}"
    );
}
