//! Who is calling the API. A password log-in (argon2id) opens a cookie
//! session; scripts use per-user API tokens (`Authorization: Bearer`).
//! Either way the caller becomes a [`Principal`], and every handler asks
//! `dwa_policy::roles` whether it may act for the customer concerned.
//! Two-factor and lockout slot into [`login`] without changing its callers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};
use dwa_policy::roles::{permit, Action, Role, Scope};
use serde::Deserialize;
use sqlx::Row;

use crate::app::Relay;
use crate::error::{RelayError, Result};
use crate::util::{now_rfc3339, random_secret, sha256_hex, unix_now};

/// The portal's log-in cookie (host-only: no Domain attribute).
pub const SESSION_COOKIE: &str = "dwa_session";

/// API tokens start with this, so leaked ones are recognisable.
pub const TOKEN_PREFIX: &str = "dwat_";

#[derive(Debug, Clone)]
pub enum Via {
    /// A log-in session, by the SHA-256 of its cookie.
    Session(String),
    /// An API token, by id.
    Token(i64),
    /// The relay's own commands on this host (`demo`).
    Local,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    /// Customers the user is assigned to (ids).
    pub customers: Vec<i64>,
    pub via: Via,
    /// A log-in of a user who must enroll two-factor first: only the
    /// enrollment routes answer (see [`RESTRICTED_ALLOWED`]).
    pub restricted: bool,
}

/// What a restricted log-in (two-factor required, not yet enrolled) may call.
pub const RESTRICTED_ALLOWED: [&str; 7] = [
    "/api/v1/me",
    "/api/v1/me/totp",
    "/api/v1/me/totp/confirm",
    "/api/v1/logout",
    // The portal's enrollment pages and log-out.
    crate::adapters::portal::account::PATH,
    crate::adapters::portal::account::CONFIRM_PATH,
    "/logout",
];

/// The 403 a restricted log-in gets everywhere else, and its code.
pub const RESTRICTED_CODE: &str = "totp_enrollment_required";
pub const RESTRICTED_MESSAGE: &str = "two-factor authentication is required for your role: enroll it first (POST /api/v1/me/totp, then POST /api/v1/me/totp/confirm)";

impl Principal {
    /// "Who" in the audit log.
    pub fn actor(&self) -> String {
        format!("user:{}", self.username)
    }

    /// Refuses (403, with the reason) unless the role allows `action` for
    /// `customer`.
    pub fn require(&self, action: Action, customer: Option<i64>) -> Result<()> {
        if self.restricted {
            return Err(RelayError::Restricted);
        }
        let p = permit(
            self.role,
            &Scope {
                customers: &self.customers,
            },
            action,
            customer,
        );
        if p.allowed {
            Ok(())
        } else {
            Err(RelayError::Refused(p.reason))
        }
    }

    /// The log-in session this principal came through, if any.
    pub fn login_session(&self) -> Option<&str> {
        match &self.via {
            Via::Session(h) => Some(h),
            Via::Token(_) | Via::Local => None,
        }
    }

    /// The anti-CSRF token of a cookie log-in: hex(sha256("dwa-csrf:" +
    /// the session id's hash)). API tokens and local callers have none
    /// (nothing rides along on their requests).
    pub fn csrf_token(&self) -> Option<String> {
        self.login_session()
            .map(|h| sha256_hex(&format!("dwa-csrf:{h}")))
    }

    /// Whether `presented` is this principal's CSRF token (constant time).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        match self.csrf_token() {
            Some(t) => subtle::ConstantTimeEq::ct_eq(t.as_bytes(), presented.as_bytes()).into(),
            None => true,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// Two-factor: the 6-digit TOTP code or a recovery code.
    #[serde(default)]
    pub totp: Option<String>,
}

/// A successful log-in: the cookie value (shown once) and when it expires.
pub struct LoginOk {
    pub principal: Principal,
    pub cookie: String,
    pub expires_at: i64,
}

/// The user `username` acting through the relay's own commands.
pub async fn local_principal(relay: &Relay, username: &str) -> Result<Principal> {
    let id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
        .bind(username)
        .fetch_optional(&relay.db.pool)
        .await?
        .ok_or_else(|| RelayError::NotFound(format!("no user {username:?}")))?;
    load_principal(relay, id, Via::Local).await
}

