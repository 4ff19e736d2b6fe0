//! A device's actions. "Open web page" runs the API's own
//! [`crate::api::open_web_session`] (permission, rate, first printer
//! connection, audit) and sends the browser to the session's ticket URL.
//!
//! MERGE POINT: "Ping" and "TCP tunnel" are served by services built in
//! parallel (`relay/src/diag.rs`, `relay/src/tunnels.rs`). Until they are
//! wired here, both handlers check the caller (log-in, CSRF, permission)
//! and answer honestly that the action is not available in this build.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dwa_policy::roles::Action;
use maud::html;
use serde::Deserialize;

use super::layout::page;
use super::{check_csrf, form, FormBody, PResult, Portal};
use crate::api::WebSessionRequest;
use crate::state::Relay;

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
    let req = WebSessionRequest {
        port,
        tls: Some(super::fleet::tls_port(port)),
        rewrite: None,
    };
    let v = crate::api::open_web_session(&relay, &p, id, &req).await?;
    let url = v["url"].as_str().unwrap_or("/");
    Ok(super::see_other(url))
}

/// The customer of device `id`, once `p` may do `action` on it.
async fn allowed(
    relay: &Relay,
    p: &crate::auth::Principal,
    id: i64,
    action: Action,
) -> PResult<()> {
    let target = relay.db.device_target(id).await?;
    p.require(action, Some(target.customer_id))?;
    Ok(())
}

fn not_in_this_build(p: &crate::auth::Principal, id: i64, what: &str) -> axum::response::Response {
    (
        StatusCode::NOT_IMPLEMENTED,
        page(
            what,
            Some(p),
            html! {
                p.notice role="status" { (what) " is not available in this build of the relay." }
                p { a href=(format!("/devices/{id}")) { "Back to the device" } }
            },
        ),
    )
        .into_response()
}

pub async fn ping(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<i64>,
    body: FormBody<PortForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    allowed(&relay, &p, id, Action::Diagnostics).await?;
    // MERGE POINT: call crate::diag (kind ping) here and render its result.
    Ok(not_in_this_build(&p, id, "Ping"))
}

pub async fn tunnel(
    State(relay): State<Relay>,
    Portal(p): Portal,
    Path(id): Path<i64>,
    body: FormBody<PortForm>,
) -> PResult {
    let f = form(body)?;
    check_csrf(&p, &f._csrf)?;
    allowed(&relay, &p, id, Action::RawTunnel).await?;
    // MERGE POINT: call crate::tunnels (device id, f.port) here and show
    // the tunnel's address and expiry.
    let _ = f.port;
    Ok(not_in_this_build(&p, id, "TCP tunnel"))
}
