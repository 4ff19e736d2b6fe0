//! When the audit log cannot be written, the actions that need a record
//! are refused, not carried out unaudited: a web session's ticket and a
//! raw tunnel's listener are never handed out without their record, a
//! stream whose open record cannot be written is closed before it carries
//! anything, and a live web session's requests get 503 until the log can
//! be written again.
//! The fault: a trigger that makes every insert into the audit table fail
//! (what a full disk or a broken database does), added to the running
//! relay's database, then removed.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::Relay;
use dwa_sim::{Fleet, FleetConfig};
use reqwest::{Method, StatusCode};
use serde_json::json;

const HTTP: u16 = 8080;

async fn db(relay: &Relay, sql: &str) {
    let url = format!("sqlite://{}?mode=rw", relay.data.join("dwa.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

async fn session(admin: &Api, device: i64) -> (StatusCode, serde_json::Value) {
    admin
        .call(
            Method::POST,
            &format!("/devices/{device}/web-sessions"),
            Some(json!({"port": HTTP})),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_tunnels_are_refused_while_the_audit_log_is_down() {
    let (relay, agent, ip) = Relay::with_agent_config(|_| {}, &[HTTP]);
    let device = relay.add_device(&agent, &ip);
    let _fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().unwrap()],
        http_port: HTTP,
        https_port: None,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = relay.ip(50).parse().unwrap();
    let code = relay.totp.code("admin").await;
    let admin = Api::from_source(&relay, client)
        .log_in_with("admin", &relay.admin_password, code.as_deref())
        .await;
    let (s, v) = session(&admin, device).await;
    assert!(s.is_success(), "{s}: {v}");
    let mut b = Browser::new(&relay);
    let page = b.get(v["url"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let records = relay.audit().len();

    db(
        &relay,
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit \
         BEGIN SELECT RAISE(ABORT, 'injected: the audit store is down'); END",
    )
    .await;
    let (s, v) = session(&admin, device).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("audit log")),
        "{v}"
    );
    assert!(v["url"].is_null(), "a ticket was handed out: {v}");
    let (s, v) = admin
        .call(
            Method::POST,
            &format!("/devices/{device}/tunnels"),
            Some(json!({"port": HTTP})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["port"].is_null(), "a tunnel was opened: {v}");
    let (_, live) = admin.call(Method::GET, "/web-sessions", None).await;
    assert_eq!(live.as_array().map(Vec::len), Some(1), "{live}");
    let (_, tunnels) = admin.call(Method::GET, "/tunnels", None).await;
    assert_eq!(tunnels.as_array().map(Vec::len), Some(0), "{tunnels}");
    let err = relay.open(&agent.id, &ip, HTTP).await.err();
    assert!(
        err.as_deref().is_some_and(|e| e.contains("audit log")),
        "a stream was carried without its record: {err:?}"
    );
    let page = b.get("/").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.text()
    );
    assert!(page.text().contains("audit log"), "{}", page.text());

    // The store is back: so are sessions, and nothing was written meanwhile.
    db(&relay, "DROP TRIGGER audit_down").await;
    assert_eq!(relay.audit().len(), records);
    // The first request finds the log back (its refusal is recorded); the
    // next is served.
    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    let refused = relay.audit_kind("web.request");
    assert!(
        refused
            .last()
            .is_some_and(|r| r["detail"]["status"] == 503 && r["detail"]["error"].is_string()),
        "{refused:?}"
    );
    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let (s, v) = session(&admin, device).await;
    assert!(s.is_success(), "{s}: {v}");
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
