//! Prometheus metrics of a real relay: what happened shows in `/metrics`
//! (a failed log-in, a stream, a denied one, a web session, the agent),
//! `promtool check metrics` accepts the output, a bearer token guards the
//! listener when set, and a real Prometheus scrapes it and answers a query
//! with the relay's value. The Prometheus tools are Debian's `prometheus`
//! package (scripts/test.sh installs it); without them those checks skip.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_sim::{Fleet, FleetConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HTTP: u16 = 8080;
const METRICS_PORT: u16 = 9464;

/// Where `init` put the fixture's metrics listener: beside its HTTPS one.
fn metrics_url(relay: &Relay) -> String {
    format!("http://{}:{METRICS_PORT}/metrics", relay.ip(1))
}

async fn scrape_with(relay: &Relay, token: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().get(metrics_url(relay));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("scrape");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn scrape(relay: &Relay) -> String {
    let (status, text) = scrape_with(relay, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text
}

/// The value of the sample `name` (with its labels, as written), if any.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_happened_and_promtool_accepts_them() {
    let (relay, agent, ip) = Relay::with_agent_config(|_| {}, &[HTTP]);
    let device = relay.add_device(&agent, &ip);
    let _fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().expect("ip")],
        http_port: HTTP,
        https_port: None,
        ..Default::default()
    })
    .await
    .expect("fleet");

    let before = scrape(&relay).await;
    assert_eq!(value(&before, "dwa_relay_agents_connected"), Some(1.0));
    assert_eq!(
        value(
            &before,
            "dwa_relay_login_failures_total{reason=\"password\"}"
        ),
        Some(0.0)
    );

    // One failed log-in.
    let (s, _) = Api::new(&relay)
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "admin", "password": "wrong", "totp": "000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // One stream that carries bytes, one the relay refuses (a device that
    // is not registered).
    let mut s = relay.open(&agent.id, &ip, HTTP).await.expect("stream");
    let req = b"GET / HTTP/1.0\r\nHost: printer\r\nConnection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, req)
        .await
        .unwrap();
    let mut page = vec![0u8; 4096];
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut s, &mut page),
    )
    .await
    .expect("the printer answers")
    .unwrap();
    assert!(n > 0, "the printer answered nothing");
    drop(s);
    let refused = relay.open(&agent.id, &relay.ip(11), HTTP).await;
    assert!(
        refused.is_err(),
        "a stream to an unregistered device opened"
    );
    let mut text: String;
    assert_eventually!(
        {
            text = scrape(&relay).await;
            value(&text, "dwa_relay_stream_bytes_total{direction=\"up\"}") >= Some(req.len() as f64)
                && value(&text, "dwa_relay_stream_bytes_total{direction=\"down\"}")
                    >= Some(n as f64)
        },
        Duration::from_secs(20),
        "the stream's end was not counted:\n{text}"
    );

    // One web session, live.
    let admin = Api::login(&relay, "admin", &relay.admin_password).await;
    let (s, v) = admin
        .call(
            Method::POST,
            &format!("/devices/{device}/web-sessions"),
            Some(json!({"port": HTTP})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "web session: {v}");

    let text = scrape(&relay).await;
    for (name, want) in [
        ("dwa_relay_agents_connected", 1.0),
        ("dwa_relay_login_failures_total{reason=\"password\"}", 1.0),
        (
            "dwa_relay_streams_denied_total{reason=\"relay_policy\"}",
            1.0,
        ),
        (
            "dwa_relay_streams_denied_total{reason=\"agent_policy\"}",
            0.0,
        ),
        ("dwa_relay_web_sessions_live", 1.0),
        ("dwa_relay_tunnels_live", 0.0),
        ("dwa_relay_ssh_handshakes_in_progress", 0.0),
        ("dwa_relay_ssh_handshake_slots", 64.0),
    ] {
        assert_eq!(value(&text, name), Some(want), "{name} in\n{text}");
    }
    let opened = value(&text, "dwa_relay_streams_opened_total").unwrap_or(0.0);
    assert!(opened >= 1.0, "streams opened: {opened}\n{text}");
    assert!(value(&text, "dwa_relay_audit_writes_in_flight").is_some());
    let audits = value(&text, "dwa_relay_audit_write_duration_seconds_count").unwrap_or(0.0);
    assert!(audits >= 5.0, "audit writes timed: {audits}\n{text}");
    let tx = value(
        &text,
        "dwa_relay_store_duration_seconds_count{op=\"transaction\"}",
    );
    assert!(
        tx.unwrap_or(0.0) >= 1.0,
        "store transactions: {tx:?}\n{text}"
    );

    // A scraper that asks for OpenMetrics gets it.
    let om = reqwest::Client::new()
        .get(metrics_url(&relay))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    let kind = om.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));

    if !have("promtool") {
        eprintln!("SKIP promtool check: promtool not installed (Debian package prometheus)");
        return;
    }
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut p.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_makes_scrapers_show_the_bearer_token() {
    const TOKEN: &str = "metrics-token-0123456789";
    let mut relay = Relay::init_with(|cfg| {
        assert!(
            cfg.contains("\n[metrics]\n"),
            "init wrote no [metrics]:\n{cfg}"
        );
        *cfg = cfg.replace("[metrics]\n", "[metrics]\ntoken_file = \"metrics.token\"\n");
    });
    std::fs::write(relay.data.join("metrics.token"), format!("{TOKEN}\n")).unwrap();
    relay.start();

    let (s, _) = scrape_with(&relay, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = scrape_with(&relay, Some("metrics-token-0123456788")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = scrape_with(&relay, Some("short")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, text) = scrape_with(&relay, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(value(&text, "dwa_relay_agents_connected"), Some(0.0));
    let other = reqwest::get(metrics_url(&relay).replace("/metrics", "/"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

/// `dwa-relay serve`, which must fail: its stderr. Bounded, so a relay
/// that starts anyway fails the test instead of hanging it.
fn serve_fails(relay: &Relay) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("serve.err");
    let mut child = Command::new(&bins().0)
        .arg("--data-dir")
        .arg(&relay.data)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("dwa-relay serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        None => panic!("the relay started (still running after 30 s)\n{err}"),
        Some(s) => assert!(!s.success(), "the relay exited 0\n{err}"),
    }
    err
}

#[test]
fn a_relay_refuses_to_start_with_a_short_or_missing_token() {
    let relay = Relay::init_with(|cfg| {
        assert!(
            cfg.contains("\n[metrics]\n"),
            "init wrote no [metrics]:\n{cfg}"
        );
        *cfg = cfg.replace("[metrics]\n", "[metrics]\ntoken_file = \"metrics.token\"\n");
    });
    let err = serve_fails(&relay);
    assert!(err.contains("metrics.token_file"), "{err}");
    std::fs::write(relay.data.join("metrics.token"), "short\n").unwrap();
    let err = serve_fails(&relay);
    assert!(err.contains("at least 16"), "{err}");
}

/// Kills Prometheus however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_relay_and_answers_a_query() {
    if !have("prometheus") {
        eprintln!("SKIP: prometheus not installed (Debian package prometheus)");
        return;
    }
    let (relay, _agent, _ip) = Relay::with_agent(&[HTTP]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}:{METRICS_PORT}", relay.ip(1));
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: dwa-relay\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    // On the fixture's own loopback subnet: no other test's port.
    let web = format!("{}:9090", relay.ip(2));
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus");
    let _prometheus = Killed(child);

    let query = format!("http://{web}/api/v1/query?query=dwa_relay_agents_connected");
    let client = reqwest::Client::new();
    let mut last: Value;
    assert_eventually!(
        {
            last = match client.get(&query).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            last["data"]["result"][0]["value"][1] == "1"
                && last["data"]["result"][0]["metric"]["job"] == "dwa-relay"
        },
        Duration::from_secs(60),
        "Prometheus did not answer 1: {last}\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
}
