//! `GET /api/v1/audit`: the audit log with filters (since, kind, user,
//! device), scoped to the caller. The portal's audit page runs the same
//! [`query`].
//!
//! Scope: an admin sees every record. Anyone else sees the records of their
//! customers' agents (the `agent` column), records naming one of their
//! customers' devices (`detail.device`), and their own actions (actor
//! `user:<name>`). A customer user is assigned exactly one customer, so the
//! same rule gives them their own customer's records.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dwa_proto::audit::AuditRecord;
use serde::Deserialize;

use crate::adapters::state::Relay;
use crate::error::{RelayError, Result};
use crate::services::auth::Principal;

pub use crate::services::audit::MAX_LIMIT;

pub fn routes() -> Router<Relay> {
    Router::new().route("/api/v1/audit", get(audit))
}

/// Filters of the audit log (all optional).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339 time: records at or after it.
    pub since: Option<String>,
    /// Exact kind (`web.session_create`) or a prefix ending in `.` (`web.`).
    pub kind: Option<String>,
    /// User name: records whose actor is `user:<name>`.
    pub user: Option<String>,
    /// Device id: records whose detail names that device.
    pub device: Option<String>,
    /// `json` (default), `jsonl` or `csv`.
    pub format: Option<String>,
    /// Newest records returned, 1..=10000 (default 500).
    pub limit: Option<i64>,
}

impl AuditQuery {
    /// Empty strings (an untouched form field) mean "no filter".
    fn clean(mut self) -> Self {
        let blank = |o: &mut Option<String>| {
            if o.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *o = None;
            }
        };
        blank(&mut self.since);
        blank(&mut self.kind);
        blank(&mut self.user);
        blank(&mut self.format);
        blank(&mut self.device);
        self
    }
}

/// The records `p` may see that match `q`, oldest first (the newest
/// `limit` of them): the API's and the portal's query.
pub async fn query(
    relay: &Relay,
    p: &Principal,
    q: &AuditQuery,
) -> Result<Vec<AuditRecord>, crate::services::audit::AuditError> {
    let q = q.clone().clean();
    let search = crate::services::audit::AuditSearch {
        since: q.since,
        kind: q.kind,
        user: q.user,
        device: q.device,
        limit: q.limit,
    };
    crate::services::audit::query(relay, p, &search).await
}

/// The records in the asked format, as a response (`json`, `jsonl`, `csv`).
pub fn render(records: &[AuditRecord], format: Option<&str>) -> Result<Response> {
    let (body, ctype, file) = match format.unwrap_or("json") {
        "json" => {
            let text = crate::services::audit::to_jsonl(records);
            let list: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            return Ok(Json(list).into_response());
        }
        "jsonl" => (
            crate::services::audit::to_jsonl(records),
            "application/x-ndjson",
            "audit.jsonl",
        ),
        "csv" => (
            crate::services::audit::to_csv(records)?,
            "text/csv; charset=utf-8",
            "audit.csv",
        ),
        other => {
            return Err(RelayError::Invalid(format!(
                "format {other:?}: expected json, jsonl or csv"
            )))
        }
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
            .map_err(|e| RelayError::Invalid(e.to_string()))?,
    );
    Ok(r)
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit", security(("cookie" = []), ("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit records the caller may see, oldest first (JSON array, or JSONL/CSV download)"),
        (status = 400, description = "Bad filter"),
        (status = 401, description = "Not logged in"),
    )
)]
pub async fn audit(
    State(relay): State<Relay>,
    p: Principal,
    q: std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(q) = q.map_err(|e| RelayError::Invalid(e.body_text()))?;
    let records = query(&relay, &p, &q).await?;
    render(&records, q.clone().clean().format.as_deref())
}
