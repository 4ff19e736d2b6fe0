//! The audit log: append-only, hash-chained records (chain rules in
//! `dwa_proto::audit`).
//!
//! Appends run in a write transaction (read the last hash, insert the next
//! record) so that the server and CLI commands, separate processes on one
//! file, never fork the chain. Within a process, the last record's id and
//! hash are cached and a single conditional INSERT appends while nobody
//! else has; otherwise the transaction reads the head again.

use std::sync::Arc;

use dwa_proto::audit::{record_hash, AuditEntry, AuditRecord, GENESIS};

use crate::{Result, Store};

/// The chain's end as this process last wrote it; one appender at a time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head(Arc<tokio::sync::Mutex<Option<(i64, String)>>>);

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    ts: String,
    kind: String,
    actor: String,
    agent: Option<String>,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl From<Row> for AuditRecord {
    fn from(r: Row) -> Self {
        AuditRecord {
            id: r.id,
            entry: AuditEntry {
                ts: r.ts,
                kind: r.kind,
                actor: r.actor,
                agent: r.agent,
                detail: r.detail,
            },
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Filters and the caller's scope for [`Store::audit_query`].
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Records at or after this RFC 3339 time.
    pub since: Option<String>,
    pub kind_exact: Option<String>,
    /// A prefix such as `web.`.
    pub kind_prefix: Option<String>,
    pub actor: Option<String>,
    /// Records whose detail names this device.
    pub device: Option<i64>,
    /// Sees everything (an admin).
    pub all: bool,
    /// Otherwise: records of this actor ...
    pub own_actor: String,
    /// ... and of these customers' agents and devices. Another customer's
    /// agent id is withheld from the caller's own records.
    pub customers: Vec<i64>,
    /// The newest `limit` records.
    pub limit: i64,
}

impl Store {
    /// Appends one record; returns its id.
    pub async fn audit_append(&self, entry: &AuditEntry) -> Result<i64> {
        let mut head = self.audit_head.0.lock().await;
        // Fast path: insert only if the log still ends where we last saw it.
        if let Some((last_id, last_hash)) = head.as_ref() {
            let id = last_id + 1;
            let hash = record_hash(last_hash, id, entry);
            let r = sqlx::query(
                "INSERT INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                 WHERE (SELECT COALESCE(MAX(id), 0) FROM audit) = $9",
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
            .execute(&self.pool)
            .await;
            if matches!(r, Ok(ref done) if done.rows_affected() == 1) {
                *head = Some((id, hash));
                return Ok(id);
            }
        }
        let mut tx = self.begin().await?;
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&mut *tx.tx)
                .await?;
        let (id, prev) = match last {
            Some((id, hash)) => (id + 1, hash),
            None => (1, GENESIS.to_string()),
        };
        let hash = record_hash(&prev, id, entry);
        sqlx::query(
            "INSERT INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&entry.ts)
        .bind(&entry.kind)
        .bind(&entry.actor)
        .bind(&entry.agent)
        .bind(&entry.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        *head = Some((id, hash));
        Ok(id)
    }

    /// The newest record's id and hash (None: the log is empty).
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        Ok(
            sqlx::query_as("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The id of the newest record of `kind`, if any.
    pub async fn audit_last_of_kind(&self, kind: &str) -> Result<Option<i64>> {
        let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM audit WHERE kind = $1")
            .bind(kind)
            .fetch_one(&self.pool)
            .await?;
        Ok(id)
    }

    /// `stream.open` records after `after_id` with no later `stream.close`
    /// of the same agent and stream, oldest first.
    pub async fn audit_unclosed_streams(&self, after_id: i64) -> Result<Vec<AuditRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, ts, kind, actor, agent, detail, prev_hash, hash FROM audit o \
             WHERE o.kind = 'stream.open' AND o.id > $1 \
               AND NOT EXISTS (SELECT 1 FROM audit c \
                   WHERE c.kind = 'stream.close' AND c.id > o.id AND c.agent IS o.agent \
                     AND json_extract(c.detail, '$.stream') = json_extract(o.detail, '$.stream')) \
             ORDER BY id",
        )
        .bind(after_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Every record (at or after `since`), oldest first.
    pub async fn audit_records(&self, since: Option<&str>) -> Result<Vec<AuditRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, ts, kind, actor, agent, detail, prev_hash, hash FROM audit \
             WHERE ($1 IS NULL OR ts >= $1) ORDER BY id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The records concerning `customer`, oldest first: those of its
    /// agents (the `agent` column), those naming one of its devices
    /// (`detail.device`) or the customer itself by id (`detail.customer`,
    /// `detail.customer_id`, the `customer create` record), and
    /// the actions of the users assigned to it (actor `user:<name>`).
    pub async fn audit_of_customer(&self, customer: i64) -> Result<Vec<AuditRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, ts, kind, actor, agent, detail, prev_hash, hash FROM audit
             WHERE agent IN (SELECT g.id FROM agents g WHERE g.customer_id = $1)
                OR json_extract(detail, '$.device') IN (SELECT d.id FROM devices d
                     JOIN agents g ON g.id = d.agent_id WHERE g.customer_id = $1)
                OR json_extract(detail, '$.customer') = $1
                OR json_extract(detail, '$.customer_id') = $1
                OR (json_extract(detail, '$.action') = 'customer create'
                    AND json_extract(detail, '$.id') = $1)
                OR actor IN (SELECT 'user:' || u.username FROM users u
                     JOIN user_customers uc ON uc.user_id = u.id WHERE uc.customer_id = $1)
             ORDER BY id",
        )
        .bind(customer)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The newest `f.limit` records matching `f`, oldest first.
    pub async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let customers = serde_json::to_string(&f.customers).unwrap_or_else(|_| "[]".into());
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, ts, kind, actor,
                CASE WHEN $6 OR agent IN (SELECT g.id FROM agents g
                     WHERE g.customer_id IN (SELECT value FROM json_each($8)))
                THEN agent END AS agent,
                detail, prev_hash, hash FROM audit a
             WHERE ($1 IS NULL OR ts >= $1)
               AND ($2 IS NULL OR kind = $2)
               AND ($3 IS NULL OR kind LIKE $3)
               AND ($4 IS NULL OR actor = $4)
               AND ($5 IS NULL OR json_extract(detail, '$.device') = $5)
               AND ($6 OR actor = $7
                    OR agent IN (SELECT g.id FROM agents g WHERE g.customer_id IN (SELECT value FROM json_each($8)))
                    OR json_extract(detail, '$.device') IN (SELECT d.id FROM devices d JOIN agents g ON g.id = d.agent_id
                         WHERE g.customer_id IN (SELECT value FROM json_each($8))))
             ORDER BY id DESC LIMIT $9",
        )
        .bind(&f.since)
        .bind(&f.kind_exact)
        .bind(f.kind_prefix.as_ref().map(|p| format!("{p}%")))
        .bind(&f.actor)
        .bind(f.device)
        .bind(f.all)
        .bind(&f.own_actor)
        .bind(customers)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<AuditRecord> = rows.into_iter().map(Into::into).collect();
        out.reverse();
        Ok(out)
    }
}
