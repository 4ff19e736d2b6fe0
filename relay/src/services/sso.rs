//! Single sign-on for directory users: OpenID Connect, authorization code
//! flow with PKCE (S256), through the `openidconnect` crate.
//!
//! `GET /auth/oidc/login` keeps a pending log-in (PKCE verifier, nonce, a
//! browser binding) under a fresh `state` and sends the browser to the
//! provider. `GET /auth/oidc/callback` takes that pending log-in back (once),
//! exchanges the code, lets the crate verify the ID token (signature, issuer,
//! audience, expiry, nonce), maps the provider's groups to a role and
//! customers, creates or refreshes the user (source `oidc`, keyed by issuer
//! and subject) and opens an ordinary log-in session. Decisions: docs/sso.md.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use dwa_policy::roles::Role;
use dwa_proto::audit::kind;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::adapters::http::{api_error, PeerAddr};
use crate::app::Relay;
use crate::config::Secret;
use crate::error::{RelayError, Result};
use crate::util::{random_secret, sha256_hex};

/// Browser binding of a pending log-in: only the browser that started it
/// may finish it (stops log-in CSRF with a stolen or planted `state`).
/// SameSite=Lax: it must ride along on the provider's top-level redirect.
pub const PENDING_COOKIE: &str = "dwa_oidc";
pub const LOGIN_PATH: &str = "/auth/oidc/login";
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// A pending log-in lives this long (the user types a password and maybe a
/// second factor at the provider).
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Pending log-ins kept at most; more are refused until some finish or expire.
pub const MAX_PENDING: usize = 1000;
/// Discovery document and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(10 * 60);
/// A provider's answer (discovery, keys, token, userinfo) is read up to this.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Groups looked at per log-in, and the longest group name considered.
const MAX_GROUPS: usize = 1000;
const MAX_GROUP_LEN: usize = 256;
/// Password hash of directory users: not a PHC string, so no password ever
/// verifies against it.
pub const NO_PASSWORD: &str = "!oidc";

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_ca_file() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[oidc]` in relay.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL (discovery: `<issuer>/.well-known/openid-configuration`).
    /// `https://`; `http://` only on a loopback address (tests).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim (in the ID token, else from userinfo) that lists the groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Roots for an `https://` issuer (the provider's CA).
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Each call to the provider, connect to last byte.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Group → role and customers. See [`map_groups`] for several matches.
    #[serde(default)]
    pub map: Vec<GroupMap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupMap {
    /// Group name as the provider sends it (exact, case-sensitive).
    pub group: String,
    /// admin, technician, viewer or customer.
    pub role: String,
    /// Customer names (as `dwa-relay customer add` made them).
    #[serde(default)]
    pub customers: Vec<String>,
}

/// Whether `host` (from a URL) is a loopback address or `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `https://…`, or `http://` to a loopback host; anything else is refused.
fn allowed_url(u: &url::Url) -> bool {
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => u.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

impl OidcSection {
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: &str| Err(RelayError::Config(format!("oidc.{k}: {why}")));
        match url::Url::parse(&self.issuer) {
            Ok(u) if allowed_url(&u) && u.query().is_none() && u.fragment().is_none() => {}
            _ => {
                return bad(
                    "issuer",
                    "must be an https:// URL (http:// only on a loopback address), without query",
                )
            }
        }
        if self.client_id.trim().is_empty() || self.client_id.len() > 255 {
            return bad("client_id", "must be 1..=255 characters");
        }
        if self.client_secret.expose().is_empty() {
            return bad("client_secret", "must be set");
        }
        if self.scopes.len() > 20
            || self
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 100 || !s.chars().all(|c| c.is_ascii_graphic()))
        {
            return bad(
                "scopes",
                "at most 20 scope names, each 1..=100 printable characters without spaces",
            );
        }
        if self.groups_claim.trim().is_empty() {
            return bad("groups_claim", "must be set");
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(10) {
            return bad("timeout", "must be 1s..=10s");
        }
        if self.map.is_empty() {
            return bad(
                "map",
                "needs at least one [[oidc.map]] (group → role); no mapping would refuse everyone",
            );
        }
        for (i, m) in self.map.iter().enumerate() {
            if m.group.is_empty() || m.group.len() > MAX_GROUP_LEN {
                return bad(&format!("map[{i}].group"), "must be 1..=256 characters");
            }
            if m.role.parse::<Role>().is_err() {
                return bad(
                    &format!("map[{i}].role"),
                    "must be admin, technician, viewer or customer",
                );
            }
            if m.customers.iter().any(|c| c.trim().is_empty()) {
                return bad(&format!("map[{i}].customers"), "names must not be empty");
            }
        }
        Ok(())
    }
}

