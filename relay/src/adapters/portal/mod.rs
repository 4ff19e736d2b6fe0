//! The dealer portal: server-rendered HTML (maud, compiled in; no template
//! files, no JavaScript), on the relay's own host next to `/api/v1`.
//!
//! Every page authenticates the caller as the API does ([`Principal`], the
//! same `__Host-dwa_session` cookie) and checks its permission on the server with
//! `p.require(Action::.., customer)`. Not logged in: a redirect to
//! `/login`. Not allowed: a 403 page. Every state-changing form carries
//! `_csrf` = [`Principal::csrf_token`], checked before anything else.
//!
//! - [`layout`]: the page shell, the stylesheet, shared widgets.
//! - [`login`]: log-in (password + two-factor code) and log-out.
//! - [`fleet`]: customers, agents, devices, a device's page.
//! - [`actions`]: a device's actions (web page, diagnostics, TCP tunnel).
//! - [`account`]: the caller's password and two-factor enrollment.
//! - [`audit`]: the audit log with filters and downloads.
//! - [`admin`]: users, roles, customers, enrollment tokens, alert rules.

pub mod account;
pub mod actions;
pub mod admin;
pub mod audit;
pub mod fleet;
pub mod layout;
pub mod login;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use subtle::ConstantTimeEq;

use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::auth::Principal;
use crate::services::error::{Class, Failure};

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/login", get(login::form_page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/", get(fleet::home))
        .route("/customers/{id}", get(fleet::customer))
        .route("/agents/{id}", get(fleet::agent))
        .route("/devices", get(fleet::devices))
        .route("/devices/{id}", get(fleet::device))
        .route("/devices/{id}/web", post(actions::open_web))
        .route("/devices/{id}/diagnostics", post(actions::diagnose))
        .route(
            account::PASSWORD_PATH,
            get(account::password).post(account::change_password),
        )
        .route(account::PATH, get(account::two_factor).post(account::begin))
        .route(account::CONFIRM_PATH, post(account::confirm))
        .route("/devices/{id}/tunnel", post(actions::tunnel))
        .route("/audit", get(audit::page_route))
        .route("/audit/download", get(audit::download))
        .route("/admin/users", get(admin::users).post(admin::add_user))
        .route("/admin/users/{id}/{action}", post(admin::user_action))
        .route("/admin/roles", get(admin::roles))
        .route(
            "/admin/customers",
            get(admin::customers).post(admin::add_customer),
        )
        .route("/admin/tokens", get(admin::tokens).post(admin::add_token))
        .route("/admin/alert-rules", get(admin::alert_rules))
        .route(
            "/admin/alert-rules/{customer}",
            post(admin::save_alert_rules),
        )
        .layer(middleware::from_fn(security_headers))
        // The stylesheet is the same for everyone and cached for long: its
        // URL carries a hash of its content.
        .route(layout::CSS_PATH, get(layout::stylesheet))
}

/// Headers on every portal page: nothing but our own files, never framed,
/// forms post only to us, HTTPS only, no sniffing, no Referer leaving
/// the portal's origin.
pub fn security_header_values() -> [(header::HeaderName, HeaderValue); 6] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
        ),
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // Not `no-referrer`: under it browsers send `Origin: null` on the
        // portal's own form posts, which the cookie Origin check refuses.
        // `same-origin` still sends nothing to any other origin (session
        // hosts and printers included).
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Pages show live state and one-time secrets: never cache them.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in security_header_values() {
        h.entry(name).or_insert(value);
    }
    r
}

/// A portal error: a redirect to the log-in page, or an HTML error page.
/// Any service's error becomes one; its class picks the page.
pub struct PortalError(pub Box<dyn Failure + Send + Sync>);

impl std::fmt::Debug for PortalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortalError({})", self.0)
    }
}

impl<E: Failure + Send + Sync + 'static> From<E> for PortalError {
    fn from(e: E) -> Self {
        PortalError(Box::new(e))
    }
}

pub type PResult<T = Response> = std::result::Result<T, PortalError>;

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let e = self.0;
        let (status, title) = match e.class() {
            Class::Unauthorized if e.code().starts_with("totp_") => {
                (StatusCode::UNAUTHORIZED, "Two-factor code")
            }
            Class::Unauthorized => return Redirect::to("/login").into_response(),
            // A log-in that must enroll two-factor first is sent to do so.
            Class::Forbidden if e.code() == crate::services::auth::RESTRICTED_CODE => {
                return Redirect::to(account::PATH).into_response()
            }
            // So is one that must replace an administrator's password.
            Class::Forbidden if e.code() == crate::services::auth::PASSWORD_CHANGE_CODE => {
                return Redirect::to(account::PASSWORD_PATH).into_response()
            }
            Class::Forbidden => (StatusCode::FORBIDDEN, "Not allowed"),
            Class::Locked => (StatusCode::LOCKED, "Account locked"),
            Class::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            Class::Conflict => (StatusCode::CONFLICT, "Conflict"),
            Class::Invalid => (StatusCode::BAD_REQUEST, "Invalid request"),
            Class::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            Class::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            Class::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        };
        let text = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "portal: internal error");
            "Something went wrong on the relay; the error is in its log.".to_string()
        } else {
            e.to_string()
        };
        let body = layout::page(
            title,
            None,
            maud::html! {
                p.error role="alert" { (text) }
                p { a href="/" { "Back to the portal" } }
            },
        );
        (status, body).into_response()
    }
}

/// The logged-in caller of a portal page (else a redirect to `/login`).
pub struct Portal(pub Principal);

impl FromRequestParts<Relay> for Portal {
    type Rejection = PortalError;

    async fn from_request_parts(parts: &mut Parts, relay: &Relay) -> PResult<Self> {
        Ok(Portal(
            crate::adapters::http::extract::authenticate(relay, parts).await?,
        ))
    }
}

/// Refuses a form post whose `_csrf` is not the caller's token. Callers
/// without a cookie session (API tokens) have no ambient credential to
/// forge, so no token to check.
pub fn check_csrf(p: &Principal, given: &str) -> PResult<()> {
    match p.csrf_token() {
        None => Ok(()),
        Some(t) if bool::from(t.as_bytes().ct_eq(given.as_bytes())) => Ok(()),
        Some(_) => Err(PortalError::from(RelayError::Refused(
            "the form's anti-forgery token is missing or stale; reload the page and retry".into(),
        ))),
    }
}

pub type FormBody<T> = std::result::Result<Form<T>, FormRejection>;
pub type QueryArgs<T> = std::result::Result<axum::extract::Query<T>, QueryRejection>;

pub fn form<T>(f: FormBody<T>) -> PResult<T> {
    f.map(|Form(v)| v)
        .map_err(|e| PortalError::from(RelayError::Invalid(e.body_text())))
}

pub fn query<T>(q: QueryArgs<T>) -> PResult<T> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| PortalError::from(RelayError::Invalid(e.body_text())))
}

/// A 303 to `to` (after a form post, the browser GETs the result).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
