//! Devices by hand: `POST /api/v1/devices` and `DELETE
//! /api/v1/devices/{id}`; erasing a customer: `DELETE
//! /api/v1/customers/{id}` (administrators; rules in `services::devices`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::adapters::http::reply::ApiError;
use crate::adapters::http::reply::{E400, E401, E403, E404, E409};
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::auth::Principal;
use crate::services::devices::{self, Actor};

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/devices", post(add))
        .route("/api/v1/devices/{id}", delete(remove))
        .route("/api/v1/customers/{id}", delete(erase_customer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    /// Agent id, or its name when unambiguous.
    pub agent: String,
    /// The device's address as the agent reaches it.
    pub address: String,
    #[serde(default)]
    pub name: Option<String>,
}

type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Register a device by hand (administrators).
#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "devices",
    security(("cookie" = []), ("bearer" = [])),
    request_body = NewDevice,
    responses(
        (status = 201, description = "`{id, agent, address, name}`", body = Object),
        E400, E401, E403, E404, E409,
    )
)]
pub(crate) async fn add(
    State(relay): State<Relay>,
    p: Principal,
    body: Body<NewDevice>,
) -> Result<Response, ApiError> {
    let Json(d) = body.map_err(|e| RelayError::Invalid(e.body_text()))?;
    let v = devices::add(
        &relay,
        Actor::User(&p),
        &d.agent,
        &d.address,
        d.name.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Remove a device, its readings and alerts; its web sessions and tunnels
/// end (administrators).
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Device id")),
    responses(
        (status = 200, description = "Removed", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn remove(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    devices::remove(&relay, Actor::User(&p), id).await?;
    Ok(Json(json!({"ok": true})))
}

/// Erase a customer and all its data: agents are revoked, web sessions and
/// tunnels to its devices end (administrators).
#[utoipa::path(
    delete,
    path = "/api/v1/customers/{id}",
    tag = "admin",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    responses(
        (status = 200, description = "`{agents, devices, readings, alerts, users_deactivated}` removed", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn erase_customer(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<dwa_store::customers::Erased>, ApiError> {
    Ok(Json(
        devices::erase_customer(&relay, Actor::User(&p), id).await?,
    ))
}
