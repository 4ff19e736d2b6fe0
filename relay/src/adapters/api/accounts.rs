//! JSON routes of the accounts services: the caller's two-factor
//! enrollment and the admin's users, customers and enrollment tokens. Thin:
//! the logic is in [`crate::services::accounts::users`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use dwa_store::customers::CustomerRow;
use serde::{Deserialize, Serialize};

use crate::adapters::http::reply::{ApiError, PeerAddr};
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::accounts::users::{
    self, CreatedUser, EnrollmentToken, NewEnrollmentToken, NewUser, PasswordChange,
    PasswordChanged, TotpEnabled, TotpEnrollment, User, UserPatch,
};
use crate::services::auth::Principal;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/me/password", post(change_password))
        .route("/api/v1/me/totp", post(begin_totp))
        .route("/api/v1/me/totp/confirm", post(confirm_totp))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{id}", get(get_user).patch(update_user))
        .route("/api/v1/users/{id}/unlock", post(unlock_user))
        .route("/api/v1/users/{id}/reset-totp", post(reset_totp))
        .route("/api/v1/users/{id}/reset-password", post(reset_password))
        .route(
            "/api/v1/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/api/v1/enrollment-tokens",
            get(list_enrollment_tokens).post(create_enrollment_token),
        )
}

type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn json_body<T>(b: Body<T>) -> Result<T, RelayError> {
    b.map(|Json(v)| v)
        .map_err(|e| RelayError::Invalid(e.body_text()))
}

fn created(v: impl Serialize) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "accounts", security(("cookie" = [])), request_body = PasswordChange,
    responses((status = 200, description = "Changed; the user's other log-ins and API tokens ended", body = PasswordChanged),
              (status = 400, description = "The new password is too short, too long, the current one or the user name"),
              (status = 401, description = "The current password is wrong (counts toward the lockout)")))]
pub async fn change_password(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    p: Principal,
    body: Body<PasswordChange>,
) -> Result<Json<PasswordChanged>> {
    let req = json_body(body)?;
    Ok(Json(
        users::change_password(&relay, &p, &req, &peer.to_string()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/me/totp", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "Pending secret: {otpauth_uri, qr_svg, secret}"),
              (status = 409, description = "Two-factor already active")))]
pub async fn begin_totp(State(relay): State<Relay>, p: Principal) -> Result<Json<TotpEnrollment>> {
    Ok(Json(users::begin_totp(&relay, &p).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotp {
    pub code: String,
}

#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = "accounts", security(("cookie" = []), ("bearer" = [])), request_body = ConfirmTotp,
    responses((status = 200, description = "Two-factor active; {recovery_codes} shown once"),
              (status = 401, description = "Wrong code (code totp_invalid)")))]
pub async fn confirm_totp(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<ConfirmTotp>,
) -> Result<Json<TotpEnabled>> {
    let req = json_body(body)?;
    Ok(Json(users::confirm_totp(&relay, &p, &req.code).await?))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "Every user (admin only)")))]
pub async fn list_users(State(relay): State<Relay>, p: Principal) -> Result<Json<Vec<User>>> {
    Ok(Json(users::list_users(&relay, &p).await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", security(("cookie" = []), ("bearer" = [])), request_body = NewUser,
    responses((status = 201, description = "The user and its one-time password (its first log-in must change it; two-factor is the user's to enroll)"),
              (status = 409, description = "The name is taken")))]
pub async fn create_user(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<NewUser>,
) -> Result<Response> {
    let req = json_body(body)?;
    Ok(created(users::create_user(&relay, &p, &req).await?))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "The user"), (status = 404, description = "No such user")))]
pub async fn get_user(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<User>> {
    Ok(Json(users::get_user(&relay, &p, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "accounts", security(("cookie" = []), ("bearer" = [])), request_body = UserPatch,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "The updated user")))]
pub async fn update_user(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
    body: Body<UserPatch>,
) -> Result<Json<User>> {
    let req = json_body(body)?;
    Ok(Json(users::update_user(&relay, &p, id, &req).await?))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/unlock", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "Unlocked")))]
pub async fn unlock_user(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<User>> {
    Ok(Json(users::unlock_user(&relay, &p, id).await?))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reset-totp", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "Two-factor removed; the user's sessions ended")))]
pub async fn reset_totp(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<User>> {
    Ok(Json(users::reset_totp(&relay, &p, id).await?))
}

#[utoipa::path(get, path = "/api/v1/customers", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "Every customer (admin only)")))]
pub async fn list_customers(
    State(relay): State<Relay>,
    p: Principal,
) -> Result<Json<Vec<CustomerRow>>> {
    Ok(Json(users::list_customers(&relay, &p).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    pub name: String,
}

#[utoipa::path(post, path = "/api/v1/customers", tag = "accounts", security(("cookie" = []), ("bearer" = [])), request_body = NewCustomer,
    responses((status = 201, description = "The customer"), (status = 409, description = "The name is taken")))]
pub async fn create_customer(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<NewCustomer>,
) -> Result<Response> {
    let req = json_body(body)?;
    Ok(created(
        users::create_customer(&relay, &p, &req.name).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "Enrollment tokens (never their secrets)")))]
pub async fn list_enrollment_tokens(
    State(relay): State<Relay>,
    p: Principal,
) -> Result<Json<Vec<EnrollmentToken>>> {
    Ok(Json(users::list_enrollment_tokens(&relay, &p).await?))
}

#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "accounts", security(("cookie" = []), ("bearer" = [])), request_body = NewEnrollmentToken,
    responses((status = 201, description = "The token, shown once")))]
pub async fn create_enrollment_token(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<NewEnrollmentToken>,
) -> Result<Response> {
    let req = json_body(body)?;
    Ok(created(
        users::create_enrollment_token(&relay, &p, &req).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/reset-password", tag = "accounts", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, description = "A new one-time password (shown once); the user's log-ins and API tokens ended")))]
pub async fn reset_password(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<CreatedUser>> {
    Ok(Json(users::reset_password(&relay, &p, id).await?))
}
