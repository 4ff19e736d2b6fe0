//! Customers: the dealer's clients, each with its agents, devices and users.

use crate::{unique, Result, Store, StoreError};

/// What erasing a customer removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub agents: u64,
    pub devices: u64,
    pub readings: u64,
    pub alerts: u64,
    /// Customer users deactivated (their only customer is gone).
    pub users_deactivated: u64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct CustomerRow {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

/// A customer with how many agents it has (the admin's list).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerSummary {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub agents: i64,
}

impl Store {
    /// Every customer with its agent count, by name.
    pub async fn customer_summaries(&self) -> Result<Vec<CustomerSummary>> {
        Ok(sqlx::query_as(
            "SELECT c.id, c.name, c.created_at, \
             (SELECT COUNT(*) FROM agents a WHERE a.customer_id = c.id) AS agents \
             FROM customers c ORDER BY c.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn add_customer(&self, name: &str, now: &str) -> Result<i64> {
        let r = sqlx::query_scalar(
            "INSERT INTO customers (name, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        unique(r, || format!("customer {name:?} already exists"))
    }

    pub async fn customer_id(&self, name: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM customers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no customer named {name:?}")))
    }

    pub async fn customer(&self, id: i64) -> Result<Option<CustomerRow>> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM customers WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn customers(&self) -> Result<Vec<CustomerRow>> {
        Ok(
            sqlx::query_as("SELECT id, name, created_at FROM customers ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Erases a customer and all its data — agents, devices, readings,
    /// scans, alerts, rules, enrollment tokens, user assignments — in one
    /// transaction; its customer users are deactivated. The audit log is
    /// not touched (it is append-only).
    pub async fn erase_customer(&self, id: i64, now: &str) -> Result<Erased> {
        let mut tx = self.begin().await?;
        let t = &mut *tx.tx;
        let mut out = Erased::default();
        let agents = "SELECT id FROM agents WHERE customer_id = $1";
        let devices = "SELECT id FROM devices WHERE agent_id IN (SELECT id FROM agents WHERE customer_id = $1)";
        out.alerts = sqlx::query(&format!(
            "DELETE FROM alerts WHERE customer_id = $1 OR device_id IN ({devices})"
        ))
        .bind(id)
        .execute(&mut *t)
        .await?
        .rows_affected();
        sqlx::query(&format!(
            "DELETE FROM device_tls WHERE device_id IN ({devices})"
        ))
        .bind(id)
        .execute(&mut *t)
        .await?;
        out.readings = sqlx::query(&format!(
            "DELETE FROM readings WHERE agent_id IN ({agents}) OR device_id IN ({devices})"
        ))
        .bind(id)
        .execute(&mut *t)
        .await?
        .rows_affected();
        out.devices = sqlx::query(&format!("DELETE FROM devices WHERE id IN ({devices})"))
            .bind(id)
            .execute(&mut *t)
            .await?
            .rows_affected();
        for table in ["scans", "telemetry_items", "agent_scan_settings"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE agent_id IN ({agents})"))
                .bind(id)
                .execute(&mut *t)
                .await?;
        }
        out.agents = sqlx::query("DELETE FROM agents WHERE customer_id = $1")
            .bind(id)
            .execute(&mut *t)
            .await?
            .rows_affected();
        for sql in [
            "DELETE FROM enroll_tokens WHERE customer_id = $1",
            "DELETE FROM alert_rules WHERE customer_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *t).await?;
        }
        out.users_deactivated = sqlx::query(
            "UPDATE users SET active = 0, deactivated_at = $2 WHERE role = 'customer' AND active = 1 \
             AND id IN (SELECT user_id FROM user_customers WHERE customer_id = $1)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *t)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM user_customers WHERE customer_id = $1")
            .bind(id)
            .execute(&mut *t)
            .await?;
        let n = sqlx::query("DELETE FROM customers WHERE id = $1")
            .bind(id)
            .execute(&mut *t)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("no customer {id}")));
        }
        tx.commit().await?;
        Ok(out)
    }
}