/// What a user's groups grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub role: Role,
    /// Customer names, sorted, without duplicates.
    pub customers: Vec<String>,
    /// The groups that matched a mapping.
    pub matched: Vec<String>,
}

/// Most privileged first.
fn privilege(r: Role) -> u8 {
    match r {
        Role::Admin => 3,
        Role::Technician => 2,
        Role::Viewer => 1,
        Role::Customer => 0,
    }
}

/// Maps the provider's groups: every mapping whose group the user is in
/// counts; the most privileged of their roles wins and the customers are
/// the union of theirs. No match: `None` (the log-in is refused).
pub fn map_groups(maps: &[GroupMap], groups: &[String]) -> Option<Mapped> {
    let mut role: Option<Role> = None;
    let mut customers = BTreeSet::new();
    let mut matched = BTreeSet::new();
    for m in maps.iter().filter(|m| groups.iter().any(|g| g == &m.group)) {
        // Validated at start; a bad role here is skipped, never granted.
        let Ok(r) = m.role.parse::<Role>() else {
            continue;
        };
        if role.is_none_or(|cur| privilege(r) > privilege(cur)) {
            role = Some(r);
        }
        customers.extend(m.customers.iter().cloned());
        matched.insert(m.group.clone());
    }
    role.map(|role| Mapped {
        role,
        customers: customers.into_iter().collect(),
        matched: matched.into_iter().collect(),
    })
}

/// The groups in a claim's value: an array of strings, or one string.
/// Other types give none; the count and lengths are bounded.
pub fn groups_from(v: Option<&Value>) -> Vec<String> {
    let strs: Vec<&str> = match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => vec![],
    };
    strs.into_iter()
        .filter(|g| !g.is_empty() && g.len() <= MAX_GROUP_LEN)
        .take(MAX_GROUPS)
        .map(String::from)
        .collect()
}

/// Every claim beyond the standard ones, by name (the groups claim's name
/// is configurable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims(HashMap<String, Value>);
impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResp = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResp,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// An HTTP failure talking to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The crate's HTTP client, over our hyper and rustls: one request per
/// connection, no redirects followed, `https://` (or loopback `http://`)
/// only, the answer read up to [`MAX_RESPONSE_BYTES`], all within `timeout`.
#[derive(Clone)]
struct Http {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Http {
    async fn call(
        &self,
        req: openidconnect::HttpRequest,
    ) -> std::result::Result<openidconnect::HttpResponse, HttpError> {
        let err = |m: String| HttpError(m);
        let uri = req.uri().clone();
        let url = url::Url::parse(&uri.to_string()).map_err(|e| err(format!("URL: {e}")))?;
        if !allowed_url(&url) {
            return Err(err(format!(
                "{url}: only https:// (or http:// on loopback) is allowed"
            )));
        }
        let https = url.scheme() == "https";
        let host = url
            .host_str()
            .ok_or_else(|| err("URL without host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let tls = self.tls.clone();
        let timeout = self.timeout;
        let work = async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| err(format!("connect {host}:{port}: {e}")))?;
            let io: Box<dyn Io> = if https {
                let cfg = tls.ok_or_else(|| err("no TLS configuration".into()))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| err(format!("server name: {e}")))?;
                Box::new(
                    tokio_rustls::TlsConnector::from(cfg)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| err(format!("TLS: {e}")))?,
                )
            } else {
                Box::new(tcp)
            };
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| err(format!("HTTP: {e}")))?;
            // The connection task ends with the exchange; bounded anyway.
            let limit = timeout;
            tokio::spawn(
                async move {
                    let _ = tokio::time::timeout(limit, conn).await;
                }
                .instrument(tracing::debug_span!("oidc_http")),
            );
            let (parts, body) = req.into_parts();
            let mut out = http::Request::builder()
                .method(parts.method)
                .uri(path)
                .header(header::HOST, authority)
                .header(
                    header::USER_AGENT,
                    concat!("dwa-relay/", env!("CARGO_PKG_VERSION")),
                );
            for (k, v) in parts.headers.iter() {
                if k != header::HOST {
                    out = out.header(k, v);
                }
            }
            let out = out
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .map_err(|e| err(format!("request: {e}")))?;
            let resp = send
                .send_request(out)
                .await
                .map_err(|e| err(format!("HTTP: {e}")))?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| err(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(err(format!("{uri}: no answer within {:?}", self.timeout))),
        }
    }
}

