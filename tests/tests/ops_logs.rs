//! Logs: `--log-format json` (here through `DWA_LOG_FORMAT`, which the
//! relay and the agent both read) gives one JSON object per line, and a
//! full run — enrollment, a user's first log-in with a one-time password
//! and two-factor enrollment, an API token, a web session, a stream, a
//! scan with a non-default community — logs none of the secrets it used,
//! at the debug level the fixtures run with.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PORT: u16 = 7080;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_of_a_full_run_hold_no_secret() {
    // One test in this binary: the variable reaches every child process.
    std::env::set_var("DWA_LOG_FORMAT", "json");
    let mut relay = Relay::init();
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let mut secrets: Vec<(String, String)> = vec![];
    secrets.push(("admin password".into(), relay.admin_password.clone()));
    let admin_totp = relay.totp.uri("admin").expect("admin totp");
    secrets.push(("admin TOTP secret".into(), totp_secret(&admin_totp)));

    let token = relay.token("acme", 1, "1h");
    secrets.push(("enrollment token".into(), token.clone()));
    let ip = relay.ip(10);
    let mut agent = Agent::enroll_with(
        &relay.url(),
        &token,
        EnrollArgs {
            allow: &[&format!("{ip}/32")],
            ports: &[PORT],
            transport: "ssh",
        },
    );
    let community = "c0mmunity-not-public-9f3";
    secrets.push(("SNMP community".into(), community.into()));
    agent.edit_config(|text| {
        let mut cfg: toml::Table = toml::from_str(text).expect("agent.toml");
        let mut scan = toml::Table::new();
        scan.insert(
            "ranges".into(),
            vec![toml::Value::from(format!("{ip}/32"))].into(),
        );
        scan.insert("interval".into(), "1m".into());
        scan.insert(
            "communities".into(),
            vec![toml::Value::from(community)].into(),
        );
        scan.insert("timeout".into(), "200ms".into());
        scan.insert("retries".into(), 0.into());
        cfg.insert("scan".into(), scan.into());
        *text = toml::to_string(&cfg).expect("serialize");
    });
    let key = std::fs::read_to_string(agent.key_path()).unwrap();
    for (i, line) in key.lines().filter(|l| !l.starts_with("-----")).enumerate() {
        secrets.push((format!("agent key line {i}"), line.to_string()));
    }
    agent.start();
    relay.wait_connected(&agent);
    relay.add_device(&agent, &ip);
    let _target = echo_target(&format!("{ip}:{PORT}")).await;
    let mut s = relay.open(&agent.id, &ip, PORT).await.expect("stream");
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
    drop(s);

    // A technician's first log-in, then her API token and a web session.
    let v = relay.ok(&[
        "user",
        "add",
        "tina",
        "--role",
        "technician",
        "--customer",
        "acme",
    ]);
    let once = v["password"].as_str().unwrap().to_string();
    let own = "tina's own passphrase 7731".to_string();
    dwa_e2e_tests::browser::first_login(&relay, "tina", &once, &own).await;
    secrets.push(("one-time password".into(), once));
    secrets.push(("own password".into(), own.clone()));
    let tina_totp = relay.totp.uri("tina").expect("tina totp");
    secrets.push(("tina TOTP secret".into(), totp_secret(&tina_totp)));
    let tina = Api::login(&relay, "tina", &own).await;
    if let Some(c) = &tina.csrf {
        secrets.push(("CSRF token".into(), c.clone()));
    }
    let (st, t) = tina
        .call(Method::POST, "/tokens", Some(json!({"name": "script"})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    secrets.push(("API token".into(), t["token"].as_str().unwrap().into()));
    let (_, devices) = tina.call(Method::GET, "/devices", None).await;
    let device = devices[0]["id"].as_i64().expect("device");
    let (st, w) = tina
        .call(
            Method::POST,
            &format!("/devices/{device}/web-sessions"),
            Some(json!({"port": PORT})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let url = reqwest::Url::parse(w["url"].as_str().unwrap()).unwrap();
    for (k, v) in url.query_pairs() {
        secrets.push((format!("web session URL {k}"), v.to_string()));
    }
    // Give the scan a moment to send its community.
    tokio::time::sleep(Duration::from_millis(800)).await;

    relay.stop();
    agent.signal(libc::SIGTERM);
    let logs = [("relay", relay.logs()), ("agent", agent.logs())];
    for (who, text) in &logs {
        assert!(text.lines().count() > 5, "{who} logged little: {text}");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who}: not a JSON line ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(),
                "{who}: {line}"
            );
        }
        for (what, secret) in &secrets {
            assert!(secret.len() >= 6, "{what} too short to look for");
            assert!(
                !text.contains(secret.as_str()),
                "{who}'s log holds the {what}"
            );
        }
    }
    // The spans carry who and what: the agent on the relay's control
    // channel, the peer on connections.
    assert!(
        logs[0].1.contains(&format!("\"agent\":\"{}\"", agent.id)),
        "the relay's lines name the agent"
    );
}

/// The base32 secret of an otpauth URI.
fn totp_secret(uri: &str) -> String {
    let u = reqwest::Url::parse(uri).unwrap();
    u.query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.to_string())
        .expect("secret")
}
