//! Log-in sessions: CSRF header on cookie writes (Bearer exempt), the
//! idle timeout, security headers on the portal host, logout.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::Relay;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_headers_and_idle_timeout() {
    let relay = Relay::start_new();
    let mut admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;
    let token = admin.csrf.clone().expect("csrf token from log-in");
    assert_eq!(token.len(), 64);

    // Cookie write without the header: 403; with it: fine.
    admin.csrf = None;
    let (s, v) = admin
        .call(Method::POST, "/customers", Some(json!({"name": "beta"})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("X-CSRF-Token")),
        "{v}"
    );
    admin.csrf = Some("0".repeat(64));
    let (s, _) = admin
        .call(Method::POST, "/customers", Some(json!({"name": "beta"})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    admin.csrf = Some(token.clone());
    let (s, v) = admin
        .call(Method::POST, "/customers", Some(json!({"name": "beta"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Enrollment tokens through the API (the CLI's token creation).
    let (s, t) = admin
        .call(
            Method::POST,
            "/enrollment-tokens",
            Some(json!({"customer_id": v["id"], "uses": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    assert!(t["token"].as_str().is_some_and(|t| t.len() > 20), "{t}");
    let (_, list) = admin.call(Method::GET, "/enrollment-tokens", None).await;
    let l = list.as_array().expect("token list");
    assert_eq!(l.len(), 1, "{list}");
    assert_eq!(l[0]["customer"], "beta");
    assert_eq!(l[0]["usable"], true);
    assert!(l[0].get("token").is_none());
    // Deactivating a user ends their log-in; reactivating lets them back.
    let (s, u) = admin
        .call(
            Method::POST,
            "/users",
            Some(json!({"username": "vic", "role": "viewer", "customers": [v["id"]]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let vic = Api::login(&relay, "vic", u["password"].as_str().expect("password")).await;
    let path = format!("/users/{}", u["id"]);
    let (s, _) = admin
        .call(Method::PATCH, &path, Some(json!({"active": false})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        vic.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, v) = Api::new(&relay)
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "vic", "password": u["password"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("deactivated")),
        "{v}"
    );
    let (s, back) = admin
        .call(Method::PATCH, &path, Some(json!({"active": true})))
        .await;
    assert_eq!((s, back["active"].clone()), (StatusCode::OK, json!(true)));
    Api::login(&relay, "vic", u["password"].as_str().expect("password")).await;

    // Reads need none.
    admin.csrf = None;
    let (s, _) = admin.call(Method::GET, "/customers", None).await;
    assert_eq!(s, StatusCode::OK);
    admin.csrf = Some(token);

    // A Bearer token needs none.
    let (s, t) = admin
        .call(Method::POST, "/tokens", Some(json!({"name": "script"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let bearer = Api::new(&relay);
    let r = bearer
        .client
        .post(format!("{}/customers", bearer.base))
        .bearer_auth(t["token"].as_str().expect("token"))
        .json(&json!({"name": "gamma"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);

    // Security headers on the portal host.
    let r = admin
        .client
        .get(format!("{}/me", admin.base))
        .send()
        .await
        .expect("me");
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap_or("");
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert!(h.contains_key("strict-transport-security"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["csrf_token"].is_string());

    // Idle timeout: the session last seen an hour ago (default idle 30 min)
    // is over.
    let db = relay.data.join("dwa.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("db");
    sqlx::query(
        "UPDATE grants SET last_seen = last_seen - 3600 WHERE kind = 'login' AND ended_at IS NULL",
    )
    .execute(&mut c)
    .await
    .expect("update");
    c.close().await.expect("close");
    let (s, v) = admin.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("timed out")),
        "{v}"
    );
    let (s, _) = admin.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Logout ends the cookie.
    let admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;
    let (s, _) = admin.call(Method::POST, "/logout", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = admin.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
