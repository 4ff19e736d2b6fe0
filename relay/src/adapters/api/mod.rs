//! The dealer API under `/api/v1` (JSON): log-in, tokens, devices, web
//! sessions. Every handler authenticates the caller ([`Principal`]) and
//! checks its permission for the customer concerned.

pub mod accounts;
pub mod audit;
pub mod devices;
pub mod diagnostics;
pub mod telemetry;
pub mod tunnels;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::adapters::http::reply::{ApiError, PeerAddr};
use crate::adapters::http::reply::{E400, E401, E403, E404, E409, E423, E429, E503};
use crate::adapters::state::Relay;
use crate::adapters::web::proxy;
use crate::error::{RelayError, Result};
use crate::services::auth::{LoginRequest, Principal, SESSION_COOKIE};
use crate::services::web_sessions;

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/tokens", post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route(
            "/api/v1/devices/{id}/web-sessions",
            post(create_web_session),
        )
        .route("/api/v1/web-sessions", get(list_web_sessions))
        .route(
            "/api/v1/web-sessions/{id}",
            get(get_web_session).delete(delete_web_session),
        )
        // Devices, readings, reports, agents, alerts.
        .merge(crate::adapters::api::telemetry::routes())
        .merge(diagnostics::routes())
        // Single sign-on: /auth/oidc/login and /auth/oidc/callback.
        .merge(crate::adapters::http::sso::routes())
        .merge(crate::adapters::openapi::routes())
        .merge(crate::adapters::api::accounts::routes())
        .merge(tunnels::routes())
        .merge(devices::routes())
        .merge(crate::adapters::api::audit::routes())
        .merge(crate::adapters::portal::routes())
}

/// JSON body or a 400 that says what is wrong with it.
type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn json_body<T>(b: Body<T>) -> Result<T> {
    b.map(|Json(v)| v)
        .map_err(|e| RelayError::Invalid(e.body_text()))
}

fn limited(msg: &str, retry_after: u64) -> RelayError {
    RelayError::RateLimited {
        msg: msg.into(),
        retry_after,
    }
}

/// Log in with a password: sets the `__Host-dwa_session` cookie.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "auth",
    security(()),
    request_body = crate::services::auth::LoginRequest,
    responses(
        (status = 200, description = "Logged in: `{user, role, expires_at}`; the cookie is set",
         body = Object),
        E400, E401, E423, E429,
    )
)]
pub(crate) async fn login(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    body: Body<LoginRequest>,
) -> Result<Response, ApiError> {
    if relay.login_rate.check_key(&peer.ip()).is_err() {
        return Err(limited("too many log-in attempts; retry later", 60).into());
    }
    let req = json_body(body)?;
    let ok = crate::services::accounts::login::login(&relay, &req, &peer.to_string()).await?;
    let mut r = Json(json!({
        "user": ok.principal.username, "role": ok.principal.role.as_str(),
        "expires_at": ok.expires_at, "csrf_token": ok.principal.csrf_token(),
        "totp_enrollment_required": ok.principal.restricted,
        "password_change_required": ok.principal.password_change,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, login_cookie(&relay, &ok.cookie)?);
    Ok(r)
}

/// End the cookie's log-in session and every web session opened under it.
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "auth",
    security(("cookie" = [])),
    responses(
        (status = 200, description = "Logged out; the cookie is cleared", body = Object),
        E400, E401, E403,
    )
)]
pub(crate) async fn logout(State(relay): State<Relay>, p: Principal) -> Result<Response> {
    end_login(&relay, &p).await?;
    let mut r = Json(json!({"ok": true})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(LOGOUT_COOKIE));
    Ok(r)
}

/// The `Set-Cookie` of a log-in (API and portal alike).
pub fn login_cookie(relay: &Relay, value: &str) -> Result<HeaderValue> {
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        relay.cfg().web.login_lifetime.as_secs()
    );
    HeaderValue::from_str(&cookie).map_err(|e| RelayError::Invalid(e.to_string()))
}

/// The `Set-Cookie` that clears the log-in cookie.
pub const LOGOUT_COOKIE: &str =
    "__Host-dwa_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0";

