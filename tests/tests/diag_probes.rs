//! Diagnostics end to end: the real relay and agent, a simulated printer
//! answering HTTP, HTTPS, IPP and PJL, and a raw ICMP socket that counts
//! the echo requests really sent (a denied ping must send none).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_sim::{Fleet, FleetConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HTTP: u16 = 8080;
const CLOSED: u16 = 8081;
const HTTPS: u16 = 8443;
const IPP: u16 = 631;
const PJL: u16 = 9100;

/// Counts ICMP echo requests per destination seen on this host while it
/// lives (a raw socket gets a copy of every ICMP packet; on loopback the
/// request is seen as it arrives). Needs root, as the e2e tests run.
struct EchoCounter {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<Ipv4Addr, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoCounter {
    fn start() -> EchoCounter {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .expect("raw ICMP socket (the e2e tests run as root)");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<HashMap<Ipv4Addr, usize>>> = Arc::default();
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let p: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if p.len() < 20 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() > ihl && p[ihl] == 8 {
                    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
                    *m.lock().unwrap().entry(dst).or_default() += 1;
                }
            }
        });
        EchoCounter {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn count(&self, dst: &str) -> usize {
        let a: Ipv4Addr = dst.parse().expect("ipv4");
        self.seen.lock().unwrap().get(&a).copied().unwrap_or(0)
    }
}

impl Drop for EchoCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Fixture {
    relay: Relay,
    agent: Agent,
    fleet: Fleet,
    /// The printer at .10 (allowed by the agent) and a device at .20 (not).
    printer: i64,
    outside: i64,
    api: Api,
}

async fn fixture() -> Fixture {
    let (relay, agent, ip) = Relay::with_agent_config(|_| {}, &[HTTP, CLOSED, HTTPS, IPP, PJL]);
    let printer = relay.add_device(&agent, &ip);
    let outside = relay.add_device(&agent, &relay.ip(20));
    let fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().expect("ip")],
        http_port: HTTP,
        https_port: Some(HTTPS),
        ipp_port: Some(IPP),
        pjl_port: Some(PJL),
        ..Default::default()
    })
    .await
    .expect("fleet");
    let api = Api::login(&relay, "admin", &relay.admin_password).await;
    Fixture {
        relay,
        agent,
        fleet,
        printer,
        outside,
        api,
    }
}

impl Fixture {
    async fn diag(&self, api: &Api, device: i64, body: Value) -> (StatusCode, Value) {
        api.call(
            Method::POST,
            &format!("/devices/{device}/diagnostics"),
            Some(body),
        )
        .await
    }

