//! Alert rules per customer, and alerts: raised and resolved as readings
//! and finished scans arrive (the rules that decide are the relay's). At
//! most one active alert per (device, kind, subject): a unique partial
//! index, so a double evaluation cannot duplicate one.

use sqlx::SqliteExecutor;

use crate::{Result, Store, Tx};

/// One stored rule of a customer.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RuleRow {
    pub kind: String,
    pub enabled: bool,
    pub threshold: Option<f64>,
    /// E-mail recipients, a JSON array (`[]`: none).
    pub email_to: String,
    /// `immediate` or `digest`.
    pub email_mode: String,
}

/// An alert to raise.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub device_id: i64,
    pub customer_id: i64,
    pub kind: &'a str,
    pub subject: &'a str,
    pub message: &'a str,
    pub value: Option<f64>,
    pub raised_at: &'a str,
}

/// An active alert's key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveAlert {
    pub id: i64,
    pub kind: String,
    pub subject: String,
}

/// An alert with its customer and device.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub kind: String,
    pub subject: String,
    pub message: String,
    pub value: Option<f64>,
    pub raised_at: String,
    pub resolved_at: Option<String>,
    pub customer_id: i64,
    pub customer: String,
    pub device_id: i64,
    pub device_name: Option<String>,
    pub address: String,
    pub agent_id: String,
}

/// Which alerts a list wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Active,
    Resolved,
    All,
}

const ALERT_SELECT: &str = "SELECT x.id, x.kind, x.subject, x.message, x.value, x.raised_at, x.resolved_at, \
    x.customer_id, c.name AS customer, d.id AS device_id, d.name AS device_name, d.address, d.agent_id \
    FROM alerts x JOIN devices d ON d.id = x.device_id JOIN customers c ON c.id = x.customer_id";

async fn rules<'e>(e: impl SqliteExecutor<'e>, customer: i64) -> Result<Vec<RuleRow>> {
    Ok(sqlx::query_as(
        "SELECT kind, enabled, threshold, email_to, email_mode FROM alert_rules \
         WHERE customer_id = $1 ORDER BY kind",
    )
    .bind(customer)
    .fetch_all(e)
    .await?)
}

impl Tx {
    /// The customer's stored rules (kinds without one use their default).
    pub async fn alert_rules(&mut self, customer: i64) -> Result<Vec<RuleRow>> {
        rules(&mut *self.tx, customer).await
    }

    pub async fn active_alerts_of(&mut self, device: i64) -> Result<Vec<ActiveAlert>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, subject FROM alerts WHERE device_id = $1 AND resolved_at IS NULL ORDER BY id",
        )
        .bind(device)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn raise_alert(&mut self, a: &NewAlert<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO alerts (device_id, customer_id, kind, subject, message, value, raised_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(a.device_id)
        .bind(a.customer_id)
        .bind(a.kind)
        .bind(a.subject)
        .bind(a.message)
        .bind(a.value)
        .bind(a.raised_at)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    pub async fn resolve_alert(&mut self, id: i64, now: &str) -> Result<()> {
        sqlx::query("UPDATE alerts SET resolved_at = $1 WHERE id = $2 AND resolved_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Whether the device has an active alert of `kind` (any subject).
    pub async fn has_active_alert(&mut self, device: i64, kind: &str) -> Result<bool> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM alerts WHERE device_id = $1 AND kind = $2 AND resolved_at IS NULL LIMIT 1",
        )
        .bind(device)
        .bind(kind)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(id.is_some())
    }

    pub async fn alert(&mut self, id: i64) -> Result<AlertRow> {
        Ok(sqlx::query_as(&format!("{ALERT_SELECT} WHERE x.id = $1"))
            .bind(id)
            .fetch_one(&mut *self.tx)
            .await?)
    }
}

impl Store {
    pub async fn alert_rules(&self, customer: i64) -> Result<Vec<RuleRow>> {
        rules(&self.pool, customer).await
    }

    /// Replaces a customer's rules (kinds not given return to their
    /// default).
    pub async fn replace_alert_rules(&self, customer: i64, new: &[RuleRow]) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM alert_rules WHERE customer_id = $1")
            .bind(customer)
            .execute(&mut *tx.tx)
            .await?;
        for r in new {
            sqlx::query(
                "INSERT INTO alert_rules (customer_id, kind, enabled, threshold, email_to, email_mode) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(customer)
            .bind(&r.kind)
            .bind(r.enabled)
            .bind(r.threshold)
            .bind(&r.email_to)
            .bind(&r.email_mode)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// A device's active alerts (at most one per kind and subject: few).
    pub async fn device_active_alerts(&self, device: i64) -> Result<Vec<AlertRow>> {
        Ok(sqlx::query_as(&format!(
            "{ALERT_SELECT} WHERE x.device_id = $1 AND x.resolved_at IS NULL ORDER BY x.id"
        ))
        .bind(device)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Alerts in `state`, newest first, at most `limit`, optionally only
    /// those of `customers` (filtered in SQL, so the limit counts visible
    /// rows).
    pub async fn alerts(
        &self,
        state: AlertState,
        customers: Option<&[i64]>,
        limit: i64,
    ) -> Result<Vec<AlertRow>> {
        let cond = match state {
            AlertState::Active => "x.resolved_at IS NULL",
            AlertState::Resolved => "x.resolved_at IS NOT NULL",
            AlertState::All => "1 = 1",
        };
        let scope = customers.map(|c| {
            let ids: Vec<String> = c.iter().map(i64::to_string).collect();
            format!("[{}]", ids.join(","))
        });
        Ok(sqlx::query_as(&format!(
            "{ALERT_SELECT} WHERE {cond} \
             AND ($1 IS NULL OR x.customer_id IN (SELECT value FROM json_each($1))) \
             ORDER BY x.id DESC LIMIT $2"
        ))
        .bind(scope)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
