//! `POST /agent/v1/ingest`, the HTTP side: who is calling (before the body
//! is read), the body within `MAX_BATCH_BYTES` (413) and [`BODY_TIMEOUT`]
//! (408), then the upload service (`services::telemetry::ingest`).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dwa_proto::telemetry::MAX_BATCH_BYTES;
use http_body_util::BodyExt;

use super::reply::{api_error, failure_response, PeerAddr};
use crate::adapters::state::Relay;
use crate::services::telemetry::ingest::{self, IngestError};

/// A body that trickles in cannot hold a connection for long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// The one mapping of the upload service's refusals.
fn reply(e: IngestError) -> Response {
    match e {
        IngestError::TooManyItems(m) => {
            api_error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_items", m)
        }
        e => failure_response(&e),
    }
}

fn too_large() -> Response {
    api_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body larger than {MAX_BATCH_BYTES} bytes; send fewer items per batch"),
    )
}

/// Upload a batch of spooled telemetry, signed by the agent's key.
#[utoipa::path(
    post,
    path = "/agent/v1/ingest",
    tag = "agent",
    security(("agent_signature" = [])),
    request_body(content = Object, description = "An `IngestBatch`: `{items: [...]}`"),
    responses(
        (status = 200, description = "`IngestAck`: per item accepted or rejected with its reason",
         body = Object),
        (status = 400, description = "Not a batch", body = crate::adapters::http::reply::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or bad agent signature",
         body = crate::adapters::http::reply::ErrorBody),
        (status = 408, description = "Body not received in time", body = crate::adapters::http::reply::ErrorBody),
        (status = 413, description = "Batch too large", body = crate::adapters::http::reply::ErrorBody),
    )
)]
pub async fn handler(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    req: Request,
) -> Response {
    let peer = peer.to_string();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let up = match ingest::identify(&relay, &peer, authorization).await {
        Ok(u) => u,
        Err(e) => return reply(e),
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES as u64) {
        return too_large();
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BATCH_BYTES);
    let body = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => {
            return api_error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "body not received in time",
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("reading the body: {e}"),
            )
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    match ingest::accept(&relay, &peer, &up, &body).await {
        Ok(ack) => Json(ack).into_response(),
        Err(e) => reply(e),
    }
}