/// A log-in between `/auth/oidc/login` and its callback.
struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    /// SHA-256 of the browser's [`PENDING_COOKIE`].
    binding: String,
    created: Instant,
}

/// Single sign-on state: the configuration, the HTTP client, the pending
/// log-ins and the provider's metadata (cached).
pub struct Oidc {
    cfg: OidcSection,
    http: Http,
    pending: Mutex<HashMap<String, Pending>>,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Oidc {
    pub fn new(cfg: &OidcSection) -> Result<Oidc> {
        let tls = if cfg.issuer.starts_with("https://") {
            Some(Arc::new(load_roots(&cfg.ca_file)?))
        } else {
            None
        };
        Ok(Oidc {
            cfg: cfg.clone(),
            http: Http {
                tls,
                timeout: cfg.timeout,
            },
            pending: Mutex::new(HashMap::new()),
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// Keeps a pending log-in; `false` when [`MAX_PENDING`] are in flight.
    fn put_pending(&self, state: String, p: Pending) -> bool {
        let Ok(mut map) = self.pending.lock() else {
            return false;
        };
        map.retain(|_, v| v.created.elapsed() < PENDING_TTL);
        if map.len() >= MAX_PENDING {
            return false;
        }
        map.insert(state, p);
        true
    }

    /// Takes a pending log-in back (each `state` works once).
    fn take_pending(&self, state: &str) -> Option<Pending> {
        let mut map = self.pending.lock().ok()?;
        map.remove(state)
            .filter(|p| p.created.elapsed() < PENDING_TTL)
    }

    async fn metadata(&self) -> std::result::Result<CoreProviderMetadata, String> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref() {
            if at.elapsed() < METADATA_TTL {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let http = self.http.clone();
        let client = move |r| {
            let h = http.clone();
            async move { h.call(r).await }
        };
        let m = CoreProviderMetadata::discover_async(issuer, &client)
            .await
            .map_err(|e| format!("discovery: {}", error_chain(&e)))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    /// After a verification failure the provider may have rotated its keys.
    async fn forget_metadata(&self) {
        *self.metadata.lock().await = None;
    }

    async fn client(&self, redirect: &str) -> std::result::Result<OidcClient, String> {
        let m = self.metadata().await?;
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| e.to_string())?;
        Ok(OidcClient::from_provider_metadata(
            m,
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(
                self.cfg.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(redirect))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn load_roots(ca_file: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca_file).map_err(|e| RelayError::file(ca_file, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(RelayError::Config(format!(
            "oidc.ca_file {}: no certificates",
            ca_file.display()
        )));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RelayError::Tls(e.to_string()))
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

pub fn routes() -> Router<Relay> {
    Router::new()
        .route(LOGIN_PATH, get(login))
        .route(CALLBACK_PATH, get(callback))
}

fn redirect_uri(relay: &Relay) -> String {
    format!("{}{CALLBACK_PATH}", relay.portal_origin())
}

fn wants_html(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An HTML page for a browser, the API's JSON error otherwise.
fn answer(html: bool, status: StatusCode, code: &str, title: &str, msg: &str) -> Response {
    if !html {
        return api_error(status, code, msg);
    }
    let mut r = crate::adapters::web::proxy::page(status, title, &html_escape(msg)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Starts a single-sign-on log-in: redirects to the identity provider.
#[utoipa::path(
    get,
    path = "/auth/oidc/login",
    tag = "sso",
    security(()),
    responses(
        (status = 303, description = "Redirect to the identity provider's log-in page"),
        (status = 404, description = "Single sign-on is not configured"),
        (status = 429, description = "Too many log-in attempts from this address"),
        (status = 502, description = "The identity provider could not be reached"),
        (status = 503, description = "Too many log-ins in progress")
    )
)]
pub async fn login(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
) -> Response {
    let html = wants_html(&headers);
    let Some(oidc) = relay.oidc.clone() else {
        return answer(
            html,
            StatusCode::NOT_FOUND,
            "not_found",
            "Single sign-on",
            "Single sign-on is not configured on this relay.",
        );
    };
    if relay.login_rate.check_key(&peer.ip()).is_err() {
        let mut r = answer(
            html,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many log-ins",
            "Too many log-in attempts; retry later.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let client = match oidc.client(&redirect_uri(&relay)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC provider unreachable");
            return answer(
                html,
                StatusCode::BAD_GATEWAY,
                "provider_unavailable",
                "Single sign-on unavailable",
                "The identity provider could not be reached; try again later.",
            );
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in oidc.cfg.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = req.url();
    let binding = random_secret(32);
    let pending = Pending {
        verifier,
        nonce,
        binding: sha256_hex(&binding),
        created: Instant::now(),
    };
    if !oidc.put_pending(state.secret().clone(), pending) {
        return answer(
            html,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Single sign-on busy",
            "Too many log-ins in progress; try again in a few minutes.",
        );
    }
    let cookie = format!(
        "{PENDING_COOKIE}={binding}; Path=/auth/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        PENDING_TTL.as_secs()
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match (
        HeaderValue::from_str(url.as_str()),
        HeaderValue::from_str(&cookie),
    ) {
        (Ok(loc), Ok(c)) => {
            h.insert(header::LOCATION, loc);
            h.insert(header::SET_COOKIE, c);
            r
        }
        _ => answer(
            html,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Single sign-on",
            "internal error",
        ),
    }
}

/// Why a callback was refused: status, code, and the message shown.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    msg: String,
    /// Audit details (issuer, subject, groups ... when known).
    detail: Value,
}

fn refuse(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        msg: msg.into(),
        detail: json!({}),
    }
}

/// Finishes a single-sign-on log-in: checks the state, exchanges the code,
/// verifies the ID token, maps the groups, opens a log-in session.
#[utoipa::path(
    get,
    path = "/auth/oidc/callback",
    tag = "sso",
    security(()),
    params(
        ("state" = String, Query, description = "The state sent to the provider"),
        ("code" = Option<String>, Query, description = "Authorization code"),
        ("error" = Option<String>, Query, description = "The provider's error, instead of a code")
    ),
    responses(
        (status = 200, description = "Logged in: sets the dwa_session cookie; the page goes on to /"),
        (status = 400, description = "Unknown, used, expired or foreign state"),
        (status = 403, description = "Refused: no group of the user is mapped to a role"),
        (status = 502, description = "The provider's answer could not be used")
    )
)]
pub async fn callback(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let html = wants_html(&headers);
    let Some(oidc) = relay.oidc.clone() else {
        return answer(
            html,
            StatusCode::NOT_FOUND,
            "not_found",
            "Single sign-on",
            "Single sign-on is not configured on this relay.",
        );
    };
    let peer_s = peer.to_string();
    match finish(&relay, &oidc, &headers, &q, &peer_s, html).await {
        Ok(r) => r,
        Err(f) => {
            let mut detail = f.detail;
            if let Value::Object(m) = &mut detail {
                m.insert("peer".into(), json!(peer_s));
                m.insert("reason".into(), json!(f.msg));
                m.entry("issuer").or_insert(json!(oidc.issuer()));
            }
            let actor = match detail.get("subject").and_then(Value::as_str) {
                Some(s) => format!("sso:{s}"),
                None => format!("peer:{peer_s}"),
            };
            relay
                .audit
                .record(kind::SSO_REFUSED, &actor, None, detail)
                .await;
            let title = if f.status == StatusCode::FORBIDDEN {
                "Access refused"
            } else {
                "Log-in failed"
            };
            let mut r = answer(html, f.status, f.code, title, &f.msg);
            // The binding served its purpose (or was wrong): drop it.
            r.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "dwa_oidc=; Path=/auth/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
                ),
            );
            r
        }
    }
}

async fn finish(
    relay: &Relay,
    oidc: &Oidc,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    peer: &str,
    html: bool,
) -> std::result::Result<Response, Refusal> {
    let bad_state = |m: &str| refuse(StatusCode::BAD_REQUEST, "invalid_state", m);
    let state = q
        .get("state")
        .ok_or_else(|| bad_state("the provider's answer has no state"))?;
    let pending = oidc.take_pending(state).ok_or_else(|| {
        bad_state("unknown, already used or expired log-in state; start the log-in again")
    })?;
    let binding = crate::util::cookie_value(headers, PENDING_COOKIE).map(sha256_hex);
    let same_browser = binding.is_some_and(|b| {
        use subtle::ConstantTimeEq;
        bool::from(b.as_bytes().ct_eq(pending.binding.as_bytes()))
    });
    if !same_browser {
        return Err(bad_state(
            "this log-in was started in another browser; start the log-in again",
        ));
    }
    if let Some(e) = q.get("error") {
        let desc = q.get("error_description").map(String::as_str).unwrap_or("");
        let mut r = refuse(
            StatusCode::FORBIDDEN,
            "provider_refused",
            format!("the identity provider refused the log-in: {e} {desc}")
                .trim()
                .to_string(),
        );
        r.detail = json!({"provider_error": e});
        return Err(r);
    }
    // RFC 9207: a provider that names itself must be ours (mix-up attacks).
    if let Some(iss) = q.get("iss") {
        if iss != oidc.issuer() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_issuer",
                "the answer comes from another identity provider",
            ));
        }
    }
    let code = q
        .get("code")
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "invalid", "no authorization code"))?;
    let provider_err = |m: String| {
        tracing::warn!(error = %m, "OIDC log-in failed");
        refuse(StatusCode::BAD_GATEWAY, "provider_error", m)
    };
    let client = oidc
        .client(&redirect_uri(relay))
        .await
        .map_err(provider_err)?;
    let http = oidc.http.clone();
    let http_fn = move |r| {
        let h = http.clone();
        async move { h.call(r).await }
    };
    let token = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .map_err(|e| provider_err(format!("token endpoint: {e}")))?
        .set_pkce_verifier(pending.verifier)
        .request_async(&http_fn)
        .await
        .map_err(|e| provider_err(format!("code exchange: {}", error_chain(&e))))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| provider_err("the provider returned no ID token".into()))?;
    let claims = match id_token.claims(&client.id_token_verifier(), &pending.nonce) {
        Ok(c) => c.clone(),
        Err(e) => {
            oidc.forget_metadata().await;
            return Err(provider_err(format!(
                "ID token refused: {}",
                error_chain(&e)
            )));
        }
    };
    let issuer = claims.issuer().as_str().to_string();
    let subject = claims.subject().as_str().to_string();
    let claim = &oidc.cfg.groups_claim;
    let mut groups_value = claims.additional_claims().0.get(claim).cloned();
    let mut from_userinfo = false;
    if groups_value.is_none() && client.user_info_url().is_some() {
        // Providers that keep groups out of the ID token serve them here;
        // the crate checks that the subject is the ID token's.
        let req = client
            .user_info(token.access_token().clone(), Some(claims.subject().clone()))
            .map_err(|e| provider_err(format!("userinfo: {e}")))?;
        let info: openidconnect::UserInfoClaims<ExtraClaims, CoreGenderClaim> = req
            .request_async(&http_fn)
            .await
            .map_err(|e| provider_err(format!("userinfo: {}", error_chain(&e))))?;
        groups_value = info.additional_claims().0.get(claim).cloned();
        from_userinfo = true;
    }
    let groups = groups_from(groups_value.as_ref());
    let who = json!({"issuer": issuer, "subject": subject, "groups": groups});
    let Some(mapped) = map_groups(&oidc.cfg.map, &groups) else {
        let mut r = refuse(
            StatusCode::FORBIDDEN,
            "no_role",
            "your directory groups give no access to DWA; ask your administrator",
        );
        r.detail = who;
        return Err(r);
    };
    let hint = claims
        .preferred_username()
        .map(|u| u.as_str().to_string())
        .or_else(|| claims.email().map(|e| e.as_str().to_string()));
    let internal = |e: RelayError| {
        tracing::error!(error = %e, "storing the directory user");
        let mut r = refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
        r.detail = json!({"issuer": issuer, "subject": subject});
        r
    };
    let (user_id, unknown_customers) =
        upsert_user(relay, &issuer, &subject, hint.as_deref(), &mapped)
            .await
            .map_err(internal)?;
    let ok = crate::services::auth::open_login(relay, user_id, false)
        .await
        .map_err(|e| internal(e.into()))?;
    relay
        .audit
        .record(
            kind::SSO_LOGIN,
            &ok.principal.actor(),
            None,
            json!({
                "peer": peer, "issuer": issuer, "subject": subject, "groups": groups,
                "groups_from": if from_userinfo { "userinfo" } else { "id_token" },
                "matched": mapped.matched, "role": mapped.role.as_str(),
                "customers": mapped.customers, "unknown_customers": unknown_customers,
            }),
        )
        .await;
    let session = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::services::auth::SESSION_COOKIE,
        ok.cookie,
        relay.cfg.web.login_lifetime.as_secs()
    );
    // A 200 page that goes on to / rather than a redirect: a SameSite=Strict
    // cookie is not sent on a redirect chain that began at the provider, so
    // the first page would look logged out. The navigation this page starts
    // is the portal's own.
    let mut r = if html {
        let page = "<!doctype html><html><head><meta charset=\"utf-8\">\
            <meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Logged in</title></head>\
            <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
            <h1>Logged in</h1><p><a href=\"/\">Continue to DWA</a></p></body></html>";
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    } else {
        Json(json!({
            "user": ok.principal.username, "role": ok.principal.role.as_str(),
            "customers": ok.principal.customers, "expires_at": ok.expires_at, "next": "/",
        }))
        .into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFRESH, HeaderValue::from_static("0;url=/"));
    if let Ok(v) = HeaderValue::from_str(&session) {
        h.append(header::SET_COOKIE, v);
    }
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "dwa_oidc=; Path=/auth/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
        ),
    );
    Ok(r)
}

