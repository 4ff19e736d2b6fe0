//! The e-mail outbox: one row per alert change and recipient list, queued
//! in the transaction that raised or resolved the alert and sent (and
//! retried) by the relay's mail task. Pending rows survive a restart.

use crate::outbox::PENDING;
use crate::{Result, Store, Tx};

/// A row to queue.
#[derive(Debug, Clone)]
pub struct NewMail<'a> {
    pub customer_id: i64,
    pub customer_name: &'a str,
    /// `immediate` or `digest`.
    pub mode: &'a str,
    /// JSON array, sorted: digest rows are grouped by it.
    pub recipients: &'a str,
    pub event: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub created_at: &'a str,
    /// Unix seconds: now, or the end of the digest interval.
    pub due: i64,
    /// A file sent with the message (immediate rows only).
    pub attachment: Option<MailAttachment<'a>>,
}

/// A file attached to a message.
#[derive(Debug, Clone, Copy)]
pub struct MailAttachment<'a> {
    pub name: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// A pending row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Mail {
    pub id: i64,
    pub customer_id: i64,
    pub customer_name: String,
    pub mode: String,
    pub recipients: String,
    pub event: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
    pub attachment_name: Option<String>,
    pub attachment_type: Option<String>,
    pub attachment: Option<Vec<u8>>,
}

/// An outbox row as operators (and tests) inspect it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailRow {
    pub id: i64,
    pub customer_id: i64,
    pub mode: String,
    pub recipients: String,
    pub attempts: i64,
    pub delivered_at: Option<String>,
    pub failed_at: Option<String>,
    pub last_error: Option<String>,
}

impl Tx {
    /// Rows neither delivered nor given up.
    pub async fn mail_pending(&mut self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM email_outbox WHERE {PENDING}"
        ))
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn enqueue_mail(&mut self, m: &NewMail<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO email_outbox (customer_id, customer_name, mode, recipients, event, subject, \
             body, created_at, next_attempt_at, attachment_name, attachment_type, attachment) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(m.customer_id)
        .bind(m.customer_name)
        .bind(m.mode)
        .bind(m.recipients)
        .bind(m.event)
        .bind(m.subject)
        .bind(m.body)
        .bind(m.created_at)
        .bind(m.due)
        .bind(m.attachment.map(|a| a.name))
        .bind(m.attachment.map(|a| a.content_type))
        .bind(m.attachment.map(|a| a.bytes))
        .fetch_one(&mut *self.tx)
        .await?)
    }
}

impl Store {
    /// Pending rows due at `now` (unix seconds), in queue order.
    pub async fn mail_due(&self, now: i64, limit: i64) -> Result<Vec<Mail>> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, customer_id, customer_name, mode, recipients, event, subject, body, attempts, \
             attachment_name, attachment_type, attachment FROM email_outbox WHERE {PENDING} AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks rows `ids` delivered after attempt `attempts`.
    pub async fn mail_delivered(&self, ids: &[i64], attempts: i64, now: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE email_outbox SET delivered_at = $1, attempts = $2, last_error = NULL \
                 WHERE id = $3",
            )
            .bind(now)
            .bind(attempts)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Records failed attempt `attempts` of rows `ids`: retried at
    /// `next_at` (unix seconds) unless `give_up`.
    pub async fn mail_failed(
        &self,
        ids: &[i64],
        attempts: i64,
        error: &str,
        next_at: i64,
        give_up: bool,
        now: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE email_outbox SET attempts = $1, last_error = $2, next_attempt_at = $3, \
                 failed_at = CASE WHEN $4 THEN $5 ELSE NULL END WHERE id = $6",
            )
            .bind(attempts)
            .bind(error)
            .bind(next_at)
            .bind(give_up)
            .bind(now)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// When the next pending row is due (unix seconds).
    pub async fn next_mail_due(&self) -> Result<Option<i64>> {
        self.next_due_in("email_outbox").await
    }

    /// Drops delivered and failed rows created before `cutoff` (RFC 3339).
    pub async fn prune_mail(&self, cutoff: &str) -> Result<u64> {
        self.prune_finished_in("email_outbox", cutoff).await
    }

    /// Every outbox row, oldest first.
    pub async fn mail_outbox(&self) -> Result<Vec<MailRow>> {
        Ok(sqlx::query_as(
            "SELECT id, customer_id, mode, recipients, attempts, delivered_at, failed_at, last_error \
             FROM email_outbox ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
