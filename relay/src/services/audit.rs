//! The audit log service: records are appended through the store, which
//! keeps the hash chain; rules of the chain, and the typed events whose
//! details the records carry, live in `dwa_proto::audit`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dwa_proto::audit::{verify_chain, AuditEntry, AuditRecord, Event};
use dwa_proto::csv::{Cell, CsvError, Table};
use dwa_store::{Store, StoreError};
use serde_json::Value;

use crate::services::clock::Time;
use crate::services::error::{Class, Failure};
use crate::services::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filter out of bounds.
    #[error("{0}")]
    Invalid(String),
    #[error("audit log: {0}")]
    Store(#[from] StoreError),
    #[error("audit chain broken: {0}")]
    Chain(#[from] dwa_proto::ProtoError),
    /// An event that would not serialize (a bug, not input).
    #[error("audit record: {0}")]
    Detail(dwa_proto::ProtoError),
    #[error(transparent)]
    Csv(#[from] CsvError),
}

impl Failure for AuditError {
    fn class(&self) -> Class {
        match self {
            AuditError::Invalid(_) => Class::Invalid,
            _ => Class::Internal,
        }
    }
}

/// Newest records returned by default, and at most.
pub const DEFAULT_LIMIT: i64 = 500;
pub const MAX_LIMIT: i64 = 10_000;

/// Filters of the audit log (all optional; empty means none).
#[derive(Debug, Default, Clone)]
pub struct AuditSearch {
    /// RFC 3339 time: records at or after it.
    pub since: Option<String>,
    /// Exact kind (`web.session_create`) or a prefix ending in `.` (`web.`).
    pub kind: Option<String>,
    /// User name: records whose actor is `user:<name>`.
    pub user: Option<String>,
    /// Device id: records whose detail names that device.
    pub device: Option<String>,
    /// Newest records returned, 1..=10000 (default 500).
    pub limit: Option<i64>,
}

/// The records `p` may see that match `q`, oldest first (the newest
/// `limit` of them).
///
/// Scope: an admin sees every record. Anyone else sees the records of their
/// customers' agents (the `agent` column), records naming one of their
/// customers' devices (`detail.device`), and their own actions (actor
/// `user:<name>`); another customer's agent id is withheld from their own
/// refused attempts.
pub async fn query(
    svc: &crate::services::Services,
    p: &crate::services::auth::Principal,
    q: &AuditSearch,
) -> Result<Vec<AuditRecord>, AuditError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AuditError::Invalid(format!(
            "limit must be 1..={MAX_LIMIT}"
        )));
    }
    let since = q
        .since
        .as_deref()
        .map(|s| crate::services::clock::normalize_time("since", s))
        .transpose()
        .map_err(AuditError::Invalid)?;
    if q.kind.as_deref().is_some_and(|k| k.len() > 100)
        || q.user.as_deref().is_some_and(|u| u.len() > 100)
    {
        return Err(AuditError::Invalid(
            "kind and user are at most 100 characters".into(),
        ));
    }
    let (kind_exact, kind_prefix) = match q.kind.as_deref() {
        Some(k) if k.ends_with('.') => (None, Some(k.to_string())),
        Some(k) => (Some(k.to_string()), None),
        None => (None, None),
    };
    let device: Option<i64> = q
        .device
        .as_deref()
        .map(|d| {
            d.trim()
                .parse()
                .map_err(|_| AuditError::Invalid("device: expected a device id".into()))
        })
        .transpose()?;
    let filter = dwa_store::audit::AuditFilter {
        since,
        kind_exact,
        kind_prefix,
        actor: q.user.as_deref().map(|u| format!("user:{u}")),
        device,
        all: p.role == dwa_policy::roles::Role::Admin,
        own_actor: p.actor(),
        customers: p.customers.clone(),
        limit,
    };
    Ok(svc.store.audit_query(&filter).await?)
}

