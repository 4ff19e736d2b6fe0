//! `POST /api/v1/devices/{id}/diagnostics` (the rules are in
//! `services::diagnostics`): the report as JSON, with the status the
//! outcome calls for.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dwa_proto::diag::{DiagOutcome, DiagParams};
use serde_json::{json, Value};

use crate::adapters::http::reply::ApiError;
use crate::adapters::state::Relay;
use crate::error::RelayError;
use crate::services::auth::Principal;
use crate::services::diagnostics::{self, DiagReport, Finished};

pub fn routes() -> Router<Relay> {
    Router::new().route("/api/v1/devices/{id}/diagnostics", post(run_diagnostic))
}

/// The answer to a diagnostic: the report, and for a refusal, failure or
/// timeout its `error` and `code` beside it.
pub fn answer(r: &DiagReport) -> (StatusCode, Value) {
    let mut body = serde_json::to_value(r).unwrap_or_default();
    let status = match &r.finished {
        Finished::Outcome(DiagOutcome::Done { .. }) => StatusCode::OK,
        Finished::Outcome(DiagOutcome::Refused { reason, .. }) => {
            body["error"] = json!(format!("denied by the agent: {reason}"));
            body["code"] = json!("refused");
            body["decided_by"] = json!("agent");
            StatusCode::FORBIDDEN
        }
        Finished::Outcome(DiagOutcome::Failed { reason }) => {
            body["error"] = json!(reason);
            body["code"] = json!("diag_failed");
            StatusCode::BAD_GATEWAY
        }
        Finished::TimedOut { reason } => {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                json!({"error": reason, "code": "timeout"}),
            )
        }
    };
    (status, body)
}

/// Runs one diagnostic on a device through its agent.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/diagnostics",
    tag = "diagnostics",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Device id")),
    request_body(content = serde_json::Value, description = "{kind: ping|tcp|http|ipp|pjl, port?, count?, interval_ms?, timeout_ms?, size?, tls?}"),
    responses(
        (status = 200, description = "The diagnostic ran: {device, address, kind, request, outcome: done, result}"),
        (status = 400, description = "Invalid or out-of-bounds parameters"),
        (status = 403, description = "No permission, or refused by the relay's or the agent's policy (rule and reason)"),
        (status = 404, description = "No such device"),
        (status = 409, description = "The device's agent is not connected"),
        (status = 429, description = "Rate limit per user or per device; see Retry-After"),
        (status = 502, description = "The agent could not run it (reason)"),
        (status = 504, description = "No result from the agent in time"),
    )
)]
pub async fn run_diagnostic(
    State(relay): State<Relay>,
    p: Principal,
    Path(device): Path<i64>,
    body: Result<Json<DiagParams>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(params) = body.map_err(|e| RelayError::Invalid(e.body_text()))?;
    let r = diagnostics::run(&relay, &p, device, params).await?;
    let (status, body) = answer(&r);
    Ok((status, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_route_is_described_for_openapi() {
        use utoipa::OpenApi;
        #[derive(OpenApi)]
        #[openapi(paths(super::run_diagnostic))]
        struct Doc;
        let doc = Doc::openapi();
        let path = &doc.paths.paths["/api/v1/devices/{id}/diagnostics"];
        assert!(path.post.is_some());
    }
}
