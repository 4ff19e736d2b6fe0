//! A device's actions. "Open web page" runs the API's own
//! [`crate::adapters::api::open_web_session`] (permission, rate, first printer
//! connection, audit) and sends the browser to the session's ticket URL.
//!
//! "Ping" runs [`crate::services::diagnostics::run`] and "TCP tunnel" runs
//! [`crate::services::tunnels::open`], the same services as the API routes, so
//! permission, rate limits, the policy checks and the audit are shared.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use dwa_policy::roles::Action;
use maud::html;
use serde::Deserialize;

use super::layout::page;
use super::{check_csrf, form, FormBody, PResult, Portal};
use crate::adapters::http::reply::PeerAddr;
use crate::adapters::state::Relay;
use crate::error::RelayError;

#[derive(Deserialize)]
pub struct PortForm {
    #[serde(default)]
    _csrf: String,
    port: Option<u16>,
}

pub async fn open_web(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<i64>,
    body: FormBody<PortForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    let port = f.port.unwrap_or(80);
    let req = crate::services::web_sessions::OpenRequest {
        port,
        tls: Some(super::fleet::tls_port(port)),
        rewrite: None,
    };
    let warm = crate::adapters::web::proxy::Prewarm(relay.clone());
    let v = crate::services::web_sessions::open(&relay.svc, &p, id, &req, &warm).await?;
    Ok(super::see_other(&v.url))
}

/// The customer of device `id`, once `p` may do `action` on it.
async fn allowed(
    relay: &Relay,
    p: &crate::services::auth::Principal,
    id: i64,
    action: Action,
) -> PResult<()> {
    let target = relay.store.device_target(id).await?;
    p.require(action, Some(target.customer_id))?;
    Ok(())
}

/// A result page: a heading, a summary list and the full JSON for
/// support engineers to copy.
fn result_page(
    p: &crate::services::auth::Principal,
    id: i64,
    title: &str,
    status: StatusCode,
    summary: &[(&str, String)],
    detail: &serde_json::Value,
) -> axum::response::Response {
    let pretty = serde_json::to_string_pretty(detail).unwrap_or_default();
    (
        status,
        page(
            title,
            Some(p),
            html! {
                dl {
                    @for (k, v) in summary {
                        dt { (k) } dd { (v) }
                    }
                }
                details { summary { "Full result" } pre { (pretty) } }
                p { a href=(format!("/devices/{id}")) { "Back to the device" } }
            },
        ),
    )
        .into_response()
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
pub struct DiagForm {
    #[serde(default)]
    _csrf: String,
    #[serde(default)]
    kind: String,
    port: Option<u16>,
}

/// Any diagnostic kind (ping, tcp, http, ipp, pjl), on a chosen port where
/// the kind takes one: the "Ping" button and the probe form both post here.
pub async fn diagnose(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<i64>,
    body: FormBody<DiagForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    allowed(&relay, &p, id, Action::Diagnostics).await?;
    let kind: dwa_proto::diag::DiagKind = serde_json::from_value(serde_json::json!(f.kind))
        .map_err(|_| RelayError::Invalid(format!("unknown diagnostic {:?}", f.kind)))?;
    let params = dwa_proto::diag::DiagParams {
        kind: Some(kind),
        port: f.port,
        ..Default::default()
    };
    let r = crate::services::diagnostics::run(&relay, &p, id, params).await?;
    let (status, v) = crate::adapters::api::diagnostics::answer(&r);
    let mut summary = vec![("Address", text(&v["address"]))];
    if let Some(e) = v.get("error") {
        summary.push(("Error", text(e)));
    } else if let Some(r) = v["result"].as_object() {
        // The scalar fields of the result (status, server, TLS version,
        // printer state...); lists and tables are in the full result.
        for (k, val) in r {
            if !val.is_array() && !val.is_object() && k != "kind" {
                summary.push((k.as_str(), text(val)));
            }
        }
    }
    let title = format!("Diagnostic: {}", kind.as_str());
    Ok(result_page(&p, id, &title, status, &summary, &v))
}

pub async fn tunnel(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    Portal(p): Portal,
    Path(id): Path<i64>,
    body: FormBody<PortForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    allowed(&relay, &p, id, Action::RawTunnel).await?;
    let port = f
        .port
        .ok_or_else(|| RelayError::Invalid("choose the device port to tunnel to".into()))?;
    // Bound to the address this browser's request came from.
    let t = crate::services::tunnels::open(&relay.svc, &p, peer.ip(), id, port, None).await?;
    let summary = [
        ("Connect to", format!("{}:{}", t.host, t.listen_port)),
        ("Only from", t.client.clone()),
        ("Device port", port.to_string()),
        ("Expires at", t.expires_at.clone()),
    ];
    let v = serde_json::to_value(&t).unwrap_or_default();
    Ok(result_page(
        &p,
        id,
        "TCP tunnel",
        StatusCode::CREATED,
        &summary,
        &v,
    ))
}