/// A user name for a new directory user: the provider's preferred name (or
/// e-mail, or subject), made safe; suffixed with a hash of the identity when
/// another account already has it (a directory user never takes over a
/// local account by name).
fn username_for(hint: Option<&str>, issuer: &str, subject: &str) -> (String, String) {
    let base: String = hint
        .unwrap_or(subject)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._@-+".contains(*c))
        .take(64)
        .collect();
    let base = if base.is_empty() {
        "sso-user".to_string()
    } else {
        base
    };
    let tag = &sha256_hex(&format!("{issuer}\n{subject}"))[..8];
    (base.clone(), format!("{base}~{tag}"))
}

/// Creates the directory user or refreshes its role and customers from the
/// groups. Returns its id and the mapped customer names that do not exist.
async fn upsert_user(
    relay: &Relay,
    issuer: &str,
    subject: &str,
    hint: Option<&str>,
    mapped: &Mapped,
) -> Result<(i64, Vec<String>)> {
    let mut ids = Vec::new();
    let mut unknown = Vec::new();
    for name in &mapped.customers {
        match relay.store.customer_id(name).await {
            Ok(i) => ids.push(i),
            Err(dwa_store::StoreError::NotFound(_)) => {
                tracing::warn!(customer = %name, "[[oidc.map]] names a customer that does not exist");
                unknown.push(name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (plain, tagged) = username_for(hint, issuer, subject);
    let user_id = relay
        .store
        .upsert_directory_user(&dwa_store::users::DirectoryUser {
            issuer,
            subject,
            username: &plain,
            username_taken: &tagged,
            password_hash: NO_PASSWORD,
            role: mapped.role.as_str(),
            customers: &ids,
            created_at: &relay.time.rfc3339(),
        })
        .await?;
    Ok((user_id, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(group: &str, role: &str, customers: &[&str]) -> GroupMap {
        GroupMap {
            group: group.into(),
            role: role.into(),
            customers: customers.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_group_maps_to_its_role_and_customers() {
        let maps = [m("dwa-techs", "technician", &["acme"])];
        let got = map_groups(&maps, &groups(&["staff", "dwa-techs"])).unwrap();
        assert_eq!(got.role, Role::Technician);
        assert_eq!(got.customers, vec!["acme"]);
        assert_eq!(got.matched, vec!["dwa-techs"]);
    }

    #[test]
    fn no_matching_group_is_refused() {
        let maps = [m("dwa-techs", "technician", &["acme"])];
        assert_eq!(map_groups(&maps, &groups(&["nobody"])), None);
        assert_eq!(map_groups(&maps, &[]), None);
        // Exact and case-sensitive: no prefix or case-folded match.
        assert_eq!(map_groups(&maps, &groups(&["DWA-techs", "dwa-tech"])), None);
    }

    #[test]
    fn most_privileged_role_wins_and_customers_are_the_union() {
        let maps = [
            m("viewers", "viewer", &["beta", "acme"]),
            m("techs", "technician", &["acme"]),
            m("portal", "customer", &["gamma"]),
            m("unused", "admin", &[]),
        ];
        let got = map_groups(&maps, &groups(&["portal", "viewers", "techs"])).unwrap();
        assert_eq!(got.role, Role::Technician);
        assert_eq!(got.customers, vec!["acme", "beta", "gamma"]);
        assert_eq!(got.matched, vec!["portal", "techs", "viewers"]);
        let admin = map_groups(&maps, &groups(&["unused", "portal"])).unwrap();
        assert_eq!(admin.role, Role::Admin);
    }

    #[test]
    fn groups_claim_shapes() {
        assert_eq!(groups_from(Some(&json!(["a", "b", 3]))), vec!["a", "b"]);
        assert_eq!(groups_from(Some(&json!("solo"))), vec!["solo"]);
        assert!(groups_from(Some(&json!({"a": 1}))).is_empty());
        assert!(groups_from(None).is_empty());
        let many: Vec<String> = (0..5000).map(|i| format!("g{i}")).collect();
        assert_eq!(groups_from(Some(&json!(many))).len(), MAX_GROUPS);
    }

    fn section() -> OidcSection {
        OidcSection {
            issuer: "https://idp.example.com/realms/x".into(),
            client_id: "dwa".into(),
            client_secret: Secret::new("s3cret-value"),
            scopes: default_scopes(),
            groups_claim: default_groups_claim(),
            ca_file: default_ca_file(),
            timeout: default_timeout(),
            map: vec![m("dwa-techs", "technician", &["acme"])],
        }
    }

    #[test]
    fn config_validation_names_the_key() {
        assert!(section().validate().is_ok());
        let mut s = section();
        s.issuer = "http://idp.example.com".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("oidc.issuer"));
        s.issuer = "http://127.0.0.1:9000".into();
        assert!(s.validate().is_ok());
        let mut s = section();
        s.map[0].role = "root".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("oidc.map[0].role"));
        let mut s = section();
        s.map.clear();
        assert!(s.validate().unwrap_err().to_string().contains("oidc.map"));
        assert!(!format!("{:?}", section()).contains("s3cret-value"));
    }

    #[test]
    fn relay_toml_with_oidc_section() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let text = format!(
            "{base}[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"dwa\"\nclient_secret = \"x\"\n\
             [[oidc.map]]\ngroup = \"dwa-techs\"\nrole = \"technician\"\ncustomers = [\"Acme\"]\n"
        );
        let c = crate::config::RelayConfig::parse(&text).unwrap();
        let o = c.oidc.as_ref().unwrap();
        assert_eq!(o.groups_claim, "groups");
        assert_eq!(o.scopes, default_scopes());
        assert_eq!(o.map[0].customers, vec!["Acme"]);
        let e = crate::config::RelayConfig::parse(&format!("{text}bogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        // Round trip (the section is kept when serialised).
        let again = crate::config::RelayConfig::parse(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn usernames_never_collide_silently() {
        let (plain, tagged) = username_for(Some("alice <x>"), "https://i", "sub1");
        assert_eq!(plain, "alicex");
        assert!(tagged.starts_with("alicex~") && tagged.len() == "alicex~".len() + 8);
        let (_, other) = username_for(Some("alice <x>"), "https://i", "sub2");
        assert_ne!(tagged, other);
        assert_eq!(username_for(Some("<>"), "i", "s").0, "sso-user");
    }

    #[test]
    fn https_issuer_needs_roots_from_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let mut s = section();
        s.ca_file = empty;
        let e = Oidc::new(&s).err().expect("no roots");
        assert!(e.to_string().contains("oidc.ca_file"), "{e}");
        s.ca_file = dir.path().join("missing.pem");
        assert!(Oidc::new(&s).is_err());
        // A loopback http:// issuer (tests) needs no CA file.
        s.issuer = "http://127.0.0.1:9000".into();
        assert!(Oidc::new(&s).is_ok());
    }

    #[test]
    fn only_https_or_loopback_http() {
        let ok = |u: &str| allowed_url(&url::Url::parse(u).unwrap());
        assert!(ok("https://idp.example.com/x"));
        assert!(ok("http://127.0.0.5:3000/"));
        assert!(ok("http://[::1]:3000/"));
        assert!(ok("http://localhost:3000/"));
        assert!(!ok("http://10.0.0.1/"));
        assert!(!ok("http://idp.example.com/"));
        assert!(!ok("ftp://127.0.0.1/"));
    }
}
