//! Data lifecycle end to end: readings older than the retention are
//! pruned by the running relay (one audit record); `customer export`
//! writes one archive with the customer's data and none of another
//! customer's; `customer erase` leaves one record and a chain that
//! verifies.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::{Duration, SystemTime};

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_proto::telemetry::{DeviceRecord, IngestItem, Reading};
use serde_json::Value;

fn record(address: &str, serial: &str) -> DeviceRecord {
    DeviceRecord {
        address: address.into(),
        manufacturer: Some("HP".into()),
        model: Some("LaserJet M404".into()),
        serial: Some(serial.into()),
        ..Default::default()
    }
}

/// Uploads readings `(id, taken_at)` of one printer as `agent` signs them.
async fn upload(api: &Api, agent: &Agent, address: &str, serial: &str, readings: &[(&str, &str)]) {
    let items = readings
        .iter()
        .map(|(id, taken_at)| {
            IngestItem::Reading(Reading {
                id: (*id).into(),
                scan: "5ca90000000000000000000000000001".into(),
                taken_at: (*taken_at).into(),
                record: record(address, serial),
            })
        })
        .collect();
    dwa_e2e_tests::browser::ingest_signed(api, agent, items).await;
}

/// The archive's files by name.
fn open_archive(path: &std::path::Path) -> BTreeMap<String, String> {
    let f = std::fs::File::open(path).expect("archive");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = BTreeMap::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").display().to_string();
        let mut text = String::new();
        e.read_to_string(&mut text).expect("utf-8 entry");
        out.insert(name, text);
    }
    out
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn verify(relay: &Relay) {
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_export_and_erase_keep_to_one_customer_and_the_chain() {
    let mut relay = Relay::init_with(|cfg| {
        // init writes every [telemetry] key with its default.
        let edited: Vec<String> = cfg
            .lines()
            .map(|l| {
                if l.starts_with("prune_interval = ") {
                    "prune_interval = \"1s\"".into()
                } else {
                    l.to_string()
                }
            })
            .collect();
        *cfg = edited.join("\n");
        assert!(cfg.contains("readings_retention"), "{cfg}");
    });
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    relay.ok(&["customer", "add", "other"]);
    let mine = Agent::enroll(&relay, EnrollArgs::default());
    let token = relay.token("other", 1, "1h");
    let theirs = Agent::enroll_with(&relay.url(), &token, EnrollArgs::default());
    let api = Api::new(&relay);

    // Acme: a reading older than any retention and a current one (the
    // newest, which stays); the other customer: one reading.
    upload(
        &api,
        &mine,
        &relay.ip(10),
        "CNB123",
        &[
            ("7e000000000000000000000000000001", "2020-01-01T00:00:00Z"),
            (
                "7e000000000000000000000000000002",
                &humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ),
        ],
    )
    .await;
    upload(
        &api,
        &theirs,
        &relay.ip(20),
        "OTHER999",
        &[("7e000000000000000000000000000003", "2026-11-22T10:00:00Z")],
    )
    .await;

    // Pruned by the running relay within a prune interval or two.
    assert_eventually!(
        !relay.audit_kind("telemetry.readings_pruned").is_empty(),
        Duration::from_secs(20),
        "{}",
        relay.logs()
    );
    let pruned = relay.audit_kind("telemetry.readings_pruned");
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert_eq!(pruned[0]["detail"]["readings"], 1, "{pruned:?}");
    assert_eq!(pruned[0]["actor"], "relay");

    // Export acme.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.tar.gz");
    let to = file.to_str().unwrap();
    let v = relay.ok(&["customer", "export", "acme", "--to", to]);
    assert_eq!(v["readings"], 1, "{v}");
    assert_eq!(v["devices"], 1, "{v}");
    let files = open_archive(&file);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "agents.jsonl",
            "alerts.jsonl",
            "audit.jsonl",
            "customer.json",
            "devices.jsonl",
            "readings.jsonl",
            "scans.jsonl",
            "users.jsonl"
        ]
    );
    let customer: Value = serde_json::from_str(&files["customer.json"]).unwrap();
    assert_eq!(customer["customer"]["name"], "acme");
    assert_eq!(customer["counts"]["readings"], 1);
    let agents = lines(&files["agents.jsonl"]);
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["id"], mine.id.as_str());
    assert!(agents[0].get("public_key").is_none(), "{:?}", agents[0]);
    let devices = lines(&files["devices.jsonl"]);
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["identity"], "serial:hp:CNB123");
    let readings = lines(&files["readings.jsonl"]);
    assert_eq!(readings.len(), 1, "the pruned reading is gone");
    assert_eq!(readings[0]["id"], "7e000000000000000000000000000002");
    assert_eq!(readings[0]["record"]["serial"], "CNB123");
    let audit = lines(&files["audit.jsonl"]);
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "enroll.ok" && r["agent"] == mine.id.as_str()),
        "{audit:?}"
    );
    // Nothing of the other customer, anywhere in the archive.
    for (name, text) in &files {
        for theirs_datum in [theirs.id.as_str(), "OTHER999", &relay.ip(20)] {
            assert!(
                !text.contains(theirs_datum),
                "{name} holds {theirs_datum}: {text}"
            );
        }
    }
    // Audited; never written over an existing file.
    let exports = relay.audit_kind("customer.export");
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["detail"]["name"], "acme");
    assert_eq!(exports[0]["detail"]["readings"], 1);
    assert!(
        exports[0]["actor"]
            .as_str()
            .unwrap_or("")
            .starts_with("cli:"),
        "{exports:?}"
    );
    let out = relay.cli(&["customer", "export", "acme", "--to", to]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    verify(&relay);

    // Erasure: the other customer's data goes, one record says so, the
    // chain still verifies; acme's export no longer differs by it.
    let before = relay.audit().len();
    let e = relay.ok(&["customer", "erase", "other"]);
    assert_eq!(e["readings"], 1, "{e}");
    let after = relay.audit();
    let erase: Vec<&Value> = after
        .iter()
        .skip(before)
        .filter(|r| r["kind"] == "customer.erase")
        .collect();
    assert_eq!(erase.len(), 1, "{after:?}");
    assert_eq!(erase[0]["detail"]["name"], "other");
    verify(&relay);
    let out = relay.cli(&[
        "--json",
        "customer",
        "export",
        "other",
        "--to",
        dir.path().join("o.tgz").to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "an erased customer has nothing to export"
    );
}
