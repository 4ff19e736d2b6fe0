//! The telemetry part of the dealer API (`/api/v1`): devices, readings,
//! the CSV report, agents and their scan settings, alerts and alert rules.
//! Every handler authenticates the caller; customer-scoped roles see only
//! their customers' devices, agents and alerts.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use billing::schedule;
use dwa_policy::roles::{Action, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::adapters::http::reply::ApiError;
use crate::adapters::http::reply::{E400, E401, E403, E404, E503};
use crate::adapters::state::Relay;
use crate::services::auth::Principal;
use crate::services::devices::Actor;
use crate::services::telemetry::{
    alerts, billing, fleet, inventory, report, settings, TelemetryError,
};

type Result<T, E = ApiError> = std::result::Result<T, E>;

fn invalid(m: String) -> ApiError {
    TelemetryError::Invalid(m).into()
}

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices.csv", get(devices_csv))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/readings", get(readings))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}/scan", put(put_scan))
        .route("/api/v1/agents/{id}/scan-now", post(scan_now))
        .route("/api/v1/alerts", get(list_alerts))
        .route(
            "/api/v1/customers/{id}/alert-rules",
            get(get_rules).put(put_rules),
        )
        .route("/api/v1/customers/{id}/billing", get(billing_report))
        .route(
            "/api/v1/customers/{id}/billing-schedule",
            get(get_schedule).put(put_schedule).delete(delete_schedule),
        )
}

type Q<T> = std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>;
type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn query<T>(q: Q<T>) -> Result<T> {
    q.map(|Query(v)| v).map_err(|e| invalid(e.body_text()))
}

/// The customers the caller may see: None for an admin (all).
fn scope(p: &Principal) -> Option<&[i64]> {
    (p.role != Role::Admin).then_some(p.customers.as_slice())
}

/// The latest reading of every device the caller may see.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Device summaries", body = Vec<Object>),
        E401,
    )
)]
pub(crate) async fn devices(
    State(relay): State<Relay>,
    p: Principal,
) -> Result<Json<Vec<inventory::DeviceSummary>>> {
    let list = inventory::list(&relay, scope(&p)).await?;
    Ok(Json(list.iter().map(|d| d.summary()).collect()))
}

/// The device report as CSV (the devices the caller may see).
#[utoipa::path(
    get,
    path = "/api/v1/devices.csv",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "CSV report", body = String, content_type = "text/csv"),
        E401,
    )
)]
pub(crate) async fn devices_csv(State(relay): State<Relay>, p: Principal) -> Result<Response> {
    let list = inventory::list(&relay, scope(&p)).await?;
    let body = report::to_csv(&list)?;
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"devices.csv\""),
    );
    Ok(r)
}

/// The device, if the caller may view its telemetry.
async fn visible_device(relay: &Relay, p: &Principal, id: i64) -> Result<inventory::DeviceView> {
    let d = inventory::get(relay, id)
        .await?
        .ok_or_else(|| TelemetryError::NotFound(format!("no device {id}")))?;
    p.require(Action::ViewTelemetry, Some(d.customer_id))?;
    Ok(d)
}

/// One device: its latest reading and active alerts.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Device id")),
    responses(
        (status = 200, description = "The device", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn device(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<inventory::DeviceDetail>> {
    let d = visible_device(&relay, &p, id).await?;
    let mut v = d.detail();
    v.alerts = Some(alerts::active_for_device(&relay, id).await?);
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// At most this many readings, newest first (1..=1000, default 100).
    limit: Option<i64>,
    /// Only readings at or after this time (RFC 3339).
    since: Option<String>,
}

/// The device's reading history.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/readings",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Device id"), HistoryQuery),
    responses(
        (status = 200, description = "Readings", body = Vec<Object>),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn readings(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
    q: Q<HistoryQuery>,
) -> Result<Json<Vec<inventory::ReadingView>>> {
    let q = query(q)?;
    visible_device(&relay, &p, id).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=inventory::MAX_HISTORY).contains(&limit) {
        return Err(invalid(format!(
            "limit must be 1..={}",
            inventory::MAX_HISTORY
        )));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| crate::services::telemetry::normalize_time("since", s))
        .transpose()?;
    let list = inventory::readings(&relay, id, since.as_deref(), limit).await?;
    Ok(Json(list))
}

/// The agents the caller may see, with connection state and scan settings.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    security(("cookie" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Agents", body = Vec<Object>),
        E401,
    )
)]
pub(crate) async fn agents(
    State(relay): State<Relay>,
    p: Principal,
) -> Result<Json<Vec<fleet::AgentView>>> {
    Ok(Json(fleet::agents(&relay, scope(&p)).await?))
}

/// The agent's customer, once the caller may operate it: scan settings and
/// scan-now are operational actions, for the roles allowed diagnostics
/// (admin, technician) on that customer.
async fn operable_agent(relay: &Relay, p: &Principal, id: &str) -> Result<i64> {
    let customer = fleet::agent_row(relay, id).await?.customer_id;
    p.require(Action::Diagnostics, Some(customer))?;
    Ok(customer)
}

/// Replace the agent's scan settings and push them to it (technician,
/// admin).
#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/scan",
    tag = "agents",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    request_body = settings::ScanInput,
    responses(
        (status = 200, description = "`{agent, ranges, interval_secs, pushed}`", body = Object),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn put_scan(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
    body: Body<settings::ScanInput>,
) -> Result<Json<Value>> {
    operable_agent(&relay, &p, &id).await?;
    let input = body.map(|Json(v)| v).map_err(|e| invalid(e.body_text()))?;
    let set = settings::set(&relay, &id, &input, &p.actor()).await?;
    Ok(Json(json!(set)))
}

/// Ask the agent to scan now (technician, admin).
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/scan-now",
    tag = "agents",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 202, description = "`{agent, request}`", body = Object),
        E401, E403, E404, E503,
    )
)]
pub(crate) async fn scan_now(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Response> {
    operable_agent(&relay, &p, &id).await?;
    let request = settings::scan_now(&relay, &id, &p.actor()).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"agent": id, "request": request})),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    /// active (default), resolved or all.
    state: Option<String>,
    /// Only this customer's alerts.
    customer: Option<i64>,
    /// At most this many (default 100).
    limit: Option<i64>,
}

