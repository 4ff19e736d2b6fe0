//! Who is calling an HTTP request: the `Authorization: Bearer` token or the
//! log-in cookie, resolved by `services::auth`; plus the web-security
//! checks that belong to HTTP itself — a cookie write must come from the
//! portal's own origin and carry the log-in's CSRF token, a log-in with a
//! one-time password reaches only the password change, and one that must
//! enroll two-factor only the enrollment routes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

use super::reply::ApiError;
use crate::adapters::state::Relay;
use crate::services::auth::{self, AuthError, Principal, SESSION_COOKIE};
use crate::util::Cookie;

/// The header a cookie-authenticated API write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a restricted log-in (two-factor required, not yet enrolled) may call.
pub const RESTRICTED_ALLOWED: [&str; 9] = [
    "/api/v1/me",
    "/api/v1/me/password",
    crate::adapters::portal::account::PASSWORD_PATH,
    "/api/v1/me/totp",
    "/api/v1/me/totp/confirm",
    "/api/v1/logout",
    // The portal's enrollment pages and log-out.
    crate::adapters::portal::account::PATH,
    crate::adapters::portal::account::CONFIRM_PATH,
    "/logout",
];

/// What a log-in with an administrator's one-time password may call:
/// choosing its own password comes first.
pub const PASSWORD_CHANGE_ALLOWED: [&str; 5] = [
    "/api/v1/me",
    "/api/v1/me/password",
    "/api/v1/logout",
    crate::adapters::portal::account::PASSWORD_PATH,
    "/logout",
];

/// Whether a browser says this request comes from another site: an Origin
/// that is not the portal's, or `Sec-Fetch-Site` other than same-origin or
/// none (typed by the user). Clients that send neither (scripts) pass;
/// they carry no victim's cookie.
pub fn cross_site(relay: &Relay, headers: &HeaderMap) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() != relay.portal_origin().as_bytes());
    let fetch_site = headers
        .get("sec-fetch-site")
        .is_some_and(|s| !matches!(s.as_bytes(), b"same-origin" | b"none"));
    origin || fetch_site
}

/// Resolves the caller of a request.
pub async fn authenticate(relay: &Relay, parts: &Parts) -> Result<Principal, AuthError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                AuthError::Unauthorized("expected Authorization: Bearer <token>".into())
            })?;
        return auth::principal_for_token(&relay.svc, token).await;
    }
    let cookie = match crate::util::cookie_values(&parts.headers, SESSION_COOKIE) {
        Cookie::One(c) => c,
        Cookie::Absent => {
            return Err(AuthError::Unauthorized(
                "log in first (POST /api/v1/login) or send an API token".into(),
            ))
        }
        Cookie::Twice => {
            return Err(AuthError::Unauthorized(format!(
                "two {SESSION_COOKIE} cookies: refused (another page may have planted one); log in again"
            )))
        }
    };
    let writes = parts.method != Method::GET && parts.method != Method::HEAD;
    // A cookie rides along on requests other sites trigger: state-changing
    // ones must come from the portal itself (a JSON body already forces a
    // CORS preflight, which we never grant; this covers the rest).
    if writes && cross_site(relay, &parts.headers) {
        return Err(AuthError::Refused(
            "cross-origin request refused (Origin is not the portal)".into(),
        ));
    }
    let p = auth::principal_for_cookie(&relay.svc, cookie).await?;
    let path = parts.uri.path();
    if p.password_change && !PASSWORD_CHANGE_ALLOWED.contains(&path) {
        return Err(AuthError::PasswordChange);
    }
    if p.restricted && !RESTRICTED_ALLOWED.contains(&path) {
        return Err(AuthError::Restricted);
    }
    // CSRF: a state-changing API call on a cookie carries the log-in's
    // token in a header (portal forms carry it as `_csrf`; their handlers
    // check it).
    if writes && path.starts_with("/api/") {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if sent.is_empty() || !p.csrf_ok(sent) {
            return Err(AuthError::Refused(
                "missing or wrong X-CSRF-Token header (the csrf_token from log-in or GET /api/v1/me)"
                    .into(),
            ));
        }
    }
    Ok(p)
}

impl FromRequestParts<Relay> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, relay: &Relay) -> Result<Self, ApiError> {
        Ok(authenticate(relay, parts).await?)
    }
}
