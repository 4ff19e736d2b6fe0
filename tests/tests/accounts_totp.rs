//! Two-factor: enrollment through the API (otpauth URI and QR SVG),
//! log-in needs the code, a code is good once, recovery codes are good
//! once, and a user whose role requires two-factor but has none gets a
//! log-in that may only enroll it.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::Relay;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn login_raw(relay: &Relay, body: Value) -> (StatusCode, Value) {
    Api::new(relay)
        .call(Method::POST, "/login", Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_needs_a_fresh_code() {
    let relay = Relay::start_new();
    let pw = relay.admin_password.clone();
    assert!(
        relay.totp.uri("admin").is_some(),
        "init prints the admin's otpauth URI"
    );

    let (s, v) = login_raw(&relay, json!({"username": "admin", "password": pw})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "totp_required", "{v}");
    let (s, v) = login_raw(
        &relay,
        json!({"username": "admin", "password": pw, "totp": "000000"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(matches!(v["code"].as_str(), Some("totp_invalid")), "{v}");

    let code = relay.totp.code("admin").await.expect("admin code");
    let admin = Api::new(&relay)
        .log_in_with("admin", &pw, Some(&code))
        .await;
    // The same code a second time: refused.
    let (s, v) = login_raw(
        &relay,
        json!({"username": "admin", "password": pw, "totp": code}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "totp_reused", "{v}");
    let (s, me) = admin.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["csrf_token"].as_str(), admin.csrf.as_deref());

    let ok = relay.audit_kind("user.login");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["detail"]["two_factor"], true);
    let failed = relay.audit_kind("user.login_failed");
    let reasons: Vec<_> = failed
        .iter()
        .map(|r| r["detail"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![
            json!("two-factor code required"),
            json!("wrong two-factor code"),
            json!("two-factor code already used")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_two_factor_may_only_enroll() {
    let relay = Relay::start_new();
    let admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;

    // A new user gets a one-time password and no two-factor secret: the
    // user enrolls their own.
    let (s, ada) = admin
        .call(
            Method::POST,
            "/users",
            Some(json!({"username": "ada", "role": "admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ada}");
    assert!(ada.get("totp_uri").is_none(), "{ada}");
    assert_eq!(ada["password_change_required"], true, "{ada}");
    let (s, vic) = admin
        .call(
            Method::POST,
            "/users",
            Some(json!({"username": "vic", "role": "viewer", "customers": [1]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vic}");
    // A viewer's role does not require two-factor: after the password
    // change nothing is restricted.
    let vic_api = Api::new(&relay)
        .log_in_once("vic", vic["password"].as_str().expect("password"))
        .await;
    let (s, v) = vic_api
        .call(
            Method::POST,
            "/me/password",
            Some(json!({"current_password": vic["password"], "new_password": "vic's own passphrase"})),
        )
        .await;
    assert_eq!(
        (s, v["totp_enrollment_required"].clone()),
        (StatusCode::OK, json!(false)),
        "{v}"
    );
    assert_eq!(
        vic_api.call(Method::GET, "/devices", None).await.0,
        StatusCode::OK
    );

    // Ada replaces her one-time password; an admin must enroll two-factor.
    let once = ada["password"].as_str().expect("password").to_string();
    let pw = "ada's own passphrase".to_string();
    let first = Api::new(&relay).log_in_once("ada", &once).await;
    let (s, v) = first
        .call(
            Method::POST,
            "/me/password",
            Some(json!({"current_password": once, "new_password": pw})),
        )
        .await;
    assert_eq!(
        (s, v["totp_enrollment_required"].clone()),
        (StatusCode::OK, json!(true)),
        "{v}"
    );

    // The admin's reset of two-factor she has not enrolled yet changes
    // nothing but ends her sessions.
    let id = ada["id"].as_i64().expect("id");
    let (s, v) = admin
        .call(Method::POST, &format!("/users/{id}/reset-totp"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totp"], false);
    assert_eq!(
        first.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Her log-in with the password alone is restricted to enrollment.
    let mut ada_api = Api::new(&relay);
    let (s, v) = ada_api
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "ada", "password": pw})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["totp_enrollment_required"], true);
    ada_api.csrf = v["csrf_token"].as_str().map(str::to_string);
    for path in ["/users", "/devices", "/customers"] {
        let (s, v) = ada_api.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("two-factor authentication is required")),
            "{v}"
        );
    }
    let (s, _) = ada_api.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::OK);

    // Enrollment: URI and QR code, then a code confirms it.
    let (s, e) = ada_api.call(Method::POST, "/me/totp", None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let uri = e["otpauth_uri"].as_str().expect("uri").to_string();
    assert!(uri.starts_with("otpauth://totp/DWA:ada"), "{uri}");
    assert!(uri.contains("issuer=DWA"), "{uri}");
    let svg = e["qr_svg"].as_str().expect("svg");
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    let (s, v) = ada_api
        .call(
            Method::POST,
            "/me/totp/confirm",
            Some(json!({"code": "123"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    relay.totp.add("ada", &uri);
    let code = relay.totp.code("ada").await.expect("code");
    let (s, v) = ada_api
        .call(
            Method::POST,
            "/me/totp/confirm",
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let recovery: Vec<String> = v["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    assert_eq!(recovery.len(), 10);
    // The same log-in now does everything an admin does.
    let (s, v) = ada_api.call(Method::GET, "/users", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Next log-in: the code is required; a recovery code works once.
    let (s, v) = login_raw(&relay, json!({"username": "ada", "password": pw})).await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("totp_required"))
    );
    let (s, v) = login_raw(
        &relay,
        json!({"username": "ada", "password": pw, "totp": recovery[0]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = login_raw(
        &relay,
        json!({"username": "ada", "password": pw, "totp": recovery[0]}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "totp_invalid");
    Api::login(&relay, "ada", &pw).await;

    let kinds: Vec<_> = relay
        .audit_kind("user.admin")
        .iter()
        .map(|r| r["detail"]["action"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!("user create"),
            json!("user create"),
            json!("user reset-totp")
        ]
    );
    assert!(relay
        .audit_kind("user.totp")
        .iter()
        .any(|r| r["detail"]["event"] == "recovery code used"));
}
