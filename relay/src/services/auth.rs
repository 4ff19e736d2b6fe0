//! Who is calling. A password log-in (argon2id) or single sign-on opens a
//! log-in grant behind a cookie; scripts use per-user API tokens. Either
//! way the caller becomes a [`Principal`], and every service asks
//! `dwa_policy::roles` whether it may act for the customer concerned.
//! Log-ins and tokens are grants (`services::grants`): log-out and
//! revocation end them and everything opened under them.

use dwa_policy::roles::{permit, Action, Role, Scope};
use dwa_proto::audit::Event;
use dwa_store::grants::{GrantKind, NewGrant, Selector};
use serde::{Deserialize, Serialize};

use crate::services::error::{Class, Failure};
use crate::services::grants::{self, EndReason};
use crate::services::Services;
use crate::util::{random_secret, sha256_hex};

/// The portal's log-in cookie (host-only: no Domain attribute).
pub const SESSION_COOKIE: &str = "__Host-dwa_session";

/// API tokens start with this, so leaked ones are recognisable.
pub const TOKEN_PREFIX: &str = "dwat_";

/// The 403 a restricted log-in gets everywhere but enrollment, and its code.
pub const RESTRICTED_CODE: &str = "totp_enrollment_required";
pub const RESTRICTED_MESSAGE: &str = "two-factor authentication is required for your role: enroll it first (POST /api/v1/me/totp, then POST /api/v1/me/totp/confirm)";

/// The 403 a log-in with an administrator's one-time password gets
/// everywhere but the password change, and its code.
pub const PASSWORD_CHANGE_CODE: &str = "password_change_required";
pub const PASSWORD_CHANGE_MESSAGE: &str = "your password was issued by an administrator and works once: choose your own first (POST /api/v1/me/password)";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not logged in, ended, unknown token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The account is locked (423).
    #[error("{0}")]
    Locked(String),
    /// Logged in but not allowed (403).
    #[error("{0}")]
    Refused(String),
    /// Must enroll two-factor first (403, its own code).
    #[error("{RESTRICTED_MESSAGE}")]
    Restricted,
    /// Must replace a one-time password first (403, its own code).
    #[error("{PASSWORD_CHANGE_MESSAGE}")]
    PasswordChange,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Grant(#[from] grants::GrantError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
}

impl Failure for AuthError {
    fn class(&self) -> Class {
        match self {
            AuthError::Unauthorized(_) => Class::Unauthorized,
            AuthError::Locked(_) => Class::Locked,
            AuthError::Refused(_) | AuthError::Restricted | AuthError::PasswordChange => {
                Class::Forbidden
            }
            AuthError::Invalid(_) => Class::Invalid,
            AuthError::NotFound(_) => Class::NotFound,
            AuthError::Store(e) => e.class(),
            AuthError::Grant(e) => e.class(),
            AuthError::Audit(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthError::Restricted => RESTRICTED_CODE,
            AuthError::PasswordChange => PASSWORD_CHANGE_CODE,
            AuthError::Store(e) => e.code(),
            _ => match self.class() {
                Class::Unauthorized => "unauthorized",
                Class::Locked => "locked",
                Class::Forbidden => "refused",
                Class::Invalid => "invalid",
                Class::NotFound => "not_found",
                _ => "internal",
            },
        }
    }
}

/// How the caller authenticated: the grant its request rides on.
#[derive(Debug, Clone)]
pub enum Via {
    /// A log-in grant, and the SHA-256 of its cookie.
    Session { grant: i64, hash: String },
    /// An API token's grant.
    Token(i64),
    /// The relay's own commands on this host (`demo`, the admin socket).
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
    /// enrollment routes answer.
    pub restricted: bool,
    /// The user's password is an administrator's one-time password: only
    /// the password change answers (read from the user at each request,
    /// so the change lifts it at once).
    pub password_change: bool,
}

impl Principal {
    /// "Who" in the audit log.
    pub fn actor(&self) -> String {
        format!("user:{}", self.username)
    }

    /// Refuses (403, with the reason) unless the role allows `action` for
    /// `customer`.
    pub fn require(&self, action: Action, customer: Option<i64>) -> Result<(), AuthError> {
        self.unrestricted()?;
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
            Err(AuthError::Refused(p.reason))
        }
    }

