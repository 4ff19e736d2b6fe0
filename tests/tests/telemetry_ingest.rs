//! Telemetry ingest end to end: the real relay, an enrolled agent's key
//! signing uploads (as the agent does), the dealer API reading the
//! inventory back, and an alert reaching a webhook receiver with a valid
//! HMAC after one failed delivery.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_proto::telemetry::{
    DeviceRecord, IngestBatch, IngestItem, Level, Reading, ScanDone, Supply, SupplyClass,
    SupplyKind, INGEST_PATH, MAX_BATCH_BYTES, MAX_BATCH_ITEMS,
};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "webhook-secret-0123456789";

struct Hook {
    url: String,
    hits: Arc<AtomicUsize>,
    /// Bodies that came with a valid signature.
    good: Arc<Mutex<Vec<Value>>>,
    bad: Arc<AtomicUsize>,
}

/// A webhook receiver on 127.0.0.1:0: the first request gets a 500, later
/// ones 204; every body's signature is checked.
async fn hook() -> Hook {
    use axum::routing::post;
    let hits = Arc::new(AtomicUsize::new(0));
    let good = Arc::new(Mutex::new(vec![]));
    let bad = Arc::new(AtomicUsize::new(0));
    let (h, g, b) = (hits.clone(), good.clone(), bad.clone());
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let (h, g, b) = (h.clone(), g.clone(), b.clone());
            async move {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(&body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let sig = headers
                    .get("x-dwa-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                if sig == want && headers.contains_key("x-dwa-timestamp") {
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                } else {
                    b.fetch_add(1, Ordering::SeqCst);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    Hook {
        url,
        hits,
        good,
        bad,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn record(address: &str, serial: &str, toner: f32) -> DeviceRecord {
    DeviceRecord {
        address: address.into(),
        manufacturer: Some("HP".into()),
        model: Some("LaserJet, \"M404\"".into()),
        serial: Some(serial.into()),
        mac: Some("00:1b:a9:0b:a7:52".into()),
        printer_status: Some("idle".into()),
        counters: dwa_proto::telemetry::Counters {
            total: Some(4242),
            ..Default::default()
        },
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

fn batch(items: Vec<IngestItem>) -> Vec<u8> {
    serde_json::to_vec(&IngestBatch { items }).unwrap()
}

/// Posts `body` to the ingest path with `auth` as the Authorization.
async fn post(api: &Api, auth: &str, body: Vec<u8>) -> (StatusCode, Value) {
    try_post(api, auth, body).await.expect("ingest request")
}

async fn try_post(
    api: &Api,
    auth: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let r = api
        .client
        .post(format!("https://dwa.localhost:{HTTPS_PORT}{INGEST_PATH}"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

fn signed(key: &russh::keys::PrivateKey, agent: &str, body: &[u8]) -> String {
    dwa_link::agent_auth::sign(key, agent, "POST", INGEST_PATH, now(), body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_uploads_feed_inventory_reports_and_alert_webhook() {
    let hook = hook().await;
    let url = hook.url.clone();
    let mut relay = Relay::init_with(move |cfg| {
        // init writes every [alerts] key with its default.
        let edited: Vec<String> = cfg
            .lines()
            .map(|l| {
                if l == "[alerts]" {
                    format!("[alerts]\nwebhook_url = \"{url}\"\nwebhook_secret = \"{SECRET}\"")
                } else if l.starts_with("retry_base = ") {
                    "retry_base = \"1s\"".into()
                } else {
                    l.to_string()
                }
            })
            .collect();
        *cfg = edited.join("\n");
        assert!(
            cfg.contains("webhook_url"),
            "no [alerts] in relay.toml: {cfg}"
        );
    });
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let allow = format!("{}/32", relay.ip(10));
    let mut agent = Agent::enroll(
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

    let scan = "5ca90000000000000000000000000001";
    let body = batch(vec![
        IngestItem::Reading(Reading {
            id: "7e000000000000000000000000000001".into(),
            scan: scan.into(),
            taken_at: "2026-11-22T10:00:00Z".into(),
            record: record(&relay.ip(10), "CNB123", 4.0),
        }),
        IngestItem::ScanDone(ScanDone {
            id: scan.into(),
            started_at: "2026-11-22T09:59:50Z".into(),
            finished_at: "2026-11-22T10:00:01Z".into(),
            trigger: "schedule".into(),
            ranges: vec![format!("{}/32", relay.ip(10))],
            addresses: 1,
            found: 1,
        }),
    ]);

    // Refused: a key that is not the agent's, an unknown agent, no header.
    let other = dwa_link::ssh::generate_ed25519();
    let (s, v) = post(&anon, &signed(&other, &agent.id, &body), body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("signature"),
        "{v}"
    );
    let (s, _) = post(&anon, &signed(&key, "agt_nosuchagent", &body), body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = post(&anon, "", body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Signed for another body.
    let (s, _) = post(&anon, &signed(&key, &agent.id, b"{}"), body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Refusals before authentication: the first from this address is
    // written, the rest of the minute counted (see the flood test below).
    assert_eq!(relay.audit_kind("telemetry.auth_refused").len(), 1);

    // Stored once, however often it is posted.
    for _ in 0..2 {
        let (s, v) = post(&anon, &signed(&key, &agent.id, &body), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{v}\n{}", relay.logs());
        assert_eq!(v["accepted"].as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(v["rejected"].as_array().map(Vec::len), Some(0), "{v}");
    }
    let (s, devices) = admin.call(Method::GET, "/devices", None).await;
    assert_eq!(s, StatusCode::OK, "{devices}");
    let list = devices.as_array().expect("device list");
    assert_eq!(list.len(), 1, "{devices}");
    let d = &list[0];
    assert_eq!(d["identity"], "serial:hp:CNB123");
    assert_eq!(d["address"], relay.ip(10));
    assert_eq!(d["counters_total"], 4242);
    assert_eq!(d["lowest_supply_percent"], 4.0);
    assert_eq!(d["status"], "idle");
    let id = d["id"].as_i64().unwrap();
    let (s, hist) = admin
        .call(
            Method::GET,
            &format!("/devices/{id}/readings?limit=10"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hist.as_array().map(Vec::len), Some(1), "{hist}");
    let (s, _) = admin
        .call(
            Method::GET,
            &format!("/devices/{id}/readings?limit=100000"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, one) = admin
        .call(Method::GET, &format!("/devices/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["record"]["serial"], "CNB123");
    assert_eq!(one["alerts"][0]["kind"], "supply_low");

    let r = admin
        .client
        .get(format!("{}/devices.csv", admin.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let head = csv.lines().next().unwrap_or("");
    assert!(head.contains("supply_black_toner_percent"), "{csv}");
    assert!(csv.contains("\"LaserJet, \"\"M404\"\"\""), "quoted: {csv}");

    // The alert reaches the webhook, signed, after one 500.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.good.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no signed webhook delivery; hits {}\n{}",
            hook.hits.load(Ordering::SeqCst),
            relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        hook.hits.load(Ordering::SeqCst) >= 2,
        "retried after the 500"
    );
    assert_eq!(hook.bad.load(Ordering::SeqCst), 0);
    let ev = hook.good.lock().unwrap()[0].clone();
    assert_eq!(ev["event"], "alert.raised");
    assert_eq!(ev["alert"]["kind"], "supply_low");
    assert_eq!(ev["alert"]["device"]["id"], id);
    let (_, alerts) = admin.call(Method::GET, "/alerts?state=active", None).await;
    assert_eq!(alerts.as_array().map(Vec::len), Some(1), "{alerts}");
    let (s, _) = admin.call(Method::GET, "/alerts?state=bogus", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Bounds: body size and item count.
    // The relay answers 413 from Content-Length without reading the body and
    // closes; the client may see that as a broken pipe before the answer.
    let big = vec![b' '; MAX_BATCH_BYTES + 1];
    match try_post(&anon, &signed(&key, &agent.id, &big), big.clone()).await {
        Ok((s, _)) => assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let many: Vec<IngestItem> = (0..=MAX_BATCH_ITEMS)
        .map(|i| {
            IngestItem::ScanDone(ScanDone {
                id: format!("{i:032x}"),
                started_at: "2026-11-22T10:00:00Z".into(),
                finished_at: "2026-11-22T10:00:00Z".into(),
                trigger: "schedule".into(),
                ranges: vec![],
                addresses: 0,
                found: 0,
            })
        })
        .collect();
    let body = batch(many);
    let (s, v) = post(&anon, &signed(&key, &agent.id, &body), body.clone()).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let body = b"{\"items\": [{\"type\": \"mystery\"}]}".to_vec();
    let (s, _) = post(&anon, &signed(&key, &agent.id, &body), body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Agents and scan settings.
    let (s, agents) = admin.call(Method::GET, "/agents", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(agents[0]["id"], agent.id.as_str());
    assert_eq!(agents[0]["connected"], false);
    let path = format!("/agents/{}/scan", agent.id);
    let (s, _) = admin
        .call(Method::PUT, &path, Some(serde_json::json!({"interval": 5})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = admin
        .call(
            Method::PUT,
            &path,
            Some(serde_json::json!({"ranges": ["10.1.0.0/24"], "interval": "10m"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["pushed"], false);
    let (_, agents) = admin.call(Method::GET, "/agents", None).await;
    assert_eq!(agents[0]["scan"]["interval_secs"], 600);
    let (s, _) = admin
        .call(
            Method::POST,
            &format!("/agents/{}/scan-now", agent.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(relay.audit_kind("telemetry.scan_config").len(), 1);
    // Connected: settings are pushed at once, scan-now is sent.
    agent.start();
    relay.wait_connected(&agent);
    let (s, v) = admin
        .call(
            Method::PUT,
            &path,
            Some(serde_json::json!({"interval": 300})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["pushed"], true, "{v}");
    let (s, v) = admin
        .call(
            Method::POST,
            &format!("/agents/{}/scan-now", agent.id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(relay.audit_kind("telemetry.scan_now").len(), 1);
    let (_, agents) = admin.call(Method::GET, "/agents", None).await;
    assert_eq!(agents[0]["connected"], true);

    // A user of another customer sees none of it.
    relay.ok(&["customer", "add", "other"]);
    let u = relay
        .add_user(&["tina", "--role", "technician", "--customer", "other"])
        .await;
    let tina = Api::login(&relay, "tina", u["password"].as_str().expect("password")).await;
    let (_, v) = tina.call(Method::GET, "/devices", None).await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let (s, _) = tina
        .call(Method::GET, &format!("/devices/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, v) = tina.call(Method::GET, "/alerts?state=all", None).await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let (_, v) = tina.call(Method::GET, "/agents", None).await;
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
    let (s, _) = tina
        .call(Method::PUT, &path, Some(serde_json::json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_upload_floods_do_not_grow_the_audit_log() {
    let mut relay = Relay::start_new();
    let anon = Api::new(&relay);
    let before = relay.audit().len();
    // One keep-alive connection, 1 500 unsigned uploads.
    for _ in 0..1500 {
        let (s, _) = post(&anon, "", b"{\"items\": []}".to_vec()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let during = relay.audit().len() - before;
    assert!(
        during <= 2,
        "{during} audit records for one address's flood"
    );
    assert_eq!(relay.audit_kind("telemetry.auth_refused").len(), 1);
    // The count is written when the minute ends, or the relay stops.
    relay.stop();
    let counted = relay.audit_kind("audit.refusals_counted");
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(counted[0]["detail"]["refused"], "telemetry.auth_refused");
    assert_eq!(counted[0]["detail"]["count"], 1499, "{counted:?}");
    assert!(counted[0]["detail"]["source"].is_string(), "{counted:?}");
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
