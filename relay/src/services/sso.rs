//! Single sign-on for directory users: OpenID Connect, authorization code
//! flow with PKCE (S256), through the `openidconnect` crate.
//!
//! [`begin`] keeps a pending log-in (PKCE verifier, nonce, a browser
//! binding) as a grant in the store under a fresh `state`, and returns the
//! provider's URL to send the browser to. [`finish`] takes that pending
//! log-in back (once), exchanges the code, lets the crate verify the ID
//! token (signature, issuer, audience, expiry, nonce), maps the provider's
//! groups to a role and customers, creates or refreshes the user (source
//! `oidc`, keyed by issuer and subject), opens an ordinary log-in session
//! and audits the outcome either way. HTTP to the provider goes through
//! [`ProviderHttp`], which an adapter implements. Decisions: docs/sso.md.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use dwa_policy::roles::Role;
use dwa_proto::audit::Event;
use dwa_store::grants::{GrantKind, NewGrant, Selector};
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
use serde_json::Value;

use crate::config::oidc::MAX_GROUP_LEN;
use crate::config::{GroupMap, OidcSection};
use crate::services::error::{Class, Failure};
use crate::services::grants::{self, EndReason};
use crate::services::Services;
use crate::util::{random_secret, sha256_hex};

/// Where the browser starts and ends a log-in (the adapter serves these).
pub const LOGIN_PATH: &str = "/auth/oidc/login";
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";
/// How long a started log-in may take (seconds).
pub const PENDING_TTL_SECS: i64 = 10 * 60;
/// Log-ins in progress at once (each holds a pending grant until used or
/// expired).
pub const MAX_PENDING: i64 = 1000;
/// The provider's metadata and keys are fetched again after this (seconds).
const METADATA_TTL_SECS: i64 = 10 * 60;
/// Groups looked at per log-in.
const MAX_GROUPS: usize = 1000;
/// Password hash of directory users: not a PHC string, so no password ever
/// verifies against it.
pub const NO_PASSWORD: &str = "!oidc";

/// An HTTP failure talking to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderHttpError(pub String);

pub type ProviderFuture<'a> = Pin<
    Box<dyn Future<Output = Result<openidconnect::HttpResponse, ProviderHttpError>> + Send + 'a>,
>;

/// One HTTP exchange with the provider. An adapter implements it (with
/// its own TLS, bounds and time-outs); the crate's flows call it.
pub trait ProviderHttp: Send + Sync {
    fn call(&self, req: openidconnect::HttpRequest) -> ProviderFuture<'_>;
}

/// [`ProviderHttp`] as the crate's client type (a closure over the trait
/// object would not be `Send` for every lifetime the crate asks).
struct Crate<'a>(&'a dyn ProviderHttp);

impl<'c> openidconnect::AsyncHttpClient<'c> for Crate<'_> {
    type Error = ProviderHttpError;
    type Future = ProviderFuture<'c>;

    fn call(&'c self, req: openidconnect::HttpRequest) -> Self::Future {
        self.0.call(req)
    }
}

/// Why a single-sign-on log-in failed. Each carries what the user is told;
/// the adapter maps the variant to its reply.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("Single sign-on is not configured on this relay.")]
    NotConfigured,
    #[error("Too many log-in attempts; retry later.")]
    RateLimited,
    /// The provider could not be reached to start a log-in.
    #[error("The identity provider could not be reached; try again later.")]
    ProviderUnavailable,
    #[error("Too many log-ins in progress; try again in a few minutes.")]
    Busy,
    /// The callback's state is missing, unknown, used, expired, or belongs
    /// to another browser.
    #[error("{0}")]
    BadState(&'static str),
    #[error("{0}")]
    ProviderRefused(String),
    /// RFC 9207: the answer names another issuer (mix-up attack).
    #[error("the answer comes from another identity provider")]
    WrongIssuer,
    #[error("no authorization code")]
    NoCode,
    /// The code exchange, the ID token or userinfo failed.
    #[error("{0}")]
    Provider(String),
    #[error("your directory groups give no access to DWA; ask your administrator")]
    NoRole,
    #[error("internal error")]
    Internal,
}

