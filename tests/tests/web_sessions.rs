//! Device Web Access end to end: the real relay and agent, a simulated
//! printer, and a client that behaves like a browser (redirects, cookies per
//! host, the Referer and Origin of the page it is on).

use std::time::Duration;

use dwa_e2e_tests::browser::{Api, Browser};
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
    let mut relay = Relay::init_with(edit);
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let ip = relay.ip(10);
    let allow = format!("{ip}/32");
    let mut agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&allow],
            ports: &[HTTP, HTTPS],
            transport: "ssh",
        },
    );
    agent.start();
    relay.wait_connected(&agent);
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
    assert_eq!(dl["detail"]["bytes_down"], size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websockets_https_printers_and_certificate_changes() {
    let mut f = fixture(|_| {}).await;
    let s = f.session(HTTP, None).await;
    let origin = origin_of(&s);
    let mut b = Browser::new(&f.relay);
    b.get(&url_of(&s)).await;

    // The printer's status feed, and an echo, through the session.
    let ws_url = format!("{}/ws", origin.replacen("https://", "wss://", 1));
    let mut ws = b.websocket(&f.relay, &ws_url).await.expect("websocket");
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
