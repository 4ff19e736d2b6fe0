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
            "DELETE FROM billing_schedules WHERE customer_id = $1",
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

/// The customer's devices: a subquery of `$1`, the customer id.
const CUSTOMER_DEVICES: &str =
    "SELECT d.id FROM devices d JOIN agents a ON a.id = d.agent_id WHERE a.customer_id = $1";

/// One object of a customer's export: a JSON text built by SQLite from the
/// columns named (so secrets and keys are left out by not naming them).
const EXPORT_AGENTS: &str = "SELECT json_object('id', id, 'name', name, 'hostname', hostname, \
     'created_at', created_at, 'revoked_at', revoked_at, 'last_seen', last_seen) \
     FROM agents WHERE customer_id = $1 ORDER BY id";
const EXPORT_DEVICES: &str = "SELECT json_object('id', d.id, 'agent_id', d.agent_id, \
     'address', d.address, 'name', d.name, 'created_at', d.created_at, 'identity', d.identity, \
     'mac', d.mac, 'first_seen', d.first_seen, 'last_seen', d.last_seen, \
     'latest_reading', d.latest_reading, 'missed_scans', d.missed_scans, \
     'displaced_from', d.displaced_from) \
     FROM devices d JOIN agents a ON a.id = d.agent_id WHERE a.customer_id = $1 ORDER BY d.id";
const EXPORT_ALERTS: &str = "SELECT json_object('id', id, 'device_id', device_id, 'kind', kind, \
     'subject', subject, 'message', message, 'value', value, 'raised_at', raised_at, \
     'resolved_at', resolved_at) FROM alerts WHERE customer_id = $1 ORDER BY id";
const EXPORT_SCANS: &str = "SELECT json_object('id', s.id, 'agent_id', s.agent_id, \
     'started_at', s.started_at, 'finished_at', s.finished_at, 'trigger', s.trigger, \
     'ranges', json(s.ranges), 'addresses', s.addresses, 'found', s.found, \
     'received_at', s.received_at) \
     FROM scans s JOIN agents a ON a.id = s.agent_id WHERE a.customer_id = $1 ORDER BY s.id";
/// Users assigned to the customer: who they are, never their credentials.
const EXPORT_USERS: &str = "SELECT json_object('id', u.id, 'username', u.username, \
     'role', u.role, 'source', u.source, 'created_at', u.created_at, \
     'last_login', u.last_login, 'active', u.active = 1, 'deactivated_at', u.deactivated_at) \
     FROM users u JOIN user_customers uc ON uc.user_id = u.id WHERE uc.customer_id = $1 \
     ORDER BY u.id";

/// A part of a customer's export held in memory (small tables; readings
/// are paged with [`Store::customer_readings_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportPart {
    Agents,
    Devices,
    Alerts,
    Scans,
    Users,
}

impl Store {
    /// Every row of `part` belonging to `customer`, one JSON object each.
    pub async fn customer_export_part(
        &self,
        customer: i64,
        part: ExportPart,
    ) -> Result<Vec<String>> {
        let sql = match part {
            ExportPart::Agents => EXPORT_AGENTS,
            ExportPart::Devices => EXPORT_DEVICES,
            ExportPart::Alerts => EXPORT_ALERTS,
            ExportPart::Scans => EXPORT_SCANS,
            ExportPart::Users => EXPORT_USERS,
        };
        Ok(sqlx::query_scalar(sql)
            .bind(customer)
            .fetch_all(&self.pool)
            .await?)
    }

    /// At most `limit` of the customer's readings with ids after `after`,
    /// by id: (id, the reading as one JSON object, its record embedded).
    pub async fn customer_readings_page(
        &self,
        customer: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(&format!(
            "SELECT id, json_object('id', id, 'device_id', device_id, 'agent_id', agent_id, \
             'scan', scan, 'taken_at', taken_at, 'received_at', received_at, 'address', address, \
             'identity', identity, 'record', json(record)) FROM readings \
             WHERE device_id IN ({CUSTOMER_DEVICES}) AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(customer)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
