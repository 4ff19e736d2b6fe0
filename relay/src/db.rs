//! Transitional: the queries not yet moved into `dwa-store`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::config::DataDir;
use crate::error::{RelayError, Result};
use crate::util::now_rfc3339;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./store/migrations/sqlite");

/// The new row's id, or a clear conflict when a unique key already exists.
fn inserted(
    r: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
    conflict: impl FnOnce() -> String,
) -> Result<i64> {
    match r {
        Ok(r) => Ok(r.last_insert_rowid()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(RelayError::Conflict(conflict()))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Clone, Debug)]
pub struct Db {
    pub pool: SqlitePool,
}

impl Db {
    pub async fn open(dir: &DataDir, create: bool) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&dir.db_url())?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // CLI commands and the server share the file.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file does not go stale: skip the ping per checkout.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn add_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        customers: &[String],
    ) -> Result<i64> {
        let mut ids = vec![];
        for c in customers {
            let id: i64 = sqlx::query_scalar("SELECT id FROM customers WHERE name = ?")
                .bind(c)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| RelayError::NotFound(format!("no customer named {c:?}")))?;
            ids.push(id);
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await;
        let id = inserted(r, || format!("user {username:?} already exists"))?;
        for cid in ids {
            sqlx::query("INSERT INTO user_customers (user_id, customer_id) VALUES (?, ?)")
                .bind(id)
                .bind(cid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }
}
