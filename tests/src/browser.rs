//! An HTTP client that behaves like a browser, for web-session tests: it
//! resolves every name under the relay's domain to the relay, trusts the
//! relay's certificate, keeps cookies per host, follows redirects itself and
//! sends the Referer (and, on POST, the Origin) of the page it is on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, LOCATION, ORIGIN, REFERER};
use reqwest::{Method, StatusCode, Url};

use crate::{Relay, HTTPS_PORT};

/// Every name resolves to the relay (as `*.localhost` does in browsers).
struct ToRelay(SocketAddr);

impl reqwest::dns::Resolve for ToRelay {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(async move {
            let it: reqwest::dns::Addrs = Box::new(std::iter::once(addr));
            Ok(it)
        })
    }
}

pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Page {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Browser {
    pub client: reqwest::Client,
    /// The cookie jar, per host as a browser keeps it.
    pub jar: Arc<reqwest::cookie::Jar>,
    /// The page the browser is on: Referer and Origin come from it.
    pub page: Option<Url>,
    /// Every URL visited, redirects included.
    pub visited: Vec<Url>,
}

/// Where a test's relay serves HTTPS, and its certificate file.
fn relay_https(relay: &Relay) -> (SocketAddr, std::path::PathBuf) {
    let addr = format!("{}:{HTTPS_PORT}", relay.ip(1))
        .parse()
        .expect("relay address");
    (addr, relay.data.join("tls_cert.pem"))
}

/// A client that sends every host name to `addr`, trusts only the relay's
/// certificate in `cert_pem`, keeps cookies in `jar` and never follows
/// redirects (tests look at each hop).
fn relay_client(
    addr: SocketAddr,
    cert_pem: &std::path::Path,
    jar: Arc<reqwest::cookie::Jar>,
) -> reqwest::Client {
    let pem = std::fs::read(cert_pem).expect("relay certificate file");
    let cert = reqwest::Certificate::from_pem(&pem).expect("relay certificate");
    reqwest::Client::builder()
        .dns_resolver(Arc::new(ToRelay(addr)))
        .add_root_certificate(cert)
        .tls_built_in_root_certs(false)
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("relay client")
}

impl Browser {
    pub fn new(relay: &Relay) -> Self {
        let (addr, cert) = relay_https(relay);
        Self::at(addr, &cert)
    }

    /// A browser for the relay at `addr` whose certificate is in `cert_pem`.
    pub fn at(addr: SocketAddr, cert_pem: &std::path::Path) -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = relay_client(addr, cert_pem, jar.clone());
        Self {
            client,
            jar,
            page: None,
            visited: vec![],
        }
    }

    fn origin_of(u: &Url) -> String {
        u.origin().ascii_serialization()
    }

    /// One request, with the page's Referer (and Origin when `origin`), then
    /// the redirects, as a browser follows them.
    pub async fn request(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut url = match &self.page {
            Some(p) => p.join(url).expect("url"),
            None => Url::parse(url).expect("url"),
        };
        let mut method = method;
        let mut form = form.map(|f| f.to_vec());
        for _ in 0..10 {
            self.visited.push(url.clone());
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some(p) = &self.page {
                req = req.header(REFERER, p.as_str());
                if method == Method::POST {
                    req = req.header(ORIGIN, Self::origin_of(p));
                }
            }
            if let Some(f) = &form {
                req = req.form(f);
            }
            let again = req.try_clone();
            let resp = match (req.send().await, again) {
                (Ok(r), _) => r,
                // As a browser does, a GET is sent once more when the server
                // closed the kept-alive connection under it.
                (Err(_), Some(again)) if method == Method::GET => again
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
                (Err(e), _) => panic!("{method} {url}: {e}"),
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            if status.is_redirection() {
                if let Some(loc) = headers.get(LOCATION).and_then(|l| l.to_str().ok()) {
                    url = url.join(loc).expect("Location");
                    // 303 (and 301/302 after POST, as browsers do) turn into GET.
                    if status != StatusCode::TEMPORARY_REDIRECT
                        && status != StatusCode::PERMANENT_REDIRECT
                    {
                        method = Method::GET;
                        form = None;
                    }
                    continue;
                }
            }
            let body = resp.bytes().await.unwrap_or_default();
            self.page = Some(url.clone());
            return Page {
                url,
                status,
                headers,
                body,
            };
        }
        panic!("too many redirects: {:?}", self.visited);
    }

    pub async fn get(&mut self, url: &str) -> Page {
        self.request(Method::GET, url, None).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        self.request(Method::POST, url, Some(form)).await
    }

    /// The Cookie header the browser would send to `url`.
    pub fn cookies_for(&self, url: &str) -> String {
        use reqwest::cookie::CookieStore;
        let u = Url::parse(url).expect("url");
        self.jar
            .cookies(&u)
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    }

    /// A WebSocket to `url` (wss://), with this browser's cookies and the
    /// Origin of its page, over TLS to the relay.
    pub async fn websocket(&self, relay: &Relay, url: &str) -> Result<WebSocket, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let u = Url::parse(url).map_err(|e| e.to_string())?;
        let host = u.host_str().ok_or("no host")?.to_string();
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(relay.data.join("tls_cert.pem")).map_err(|e| e.to_string())?;
        for c in rustls_pemfile_certs(&pem) {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(format!("{}:{HTTPS_PORT}", relay.ip(1)))
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        let cookie = self.cookies_for(&url.replacen("wss://", "https://", 1));
        if !cookie.is_empty() {
            req.headers_mut()
                .insert("cookie", cookie.parse().map_err(|_| "cookie header")?);
        }
        if let Some(p) = &self.page {
            req.headers_mut().insert(
                "origin",
                Self::origin_of(p).parse().map_err(|_| "origin header")?,
            );
        }
        let (ws, _) = tokio_tungstenite::client_async(req, tls)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }
}

pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// A client for the JSON API (not a browser: no Referer games), holding the
/// log-in cookie.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    /// The log-in's CSRF token, sent as `X-CSRF-Token` on writes.
    pub csrf: Option<String>,
    /// An API token, sent as `Authorization: Bearer` (instead of a cookie).
    pub bearer: Option<String>,
}

