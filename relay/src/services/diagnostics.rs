//! Diagnostics: a typed probe (ping, tcp, http, ipp, pjl) run by the
//! device's agent, never a shell. The relay
//! checks permission, rate (per user and per device) and its own coarse
//! policy, sends `ControlMsg::Diag` on the agent's control channel and
//! waits for `ControlMsg::DiagResult`; the agent's policy decides again
//! and has the last word. Every run, refusal and failure is audited.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use dwa_policy::relay::{relay_decide, RelayCheck};
use dwa_policy::roles::Action;
use dwa_proto::audit::Event;
use dwa_proto::control::ControlMsg;
use dwa_proto::diag::{DiagKind, DiagOutcome, DiagParams, DiagRequest};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::services::auth::Principal;
use crate::services::error::{Class, Failure};
use crate::services::Services;
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
    /// Hands a result to whoever waits for it; false when nobody does
    /// (the result is dropped).
    pub fn deliver(&self, agent: &str, request: String, outcome: DiagOutcome) -> bool {
        match self.lock().remove(&(agent.to_string(), request)) {
            Some(tx) => {
                let _ = tx.send(outcome);
                true
            }
            None => false,
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

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    /// The device's agent is not connected (or is leaving).
    #[error("{0}")]
    AgentOffline(String),
    #[error("{msg}")]
    RateLimited { msg: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
}

impl Failure for DiagError {
    fn class(&self) -> Class {
        match self {
            DiagError::Invalid(_) => Class::Invalid,
            DiagError::Refused(_) => Class::Forbidden,
            DiagError::AgentOffline(_) => Class::Conflict,
            DiagError::RateLimited { retry_after, .. } => Class::RateLimited {
                retry_after: *retry_after,
            },
            DiagError::Unavailable(_) => Class::Unavailable,
            DiagError::Store(e) => e.class(),
        }
    }
}

/// How a diagnostic that reached the agent ended.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Finished {
    /// The agent's answer: done, refused by its policy, or failed.
    Outcome(DiagOutcome),
    /// No answer within the diagnostic's budget.
    TimedOut {
        #[serde(skip)]
        reason: String,
    },
}

/// A diagnostic that reached the agent: what was asked, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct DiagReport {
    pub device: i64,
    pub address: String,
    pub kind: &'static str,
    pub request: String,
    pub params: DiagRequest,
    #[serde(flatten)]
    pub finished: Finished,
}

/// What a refused diagnostic's record says besides the device and reason.
#[derive(Debug, Default, Clone, Copy)]
struct Refused {
    kind: Option<&'static str>,
    /// Which rate limit: `user` or `device`.
    limit: Option<&'static str>,
    decided_by: Option<&'static str>,
    port: Option<u16>,
}

impl Refused {
    fn of(kind: &'static str) -> Self {
        Refused {
            kind: Some(kind),
            ..Refused::default()
        }
    }
}

/// Runs one diagnostic for `p` (the API's and the portal's path): the
/// relay's checks, then the agent's answer (or its silence).
pub async fn run(
    relay: &Services,
    p: &Principal,
    device: i64,
    params: DiagParams,
) -> Result<DiagReport, DiagError> {
    let target = relay.store.device_target(device).await?;
    let agent = target.agent_id.clone();
    let refuse = |reason: String, r: Refused| {
        let actor = p.actor();
        let agent = agent.clone();
        let event = Event::DiagRefused {
            device,
            reason,
            kind: r.kind.map(str::to_string),
            limit: r.limit.map(str::to_string),
            decided_by: r.decided_by.map(str::to_string),
            port: r.port,
        };
        async move { relay.audit.record(event, &actor, Some(&agent)).await }
    };
    if let Err(e) = p.require(Action::Diagnostics, Some(target.customer_id)) {
        refuse(e.to_string(), Refused::default()).await;
        return Err(DiagError::Refused(e.to_string()));
    }
    let req = DiagRequest::from_params(&params).map_err(DiagError::Invalid)?;
    let kind_name = req.kind.as_str();
    for (limiter, key, who) in [
        (&relay.diag.per_user, p.user_id, "user"),
        (&relay.diag.per_device, device, "device"),
    ] {
        if let Some(secs) = retry_after(limiter, &key) {
            let msg = format!("too many diagnostics for this {who}; retry in {secs} s");
            let r = Refused {
                kind: Some(kind_name),
                limit: Some(who),
                ..Refused::default()
            };
            refuse(msg.clone(), r).await;
            return Err(DiagError::RateLimited {
                msg,
                retry_after: secs,
            });
        }
    }
    let Some(native) = relay.agents.get(&agent).and_then(|c| c.native()) else {
        let msg = format!("agent {agent} is not connected");
        refuse(msg.clone(), Refused::of(kind_name)).await;
        return Err(DiagError::AgentOffline(msg));
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
                let r = Refused {
                    decided_by: Some("relay"),
                    port: Some(port),
                    ..Refused::of(kind_name)
                };
                refuse(d.reason.clone(), r).await;
                return Err(DiagError::Refused(d.reason));
            }
        }
    }
    let request = random_secret(8);
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = relay.diag.lock();
        if pending.len() >= MAX_PENDING {
            return Err(DiagError::Unavailable(
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
        refuse(msg.clone(), Refused::of(kind_name)).await;
        return Err(DiagError::AgentOffline(msg));
    }
    let wait = Duration::from_millis(req.budget_ms()) + SLACK;
    let report = |finished| DiagReport {
        device,
        address: target.address.clone(),
        kind: kind_name,
        request: request.clone(),
        params: req.clone(),
        finished,
    };
    let run = |outcome: Value| Event::DiagRun {
        device,
        address: target.address.clone(),
        kind: kind_name.to_string(),
        request: request.clone(),
        params: req.clone(),
        outcome,
    };
    let outcome = match tokio::time::timeout(wait, rx).await {
        Ok(Ok(o)) => o,
        _ => {
            let reason = format!("no result from agent {agent} within {wait:?}");
            let event = run(json!({"outcome": "timeout", "reason": reason}));
            relay.audit.record(event, &p.actor(), Some(&agent)).await;
            return Ok(report(Finished::TimedOut { reason }));
        }
    };
    relay
        .audit
        .record(run(summary(&outcome)), &p.actor(), Some(&agent))
        .await;
    Ok(report(Finished::Outcome(outcome)))
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
    fn the_device_limit_trips_after_its_quota() {
        let d = Diags::default();
        for _ in 0..PER_DEVICE_PER_MINUTE {
            assert_eq!(retry_after(&d.per_device, &7), None);
        }
        assert!(retry_after(&d.per_device, &7).is_some_and(|s| s >= 1));
        assert_eq!(retry_after(&d.per_device, &8), None);
    }
}