impl SsoError {
    /// The API's `code` for it.
    pub fn code(&self) -> &'static str {
        match self {
            SsoError::NotConfigured => "not_found",
            SsoError::RateLimited => "rate_limited",
            SsoError::ProviderUnavailable => "provider_unavailable",
            SsoError::Busy => "unavailable",
            SsoError::BadState(_) => "invalid_state",
            SsoError::ProviderRefused(_) => "provider_refused",
            SsoError::WrongIssuer => "invalid_issuer",
            SsoError::NoCode => "invalid",
            SsoError::Provider(_) => "provider_error",
            SsoError::NoRole => "no_role",
            SsoError::Internal => "internal",
        }
    }
}

impl Failure for SsoError {
    fn class(&self) -> Class {
        match self {
            SsoError::NotConfigured => Class::NotFound,
            SsoError::RateLimited => Class::RateLimited { retry_after: 60 },
            SsoError::ProviderUnavailable | SsoError::Busy | SsoError::Provider(_) => {
                Class::Unavailable
            }
            SsoError::BadState(_) | SsoError::WrongIssuer | SsoError::NoCode => Class::Invalid,
            SsoError::ProviderRefused(_) | SsoError::NoRole => Class::Forbidden,
            SsoError::Internal => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        SsoError::code(self)
    }
}

/// Single-sign-on state kept in memory: the configuration and the
/// provider's metadata (cached). Pending log-ins are grants in the store,
/// so any relay on the same store can finish a log-in another began.
pub struct Oidc {
    cfg: OidcSection,
    metadata: tokio::sync::Mutex<Option<(i64, CoreProviderMetadata)>>,
}

impl Oidc {
    pub fn new(cfg: &OidcSection) -> Oidc {
        Oidc {
            cfg: cfg.clone(),
            metadata: tokio::sync::Mutex::new(None),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    pub fn config(&self) -> &OidcSection {
        &self.cfg
    }

    async fn metadata(
        &self,
        http: &dyn ProviderHttp,
        now: i64,
    ) -> Result<CoreProviderMetadata, String> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref() {
            if now - at < METADATA_TTL_SECS {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let m = CoreProviderMetadata::discover_async(issuer, &Crate(http))
            .await
            .map_err(|e| format!("discovery: {}", error_chain(&e)))?;
        *cached = Some((now, m.clone()));
        Ok(m)
    }

    /// After a verification failure the provider may have rotated its keys.
    async fn forget_metadata(&self) {
        *self.metadata.lock().await = None;
    }

    async fn client(
        &self,
        http: &dyn ProviderHttp,
        redirect: &str,
        now: i64,
    ) -> Result<OidcClient, String> {
        let m = self.metadata(http, now).await?;
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

fn oidc(svc: &Services) -> Result<&Oidc, SsoError> {
    svc.oidc.as_deref().ok_or(SsoError::NotConfigured)
}

fn redirect_uri(svc: &Services) -> String {
    format!("{}{CALLBACK_PATH}", svc.portal_origin())
}

/// A started log-in: where to send the browser, and the binding to give it
/// (as a cookie) so that only this browser can finish it.
#[derive(Debug, Clone)]
pub struct Begun {
    pub url: String,
    pub binding: String,
    pub max_age_secs: i64,
}

/// What a pending grant keeps besides the binding's hash (its secret).
#[derive(Serialize, Deserialize)]
struct PendingDetail {
    verifier: String,
    nonce: String,
}

/// Starts a log-in from `peer`.
pub async fn begin(
    svc: &Services,
    http: &dyn ProviderHttp,
    peer: std::net::IpAddr,
) -> Result<Begun, SsoError> {
    let oidc = oidc(svc)?;
    if svc.login_rate.check_key(&peer).is_err() {
        return Err(SsoError::RateLimited);
    }
    let now = svc.time.unix();
    let client = oidc
        .client(http, &redirect_uri(svc), now)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "OIDC provider unreachable");
            SsoError::ProviderUnavailable
        })?;
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
    let binding = keep_pending(svc, state.secret(), verifier.secret(), nonce.secret()).await?;
    Ok(Begun {
        url: url.to_string(),
        binding,
        max_age_secs: PENDING_TTL_SECS,
    })
}

/// Keeps a pending log-in under `state` as a grant; the browser binding
/// to hand out (only its hash is kept).
async fn keep_pending(
    svc: &Services,
    state: &str,
    verifier: &str,
    nonce: &str,
) -> Result<String, SsoError> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "keeping a pending log-in");
        SsoError::Internal
    };
    let now = svc.time.unix();
    // Expired log-ins end here rather than in a sweeper: only a new one
    // needs the room.
    grants::end(
        svc,
        Selector::Expired(vec![GrantKind::SsoPending], now),
        EndReason::Expired,
        "relay",
    )
    .await
    .map_err(|e| internal(&e))?;
    let live = svc
        .store
        .count_live_grants(GrantKind::SsoPending, now)
        .await
        .map_err(|e| internal(&e))?;
    if live >= MAX_PENDING {
        return Err(SsoError::Busy);
    }
    let binding = random_secret(32);
    let detail = serde_json::to_string(&PendingDetail {
        verifier: verifier.to_string(),
        nonce: nonce.to_string(),
    })
    .map_err(|e| internal(&e))?;
    let handle = sha256_hex(state);
    let binding_hash = sha256_hex(&binding);
    let mut g = NewGrant::new(GrantKind::SsoPending, now);
    g.handle = Some(&handle);
    g.secret_hash = Some(&binding_hash);
    g.detail = Some(&detail);
    g.expires_at = Some(now + PENDING_TTL_SECS);
    svc.store.issue_grant(&g).await.map_err(|e| internal(&e))?;
    Ok(binding)
}

