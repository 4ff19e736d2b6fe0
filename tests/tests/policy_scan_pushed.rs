//! Scans the relay pushes stay inside the agent's address policy. The relay
//! here passes on whatever ranges an admin gives it, as a compromised relay
//! would; the agent alone decides. Asserted on the target side: UDP sockets
//! where the SNMP datagrams would land count what arrives.
//!
//! - A pushed single host on the deny list, and the same host inside a
//!   pushed range: no datagram reaches it, while its allowed neighbour is
//!   scanned (so the scan did run).
//! - With a ceiling of everything (`0.0.0.0/0`), loopback is still refused.
//! - A flood of "scan now" costs one scan, not one per request.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::{assert_eventually, Agent, EnrollArgs, Relay};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

/// A UDP socket that counts the datagrams it receives.
struct Sink {
    port: u16,
    seen: Arc<AtomicUsize>,
}

impl Sink {
    async fn bind(addr: &str) -> Sink {
        let socket = UdpSocket::bind(addr).await.expect("bind UDP sink");
        let port = socket.local_addr().expect("local addr").port();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while socket.recv_from(&mut buf).await.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Sink { port, seen }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// An enrolled agent (not started) with `allow`/`deny`, scanning nothing
/// of its own, sending SNMP to `snmp_port` with short timeouts.
fn agent(relay: &Relay, allow: &str, deny: &[String], snmp_port: u16) -> Agent {
    let agent = Agent::enroll(
        relay,
        EnrollArgs {
            allow: &[allow],
            ports: &[80],
            transport: "ssh",
        },
    );
    agent.edit_config(|text| {
        let mut cfg: toml::Table = toml::from_str(text).expect("agent.toml");
        let policy = cfg
            .get_mut("policy")
            .and_then(toml::Value::as_table_mut)
            .expect("[policy]");
        policy.insert("deny".into(), deny.to_vec().into());
        let mut scan = toml::Table::new();
        scan.insert("ranges".into(), Vec::<String>::new().into());
        scan.insert("interval".into(), "1h".into());
        scan.insert("snmp_port".into(), i64::from(snmp_port).into());
        scan.insert("timeout".into(), "300ms".into());
        scan.insert("retries".into(), 0.into());
        cfg.insert("scan".into(), scan.into());
        *text = toml::to_string(&cfg).expect("serialize");
    });
    agent
}

/// Pushes `ranges` and waits until the agent says it applied `expect`.
async fn push(admin: &Api, agent: &Agent, ranges: Value, expect: Value) -> Value {
    let (status, v) = admin
        .call(
            Method::PUT,
            &format!("/agents/{}/scan", agent.id),
            Some(json!({ "ranges": ranges })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["pushed"], true, "{v}");
    let mut applied = Value::Null;
    for _ in 0..200 {
        let (_, agents) = admin.call(Method::GET, "/agents", None).await;
        applied = agents[0]["scan"]["applied"].clone();
        if applied["ranges"] == expect {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    applied
}

async fn scan_now(admin: &Api, agent: &Agent) {
    let (status, v) = admin
        .call(
            Method::POST,
            &format!("/agents/{}/scan-now", agent.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
}

/// Asks for a scan and waits until the agent has spooled it.
async fn requested_scan(admin: &Api, agent: &Agent) {
    let before = relay_scans(agent);
    scan_now(admin, agent).await;
    assert_eventually!(
        relay_scans(agent) > before,
        Duration::from_secs(30),
        "the requested scan did not run\n{}",
        agent.logs()
    );
}

/// Scans the relay stored for the agent that it asked for.
fn relay_scans(agent: &Agent) -> usize {
    agent
        .logs()
        .lines()
        .filter(|l| l.contains("scan spooled") && l.contains("relay:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_scans_never_reach_a_denied_host() {
    let mut relay = Relay::start_new();
    let net = relay.net.clone();
    let denied = Sink::bind(&format!("{net}.9:0")).await;
    let allowed = Sink::bind(&format!("{net}.10:{}", denied.port)).await;
    let mut agent = agent(
        &relay,
        &format!("{net}.0/24"),
        &[format!("{net}.9/32")],
        denied.port,
    );
    agent.start();
    relay.wait_connected(&agent);
    let admin = Api::login(&relay, "admin", &relay.admin_password).await;

    // The denied host on its own is refused when the settings arrive.
    let applied = push(
        &admin,
        &agent,
        json!([format!("{net}.9"), format!("{net}.10")]),
        json!([format!("{net}.10")]),
    )
    .await;
    assert_eq!(applied["ranges"], json!([format!("{net}.10")]), "{applied}");
    assert_eq!(applied["refused"][0][0], format!("{net}.9"), "{applied}");
    requested_scan(&admin, &agent).await;
    assert!(allowed.seen() > 0, "the allowed neighbour was not scanned");
    assert_eq!(denied.seen(), 0, "SNMP reached the denied host");

    // Inside a pushed range the agent's ceiling holds, the denied host is
    // skipped address by address. The "scan now" gap lives in the agent
    // process: a new one may scan at once.
    agent.kill9();
    agent.start();
    relay.wait_connected(&agent);
    let before = allowed.seen();
    let range = json!([format!("{net}.8/30")]);
    let applied = push(&admin, &agent, range.clone(), range.clone()).await;
    assert_eq!(applied["ranges"], range, "{applied}");
    requested_scan(&admin, &agent).await;
    assert!(
        allowed.seen() > before,
        "the allowed neighbour was not scanned"
    );
    assert_eq!(denied.seen(), 0, "SNMP reached the denied host");
    assert!(
        agent.logs().contains("refused by the policy"),
        "{}",
        agent.logs()
    );
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceiling_of_everything_still_keeps_scans_off_loopback() {
    let mut relay = Relay::start_new();
    let net = relay.net.clone();
    let own = Sink::bind("127.0.0.1:0").await;
    let fleet = Sink::bind(&format!("{net}.20:{}", own.port)).await;
    let mut agent = agent(&relay, "0.0.0.0/0", &[], own.port);
    agent.start();
    relay.wait_connected(&agent);
    let admin = Api::login(&relay, "admin", &relay.admin_password).await;
    let wide = json!([format!("{net}.16/28")]);
    let applied = push(
        &admin,
        &agent,
        json!(["127.0.0.1", format!("{net}.16/28")]),
        wide.clone(),
    )
    .await;
    assert_eq!(applied["refused"][0][0], "127.0.0.1", "{applied}");
    assert_eq!(applied["ranges"], wide, "{applied}");
    requested_scan(&admin, &agent).await;
    assert_eq!(own.seen(), 0, "SNMP reached the agent's own loopback");
    assert_eq!(fleet.seen(), 0, "SNMP reached a loopback address");
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_scan_now_costs_one_scan() {
    let mut relay = Relay::start_new();
    let net = relay.net.clone();
    let printer = Sink::bind(&format!("{net}.10:0")).await;
    let mut agent = agent(&relay, &format!("{net}.0/24"), &[], printer.port);
    agent.start();
    relay.wait_connected(&agent);
    let admin = Api::login(&relay, "admin", &relay.admin_password).await;
    let one = json!([format!("{net}.10")]);
    push(&admin, &agent, one.clone(), one).await;
    requested_scan(&admin, &agent).await;
    // Each scan of one silent address takes the 300 ms timeout; without a
    // limit, these would run back to back.
    for _ in 0..20 {
        scan_now(&admin, &agent).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(relay_scans(&agent), 1, "{}", agent.logs());
    relay.stop();
}
