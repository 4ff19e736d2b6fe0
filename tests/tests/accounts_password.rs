//! Passwords an administrator issues are one-time: `user add` and a reset
//! print a password that opens a log-in able only to choose the user's own
//! (API and portal); two-factor is then the user's to enroll, so nobody
//! else learns either secret. A change needs the current password and ends
//! the user's other log-ins and API tokens.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::{Api, Browser};
use dwa_e2e_tests::Relay;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PORTAL: &str = "https://dwa.localhost:8443";

async fn login_raw(relay: &Relay, user: &str, password: &str) -> (StatusCode, Value) {
    Api::new(relay)
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": user, "password": password})),
        )
        .await
}

async fn change(api: &Api, current: &str, new: &str) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        "/me/password",
        Some(json!({"current_password": current, "new_password": new})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_password_only_chooses_the_users_own() {
    let relay = Relay::start_new();
    let v = relay.ok(&[
        "user",
        "add",
        "tina",
        "--role",
        "technician",
        "--customer",
        "acme",
    ]);
    assert!(v.get("totp_uri").is_none(), "no two-factor secret: {v}");
    assert_eq!(v["password_change_required"], true, "{v}");
    let once = v["password"].as_str().unwrap().to_string();

    // Two log-ins with it; each may only change the password.
    let api = Api::new(&relay).log_in_once("tina", &once).await;
    let other = Api::new(&relay).log_in_once("tina", &once).await;
    for (m, path) in [
        (Method::GET, "/devices"),
        (Method::POST, "/me/totp"),
        (Method::POST, "/tokens"),
    ] {
        let body = (m == Method::POST).then(|| json!({"name": "t"}));
        let (s, e) = api.call(m, path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {e}");
        assert_eq!(e["code"], "password_change_required", "{path}: {e}");
    }
    let (s, me) = api.call(Method::GET, "/me", None).await;
    assert_eq!(
        (s, me["password_change_required"].clone()),
        (StatusCode::OK, json!(true))
    );

    // Wrong current password, weak or unchanged new ones: refused.
    let (s, e) = change(&api, "not-the-password", "a long enough password").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    let (s, e) = change(&api, &once, "short").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("at least 12"), "{e}");
    let (s, _) = change(&api, &once, &once).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let failed = relay.audit_kind("user.password_change_failed");
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed[0]["detail"]["reason"], "wrong current password");
    // The wrong current password counted toward her lockout.
    let admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;
    let (_, users) = admin.call(Method::GET, "/users", None).await;
    let row = users
        .as_array()
        .and_then(|l| l.iter().find(|u| u["username"] == "tina"))
        .unwrap()
        .clone();
    assert_eq!(row["failed_logins"], 1, "{row}");
    assert_eq!(row["password_change_required"], true, "{row}");

    // Her own password: the other log-in ends, the one-time password is
    // gone, and this log-in goes on to enroll two-factor (her role).
    let own = "tina's own passphrase";
    let (s, done) = change(&api, &once, own).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["grants_ended"], 1, "{done}");
    assert_eq!(done["totp_enrollment_required"], true, "{done}");
    let (s, _) = other.call(Method::GET, "/me", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the other log-in ended");
    assert_eq!(
        login_raw(&relay, "tina", &once).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, e) = api.call(Method::GET, "/devices", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(e["code"], "totp_enrollment_required", "{e}");
    let (s, e) = api.call(Method::POST, "/me/totp", None).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    relay.totp.add("tina", e["otpauth_uri"].as_str().unwrap());
    let code = relay.totp.code("tina").await;
    let (s, _) = api
        .call(
            Method::POST,
            "/me/totp/confirm",
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call(Method::GET, "/devices", None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "enrolled: the log-in does what her role does"
    );
    let changed = relay.audit_kind("user.password_changed");
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["actor"], "user:tina");
    assert_eq!(changed[0]["detail"]["was_one_time"], true);

    // A second change ends her API token and other log-ins, not this one.
    let (s, t) = api
        .call(Method::POST, "/tokens", Some(json!({"name": "script"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let token = Api::new(&relay).with_bearer(t["token"].as_str().unwrap());
    assert_eq!(token.call(Method::GET, "/me", None).await.0, StatusCode::OK);
    let (s, done) = change(&api, own, "tina's second passphrase").await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["totp_enrollment_required"], false);
    assert_eq!(
        token.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call(Method::GET, "/devices", None).await.0,
        StatusCode::OK
    );
    // A token cannot change a password.
    let (_, t) = api
        .call(Method::POST, "/tokens", Some(json!({"name": "script 2"})))
        .await;
    let token = Api::new(&relay).with_bearer(t["token"].as_str().unwrap());
    let (s, e) = change(&token, "tina's second passphrase", "a third passphrase").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reset_issues_a_new_one_time_password_and_ends_the_sessions() {
    let relay = Relay::start_new();
    let v = relay
        .add_user(&["vic", "--role", "viewer", "--customer", "acme"])
        .await;
    let own = v["password"].as_str().unwrap().to_string();
    let id = v["id"].as_i64().unwrap();
    let vic = Api::login(&relay, "vic", &own).await;
    assert_eq!(
        vic.call(Method::GET, "/devices", None).await.0,
        StatusCode::OK
    );

    // A viewer may not reset anyone's; an admin may not reset their own.
    let (s, _) = vic
        .call(Method::POST, &format!("/users/{id}/reset-password"), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let admin = Api::login(&relay, "admin", &relay.admin_password.clone()).await;
    let (s, e) = admin
        .call(Method::POST, "/users/1/reset-password", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    let (s, r) = admin
        .call(Method::POST, &format!("/users/{id}/reset-password"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["password_change_required"], true, "{r}");
    let once = r["password"].as_str().unwrap().to_string();
    assert_eq!(
        vic.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_raw(&relay, "vic", &own).await.0,
        StatusCode::UNAUTHORIZED
    );
    let again = Api::new(&relay).log_in_once("vic", &once).await;
    let (s, _) = change(&again, &once, "vic's fresh passphrase").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        again.call(Method::GET, "/devices", None).await.0,
        StatusCode::OK
    );
    let resets: Vec<Value> = relay
        .audit_kind("user.admin")
        .into_iter()
        .filter(|r| r["detail"]["action"] == "user reset-password")
        .collect();
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0]["actor"], "user:admin");

    // The CLI on the relay host does the same.
    let c = relay.ok(&["user", "reset-password", "vic"]);
    let cli_once = c["password"].as_str().unwrap();
    assert_eq!(
        again.call(Method::GET, "/me", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, b) = login_raw(&relay, "vic", cli_once).await;
    assert_eq!(
        (s, b["password_change_required"].clone()),
        (StatusCode::OK, json!(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_sends_a_one_time_password_to_the_password_page() {
    let relay = Relay::start_new();
    let v = relay.ok(&["user", "add", "ted", "--role", "technician"]);
    let once = v["password"].as_str().unwrap().to_string();
    let mut b = Browser::new(&relay);
    b.get(&format!("{PORTAL}/login")).await;
    let page = b
        .post_form("/login", &[("username", "ted"), ("password", &once)])
        .await;
    assert_eq!(page.url.path(), "/account/password", "{}", page.text());
    assert!(page.text().contains("works only once"), "{}", page.text());
    // Anything else leads back here.
    let home = b.get(&format!("{PORTAL}/devices")).await;
    assert_eq!(home.url.path(), "/account/password");
    let csrf = {
        let t = home.text();
        let m = "name=\"_csrf\" value=\"";
        let i = t.find(m).unwrap() + m.len();
        t[i..].split('"').next().unwrap().to_string()
    };
    let form = |new: &'static str, again: &'static str| {
        vec![
            ("_csrf", csrf.clone()),
            ("current_password", once.clone()),
            ("new_password", new.to_string()),
            ("repeat_password", again.to_string()),
        ]
    };
    let differ = form("ted's new passphrase", "something else");
    let pairs: Vec<(&str, &str)> = differ.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = b.post_form("/account/password", &pairs).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.text().contains("differ"), "{}", p.text());
    let good = form("ted's new passphrase", "ted's new passphrase");
    let pairs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = b.post_form("/account/password", &pairs).await;
    // A technician goes on to enroll two-factor.
    assert_eq!(p.url.path(), "/account/two-factor", "{}", p.text());
    let home = b.get(&format!("{PORTAL}/devices")).await;
    assert_eq!(home.url.path(), "/account/two-factor");
    assert_eq!(
        login_raw(&relay, "ted", &once).await.0,
        StatusCode::UNAUTHORIZED,
        "the one-time password is gone"
    );
    assert_eq!(relay.audit_kind("user.password_changed").len(), 1);
}
