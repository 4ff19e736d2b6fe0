//! Scan settings per agent, as set on the relay, and the agent's last
//! answer to them.

use crate::{Result, Store};

/// An agent's stored scan settings: `ranges` a JSON list or NULL,
/// `applied` the agent's last answer as JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScanSettingsRow {
    pub agent_id: String,
    pub ranges: Option<String>,
    pub interval_secs: Option<i64>,
    pub updated_at: String,
    pub updated_by: String,
    pub applied: Option<String>,
    pub applied_at: Option<String>,
}

const SELECT: &str = "SELECT agent_id, ranges, interval_secs, updated_at, updated_by, applied, \
    applied_at FROM agent_scan_settings";

impl Store {
    pub async fn scan_settings(&self, agent: &str) -> Result<Option<ScanSettingsRow>> {
        Ok(sqlx::query_as(&format!("{SELECT} WHERE agent_id = $1"))
            .bind(agent)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every agent's stored settings.
    pub async fn all_scan_settings(&self) -> Result<Vec<ScanSettingsRow>> {
        Ok(sqlx::query_as(SELECT).fetch_all(&self.pool).await?)
    }

    /// Replaces the agent's settings (`ranges` as JSON).
    pub async fn put_scan_settings(
        &self,
        agent: &str,
        ranges: Option<&str>,
        interval_secs: Option<i64>,
        now: &str,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_scan_settings (agent_id, ranges, interval_secs, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agent_id) DO UPDATE SET ranges = $2, \
             interval_secs = $3, updated_at = $4, updated_by = $5",
        )
        .bind(agent)
        .bind(ranges)
        .bind(interval_secs)
        .bind(now)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the agent's answer (JSON) to its settings.
    pub async fn scan_settings_applied(&self, agent: &str, applied: &str, now: &str) -> Result<()> {
        sqlx::query(
            "UPDATE agent_scan_settings SET applied = $1, applied_at = $2 WHERE agent_id = $3",
        )
        .bind(applied)
        .bind(now)
        .bind(agent)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
