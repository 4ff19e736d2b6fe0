//! Users: accounts, the customers each is assigned to, two-factor and
//! recovery codes.

use crate::{Result, Store};

/// What deciding who a caller is needs of a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserAuthRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub active: bool,
    pub locked_at: Option<String>,
}

impl Store {
    pub async fn user_auth(&self, id: i64) -> Result<Option<UserAuthRow>> {
        Ok(
            sqlx::query_as("SELECT id, username, role, active, locked_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn user_id_by_name(&self, username: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The customers a user is assigned to (ids, ascending).
    pub async fn user_customers(&self, id: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT customer_id FROM user_customers WHERE user_id = $1 ORDER BY customer_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Notes a log-in (single sign-on included): the inactivity clock
    /// starts again.
    pub async fn note_login(&self, id: i64, now: &str, now_unix: i64) -> Result<()> {
        sqlx::query(
            "UPDATE users SET last_login = $1, last_active = $2, failed_logins = 0 WHERE id = $3",
        )
        .bind(now)
        .bind(now_unix)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
