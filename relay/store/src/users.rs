//! Users: accounts, the customers each is assigned to, two-factor and
//! recovery codes.

use crate::{Result, Store};

/// An active account unused since `used` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StaleUser {
    pub id: i64,
    pub username: String,
    pub used: i64,
}

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

    /// Whether the user has two-factor enrolled (false for no such user).
    pub async fn has_totp(&self, id: i64) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT totp_secret IS NOT NULL FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(false),
        )
    }

    /// Active accounts last used (last log-in, else creation or
    /// reactivation) before `cutoff` (unix seconds).
    pub async fn stale_users(&self, cutoff: i64) -> Result<Vec<StaleUser>> {
        Ok(sqlx::query_as(
            "SELECT id, username, COALESCE(last_active, CAST(strftime('%s', created_at) AS INTEGER)) AS used
             FROM users WHERE active = 1 AND used < $1 ORDER BY id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deactivates an active account at `now`; false when it was not
    /// active (already deactivated, or gone).
    pub async fn deactivate_user(&self, id: i64, now: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE users SET active = 0, deactivated_at = $1 WHERE id = $2 AND active = 1",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn add(store: &Store, name: &str, created_at: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at)
             VALUES ($1, 'x', 'viewer', $2) RETURNING id",
        )
        .bind(name)
        .bind(created_at)
        .fetch_one(&store.pool)
        .await
        .expect("insert user")
    }

    #[tokio::test]
    async fn unused_accounts_are_found_after_the_limit_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&tmp.path().join("t.db"), true)
            .await
            .expect("open");
        let day = 86_400i64;
        let start = 2_000_000_000i64;
        let old = add(&store, "old", "2020-01-01T00:00:00Z").await;
        sqlx::query("UPDATE users SET last_active = $1 WHERE id = $2")
            .bind(start)
            .bind(old)
            .execute(&store.pool)
            .await
            .expect("last_active");
        // The last use counts, not the creation.
        assert!(store.stale_users(start - day).await.expect("q").is_empty());
        let s = store.stale_users(start + day).await.expect("q");
        assert_eq!(
            s,
            vec![StaleUser {
                id: old,
                username: "old".into(),
                used: start
            }]
        );
        // Never logged in: the creation time counts (2033-05-18 = start).
        let fresh = add(&store, "new", "2033-05-18T03:33:20Z").await;
        let ids = |v: Vec<StaleUser>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.stale_users(start).await.expect("q")),
            Vec::<i64>::new()
        );
        assert_eq!(
            ids(store.stale_users(start + 1).await.expect("q")),
            vec![old, fresh]
        );
        // Deactivated accounts are not found again, and deactivate once.
        assert!(store
            .deactivate_user(old, "2033-06-01T00:00:00Z")
            .await
            .expect("d"));
        assert!(!store
            .deactivate_user(old, "2033-06-01T00:00:00Z")
            .await
            .expect("d"));
        assert_eq!(
            ids(store.stale_users(start + day).await.expect("q")),
            vec![fresh]
        );
    }
}
