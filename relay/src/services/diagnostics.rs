//! `POST /api/v1/devices/{id}/diagnostics`: a typed diagnostic (ping, tcp,
//! http, ipp, pjl) run by the device's agent, never a shell. The relay
//! checks permission, rate (per user and per device) and its own coarse
//! policy, sends `ControlMsg::Diag` on the agent's control channel and
//! waits for `ControlMsg::DiagResult`; the agent's policy decides again
//! and has the last word. Every run, refusal and failure is audited.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dwa_policy::relay::{relay_decide, RelayCheck};
use dwa_policy::roles::Action;
use dwa_proto::audit::kind;
use dwa_proto::control::ControlMsg;
use dwa_proto::diag::{DiagKind, DiagOutcome, DiagParams, DiagRequest};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::app::Relay;
use crate::error::{RelayError, Result};
use crate::services::auth::Principal;
use crate::util::random_secret;

/// Diagnostics one user may start per minute (all devices together).
pub const PER_USER_PER_MINUTE: u32 = 30;
/// Diagnostics one device may receive per minute (all users together).
pub const PER_DEVICE_PER_MINUTE: u32 = 12;
/// Slack on top of a diagnostic's own budget before the relay gives up.
const SLACK: Duration = Duration::from_secs(5);
/// Diagnostics waiting for their agent, relay-wide.
const MAX_PENDING: usize = 256;

type Limiter<K> = governor::DefaultKeyedRateLimiter<K>;

fn per_minute(n: u32) -> governor::Quota {
    governor::Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

/// Diagnostics waiting for their result, and the rate limiters.
pub struct Diags {
    /// (agent id, request id) → the waiting handler: an agent can only
    /// answer its own requests.
    pending: Mutex<HashMap<(String, String), oneshot::Sender<DiagOutcome>>>,
    per_user: Limiter<i64>,
    per_device: Limiter<i64>,
}

impl Default for Diags {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            per_user: governor::RateLimiter::keyed(per_minute(PER_USER_PER_MINUTE)),
            per_device: governor::RateLimiter::keyed(per_minute(PER_DEVICE_PER_MINUTE)),
        }
    }
}

impl Diags {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), oneshot::Sender<DiagOutcome>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent's result for one of its pending requests; anything else
    /// is dropped (a hostile agent cannot answer for another).
    pub fn deliver(&self, agent: &str, request: String, outcome: DiagOutcome) {
        match self.lock().remove(&(agent.to_string(), request)) {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => tracing::debug!("diagnostic result nobody waits for; ignored"),
        }
    }
}

/// Removes a pending entry however the handler ends (timeout, client gone).
struct PendingGuard<'a> {
    diags: &'a Diags,
    key: (String, String),
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.diags.lock().remove(&self.key);
    }
}

pub fn routes() -> Router<Relay> {
    Router::new().route("/api/v1/devices/{id}/diagnostics", post(run_diagnostic))
}

/// Seconds until `limiter` admits `key` again (at least 1).
fn retry_after<K>(limiter: &Limiter<K>, key: &K) -> Option<u64>
where
    K: Clone + std::hash::Hash + Eq,
{
    limiter.check_key(key).err().map(|n| {
        n.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ))
        .as_secs()
        .max(1)
    })
}

/// A summary of the outcome for the audit log (the full result is small,
/// but the RTT list and raw PJL text are left out).
fn summary(o: &DiagOutcome) -> Value {
    let mut v = json!(o);
    if let Some(r) = v.get_mut("result").and_then(Value::as_object_mut) {
        r.remove("rtts_ms");
        r.remove("raw");
    }
    v
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
    body: std::result::Result<Json<DiagParams>, JsonRejection>,
) -> Result<Response> {
    let params = body
        .map(|Json(v)| v)
        .map_err(|e| RelayError::Invalid(e.body_text()));
    let (status, body) = run(&relay, &p, device, params).await?;
    Ok((status, Json(body)).into_response())
}