pub async fn load_principal(relay: &Relay, user_id: i64, via: Via) -> Result<Principal> {
    load_principal_as(relay, user_id, via, false).await
}

pub(crate) async fn load_principal_as(
    relay: &Relay,
    user_id: i64,
    via: Via,
    restricted: bool,
) -> Result<Principal> {
    let row = sqlx::query("SELECT username, role, active, locked_at FROM users WHERE id = ?")
        .bind(user_id)
        .fetch_optional(&relay.db.pool)
        .await?
        .ok_or_else(|| RelayError::Unauthorized("the account no longer exists".into()))?;
    if row.get::<i64, _>("active") == 0 {
        return Err(RelayError::Unauthorized(
            "this account is deactivated; an administrator must reactivate it".into(),
        ));
    }
    if row.get::<Option<String>, _>("locked_at").is_some() {
        return Err(RelayError::Locked(
            "this account is locked; an administrator must unlock it".into(),
        ));
    }
    let role: String = row.get("role");
    let customers: Vec<i64> =
        sqlx::query_scalar("SELECT customer_id FROM user_customers WHERE user_id = ?")
            .bind(user_id)
            .fetch_all(&relay.db.pool)
            .await?;
    Ok(Principal {
        user_id,
        username: row.get("username"),
        role: role
            .parse()
            .map_err(|e: String| RelayError::Invalid(format!("stored role: {e}")))?,
        customers,
        via,
        restricted,
    })
}

/// Checks the credentials (password, then two-factor) and opens a log-in
/// session; failure rates, lockout and inactivity apply (see
/// [`crate::services::accounts::login`]). Every attempt is audited; the answer never
/// says whether the user exists.
pub async fn login(relay: &Relay, req: &LoginRequest, peer: &str) -> Result<LoginOk> {
    crate::services::accounts::login::login(relay, req, peer).await
}

