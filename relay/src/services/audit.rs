//! The audit log: append-only, hash-chained records in the relay database.
//!
//! Appends run in a `BEGIN IMMEDIATE` transaction (read the last hash, insert
//! the next record) so that the server and CLI commands, separate processes
//! on one file, never fork the chain. Chain rules live in `dwa_proto::audit`.

use std::sync::Arc;

use dwa_proto::audit::{record_hash, verify_chain, AuditEntry, AuditRecord, GENESIS};
use serde_json::Value;
use sqlx::Row;

use crate::db::Db;
use crate::error::Result;
use crate::util::now_rfc3339;

#[derive(Clone, Debug)]
pub struct Audit {
    db: Db,
    // One appender at a time within this process, holding the last record's
    // (id, hash) as this process last saw it.
    head: Arc<tokio::sync::Mutex<Option<(i64, String)>>>,
}

impl Audit {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            head: Arc::default(),
        }
    }

    /// Appends one record and returns its id.
    pub async fn append(
        &self,
        kind: &str,
        actor: &str,
        agent: Option<&str>,
        detail: Value,
    ) -> Result<i64> {
        let mut head = self.head.lock().await;
        let entry = AuditEntry {
            ts: now_rfc3339(),
            kind: kind.to_string(),
            actor: actor.to_string(),
            agent: agent.map(str::to_string),
            detail: detail.to_string(),
        };
        // Fast path: one statement that inserts only if the log still ends
        // where we last saw it. Another process (a CLI command) may have
        // appended meanwhile; then, or on any error, take the slow path.
        if let Some((last_id, last_hash)) = head.as_ref() {
            let id = last_id + 1;
            let hash = record_hash(last_hash, id, &entry);
            let r = sqlx::query(
                "INSERT INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash)
                 SELECT ?, ?, ?, ?, ?, ?, ?, ?
                 WHERE (SELECT COALESCE(MAX(id), 0) FROM audit) = ?",
            )
            .bind(id)
            .bind(&entry.ts)
            .bind(&entry.kind)
            .bind(&entry.actor)
            .bind(&entry.agent)
            .bind(&entry.detail)
            .bind(last_hash)
            .bind(&hash)
            .bind(last_id)
            .execute(&self.db.pool)
            .await;
            if matches!(r, Ok(ref done) if done.rows_affected() == 1) {
                *head = Some((id, hash));
                return Ok(id);
            }
        }
        let (id, hash) = self.append_locked(&entry).await?;
        *head = Some((id, hash));
        Ok(id)
    }

    /// Slow path: read the chain's end and append inside one write
    /// transaction (`BEGIN IMMEDIATE`), so processes never fork the chain.
    async fn append_locked(&self, entry: &AuditEntry) -> Result<(i64, String)> {
        // Rolls back if dropped (see Db::enroll_agent).
        let mut conn = self.db.pool.begin_with("BEGIN IMMEDIATE").await?;
        let res: Result<(i64, String)> = async {
            let last = sqlx::query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?;
            let (id, prev) = match last {
                Some(r) => (r.get::<i64, _>(0) + 1, r.get::<String, _>(1)),
                None => (1, GENESIS.to_string()),
            };
            let hash = record_hash(&prev, id, entry);
            sqlx::query(
                "INSERT INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&entry.ts)
            .bind(&entry.kind)
            .bind(&entry.actor)
            .bind(&entry.agent)
            .bind(&entry.detail)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *conn)
            .await?;
            Ok((id, hash))
        }
        .await;
        if res.is_ok() {
            conn.commit().await?;
        }
        res
    }

    /// Appends, logging instead of failing: for paths (disconnect, stream
    /// close) where the event already happened and there is nobody to tell.
    pub async fn record(&self, kind: &str, actor: &str, agent: Option<&str>, detail: Value) {
        if let Err(e) = self.append(kind, actor, agent, detail).await {
            tracing::error!(kind, error = %e, "could not write audit record");
        }
    }

    pub async fn records(&self, since: Option<&str>) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, ts, kind, actor, agent, detail, prev_hash, hash FROM audit
             WHERE (?1 IS NULL OR ts >= ?1) ORDER BY id",
        )
        .bind(since)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().map(record_from_row).collect())
    }

    /// Recomputes the whole chain.
    pub async fn verify(&self) -> Result<u64> {
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

/// One audit row selected as `id, ts, kind, actor, agent, detail,
/// prev_hash, hash` (the export and the scoped API share the shape).
pub fn record_from_row(r: &sqlx::sqlite::SqliteRow) -> AuditRecord {
    AuditRecord {
        id: r.get(0),
        entry: AuditEntry {
            ts: r.get(1),
            kind: r.get(2),
            actor: r.get(3),
            agent: r.get(4),
            detail: r.get(5),
        },
        prev_hash: r.get(6),
        hash: r.get(7),
    }
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
