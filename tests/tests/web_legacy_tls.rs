//! Printers that only speak TLS 1.0 / 1.1: `openssl s_server` started by
//! the test (old protocol, security level 0, a throwaway certificate)
//! serves a page; a web session reads it through the agent's legacy
//! (OpenSSL) connector, and the audit records the legacy version. A TLS
//! 1.2+ server beside it still goes the modern (rustls) way.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TLS1: u16 = 8443;
const TLS1_1: u16 = 8444;
const MODERN: u16 = 8445;
const PAGE: &str = "legacy-printer-status-page";

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `openssl s_server` on `addr`, killed on drop.
struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn s_server(dir: &Path, addr: &str, protocol: &str) -> SServer {
    let child = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-quiet", "-accept", addr, protocol])
        .args(["-cert", "cert.pem", "-key", "key.pem"])
        .args(["-cipher", "DEFAULT@SECLEVEL=0", "-WWW"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    SServer(child)
}

fn throwaway_cert(dir: &Path) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=old-printer",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .output()
        .expect("openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("page.html"),
        format!("<html><body><p>{PAGE}</p></body></html>"),
    )
    .expect("page");
}

async fn session(api: &Api, relay: &Relay, device: i64, port: u16) -> Value {
    let (status, v) = api
        .call(
            Method::POST,
            &format!("/devices/{device}/web-sessions"),
            Some(json!({"port": port, "tls": true})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "web session to {port}: {v}\n{}",
        relay.logs()
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls1_printer_page_through_a_web_session() {
    if !have_openssl() {
        eprintln!("SKIPPED: the `openssl` command is not installed");
        return;
    }
    let (relay, agent, ip) = Relay::with_agent_config(|_| {}, &[TLS1, TLS1_1, MODERN]);
    let device = relay.add_device(&agent, &ip);
    let dir = tempfile::tempdir().expect("tempdir");
    throwaway_cert(dir.path());
    let _s1 = s_server(dir.path(), &format!("{ip}:{TLS1}"), "-tls1");
    let _s11 = s_server(dir.path(), &format!("{ip}:{TLS1_1}"), "-tls1_1");
    let _s12 = s_server(dir.path(), &format!("{ip}:{MODERN}"), "-tls1_2");
    for port in [TLS1, TLS1_1, MODERN] {
        assert_eventually!(
            std::net::TcpStream::connect((ip.as_str(), port)).is_ok(),
            Duration::from_secs(10),
            "s_server on {port} did not start"
        );
    }
    let api = Api::login(&relay, "admin", &relay.admin_password).await;

    for (port, version, legacy) in [
        (TLS1, "TLSv1_0", true),
        (TLS1_1, "TLSv1_1", true),
        (MODERN, "TLSv1_2", false),
    ] {
        let s = session(&api, &relay, device, port).await;
        assert_eq!(s["certificate"]["version"], version, "{s}");
        assert_eq!(s["certificate"]["legacy"], legacy, "{s}");
        let mut b = Browser::new(&relay);
        // The entry link sets the cookie and redirects to "/", which
        // s_server -WWW does not serve; the page file is what counts.
        b.get(s["url"].as_str().expect("url")).await;
        let page = b.get("/page.html").await;
        assert!(
            page.text().contains(PAGE),
            "port {port}: {} {}\n{}",
            page.status,
            page.text(),
            relay.logs()
        );
        let created: Vec<Value> = relay
            .audit_kind("web.session_create")
            .into_iter()
            .filter(|r| r["detail"]["port"] == port)
            .collect();
        assert_eq!(created.len(), 1);
        assert_eq!(
            created[0]["detail"]["certificate"]["version"], version,
            "{created:?}"
        );
        assert_eq!(created[0]["detail"]["certificate"]["legacy"], legacy);
        let opens: Vec<Value> = relay
            .audit_kind("stream.open")
            .into_iter()
            .filter(|r| {
                r["detail"]["target"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!(":{port}")))
            })
            .collect();
        assert!(
            !opens.is_empty()
                && opens.iter().all(|r| r["detail"]["tls_version"] == version
                    && r["detail"]["tls_legacy"] == legacy),
            "{opens:?}"
        );
    }
}