/// The provider's answer, as the browser brought it back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

/// A finished log-in: the session cookie's value and who it is for.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedIn {
    pub user: String,
    pub role: &'static str,
    pub customers: Vec<i64>,
    pub expires_at: i64,
    #[serde(skip)]
    pub cookie: String,
}

/// A refusal and what the audit record says about it.
#[derive(Default)]
struct Known {
    issuer: Option<String>,
    subject: Option<String>,
    groups: Option<Vec<String>>,
    provider_error: Option<String>,
}

/// A refusal and what the audit record says about it.
struct Refusal {
    err: SsoError,
    /// Issuer, subject, groups … when known.
    known: Known,
}

impl From<SsoError> for Refusal {
    fn from(err: SsoError) -> Self {
        Refusal {
            err,
            known: Known::default(),
        }
    }
}

/// Finishes a log-in: checks the state against the browser's binding,
/// exchanges the code, verifies the ID token, maps the groups, opens a
/// log-in session. Audits the log-in or the refusal.
pub async fn finish(
    svc: &Services,
    http: &dyn ProviderHttp,
    answer: &Callback,
    binding: Option<&str>,
    peer: &str,
) -> Result<LoggedIn, SsoError> {
    let oidc = oidc(svc)?;
    match finish_inner(svc, oidc, http, answer, binding, peer).await {
        Ok(done) => Ok(done),
        Err(f) => {
            let k = f.known;
            let anonymous = k.subject.is_none();
            let actor = match &k.subject {
                Some(s) => format!("sso:{s}"),
                None => format!("peer:{peer}"),
            };
            let event = Event::SsoRefused {
                peer: peer.to_string(),
                reason: f.err.to_string(),
                issuer: k.issuer.unwrap_or_else(|| oidc.issuer().to_string()),
                subject: k.subject,
                groups: k.groups,
                provider_error: k.provider_error,
            };
            // Anonymous refusals (no identity from the provider: a forged,
            // replayed or stolen callback) can come from anyone at any
            // rate and are digested; a refused identity is written as it is.
            let source = anonymous
                .then(|| crate::services::refusals::source_of(peer))
                .flatten();
            crate::services::refusals::record(svc, source, event, &actor, None).await;
            Err(f.err)
        }
    }
}

/// Takes the pending log-in `state` names, once, if `binding` is the
/// browser's that began it.
async fn take_pending(
    svc: &Services,
    state: &str,
    binding: Option<&str>,
) -> Result<(PkceCodeVerifier, Nonce), SsoError> {
    let unknown =
        SsoError::BadState("unknown, already used or expired log-in state; start the log-in again");
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "reading a pending log-in");
        SsoError::Internal
    };
    let now = svc.time.unix();
    let g = svc
        .store
        .grant_by_handle(GrantKind::SsoPending, &sha256_hex(state))
        .await
        .map_err(|e| internal(&e))?
        .filter(|g| g.live_at(now))
        .ok_or(unknown)?;
    let same_browser = binding.map(sha256_hex).is_some_and(|b| {
        use subtle::ConstantTimeEq;
        g.secret_hash
            .as_deref()
            .is_some_and(|h| bool::from(b.as_bytes().ct_eq(h.as_bytes())))
    });
    // Either way the state is spent: a wrong browser does not get to retry.
    let ended = grants::end(svc, Selector::Id(g.id), EndReason::Used, "relay")
        .await
        .map_err(|e| internal(&e))?;
    if !ended.iter().any(|e| e.id == g.id) {
        return Err(SsoError::BadState(
            "unknown, already used or expired log-in state; start the log-in again",
        ));
    }
    if !same_browser {
        return Err(SsoError::BadState(
            "this log-in was started in another browser; start the log-in again",
        ));
    }
    let d: PendingDetail = g
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .ok_or_else(|| internal(&"pending log-in without its verifier"))?;
    Ok((PkceCodeVerifier::new(d.verifier), Nonce::new(d.nonce)))
}

