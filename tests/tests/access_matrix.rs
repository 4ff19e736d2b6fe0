//! Every route × every role, against the real relay: the routes come from
//! the relay's own OpenAPI document (so a new route cannot be missed), the
//! expectations from the explicit table below (so a new route must be
//! classified, or this test fails naming it).
//!
//! Fixture: customer A ("acme") with a connected agent, a device and a
//! simulated printer; customer B ("beta"). Callers: anonymous, admin, and a
//! technician, viewer and customer user of A, and a technician of B. Every
//! path parameter names an object of customer A. Only 401 and 403 decide:
//! an allowed caller may still get 400/404/409/5xx for other reasons.
//!
//! Pages outside `/api/` may answer a missing log-in with a redirect to the
//! log-in page; that counts (and shows) as 401.
//!
//! The matrix as observed is written to `target/access-matrix.md`
//! (docs/api.md shows it).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use dwa_sim::{Fleet, FleetConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The printer's web port (allowed by the agent, served by the simulator).
const PRINTER_PORT: u16 = 8080;

/// What a route requires, as the relay's roles grant it
/// (policy/src/roles.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// No credential at all (log-in, the OpenAPI document, health,
    /// enrollment whose credential is the token in the body).
    Public,
    /// Any logged-in user; what they see is filtered by their customers.
    AnyUser,
    ViewTelemetry,
    WebSession,
    /// Raw TCP tunnels.
    RawTunnel,
    Diagnostics,
    Administer,
    /// An agent's signed request (`Authorization: DWA-Agent ...`): 401 for
    /// every user credential.
    Agent,
    /// SSH over WebSocket: the agent authenticates inside SSH with its key;
    /// over plain HTTP (no upgrade) everyone gets 400.
    AgentSsh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Anonymous,
    Admin,
    TechA,
    ViewerA,
    CustomerA,
    TechB,
}

const CALLERS: [Caller; 6] = [
    Caller::Anonymous,
    Caller::Admin,
    Caller::TechA,
    Caller::ViewerA,
    Caller::CustomerA,
    Caller::TechB,
];

impl Caller {
    fn label(self) -> &'static str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Admin => "admin",
            Caller::TechA => "technician (A)",
            Caller::ViewerA => "viewer (A)",
            Caller::CustomerA => "customer (A)",
            Caller::TechB => "technician (B)",
        }
    }
}

/// What the caller must get on an object of customer A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Anything but 401 and 403.
    Allowed,
    Status(u16),
}

fn expect(need: Need, c: Caller) -> Expect {
    use Caller::*;
    let refused = Expect::Status(403);
    match (need, c) {
        (Need::Public, _) => Expect::Allowed,
        (Need::Agent, _) => Expect::Status(401),
        (Need::AgentSsh, _) => Expect::Status(400),
        (_, Anonymous) => Expect::Status(401),
        (Need::AnyUser, _) => Expect::Allowed,
        (_, Admin) => Expect::Allowed,
        (Need::ViewTelemetry, TechA | ViewerA | CustomerA) => Expect::Allowed,
        (Need::WebSession | Need::RawTunnel | Need::Diagnostics, TechA) => Expect::Allowed,
        _ => refused,
    }
}

/// Ids of customer A's objects, and what calls need to pass validation.
struct Ctx<'a> {
    relay: &'a Relay,
    customer_a: i64,
    agent: String,
    device: i64,
    web_session: String,
    throwaway_token: i64,
    viewer: (String, String),
    viewer_id: i64,
    tunnel: String,
    /// Removed by the destructive rows (a device and a customer of their own).
    spare_device: i64,
    spare_customer: i64,
    /// Target of the 2FA reset, which ends every grant of its user.
    spare_user: i64,
}

type BodyFn = fn(&Ctx) -> Option<Value>;

