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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_proto::telemetry::{
    DeviceRecord, ErrorState, IngestBatch, IngestItem, Level, Reading, Supply, SupplyClass,
    SupplyKind, INGEST_PATH,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PYTHON: &str = "/opt/aiosmtpd/bin/python";

/// Saves each message as JSON (envelope, whether STARTTLS was used, the
/// data) into the directory given as the handler's argument.
const HANDLER: &str = r#"
import json, os

class Save:
    def __init__(self, out):
        self.out = out
        self.n = 0

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = os.path.join(self.out, "%04d.json" % self.n)
        with open(path + ".tmp", "w") as f:
            json.dump({
                "from": envelope.mail_from,
                "rcpt": envelope.rcpt_tos,
                "tls": getattr(session, "ssl", None) is not None,
                "data": envelope.content.decode("utf-8", "replace"),
            }, f)
        os.rename(path + ".tmp", path)
        return "250 OK"
"#;

struct Smtp {
    child: Child,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aiosmtpd on 127.0.0.1:`port`, STARTTLS required, saving into `out`.
fn smtp(dir: &Path, port: u16, out: &Path) -> Smtp {
    let child = Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tlscert")
        .arg(dir.join("cert.pem"))
        .arg("--tlskey")
        .arg(dir.join("key.pem"))
        .args(["-c", "dwa_save.Save"])
        .arg(out)
        .env("PYTHONPATH", dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("smtpd.log")).unwrap())
        .spawn()
        .expect("aiosmtpd");
    Smtp { child }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

/// The messages saved so far, in arrival order.
fn arrived(out: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

async fn wait_for(out: &Path, n: usize, secs: u64, relay: &Relay, dir: &Path) -> Vec<Value> {
    assert_eventually!(
        arrived(out).len() >= n,
        Duration::from_secs(secs),
        "{} of {n} messages\nsmtpd: {}\n{}",
        arrived(out).len(),
        std::fs::read_to_string(dir.join("smtpd.log")).unwrap_or_default(),
        relay.logs()
    );
    arrived(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alerts_arrive_by_email_immediately_and_as_a_digest() {
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIP alerts_email: no {PYTHON} (scripts/test.sh installs aiosmtpd)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(dir.join("dwa_save.py"), HANDLER).unwrap();
    // rcgen turns a name that parses as an IP into an IP-address SAN.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let ca = dir.join("cert.pem");

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
        cfg.push_str(&format!(
            "\n[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"dwa@relay.example\"\n\
             ca_file = \"{}\"\ntimeout = \"5s\"\ndigest_interval = \"10s\"\n",
            ca.display()
        ));
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
    assert!(arrived(&out).is_empty());
    let _server = smtp(&dir, port, &out);

    let got = wait_for(&out, 1, 40, &relay, &dir).await;
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
    let got = wait_for(&out, 2, 40, &relay, &dir).await;
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
    assert_eq!(arrived(&out).len(), 2);

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
