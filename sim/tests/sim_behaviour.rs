//! The simulator's printers, driven over real sockets on 127.77.x.y with a
//! plain hyper client (so every header, Host included, is exactly what the
//! test says), rustls for HTTPS and tokio-tungstenite for the WebSocket.
//!
//! Fleets here use port 0 (a free port per printer) unless a test is about
//! fixed ports; those use 127.77.1.x / 127.77.2.x so they never race the rest.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dwa_sim::{download_sha256, Fleet, FleetConfig, Printer, SimError};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

async fn fleet() -> Fleet {
    Fleet::start(FleetConfig {
        addresses: vec![ip("127.77.0.1"), ip("127.77.0.2"), ip("127.77.0.3")],
        http_port: 0,
        https_port: Some(0),
        ..FleetConfig::default()
    })
    .await
    .expect("fleet starts")
}

/// `127.77.0.1:18080`: what Host must say for a non-default port.
fn host_of(origin: &str) -> &str {
    origin.split_once("://").map(|(_, h)| h).unwrap_or(origin)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn handshake<I>(io: I) -> Sender
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    sender
}

async fn connect(addr: SocketAddr) -> Sender {
    handshake(TcpStream::connect(addr).await.expect("connect")).await
}

/// Accepts any certificate (checking handshake signatures) so the test can
/// compare the one it got with the fingerprint the fleet reported.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTPS connection, and the SHA-256 (hex) of the certificate presented.
async fn connect_tls(addr: SocketAddr) -> (Sender, String) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("TLS handshake");
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .clone();
    let fp = hex::encode(Sha256::digest(cert.as_ref()));
    (handshake(tls).await, fp)
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Resp {
    let r = tokio::time::timeout(T, sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response");
    let (parts, body) = r.into_parts();
    let body = tokio::time::timeout(T, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn request(
    method: Method,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request")
}

/// GET on a fresh HTTP connection with the right Host.
async fn get(p: &Printer, path: &str, headers: &[(&str, &str)]) -> Resp {
    let origin = p.http_origin();
    let mut s = connect(p.http_addr()).await;
    send(
        &mut s,
        request(Method::GET, path, host_of(&origin), headers, b""),
    )
    .await
}

/// POST /login on a fresh HTTP connection: `host` is sent as Host.
async fn login(p: &Printer, host: &str, extra: &[(&str, &str)], form: &str) -> Resp {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra);
    let mut s = connect(p.http_addr()).await;
    send(
        &mut s,
        request(Method::POST, "/login", host, &headers, form.as_bytes()),
    )
    .await
}

#[tokio::test]
async fn root_redirects_to_the_printers_own_absolute_login_url() {
    let fleet = fleet().await;
    for p in &fleet.printers {
        let origin = p.http_origin();
        assert_eq!(origin, format!("http://{}:{}", p.addr, p.http_port));
        let r = get(p, "/", &[]).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.header("location"),
            Some(format!("{origin}/login.html").as_str())
        );
    }

    let p = &fleet.printers[1];
    let o = p.http_origin();
    let page = get(p, "/login.html", &[]).await.text();
    for needle in [
        format!("<form method=\"post\" action=\"{o}/login\">"),
        "name=\"username\"".to_string(),
        "name=\"password\"".to_string(),
        format!("<a href=\"{o}/status.html\">"),
        format!("<link rel=\"stylesheet\" href=\"{o}/style.css\">"),
        format!("<script src=\"{o}/app.js\">"),
    ] {
        assert!(page.contains(&needle), "login page lacks {needle}: {page}");
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn login_with_own_host_referer_origin_sets_a_domain_cookie_that_opens_status() {
    let fleet = fleet().await;
    let p = &fleet.printers[0];
    let o = p.http_origin();
    let referer = format!("{o}/login.html");

    // Without a session the status page sends you to log in.
    let r = get(p, "/status.html", &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location"),
        Some(format!("{o}/login.html").as_str())
    );

    let r = login(
        p,
        host_of(&o),
        &[("referer", &referer), ("origin", &o)],
        "username=admin&password=admin",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{o}/status.html").as_str())
    );
    let cookie = r.header("set-cookie").expect("Set-Cookie").to_string();
    assert!(cookie.starts_with("sid="), "{cookie}");
    assert!(cookie.contains("; Domain=127.77.0.1"), "{cookie}");
    assert!(
        cookie.contains("; Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let sid = cookie.split(';').next().expect("sid=...").to_string();
    assert!(sid.len() > "sid=".len() + 16);

    let r = get(p, "/status.html", &[("cookie", &format!("lang=en; {sid}"))]).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = r.text();
    for needle in [
        "Printer status: Ready".to_string(),
        "127.77.0.1".to_string(),
        format!("<a href=\"{o}/status.html\">"),
        format!("<iframe src=\"{o}/frame.html\""),
        format!("new WebSocket(\"ws://{}/ws\")", host_of(&o)),
    ] {
        assert!(page.contains(&needle), "status page lacks {needle}: {page}");
    }

    // A made-up session, or another printer's, does not open it.
    let r = get(
        p,
        "/status.html",
        &[("cookie", "sid=00112233445566778899aabbccddeeff")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let r = get(&fleet.printers[1], "/status.html", &[("cookie", &sid)]).await;
    assert_eq!(r.status, StatusCode::FOUND);

    // Origin is optional (not every browser sends it on a form post).
    let r = login(
        p,
        host_of(&o),
        &[("referer", &referer)],
        "username=admin&password=admin",
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    fleet.shutdown().await;
}

/// (what, Host, headers, form, the word the 403 must contain)
type LoginCase<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[tokio::test]
async fn login_refuses_foreign_host_referer_origin_and_bad_credentials_naming_the_check() {
    let fleet = fleet().await;
    let p = &fleet.printers[0];
    let o = p.http_origin();
    let host = host_of(&o).to_string();
    let referer = format!("{o}/login.html");
    let good = "username=admin&password=admin";
    let relay_host = "relay.example.test:8443";
    let relay_origin = "https://relay.example.test:8443";
    let relay_referer = format!("{relay_origin}/p/1/login.html");
    let prefix_trick = format!("{o}0/login.html");

    let cases: Vec<LoginCase> = vec![
        (
            "relay Host",
            relay_host.into(),
            vec![("referer", &referer)],
            good,
            "Host",
        ),
        (
            "no port in Host",
            p.addr.to_string(),
            vec![("referer", &referer)],
            good,
            "Host",
        ),
        (
            "another printer's Host",
            format!("127.77.0.2:{}", p.http_port),
            vec![("referer", &referer)],
            good,
            "Host",
        ),
        (
            "relay Referer",
            host.clone(),
            vec![("referer", &relay_referer)],
            good,
            "Referer",
        ),
        ("no Referer", host.clone(), vec![], good, "Referer"),
        // Starts with the origin text but is another port: must not pass.
        (
            "Referer prefix trick",
            host.clone(),
            vec![("referer", &prefix_trick)],
            good,
            "Referer",
        ),
        (
            "relay Origin",
            host.clone(),
            vec![("referer", &referer), ("origin", relay_origin)],
            good,
            "Origin",
        ),
        (
            "wrong password",
            host.clone(),
            vec![("referer", &referer)],
            "username=admin&password=nope",
            "bad credentials",
        ),
        (
            "no fields",
            host.clone(),
            vec![("referer", &referer)],
            "",
            "bad credentials",
        ),
        // Checks run in order: a wrong Host is reported before bad credentials.
        (
            "both wrong",
            relay_host.into(),
            vec![],
            "username=x&password=y",
            "Host",
        ),
    ];
    for (what, host, headers, form, word) in cases {
        let r = login(p, &host, &headers, form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
        assert!(
            r.text().contains(word),
            "{what}: {:?} should name {word}",
            r.text()
        );
        assert!(r.header("set-cookie").is_none(), "{what}");
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn basic_auth_both_ways() {
    let fleet = fleet().await;
    let p = &fleet.printers[2];
    for auth in [None, Some("Basic YWRtaW46d3Jvbmc="), Some("Bearer x")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = get(p, "/basic", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Printer\"")
        );
    }
    // admin:admin
    let r = get(p, "/basic", &[("authorization", "Basic YWRtaW46YWRtaW4=")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text().trim(), "basic ok");
    fleet.shutdown().await;
}

#[tokio::test]
async fn download_streams_the_advertised_bytes_and_hash() {
    let fleet = fleet().await;
    let p = &fleet.printers[0];
    let size = 3 * 1024 * 1024 + 5;
    let r = get(p, &format!("/download?size={size}"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(r.body.len(), size);
    assert_eq!(
        hex::encode(Sha256::digest(&r.body)),
        download_sha256(size as u64)
    );

    let r = get(p, "/download?size=0", &[]).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    for bad in ["size=lots", "size=-1", "size=4294967297"] {
        let r = get(p, &format!("/download?{bad}"), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn upload_reports_length_and_hash() {
    let fleet = fleet().await;
    let p = &fleet.printers[0];
    let data: Vec<u8> = (0..(1024 * 1024 + 7))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut s = connect(p.http_addr()).await;
    let r = send(
        &mut s,
        request(
            Method::POST,
            "/upload",
            host_of(&p.http_origin()),
            &[],
            &data,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["bytes"], data.len() as u64);
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&data)));
    fleet.shutdown().await;
}

#[tokio::test]
async fn websocket_sends_status_at_once_and_echoes() {
    let fleet = fleet().await;
    let p = &fleet.printers[1];
    let url = format!("ws://{}/ws", p.http_addr());
    let tcp = TcpStream::connect(p.http_addr()).await.expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

    let first = tokio::time::timeout(Duration::from_millis(900), ws.next())
        .await
        .expect("status before the first second is up")
        .expect("a message")
        .expect("ok");
    let v: serde_json::Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(v["status"], "ready");
    assert!(v["pages"].as_u64().is_some(), "{v}");

    ws.send(Message::text("hello printer")).await.expect("send");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    let (mut text, mut bin) = (None, None);
    while text.is_none() || bin.is_none() {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("echo")
            .expect("msg")
            .expect("ok");
        match m {
            Message::Text(t) if t.as_str().starts_with("{\"") => {} // a status, interleaved
            Message::Text(t) => text = Some(t.to_string()),
            Message::Binary(b) => bin = Some(b.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text.as_deref(), Some("hello printer"));
    assert_eq!(bin, Some(vec![0u8, 1, 2, 255]));

    // The feed keeps coming: a second status within about a second.
    let next = tokio::time::timeout(Duration::from_millis(2500), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"ready\"") => return t,
                Some(Ok(_)) => continue,
                other => panic!("feed ended: {other:?}"),
            }
        }
    })
    .await
    .expect("periodic status");
    assert!(next.as_str().contains("pages"));

    // A plain GET on /ws is not an upgrade.
    let r = get(p, "/ws", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    fleet.shutdown().await;
}

#[tokio::test]
async fn https_serves_the_same_app_with_the_reported_certificate() {
    let fleet = fleet().await;
    let mut seen = std::collections::HashSet::new();
    for p in &fleet.printers {
        let addr = p.https_addr().expect("https");
        let (mut s, fp) = connect_tls(addr).await;
        assert_eq!(
            Some(&fp),
            p.cert_sha256.as_ref(),
            "certificate of {}",
            p.addr
        );
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, fp.to_lowercase());
        seen.insert(fp);

        let o = p.https_origin().expect("https origin");
        assert_eq!(o, format!("https://{}:{}", p.addr, addr.port()));
        let r = send(&mut s, request(Method::GET, "/", host_of(&o), &[], b"")).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.header("location"),
            Some(format!("{o}/login.html").as_str())
        );

        // Same keep-alive connection: the HTTPS origin is what log-in checks.
        let referer = format!("{o}/login.html");
        let r = send(
            &mut s,
            request(
                Method::POST,
                "/login",
                host_of(&o),
                &[
                    ("referer", &referer),
                    ("origin", &o),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                b"username=admin&password=admin",
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        assert_eq!(
            r.header("location"),
            Some(format!("{o}/status.html").as_str())
        );
        // The HTTP origin is foreign to the HTTPS listener.
        let r = send(
            &mut s,
            request(
                Method::POST,
                "/login",
                host_of(&o),
                &[("referer", &format!("{}/login.html", p.http_origin()))],
                b"username=admin&password=admin",
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.text().contains("Referer"));
    }
    assert_eq!(seen.len(), 3, "each printer has its own key");

    // A restarted fleet presents new certificates.
    let old = fleet.printers[0].cert_sha256.clone();
    fleet.shutdown().await;
    let again = Fleet::start(FleetConfig {
        addresses: vec![ip("127.77.0.1")],
        http_port: 0,
        https_port: Some(0),
        ..FleetConfig::default()
    })
    .await
    .expect("restart");
    assert!(again.printers[0].cert_sha256.is_some());
    assert_ne!(again.printers[0].cert_sha256, old);
    again.shutdown().await;
}

#[tokio::test]
async fn gzip_page_decodes_to_absolute_origin_links() {
    let fleet = fleet().await;
    let p = &fleet.printers[2];
    let link = format!("<a href=\"{}/status.html\">", p.http_origin());

    let r = get(
        p,
        "/compressed.html",
        &[("accept-encoding", "gzip, deflate")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(!r.text().contains(&link), "body should be compressed");
    let mut html = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut html)
        .expect("valid gzip");
    assert!(html.contains(&link), "{html}");
    assert!(r.body.len() < html.len() / 2, "gzip should shrink the page");

    let r = get(p, "/compressed.html", &[]).await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), html);
    fleet.shutdown().await;
}

#[tokio::test]
async fn assets_small_echo_and_not_found() {
    let fleet = fleet().await;
    let p = &fleet.printers[0];
    let o = p.http_origin();

    let r = get(p, "/style.css", &[]).await;
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert!(r.text().contains(&format!("url({o}/logo.png)")));
    let r = get(p, "/app.js", &[]).await;
    assert_eq!(r.header("content-type"), Some("application/javascript"));
    assert!(r.text().contains(&format!("var base = \"{o}/\";")));
    let r = get(p, "/logo.png", &[]).await;
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert!(r.body.starts_with(b"\x89PNG"));
    let r = get(p, "/frame.html", &[]).await;
    assert!(r.text().contains(&format!("{o}/status.html")));

    let r = get(p, "/small", &[]).await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body.len(), 1024);

    let r = get(
        p,
        "/echo-headers?x=1",
        &[("x-forwarded-for", "127.0.0.9"), ("cookie", "a=b")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/echo-headers");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["headers"]["host"], host_of(&o));
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.9");
    assert_eq!(v["headers"]["cookie"], "a=b");

    let r = get(p, "/no/such/page", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("/no/such/page is not on this printer"));
    // A known path with the wrong method.
    let mut s = connect(p.http_addr()).await;
    let r = send(
        &mut s,
        request(Method::DELETE, "/status.html", host_of(&o), &[], b""),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    fleet.shutdown().await;
}

#[tokio::test]
async fn stats_count_connections_requests_and_raw_bytes() {
    let fleet = fleet().await;
    let p = &fleet.printers[1];
    let host = host_of(&p.http_origin()).to_string();
    let req1 = format!("GET /small HTTP/1.1\r\nHost: {host}\r\nReferer: http://{host}/x\r\n\r\n");
    let req2 = format!(
        "GET /frame.html HTTP/1.1\r\nHost: {host}\r\nCookie: sid=42\r\nConnection: close\r\n\r\n"
    );

    // Two requests on one keep-alive connection, written as exact bytes.
    let mut tcp = TcpStream::connect(p.http_addr()).await.expect("connect");
    tcp.write_all(format!("{req1}{req2}").as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");

    assert_eq!(p.stats.connections(), 1);
    assert_eq!(p.stats.requests(), 2);
    assert_eq!(p.stats.bytes_received(), (req1.len() + req2.len()) as u64);
    let last = p.stats.last_request().expect("logged");
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/frame.html");
    assert_eq!(last.host.as_deref(), Some(host.as_str()));
    assert_eq!(last.cookie.as_deref(), Some("sid=42"));
    assert_eq!(last.referer, None);
    assert_eq!(last.origin, None);

    // HTTPS counts too, TLS records included: more than the HTTP text.
    let before = p.stats.bytes_received();
    let (mut s, _) = connect_tls(p.https_addr().expect("https")).await;
    let o = p.https_origin().expect("origin");
    let r = send(
        &mut s,
        request(Method::GET, "/small", host_of(&o), &[("origin", &o)], b""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(p.stats.connections(), 2);
    assert_eq!(p.stats.requests(), 3);
    assert!(p.stats.bytes_received() - before > req1.len() as u64 + 200);
    assert_eq!(p.stats.last_request().and_then(|l| l.origin), Some(o));

    // Each printer has its own counters.
    assert_eq!(fleet.printers[0].stats.requests(), 0);
    assert_eq!(fleet.printers[0].stats.connections(), 0);
    assert!(fleet.printers[0].stats.last_request().is_none());
    fleet.shutdown().await;
}

/// A port free on all of `addrs` right now (races are retried by callers).
async fn free_port_on(addrs: &[IpAddr]) -> u16 {
    let l = tokio::net::TcpListener::bind((addrs[0], 0))
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn fixed_ports_are_shared_by_every_printer_and_released_at_shutdown() {
    let addrs = vec![ip("127.77.1.1"), ip("127.77.1.2"), ip("127.77.1.3")];
    let mut tries = 0;
    let (fleet, http, https) = loop {
        tries += 1;
        let (http, https) = (free_port_on(&addrs).await, free_port_on(&addrs).await);
        let cfg = FleetConfig {
            addresses: addrs.clone(),
            http_port: http,
            https_port: Some(https),
            ..FleetConfig::default()
        };
        match Fleet::start(cfg).await {
            Ok(f) => break (f, http, https),
            Err(SimError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                continue
            }
            Err(e) => panic!("fleet: {e}"),
        }
    };
    for (p, a) in fleet.printers.iter().zip(&addrs) {
        assert_eq!((p.addr, p.http_port, p.https_port), (*a, http, Some(https)));
        let r = get(p, "/", &[]).await;
        assert_eq!(
            r.header("location"),
            Some(format!("http://{a}:{http}/login.html").as_str())
        );
    }
    let a0 = fleet.printers[0].http_addr();
    fleet.shutdown().await;
    // Nothing listens any more, and the port can be bound again.
    assert!(TcpStream::connect(a0).await.is_err());
    drop(
        tokio::net::TcpListener::bind(a0)
            .await
            .expect("port released"),
    );
}

#[tokio::test]
async fn a_port_in_use_fails_start_and_leaves_nothing_bound() {
    let addrs = vec![ip("127.77.2.1"), ip("127.77.2.2"), ip("127.77.2.3")];
    // Hold the port on the second address: the first binds, the second fails.
    let blocker = tokio::net::TcpListener::bind((addrs[1], 0))
        .await
        .expect("bind");
    let port = blocker.local_addr().expect("addr").port();
    let err = Fleet::start(FleetConfig {
        addresses: addrs.clone(),
        http_port: port,
        https_port: None,
        ..FleetConfig::default()
    })
    .await
    .expect_err("port in use");
    match &err {
        SimError::Bind { addr, source } => {
            assert_eq!(*addr, SocketAddr::new(addrs[1], port));
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&format!("127.77.2.2:{port}")));
    // The first address's listener was dropped with the failed start.
    drop(
        tokio::net::TcpListener::bind((addrs[0], port))
            .await
            .expect("released"),
    );

    assert!(matches!(
        Fleet::start(FleetConfig::default()).await,
        Err(SimError::NoAddresses)
    ));
}

#[tokio::test]
async fn dropping_the_fleet_stops_its_printers() {
    let fleet = Fleet::start(FleetConfig {
        addresses: vec![ip("127.77.0.4")],
        http_port: 0,
        https_port: None,
        ..FleetConfig::default()
    })
    .await
    .expect("fleet");
    let p = fleet.printers[0].clone();
    assert_eq!(p.https_port, None);
    assert_eq!(p.cert_sha256, None);
    assert_eq!(get(&p, "/small", &[]).await.status, StatusCode::OK);
    drop(fleet);
    // The accept loop sees the cancellation on its next poll.
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(p.http_addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after drop");
}
