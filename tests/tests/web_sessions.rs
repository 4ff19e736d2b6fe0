//! Device Web Access end to end: the real relay and agent, a simulated
//! printer, and a client that behaves like a browser (redirects, cookies per
//! host, the Referer and Origin of the page it is on).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dwa_e2e_tests::browser::{Api, Browser, WebSocket};
use dwa_e2e_tests::*;
use dwa_sim::{Fleet, FleetConfig, Printer};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const HTTP: u16 = 8080;
const HTTPS: u16 = 8443;

struct Fixture {
    relay: Relay,
    _agent: Agent,
    fleet: Fleet,
    device: i64,
    api: Api,
}

impl Fixture {
    fn printer(&self) -> &Printer {
        &self.fleet.printers[0]
    }

    async fn session(&self, port: u16, tls: Option<bool>) -> Value {
        let mut body = json!({"port": port});
        if let Some(t) = tls {
            body["tls"] = json!(t);
        }
        let (status, v) = self
            .api
            .call(
                Method::POST,
                &format!("/devices/{}/web-sessions", self.device),
                Some(body),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "web session: {v}\n{}",
            self.relay.logs()
        );
        v
    }
}

/// Relay (relay.toml edited by `edit`), an agent allowing the printer's two
/// ports, a simulated printer at `.10`, and an admin API client.
async fn fixture(edit: impl FnOnce(&mut String)) -> Fixture {
    let (relay, agent, ip) = Relay::with_agent_config(edit, &[HTTP, HTTPS]);
    let device = relay.add_device(&agent, &ip);
    let fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().expect("ip")],
        http_port: HTTP,
        https_port: Some(HTTPS),
        ..Default::default()
    })
    .await
    .expect("fleet");
    let api = Api::login(&relay, "admin", &relay.admin_password).await;
    Fixture {
        relay,
        _agent: agent,
        fleet,
        device,
        api,
    }
}

fn url_of(v: &Value) -> String {
    v["url"].as_str().expect("url").to_string()
}

