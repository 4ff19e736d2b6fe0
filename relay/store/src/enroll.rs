//! Enrollment tokens, and redeeming one: a use counted and the agent
//! created in one transaction.

use crate::agents::AgentRow;
use crate::{Result, Store, StoreError};

/// What redeeming an enrollment token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Ok(AgentRow),
    Unknown,
    Expired,
    UsedUp { max_uses: i64 },
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct EnrollTokenRow {
    pub id: i64,
    pub customer: String,
    pub customer_id: i64,
    pub max_uses: i64,
    pub uses: i64,
    pub expires_at: i64,
    pub created_at: String,
    pub created_by: String,
}

/// A new agent, as the enrollment names it.
pub struct NewAgent<'a> {
    pub id: &'a str,
    pub public_key: &'a str,
    pub hostname: &'a str,
}

impl Store {
    pub async fn create_enroll_token(
        &self,
        secret_hash: &str,
        customer_id: i64,
        max_uses: i64,
        expires_at: i64,
        created_by: &str,
        now: &str,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO enroll_tokens (secret_hash, customer_id, max_uses, expires_at, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(secret_hash)
        .bind(customer_id)
        .bind(max_uses)
        .bind(expires_at)
        .bind(now)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn enroll_tokens(&self) -> Result<Vec<EnrollTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.id, c.name AS customer, t.customer_id, t.max_uses, t.uses, t.expires_at, \
             t.created_at, t.created_by FROM enroll_tokens t JOIN customers c ON c.id = t.customer_id \
             ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Redeems one use of the token and creates the agent, atomically: a
    /// token is never over-used by concurrent enrollments, and a refused
    /// or failed enrollment does not burn a use.
    pub async fn enroll_agent(
        &self,
        secret_hash: &str,
        agent: NewAgent<'_>,
        now: &str,
        now_unix: i64,
    ) -> Result<TokenCheck> {
        let mut tx = self.begin().await?;
        let row: Option<(i64, i64, i64, i64, i64, String)> = sqlx::query_as(
            "SELECT t.id, t.customer_id, t.max_uses, t.uses, t.expires_at, c.name \
             FROM enroll_tokens t JOIN customers c ON c.id = t.customer_id WHERE t.secret_hash = $1",
        )
        .bind(secret_hash)
        .fetch_optional(&mut *tx.tx)
        .await?;
        let Some((tid, cid, max_uses, uses, exp, customer)) = row else {
            return Ok(TokenCheck::Unknown);
        };
        if exp <= now_unix {
            return Ok(TokenCheck::Expired);
        }
        if uses >= max_uses {
            return Ok(TokenCheck::UsedUp { max_uses });
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM agents WHERE public_key = $1")
                .bind(agent.public_key)
                .fetch_optional(&mut *tx.tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(
                "this public key is already enrolled".into(),
            ));
        }
        sqlx::query("UPDATE enroll_tokens SET uses = uses + 1 WHERE id = $1")
            .bind(tid)
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query(
            "INSERT INTO agents (id, name, customer_id, public_key, hostname, created_at) \
             VALUES ($1, $2, $3, $4, $2, $5)",
        )
        .bind(agent.id)
        .bind(agent.hostname)
        .bind(cid)
        .bind(agent.public_key)
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(TokenCheck::Ok(AgentRow {
            id: agent.id.to_string(),
            name: agent.hostname.to_string(),
            customer_id: cid,
            customer,
            public_key: agent.public_key.to_string(),
            hostname: agent.hostname.to_string(),
            created_at: now.to_string(),
            revoked_at: None,
            last_seen: None,
        }))
    }
}
