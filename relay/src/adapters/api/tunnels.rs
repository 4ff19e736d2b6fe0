//! Raw TCP tunnels: `POST /api/v1/devices/{id}/tunnels`, `GET
//! /api/v1/tunnels`, `DELETE /api/v1/tunnels/{id}` (the rules are in
//! `services::tunnels`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::adapters::http::reply::{ApiError, PeerAddr};
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::auth::Principal;
use crate::services::tunnels::{self, TunnelView};

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/devices/{id}/tunnels", post(create))
        .route("/api/v1/tunnels", get(list))
        .route("/api/v1/tunnels/{id}", delete(revoke))
}

/// `ttl` as seconds or a duration such as "30m".
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelRequest {
    pub port: u16,
    #[serde(default)]
    pub ttl: Option<Ttl>,
}

impl Ttl {
    pub fn duration(&self) -> Result<Duration, RelayError> {
        match self {
            Ttl::Seconds(s) => Ok(Duration::from_secs(*s)),
            Ttl::Text(s) => Ok(crate::util::parse_duration(s)?),
        }
    }
}

type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Opens a tunnel to a device port, for the caller's address only.
#[utoipa::path(
    post, path = "/api/v1/devices/{id}/tunnels", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "device id")),
    request_body = TunnelRequest,
    responses(
        (status = 201, description = "{id, host, port, client, expires_at, ...}: connect to host:port from client"),
        (status = 400, description = "bad port or ttl"),
        (status = 403, description = "not allowed for this customer, or the port is not allowed"),
        (status = 404, description = "no such device"),
        (status = 429, description = "the user has the maximum of tunnels open"),
        (status = 503, description = "no free listening port, or the agent is offline"),
    )
)]
pub async fn create(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    p: Principal,
    Path(device): Path<i64>,
    body: Body<TunnelRequest>,
) -> Result<Response, ApiError> {
    let req = body
        .map(|Json(v)| v)
        .map_err(|e| RelayError::Invalid(e.body_text()))?;
    let ttl = req.ttl.as_ref().map(Ttl::duration).transpose()?;
    let v = tunnels::open(&relay.svc, &p, peer.ip(), device, req.port, ttl).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Live tunnels the caller may see.
#[utoipa::path(get, path = "/api/v1/tunnels", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "the caller's tunnels, and those of customers it may open tunnels for")))]
pub async fn list(State(relay): State<Relay>, p: Principal) -> Json<Vec<TunnelView>> {
    Json(tunnels::list(&relay, &p))
}

/// Closes a tunnel and every connection it carries.
#[utoipa::path(delete, path = "/api/v1/tunnels/{id}", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "tunnel id")),
    responses(
        (status = 200, description = "the tunnel as it ended"),
        (status = 403, description = "not the caller's and not allowed for its customer"),
        (status = 404, description = "no such live tunnel"),
    ))]
pub async fn revoke(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<TunnelView>, ApiError> {
    Ok(Json(tunnels::revoke(&relay, &p, &id).await?))
}
