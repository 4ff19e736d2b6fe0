//! One printer's embedded web server: routing and handlers, shared by the
//! HTTP and HTTPS listeners (each a [`Site`] with its own origin).

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::response::Builder;
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::download::{DownloadBody, DEFAULT_DOWNLOAD, MAX_DOWNLOAD};
use crate::pages;
use crate::stats::{RequestLog, Stats};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Largest log-in form read: a real form is a few dozen bytes.
const MAX_FORM: usize = 16 * 1024;
/// Sessions kept per printer; beyond it an arbitrary one is forgotten, like
/// a printer's small session table (and memory stays bounded under load).
const MAX_SESSIONS: usize = 4096;

/// What a printer's two listeners share.
pub(crate) struct PrinterState {
    pub(crate) addr: IpAddr,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) stats: Arc<Stats>,
    sessions: Mutex<HashSet<String>>,
    /// Reported by the WebSocket status messages.
    pub(crate) pages: AtomicU64,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl PrinterState {
    pub(crate) fn new(
        addr: IpAddr,
        username: String,
        password: String,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        // A plausible page counter that differs between printers.
        let seed = match addr {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => u128::from(a) as u64,
        };
        PrinterState {
            addr,
            username,
            password,
            stats: Arc::new(Stats::default()),
            sessions: Mutex::new(HashSet::new()),
            pages: AtomicU64::new(10_000 + (seed % 1000) * 37),
            cancel,
            tracker,
        }
    }

    fn new_session(&self) -> String {
        let sid = hex::encode(rand::random::<[u8; 16]>());
        let mut set = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= MAX_SESSIONS {
            if let Some(old) = set.iter().next().cloned() {
                set.remove(&old);
            }
        }
        set.insert(sid.clone());
        sid
    }

    fn has_session(&self, sid: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(sid)
    }
}

/// One listener of a printer: the printer plus the origin it answers as.
pub(crate) struct Site {
    pub(crate) printer: Arc<PrinterState>,
    pub(crate) tls: bool,
    /// `http://127.77.0.1:18080`, `https://[::1]`: no trailing slash.
    pub(crate) origin: String,
    /// The authority part of `origin`, what Host must say.
    pub(crate) host: String,
    /// Also accepted as Host when the port is the scheme's default.
    host_alt: Option<String>,
}

impl Site {
    pub(crate) fn new(printer: Arc<PrinterState>, tls: bool, port: u16) -> Self {
        let ip = match printer.addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, host_alt) = if port == default_port {
            (ip.clone(), Some(format!("{ip}:{port}")))
        } else {
            (format!("{ip}:{port}"), None)
        };
        let scheme = if tls { "https" } else { "http" };
        Site {
            origin: format!("{scheme}://{host}"),
            printer,
            tls,
            host,
            host_alt,
        }
    }

    fn host_ok(&self, got: &str) -> bool {
        got.eq_ignore_ascii_case(&self.host)
            || self
                .host_alt
                .as_deref()
                .is_some_and(|h| got.eq_ignore_ascii_case(h))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().boxed()
}

/// Finishes a builder; only header values that cannot occur here would fail it.
pub(crate) fn finish(b: Builder, body: Body) -> Response<Body> {
    b.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "building a response failed");
        let mut r = Response::new(full("internal error\n"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    finish(
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, ctype),
        full(body),
    )
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

fn html(body: String) -> Response<Body> {
    reply(StatusCode::OK, "text/html; charset=utf-8", body)
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    finish(
        Response::builder()
            .status(status)
            .header(header::LOCATION, location),
        empty(),
    )
}

fn json(value: serde_json::Value) -> Response<Body> {
    reply(StatusCode::OK, "application/json", value.to_string())
}

/// Every request: count it, remember it, answer it.
pub(crate) async fn handle(
    site: Arc<Site>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let h = req.headers();
    site.printer.stats.record_request(RequestLog {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        host: header_str(h, header::HOST),
        referer: header_str(h, header::REFERER),
        origin: header_str(h, header::ORIGIN),
        cookie: header_str(h, header::COOKIE),
    });
    let mut resp = route(&site, req).await;
    // Like a printer's embedded server; the agent's HTTP probe reports it.
    // (WebSocket upgrades keep theirs: none.)
    if !resp.headers().contains_key(header::SERVER) {
        resp.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static(SERVER));
    }
    Ok(resp)
}

