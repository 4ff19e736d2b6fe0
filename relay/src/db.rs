//! The relay's SQLite store: opening, migrations, and the queries the rest
//! of the relay uses. Runtime-checked queries keep builds free of a live DB.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::config::DataDir;
use crate::error::{RelayError, Result};
use crate::util::{now_rfc3339, random_id, unix_now};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub customer: String,
    pub public_key: String,
    pub hostname: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    pub id: i64,
    pub agent_id: String,
    pub address: String,
    pub name: Option<String>,
}

/// What redeeming an enrollment token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Ok { customer_id: i64, customer: String },
    Unknown,
    Expired,
    UsedUp { max_uses: i64 },
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

    pub async fn add_customer(&self, name: &str) -> Result<i64> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(RelayError::Invalid(
                "customer name must be 1..=200 characters".into(),
            ));
        }
        let r = sqlx::query("INSERT INTO customers (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await;
        inserted(r, || format!("customer {name:?} already exists"))
    }

    pub async fn customer_id(&self, name: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT id FROM customers WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| RelayError::NotFound(format!("no customer named {name:?}")))
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
            ids.push(self.customer_id(c).await?);
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

    pub async fn create_token(
        &self,
        secret_hash: &str,
        customer_id: i64,
        max_uses: i64,
        expires_at: i64,
        created_by: &str,
    ) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO enroll_tokens (secret_hash, customer_id, max_uses, expires_at, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(secret_hash)
        .bind(customer_id)
        .bind(max_uses)
        .bind(expires_at)
        .bind(now_rfc3339())
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// Redeems one use of a token and creates the agent, atomically: a token
    /// is never over-used by concurrent enrollments, and a failed insert
    /// does not burn a use.
    pub async fn enroll_agent(
        &self,
        secret_hash: &str,
        public_key: &str,
        hostname: &str,
    ) -> Result<(TokenCheck, Option<AgentRow>)> {
        // sqlx's transaction rolls back if dropped: a cancelled request
        // (client gone) cannot leave the database write-locked.
        let mut conn = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let res = async {
            let row = sqlx::query(
                "SELECT t.id, t.customer_id, t.max_uses, t.uses, t.expires_at, c.name
                 FROM enroll_tokens t JOIN customers c ON c.id = t.customer_id
                 WHERE t.secret_hash = ?",
            )
            .bind(secret_hash)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok((TokenCheck::Unknown, None));
            };
            let (tid, cid, max_uses, uses, exp, cname): (i64, i64, i64, i64, i64, String) = (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            );
            if exp <= unix_now() {
                return Ok((TokenCheck::Expired, None));
            }
            if uses >= max_uses {
                return Ok((TokenCheck::UsedUp { max_uses }, None));
            }
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM agents WHERE public_key = ?")
                    .bind(public_key)
                    .fetch_optional(&mut *conn)
                    .await?;
            if exists.is_some() {
                return Err(RelayError::Conflict(
                    "this public key is already enrolled".into(),
                ));
            }
            sqlx::query("UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?")
                .bind(tid)
                .execute(&mut *conn)
                .await?;
            let id = random_id("agt_");
            let created = now_rfc3339();
            sqlx::query(
                "INSERT INTO agents (id, name, customer_id, public_key, hostname, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(hostname)
            .bind(cid)
            .bind(public_key)
            .bind(hostname)
            .bind(&created)
            .execute(&mut *conn)
            .await?;
            let agent = AgentRow {
                id,
                name: hostname.to_string(),
                customer: cname.clone(),
                public_key: public_key.to_string(),
                hostname: hostname.to_string(),
                created_at: created,
                revoked_at: None,
                last_seen: None,
            };
            Ok((
                TokenCheck::Ok {
                    customer_id: cid,
                    customer: cname,
                },
                Some(agent),
            ))
        }
        .await;
        if matches!(res, Ok((TokenCheck::Ok { .. }, _))) {
            conn.commit().await?;
        } else {
            conn.rollback().await?;
        }
        res
    }

    fn agent_from_row(r: &sqlx::sqlite::SqliteRow) -> AgentRow {
        AgentRow {
            id: r.get("id"),
            name: r.get("name"),
            customer: r.get("customer"),
            public_key: r.get("public_key"),
            hostname: r.get("hostname"),
            created_at: r.get("created_at"),
            revoked_at: r.get("revoked_at"),
            last_seen: r.get("last_seen"),
        }
    }

    const AGENT_SELECT: &'static str = "SELECT a.id, a.name, c.name AS customer, a.public_key, a.hostname,
        a.created_at, a.revoked_at, a.last_seen FROM agents a JOIN customers c ON c.id = a.customer_id";

    pub async fn agent_by_key(&self, public_key: &str) -> Result<Option<AgentRow>> {
        let q = format!("{} WHERE a.public_key = ?", Self::AGENT_SELECT);
        let r = sqlx::query(&q)
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(Self::agent_from_row))
    }

    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        let q = format!("{} ORDER BY a.created_at", Self::AGENT_SELECT);
        let rows = sqlx::query(&q).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(Self::agent_from_row).collect())
    }

    /// Finds an agent by id, or by name when the name is unambiguous.
    pub async fn find_agent(&self, reference: &str) -> Result<AgentRow> {
        let q = format!("{} WHERE a.id = ? OR a.name = ?", Self::AGENT_SELECT);
        let rows = sqlx::query(&q)
            .bind(reference)
            .bind(reference)
            .fetch_all(&self.pool)
            .await?;
        let rows: Vec<AgentRow> = rows.iter().map(Self::agent_from_row).collect();
        if let Some(a) = rows.iter().find(|a| a.id == reference) {
            return Ok(a.clone());
        }
        match rows.len() {
            0 => Err(RelayError::NotFound(format!(
                "no agent with id or name {reference:?}"
            ))),
            1 => Ok(rows[0].clone()),
            _ => Err(RelayError::Invalid(format!(
                "{} agents are named {reference:?}; use the id: {}",
                rows.len(),
                rows.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub async fn revoke_agent(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE agents SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn touch_agent(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET last_seen = ? WHERE id = ?")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_device(
        &self,
        agent_id: &str,
        address: &str,
        name: Option<&str>,
    ) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO devices (agent_id, address, name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(agent_id)
        .bind(address)
        .bind(name)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await;
        inserted(r, || {
            format!("device {address} is already registered for this agent")
        })
    }

    pub async fn device_registered(&self, agent_id: &str, address: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE agent_id = ? AND address = ?")
                .bind(agent_id)
                .bind(address)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// A device with the customer it belongs to (through its agent).
    pub async fn device_target(
        &self,
        id: i64,
    ) -> Result<crate::services::web_sessions::DeviceTarget> {
        let r = sqlx::query(
            "SELECT d.id, d.name, d.address, d.agent_id, a.customer_id FROM devices d \
             JOIN agents a ON a.id = d.agent_id WHERE d.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| RelayError::NotFound(format!("no device {id}")))?;
        Ok(crate::services::web_sessions::DeviceTarget {
            id: r.get("id"),
            name: r.get("name"),
            address: r.get("address"),
            agent_id: r.get("agent_id"),
            customer_id: r.get("customer_id"),
        })
    }

    /// Devices with their customer, optionally only those of `customers`.
    pub async fn device_targets(
        &self,
        customers: Option<&[i64]>,
    ) -> Result<Vec<crate::services::web_sessions::DeviceTarget>> {
        let rows = sqlx::query(
            "SELECT d.id, d.name, d.address, d.agent_id, a.customer_id FROM devices d \
             JOIN agents a ON a.id = d.agent_id ORDER BY d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| crate::services::web_sessions::DeviceTarget {
                id: r.get("id"),
                name: r.get("name"),
                address: r.get("address"),
                agent_id: r.get("agent_id"),
                customer_id: r.get("customer_id"),
            })
            .filter(|d| customers.is_none_or(|c| c.contains(&d.customer_id)))
            .collect())
    }

    /// Records the certificate seen on a device's HTTPS port: returns when
    /// it was first seen, and the previous one if it changed.
    pub async fn note_device_cert(
        &self,
        device: i64,
        port: u16,
        sha256: &str,
    ) -> Result<(String, Option<String>)> {
        let now = now_rfc3339();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let old = sqlx::query(
            "SELECT cert_sha256, first_seen FROM device_tls WHERE device_id = ? AND port = ?",
        )
        .bind(device)
        .bind(i64::from(port))
        .fetch_optional(&mut *tx)
        .await?;
        let out = match old {
            Some(r) if r.get::<String, _>("cert_sha256") == sha256 => {
                sqlx::query("UPDATE device_tls SET last_seen = ? WHERE device_id = ? AND port = ?")
                    .bind(&now)
                    .bind(device)
                    .bind(i64::from(port))
                    .execute(&mut *tx)
                    .await?;
                (r.get("first_seen"), None)
            }
            Some(r) => {
                // Trust on first use, with notice: the new certificate is
                // recorded, the change is flagged by the caller.
                sqlx::query("UPDATE device_tls SET cert_sha256 = ?, first_seen = ?, last_seen = ? WHERE device_id = ? AND port = ?")
                    .bind(sha256)
                    .bind(&now)
                    .bind(&now)
                    .bind(device)
                    .bind(i64::from(port))
                    .execute(&mut *tx)
                    .await?;
                (now.clone(), Some(r.get("cert_sha256")))
            }
            None => {
                sqlx::query("INSERT INTO device_tls (device_id, port, cert_sha256, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)")
                    .bind(device)
                    .bind(i64::from(port))
                    .bind(sha256)
                    .bind(&now)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
                (now.clone(), None)
            }
        };
        tx.commit().await?;
        Ok(out)
    }
}
