//! The portal in a real headless Chromium (driven through chromedriver by
//! fantoccini) against the real relay, agent and a simulated printer: log
//! in (with the two-factor code when the relay has two-factor), find the
//! device, open its web page and see the printer's page, find that in the
//! audit log, log out and see the web session die. On the way, the
//! printer's page turns hostile: it plants another user's log-in cookie
//! for the portal's domain and posts the log-in form for another account;
//! the portal keeps knowing the user as himself. Screenshots of the main
//! pages (laptop and phone widths) go to `target/test-artifacts/portal/`.
//!
//! Skipped, saying so, when /usr/bin/chromium or /usr/bin/chromedriver is
//! missing (scripts/test.sh installs them).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwa_e2e_tests::*;
use dwa_sim::{Fleet, FleetConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const HTTP: u16 = 8080;
const PORTAL: &str = "https://dwa.localhost:8443";
const LAPTOP: (u32, u32) = (1366, 900);
const PHONE: (u32, u32) = (390, 844);
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().expect("profile dir");
    let d = Driver {
        child,
        port,
        profile,
    };
    assert_eventually_blocking!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        WAIT,
        "chromedriver never listened on {port}"
    );
    d
}

async fn browser(d: &Driver, relay: &Relay) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", d.profile.path().display()),
                format!("--window-size={},{}", LAPTOP.0, LAPTOP.1),
                // The portal and every s-*.dwa.localhost session host are the
                // relay, on its own loopback address.
                format!("--host-resolver-rules=MAP * {}", relay.ip(1)),
                // The relay's certificate is self-signed for the test.
                "--ignore-certificate-errors",
            ],
        }),
    );
    // Two rustls providers are linked into the tests: pick one (chromedriver
    // is plain HTTP, but the connector is built with TLS support anyway).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("WebDriver session with Chromium")
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts")
        .join("portal");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = artifacts().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Polls the page source until `pred` holds (pages load asynchronously
/// after a click).
async fn wait_source(c: &Client, what: &str, pred: impl Fn(&str, &url::Url) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let src = c.source().await.unwrap_or_default();
        let url = c.current_url().await.expect("current url");
        if pred(&src, &url) {
            return src;
        }
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {what}; at {url}:\n{src}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cookie value of a valid log-in of another user, `mallory` (a
/// viewer of the same relay), taken as an attacker would: by logging in.
async fn mallory_cookie(relay: &Relay) -> String {
    let m = relay.add_user(&["mallory", "--role", "viewer"]).await;
    let password = m["password"].as_str().expect("password");
    let mut b = dwa_e2e_tests::browser::Browser::new(relay);
    b.get(&format!("{PORTAL}/login")).await;
    b.post_form(
        &format!("{PORTAL}/login"),
        &[("username", "mallory"), ("password", password)],
    )
    .await;
    let jar = b.cookies_for(&format!("{PORTAL}/"));
    jar.split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.ends_with("dwa_session"))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("mallory is not logged in: {jar}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dealer_uses_the_portal_in_chromium() {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        eprintln!(
            "SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing (apt-get install chromium chromium-driver; scripts/test.sh does)"
        );
        return;
    }
    let (relay, _agent, ip) = Relay::with_agent_config(|_| {}, &[HTTP]);
    let device = relay.add_device(&_agent, &ip);
    let _fleet = Fleet::start(FleetConfig {
        addresses: vec![ip.parse().expect("ip")],
        http_port: HTTP,
        https_port: None,
        ..Default::default()
    })
    .await
    .expect("fleet");
    let printer_marker = format!(" at {ip}</h1>");

    let driver = start_driver();
    let c = browser(&driver, &relay).await;
    c.set_window_size(LAPTOP.0, LAPTOP.1).await.expect("size");

    // Log in through the form.
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    wait_source(&c, "the log-in page", |_, u| u.path() == "/login").await;
    c.find(Locator::Css("#username"))
        .await
        .expect("user field")
        .send_keys("admin")
        .await
        .expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password field")
        .send_keys(&relay.admin_password)
        .await
        .expect("type");
    let totp = c
        .find(Locator::Css("#totp"))
        .await
        .expect("two-factor field");
    // Two-factor is required for admins: the code from the secret `init`
    // printed once.
    let code = relay
        .totp
        .code("admin")
        .await
        .expect("init printed the admin's TOTP URI");
    totp.send_keys(&code).await.expect("type");
    shot(&c, "login").await;
    c.find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await
        .expect("log-in button")
        .click()
        .await
        .expect("click");
    wait_source(&c, "the home page after log-in", |s, u| {
        u.path() == "/" && s.contains("Log out")
    })
    .await;

    // The devices list shows the printer.
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    let src = wait_source(&c, "the devices page", |s, _| s.contains(&ip)).await;
    assert!(
        src.contains(&format!("href=\"/devices/{device}\"")),
        "{src}"
    );
    shot(&c, "devices").await;
    c.set_window_size(PHONE.0, PHONE.1).await.expect("size");
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    wait_source(&c, "the devices page (phone)", |s, _| s.contains(&ip)).await;
    shot(&c, "devices-phone").await;
    c.set_window_size(LAPTOP.0, LAPTOP.1).await.expect("size");

    // The device page, then "Open web page": the printer's own page.
    c.goto(&format!("{PORTAL}/devices/{device}"))
        .await
        .expect("goto");
    wait_source(&c, "the device page", |s, _| s.contains("Open web page")).await;
    shot(&c, "device").await;
    c.find(Locator::XPath(&format!(
        "//button[contains(., 'Open web page (port {HTTP}')]"
    )))
    .await
    .expect("Open web page button")
    .click()
    .await
    .expect("click");
    let src = wait_source(&c, "the printer's page through the session", |s, u| {
        u.host_str().is_some_and(|h| h.starts_with("s-")) && s.contains(&printer_marker)
    })
    .await;
    let session_url = c.current_url().await.expect("url");
    let session_origin = session_url.origin().ascii_serialization();
    assert!(src.contains("DWA SimPrinter"), "{src}");
    shot(&c, "printer-page").await;

    // The printer's page is hostile. Its script (run here in the page,
    // as the printer's own script would) plants a valid log-in of
    // another user for the portal's parent domain, under the old and the
    // prefixed cookie name, on the paths the portal and its API use.
    let planted = mallory_cookie(&relay).await;
    let script = format!(
        "for (const name of ['dwa_session', '__Host-dwa_session']) {{ \
           for (const path of ['/', '/api', '/devices']) {{ \
             document.cookie = name + '={planted}; Domain=dwa.localhost; Path=' + path + '; Secure'; }} }} \
         return document.cookie;"
    );
    let seen = c.execute(&script, vec![]).await.expect("plant cookies");
    assert!(
        seen.as_str().is_some_and(|s| s.contains(&planted)),
        "the browser refused even the plain cookie: {seen}"
    );
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    let src = wait_source(&c, "the devices page after planting", |s, _| {
        s.contains("Log out")
    })
    .await;
    assert!(src.contains("admin (admin)"), "{src}");
    assert!(
        !src.contains("mallory"),
        "the planted log-in took over:\n{src}"
    );
    // The planted cookie is there (readable by the portal's page) and the
    // API still answers as the user who logged in.
    let cookies = c
        .execute("return document.cookie;", vec![])
        .await
        .expect("js");
    assert!(
        cookies.as_str().is_some_and(|s| s.contains(&planted)),
        "the attack's precondition did not hold: {cookies}"
    );
    let me = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/api/v1/me').then(r => r.json()).then(done, e => done(String(e)));",
            vec![],
        )
        .await
        .expect("fetch /api/v1/me");
    assert_eq!(me["user"], "admin", "{me}");

    // The printer's page posts the log-in form for another account (log-in
    // CSRF): refused, and the portal still knows the user as himself.
    let eve = relay.add_user(&["eve", "--role", "viewer"]).await;
    let eve_password = eve["password"].as_str().expect("password").to_string();
    c.goto(session_url.as_str()).await.expect("goto");
    wait_source(&c, "the printer's page again", |s, _| {
        s.contains(&printer_marker)
    })
    .await;
    let script = format!(
        "const f = document.createElement('form'); f.method = 'post'; \
         f.action = '{PORTAL}/login'; \
         for (const [k, v] of [['username', 'eve'], ['password', {eve_password:?}]]) {{ \
           const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }} \
         document.body.appendChild(f); f.submit();"
    );
    c.execute(&script, vec![])
        .await
        .expect("post the log-in form");
    wait_source(&c, "the refused cross-site log-in", |s, u| {
        u.path() == "/login" && s.contains("another site")
    })
    .await;
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    let src = wait_source(&c, "the devices page after the forged log-in", |s, _| {
        s.contains("Log out")
    })
    .await;
    assert!(src.contains("admin (admin)"), "{src}");
    assert!(
        !src.contains("eve (viewer)"),
        "the forged log-in took over:\n{src}"
    );

    // The audit log shows the session.
    c.goto(&format!("{PORTAL}/audit?kind=web."))
        .await
        .expect("goto");
    let src = wait_source(&c, "the audit page", |s, _| {
        s.contains("web.session_create")
    })
    .await;
    assert!(src.contains("user:admin"), "{src}");
    shot(&c, "audit").await;

    // Log out: the session host no longer serves the printer.
    c.goto(&format!("{PORTAL}/")).await.expect("goto");
    wait_source(&c, "the home page", |s, _| s.contains("Log out")).await;
    c.find(Locator::Css("form[action='/logout'] button"))
        .await
        .expect("log-out button")
        .click()
        .await
        .expect("click");
    wait_source(&c, "the log-in page after log-out", |_, u| {
        u.path() == "/login"
    })
    .await;
    c.goto(&format!("{session_origin}/")).await.expect("goto");
    let src = wait_source(&c, "the ended session", |_, u| {
        u.host_str().is_some_and(|h| h.starts_with("s-"))
    })
    .await;
    assert!(
        !src.contains(&printer_marker),
        "the printer page is still served after log-out:\n{src}"
    );
    let ended = relay.audit_kind("web.session_end");
    assert!(
        ended
            .iter()
            .any(|r| r["detail"].to_string().contains("logout")),
        "{ended:?}"
    );
    c.goto(&format!("{PORTAL}/devices")).await.expect("goto");
    wait_source(&c, "the log-in page again", |_, u| u.path() == "/login").await;
    c.close().await.expect("close");
}