/// The `Server` header of every answer.
pub const SERVER: &str = "DWA-Sim/1.0 (embedded web server)";

async fn route(site: &Arc<Site>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let o = site.origin.as_str();
    let addr = site.printer.addr.to_string();
    match (path.as_str(), get) {
        ("/", true) => redirect(StatusCode::FOUND, &site.url("/login.html")),
        ("/login.html", true) => html(pages::login(o, &addr)),
        ("/login", _) if req.method() == Method::POST => login(site, req).await,
        ("/status.html", true) => {
            if session_of(req.headers()).is_some_and(|s| site.printer.has_session(&s)) {
                let ws_url = format!("{}://{}/ws", if site.tls { "wss" } else { "ws" }, site.host);
                html(pages::status(o, &addr, &ws_url))
            } else {
                redirect(StatusCode::FOUND, &site.url("/login.html"))
            }
        }
        ("/frame.html", true) => html(pages::frame(o)),
        ("/style.css", true) => reply(StatusCode::OK, "text/css", pages::style(o)),
        ("/app.js", true) => reply(StatusCode::OK, "application/javascript", pages::app_js(o)),
        ("/logo.png", true) => reply(StatusCode::OK, "image/png", pages::LOGO_PNG),
        ("/compressed.html", true) => compressed(site, req.headers()),
        ("/basic", true) => basic(site, req.headers()),
        ("/download", true) => download(req.uri().query()),
        ("/upload", _) if req.method() == Method::POST => upload(req).await,
        ("/small", true) => text(StatusCode::OK, "x".repeat(1023) + "\n"),
        ("/ws", true) => crate::ws::upgrade(site.clone(), req),
        ("/echo-headers", _) => echo_headers(&req),
        (
            "/" | "/login.html" | "/login" | "/status.html" | "/frame.html" | "/style.css"
            | "/app.js" | "/logo.png" | "/compressed.html" | "/basic" | "/download" | "/upload"
            | "/small" | "/ws",
            _,
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/html; charset=utf-8",
            pages::not_found(&path),
        ),
    }
}

/// The `sid` cookie's value, from any Cookie header.
fn session_of(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == "sid").then(|| v.to_string())
        })
}

/// The checks real printers make, in their order; 403 names the one that
/// failed so a proxy's test can tell which header it got wrong.
async fn login(site: &Site, req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let host = header_str(h, header::HOST);
    if !host.as_deref().is_some_and(|got| site.host_ok(got)) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "wrong Host header: expected {}, got {}\n",
                site.host,
                host.as_deref().unwrap_or("none")
            ),
        );
    }
    let referer = header_str(h, header::REFERER);
    let prefix = format!("{}/", site.origin);
    if !referer.as_deref().is_some_and(|r| r.starts_with(&prefix)) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "bad Referer header: expected {prefix}..., got {}\n",
                referer.as_deref().unwrap_or("none")
            ),
        );
    }
    if let Some(origin) = header_str(h, header::ORIGIN) {
        if origin != site.origin {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "bad Origin header: expected {}, got {origin}\n",
                    site.origin
                ),
            );
        }
    }
    let form = match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("unreadable form: {e}\n")),
    };
    let (mut user, mut pass) = (None, None);
    for (k, v) in url::form_urlencoded::parse(&form) {
        match k.as_ref() {
            "username" => user = Some(v.into_owned()),
            "password" => pass = Some(v.into_owned()),
            _ => {}
        }
    }
    let p = &site.printer;
    if user.as_deref() != Some(p.username.as_str()) || pass.as_deref() != Some(p.password.as_str())
    {
        return text(StatusCode::FORBIDDEN, "bad credentials\n");
    }
    let sid = p.new_session();
    finish(
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, site.url("/status.html"))
            .header(
                header::SET_COOKIE,
                format!("sid={sid}; Domain={}; Path=/; HttpOnly", p.addr),
            ),
        empty(),
    )
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut parts = t.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn compressed(site: &Site, h: &HeaderMap) -> Response<Body> {
    let page = pages::compressed(&site.origin, &site.printer.addr.to_string());
    let b = Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::VARY, "Accept-Encoding");
    if !accepts_gzip(h) {
        return finish(b, full(page));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    match enc.write_all(page.as_bytes()).and_then(|()| enc.finish()) {
        Ok(gz) => finish(b.header(header::CONTENT_ENCODING, "gzip"), full(gz)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("gzip: {e}\n")),
    }
}

