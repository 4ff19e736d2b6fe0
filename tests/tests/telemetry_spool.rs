//! The telemetry path end to end: the real `dwa-agent run` scans simulated
//! printers (the fleet simulator's SNMP responder) on a schedule, spools
//! every reading, and uploads to the real `dwa-relay` over HTTPS.
//!
//! - The relay is down for whole scans, then comes back: every item the
//!   agent spooled arrives exactly once.
//! - The relay is killed with SIGKILL while the agent uploads its backlog,
//!   then restarted: the same.
//! - The agent is killed with SIGKILL while it uploads, then restarted: the
//!   same, although the relay has stored batches the agent never saw
//!   acknowledged.
//! - The agent is killed with SIGKILL in the middle of a scan: nothing of
//!   that scan is spooled (a scan goes in whole or not at all), and after
//!   the restart every scan's readings arrive exactly once.
//! - Scan settings made on the relay reach the running agent, which keeps
//!   them inside its own ceiling; "scan now" runs a scan at once; a
//!   discovered device is a web-session target.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::{assert_eventually, bins, Agent, EnrollArgs, Relay};
use dwa_sim::{Fleet, FleetConfig};
use reqwest::{Method, StatusCode};
use serde_json::json;
use serde_json::Value;
use sqlx::Row;

const PRINTERS: u8 = 4;
/// The simulated printers' web port, allowed by the agent's policy.
const WEB_PORT: u16 = 8080;

struct Site {
    relay: Relay,
    agent: Agent,
    fleet: Fleet,
}

/// A relay (serving), an enrolled agent (not started) whose `[scan]` covers
/// four simulated printers, scanning every `interval`, uploading `batch`
/// items per request.
async fn site(interval: &str, batch: usize) -> Site {
    site_with(interval, batch, false).await
}

/// [`site`]; with `hole`, one address of the range (`.30`) takes SNMP
/// requests and never answers, so every scan waits out its timeout.
async fn site_with(interval: &str, batch: usize, hole: bool) -> Site {
    let relay = Relay::start_new();
    let net = relay.net.clone();
    let addresses: Vec<IpAddr> = (0..PRINTERS)
        .map(|i| format!("{net}.{}", 20 + i).parse().expect("address"))
        .collect();
    let mut snmp = dwa_sim::snmp::SnmpOptions::default();
    if hole {
        let silent: IpAddr = format!("{net}.30").parse().expect("address");
        snmp.black_hole = Some(dwa_sim::snmp::BlackHole::Addresses(vec![silent]));
    }
    let fleet = Fleet::start(FleetConfig {
        addresses,
        http_port: WEB_PORT,
        https_port: None,
        snmp_port: Some(0),
        snmp,
        ..FleetConfig::default()
    })
    .await
    .expect("fleet");
    let port = fleet.snmp_port.expect("snmp port");
    let range = format!("{net}.16/28");
    let agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&range],
            ports: &[WEB_PORT],
            transport: "ssh",
        },
    );
    agent.edit_config(|text| {
        let mut cfg: toml::Table = toml::from_str(text).expect("agent.toml");
        let mut scan = toml::Table::new();
        scan.insert(
            "ranges".into(),
            vec![toml::Value::from(range.clone())].into(),
        );
        scan.insert("interval".into(), interval.into());
        scan.insert("snmp_port".into(), i64::from(port).into());
        let timeout = if hole { "1500ms" } else { "500ms" };
        scan.insert("timeout".into(), timeout.into());
        scan.insert("retries".into(), 1.into());
        cfg.insert("scan".into(), scan.into());
        let mut spool = toml::Table::new();
        spool.insert("batch_items".into(), (batch as i64).into());
        cfg.insert("spool".into(), spool.into());
        *text = toml::to_string(&cfg).expect("serialize");
    });
    Site {
        relay,
        agent,
        fleet,
    }
}