impl Api {
    pub fn new(relay: &Relay) -> Self {
        let (addr, cert) = relay_https(relay);
        Self::at(addr, &cert)
    }

    /// An API client for the relay at `addr` whose certificate is in `cert_pem`.
    pub fn at(addr: SocketAddr, cert_pem: &std::path::Path) -> Self {
        let client = relay_client(addr, cert_pem, Arc::default());
        Self {
            client,
            base: format!("https://dwa.localhost:{HTTPS_PORT}/api/v1"),
            csrf: None,
            bearer: None,
        }
    }

    /// An API client whose connections come from `source` (a loopback
    /// address of the fixture's subnet): raw tunnels serve only it.
    pub fn from_source(relay: &Relay, source: std::net::IpAddr) -> Self {
        let (addr, cert) = relay_https(relay);
        let pem = std::fs::read(&cert).expect("relay certificate file");
        let cert = reqwest::Certificate::from_pem(&pem).expect("relay certificate");
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(ToRelay(addr)))
            .add_root_certificate(cert)
            .tls_built_in_root_certs(false)
            .cookie_provider(Arc::new(reqwest::cookie::Jar::default()))
            .local_address(source)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("relay client");
        Self {
            client,
            base: format!("https://dwa.localhost:{HTTPS_PORT}/api/v1"),
            csrf: None,
            bearer: None,
        }
    }

    /// Logged in as `user` (with a TOTP code when the relay's test
    /// support knows the user's secret).
    pub async fn login(relay: &Relay, user: &str, password: &str) -> Self {
        let code = relay.totp.code(user).await;
        Self::new(relay)
            .log_in_with(user, password, code.as_deref())
            .await
    }

    /// This client, logged in with a one-time password: the restricted
    /// log-in, its CSRF token kept. Asserts the relay asks for a new
    /// password.
    pub async fn log_in_once(mut self, user: &str, one_time: &str) -> Self {
        let req = serde_json::json!({"username": user, "password": one_time});
        let (status, body) = self.call(Method::POST, "/login", Some(req)).await;
        assert_eq!(status, StatusCode::OK, "first log-in as {user}: {body}");
        assert_eq!(body["password_change_required"], true, "{body}");
        self.csrf = body["csrf_token"].as_str().map(str::to_string);
        self
    }

    /// This client, calling with an API token.
    pub fn with_bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_string());
        self
    }

    /// This client, logged in as `user` with a password only.
    pub async fn log_in(self, user: &str, password: &str) -> Self {
        self.log_in_with(user, password, None).await
    }

    /// This client, logged in as `user` (and `totp`, if given).
    pub async fn log_in_with(mut self, user: &str, password: &str, totp: Option<&str>) -> Self {
        let mut req = serde_json::json!({"username": user, "password": password});
        if let Some(t) = totp {
            req["totp"] = t.into();
        }
        let (status, body) = self.call(Method::POST, "/login", Some(req)).await;
        assert_eq!(status, StatusCode::OK, "login as {user}: {body}");
        self.csrf = body["csrf_token"].as_str().map(str::to_string);
        self
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let write = method != Method::GET && method != Method::HEAD;
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let (true, Some(t)) = (write, &self.csrf) {
            req = req.header("x-csrf-token", t);
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status();
        let v = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, v)
    }
}