    async fn ok(&self, device: i64, body: Value) -> Value {
        let (status, v) = self.diag(&self.api, device, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{body}: {v}\nagent log:\n{}",
            self.agent.logs()
        );
        assert_eq!(v["outcome"], "done", "{v}");
        v["result"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_probe_kind_against_the_simulator_and_a_denied_ping_sends_nothing() {
    let f = fixture().await;
    let ip = f.relay.ip(10);
    let outside_ip = f.relay.ip(20);
    let echoes = EchoCounter::start();

    // Ping an allowed loopback address: RTT statistics.
    let r = f
        .ok(
            f.printer,
            json!({"kind": "ping", "count": 3, "interval_ms": 200}),
        )
        .await;
    assert_eq!(r["kind"], "ping");
    assert_eq!(r["address"], ip.as_str());
    assert_eq!(
        (r["sent"].as_u64(), r["received"].as_u64()),
        (Some(3), Some(3)),
        "{r}"
    );
    assert_eq!(r["loss_pct"], 0.0);
    let (min, avg, max) = (
        r["rtt_min_ms"].as_f64().expect("min"),
        r["rtt_avg_ms"].as_f64().expect("avg"),
        r["rtt_max_ms"].as_f64().expect("max"),
    );
    assert!(min <= avg && avg <= max && max < 1000.0, "{r}");
    assert!(r["rtt_stddev_ms"].as_f64().is_some(), "{r}");
    assert!(["datagram", "raw"].contains(&r["socket"].as_str().unwrap_or("")));

    // Ping an address the agent's policy does not allow: refused with the
    // rule, and not one packet toward it.
    let (status, v) = f
        .diag(
            &f.api,
            f.outside,
            json!({"kind": "ping", "count": 5, "interval_ms": 200}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["outcome"], "refused", "{v}");
    // Loopback outside the explicit allow entry: the special-block rule.
    assert_eq!(v["rule"], "special", "{v}");
    assert_eq!(v["decided_by"], "agent", "{v}");
    // The control: the counter does see the allowed ping's requests.
    assert_eventually!(
        echoes.count(&ip) >= 3,
        Duration::from_secs(5),
        "echo requests to {ip} seen: {}",
        echoes.count(&ip)
    );
    assert_eq!(echoes.count(&outside_ip), 0, "a denied ping sent packets");
    drop(echoes);

    // TCP to every port of the agent's policy: the printer's are open, the
    // one nobody listens on is closed.
    let r = f.ok(f.printer, json!({"kind": "tcp"})).await;
    let state = |port: u16| {
        r["ports"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["port"] == port))
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state(HTTP).as_deref(), Some("open"), "{r}");
    assert_eq!(state(CLOSED).as_deref(), Some("closed"), "{r}");
    assert_eq!(state(PJL).as_deref(), Some("open"), "{r}");

    // HTTP: status and Server header.
    let r = f.ok(f.printer, json!({"kind": "http", "port": HTTP})).await;
    assert_eq!(r["status"], 302, "{r}");
    assert_eq!(r["server"], "DWA-Sim/1.0 (embedded web server)", "{r}");
    assert_eq!(r["tls"], false);

    // HTTPS: TLS version, certificate subject and fingerprint.
    let r = f
        .ok(
            f.printer,
            json!({"kind": "http", "port": HTTPS, "tls": true}),
        )
        .await;
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["status"], 302, "{r}");
    assert_eq!(r["tls_version"], "TLSv1_3", "{r}");
    let printer = &f.fleet.printers[0];
    assert_eq!(
        r["cert_sha256"].as_str(),
        printer.cert_sha256.as_deref(),
        "{r}"
    );
    assert!(
        r["cert_subject"].as_str().is_some_and(|s| !s.is_empty()),
        "{r}"
    );

    // IPP Get-Printer-Attributes on 631 (the default port).
    let r = f.ok(f.printer, json!({"kind": "ipp"})).await;
    assert_eq!(r["port"], IPP);
    assert_eq!(r["printer_state"], "idle", "{r}");
    assert_eq!(r["printer_state_reasons"], json!(["none"]), "{r}");
    assert_eq!(
        r["make_and_model"].as_str(),
        Some(printer.identity.make_and_model.as_str()),
        "{r}"
    );
    assert_eq!(
        r["firmware"].as_str(),
        Some(printer.identity.firmware.as_str()),
        "{r}"
    );

    // PJL INFO ID and INFO STATUS on 9100 (the default port).
    let r = f.ok(f.printer, json!({"kind": "pjl"})).await;
    assert_eq!(
        r["id"].as_str(),
        Some(printer.identity.make_and_model.as_str()),
        "{r}"
    );
    assert_eq!(r["status_code"], 10001, "{r}");
    assert_eq!(r["display"], "Ready", "{r}");
    assert_eq!(r["online"], true, "{r}");

    // A port outside the agent's policy: refused by the relay's pre-check.
    let (status, v) = f
        .diag(&f.api, f.printer, json!({"kind": "pjl", "port": 22}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");

    // Parameters out of bounds: 400, nothing sent.
    for bad in [
        json!({"kind": "ping", "count": 21}),
        json!({"kind": "ping", "interval_ms": 10}),
        json!({"kind": "ping", "size": 9000}),
        json!({"kind": "shell", "cmd": "id"}),
    ] {
        let (status, v) = f.diag(&f.api, f.printer, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    // The audit has every run with its result, the refusal with its rule.
    let runs = f.relay.audit_kind("diag.run");
    assert_eq!(runs.len(), 7, "{runs:#?}");
    let kinds: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["detail"]["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["ping", "ping", "tcp", "http", "http", "ipp", "pjl"]);
    assert!(runs.iter().all(|r| r["actor"] == "user:admin"));
    assert_eq!(runs[0]["detail"]["outcome"]["result"]["received"], 3);
    assert_eq!(runs[1]["detail"]["outcome"]["outcome"], "refused");
    assert_eq!(runs[1]["detail"]["outcome"]["rule"], "special");
    assert_eq!(
        runs[5]["detail"]["outcome"]["result"]["printer_state"],
        "idle"
    );
    assert_eq!(
        f.relay.audit_kind("diag.refused").len(),
        1,
        "the port-22 pre-check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permission_rate_limits_and_an_offline_agent() {
    let mut f = fixture().await;

    // A technician of another customer: 403, audited, nothing run.
    f.relay.ok(&["customer", "add", "other"]);
    let tech = f
        .relay
        .add_user(&["tina", "--role", "technician", "--customer", "other"])
        .await;
    let tina = Api::login(&f.relay, "tina", tech["password"].as_str().expect("pw")).await;
    let (status, v) = f
        .diag(&tina, f.printer, json!({"kind": "tcp", "port": CLOSED}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let refused = f.relay.audit_kind("diag.refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["actor"], "user:tina");
    assert!(f.relay.audit_kind("diag.run").is_empty());

    // A burst on one device: the per-device quota, then 429 + Retry-After.
    for i in 0..12 {
        let (status, v) = f
            .diag(&f.api, f.printer, json!({"kind": "tcp", "port": CLOSED}))
            .await;
        assert_eq!(status, StatusCode::OK, "request {i}: {v}");
        assert_eq!(v["result"]["ports"][0]["state"], "closed", "{v}");
    }
    let resp = f
        .api
        .client
        .post(format!("{}/devices/{}/diagnostics", f.api.base, f.printer))
        .header("x-csrf-token", f.api.csrf.clone().unwrap_or_default())
        .json(&json!({"kind": "tcp", "port": CLOSED}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(f
        .relay
        .audit_kind("diag.refused")
        .iter()
        .any(|r| r["detail"]["limit"] == "device"));

    // Agent gone: 409 at once, not a hang.
    f.agent.kill9();
    let agent_id = f.agent.id.clone();
    assert_eventually!(
        !f.relay.connected(&agent_id),
        Duration::from_secs(30),
        "agent still connected"
    );
    let (status, v) = f.diag(&f.api, f.outside, json!({"kind": "ping"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
}