async fn finish_inner(
    svc: &Services,
    oidc: &Oidc,
    http: &dyn ProviderHttp,
    q: &Callback,
    binding: Option<&str>,
    peer: &str,
) -> Result<LoggedIn, Refusal> {
    let state = q
        .state
        .as_deref()
        .ok_or(SsoError::BadState("the provider's answer has no state"))?;
    let (verifier, nonce) = take_pending(svc, state, binding).await?;
    if let Some(e) = &q.error {
        let desc = q.error_description.as_deref().unwrap_or("");
        return Err(Refusal {
            err: SsoError::ProviderRefused(
                format!("the identity provider refused the log-in: {e} {desc}")
                    .trim()
                    .to_string(),
            ),
            known: Known {
                provider_error: Some(e.clone()),
                ..Known::default()
            },
        });
    }
    // RFC 9207: a provider that names itself must be ours (mix-up attacks).
    if q.iss.as_deref().is_some_and(|iss| iss != oidc.issuer()) {
        return Err(SsoError::WrongIssuer.into());
    }
    let code = q.code.as_deref().ok_or(SsoError::NoCode)?;
    let provider_err = |m: String| {
        tracing::warn!(error = %m, "OIDC log-in failed");
        Refusal::from(SsoError::Provider(m))
    };
    let now = svc.time.unix();
    let client = oidc
        .client(http, &redirect_uri(svc), now)
        .await
        .map_err(provider_err)?;
    let http_fn = Crate(http);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|e| provider_err(format!("token endpoint: {e}")))?
        .set_pkce_verifier(verifier)
        .request_async(&http_fn)
        .await
        .map_err(|e| provider_err(format!("code exchange: {}", error_chain(&e))))?;
    let id_token = token
        .id_token()
        .ok_or_else(|| provider_err("the provider returned no ID token".into()))?;
    let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
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
    let Some(mapped) = map_groups(&oidc.cfg.map, &groups) else {
        return Err(Refusal {
            err: SsoError::NoRole,
            known: Known {
                issuer: Some(issuer),
                subject: Some(subject),
                groups: Some(groups),
                provider_error: None,
            },
        });
    };
    let hint = claims
        .preferred_username()
        .map(|u| u.as_str().to_string())
        .or_else(|| claims.email().map(|e| e.as_str().to_string()));
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "storing the directory user");
        Refusal {
            err: SsoError::Internal,
            known: Known {
                issuer: Some(issuer.clone()),
                subject: Some(subject.clone()),
                ..Known::default()
            },
        }
    };
    let (user_id, unknown_customers) =
        upsert_user(svc, &issuer, &subject, hint.as_deref(), &mapped)
            .await
            .map_err(|e| internal(&e))?;
    let ok = crate::services::auth::open_login(svc, user_id, false)
        .await
        .map_err(|e| internal(&e))?;
    let event = Event::SsoLogin {
        peer: peer.to_string(),
        issuer,
        subject,
        groups,
        groups_from: if from_userinfo {
            "userinfo"
        } else {
            "id_token"
        }
        .into(),
        matched: mapped.matched.clone(),
        role: mapped.role.as_str().into(),
        customers: mapped.customers.clone(),
        unknown_customers,
    };
    svc.audit.record(event, &ok.principal.actor(), None).await;
    Ok(LoggedIn {
        user: ok.principal.username.clone(),
        role: ok.principal.role.as_str(),
        customers: ok.principal.customers.clone(),
        expires_at: ok.expires_at,
        cookie: ok.cookie,
    })
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
    svc: &Services,
    issuer: &str,
    subject: &str,
    hint: Option<&str>,
    mapped: &Mapped,
) -> Result<(i64, Vec<String>), dwa_store::StoreError> {
    let mut ids = Vec::new();
    let mut unknown = Vec::new();
    for name in &mapped.customers {
        match svc.store.customer_id(name).await {
            Ok(i) => ids.push(i),
            Err(dwa_store::StoreError::NotFound(_)) => {
                tracing::warn!(customer = %name, "[[oidc.map]] names a customer that does not exist");
                unknown.push(name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    let (plain, tagged) = username_for(hint, issuer, subject);
    let user_id = svc
        .store
        .upsert_directory_user(&dwa_store::users::DirectoryUser {
            issuer,
            subject,
            username: &plain,
            username_taken: &tagged,
            password_hash: NO_PASSWORD,
            role: mapped.role.as_str(),
            customers: &ids,
            created_at: &svc.time.rfc3339(),
        })
        .await?;
    Ok((user_id, unknown))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::oidc::fixtures::m;
    use serde_json::json;

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

    #[test]
    fn usernames_never_collide_silently() {
        let (plain, tagged) = username_for(Some("alice <x>"), "https://i", "sub1");
        assert_eq!(plain, "alicex");
        assert!(tagged.starts_with("alicex~") && tagged.len() == "alicex~".len() + 8);
        let (_, other) = username_for(Some("alice <x>"), "https://i", "sub2");
        assert_ne!(tagged, other);
        assert_eq!(username_for(Some("<>"), "i", "s").0, "sso-user");
    }

    fn state_err(r: Result<(PkceCodeVerifier, Nonce), SsoError>) -> &'static str {
        match r {
            Err(SsoError::BadState(m)) => m,
            Err(e) => panic!("not a state error: {e}"),
            Ok(_) => panic!("taken"),
        }
    }

    #[tokio::test]
    async fn a_pending_log_in_is_a_grant_taken_once_by_its_own_browser() {
        let (_t, svc) = crate::testutil::svc().await;
        let b = keep_pending(&svc, "st-1", "verifier-1", "nonce-1")
            .await
            .unwrap();
        // In the store, not in this process: a second set of services on
        // the same store (another relay, or this one restarted) takes it.
        let g = svc
            .store
            .grant_by_handle(GrantKind::SsoPending, &sha256_hex("st-1"))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(g.secret_hash.as_deref(), Some(sha256_hex(&b).as_str()));
        let (v, n) = take_pending(&svc, "st-1", Some(&b)).await.unwrap();
        assert_eq!(
            (v.secret().as_str(), n.secret().as_str()),
            ("verifier-1", "nonce-1")
        );
        // Once only.
        assert!(state_err(take_pending(&svc, "st-1", Some(&b)).await).contains("already used"));
        let g = svc.store.grant(g.id).await.unwrap().unwrap();
        assert_eq!(g.end_reason.as_deref(), Some("used"));

        // Another browser's binding spends the state without logging in.
        let b2 = keep_pending(&svc, "st-2", "v", "n").await.unwrap();
        assert!(
            state_err(take_pending(&svc, "st-2", Some("forged")).await).contains("another browser")
        );
        assert!(state_err(take_pending(&svc, "st-2", Some(&b2)).await).contains("already used"));
        assert!(state_err(take_pending(&svc, "st-3", None).await).contains("unknown"));
    }

    #[tokio::test]
    async fn a_pending_log_in_expires_and_the_count_is_bounded() {
        let (_t, mut svc) = crate::testutil::svc().await;
        let clock =
            std::sync::Arc::new(crate::services::clock::ManualClock::at_unix(1_795_341_600));
        std::sync::Arc::get_mut(&mut svc).expect("sole owner").time =
            crate::services::clock::Time::from_clock(clock.clone());
        let b = keep_pending(&svc, "old", "v", "n").await.unwrap();
        clock.advance(std::time::Duration::from_secs(PENDING_TTL_SECS as u64 + 1));
        assert!(state_err(take_pending(&svc, "old", Some(&b)).await).contains("expired"));
        let now = svc.time.unix();
        for i in 0..MAX_PENDING {
            let mut g = NewGrant::new(GrantKind::SsoPending, now);
            let h = format!("h{i}");
            g.handle = Some(&h);
            g.expires_at = Some(now + 60);
            svc.store.issue_grant(&g).await.unwrap();
        }
        assert!(matches!(
            keep_pending(&svc, "one-more", "v", "n").await,
            Err(SsoError::Busy)
        ));
        // Once they expire they are ended, and there is room again.
        clock.advance(std::time::Duration::from_secs(61));
        keep_pending(&svc, "one-more", "v", "n").await.unwrap();
    }
}