/// `dwa-agent spool status --json` (the spool is readable while the agent
/// runs: SQLite WAL).
fn spool_status(agent: &Agent) -> Value {
    let out = std::process::Command::new(&bins().1)
        .args(["--json", "spool", "status", "--config"])
        .arg(&agent.config)
        .output()
        .expect("dwa-agent spool status");
    if !out.status.success() {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `dwa-agent status` (`--json` when `json`).
fn agent_status(agent: &Agent, json: bool) -> (Value, String) {
    let mut cmd = std::process::Command::new(&bins().1);
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .args(["status", "--config"])
        .arg(&agent.config)
        .output()
        .expect("dwa-agent status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

fn stat(agent: &Agent, key: &str) -> u64 {
    spool_status(agent)[key].as_u64().unwrap_or(0)
}

/// What the relay stored for `agent`: (items, distinct readings, scans,
/// printers the scans say they found).
async fn stored(relay: &Relay, agent: &str) -> (u64, u64, u64, u64) {
    let url = format!("sqlite://{}?mode=ro", relay.data.join("dwa.db").display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
        return (0, 0, 0, 0);
    };
    let q = |sql: &'static str| {
        let pool = pool.clone();
        let agent = agent.to_string();
        async move {
            sqlx::query(sql)
                .bind(agent)
                .fetch_one(&pool)
                .await
                .map(|r| r.get::<i64, _>(0) as u64)
                .unwrap_or(0)
        }
    };
    let items = q("SELECT COUNT(*) FROM telemetry_items WHERE agent_id = ?").await;
    let readings = q("SELECT COUNT(DISTINCT id) FROM readings WHERE agent_id = ?").await;
    let scans = q("SELECT COUNT(*) FROM scans WHERE agent_id = ?").await;
    let found = q("SELECT COALESCE(SUM(found), 0) FROM scans WHERE agent_id = ?").await;
    pool.close().await;
    (items, readings, scans, found)
}

/// Waits until the agent's spool is empty, stops the agent cleanly, and
/// checks that the relay holds exactly what the agent spooled.
async fn drained_exactly_once(s: &mut Site) {
    assert_eventually!(
        stat(&s.agent, "pending") == 0 && stat(&s.agent, "spooled") > 0,
        Duration::from_secs(60),
        "the spool did not drain: {}\nagent log:\n{}",
        spool_status(&s.agent),
        s.agent.logs()
    );
    s.agent.signal(libc::SIGTERM);
    assert_eventually!(
        !s.agent.is_running(),
        Duration::from_secs(20),
        "agent did not stop"
    );
    // Scans may have run after the last look: drain again on a fresh start
    // is not needed if nothing is pending now.
    let st = spool_status(&s.agent);
    let pending = st["pending"].as_u64().unwrap_or(u64::MAX);
    let spooled = st["spooled"].as_u64().unwrap_or(0);
    if pending > 0 {
        s.agent.start();
        assert_eventually!(
            stat(&s.agent, "pending") == 0,
            Duration::from_secs(60),
            "the spool did not drain after restart"
        );
        s.agent.signal(libc::SIGTERM);
    }
    let st = spool_status(&s.agent);
    assert_eq!(st["dropped"], 0, "nothing dropped: {st}");
    let spooled = st["spooled"].as_u64().unwrap_or(spooled);
    assert_eq!(
        st["acknowledged"].as_u64(),
        Some(spooled),
        "every spooled item acknowledged once: {st}"
    );
    let (items, readings, scans, found) = stored(&s.relay, &s.agent.id).await;
    assert_eq!(
        items, spooled,
        "the relay holds exactly the items the agent spooled (spool: {st})"
    );
    assert_eq!(
        readings + scans,
        items,
        "each item is a reading or a scan end"
    );
    assert!(scans >= 2, "at least two scans: {scans}");
    // Each scan's readings arrived, each once (a printer that timed out
    // under load is simply not in its scan's count).
    assert_eq!(readings, found, "readings match what the scans found");
    assert!(
        found > scans,
        "the scans found printers: {found} readings in {scans} scans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_for_whole_scans_loses_nothing() {
    let mut s = site("1s", 256).await;
    s.relay.stop();
    s.agent.start();
    // At least three scans while nobody is there to receive them.
    assert_eventually!(
        stat(&s.agent, "spooled") >= 3 * (u64::from(PRINTERS) + 1),
        Duration::from_secs(60),
        "the agent did not spool three scans: {}\n{}",
        spool_status(&s.agent),
        s.agent.logs()
    );
    assert_eq!(
        stat(&s.agent, "acknowledged"),
        0,
        "nothing can have been acknowledged"
    );
    assert!(
        s.agent.logs().contains("telemetry upload failed"),
        "uploads were tried and failed while the relay was down:\n{}",
        s.agent.logs()
    );
    s.relay.start();
    drained_exactly_once(&mut s).await;
}

/// A site whose agent spooled a backlog of six scans while the relay was
/// down, uploading one item per request (so the upload takes many
/// requests and a SIGKILL lands in the middle of it). Returns the site,
/// the relay stopped and the agent running, and the backlog's size.
async fn backlog() -> (Site, u64) {
    let mut s = site("1s", 1).await;
    s.relay.stop();
    s.agent.start();
    let backlog = 6 * (u64::from(PRINTERS) + 1);
    assert_eventually!(
        stat(&s.agent, "spooled") >= backlog,
        Duration::from_secs(60),
        "no backlog: {}",
        spool_status(&s.agent)
    );
    (s, backlog)
}

/// Calls `kill` as soon as the relay holds some, but not all, of the
/// backlog; asserts that it landed there and left items to upload.
async fn kill_mid_upload(s: &mut Site, backlog: u64, kill: impl Fn(&mut Site)) {
    let mut partial = false;
    for _ in 0..2000 {
        let (items, ..) = stored(&s.relay, &s.agent.id).await;
        if items > 0 {
            kill(s);
            let (after, ..) = stored(&s.relay, &s.agent.id).await;
            partial = after < backlog;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(partial, "the kill did not land during the upload");
    assert!(
        stat(&s.agent, "pending") > 0,
        "items were left to upload after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_upload_loses_and_duplicates_nothing() {
    let (mut s, backlog) = backlog().await;
    s.agent.kill9();
    s.relay.start();
    s.agent.start();
    kill_mid_upload(&mut s, backlog, |s| s.agent.kill9()).await;
    s.agent.start();
    drained_exactly_once(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_scan_spools_no_partial_scan() {
    let mut s = site_with("1s", 256, true).await;
    let hole = s.fleet.black_hole.clone().expect("black hole stats");
    s.agent.start();
    // The first scan has asked the silent address and waits for it: its
    // printers have answered, nothing of it is spooled yet.
    assert_eventually!(
        hole.received() > 0,
        Duration::from_secs(30),
        "the scan never reached the silent address\nagent log:\n{}",
        s.agent.logs()
    );
    assert_eq!(stat(&s.agent, "spooled"), 0, "{}", spool_status(&s.agent));
    s.agent.kill9();
    // A scan is spooled whole or not at all: the one killed left nothing.
    let st = spool_status(&s.agent);
    assert_eq!(
        (st["spooled"].as_u64(), st["pending"].as_u64()),
        (Some(0), Some(0)),
        "{st}"
    );
    s.agent.start();
    // Two whole scans after the restart, then all of it at the relay once.
    let two = 2 * (u64::from(PRINTERS) + 1);
    assert_eventually!(
        stat(&s.agent, "spooled") >= two,
        Duration::from_secs(60),
        "no two scans after the restart: {}",
        spool_status(&s.agent)
    );
    drained_exactly_once(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_ingest_loses_and_duplicates_nothing() {
    let (mut s, backlog) = backlog().await;
    s.relay.start();
    kill_mid_upload(&mut s, backlog, |s| s.relay.kill9()).await;
    s.relay.start();
    drained_exactly_once(&mut s).await;
    let out = s.relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The latest scan the relay stored for `agent`: (trigger, ranges, found).
async fn latest_scan(relay: &Relay, agent: &str) -> Option<(String, String, i64)> {
    let url = format!("sqlite://{}?mode=ro", relay.data.join("dwa.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
    let row = sqlx::query(
        "SELECT trigger, ranges, found FROM scans WHERE agent_id = ? ORDER BY received_at DESC, rowid DESC LIMIT 1",
    )
    .bind(agent)
    .fetch_optional(&pool)
    .await
    .ok()??;
    pool.close().await;
    Some((row.get(0), row.get(1), row.get(2)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_settings_and_scan_now_reach_the_running_agent() {
    // An hour between scheduled scans: only the startup scan and the one
    // the relay asks for can happen during the test.
    let mut s = site("1h", 256).await;
    s.agent.start();
    s.relay.wait_connected(&s.agent);
    assert_eventually!(
        stored(&s.relay, &s.agent.id).await.2 == 1,
        Duration::from_secs(30),
        "the startup scan did not arrive"
    );
    let admin = Api::login(&s.relay, "admin", &s.relay.admin_password).await;
    let net = s.relay.net.clone();
    let narrow = format!("{net}.20/31");
    let path = format!("/agents/{}/scan", s.agent.id);
    let (status, v) = admin
        .call(
            Method::PUT,
            &path,
            Some(json!({"ranges": [narrow, "10.9.0.0/16"], "interval": "2h"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["pushed"], true, "{v}");
    // The agent takes the narrower range, refuses the one outside its
    // ceiling, and says so.
    let mut applied = Value::Null;
    for _ in 0..200 {
        let (_, agents) = admin.call(Method::GET, "/agents", None).await;
        applied = agents[0]["scan"]["applied"].clone();
        if !applied.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(applied["ranges"], json!([narrow]), "{applied}");
    assert_eq!(applied["interval_secs"], 7200, "{applied}");
    assert_eq!(applied["refused"][0][0], "10.9.0.0/16", "{applied}");
    assert!(
        applied["refused"][0][1]
            .as_str()
            .is_some_and(|r| r.contains("ceiling")),
        "{applied}"
    );

    let (status, v) = admin
        .call(
            Method::POST,
            &format!("/agents/{}/scan-now", s.agent.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(s.relay.audit_kind("telemetry.scan_now").len(), 1);
    assert_eventually!(
        stored(&s.relay, &s.agent.id).await.2 == 2,
        Duration::from_secs(30),
        "the requested scan did not arrive\n{}",
        s.agent.logs()
    );
    let (trigger, ranges, found) = latest_scan(&s.relay, &s.agent.id).await.expect("a scan");
    assert!(trigger.starts_with("relay:"), "{trigger}");
    assert_eq!(ranges, json!([narrow]).to_string());
    assert_eq!(found, 2, "two printers in {narrow}");

    // A device the agent discovered (nobody registered it) is a web-session
    // target like a hand-added one.
    let (_, devices) = admin.call(Method::GET, "/devices", None).await;
    let list = devices.as_array().expect("devices");
    assert_eq!(list.len(), usize::from(PRINTERS), "{devices}");
    let device = &list[0];
    assert!(device["serial"].is_string(), "{device}");
    let (status, session) = admin
        .call(
            Method::POST,
            &format!("/devices/{}/web-sessions", device["id"]),
            Some(json!({"port": WEB_PORT})),
        )
        .await;
    assert!(status.is_success(), "{status}: {session}");
    let mut browser = Browser::new(&s.relay);
    let page = browser
        .get(session["url"].as_str().expect("session url"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("Log in"), "{}", page.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_status_tells_what_a_site_asks_first() {
    let mut s = site("1s", 256).await;
    s.agent.start();
    let up = |v: &Value| {
        v["running"] == true
            && v["status"]["link"]["state"] == "connected"
            && v["status"]["link"]["transport"] == "ssh"
            && v["status"]["last_scan"]["found"].as_u64() >= Some(1)
            && v["status"]["last_upload"]["items"].as_u64() > Some(0)
    };
    assert_eventually!(
        up(&agent_status(&s.agent, true).0),
        Duration::from_secs(30),
        "status never showed a connected, scanning, uploading agent: {}",
        agent_status(&s.agent, true).1
    );
    let (v, _) = agent_status(&s.agent, true);
    assert_eq!(v["agent_id"], s.agent.id.as_str());
    assert_eq!(v["policy"]["ports"], json!([WEB_PORT]));
    let range = format!("{}.16/28", s.relay.net);
    assert_eq!(v["policy"]["allow"], json!([range]));
    let (_, text) = agent_status(&s.agent, false);
    assert!(text.contains("link: connected over ssh"), "{text}");
    assert!(text.contains("last scan: "), "{text}");
    assert!(text.contains(&format!("allow [{range}]")), "{text}");

    // The relay goes away: the link is down with its reason, readings wait.
    s.relay.stop();
    assert_eventually!(
        {
            let v = agent_status(&s.agent, true).0;
            v["status"]["link"]["state"] != "connected"
                && v["status"]["link"]["last_error"].is_string()
                && v["spool"]["pending"].as_u64() > Some(0)
                && v["status"]["spool_waiting_since"].is_u64()
        },
        Duration::from_secs(30),
        "status never showed the relay gone: {}",
        agent_status(&s.agent, true).1
    );
    s.agent.signal(libc::SIGTERM);
    assert_eventually!(
        !s.agent.is_running(),
        Duration::from_secs(20),
        "agent did not stop"
    );
    let (v, text) = agent_status(&s.agent, false);
    assert!(text.contains("not running"), "{text}");
    assert_eq!(agent_status(&s.agent, true).0["running"], false, "{v}");
}
