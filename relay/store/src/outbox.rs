//! The webhook outbox: events queued in the same transaction that raised
//! or resolved their alert, delivered (and retried) by the relay's
//! delivery task. Pending rows survive a restart.

use crate::{Result, Store, Tx};

/// A pending delivery; `body` is exactly the bytes signed and sent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub event: String,
    pub body: String,
    pub attempts: i64,
}

/// An outbox row as operators inspect it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event: String,
    pub created_at: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<String>,
    pub failed_at: Option<String>,
    pub last_error: Option<String>,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<'a> {
    Delivered,
    /// Failed; retried at `next_at` (unix seconds) unless `give_up`.
    Failed {
        error: &'a str,
        next_at: i64,
        give_up: bool,
    },
}

/// Rows of an outbox table (webhook, e-mail) still to deliver.
pub(crate) const PENDING: &str = "delivered_at IS NULL AND failed_at IS NULL";

impl Tx {
    /// Rows neither delivered nor given up.
    pub async fn outbox_pending(&mut self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM webhook_outbox WHERE {PENDING}"
        ))
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Queues one event, due at `due` (unix seconds).
    pub async fn enqueue_webhook(
        &mut self,
        event: &str,
        body: &str,
        now: &str,
        due: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO webhook_outbox (event, body, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(event)
        .bind(body)
        .bind(now)
        .bind(due)
        .fetch_one(&mut *self.tx)
        .await?)
    }
}

impl Store {
    /// Pending rows due at `now` (unix seconds), oldest due first.
    pub async fn deliveries_due(&self, now: i64, limit: i64) -> Result<Vec<Delivery>> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, event, body, attempts FROM webhook_outbox \
             WHERE {PENDING} AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records attempt number `attempts` of delivery `id`.
    pub async fn record_attempt(
        &self,
        id: i64,
        attempts: i64,
        outcome: &Attempt<'_>,
        now: &str,
    ) -> Result<()> {
        match outcome {
            Attempt::Delivered => {
                sqlx::query(
                    "UPDATE webhook_outbox SET delivered_at = $1, attempts = $2, last_error = NULL \
                     WHERE id = $3",
                )
                .bind(now)
                .bind(attempts)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            Attempt::Failed {
                error,
                next_at,
                give_up,
            } => {
                sqlx::query(
                    "UPDATE webhook_outbox SET attempts = $1, last_error = $2, next_attempt_at = $3, \
                     failed_at = CASE WHEN $4 THEN $5 ELSE NULL END WHERE id = $6",
                )
                .bind(attempts)
                .bind(*error)
                .bind(*next_at)
                .bind(*give_up)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// When the next pending row is due (unix seconds).
    pub async fn next_delivery_due(&self) -> Result<Option<i64>> {
        self.next_due_in("webhook_outbox").await
    }

    /// Drops delivered and failed rows created before `cutoff` (RFC 3339).
    pub async fn prune_outbox(&self, cutoff: &str) -> Result<u64> {
        self.prune_finished_in("webhook_outbox", cutoff).await
    }

    /// When the next pending row of outbox `table` is due (unix seconds).
    pub(crate) async fn next_due_in(&self, table: &'static str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT MIN(next_attempt_at) FROM {table} WHERE {PENDING}"
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Drops delivered and failed rows of outbox `table` created before
    /// `cutoff` (RFC 3339).
    pub(crate) async fn prune_finished_in(&self, table: &'static str, cutoff: &str) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "DELETE FROM {table} WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL) \
             AND created_at < $1"
        ))
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Every outbox row, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>> {
        Ok(sqlx::query_as(
            "SELECT id, event, created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error \
             FROM webhook_outbox ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
