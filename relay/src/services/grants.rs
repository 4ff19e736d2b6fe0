//! Grants: one lifecycle for everything a user holds — log-in sessions,
//! API tokens, web sessions, raw tunnels and pending single-sign-on
//! log-ins. Each grant records its user and the authority it was issued
//! under (a parent grant, the customer, device and agent it reaches); the
//! store keeps them (`dwa_store::grants`).
//!
//! Every end goes through [`end`]: the store ends the grants named and
//! every grant derived from them in one statement, then each ended grant
//! is closed here — its live connections (web-session requests and
//! WebSockets, tunnel listeners and connections) are cut at once, and the
//! end is audited with its reason. Ends made by another process (a CLI
//! command) are picked up by [`spawn_watcher`] within a second. New
//! connections check their grant (the in-memory session or tunnel is ended
//! the moment its grant is), so nothing gets through afterwards.
//!
//! What ends what (see `docs/grants.md`): log-out ends the log-in and what
//! was opened under it; revoking a token ends the token and what was opened
//! with it; deactivation, inactivity, lockout, a role or customer change, a
//! two-factor reset or a password change end every grant of the user;
//! removing a customer, a device or revoking an agent ends every grant
//! reaching them.

use std::time::Duration;

use dwa_proto::audit::Event;
use dwa_store::grants::{GrantKind, GrantRow, Selector};
use tracing::Instrument;

use crate::services::error::{Class, Failure};
use crate::services::{Services, Svc};

/// Why a grant ended. Stored and audited in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The user logged out.
    Logout,
    /// The user (or an admin) closed a web session.
    Deleted,
    /// The user (or an admin) closed a tunnel.
    Revoked,
    /// Its time was up.
    Expired,
    /// Unused too long (web sessions, log-ins).
    Idle,
    /// Used once, as meant (a pending single-sign-on log-in).
    Used,
    /// The user was deactivated by an administrator.
    Deactivated,
    /// The user was deactivated for not logging in for too long.
    Inactive,
    /// The account was locked after failed log-ins.
    Locked,
    RoleChanged,
    CustomersChanged,
    TwoFactorReset,
    PasswordChanged,
    /// The API token it was opened with was revoked.
    TokenRevoked,
    CustomerRemoved,
    DeviceRemoved,
    AgentRevoked,
    /// The site's agent disconnected.
    AgentGone,
    /// The relay stopped.
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Deleted => "deleted",
            EndReason::Revoked => "revoked",
            EndReason::Expired => "expired",
            EndReason::Idle => "idle",
            EndReason::Used => "used",
            EndReason::Deactivated => "deactivated",
            EndReason::Inactive => "inactive",
            EndReason::Locked => "locked",
            EndReason::RoleChanged => "role_changed",
            EndReason::CustomersChanged => "customers_changed",
            EndReason::TwoFactorReset => "two_factor_reset",
            EndReason::PasswordChanged => "password_changed",
            EndReason::TokenRevoked => "token_revoked",
            EndReason::CustomerRemoved => "customer_removed",
            EndReason::DeviceRemoved => "device_removed",
            EndReason::AgentRevoked => "agent_revoked",
            EndReason::AgentGone => "agent_gone",
            EndReason::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// For the "session ended" page: "… has ended: <this>".
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Expired => "it reached its maximum duration",
            EndReason::Idle => "it was idle too long",
            EndReason::Deleted | EndReason::Revoked => "it was closed",
            EndReason::Logout => "its user logged out",
            EndReason::AgentGone => "the site's agent disconnected",
            EndReason::Shutdown => "the relay restarted",
            EndReason::Used => "it was used",
            EndReason::Deactivated | EndReason::Inactive => "its user was deactivated",
            EndReason::Locked => "its user's account was locked",
            EndReason::RoleChanged | EndReason::CustomersChanged => {
                "its user's permissions changed"
            }
            EndReason::TwoFactorReset => "its user's two-factor was reset",
            EndReason::PasswordChanged => "its user's password changed",
            EndReason::TokenRevoked => "the API token it was opened with was revoked",
            EndReason::CustomerRemoved => "the customer was removed",
            EndReason::DeviceRemoved => "the device was removed",
            EndReason::AgentRevoked => "the site's agent was revoked",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
}

