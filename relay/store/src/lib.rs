//! `dwa-store`: the relay's store, and the only code of DWA that speaks
//! SQL. Services call typed methods on [`Store`] (autocommit) or on a
//! [`Tx`] (one write transaction); rows come back as plain structs. The
//! connection pool is private: nothing outside this crate can run a query.
//!
//! One module per aggregate, each adding its methods to [`Store`] and
//! [`Tx`]:
//!
//! - [`customers`] — customers.
//! - [`agents`] — enrolled agents (identity, revocation, last seen).
//! - [`devices`] — devices, their inventory columns and TLS certificates.
//! - [`enroll`] — enrollment tokens and redeeming them.
//! - [`users`] — users, their customers, two-factor and recovery codes.
//! - [`grants`] — everything a user holds — log-in sessions, API tokens,
//!   web sessions, raw tunnels, pending single-sign-on log-ins.
//! - [`readings`] — uploaded telemetry items, readings and scans.
//! - [`alerts`] — alert rules and alerts.
//! - [`outbox`] — webhook deliveries.
//! - [`settings`] — scan settings per agent.
//! - [`audit`] — the append-only, hash-chained audit log.
//!
//! Timestamps are passed in by the caller (services own the clock):
//! RFC 3339 UTC text where the schema keeps text, unix seconds where it
//! keeps numbers. Queries use `$N` placeholders so the same text serves a
//! second backend.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

pub mod agents;
pub mod alerts;
pub mod audit;
pub mod billing;
pub mod customers;
pub mod devices;
pub mod enroll;
pub mod grants;
pub mod mail_outbox;
pub mod outbox;
pub mod readings;
pub mod settings;
pub mod users;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already holds this value; the text says which.
    #[error("{0}")]
    Conflict(String),
    /// A row the caller named does not exist; the text says which.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be answered as asked (an ambiguous name).
    #[error("{0}")]
    Invalid(String),
    /// Stored data the relay cannot read back (a schema or code mismatch).
    #[error("stored data: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The new row's id, or `Conflict(conflict())` on a unique violation.
fn unique<T>(r: Result<T, sqlx::Error>, conflict: impl FnOnce() -> String) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Conflict(conflict()))
        }
        Err(e) => Err(e.into()),
    }
}

/// The relay's database. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    audit_head: audit::Head,
    observer: Option<Arc<dyn Observer>>,
}

/// Told how long store work took (the relay's metrics). Write
/// transactions are the store's one choke point: every write that is not a
/// single statement goes through [`Store::begin`], and waits there for
/// SQLite's write lock.
pub trait Observer: Send + Sync + std::fmt::Debug {
    fn observe(&self, op: Op, took: Duration);
}

/// What an [`Observer`] is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write transaction, from `begin` (its wait for the write lock
    /// included) to the end of its commit.
    Transaction,
}

/// One write transaction. Dropped without [`Tx::commit`], it rolls back:
/// a cancelled request cannot leave half of its writes, nor the database
/// write-locked.
pub struct Tx {
    tx: sqlx::Transaction<'static, Sqlite>,
    started: Instant,
    observer: Option<Arc<dyn Observer>>,
}

impl Store {
    /// Opens (with `create`, creates) the SQLite database at `path` and
    /// brings its schema up to date.
    pub async fn open_sqlite(path: &Path, create: bool) -> Result<Self> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit is on disk before it is acknowledged: an audit
            // record reported written survives a power cut.
            .synchronous(SqliteSynchronous::Full)
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
        Ok(Self {
            pool,
            audit_head: audit::Head::default(),
            observer: None,
        })
    }

    /// This store, telling `o` how long its work takes (set once, before
    /// the store is cloned).
    pub fn with_observer(mut self, o: Arc<dyn Observer>) -> Self {
        self.observer = Some(o);
        self
    }

    /// Starts a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so its reads see what its writes change.
    pub async fn begin(&self) -> Result<Tx> {
        let started = Instant::now();
        Ok(Tx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            started,
            observer: self.observer.clone(),
        })
    }

    /// Writes a consistent copy of the database to `path` (which must not
    /// exist) while others keep writing: SQLite's `VACUUM INTO` reads one
    /// snapshot. A plain file copy of a database in WAL mode is not safe.
    pub async fn backup_to(&self, path: &Path) -> Result<()> {
        sqlx::query("VACUUM INTO $1")
            .bind(path.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        let r = self.tx.commit().await;
        if let Some(o) = &self.observer {
            o.observe(Op::Transaction, self.started.elapsed());
        }
        Ok(r?)
    }
}

#[cfg(feature = "test-support")]
pub mod testing;