fn basic(site: &Site, h: &HeaderMap) -> Response<Body> {
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let p = &site.printer;
    let ok = given
        .as_deref()
        .and_then(|s| s.split_once(':'))
        .is_some_and(|(u, pw)| u == p.username && pw == p.password);
    if ok {
        return text(StatusCode::OK, "basic ok\n");
    }
    finish(
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"Printer\"")
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        full("authorization required\n"),
    )
}

fn download(query: Option<&str>) -> Response<Body> {
    let size = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "size")
        .map(|(_, v)| v.parse::<u64>());
    let size = match size {
        None => DEFAULT_DOWNLOAD,
        Some(Ok(n)) if n <= MAX_DOWNLOAD => n,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("size must be a byte count up to {MAX_DOWNLOAD}\n"),
            )
        }
    };
    finish(
        Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            // Set explicitly as well as implied by the exact size hint, so
            // HEAD answers carry it too.
            .header(header::CONTENT_LENGTH, HeaderValue::from(size)),
        DownloadBody::new(size).boxed(),
    )
}

/// Hashes the body as it streams in: nothing is kept.
async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut h = Sha256::new();
    let mut n: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    h.update(d);
                    n += d.len() as u64;
                }
            }
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("upload interrupted: {e}\n"),
                );
            }
        }
    }
    json(serde_json::json!({ "bytes": n, "sha256": hex::encode(h.finalize()) }))
}

/// Method, path (with query, if any) and headers; repeated headers are joined
/// with ", " so `headers` maps each lowercase name to one string.
fn echo_headers(req: &Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), v.into());
            }
        }
    }
    json(serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(addr: &str, tls: bool, port: u16) -> Site {
        let p = PrinterState::new(
            addr.parse().expect("addr"),
            "admin".into(),
            "admin".into(),
            CancellationToken::new(),
            TaskTracker::new(),
        );
        Site::new(Arc::new(p), tls, port)
    }

    #[test]
    fn origin_omits_default_ports_and_brackets_ipv6() {
        let s = site("127.77.0.1", false, 80);
        assert_eq!(s.origin, "http://127.77.0.1");
        assert!(s.host_ok("127.77.0.1") && s.host_ok("127.77.0.1:80"));
        assert!(!s.host_ok("127.77.0.2"));

        let s = site("127.77.0.1", false, 8080);
        assert_eq!(s.origin, "http://127.77.0.1:8080");
        assert!(s.host_ok("127.77.0.1:8080"));
        assert!(!s.host_ok("127.77.0.1"), "a non-default port must be named");

        let s = site("127.77.0.1", true, 443);
        assert_eq!(s.origin, "https://127.77.0.1");
        assert!(s.host_ok("127.77.0.1:443"));
        // 80 is not HTTPS's default.
        assert_eq!(site("127.77.0.1", true, 80).origin, "https://127.77.0.1:80");

        let s = site("::1", false, 8080);
        assert_eq!(s.origin, "http://[::1]:8080");
        assert_eq!(site("::1", true, 443).origin, "https://[::1]");
    }

    #[test]
    fn cookie_and_gzip_header_parsing() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("lang=en; theme=x"));
        h.append(header::COOKIE, HeaderValue::from_static("a=b;sid=abc123 "));
        assert_eq!(session_of(&h).as_deref(), Some("abc123"));
        assert_eq!(session_of(&HeaderMap::new()), None);

        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, GZIP;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("x-gzip-like"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = site("127.77.0.1", false, 80);
        let first = s.printer.new_session();
        assert!(s.printer.has_session(&first));
        for _ in 0..MAX_SESSIONS + 10 {
            s.printer.new_session();
        }
        assert_eq!(s.printer.sessions.lock().expect("lock").len(), MAX_SESSIONS);
    }
}
