//! The single-sign-on endpoints: `GET /auth/oidc/login` and
//! `GET /auth/oidc/callback`. They parse, call `services::sso`, and turn
//! the result into a redirect, a page for a browser or the API's JSON; the
//! cookies are set here.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use crate::adapters::http::reply::{api_error, PeerAddr};
use crate::adapters::state::Relay;
use crate::services::sso::{self, Callback, SsoError, CALLBACK_PATH, LOGIN_PATH};

/// Binds a pending log-in to the browser that began it.
pub const PENDING_COOKIE: &str = "dwa_oidc";
const DROP_PENDING_COOKIE: &str =
    "dwa_oidc=; Path=/auth/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age=0";

pub fn routes() -> Router<Relay> {
    Router::new()
        .route(LOGIN_PATH, get(login))
        .route(CALLBACK_PATH, get(callback))
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

/// The one place a single-sign-on failure becomes a reply: an HTML page
/// for a browser, the API's JSON error otherwise.
fn refusal(html: bool, e: &SsoError) -> Response {
    let (status, title) = match e {
        SsoError::NotConfigured => (StatusCode::NOT_FOUND, "Single sign-on"),
        SsoError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "Too many log-ins"),
        SsoError::ProviderUnavailable => (StatusCode::BAD_GATEWAY, "Single sign-on unavailable"),
        SsoError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "Single sign-on busy"),
        SsoError::BadState(_) | SsoError::WrongIssuer | SsoError::NoCode => {
            (StatusCode::BAD_REQUEST, "Log-in failed")
        }
        SsoError::Provider(_) => (StatusCode::BAD_GATEWAY, "Log-in failed"),
        SsoError::ProviderRefused(_) | SsoError::NoRole => {
            (StatusCode::FORBIDDEN, "Access refused")
        }
        SsoError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Log-in failed"),
    };
    let msg = e.to_string();
    let mut r = if html {
        crate::adapters::web::proxy::page(status, title, &html_escape(&msg)).into_response()
    } else {
        api_error(status, e.code(), msg)
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(e, SsoError::RateLimited) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
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
    let Some(http) = relay.oidc_http.clone() else {
        return refusal(html, &SsoError::NotConfigured);
    };
    let begun = match sso::begin(&relay, http.as_ref(), peer.ip()).await {
        Ok(b) => b,
        Err(e) => return refusal(html, &e),
    };
    let cookie = format!(
        "{PENDING_COOKIE}={}; Path=/auth/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        begun.binding, begun.max_age_secs
    );
    match (
        HeaderValue::from_str(&begun.url),
        HeaderValue::from_str(&cookie),
    ) {
        (Ok(loc), Ok(c)) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::LOCATION, loc);
            h.insert(header::SET_COOKIE, c);
            r
        }
        _ => refusal(html, &SsoError::Internal),
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
        ("state" = String, Query, description = "The state the log-in was started with"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("error" = Option<String>, Query, description = "The provider's error, if it refused"),
        ("iss" = Option<String>, Query, description = "The issuer (RFC 9207)")
    ),
    responses(
        (status = 200, description = "Logged in: the session cookie is set; a page (or JSON) that goes on to /"),
        (status = 400, description = "Unknown, used, expired or foreign state; wrong issuer; no code"),
        (status = 403, description = "The provider refused, or the groups give no role"),
        (status = 404, description = "Single sign-on is not configured"),
        (status = 502, description = "The identity provider failed")
    )
)]
pub async fn callback(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let html = wants_html(&headers);
    let Some(http) = relay.oidc_http.clone() else {
        return refusal(html, &SsoError::NotConfigured);
    };
    let binding = crate::util::cookie_value(&headers, PENDING_COOKIE);
    let done = sso::finish(&relay, http.as_ref(), &q, binding, &peer.to_string()).await;
    let mut r = match done {
        Ok(ok) => logged_in(&relay, html, ok),
        Err(e) => refusal(html, &e),
    };
    // The binding served its purpose (or was wrong): drop it.
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(DROP_PENDING_COOKIE),
    );
    r
}

fn logged_in(relay: &Relay, html: bool, ok: sso::LoggedIn) -> Response {
    let session = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::services::auth::SESSION_COOKIE,
        ok.cookie,
        relay.cfg().web.login_lifetime.as_secs()
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
        Json(serde_json::json!({
            "user": ok.user, "role": ok.role, "customers": ok.customers,
            "expires_at": ok.expires_at, "next": "/",
        }))
        .into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFRESH, HeaderValue::from_static("0;url=/"));
    if let Ok(v) = HeaderValue::from_str(&session) {
        h.append(header::SET_COOKIE, v);
    }
    r
}