fn origin_of(v: &Value) -> String {
    let u = reqwest::Url::parse(&url_of(v)).expect("url");
    u.origin().ascii_serialization()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dealer_logs_in_to_a_printer_through_a_session() {
    let f = fixture(|_| {}).await;
    let s = f.session(HTTP, None).await;
    let origin = origin_of(&s);
    let host = s["host"].as_str().expect("host");
    assert!(
        host.starts_with("s-") && host.ends_with(".dwa.localhost"),
        "{host}"
    );
    assert_eq!(
        host.len(),
        "s-".len() + 32 + ".dwa.localhost".len(),
        "128-bit id"
    );
    let printer = f.printer().http_origin();

    // Ticket → cookie → `/` → the printer's absolute redirect, rewritten.
    let mut b = Browser::new(&f.relay);
    let login = b.get(&url_of(&s)).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(
        login.url.as_str(),
        format!("{origin}/login.html"),
        "visited {:?}",
        b.visited
    );
    let page = login.text();
    assert!(
        page.contains(&format!("action=\"{origin}/login\"")),
        "{page}"
    );
    assert!(
        !page.contains(&printer),
        "printer URL left in the page: {page}"
    );
    let cookie = login.headers.get("set-cookie");
    assert!(cookie.is_none(), "the printer page sets no cookie here");

    // The printer checks Host, Referer and Origin: they must be its own.
    let status = b
        .post_form(
            &format!("{origin}/login"),
            &[("username", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert!(
        status.text().contains("Printer status: Ready"),
        "{}",
        status.text()
    );
    assert_eq!(status.url.as_str(), format!("{origin}/status.html"));
    let seen = f.printer().stats.last_request().expect("a request");
    assert_eq!(
        seen.host.as_deref(),
        Some(printer.trim_start_matches("http://"))
    );
    let sent_cookie = seen.cookie.unwrap_or_default();
    assert!(
        sent_cookie.contains("sid="),
        "printer cookie forwarded: {sent_cookie}"
    );
    assert!(
        !sent_cookie.contains("dwa"),
        "our cookie reached the printer: {sent_cookie}"
    );

    // CSS and JavaScript bodies are rewritten too.
    let css = b.get("/style.css").await.text();
    assert!(css.contains(&format!("url({origin}/logo.png)")), "{css}");
    let js = b.get("/app.js").await.text();
    assert!(js.contains(&format!("\"{origin}/\"")), "{js}");
    let gz = b.get("/compressed.html").await.text();
    assert!(gz.contains(&origin) && !gz.contains(&printer), "{gz}");

    // Basic auth is the printer's business: carried both ways.
    let r = b
        .client
        .get(format!("{origin}/basic"))
        .send()
        .await
        .expect("basic");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = b
        .client
        .get(format!("{origin}/basic"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .expect("basic");
    assert_eq!(r.status(), StatusCode::OK);

    // 64 MiB, streamed and intact.
    let size = 64 * 1024 * 1024u64;
    let mut r = b
        .client
        .get(format!("{origin}/download?size={size}&token=secret"))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), StatusCode::OK);
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, size);
    assert_eq!(hex::encode(h.finalize()), dwa_sim::download_sha256(size));

    // Uploads stream the other way.
    let up = vec![7u8; 3 * 1024 * 1024];
    let r: Value = b
        .client
        .post(format!("{origin}/upload"))
        .body(up.clone())
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    assert_eq!(r["bytes"], up.len());
    assert_eq!(r["sha256"], hex::encode(Sha256::digest(&up)));

    // Keep-alive: sequential requests reuse the printer connection.
    let conns = f.printer().stats.connections();
    for _ in 0..20 {
        let r = b
            .client
            .get(format!("{origin}/small"))
            .send()
            .await
            .expect("small");
        assert_eq!(r.bytes().await.expect("body").len(), 1024);
    }
    let opened = f.printer().stats.connections() - conns;
    assert!(
        opened <= 1,
        "{opened} new printer connections for 20 requests"
    );

    // Audit: the session and each request, query values redacted.
    let created = f.relay.audit_kind("web.session_create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor"], "user:admin");
    let reqs = f.relay.audit_kind("web.request");
    let paths: Vec<&str> = reqs
        .iter()
        .filter_map(|r| r["detail"]["path"].as_str())
        .collect();
    assert!(paths.contains(&"/login"), "{paths:?}");
    assert!(paths.contains(&"/download?size=&token="), "{paths:?}");
    assert!(!f
        .relay
        .audit()
        .iter()
        .any(|r| r.to_string().contains("secret")));
    let dl = reqs
        .iter()
        .find(|r| r["detail"]["path"] == "/download?size=&token=")
        .expect("download record");
    assert_eq!(dl["detail"]["status"], 200);
    assert_eq!(dl["detail"]["complete"], true, "{dl}");
    assert_eq!(dl["detail"]["bytes_down"], size);
}

/// A web session on the printer's HTTP port, entered by a browser, and
/// the printer's status WebSocket opened through it: its URL and the socket.
async fn session_websocket(f: &Fixture) -> (String, WebSocket) {
    let s = f.session(HTTP, None).await;
    let mut b = Browser::new(&f.relay);
    b.get(&url_of(&s)).await;
    let ws_url = format!("{}/ws", origin_of(&s).replacen("https://", "wss://", 1));
    let ws = b.websocket(&f.relay, &ws_url).await.expect("websocket");
    (ws_url, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websockets_https_printers_and_certificate_changes() {
    let mut f = fixture(|_| {}).await;
    // The printer's status feed, and an echo, through the session.
    let (ws_url, mut ws) = session_websocket(&f).await;
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("status in time")
        .expect("a message")
        .expect("ok");
    assert!(
        first.to_text().unwrap_or("").contains("\"status\""),
        "{first:?}"
    );
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping-42"))
        .await
        .expect("send");
    let mut echoed = false;
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("ok");
        if m.to_text().unwrap_or("") == "ping-42" {
            echoed = true;
            break;
        }
    }
    assert!(echoed, "no echo");
    // Body rewriting is on by default and can be turned off per session.
    let (status, plain) = f
        .api
        .call(
            Method::POST,
            &format!("/devices/{}/web-sessions", f.device),
            Some(json!({"port": HTTP, "rewrite": false})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let mut pb = Browser::new(&f.relay);
    pb.get(&url_of(&plain)).await;
    let js = pb.get("/app.js").await.text();
    assert!(js.contains(&f.printer().http_origin()), "{js}");
    // Without the session cookie, no WebSocket.
    let stranger = Browser::new(&f.relay);
    assert!(stranger.websocket(&f.relay, &ws_url).await.is_err());

    // An HTTPS printer: TLS from the agent's side, its certificate shown.
    let s = f.session(HTTPS, Some(true)).await;
    assert_eq!(s["tls"], true);
    let want = f
        .printer()
        .cert_sha256
        .clone()
        .expect("printer certificate");
    assert_eq!(s["certificate"]["sha256"], want.as_str(), "{s}");
    let mut b = Browser::new(&f.relay);
    let page = b.get(&url_of(&s)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("action=\""), "{}", page.text());
    assert!(!page.text().contains("https://127."), "{}", page.text());

    // The printer gets a new certificate: the next session flags it.
    let ip = f.printer().addr;
    f.fleet.shutdown().await;
    f.fleet = Fleet::start(FleetConfig {
        addresses: vec![ip],
        http_port: HTTP,
        https_port: Some(HTTPS),
        ..Default::default()
    })
    .await
    .expect("fleet again");
    let s = f.session(HTTPS, Some(true)).await;
    assert_eq!(s["certificate"]["changed_from"], want.as_str(), "{s}");
    let changed = f.relay.audit_kind("tls.cert_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["detail"]["previous_sha256"], want.as_str());
}

/// Polls the API until the session reports an end reason.
async fn ended_reason(api: &Api, id: &str) -> Option<String> {
    let (_, v) = api
        .call(Method::GET, &format!("/web-sessions/{id}"), None)
        .await;
    v["ended"].as_str().map(str::to_string)
}

async fn wait_ended(api: &Api, id: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(r) = ended_reason(api, id).await {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session {id} did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a session ends, its pages say so and the printer sees nothing.
async fn nothing_reaches_the_printer(f: &Fixture, b: &mut Browser) {
    let before = f.printer().stats.bytes_received();
    let page = b.get("/status.html").await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.text());
    assert!(page.text().contains("Session ended"), "{}", page.text());
    let r = b
        .client
        .post(b.page.clone().expect("page").join("/upload").expect("url"))
        .body(vec![1u8; 100_000])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::GONE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        f.printer().stats.bytes_received(),
        before,
        "bytes reached the printer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_idle_logout_and_agent_loss_end_sessions() {
    let mut f = fixture(|c| *c = c.replace("idle_timeout = \"5m\"", "idle_timeout = \"3s\"")).await;

    // DELETE: the page, a WebSocket and the printer connections all close.
    let s = f.session(HTTP, None).await;
    let id = s["id"].as_str().expect("id").to_string();
    let mut b = Browser::new(&f.relay);
    assert_eq!(b.get(&url_of(&s)).await.status, StatusCode::OK);
    let ws_url = format!("{}/ws", origin_of(&s).replacen("https://", "wss://", 1));
    let mut ws = b.websocket(&f.relay, &ws_url).await.expect("websocket");
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let (status, v) = f
        .api
        .call(Method::DELETE, &format!("/web-sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(m)) if m.is_close() => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket outlived its session");
    nothing_reaches_the_printer(&f, &mut b).await;
    let (status, _) = f
        .api
        .call(Method::DELETE, &format!("/web-sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a second DELETE");

    // Idle: 3 s without a request.
    let s = f.session(HTTP, None).await;
    let id = s["id"].as_str().expect("id").to_string();
    let mut b = Browser::new(&f.relay);
    assert_eq!(b.get(&url_of(&s)).await.status, StatusCode::OK);
    assert_eq!(
        wait_ended(&f.api, &id, Duration::from_secs(10)).await,
        "idle"
    );
    nothing_reaches_the_printer(&f, &mut b).await;

    // Logout ends what that log-in opened.
    let other = Api::login(&f.relay, "admin", &f.relay.admin_password).await;
    let (status, s) = other
        .call(
            Method::POST,
            &format!("/devices/{}/web-sessions", f.device),
            Some(json!({"port": HTTP})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().expect("id").to_string();
    let mut b = Browser::new(&f.relay);
    assert_eq!(b.get(&url_of(&s)).await.status, StatusCode::OK);
    let (status, _) = other.call(Method::POST, "/logout", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = other.call(Method::GET, "/me", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the cookie still works after logout"
    );
    assert_eq!(
        wait_ended(&f.api, &id, Duration::from_secs(5)).await,
        "logout"
    );
    nothing_reaches_the_printer(&f, &mut b).await;

    // The agent goes away.
    let s = f.session(HTTP, None).await;
    let id = s["id"].as_str().expect("id").to_string();
    let mut b = Browser::new(&f.relay);
    assert_eq!(b.get(&url_of(&s)).await.status, StatusCode::OK);
    f._agent.kill9();
    assert_eq!(
        wait_ended(&f.api, &id, Duration::from_secs(60)).await,
        "agent_gone"
    );
    nothing_reaches_the_printer(&f, &mut b).await;

    let ends = f.relay.audit_kind("web.session_end");
    let reasons: Vec<&str> = ends
        .iter()
        .filter_map(|r| r["detail"]["reason"].as_str())
        .collect();
    for want in ["deleted", "idle", "logout", "agent_gone"] {
        assert!(reasons.contains(&want), "{want} missing from {reasons:?}");
    }
    let deleted = ends
        .iter()
        .find(|r| r["detail"]["reason"] == "deleted")
        .expect("deleted");
    assert!(
        deleted["detail"]["bytes_down"].as_u64().unwrap_or(0) > 0,
        "{deleted}"
    );
    assert!(deleted["detail"]["duration_ms"].is_u64(), "{deleted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_ends_at_its_maximum_duration() {
    let f = fixture(|c| {
        *c = c
            .replace("max_duration = \"30m\"", "max_duration = \"10s\"")
            .replace("idle_timeout = \"5m\"", "idle_timeout = \"10s\"")
    })
    .await;
    let s = f.session(HTTP, None).await;
    let id = s["id"].as_str().expect("id").to_string();
    let mut b = Browser::new(&f.relay);
    assert_eq!(b.get(&url_of(&s)).await.status, StatusCode::OK);
    // Busy all along: it is the maximum duration that ends it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if ended_reason(&f.api, &id).await.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ended");
        let _ = b.get("/small").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ended_reason(&f.api, &id).await.as_deref(), Some("expired"));
    nothing_reaches_the_printer(&f, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tickets_are_single_use_and_bound_to_their_host() {
    let f = fixture(|_| {}).await;
    let a = f.session(HTTP, None).await;
    let b_session = f.session(HTTP, None).await;
    let requests = f.printer().stats.requests();

    let mut first = Browser::new(&f.relay);
    assert_eq!(first.get(&url_of(&a)).await.status, StatusCode::OK);

    // The same link again, in another browser: refused.
    let mut replay = Browser::new(&f.relay);
    let p = replay.get(&url_of(&a)).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.text());
    assert!(replay.get("/status.html").await.status == StatusCode::UNAUTHORIZED);

    // B's ticket on A's host: refused, and B's link still works on B's host.
    let b_url = url_of(&b_session);
    let ticket = b_url.split("ticket=").nth(1).expect("ticket");
    let wrong = format!("{}/__dwa/enter?ticket={ticket}", origin_of(&a));
    let mut cross = Browser::new(&f.relay);
    assert_eq!(cross.get(&wrong).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        Browser::new(&f.relay).get(&b_url).await.status,
        StatusCode::OK
    );

    // The first browser's cookie is for A's host only.
    let cookies_b = first.cookies_for(&format!("{}/", origin_of(&b_session)));
    assert!(
        cookies_b.is_empty(),
        "cookie leaked to another session host: {cookies_b}"
    );
    // Two requests (`/` and its redirect to the log-in page) for each of the
    // two successful entries; none for the refusals.
    assert_eq!(f.printer().stats.requests(), requests + 4);
    assert!(f.relay.audit_kind("web.ticket_refused").len() >= 2);

    // A made-up session host: a clear page, nothing forwarded.
    let mut lost = Browser::new(&f.relay);
    let p = lost
        .get(&format!(
            "https://s-{}.dwa.localhost:{HTTPS_PORT}/",
            "0".repeat(32)
        ))
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.text().contains("No such session"), "{}", p.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_checks_who_asks() {
    let f = fixture(|_| {}).await;
    let url = format!("/devices/{}/web-sessions", f.device);

    // Nobody.
    let anon = Api::new(&f.relay);
    let (status, v) = anon
        .call(Method::POST, &url, Some(json!({"port": HTTP})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = anon
        .call(
            Method::POST,
            "/login",
            Some(json!({"username": "admin", "password": "wrong"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.relay.audit_kind("user.login_failed").len(), 1);

    // A technician of another customer: 403, audited.
    f.relay.ok(&["customer", "add", "other"]);
    let tech = f
        .relay
        .add_user(&["tina", "--role", "technician", "--customer", "other"])
        .await;
    let tina = Api::login(
        &f.relay,
        "tina",
        tech["password"].as_str().expect("password"),
    )
    .await;
    let (status, v) = tina
        .call(Method::POST, &url, Some(json!({"port": HTTP})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let refused = f.relay.audit_kind("web.session_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["actor"], "user:tina");
    // ... and cannot end or see someone else's session.
    let s = f.session(HTTP, None).await;
    let (status, _) = tina
        .call(
            Method::DELETE,
            &format!("/web-sessions/{}", s["id"].as_str().unwrap_or("")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A technician of this customer may; a viewer may not.
    let acme_tech = f
        .relay
        .add_user(&["ted", "--role", "technician", "--customer", "acme"])
        .await;
    let ted = Api::login(
        &f.relay,
        "ted",
        acme_tech["password"].as_str().expect("password"),
    )
    .await;
    let (status, v) = ted
        .call(Method::POST, &url, Some(json!({"port": HTTP})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let viewer = f
        .relay
        .add_user(&["vic", "--role", "viewer", "--customer", "acme"])
        .await;
    let vic = Api::login(
        &f.relay,
        "vic",
        viewer["password"].as_str().expect("password"),
    )
    .await;
    let (status, _) = vic
        .call(Method::POST, &url, Some(json!({"port": HTTP})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // API tokens: work as Bearer, stop when revoked.
    let (status, t) = ted
        .call(Method::POST, "/tokens", Some(json!({"name": "script"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let token = t["token"].as_str().expect("token").to_string();
    let bearer = |tok: &str| {
        let c = anon.client.clone();
        let u = format!("{}/devices", anon.base);
        let tok = tok.to_string();
        async move {
            c.get(u)
                .bearer_auth(tok)
                .send()
                .await
                .expect("get")
                .status()
        }
    };
    assert_eq!(bearer(&token).await, StatusCode::OK);
    assert_eq!(bearer("dwat_forged").await, StatusCode::UNAUTHORIZED);
    let (status, _) = ted
        .call(Method::DELETE, &format!("/tokens/{}", t["id"]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bearer(&token).await, StatusCode::UNAUTHORIZED);

    // A cookie-authenticated write from another origin is refused.
    let r = ted
        .client
        .post(format!("{}/devices/{}/web-sessions", ted.base, f.device))
        .header("origin", "https://evil.example")
        .json(&json!({"port": HTTP}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_reader_does_not_slow_another_session() {
    let f = fixture(|_| {}).await;
    let stalled = f.session(HTTP, None).await;
    let mut b1 = Browser::new(&f.relay);
    b1.get(&url_of(&stalled)).await;
    // A 1 GiB download read once, then left unread.
    let mut slow = b1
        .client
        .get(format!(
            "{}/download?size={}",
            origin_of(&stalled),
            1u64 << 30
        ))
        .send()
        .await
        .expect("download");
    let _ = slow.chunk().await.expect("first chunk");

    let fast = f.session(HTTP, None).await;
    let mut b2 = Browser::new(&f.relay);
    b2.get(&url_of(&fast)).await;
    let size = 64u64 << 20;
    let t = std::time::Instant::now();
    let body = tokio::time::timeout(
        Duration::from_secs(60),
        b2.client
            .get(format!("{}/download?size={size}", origin_of(&fast)))
            .send(),
    )
    .await
    .expect("response in time")
    .expect("download");
    let bytes = tokio::time::timeout(Duration::from_secs(60), body.bytes())
        .await
        .expect("body in time")
        .expect("body");
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        dwa_sim::download_sha256(size)
    );
    eprintln!("64 MiB beside a stalled session: {:?}", t.elapsed());
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_ticket_guesses_are_rate_limited_per_session() {
    let f = fixture(|c| {
        *c = c
            .replace("requests_per_second = 200", "requests_per_second = 1")
            .replace("request_burst = 1000", "request_burst = 5")
    })
    .await;
    let s = f.session(HTTP, None).await;
    let origin = origin_of(&s);
    // Guesses at the ticket count against the session's rate too.
    let mut guesser = Browser::new(&f.relay);
    let mut statuses = vec![];
    for i in 0..8 {
        let p = guesser
            .get(&format!("{origin}/__dwa/enter?ticket=guess{i}"))
            .await;
        statuses.push(p.status);
        if p.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(p.headers.get("retry-after").is_some());
        }
    }
    assert!(
        statuses.contains(&StatusCode::FORBIDDEN)
            && statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let refused = f.relay.audit_kind("web.ticket_refused").len();
    assert!(refused <= 5, "{refused} refusals audited beyond the burst");
}

/// Every `stream.open` in the log has a later `stream.close` of the same
/// agent and stream; returns the closes written at a restart.
fn every_stream_closed(relay: &Relay) -> usize {
    let log = relay.audit();
    let mut at_restart = 0;
    for open in log.iter().filter(|r| r["kind"] == "stream.open") {
        let close = log.iter().find(|c| {
            c["kind"] == "stream.close"
                && c["id"].as_i64() > open["id"].as_i64()
                && c["agent"] == open["agent"]
                && c["detail"]["stream"] == open["detail"]["stream"]
        });
        let Some(close) = close else {
            panic!("no close record for {open}");
        };
        if close["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("relay restart"))
        {
            at_restart += 1;
        }
    }
    at_restart
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_under_an_open_websocket_closes_its_streams_at_restart() {
    let mut f = fixture(|_| {}).await;
    let (_, mut ws) = session_websocket(&f).await;
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("status in time")
        .expect("a message")
        .expect("ok");

    f.relay.kill9();
    // The browser's side of the WebSocket ends with the relay.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the WebSocket outlived the relay");

    f.relay.start();
    let closed = every_stream_closed(&f.relay);
    assert!(closed >= 1, "the WebSocket's stream was closed at restart");
    let started = f.relay.audit_kind("relay.started");
    assert_eq!(
        started.last().expect("relay.started")["detail"]["unclosed_streams"],
        closed as u64,
        "{started:?}"
    );
    let out = f.relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