/// The table: (method, path as in the document) → what it needs, and a body
/// that passes validation for an allowed caller.
fn table() -> Vec<(&'static str, &'static str, Need, BodyFn)> {
    fn none(_: &Ctx) -> Option<Value> {
        None
    }
    vec![
        // Meta.
        ("GET", "/api/v1/openapi.json", Need::Public, none),
        ("GET", "/healthz", Need::Public, none),
        // Agent-facing.
        ("POST", "/api/v1/enroll", Need::Public, |c| {
            // A real enrollment each time: the token is the credential.
            let key = dwa_link::ssh::generate_ed25519();
            Some(json!({
                // The token's secret part, as `dwa-agent enroll` sends it.
                "secret": c.relay.token("acme", 1, "1h").split('.').nth(1).unwrap_or_default(),
                "public_key": dwa_link::ssh::public_openssh(key.public_key()),
                "hostname": "matrix-host",
                "agent_version": "0.0.0",
            }))
        }),
        ("POST", "/agent/v1/ingest", Need::Agent, |_| {
            Some(json!({"items": []}))
        }),
        ("GET", "/agent/ws", Need::AgentSsh, none),
        // Log-in and tokens.
        ("POST", "/api/v1/login", Need::Public, |c| {
            Some(json!({"username": c.viewer.0, "password": c.viewer.1}))
        }),
        ("POST", "/api/v1/logout", Need::AnyUser, none),
        ("GET", "/api/v1/me", Need::AnyUser, none),
        ("POST", "/api/v1/tokens", Need::AnyUser, |_| {
            Some(json!({"name": "matrix"}))
        }),
        ("DELETE", "/api/v1/tokens/{id}", Need::AnyUser, none),
        // Web sessions.
        (
            "POST",
            "/api/v1/devices/{id}/web-sessions",
            Need::WebSession,
            |_| Some(json!({"port": PRINTER_PORT})),
        ),
        ("GET", "/api/v1/web-sessions", Need::AnyUser, none),
        ("GET", "/api/v1/web-sessions/{id}", Need::WebSession, none),
        (
            "DELETE",
            "/api/v1/web-sessions/{id}",
            Need::WebSession,
            none,
        ),
        // Telemetry.
        ("GET", "/api/v1/devices", Need::AnyUser, none),
        ("GET", "/api/v1/devices.csv", Need::AnyUser, none),
        ("GET", "/api/v1/devices/{id}", Need::ViewTelemetry, none),
        (
            "GET",
            "/api/v1/devices/{id}/readings",
            Need::ViewTelemetry,
            none,
        ),
        ("GET", "/api/v1/alerts", Need::AnyUser, none),
        (
            "GET",
            "/api/v1/customers/{id}/alert-rules",
            Need::ViewTelemetry,
            none,
        ),
        (
            "PUT",
            "/api/v1/customers/{id}/alert-rules",
            Need::Administer,
            |_| Some(json!([])),
        ),
        (
            "GET",
            "/api/v1/customers/{id}/billing",
            Need::ViewTelemetry,
            none,
        ),
        (
            "GET",
            "/api/v1/customers/{id}/billing-schedule",
            Need::ViewTelemetry,
            none,
        ),
        (
            "PUT",
            "/api/v1/customers/{id}/billing-schedule",
            Need::Administer,
            |_| Some(json!({"day": 28, "format": "csv", "email_to": ["billing@example.com"]})),
        ),
        // Agents.
        ("GET", "/api/v1/agents", Need::AnyUser, none),
        ("PUT", "/api/v1/agents/{id}/scan", Need::Diagnostics, |_| {
            Some(json!({"interval": "10m"}))
        }),
        (
            "POST",
            "/api/v1/agents/{id}/scan-now",
            Need::Diagnostics,
            none,
        ),
        // Diagnostics.
        (
            "POST",
            "/api/v1/devices/{id}/diagnostics",
            Need::Diagnostics,
            |_| Some(json!({"kind": "tcp", "port": PRINTER_PORT})),
        ),
        // Single sign-on (no provider configured here: the routes say so).
        ("GET", "/auth/oidc/login", Need::Public, none),
        ("GET", "/auth/oidc/callback", Need::Public, none),
        // Accounts: one's own two-factor, then admin's users, customers,
        // enrollment tokens.
        // No body: an allowed caller gets 400 (a token's always: a password
        // is changed from a log-in).
        ("POST", "/api/v1/me/password", Need::AnyUser, none),
        ("POST", "/api/v1/me/totp", Need::AnyUser, none),
        // No body: an allowed caller gets 400, not a refusal.
        ("POST", "/api/v1/me/totp/confirm", Need::AnyUser, none),
        ("GET", "/api/v1/users", Need::Administer, none),
        ("POST", "/api/v1/users", Need::Administer, |c| {
            Some(json!({"username": "matrix-user", "role": "viewer", "customers": [c.customer_a]}))
        }),
        ("GET", "/api/v1/users/{id}", Need::Administer, none),
        ("PATCH", "/api/v1/users/{id}", Need::Administer, |_| {
            Some(json!({}))
        }),
        ("POST", "/api/v1/users/{id}/unlock", Need::Administer, none),
        (
            "POST",
            "/api/v1/users/{id}/reset-totp",
            Need::Administer,
            none,
        ),
        (
            "POST",
            "/api/v1/users/{id}/reset-password",
            Need::Administer,
            none,
        ),
        ("GET", "/api/v1/customers", Need::Administer, none),
        ("POST", "/api/v1/customers", Need::Administer, |_| {
            Some(json!({"name": "matrix-customer"}))
        }),
        ("GET", "/api/v1/enrollment-tokens", Need::Administer, none),
        ("POST", "/api/v1/enrollment-tokens", Need::Administer, |c| {
            Some(json!({"customer_id": c.customer_a, "uses": 1}))
        }),
        // Raw TCP tunnels.
        (
            "POST",
            "/api/v1/devices/{id}/tunnels",
            Need::RawTunnel,
            |_| Some(json!({"port": PRINTER_PORT})),
        ),
        ("GET", "/api/v1/tunnels", Need::AnyUser, none),
        ("DELETE", "/api/v1/tunnels/{id}", Need::RawTunnel, none),
        // The audit log, scoped per caller.
        ("GET", "/api/v1/audit", Need::AnyUser, none),
        // Devices by hand, and removals (of spare objects: see fill()).
        ("POST", "/api/v1/devices", Need::Administer, |c| {
            Some(json!({"agent": c.agent, "address": "10.99.0.1"}))
        }),
        ("DELETE", "/api/v1/devices/{id}", Need::Administer, none),
        ("DELETE", "/api/v1/customers/{id}", Need::Administer, none),
        (
            "DELETE",
            "/api/v1/customers/{id}/billing-schedule",
            Need::Administer,
            none,
        ),
    ]
}