    /// Refuses a log-in that must change its password or enroll
    /// two-factor first.
    pub fn unrestricted(&self) -> Result<(), AuthError> {
        if self.password_change {
            Err(AuthError::PasswordChange)
        } else if self.restricted {
            Err(AuthError::Restricted)
        } else {
            Ok(())
        }
    }

    /// The grant this principal's request rides on (a derived grant's parent).
    pub fn grant(&self) -> Option<i64> {
        match &self.via {
            Via::Session { grant, .. } | Via::Token(grant) => Some(*grant),
            Via::Local => None,
        }
    }

    /// The cookie hash of the log-in this principal came through, if any.
    pub fn login_session(&self) -> Option<&str> {
        match &self.via {
            Via::Session { hash, .. } => Some(hash),
            Via::Token(_) | Via::Local => None,
        }
    }

    /// The anti-CSRF token of a cookie log-in: hex(sha256("dwa-csrf:" +
    /// the cookie's hash)). API tokens and local callers have none
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
pub async fn local_principal(svc: &Services, username: &str) -> Result<Principal, AuthError> {
    let id = svc
        .store
        .user_id_by_name(username)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no user {username:?}")))?;
    load_principal(svc, id, Via::Local, false).await
}

/// The principal of user `user_id`, if the account may act at all.
pub async fn load_principal(
    svc: &Services,
    user_id: i64,
    via: Via,
    restricted: bool,
) -> Result<Principal, AuthError> {
    let u = svc
        .store
        .user_auth(user_id)
        .await?
        .ok_or_else(|| AuthError::Unauthorized("the account no longer exists".into()))?;
    if !u.active {
        return Err(AuthError::Unauthorized(
            "this account is deactivated; an administrator must reactivate it".into(),
        ));
    }
    if u.locked_at.is_some() {
        return Err(AuthError::Locked(
            "this account is locked; an administrator must unlock it".into(),
        ));
    }
    Ok(Principal {
        user_id,
        username: u.username,
        role: u
            .role
            .parse()
            .map_err(|e: String| AuthError::Invalid(format!("stored role: {e}")))?,
        customers: svc.store.user_customers(user_id).await?,
        via,
        restricted,
        password_change: u.password_change_required,
    })
}

/// Opens a log-in grant for a user whose credentials were checked (a
/// password log-in or single sign-on). `restricted`: may only enroll
/// two-factor. The caller audits the log-in.
pub async fn open_login(
    svc: &Services,
    user_id: i64,
    restricted: bool,
) -> Result<LoginOk, AuthError> {
    let cookie = random_secret(32);
    let hash = sha256_hex(&cookie);
    let now = svc.time.unix();
    let expires_at = now + svc.cfg().web.login_lifetime.as_secs() as i64;
    let mut g = NewGrant::new(GrantKind::Login, now);
    g.secret_hash = Some(&hash);
    g.user_id = Some(user_id);
    g.restricted = restricted;
    g.expires_at = Some(expires_at);
    let grant = svc.store.issue_grant(&g).await?;
    svc.store
        .note_login(user_id, &svc.time.rfc3339(), now)
        .await?;
    let principal = load_principal(svc, user_id, Via::Session { grant, hash }, restricted).await?;
    Ok(LoginOk {
        principal,
        cookie,
        expires_at,
    })
}

/// What a request does to its log-in's idle clock.
#[derive(Debug, PartialEq, Eq)]
pub enum IdleCheck {
    /// Seen within the last minute: nothing to write.
    Fresh,
    /// Alive; note the request (at most once a minute).
    Touch,
    /// Idle too long: the log-in ends.
    TimedOut,
}

/// The idle rule of log-ins: ended after `idle` seconds without a
/// request; `last_seen` written at most once a minute.
pub fn idle_check(last_seen: Option<i64>, now: i64, idle: i64) -> IdleCheck {
    match last_seen {
        Some(t) if now - t > idle => IdleCheck::TimedOut,
        Some(t) if now - t < 60 => IdleCheck::Fresh,
        _ => IdleCheck::Touch,
    }
}

/// The caller behind a log-in cookie.
pub async fn principal_for_cookie(svc: &Services, cookie: &str) -> Result<Principal, AuthError> {
    let hash = sha256_hex(cookie);
    let now = svc.time.unix();
    let g = svc
        .store
        .grant_by_secret(GrantKind::Login, &hash)
        .await?
        .filter(|g| g.live_at(now))
        .ok_or_else(|| AuthError::Unauthorized("the log-in session ended; log in again".into()))?;
    let idle = svc.cfg().accounts.session_idle_timeout.as_secs() as i64;
    match idle_check(g.last_seen, now, idle) {
        IdleCheck::Fresh => {}
        IdleCheck::Touch => svc.store.touch_grant(g.id, now).await?,
        IdleCheck::TimedOut => {
            grants::end(svc, Selector::Id(g.id), EndReason::Idle, "relay").await?;
            return Err(AuthError::Unauthorized(format!(
                "the log-in session timed out after {} minutes without a request; log in again",
                idle / 60
            )));
        }
    }
    let user = g
        .user_id
        .ok_or_else(|| AuthError::Unauthorized("the log-in session ended; log in again".into()))?;
    load_principal(svc, user, Via::Session { grant: g.id, hash }, g.restricted).await
}

/// The caller behind an API token.
pub async fn principal_for_token(svc: &Services, token: &str) -> Result<Principal, AuthError> {
    let g = svc
        .store
        .grant_by_secret(GrantKind::ApiToken, &sha256_hex(token))
        .await?
        .filter(|g| g.live_at(svc.time.unix()))
        .ok_or_else(|| AuthError::Unauthorized("unknown or revoked API token".into()))?;
    let user = g
        .user_id
        .ok_or_else(|| AuthError::Unauthorized("unknown or revoked API token".into()))?;
    load_principal(svc, user, Via::Token(g.id), false).await
}

/// Ends `p`'s log-in and everything opened under it; audited.
pub async fn logout(svc: &Services, p: &Principal) -> Result<(), AuthError> {
    let Via::Session { grant, .. } = &p.via else {
        return Err(AuthError::Invalid(
            "log-out ends a cookie session; revoke an API token with DELETE /api/v1/tokens/{id}"
                .into(),
        ));
    };
    grants::end(svc, Selector::Id(*grant), EndReason::Logout, &p.actor()).await?;
    svc.audit
        .record(Event::UserLogout {}, &p.actor(), None)
        .await;
    Ok(())
}

/// A new API token, shown once.
#[derive(Debug, Serialize)]
pub struct NewToken {
    pub id: i64,
    pub name: String,
    pub token: String,
}

/// A new API token for `p`'s own account; audited.
pub async fn create_token(
    svc: &Services,
    p: &Principal,
    name: &str,
) -> Result<NewToken, AuthError> {
    p.unrestricted()?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(AuthError::Invalid(
            "token name must be 1..=100 characters".into(),
        ));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_secret(32));
    let hash = sha256_hex(&token);
    let mut g = NewGrant::new(GrantKind::ApiToken, svc.time.unix());
    g.secret_hash = Some(&hash);
    g.user_id = Some(p.user_id);
    g.name = Some(name);
    let id = svc.store.issue_grant(&g).await?;
    svc.audit
        .record(
            Event::TokenCreate {
                id,
                name: name.to_string(),
            },
            &p.actor(),
            None,
        )
        .await;
    Ok(NewToken {
        id,
        name: name.to_string(),
        token,
    })
}

