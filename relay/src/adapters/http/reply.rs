//! How the HTTP adapters answer: the API's error body and the one mapping
//! of a service's failure to it, the documented error responses, and the
//! peer address every handler may ask for.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::error::RelayError;
use crate::services::error::{Class, Failure};

#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The API's error body: `{"error": "...", "code": "..."}`.
pub fn api_error(status: StatusCode, code: &str, msg: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({"error": msg.into(), "code": code})),
    )
        .into_response()
}

/// The one mapping of a service's failure to the API's answer: status,
/// `{"error", "code"}`, and Retry-After for 429. Internal faults are
/// logged, not shown.
pub fn failure_response<E: Failure + ?Sized>(e: &E) -> Response {
    let (status, retry) = match e.class() {
        Class::Invalid => (StatusCode::BAD_REQUEST, None),
        Class::Unauthorized => (StatusCode::UNAUTHORIZED, None),
        Class::Forbidden => (StatusCode::FORBIDDEN, None),
        Class::NotFound => (StatusCode::NOT_FOUND, None),
        Class::Conflict => (StatusCode::CONFLICT, None),
        Class::Locked => {
            // The contract: the numeric status as the code.
            return (
                StatusCode::LOCKED,
                Json(serde_json::json!({"error": e.to_string(), "code": 423})),
            )
                .into_response();
        }
        Class::RateLimited { retry_after } => (StatusCode::TOO_MANY_REQUESTS, Some(retry_after)),
        Class::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
        Class::Internal => {
            tracing::error!(error = %e, "internal error");
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            );
        }
    };
    let mut r = api_error(status, e.code(), e.to_string());
    if let Some(s) = retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// A service's error on its way out of an API handler.
pub struct ApiError(Box<dyn Failure + Send + Sync>);

impl<E: Failure + Send + Sync + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(Box::new(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        failure_response(&*self.0)
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        failure_response(&self)
    }
}

/// The API's error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Machine-readable: invalid, unauthorized, refused, not_found,
    /// conflict, locked, rate_limited, unavailable, internal...
    pub code: String,
}

/// 400: the body, query or path does not parse or is out of range.
#[derive(IntoResponses)]
#[response(status = 400, description = "Invalid request (body, query or path)")]
pub struct E400(pub ErrorBody);

/// 401: not logged in, or the credentials are wrong or ended.
#[derive(IntoResponses)]
#[response(status = 401, description = "Not authenticated")]
pub struct E401(pub ErrorBody);

/// 403: authenticated, but the role or customer scope does not allow it
/// (or a cross-origin cookie request).
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Refused: the role or customer scope does not allow it"
)]
pub struct E403(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 404, description = "No such object")]
pub struct E404(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 409, description = "Conflicts with the object's state")]
pub struct E409(pub ErrorBody);

#[derive(IntoResponses)]
#[response(status = 423, description = "The account is locked")]
pub struct E423(pub ErrorBody);

#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "Rate limited",
    headers(("Retry-After" = u64, description = "Seconds to wait"))
)]
pub struct E429(pub ErrorBody);

#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "The relay or the agent cannot take it now"
)]
pub struct E503(pub ErrorBody);