impl Failure for GrantError {
    fn class(&self) -> Class {
        match self {
            GrantError::Store(e) => e.class(),
        }
    }
}

/// Ends the grants `sel` names and all derived from them; closes their live
/// connections and audits each end. Returns the grants ended (none if they
/// had ended already).
pub async fn end(
    svc: &Services,
    sel: Selector,
    reason: EndReason,
    by: &str,
) -> Result<Vec<GrantRow>, GrantError> {
    let ended = svc
        .store
        .end_grants(&sel, reason.as_str(), by, svc.time.unix())
        .await?;
    for g in &ended {
        close(svc, g, reason, by).await;
    }
    Ok(ended)
}

/// Ends one grant (and what derives from it); returns the reason and who
/// it ended with — the stored ones if it had ended already (another
/// process or path got there first), so the end is told as it happened.
pub async fn end_one(
    svc: &Services,
    id: i64,
    reason: EndReason,
    by: &str,
) -> Result<(EndReason, String), GrantError> {
    let ended = end(svc, Selector::Id(id), reason, by).await?;
    if ended.iter().any(|g| g.id == id) {
        return Ok((reason, by.to_string()));
    }
    Ok(match svc.store.grant(id).await? {
        Some(g) if g.ended_at.is_some() => (
            g.end_reason
                .as_deref()
                .and_then(EndReason::parse)
                .unwrap_or(reason),
            g.ended_by.unwrap_or_else(|| by.to_string()),
        ),
        _ => (reason, by.to_string()),
    })
}

/// Closes what a just-ended grant holds on this relay and audits the end.
async fn close(svc: &Services, g: &GrantRow, reason: EndReason, by: &str) {
    let Ok(k) = g.kind() else {
        tracing::error!(grant = g.id, "grant of unknown kind ended");
        return;
    };
    match k {
        GrantKind::WebSession => {
            if let Some(s) = g.handle.as_deref().and_then(|h| svc.web.get(h)) {
                crate::services::web_sessions::close(svc, &s, reason, by).await;
            }
        }
        GrantKind::Tunnel => {
            if let Some(t) = g.handle.as_deref().and_then(|h| svc.tunnels.get(h)) {
                crate::services::tunnels::close(svc, &t, reason, by).await;
            }
        }
        GrantKind::Login | GrantKind::ApiToken | GrantKind::SsoPending => {
            svc.audit
                .record(
                    Event::GrantEnd {
                        grant: g.id,
                        kind: k.as_str().to_string(),
                        user_id: g.user_id,
                        reason: reason.as_str().to_string(),
                    },
                    by,
                    g.agent_id.as_deref(),
                )
                .await;
        }
    }
}

/// How often a relay looks for grants ended elsewhere (another process
/// on the same store): the bound on how long such an end takes to cut a
/// live connection here.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Closes, on this relay, grants that another process ended in the store
/// (a CLI command, another relay). The store is the truth; this catches up.
pub fn spawn_watcher(svc: &Svc) {
    let s = svc.clone();
    svc.tracker.spawn(
        async move {
            let mut since = s.time.unix();
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = s.shutdown.cancelled() => break,
                }
                // Seconds resolution: look back one second, closing twice
                // is harmless (a session or tunnel ends once).
                let now = s.time.unix();
                match s.store.grants_ended_since(since - 1).await {
                    Ok(rows) => {
                        for g in rows {
                            let reason = g
                                .end_reason
                                .as_deref()
                                .and_then(EndReason::parse)
                                .unwrap_or(EndReason::Revoked);
                            let by = g.ended_by.clone().unwrap_or_else(|| "relay".into());
                            close_local(&s, &g, reason, &by).await;
                        }
                        since = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "reading ended grants"),
                }
            }
        }
        .instrument(tracing::info_span!("grant_watcher")),
    );
}

/// Like [`close`] but only for what is live here and without a second
/// audit record for login and token grants (their end was audited by the
/// process that ended them).
async fn close_local(svc: &Services, g: &GrantRow, reason: EndReason, by: &str) {
    match g.kind() {
        Ok(GrantKind::WebSession) | Ok(GrantKind::Tunnel) => close(svc, g, reason, by).await,
        _ => {}
    }
}