/// Revokes one of `p`'s tokens (an admin: anyone's) and everything opened
/// with it; audited.
pub async fn revoke_token(svc: &Services, p: &Principal, id: i64) -> Result<(), AuthError> {
    let mine = svc
        .store
        .grant(id)
        .await?
        .filter(|g| {
            g.kind().ok() == Some(GrantKind::ApiToken)
                && g.ended_at.is_none()
                && (g.user_id == Some(p.user_id) || p.role == Role::Admin)
        })
        .is_some();
    if !mine {
        return Err(AuthError::NotFound(format!("no live token {id} of yours")));
    }
    grants::end(svc, Selector::Id(id), EndReason::TokenRevoked, &p.actor()).await?;
    svc.audit
        .record(Event::TokenRevoke { id }, &p.actor(), None)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_log_ins_time_out_and_touches_are_rare() {
        let idle = 30 * 60;
        assert_eq!(idle_check(Some(1000), 1030, idle), IdleCheck::Fresh);
        assert_eq!(idle_check(Some(1000), 1061, idle), IdleCheck::Touch);
        assert_eq!(idle_check(Some(1000), 1000 + idle, idle), IdleCheck::Touch);
        assert_eq!(
            idle_check(Some(1000), 1001 + idle, idle),
            IdleCheck::TimedOut
        );
        assert_eq!(idle_check(None, 5, idle), IdleCheck::Touch);
    }
}