/// The path with `{id}` filled with customer A's object of that kind (a
/// removal gets a spare one, so the walk keeps its objects).
fn fill(method: &str, path: &str, c: &Ctx) -> String {
    let id = if method == "DELETE" && path == "/api/v1/devices/{id}" {
        c.spare_device.to_string()
    } else if method == "DELETE" && path == "/api/v1/customers/{id}" {
        c.spare_customer.to_string()
    } else if path == "/api/v1/users/{id}/reset-totp" || path == "/api/v1/users/{id}/reset-password"
    {
        c.spare_user.to_string()
    } else if path.starts_with("/api/v1/devices/{id}") {
        c.device.to_string()
    } else if path.starts_with("/api/v1/agents/{id}") {
        c.agent.clone()
    } else if path.starts_with("/api/v1/customers/{id}") {
        c.customer_a.to_string()
    } else if path.starts_with("/api/v1/web-sessions/{id}") {
        c.web_session.clone()
    } else if path.starts_with("/api/v1/users/{id}") {
        c.viewer_id.to_string()
    } else if path.starts_with("/api/v1/tunnels/{id}") {
        c.tunnel.clone()
    } else if path.starts_with("/api/v1/tokens/{id}") {
        c.throwaway_token.to_string()
    } else if path.contains('{') {
        panic!("access_matrix: no object for the parameters of {path}; add it to fill()")
    } else {
        return path.to_string();
    };
    let filled = path.replacen("{id}", &id, 1);
    assert!(
        !filled.contains('{'),
        "access_matrix: unfilled parameter in {filled}; extend fill()"
    );
    filled
}

/// A user of `role` (for `customer`), logged in by password; returns the
/// name, password and a fresh API token of theirs (scripts' way in, no
/// cookie, no two-factor step).
async fn user(relay: &Relay, name: &str, role: &str, customer: Option<&str>) -> (String, String) {
    let mut args = vec![name, "--role", role];
    if let Some(c) = customer {
        args.extend(["--customer", c]);
    }
    let v = relay.add_user(&args).await;
    let password = v["password"].as_str().expect("password").to_string();
    (password.clone(), token_of(relay, name, &password).await)
}

async fn token_of(relay: &Relay, name: &str, password: &str) -> String {
    let api = Api::login(relay, name, password).await;
    let (status, v) = api
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"name": "access-matrix"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "token for {name}: {v}");
    v["token"].as_str().expect("token").to_string()
}

