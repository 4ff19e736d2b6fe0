//! Every portal page × every kind of caller, over HTTP against the real
//! relay: allowed (200), refused (403) or sent to the log-in page; CSRF
//! refusal of a form post without its token; the security headers.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::browser::{Browser, Page};
use dwa_e2e_tests::*;
use reqwest::StatusCode;
use serde_json::Value;

const PORTAL: &str = "https://dwa.localhost:8443";

/// The `_csrf` value of the first form on the page.
fn csrf_of(page: &Page) -> String {
    let text = page.text();
    let marker = "name=\"_csrf\" value=\"";
    let start = text.find(marker).expect("a form with _csrf") + marker.len();
    text[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn logged_in(relay: &Relay, user: &str, password: &str) -> Browser {
    let mut b = Browser::new(relay);
    let form = b.get(&format!("{PORTAL}/login")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text().contains("name=\"totp\""), "two-factor field");
    // Admins and technicians need their two-factor code (the test relay
    // knows the secrets `init` and `user add` printed).
    let code = relay.totp.code(user).await.unwrap_or_default();
    let home = b
        .post_form(
            "/login",
            &[("username", user), ("password", password), ("totp", &code)],
        )
        .await;
    assert_eq!(
        home.status,
        StatusCode::OK,
        "log in as {user}: {}",
        home.text()
    );
    assert_eq!(home.url.path(), "/", "{user} lands on the home page");
    b
}

async fn add_user(relay: &Relay, name: &str, role: &str, customer: Option<&str>) -> String {
    let mut args = vec![name, "--role", role];
    if let Some(c) = customer {
        args.extend(["--customer", c]);
    }
    relay.add_user(&args).await["password"]
        .as_str()
        .expect("password")
        .to_string()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Ok,
    Forbidden,
    Login,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_checks_the_caller_on_the_server() {
    let relay = Relay::start_new();
    relay.ok(&["customer", "add", "other"]);
    let acme: i64 = 1;
    let mut agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&format!("{}/32", relay.ip(10))],
            ports: &[80],
            transport: "ssh",
        },
    );
    let device = relay.add_device(&agent, &relay.ip(10));
    // Running, for the device page's ping and tunnel.
    agent.start();
    relay.wait_connected(&agent);

    let mut browsers: Vec<(&str, Option<Browser>)> = vec![];
    browsers.push((
        "admin",
        Some(logged_in(&relay, "admin", &relay.admin_password).await),
    ));
    let mut tech_pw = String::new();
    for (name, role, customer) in [
        ("tech", "technician", Some("acme")),
        ("view", "viewer", Some("acme")),
        ("cust", "customer", Some("acme")),
        ("othercust", "customer", Some("other")),
    ] {
        let pw = add_user(&relay, name, role, customer).await;
        if name == "tech" {
            tech_pw = pw.clone();
        }
        browsers.push((name, Some(logged_in(&relay, name, &pw).await)));
    }
    browsers.push(("anonymous", None));

    use Want::*;
    // (path, admin, technician, viewer, customer, other customer's user)
    let own = [Ok, Ok, Ok, Ok, Forbidden];
    let everyone = [Ok, Ok, Ok, Ok, Ok];
    let admin_only = [Ok, Forbidden, Forbidden, Forbidden, Forbidden];
    let pages: Vec<(String, [Want; 5])> = vec![
        ("/".into(), everyone),
        ("/devices".into(), everyone),
        ("/devices?q=127&status=unknown".into(), everyone),
        (format!("/devices/{device}"), own),
        (format!("/customers/{acme}"), own),
        (format!("/agents/{}", agent.id), own),
        ("/audit".into(), everyone),
        ("/account/password".into(), everyone),
        ("/audit?kind=user.&user=admin".into(), everyone),
        ("/audit/download?format=csv".into(), everyone),
        ("/audit/download?format=jsonl".into(), everyone),
        ("/admin/users".into(), admin_only),
        ("/admin/roles".into(), admin_only),
        ("/admin/customers".into(), admin_only),
        ("/admin/tokens".into(), admin_only),
        ("/admin/alert-rules".into(), admin_only),
        (format!("/admin/alert-rules?customer={acme}"), admin_only),
    ];
    let mut checked = 0;
    for (path, wants) in &pages {
        for (i, (who, b)) in browsers.iter_mut().enumerate() {
            let want = if i < 5 { wants[i] } else { Login };
            let page = match b {
                Some(b) => b.get(&format!("{PORTAL}{path}")).await,
                None => Browser::new(&relay).get(&format!("{PORTAL}{path}")).await,
            };
            match want {
                Ok => assert_eq!(
                    page.status,
                    StatusCode::OK,
                    "{who} GET {path}: {}",
                    page.text()
                ),
                Forbidden => assert_eq!(page.status, StatusCode::FORBIDDEN, "{who} GET {path}"),
                Login => {
                    assert_eq!(page.url.path(), "/login", "{who} GET {path} → log-in page");
                    assert_eq!(page.status, StatusCode::OK);
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, pages.len() * 6);

    // A device page for a user of another customer says why, not what.
    let other = browsers[4].1.as_mut().expect("othercust");
    let refused = other.get(&format!("{PORTAL}/devices/{device}")).await;
    assert!(
        refused.text().contains("not assigned to customer"),
        "{}",
        refused.text()
    );
    assert!(
        !refused.text().contains(&relay.ip(10)),
        "no device detail leaks"
    );

    // Security headers on every portal page.
    let admin = browsers[0].1.as_mut().expect("admin");
    let p = admin.get(&format!("{PORTAL}/devices")).await;
    let h = |n: &str| {
        p.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        h("content-security-policy"),
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    );
    assert!(h("strict-transport-security").starts_with("max-age="));
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("referrer-policy"), "same-origin");
    assert!(
        p.text().contains("<a class=\"skip\" href=\"#main\">"),
        "skip link"
    );

    // CSRF: the same form post without, with a wrong, and with the token.
    let page = admin.get(&format!("{PORTAL}/admin/customers")).await;
    let token = csrf_of(&page);
    assert_eq!(token.len(), 64, "hex SHA-256");
    let no = admin
        .post_form("/admin/customers", &[("name", "forged")])
        .await;
    assert_eq!(no.status, StatusCode::FORBIDDEN, "{}", no.text());
    let wrong = admin
        .post_form(
            "/admin/customers",
            &[("name", "forged"), ("_csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let ok = admin
        .post_form("/admin/customers", &[("name", "globex"), ("_csrf", &token)])
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    let list = admin.get(&format!("{PORTAL}/admin/customers")).await;
    assert!(list.text().contains("globex"));
    assert!(
        !list.text().contains("forged"),
        "refused posts changed nothing"
    );
    // The portal's admin forms go through the accounts service as the API
    // does: one validation, one audit record of the same kind.
    let tokens = admin.get(&format!("{PORTAL}/admin/tokens")).await;
    let t = csrf_of(&tokens);
    // "Customer globex added (id N)."
    let said = ok.text();
    let globex: String = said
        .split("globex added (id ")
        .nth(1)
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .expect("the page names the new customer's id");
    let too_many = admin
        .post_form(
            "/admin/tokens",
            &[
                ("customer", &globex),
                ("uses", "9"),
                ("ttl", "1h"),
                ("_csrf", &t),
            ],
        )
        .await;
    assert_eq!(
        too_many.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_many.text()
    );
    let made = admin
        .post_form(
            "/admin/tokens",
            &[
                ("customer", &globex),
                ("uses", "2"),
                ("ttl", "1h"),
                ("_csrf", &t),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text());
    let actions: Vec<Value> = relay
        .audit_kind("user.admin")
        .into_iter()
        .filter(|r| r["actor"] == "user:admin")
        .map(|r| r["detail"].clone())
        .collect();
    assert!(
        actions
            .iter()
            .any(|d| d["action"] == "customer create" && d["customer"] == "globex"),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|d| d["action"] == "enrollment token create"
                && d["uses"] == 2
                && d["customer_id"].as_i64().map(|i| i.to_string()) == Some(globex.clone())),
        "{actions:?}"
    );
    assert!(
        relay
            .audit_kind("admin.command")
            .iter()
            .all(|r| r["detail"]["via"].is_null()),
        "the portal writes no admin.command records of its own"
    );

    // State-changing posts check the role too, token or not.
    let tech = browsers[1].1.as_mut().expect("tech");
    let home = tech.get(&format!("{PORTAL}/")).await;
    let t = csrf_of(&home);
    let denied = tech
        .post_form("/admin/customers", &[("name", "x"), ("_csrf", &t)])
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let view = browsers[2].1.as_mut().expect("viewer");
    let home = view.get(&format!("{PORTAL}/")).await;
    let t = csrf_of(&home);
    let denied = view
        .post_form(
            &format!("/devices/{device}/web"),
            &[("port", "80"), ("_csrf", &t)],
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    let mut anon = Browser::new(&relay);
    anon.get(&format!("{PORTAL}/login")).await;
    let p = anon.post_form("/admin/customers", &[("name", "x")]).await;
    assert_eq!(
        p.url.path(),
        "/login",
        "anonymous posts go to the log-in page"
    );

    // The audit API is scoped: the other customer's user sees neither the
    // acme agent's enrollment nor other users' log-ins.
    let other = browsers[4].1.as_mut().expect("othercust");
    let mine = other.get(&format!("{PORTAL}/api/v1/audit")).await;
    assert_eq!(mine.status, StatusCode::OK);
    let records: Vec<Value> = serde_json::from_slice(&mine.body).expect("json");
    assert!(!records.is_empty(), "their own log-in");
    assert!(
        records.iter().all(|r| r["actor"] == "user:othercust"),
        "{records:?}"
    );
    let cust = browsers[3].1.as_mut().expect("cust");
    let theirs = cust
        .get(&format!("{PORTAL}/api/v1/audit?kind=enroll.ok"))
        .await;
    let records: Vec<Value> = serde_json::from_slice(&theirs.body).expect("json");
    assert_eq!(
        records.len(),
        1,
        "their customer's agent enrolled: {records:?}"
    );
    let admin = browsers[0].1.as_mut().expect("admin");
    let all = admin
        .get(&format!("{PORTAL}/api/v1/audit?kind=user.login"))
        .await;
    let records: Vec<Value> = serde_json::from_slice(&all.body).expect("json");
    // The admin's, and each user's two: the first (the one-time password
    // replaced) and the portal's.
    assert_eq!(records.len(), 9, "every log-in: {records:?}");
    let csv = admin
        .get(&format!(
            "{PORTAL}/audit/download?format=csv&kind=user.login"
        ))
        .await;
    assert!(csv.text().starts_with("id,ts,kind,actor"), "{}", csv.text());
    assert_eq!(csv.text().lines().count(), 10);

    // The device page's support actions run the same services as the API:
    // a ping through the agent (its policy allows this address) ...
    let dev = admin.get(&format!("{PORTAL}/devices/{device}")).await;
    let t = csrf_of(&dev);
    let ping = admin
        .post_form(
            &format!("/devices/{device}/diagnostics"),
            &[("kind", "ping"), ("_csrf", &t)],
        )
        .await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
    let text = ping.text();
    assert!(text.contains("Diagnostic: ping"), "{text}");
    assert!(text.contains("rtt_avg_ms"), "{text}");
    assert!(!text.contains("<dt>Error</dt>"), "{text}");
    let runs = relay.audit_kind("diag.run");
    assert_eq!(runs.len(), 1, "the portal's ping is audited: {runs:?}");
    // ... and a TCP tunnel bound to this browser's address.
    let tunnel = admin
        .post_form(
            &format!("/devices/{device}/tunnel"),
            &[("port", "80"), ("_csrf", &t)],
        )
        .await;
    assert_eq!(tunnel.status, StatusCode::CREATED, "{}", tunnel.text());
    assert!(tunnel.text().contains("Connect to"), "{}", tunnel.text());
    assert_eq!(relay.audit_kind("tunnel.open").len(), 1);
    // Any probe kind from the device page's form (nothing listens on the
    // device's port 80: closed).
    let probe = admin
        .post_form(
            &format!("/devices/{device}/diagnostics"),
            &[("kind", "tcp"), ("port", "80"), ("_csrf", &t)],
        )
        .await;
    assert_eq!(probe.status, StatusCode::OK, "{}", probe.text());
    assert!(probe.text().contains("Diagnostic: tcp"), "{}", probe.text());
    assert!(probe.text().contains("closed"), "{}", probe.text());
    assert_eq!(relay.audit_kind("diag.run").len(), 2);
    // Without the form's token neither runs.
    let forged = admin
        .post_form(
            &format!("/devices/{device}/diagnostics"),
            &[("kind", "ping")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(relay.audit_kind("diag.run").len(), 2);

    // Two-factor enrollment in the portal: after an admin resets the
    // technician's two-factor, a password log-in may only enroll it.
    let users = admin.get(&format!("{PORTAL}/admin/users")).await;
    let tech_row = users
        .text()
        .split("<tr>")
        .find(|r| r.contains("<td>tech</td>"))
        .expect("tech's row")
        .to_string();
    let reset_path = tech_row
        .split("action=\"")
        .filter_map(|s| s.split('"').next())
        .find(|a| a.ends_with("/reset-totp"))
        .expect("tech's reset button")
        .to_string();
    let t = csrf_of(&users);
    let reset = admin.post_form(&reset_path, &[("_csrf", &t)]).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text());
    let mut tech = Browser::new(&relay);
    tech.get(&format!("{PORTAL}/login")).await;
    let landed = tech
        .post_form(
            "/login",
            &[("username", "tech"), ("password", &tech_pw), ("totp", "")],
        )
        .await;
    assert_eq!(
        landed.url.path(),
        "/account/two-factor",
        "{}",
        landed.text()
    );
    let home = tech.get(&format!("{PORTAL}/devices")).await;
    assert_eq!(
        home.url.path(),
        "/account/two-factor",
        "restricted until enrolled"
    );
    let t = csrf_of(&landed);
    let started = tech
        .post_form("/account/two-factor", &[("_csrf", &t)])
        .await;
    assert!(
        started.text().contains("<svg"),
        "QR code: {}",
        started.text()
    );
    let uri = started
        .text()
        .split("otpauth://")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .map(|s| format!("otpauth://{}", s.replace("&amp;", "&")))
        .expect("the otpauth URI on the page");
    let code = totp_rs::TOTP::from_url_unchecked(&uri)
        .expect("URI")
        .generate_current()
        .expect("clock");
    let t = csrf_of(&started);
    let done = tech
        .post_form(
            "/account/two-factor/confirm",
            &[("code", &code), ("_csrf", &t)],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(done.text().contains("Recovery codes"), "{}", done.text());
    let home = tech.get(&format!("{PORTAL}/devices")).await;
    assert_eq!(home.status, StatusCode::OK, "enrolled: the portal opens");
    assert_eq!(home.url.path(), "/devices");

    // Log-out ends the session: the next page goes to the log-in page.
    let home = admin.get(&format!("{PORTAL}/")).await;
    let t = csrf_of(&home);
    let out = admin.post_form("/logout", &[("_csrf", &t)]).await;
    assert_eq!(out.url.path(), "/login");
    let after = admin.get(&format!("{PORTAL}/devices")).await;
    assert_eq!(after.url.path(), "/login");
    // The admin's tunnel ended with the log-in.
    assert_eventually!(
        relay.audit_kind("tunnel.close").len() == 1,
        std::time::Duration::from_secs(10),
        "the tunnel closes at log-out"
    );
}
