//! The audit log service: records are appended through the store, which
//! keeps the hash chain; rules of the chain live in `dwa_proto::audit`.

use dwa_proto::audit::{verify_chain, AuditEntry, AuditRecord};
use dwa_store::{Store, StoreError};
use serde_json::Value;

use crate::services::clock::Time;
use crate::services::error::{Class, Failure};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {0}")]
    Store(#[from] StoreError),
    #[error("audit chain broken: {0}")]
    Chain(#[from] dwa_proto::ProtoError),
}

impl Failure for AuditError {
    fn class(&self) -> Class {
        Class::Internal
    }
}

#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
    time: Time,
}

impl Audit {
    pub fn new(store: Store, time: Time) -> Self {
        Self { store, time }
    }

    /// Appends one record and returns its id.
    pub async fn append(
        &self,
        kind: &str,
        actor: &str,
        agent: Option<&str>,
        detail: Value,
    ) -> Result<i64, AuditError> {
        let entry = AuditEntry {
            ts: self.time.rfc3339(),
            kind: kind.to_string(),
            actor: actor.to_string(),
            agent: agent.map(str::to_string),
            detail: detail.to_string(),
        };
        Ok(self.store.audit_append(&entry).await?)
    }

    /// Appends, logging instead of failing: for paths (disconnect, stream
    /// close) where the event already happened and there is nobody to tell.
    pub async fn record(&self, kind: &str, actor: &str, agent: Option<&str>, detail: Value) {
        if let Err(e) = self.append(kind, actor, agent, detail).await {
            tracing::error!(kind, error = %e, "could not write audit record");
        }
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

fn csv_field(s: &str) -> String {
    // Quote always; double inner quotes; neutralise spreadsheet formulas.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn to_csv(records: &[AuditRecord]) -> String {
    let mut out = String::from("id,ts,kind,actor,agent,detail,prev_hash,hash\n");
    for r in records {
        let fields = [
            r.id.to_string(),
            r.entry.ts.clone(),
            r.entry.kind.clone(),
            r.entry.actor.clone(),
            r.entry.agent.clone().unwrap_or_default(),
            r.entry.detail.clone(),
            r.prev_hash.clone(),
            r.hash.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
    }
}