async fn call(
    relay: &Relay,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    // One client for the walk, so its connections are reused and the walk
    // stays under the relay's per-address connection rate; but the log-in
    // row gets a client of its own, or its cookie would ride along on the
    // anonymous calls after it.
    static API: std::sync::OnceLock<Api> = std::sync::OnceLock::new();
    let fresh;
    let api = if path == "/api/v1/login" {
        fresh = Api::new(relay);
        &fresh
    } else {
        API.get_or_init(|| Api::new(relay))
    };
    let origin = api.base.trim_end_matches("/api/v1").to_string();
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = api.client.request(method, format!("{origin}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let mut status = resp.status().as_u16();
    // A page (outside the JSON API) answers a missing log-in with a
    // redirect to the log-in page: that is its 401.
    let to_login = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.contains("login"));
    if resp.status().is_redirection() && to_login && !path.starts_with("/api/") {
        status = 401;
    }
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_and_role() {
    let (relay, _agent, ip) = Relay::with_agent_config(|_| {}, &[PRINTER_PORT]);
    let device = relay.add_device(&_agent, &ip);
    let _fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().expect("ip")],
        http_port: PRINTER_PORT,
        https_port: None,
        ..Default::default()
    })
    .await
    .expect("fleet");
    relay.ok(&["customer", "add", "beta"]);
    let spare_customer = relay.ok(&["customer", "add", "spare"])["id"]
        .as_i64()
        .expect("spare customer id");
    let spare_device = relay.add_device(&_agent, &relay.ip(11));

    let admin_token = token_of(&relay, "admin", &relay.admin_password).await;
    let (_, tech_a) = user(&relay, "tech-a", "technician", Some("acme")).await;
    let (viewer_pw, viewer_a) = user(&relay, "viewer-a", "viewer", Some("acme")).await;
    let (_, customer_a) = user(&relay, "cust-a", "customer", Some("acme")).await;
    let (_, tech_b) = user(&relay, "tech-b", "technician", Some("beta")).await;
    let _ = user(&relay, "spare-user", "viewer", Some("acme")).await;
    let bearer = |c: Caller| -> Option<&str> {
        match c {
            Caller::Anonymous => None,
            Caller::Admin => Some(&admin_token),
            Caller::TechA => Some(&tech_a),
            Caller::ViewerA => Some(&viewer_a),
            Caller::CustomerA => Some(&customer_a),
            Caller::TechB => Some(&tech_b),
        }
    };

    // Objects of customer A the rows act on.
    let (s, v) = call(&relay, "GET", "/api/v1/me", bearer(Caller::Admin), None).await;
    assert_eq!(s, 200, "{v}");
    let customer_a_id: i64 = {
        let (s, v) = call(&relay, "GET", "/api/v1/agents", bearer(Caller::Admin), None).await;
        assert_eq!(s, 200, "{v}");
        let v: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
        v[0]["customer_id"].as_i64().expect("agent's customer id")
    };
    let (s, v) = call(
        &relay,
        "POST",
        &format!("/api/v1/devices/{device}/web-sessions"),
        bearer(Caller::Admin),
        Some(json!({"port": PRINTER_PORT})),
    )
    .await;
    assert_eq!(s, 201, "web session: {v}\n{}", relay.logs());
    let web_session = serde_json::from_str::<Value>(&v).unwrap_or(Value::Null)["id"]
        .as_str()
        .expect("session id")
        .to_string();
    let (s, v) = call(
        &relay,
        "POST",
        "/api/v1/tokens",
        bearer(Caller::Admin),
        Some(json!({"name": "throwaway"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let throwaway_token = serde_json::from_str::<Value>(&v).unwrap_or(Value::Null)["id"]
        .as_i64()
        .expect("token id");
    let (s, v) = call(
        &relay,
        "POST",
        &format!("/api/v1/devices/{device}/tunnels"),
        bearer(Caller::Admin),
        Some(json!({"port": PRINTER_PORT})),
    )
    .await;
    assert_eq!(s, 201, "tunnel: {v}");
    let tunnel = serde_json::from_str::<Value>(&v).unwrap_or(Value::Null)["id"]
        .as_str()
        .expect("tunnel id")
        .to_string();
    let (s, v) = call(&relay, "GET", "/api/v1/users", bearer(Caller::Admin), None).await;
    assert_eq!(s, 200, "{v}");
    let users: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
    let id_of = |name: &str| {
        users
            .as_array()
            .or_else(|| users["users"].as_array())
            .and_then(|a| a.iter().find(|u| u["username"] == name))
            .and_then(|u| u["id"].as_i64())
            .unwrap_or_else(|| panic!("no user id for {name}"))
    };
    let viewer_id = id_of("viewer-a");
    let spare_user = id_of("spare-user");
    let ctx = Ctx {
        relay: &relay,
        customer_a: customer_a_id,
        agent: _agent.id.clone(),
        device,
        web_session,
        throwaway_token,
        viewer: ("viewer-a".into(), viewer_pw),
        viewer_id,
        tunnel,
        spare_device,
        spare_customer,
        spare_user,
    };

    // The routes, from the relay's own document.
    let (s, text) = call(&relay, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "not OpenAPI 3: {}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert!(documented.len() >= 20, "too few routes: {documented:?}");

    let table = table();
    let classified: BTreeMap<(String, String), (Need, BodyFn)> = table
        .iter()
        .map(|(m, p, n, b)| ((m.to_string(), p.to_string()), (*n, *b)))
        .collect();
    let unclassified: Vec<String> = documented
        .iter()
        .filter(|k| !classified.contains_key(*k))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        unclassified.is_empty(),
        "routes in the OpenAPI document without an entry in access_matrix::table() \
         (classify them): {unclassified:#?}"
    );
    let stale: Vec<String> = classified
        .keys()
        .filter(|k| !documented.contains(*k))
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        stale.is_empty(),
        "table entries the document does not list: {stale:#?}"
    );

    // Destructive rows last, so the objects they end stay for the others;
    // within a row, refused callers first, for the same reason.
    let mut rows: Vec<_> = table.iter().collect();
    rows.sort_by_key(|(m, _, _, _)| *m == "DELETE");
    let mut failures = vec![];
    let mut observed: Vec<(String, Need, Vec<u16>)> = vec![];
    for (method, path, need, body) in rows {
        let url = fill(method, path, &ctx);
        let mut callers = CALLERS.to_vec();
        callers.sort_by_key(|c| expect(*need, *c) == Expect::Allowed);
        let mut statuses = BTreeMap::new();
        for c in callers {
            let (status, text) = call(&relay, method, &url, bearer(c), body(&ctx)).await;
            statuses.insert(c, status);
            let ok = match expect(*need, c) {
                Expect::Allowed => status != 401 && status != 403,
                Expect::Status(s) => status == s,
            };
            // The technician of B may list, but must see nothing of A.
            let leaked = c == Caller::TechB
                && *method == "GET"
                && *need == Need::AnyUser
                && [
                    ctx.agent.as_str(),
                    ip.as_str(),
                    ctx.web_session.as_str(),
                    ctx.tunnel.as_str(),
                ]
                .iter()
                .any(|a| text.contains(a));
            if leaked {
                failures.push(format!(
                    "{method} {url} as {}: shows customer A's objects: {text}",
                    c.label()
                ));
            }
            if !ok {
                let text: String = text.chars().take(300).collect();
                failures.push(format!(
                    "{method} {url} as {}: got {status}, expected {:?} ({need:?}): {text}",
                    c.label(),
                    expect(*need, c)
                ));
            }
        }
        observed.push((
            format!("{method} {path}"),
            *need,
            CALLERS.iter().map(|c| statuses[c]).collect(),
        ));
    }
    write_matrix(&observed);
    assert!(
        failures.is_empty(),
        "{} of {} calls broke the access matrix:\n{}\nrelay log:\n{}",
        failures.len(),
        table.len() * CALLERS.len(),
        failures.join("\n"),
        relay.logs()
    );
}

/// The matrix as a Markdown table in target/access-matrix.md.
fn write_matrix(rows: &[(String, Need, Vec<u16>)]) {
    let mut md = String::from(
        "<!-- written by tests/tests/access_matrix.rs: every route × role, statuses as observed on customer A's objects -->\n\n| Route | Needs |",
    );
    for c in CALLERS {
        let _ = write!(md, " {} |", c.label());
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---|".repeat(CALLERS.len()));
    md.push('\n');
    let mut sorted = rows.to_vec();
    sorted.sort_by(|a, b| {
        let key = |r: &(String, Need, Vec<u16>)| {
            let (m, p) = r.0.split_once(' ').unwrap_or(("", ""));
            (p.to_string(), m.to_string())
        };
        key(a).cmp(&key(b))
    });
    for (route, need, statuses) in &sorted {
        let _ = write!(md, "| `{route}` | {need:?} |");
        for s in statuses {
            let mark = if *s == 401 || *s == 403 { "✗" } else { "✓" };
            let _ = write!(md, " {mark} {s} |");
        }
        md.push('\n');
    }
    // target/debug/deps/<test> → target/
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()));
    if let Some(t) = target {
        let _ = std::fs::write(t.join("access-matrix.md"), md);
    }
}