/// A new user's first log-in: the administrator's one-time password
/// replaced by `own`, then two-factor enrolled if the log-in is still
/// restricted (its secret goes to `relay.totp`), then logged out.
pub async fn first_login(relay: &Relay, user: &str, one_time: &str, own: &str) {
    let api = Api::new(relay).log_in_once(user, one_time).await;
    let (status, v) = api
        .call(
            Method::POST,
            "/me/password",
            Some(serde_json::json!({"current_password": one_time, "new_password": own})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user} changes the password: {v}");
    if v["totp_enrollment_required"] == true {
        let (status, e) = api.call(Method::POST, "/me/totp", None).await;
        assert_eq!(status, StatusCode::OK, "{user} starts two-factor: {e}");
        let uri = e["otpauth_uri"].as_str().expect("otpauth_uri");
        relay.totp.add(user, uri);
        let code = relay.totp.code(user).await;
        let (status, v) = api
            .call(
                Method::POST,
                "/me/totp/confirm",
                Some(serde_json::json!({"code": code})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{user} confirms two-factor: {v}");
    }
    // Leaves no log-in behind for the test to count.
    let (status, v) = api.call(Method::POST, "/logout", None).await;
    assert_eq!(status, StatusCode::OK, "{user} logs out: {v}");
}

/// Uploads `items` to the relay's ingest endpoint signed as `agent` signs
/// them, and requires every item accepted.
pub async fn ingest_signed(
    api: &Api,
    agent: &crate::Agent,
    items: Vec<dwa_proto::telemetry::IngestItem>,
) {
    use dwa_proto::telemetry::{IngestBatch, INGEST_PATH};
    let key = russh::keys::load_secret_key(agent.key_path(), None).expect("agent key");
    let body = serde_json::to_vec(&IngestBatch { items }).expect("batch");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let auth =
        dwa_link::agent_auth::sign(&key, &agent.id, "POST", INGEST_PATH, now, &body).expect("sign");
    let r = api
        .client
        .post(format!(
            "https://dwa.localhost:{}{INGEST_PATH}",
            crate::HTTPS_PORT
        ))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("ingest");
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    assert_eq!(v["rejected"].as_array().map(Vec::len), Some(0), "{v}");
}
