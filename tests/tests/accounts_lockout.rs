//! Brute force: five failed log-ins from an address the account logged in
//! from lock it; only the right password then learns so (423), and an
//! admin unlocks it. A stranger elsewhere who knows the name only slows
//! himself down: failures are limited per account and source, and per
//! source address (429). Answers never tell whether a name exists or is
//! locked. Every attempt is audited.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::Relay;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A log-in expected to get past the password: with a fresh code.
async fn attempt(relay: &Relay, user: &str, password: &str) -> (StatusCode, Value) {
    let code = relay.totp.code(user).await;
    let mut body = json!({"username": user, "password": password});
    if let Some(c) = code {
        body["totp"] = c.into();
    }
    Api::new(relay)
        .call(Method::POST, "/login", Some(body))
        .await
}

/// A log-in refused before two-factor is looked at (wrong password, locked,
/// rate-limited): a dummy code, so no real one is spent.
async fn refused(relay: &Relay, user: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({"username": user, "password": password, "totp": "000000"});
    Api::new(relay)
        .call(Method::POST, "/login", Some(body))
        .await
}

/// [`refused`] from another loopback address of the fixture.
async fn refused_from(
    relay: &Relay,
    source: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Value) {
    let body = json!({"username": user, "password": password, "totp": "000000"});
    Api::from_source(relay, source.parse().expect("address"))
        .call(Method::POST, "/login", Some(body))
        .await
}

/// A serving relay with technician `tina` of customer `acme`; her
/// password.
async fn relay_with_tina() -> (Relay, String) {
    let mut relay = Relay::init();
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let tech = relay
        .add_user(&["tina", "--role", "technician", "--customer", "acme"])
        .await;
    let pw = tech["password"].as_str().expect("password").to_string();
    (relay, pw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_lock_the_account_until_an_admin_unlocks_it() {
    let (relay, pw) = relay_with_tina().await;
    // She logs in once: from then on this address's failures are hers.
    assert_eq!(attempt(&relay, "tina", &pw).await.0, StatusCode::OK);

    // The fifth locks the account, and says nothing: the same answer as
    // the four before and as for a name that does not exist.
    let (_, ghost) = refused(&relay, "nobody-by-this-name", "wrong").await;
    for i in 1..=5 {
        let (s, v) = refused(&relay, "tina", "wrong").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "failure {i}: {v}");
        assert_eq!(v, ghost, "failure {i}");
    }
    // The right password (before any code is looked at) learns it.
    let (s, v) = refused(&relay, "tina", &pw).await;
    assert_eq!(s, StatusCode::LOCKED, "{v}");
    assert_eq!(
        v,
        json!({"error": "account locked after 5 failed log-ins; an administrator must unlock it", "code": 423})
    );

    // A technician cannot unlock; the admin can (API), then she logs in.
    let admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;
    let (_, users) = admin.call(Method::GET, "/users", None).await;
    let tina = users
        .as_array()
        .and_then(|l| l.iter().find(|u| u["username"] == "tina"))
        .expect("tina listed")
        .clone();
    assert_eq!(tina["locked"], true);
    assert_eq!(tina["failed_logins"], 5);
    let id = tina["id"].as_i64().expect("id");
    let (s, v) = admin
        .call(Method::POST, &format!("/users/{id}/unlock"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["locked"], false);
    let tina_api = Api::login(&relay, "tina", &pw).await;
    let (s, _) = tina_api
        .call(Method::POST, &format!("/users/{id}/unlock"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The CLI unlocks too.
    for _ in 0..5 {
        assert_eq!(
            refused(&relay, "tina", "wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(refused(&relay, "tina", &pw).await.0, StatusCode::LOCKED);
    relay.ok(&["user", "unlock", "tina"]);
    assert_eq!(attempt(&relay, "tina", &pw).await.0, StatusCode::OK);

    // Audited: each failure with its reason, the lock, the unlocks.
    let failed = relay.audit_kind("user.login_failed");
    assert!(failed
        .iter()
        .any(|r| r["detail"]["reason"] == "wrong user name or password"));
    assert!(failed
        .iter()
        .any(|r| r["detail"]["reason"] == "account locked"));
    assert_eq!(relay.audit_kind("user.locked").len(), 2);
    assert!(relay
        .audit_kind("user.admin")
        .iter()
        .any(|r| r["detail"]["action"] == "user unlock" && r["actor"] == "user:admin"));
    assert!(relay.audit_kind("user.login").len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_limited_per_account_and_per_address() {
    let mut relay = Relay::init_with(|c| {
        *c = c
            .replace(
                "failures_per_account_per_minute = 10",
                "failures_per_account_per_minute = 2",
            )
            .replace(
                "failures_per_address_per_minute = 20",
                "failures_per_address_per_minute = 4",
            );
        assert!(c.contains("failures_per_address_per_minute = 4"), "{c}");
    });
    relay.start();
    // Per account: the third failure for "admin" inside a minute.
    for _ in 0..2 {
        assert_eq!(
            refused(&relay, "admin", "wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let api = Api::new(&relay);
    let r = api
        .client
        .post(format!("{}/login", api.base))
        .json(&json!({"username": "admin", "password": "wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    // Refused while limited, even with the right password.
    let (s, v) = refused(&relay, "admin", &relay.admin_password.clone()).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");

    // Per address: other names from the same address hit the address limit.
    assert_eq!(
        refused(&relay, "nobody1", "x").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = refused(&relay, "nobody2", "x").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("address")),
        "{v}"
    );

    let limited = relay.audit_kind("user.login_rate_limited");
    let which: Vec<_> = limited
        .iter()
        .map(|r| r["detail"]["limit"].clone())
        .collect();
    assert!(
        which.contains(&json!("account")) && which.contains(&json!("address")),
        "{which:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_who_knows_the_name_cannot_lock_its_owner_out() {
    let (relay, pw) = relay_with_tina().await;
    assert_eq!(attempt(&relay, "tina", &pw).await.0, StatusCode::OK);

    // Twelve wrong passwords for tina from another address: the stranger
    // is slowed down (429 after ten a minute), the account is not locked,
    // and the answers are those a missing name gets.
    let stranger = relay.ip(77);
    let mut statuses = vec![];
    for _ in 0..12 {
        let (real, rv) = refused_from(&relay, &stranger, "tina", "wrong").await;
        let (ghost, gv) = refused_from(&relay, &stranger, "tina-not-here", "wrong").await;
        assert_eq!(real, ghost);
        assert_eq!(rv["code"], gv["code"]);
        statuses.push(real);
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");

    // Tina, from her own address, logs in.
    assert_eq!(attempt(&relay, "tina", &pw).await.0, StatusCode::OK);
    assert!(relay.audit_kind("user.locked").is_empty());
}
