//! Single sign-on end to end: a real OpenID Connect provider (npm
//! oidc-provider, tests/oidc/provider.js) on loopback, the real relay
//! configured with it, and a browser-like client that walks the whole
//! authorization-code + PKCE flow with plain HTTP requests and form posts.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dwa_e2e_tests::browser::{Browser, Page};
use dwa_e2e_tests::*;
use reqwest::StatusCode;
use serde_json::Value;

const CLIENT_ID: &str = "dwa-relay";
const CLIENT_SECRET: &str = "sso-test-secret-0123456789abcdef";

fn portal() -> String {
    format!("https://dwa.localhost:{HTTPS_PORT}")
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Why the provider cannot run here, if it cannot.
fn missing_provider() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node {
        return Some("`node` is not installed".into());
    }
    if !oidc_dir().join("node_modules/oidc-provider").is_dir() {
        return Some(
            "tests/oidc/node_modules is missing (scripts/test.sh runs `npm ci` there)".into(),
        );
    }
    None
}

/// `node provider.js` on a loopback address; killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(host: &str) -> Provider {
        let mut child = Command::new("node")
            .arg("provider.js")
            .current_dir(oidc_dir())
            .env("OIDC_HOST", host)
            .env("OIDC_PORT", "0")
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "OIDC_REDIRECT_URI",
                format!("{}/auth/oidc/callback", portal()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node provider.js");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.strip_prefix("READY ") {
                    let _ = tx.send(i.trim().to_string());
                }
            }
        });
        let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(i) => i,
            Err(_) => {
                let _ = child.kill();
                panic!("the OIDC provider did not start");
            }
        };
        Provider { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_section(issuer: &str, map: &str) -> String {
    format!(
        "\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         scopes = [\"openid\", \"profile\", \"email\", \"groups\"]\ngroups_claim = \"groups\"\n{map}"
    )
}

const MAP: &str = "[[oidc.map]]\ngroup = \"dwa-techs\"\nrole = \"technician\"\ncustomers = [\"acme\"]\n\
                   [[oidc.map]]\ngroup = \"dwa-viewers\"\nrole = \"viewer\"\ncustomers = [\"beta\"]\n\
                   [[oidc.map]]\ngroup = \"dwa-techs-beta\"\nrole = \"technician\"\ncustomers = [\"beta\"]\n";

/// Starts a log-in at the relay: ends on the provider's log-in page.
async fn start_login(b: &mut Browser, issuer: &str) -> Page {
    let page = b.get(&format!("{}/auth/oidc/login", portal())).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(
        page.url.as_str().starts_with(issuer),
        "not at the provider: {} {:?}",
        page.url,
        b.visited
    );
    assert!(page.text().contains("name=\"login\""), "{}", page.text());
    page
}

/// The whole flow for `user`: relay → provider log-in form → callback.
async fn sso(b: &mut Browser, issuer: &str, user: &str) -> Page {
    let page = start_login(b, issuer).await;
    let form = page.url.to_string();
    b.post_form(
        &form,
        &[("prompt", "login"), ("login", user), ("password", "any")],
    )
    .await
}

fn body(page: &Page) -> Value {
    serde_json::from_slice(&page.body).unwrap_or(Value::Null)
}

fn add_customer(relay: &Relay, name: &str) -> i64 {
    let v = relay.ok(&["customer", "add", name]);
    v["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("customer add: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_login_maps_groups_and_refuses_the_rest() {
    if let Some(why) = missing_provider() {
        eprintln!("SKIPPED sso_login_maps_groups_and_refuses_the_rest: {why}");
        return;
    }
    let provider = Provider::start(&format!("{}.2", subnet()));
    let issuer = provider.issuer.clone();
    let mut relay = Relay::init_with(|cfg| cfg.push_str(&oidc_section(&issuer, MAP)));
    relay.start();
    let acme = add_customer(&relay, "acme");
    let beta = add_customer(&relay, "beta");

    // alice is in dwa-techs: technician for acme.
    let mut alice = Browser::new(&relay);
    let done = sso(&mut alice, &issuer, "alice").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(
        done.url.path() == "/auth/oidc/callback",
        "{:?}",
        alice.visited
    );
    let v = body(&done);
    assert_eq!(v["role"], "technician", "{v}");
    assert_eq!(v["next"], "/");
    assert!(alice.cookies_for(&portal()).contains("__Host-dwa_session="));
    let me = alice.get(&format!("{}/api/v1/me", portal())).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let me = body(&me);
    assert_eq!(me["user"], "alice");
    assert_eq!(me["role"], "technician");
    assert_eq!(me["customers"], serde_json::json!([acme]));

    // The callback, replayed: its state was used up.
    let callback = alice
        .visited
        .iter()
        .find(|u| u.path() == "/auth/oidc/callback")
        .expect("visited the callback")
        .to_string();
    let replay = alice.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.text());
    assert_eq!(body(&replay)["code"], "invalid_state");

    // A forged state, in a browser that has a log-in of its own pending.
    let mut mallory = Browser::new(&relay);
    start_login(&mut mallory, &issuer).await;
    let forged = mallory
        .get(&format!(
            "{}/auth/oidc/callback?state=forged&code=whatever",
            portal()
        ))
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.text());
    // A browser asking for HTML gets a page, not JSON.
    let page = mallory
        .client
        .get(format!(
            "{}/auth/oidc/callback?state=<b>forged</b>&code=x",
            portal()
        ))
        .header(reqwest::header::ACCEPT, "text/html")
        .send()
        .await
        .expect("callback");
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let html = page.text().await.unwrap_or_default();
    assert!(html.contains("<h1>Log-in failed</h1>"), "{html}");

    // A real state started in another browser (log-in CSRF): refused, and
    // the state is gone for its own browser too.
    let mut victim = Browser::new(&relay);
    let page = start_login(&mut victim, &issuer).await;
    let to_idp = victim
        .visited
        .iter()
        .find(|u| u.as_str().starts_with(&format!("{issuer}/auth?")))
        .expect("authorization request")
        .clone();
    let state = to_idp
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.to_string())
        .expect("state");
    let q: Vec<(String, String)> = to_idp.query_pairs().into_owned().collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("code_challenge_method"), Some("S256"));
    assert!(get("nonce").is_some_and(|n| n.len() >= 16));
    assert_eq!(get("response_type"), Some("code"));
    let stolen = mallory
        .get(&format!(
            "{}/auth/oidc/callback?state={state}&code=whatever",
            portal()
        ))
        .await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.text());
    assert!(
        stolen.text().contains("another browser"),
        "{}",
        stolen.text()
    );
    let _ = page;

    // bob is only in "nobody": refused, no session.
    let mut bob = Browser::new(&relay);
    let refused = sso(&mut bob, &issuer, "bob").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert_eq!(body(&refused)["code"], "no_role");
    assert!(!bob.cookies_for(&portal()).contains("__Host-dwa_session="));
    let me = bob.get(&format!("{}/api/v1/me", portal())).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);

    // carol: viewer (dwa-viewers) and technician (dwa-techs-beta) → the
    // more privileged role; customers are the union.
    let mut carol = Browser::new(&relay);
    let ok = sso(&mut carol, &issuer, "carol").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let me = body(&carol.get(&format!("{}/api/v1/me", portal())).await);
    assert_eq!(me["role"], "technician", "{me}");
    assert_eq!(me["customers"], serde_json::json!([beta]));

    // A directory user has no password: password log-in is refused.
    let pw = alice
        .client
        .post(format!("{}/api/v1/login", portal()))
        .json(&serde_json::json!({"username": "alice", "password": "!oidc"}))
        .send()
        .await
        .expect("login request");
    assert_eq!(pw.status(), StatusCode::UNAUTHORIZED);

    // Audit: the log-in with issuer, subject, groups and role; the refusals.
    let logins = relay.audit_kind("sso.login");
    let a = logins
        .iter()
        .find(|r| r["detail"]["subject"] == "alice")
        .expect("alice's sso.login");
    assert_eq!(a["actor"], "user:alice");
    assert_eq!(a["detail"]["issuer"], issuer.as_str());
    assert_eq!(a["detail"]["role"], "technician");
    assert_eq!(
        a["detail"]["groups"],
        serde_json::json!(["dwa-techs", "staff"])
    );
    let refused = relay.audit_kind("sso.refused");
    let b = refused
        .iter()
        .find(|r| r["detail"]["subject"] == "bob")
        .expect("bob's sso.refused");
    assert_eq!(b["detail"]["groups"], serde_json::json!(["nobody"]));
    assert_eq!(b["detail"]["issuer"], issuer.as_str());
    // Refusals without an identity (replayed, forged, stolen callbacks)
    // come from anyone at any rate: the first of the minute from one
    // address is written, the rest counted (`audit.refusals_counted`, on
    // stop at the latest); bob's, with his identity, is written.
    let anonymous: Vec<_> = refused
        .iter()
        .filter(|r| r["detail"]["subject"].is_null())
        .collect();
    assert_eq!(anonymous.len(), 1, "{refused:?}");
    assert!(
        anonymous[0]["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("state")),
        "the replay comes first: {refused:?}"
    );

    // Groups are read at every log-in: a new mapping after a restart
    // changes alice's role and customers, on the same account.
    relay.stop();
    let counted = relay.audit_kind("audit.refusals_counted");
    assert!(
        counted
            .iter()
            .any(|r| r["detail"]["refused"] == "sso.refused"
                && r["detail"]["count"].as_u64() >= Some(2)),
        "the forged and stolen callbacks, counted at stop: {counted:?}"
    );
    let cfg_path = relay.data.join("relay.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("relay.toml");
    let cfg = cfg.replace(
        "group = \"dwa-techs\"\nrole = \"technician\"\ncustomers = [\"acme\"]",
        "group = \"dwa-techs\"\nrole = \"viewer\"\ncustomers = [\"acme\", \"beta\"]",
    );
    std::fs::write(&cfg_path, cfg).expect("write relay.toml");
    relay.start();
    let mut again = Browser::new(&relay);
    let ok = sso(&mut again, &issuer, "alice").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let me = body(&again.get(&format!("{}/api/v1/me", portal())).await);
    assert_eq!(me["user"], "alice");
    assert_eq!(me["role"], "viewer", "{me}");
    assert_eq!(me["customers"], serde_json::json!([acme, beta]));
    drop(provider);
}