/// Opens a log-in session for a user already authenticated some other way
/// (single sign-on): the same cookie and lifetime as a password log-in.
/// The caller audits the log-in, with what it knows of how it happened.
pub async fn open_login_session(relay: &Relay, user_id: i64, peer: &str) -> Result<LoginOk> {
    let cookie = random_secret(32);
    let expires_at = unix_now() + relay.cfg.web.login_lifetime.as_secs() as i64;
    sqlx::query(
        "INSERT INTO login_sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(sha256_hex(&cookie))
    .bind(user_id)
    .bind(now_rfc3339())
    .bind(expires_at)
    .execute(&relay.db.pool)
    .await?;
    sqlx::query("UPDATE users SET last_login = ? WHERE id = ?")
        .bind(now_rfc3339())
        .bind(user_id)
        .execute(&relay.db.pool)
        .await?;
    let principal = load_principal(relay, user_id, Via::Session(sha256_hex(&cookie))).await?;
    tracing::debug!(user = %principal.username, %peer, "log-in session opened");
    Ok(LoginOk {
        principal,
        cookie,
        expires_at,
    })
}

/// Ends a log-in session (the user's logout). Returns whether it was live.
pub async fn logout(relay: &Relay, id_hash: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE login_sessions SET ended_at = ? WHERE id_hash = ? AND ended_at IS NULL",
    )
    .bind(now_rfc3339())
    .bind(id_hash)
    .execute(&relay.db.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// A new API token for the principal's own account; the token is shown once.
pub async fn create_token(relay: &Relay, p: &Principal, name: &str) -> Result<(i64, String)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(RelayError::Invalid(
            "token name must be 1..=100 characters".into(),
        ));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_secret(32));
    let id = sqlx::query(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(p.user_id)
    .bind(name)
    .bind(sha256_hex(&token))
    .bind(now_rfc3339())
    .execute(&relay.db.pool)
    .await?
    .last_insert_rowid();
    Ok((id, token))
}

/// Revokes one of the principal's tokens (admins: anyone's).
pub async fn revoke_token(relay: &Relay, p: &Principal, id: i64) -> Result<()> {
    let r = sqlx::query(
        "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND (user_id = ? OR ?)",
    )
    .bind(now_rfc3339())
    .bind(id)
    .bind(p.user_id)
    .bind(p.role == Role::Admin)
    .execute(&relay.db.pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(RelayError::NotFound(format!("no live token {id} of yours")));
    }
    Ok(())
}

/// Resolves the caller of an API request.
pub async fn authenticate(relay: &Relay, parts: &Parts) -> Result<Principal> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                RelayError::Unauthorized("expected Authorization: Bearer <token>".into())
            })?;
        let row = sqlx::query(
            "SELECT id, user_id FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(sha256_hex(token))
        .fetch_optional(&relay.db.pool)
        .await?
        .ok_or_else(|| RelayError::Unauthorized("unknown or revoked API token".into()))?;
        return load_principal(relay, row.get("user_id"), Via::Token(row.get("id"))).await;
    }
    let Some(cookie) = crate::util::cookie_value(&parts.headers, SESSION_COOKIE) else {
        return Err(RelayError::Unauthorized(
            "log in first (POST /api/v1/login) or send an API token".into(),
        ));
    };
    // A cookie rides along on requests other sites trigger: state-changing
    // ones must come from the portal itself (a JSON body already forces a
    // CORS preflight, which we never grant; this covers the rest).
    if parts.method != Method::GET && parts.method != Method::HEAD {
        if let Some(origin) = parts.headers.get(header::ORIGIN) {
            if origin.as_bytes() != relay.portal_origin().as_bytes() {
                return Err(RelayError::Refused(
                    "cross-origin request refused (Origin is not the portal)".into(),
                ));
            }
        }
    }
    let id_hash = sha256_hex(cookie);
    let now = unix_now();
    let row = sqlx::query(
        "SELECT user_id, last_seen, restricted FROM login_sessions WHERE id_hash = ? AND ended_at IS NULL AND expires_at > ?",
    )
    .bind(&id_hash)
    .bind(now)
    .fetch_optional(&relay.db.pool)
    .await?
    .ok_or_else(|| RelayError::Unauthorized("the log-in session ended; log in again".into()))?;
    let idle = relay.cfg.accounts.session_idle_timeout.as_secs() as i64;
    let last_seen: Option<i64> = row.get("last_seen");
    match crate::services::accounts::users::idle_check(last_seen, now, idle) {
        IdleCheck::Fresh => {}
        IdleCheck::Touch => {
            sqlx::query("UPDATE login_sessions SET last_seen = ? WHERE id_hash = ?")
                .bind(now)
                .bind(&id_hash)
                .execute(&relay.db.pool)
                .await?;
        }
        IdleCheck::TimedOut => {
            logout(relay, &id_hash).await?;
            return Err(RelayError::Unauthorized(format!(
                "the log-in session timed out after {} minutes without a request; log in again",
                idle / 60
            )));
        }
    }
    let p = load_principal_as(
        relay,
        row.get("user_id"),
        Via::Session(id_hash),
        row.get::<i64, _>("restricted") != 0,
    )
    .await?;
    let path = parts.uri.path();
    if p.restricted && !RESTRICTED_ALLOWED.contains(&path) {
        return Err(RelayError::Restricted);
    }
    // CSRF: a state-changing API call on a cookie carries the log-in's
    // token in a header (portal forms carry it as `_csrf`; their handlers check it).
    if parts.method != Method::GET && parts.method != Method::HEAD && path.starts_with("/api/") {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if sent.is_empty() || !p.csrf_ok(sent) {
            return Err(RelayError::Refused(
                "missing or wrong X-CSRF-Token header (the csrf_token from log-in or GET /api/v1/me)"
                    .into(),
            ));
        }
    }
    Ok(p)
}

/// The header a cookie-authenticated API write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a request does to its log-in session's idle clock.
#[derive(Debug, PartialEq, Eq)]
pub enum IdleCheck {
    /// Seen within the last minute: nothing to write.
    Fresh,
    /// Alive; note the request (at most once a minute).
    Touch,
    /// Idle too long: the session ends.
    TimedOut,
}

impl FromRequestParts<Relay> for Principal {
    type Rejection = RelayError;

    async fn from_request_parts(parts: &mut Parts, relay: &Relay) -> Result<Self> {
        authenticate(relay, parts).await
    }
}
