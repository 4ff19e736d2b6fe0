//! Enrolled agents: each one's identity (its public key), its customer,
//! revocation and when it was last seen.

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub customer_id: i64,
    pub customer: String,
    pub public_key: String,
    pub hostname: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_seen: Option<String>,
}

const AGENT_SELECT: &str = "SELECT a.id, a.name, a.customer_id, c.name AS customer, a.public_key, \
    a.hostname, a.created_at, a.revoked_at, a.last_seen \
    FROM agents a JOIN customers c ON c.id = a.customer_id";

impl Store {
    pub async fn agent_by_key(&self, public_key: &str) -> Result<Option<AgentRow>> {
        Ok(
            sqlx::query_as(&format!("{AGENT_SELECT} WHERE a.public_key = $1"))
                .bind(public_key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn agent(&self, id: &str) -> Result<Option<AgentRow>> {
        Ok(sqlx::query_as(&format!("{AGENT_SELECT} WHERE a.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        Ok(
            sqlx::query_as(&format!("{AGENT_SELECT} ORDER BY a.created_at"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// An agent by id, or by name when the name is unambiguous.
    pub async fn find_agent(&self, reference: &str) -> Result<AgentRow> {
        let rows: Vec<AgentRow> =
            sqlx::query_as(&format!("{AGENT_SELECT} WHERE a.id = $1 OR a.name = $1"))
                .bind(reference)
                .fetch_all(&self.pool)
                .await?;
        if let Some(a) = rows.iter().find(|a| a.id == reference) {
            return Ok(a.clone());
        }
        match rows.len() {
            0 => Err(StoreError::NotFound(format!(
                "no agent with id or name {reference:?}"
            ))),
            1 => Ok(rows[0].clone()),
            n => Err(StoreError::Invalid(format!(
                "{n} agents are named {reference:?}; use the id: {}",
                rows.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Marks the agent revoked; false if it was already (or is unknown).
    pub async fn revoke_agent(&self, id: &str, now: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_agent(&self, id: &str, now: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