/// Runs one diagnostic for `p` (the API's and the portal's path): the
/// status to answer with and the JSON body (the result, or the agent's
/// refusal or failure with `error` and `code`).
pub async fn run(
    relay: &Relay,
    p: &Principal,
    device: i64,
    params: Result<DiagParams>,
) -> Result<(StatusCode, Value)> {
    let target = relay.store.device_target(device).await?;
    let agent = target.agent_id.clone();
    let refuse = |reason: String, detail: Value| {
        let relay = relay.clone();
        let actor = p.actor();
        let agent = agent.clone();
        async move {
            let mut d = json!({"device": device, "reason": reason});
            if let (Some(d), Some(extra)) = (d.as_object_mut(), detail.as_object()) {
                d.extend(extra.clone());
            }
            relay
                .audit
                .record(kind::DIAG_REFUSED, &actor, Some(&agent), d)
                .await;
        }
    };
    if let Err(e) = p.require(Action::Diagnostics, Some(target.customer_id)) {
        refuse(e.to_string(), json!({})).await;
        return Err(e.into());
    }
    let params = params?;
    let req = DiagRequest::from_params(&params).map_err(RelayError::Invalid)?;
    let kind_name = req.kind.as_str();
    for (limiter, key, who) in [
        (&relay.diag.per_user, p.user_id, "user"),
        (&relay.diag.per_device, device, "device"),
    ] {
        if let Some(secs) = retry_after(limiter, &key) {
            let msg = format!("too many diagnostics for this {who}; retry in {secs} s");
            refuse(msg.clone(), json!({"kind": kind_name, "limit": who})).await;
            return Err(RelayError::RateLimited {
                msg,
                retry_after: secs,
            });
        }
    }
    let Some(native) = relay.agents.get(&agent).and_then(|c| c.native()) else {
        let msg = format!("agent {agent} is not connected");
        refuse(msg.clone(), json!({"kind": kind_name})).await;
        return Err(RelayError::Conflict(msg));
    };
    // The relay's coarse pre-check (the device is the agent's by
    // construction): ports must be among those the agent announced.
    if req.kind != DiagKind::Ping {
        for &port in &req.ports {
            let d = relay_decide(&RelayCheck {
                device_registered: true,
                port,
                agent_ports: &native.hello.ports,
            });
            if !d.allowed {
                refuse(
                    d.reason.clone(),
                    json!({"kind": kind_name, "decided_by": "relay", "port": port}),
                )
                .await;
                return Err(RelayError::Refused(d.reason));
            }
        }
    }
    let request = random_secret(8);
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = relay.diag.lock();
        if pending.len() >= MAX_PENDING {
            return Err(RelayError::Unavailable(
                "the relay has too many diagnostics waiting".into(),
            ));
        }
        pending.insert((agent.clone(), request.clone()), tx);
    }
    let _guard = PendingGuard {
        diags: &relay.diag,
        key: (agent.clone(), request.clone()),
    };
    let sent = native.control.send(ControlMsg::Diag {
        request: request.clone(),
        target: target.address.clone(),
        diag: req.clone(),
    });
    if !sent {
        let msg = format!("agent {agent} is disconnecting");
        refuse(msg.clone(), json!({"kind": kind_name})).await;
        return Err(RelayError::Conflict(msg));
    }
    let wait = Duration::from_millis(req.budget_ms()) + SLACK;
    let base = json!({"device": device, "address": target.address, "kind": kind_name,
                      "request": request, "params": req});
    let outcome = match tokio::time::timeout(wait, rx).await {
        Ok(Ok(o)) => o,
        _ => {
            let msg = format!("no result from agent {agent} within {wait:?}");
            let mut d = base.clone();
            d["outcome"] = json!({"outcome": "timeout", "reason": msg});
            relay
                .audit
                .record(kind::DIAG_RUN, &p.actor(), Some(&agent), d)
                .await;
            return Ok((
                StatusCode::GATEWAY_TIMEOUT,
                json!({"error": msg, "code": "timeout"}),
            ));
        }
    };
    let mut audit = base.clone();
    audit["outcome"] = summary(&outcome);
    relay
        .audit
        .record(kind::DIAG_RUN, &p.actor(), Some(&agent), audit)
        .await;
    let mut body = base;
    if let (Some(b), Some(o)) = (body.as_object_mut(), json!(outcome).as_object()) {
        b.extend(o.clone());
    }
    let status = match &outcome {
        DiagOutcome::Done { .. } => StatusCode::OK,
        DiagOutcome::Refused { reason, .. } => {
            body["error"] = json!(format!("denied by the agent: {reason}"));
            body["code"] = json!("refused");
            body["decided_by"] = json!("agent");
            StatusCode::FORBIDDEN
        }
        DiagOutcome::Failed { reason } => {
            body["error"] = json!(reason);
            body["code"] = json!("diag_failed");
            StatusCode::BAD_GATEWAY
        }
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_delivered_only_to_their_agent() {
        let d = Diags::default();
        let (tx, mut rx) = oneshot::channel();
        d.lock().insert(("agt_a".into(), "r1".into()), tx);
        let o = DiagOutcome::Failed { reason: "x".into() };
        d.deliver("agt_b", "r1".into(), o.clone());
        assert!(rx.try_recv().is_err());
        d.deliver("agt_a", "r1".into(), o.clone());
        assert_eq!(rx.try_recv().ok(), Some(o));
        assert!(d.lock().is_empty());
    }

    #[test]
    fn the_route_is_described_for_openapi() {
        use utoipa::OpenApi;
        #[derive(OpenApi)]
        #[openapi(paths(run_diagnostic))]
        struct Doc;
        let doc = Doc::openapi();
        let path = &doc.paths.paths["/api/v1/devices/{id}/diagnostics"];
        assert!(path.post.is_some());
    }

    #[test]
    fn the_device_limit_trips_after_its_quota() {
        let d = Diags::default();
        for _ in 0..PER_DEVICE_PER_MINUTE {
            assert_eq!(retry_after(&d.per_device, &7), None);
        }
        assert!(retry_after(&d.per_device, &7).is_some_and(|s| s >= 1));
        assert_eq!(retry_after(&d.per_device, &8), None);
    }
}
