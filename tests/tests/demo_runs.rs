//! `dwa-relay demo`: one command brings up relay, agent and printers, hands
//! out a working web-session link, and Ctrl-C stops all of it.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::*;
use reqwest::StatusCode;

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .filter(|c| String::from_utf8_lossy(c).contains(needle))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_printer_page_and_stops_on_ctrl_c() {
    let net = subnet();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("demo");
    let mut child = Command::new(&bins().0)
        .args(["--json", "demo", "--keep-data"])
        .arg(&data)
        .args(["--ssh-listen", &format!("{net}.1:{SSH_PORT}")])
        .args(["--https-listen", &format!("{net}.1:{HTTPS_PORT}")])
        .args(["--printers", "3", "--first-printer", &format!("{net}.20")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dwa-relay demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["username"], "admin");
    assert!(v["password"].as_str().is_some_and(|p| p.len() >= 16));
    assert_eq!(v["printers"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["portal"], format!("https://dwa.localhost:{HTTPS_PORT}/"));

    // The link works in a browser: the printer's log-in page, rewritten.
    let addr = format!("{net}.1:{HTTPS_PORT}").parse().expect("addr");
    let mut b = Browser::at(addr, &data.join("tls_cert.pem"));
    let page = b.get(v["web_session"].as_str().expect("link")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("Log in"), "{}", page.text());
    // Telemetry: the demo agent scans the printers over SNMP and the
    // devices list fills in with what they report.
    let api = Api::at(addr, &data.join("tls_cert.pem"))
        .log_in("admin", v["password"].as_str().expect("password"))
        .await;
    let mut devices = serde_json::Value::Null;
    for _ in 0..600 {
        let (_, list) = api.call(reqwest::Method::GET, "/devices", None).await;
        let read = list
            .as_array()
            .map(|l| l.iter().filter(|d| d["serial"].is_string()).count())
            .unwrap_or(0);
        devices = list;
        if read == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = devices.as_array().expect("device list");
    assert_eq!(
        list.len(),
        3,
        "the three printers, claimed by their readings: {devices}"
    );
    for d in list {
        assert!(
            d["serial"].is_string() && d["manufacturer"].is_string(),
            "{d}"
        );
        assert!(d["counters_total"].as_u64().is_some_and(|t| t > 0), "{d}");
    }
    let agent_cfg = data.join("demo-agent.toml");
    let needle = agent_cfg.to_string_lossy().to_string();
    assert_eq!(processes_with(&needle), 1, "the demo's agent runs");

    // Ctrl-C: everything stops, cleanly.
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "demo exit: {status}");
    assert_eq!(processes_with(&needle), 0, "the agent outlived the demo");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "the relay still listens"
    );
}