/// Ends `p`'s log-in and everything opened under it (web sessions,
/// tunnels), audited: the API's and the portal's log-out.
pub async fn end_login(relay: &Relay, p: &Principal) -> Result<()> {
    Ok(crate::services::auth::logout(relay, p).await?)
}

/// The caller: user name, role, customers.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "`{user, role, customers, csrf_token, totp_enrollment_required, password_change_required}`", body = Object),
        E401,
    )
)]
pub(crate) async fn me(p: Principal) -> Json<serde_json::Value> {
    Json(
        json!({"user": p.username, "role": p.role.as_str(), "customers": p.customers,
                "csrf_token": p.csrf_token(), "totp_enrollment_required": p.restricted,
                "password_change_required": p.password_change}),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    name: String,
}

/// A new API token for the caller's own account (shown once).
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "auth",
    security(("cookie" = []), ("bearer" = [])),
    request_body = TokenRequest,
    responses(
        (status = 201, description = "`{id, name, token}`", body = Object),
        E400, E401, E403,
    )
)]
pub(crate) async fn create_token(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<TokenRequest>,
) -> Result<Response> {
    let req = json_body(body)?;
    let t = crate::services::auth::create_token(&relay, &p, &req.name).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

/// Revoke one of the caller's API tokens (an admin: anyone's).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "auth",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 200, description = "Revoked", body = Object),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn revoke_token(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>> {
    crate::services::auth::revoke_token(&relay, &p, id).await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebSessionRequest {
    pub port: u16,
    #[serde(default)]
    pub tls: Option<bool>,
    /// Rewrite the printer's URLs in HTML/CSS/JavaScript (default true).
    #[serde(default)]
    pub rewrite: Option<bool>,
}

impl From<WebSessionRequest> for web_sessions::OpenRequest {
    fn from(r: WebSessionRequest) -> Self {
        Self {
            port: r.port,
            tls: r.tls,
            rewrite: r.rewrite,
        }
    }
}

/// Open a web session to the device's web page (technician, admin).
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/web-sessions",
    tag = "web-sessions",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Device id")),
    request_body = WebSessionRequest,
    responses(
        (status = 201, description = "`{id, url, expires_at, host, tls, certificate}`: open `url` \
         in the browser (it carries a one-time ticket)", body = Object),
        E400, E401, E403, E404, E429, E503,
        (status = 502, description = "The printer could not be reached", body = crate::adapters::http::reply::ErrorBody),
    )
)]
pub(crate) async fn create_web_session(
    State(relay): State<Relay>,
    p: Principal,
    Path(device): Path<i64>,
    body: Body<WebSessionRequest>,
) -> Result<Response> {
    let req = json_body(body)?;
    let v = web_sessions::open(
        &relay.svc,
        &p,
        device,
        &req.into(),
        &proxy::Prewarm(relay.clone()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// One web session (its creator, or whoever may open web sessions for
/// that customer).
#[utoipa::path(
    get,
    path = "/api/v1/web-sessions/{id}",
    tag = "web-sessions",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Web session id")),
    responses(
        (status = 200, description = "The session", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn get_web_session(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<web_sessions::SessionView>> {
    Ok(Json(web_sessions::get(&relay, &p, &id)?))
}

/// Live web sessions the caller may see.
#[utoipa::path(
    get,
    path = "/api/v1/web-sessions",
    tag = "web-sessions",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = Vec<Object>),
        E401,
    )
)]
pub(crate) async fn list_web_sessions(
    State(relay): State<Relay>,
    p: Principal,
) -> Json<Vec<web_sessions::SessionView>> {
    Json(web_sessions::list(&relay, &p))
}

/// End a web session: every connection of it closes.
#[utoipa::path(
    delete,
    path = "/api/v1/web-sessions/{id}",
    tag = "web-sessions",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Web session id")),
    responses(
        (status = 200, description = "The ended session", body = Object),
        E401, E403, E404, E409,
    )
)]
pub(crate) async fn delete_web_session(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<web_sessions::SessionView>> {
    Ok(Json(web_sessions::delete(&relay, &p, &id).await?))
}