/// Alerts of the devices the caller may see.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(AlertQuery),
    responses(
        (status = 200, description = "Alerts", body = Vec<Object>),
        E400, E401, E403,
    )
)]
pub(crate) async fn list_alerts(
    State(relay): State<Relay>,
    p: Principal,
    q: Q<AlertQuery>,
) -> Result<Json<Vec<alerts::AlertView>>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=alerts::MAX_LIST).contains(&limit) {
        return Err(invalid(format!("limit must be 1..={}", alerts::MAX_LIST)));
    }
    let only;
    let customers = match q.customer {
        Some(c) => {
            p.require(Action::ViewTelemetry, Some(c))?;
            only = [c];
            Some(&only[..])
        }
        None => scope(&p),
    };
    let list = alerts::list(
        &relay,
        q.state.as_deref().unwrap_or("active"),
        customers,
        limit,
    )
    .await?;
    Ok(Json(list))
}

async fn customer_exists(relay: &Relay, id: i64) -> Result<()> {
    fleet::customer(relay, id).await?;
    Ok(())
}

/// The customer's alert rules.
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/alert-rules",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The rules", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn get_rules(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Vec<alerts::RuleView>>> {
    customer_exists(&relay, id).await?;
    p.require(Action::ViewTelemetry, Some(id))?;
    Ok(Json(alerts::rules(&relay, id).await?.view()))
}

/// Replace the customer's alert rules (admin).
#[utoipa::path(
    put,
    path = "/api/v1/customers/{id}/alert-rules",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    request_body = Vec<alerts::RuleInput>,
    responses(
        (status = 200, description = "The rules as stored", body = Object),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn put_rules(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
    body: Body<Vec<alerts::RuleInput>>,
) -> Result<Json<Vec<alerts::RuleView>>> {
    customer_exists(&relay, id).await?;
    // Rules decide who gets woken at night: the relay's administrators.
    p.require(Action::Administer, Some(id))?;
    let rules = body.map(|Json(v)| v).map_err(|e| invalid(e.body_text()))?;
    alerts::replace_rules(&relay, id, &rules, &p.actor(), None).await?;
    Ok(Json(alerts::rules(&relay, id).await?.view()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct BillingQuery {
    /// First day of the period (YYYY-MM-DD, UTC).
    from: String,
    /// Last day of the period, inclusive.
    to: String,
    /// `csv` (default) or `xlsx`.
    format: Option<String>,
}

/// The customer's billing meter report for a period, as a file (audited).
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/billing",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id"), BillingQuery),
    responses(
        (status = 200, description = "CSV or XLSX report", body = String, content_type = "text/csv"),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn billing_report(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
    q: Q<BillingQuery>,
) -> Result<Response> {
    customer_exists(&relay, id).await?;
    p.require(Action::ViewTelemetry, Some(id))?;
    let q = query(q)?;
    let period = billing::Period::new(&q.from, &q.to)?;
    let format = billing::Format::parse(q.format.as_deref().unwrap_or("csv"))?;
    let (report, bytes) = billing::produce(&relay, Actor::User(&p), id, &period, format).await?;
    attachment(bytes, format, &billing::file_name(&report, format))
}

/// A report file as a download.
pub(crate) fn attachment(bytes: Vec<u8>, format: billing::Format, name: &str) -> Result<Response> {
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    // The name is a slug and dates: always a valid header value.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .map_err(|e| TelemetryError::Internal(format!("file name: {e}")))?;
    r.headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    Ok(r)
}

/// The customer's e-mailed billing report schedule (null: none).
#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}/billing-schedule",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The schedule, or null", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn get_schedule(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Option<schedule::ScheduleView>>> {
    customer_exists(&relay, id).await?;
    p.require(Action::ViewTelemetry, Some(id))?;
    Ok(Json(schedule::get(&relay, id).await?))
}

/// Set the customer's billing report schedule (admin).
#[utoipa::path(
    put,
    path = "/api/v1/customers/{id}/billing-schedule",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    request_body = schedule::ScheduleInput,
    responses(
        (status = 200, description = "The schedule as stored", body = Object),
        E400, E401, E403, E404,
    )
)]
pub(crate) async fn put_schedule(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
    body: Body<schedule::ScheduleInput>,
) -> Result<Json<schedule::ScheduleView>> {
    customer_exists(&relay, id).await?;
    // Like alert rules: who gets customer data by e-mail is the admins' call.
    p.require(Action::Administer, Some(id))?;
    let input = body.map(|Json(v)| v).map_err(|e| invalid(e.body_text()))?;
    Ok(Json(schedule::set(&relay, id, &input, &p.actor()).await?))
}

/// Remove the customer's billing report schedule (admin).
#[utoipa::path(
    delete,
    path = "/api/v1/customers/{id}/billing-schedule",
    tag = "telemetry",
    security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "Customer id")),
    responses(
        (status = 200, description = "Whether there was one: {removed}", body = Object),
        E401, E403, E404,
    )
)]
pub(crate) async fn delete_schedule(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Value>> {
    customer_exists(&relay, id).await?;
    p.require(Action::Administer, Some(id))?;
    Ok(Json(
        json!({"removed": schedule::remove(&relay, id, &p.actor()).await?}),
    ))
}