#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
    time: Time,
    /// Whether the last append succeeded: while it did not, actions that
    /// would run ahead of their record (web-session requests) are refused.
    writable: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Audit {
    pub fn new(store: Store, time: Time, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            time,
            writable: Arc::new(AtomicBool::new(true)),
            metrics,
        }
    }

    /// Appends one record of `event` and returns its id.
    pub async fn append(
        &self,
        event: Event,
        actor: &str,
        agent: Option<&str>,
    ) -> Result<i64, AuditError> {
        let detail = Value::Object(event.detail().map_err(AuditError::Detail)?);
        self.append_entry(event.kind(), actor, agent, &detail).await
    }

    /// Appends, logging instead of failing: for paths (disconnect, stream
    /// close) where the event already happened and there is nobody to tell.
    pub async fn record(&self, event: Event, actor: &str, agent: Option<&str>) {
        let kind = event.kind();
        if let Err(e) = self.append(event, actor, agent).await {
            tracing::error!(kind, error = %e, "could not write audit record");
        }
    }

    async fn append_entry(
        &self,
        kind: &str,
        actor: &str,
        agent: Option<&str>,
        detail: &Value,
    ) -> Result<i64, AuditError> {
        let entry = AuditEntry {
            ts: self.time.rfc3339(),
            kind: kind.to_string(),
            actor: actor.to_string(),
            agent: agent.map(str::to_string),
            detail: detail.to_string(),
        };
        let timer = self.metrics.audit_write();
        let r = self.store.audit_append(&entry).await;
        timer.done(r.is_ok());
        self.writable.store(r.is_ok(), Ordering::Relaxed);
        Ok(r?)
    }

    /// Whether the last append succeeded.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Run once at start, before serving: writes the close record of every
    /// stream the previous run opened and never closed (it was killed),
    /// then `relay.started`. Returns how many it closed.
    pub async fn close_unfinished_streams(&self, version: &str) -> Result<u64, AuditError> {
        let after = self
            .store
            .audit_last_of_kind(dwa_proto::audit::Kind::RelayStarted.as_str())
            .await?
            .unwrap_or(0);
        let open = self.store.audit_unclosed_streams(after).await?;
        let now = self.time.now();
        let mut closed = 0u64;
        for r in &open {
            let e = &r.entry;
            let Ok(Event::StreamOpen { stream, target, .. }) = Event::parse(&e.kind, &e.detail)
            else {
                tracing::warn!(id = r.id, "unreadable stream.open record left open");
                continue;
            };
            let duration_ms = humantime::parse_rfc3339_weak(&e.ts)
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let close = Event::StreamClose {
                stream,
                target,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms,
                error: Some(
                    "relay restart: the relay stopped without closing this stream; \
                     byte counts unknown"
                        .into(),
                ),
            };
            self.append(close, &e.actor, e.agent.as_deref()).await?;
            closed += 1;
        }
        self.append(
            Event::RelayStarted {
                version: version.to_string(),
                unclosed_streams: closed,
            },
            "relay",
            None,
        )
        .await?;
        Ok(closed)
    }

    pub async fn records(&self, since: Option<&str>) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self.store.audit_records(since).await?)
    }

    /// Recomputes the whole chain; the number of records checked.
    pub async fn verify(&self) -> Result<u64, AuditError> {
        let all = self.records(None).await?;
        Ok(verify_chain(all)?)
    }
}

/// One JSON object per line; `detail` embedded as JSON.
pub fn to_jsonl(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    for r in records {
        let detail: Value = serde_json::from_str(&r.entry.detail).unwrap_or(Value::Null);
        let v = serde_json::json!({
            "id": r.id, "ts": r.entry.ts, "kind": r.entry.kind, "actor": r.entry.actor,
            "agent": r.entry.agent, "detail": detail, "prev_hash": r.prev_hash, "hash": r.hash,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// The records as CSV (`dwa_proto::csv`: the one writer and its formula
/// rule).
pub fn to_csv(records: &[AuditRecord]) -> Result<String, AuditError> {
    let mut t = Table::new([
        "id",
        "ts",
        "kind",
        "actor",
        "agent",
        "detail",
        "prev_hash",
        "hash",
    ])?;
    for r in records {
        t.row([
            Cell::number(r.id),
            Cell::text(&r.entry.ts),
            Cell::text(&r.entry.kind),
            Cell::text(&r.entry.actor),
            Cell::opt_text(r.entry.agent.as_deref()),
            Cell::text(&r.entry.detail),
            Cell::text(&r.prev_hash),
            Cell::text(&r.hash),
        ])?;
    }
    Ok(t.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_csv_defuses_what_users_typed() {
        let rec = AuditRecord {
            id: 7,
            entry: AuditEntry {
                ts: "2026-12-03T10:00:00.000Z".into(),
                kind: "device.add".into(),
                actor: "=cmd|' /C calc'!A0".into(),
                agent: None,
                detail: "{\"name\":\"x\"}".into(),
            },
            prev_hash: "00".into(),
            hash: "11".into(),
        };
        let out = to_csv(&[rec]).unwrap();
        let row = out.lines().nth(1).unwrap();
        assert!(
            row.starts_with("7,2026-12-03T10:00:00.000Z,device.add,'=cmd"),
            "{row}"
        );
        assert!(row.contains("\"{\"\"name\"\":\"\"x\"\"}\""), "{row}");
    }
}
