//! The telemetry spool: every reading is on disk before it is uploaded and
//! leaves only when the relay has acknowledged it.
//!
//! One SQLite file (WAL, `synchronous = FULL`): a scan's items go in with one
//! transaction, so a kill -9 leaves either all of them or none; an
//! acknowledged batch leaves with one transaction too. Items keep their
//! serialized JSON, so uploading does not re-encode them, and their ids were
//! chosen when spooled, so a batch re-sent after a crash is recognised by the
//! relay (nothing duplicated).
//!
//! Bounded by item count and bytes. Policy when full: the oldest items are
//! dropped first (the newest state of a printer matters most to a dealer;
//! meter totals are cumulative, so a later reading still carries the count),
//! each drop is counted in `dropped` and logged.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use dwa_proto::telemetry::IngestItem;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::error::{AgentError, Result};

/// Limits of the spool (`[spool]` in agent.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_items: u64,
    pub max_bytes: u64,
}

/// One spooled item, as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub id: String,
    pub json: String,
}

/// What the spool holds, and its lifetime counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    pub pending: u64,
    pub pending_bytes: u64,
    /// Items ever spooled (readings and scan ends).
    pub spooled: u64,
    /// Items the relay acknowledged (accepted or rejected).
    pub acknowledged: u64,
    /// Items dropped because the spool was full.
    pub dropped: u64,
}

#[derive(Debug, Clone)]
pub struct Spool {
    pool: SqlitePool,
    limits: Limits,
}

fn db_err(e: sqlx::Error) -> AgentError {
    AgentError::Spool(e.to_string())
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        json TEXT NOT NULL,
        bytes INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )",
    "INSERT OR IGNORE INTO counters (name, value) VALUES
        ('spooled', 0), ('acknowledged', 0), ('dropped', 0)",
];

impl Spool {
    /// Opens (creating when missing) the spool at `path`.
    pub async fn open(path: &Path, limits: Limits) -> Result<Spool> {
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed scan survives a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // One connection: the agent is the only writer, and a single
        // connection serialises push and remove without extra locking.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| AgentError::Spool(format!("{}: {e}", path.display())))?;
        for stmt in SCHEMA {
            sqlx::query(stmt).execute(&pool).await.map_err(db_err)?;
        }
        Ok(Spool { pool, limits })
    }

    /// Stores `items` in one transaction, then drops the oldest items while
    /// the spool is over its limits. Returns how many were dropped. An item
    /// whose id is already spooled is ignored.
    pub async fn push(&self, items: &[IngestItem]) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut added = 0i64;
        for item in items {
            let json = serde_json::to_string(item).map_err(|e| AgentError::Spool(e.to_string()))?;
            let r = sqlx::query("INSERT OR IGNORE INTO items (id, json, bytes) VALUES (?, ?, ?)")
                .bind(item.id())
                .bind(&json)
                .bind(json.len() as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            added += r.rows_affected() as i64;
        }
        bump(&mut tx, "spooled", added).await?;
        let dropped = evict(&mut tx, self.limits).await?;
        tx.commit().await.map_err(db_err)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "telemetry spool full ({} items / {} bytes): oldest items dropped",
                self.limits.max_items,
                self.limits.max_bytes
            );
        }
        Ok(dropped)
    }

    /// The oldest items, at most `max_items` and (except for a single
    /// oversized item) `max_bytes` of JSON.
    pub async fn peek(&self, max_items: usize, max_bytes: usize) -> Result<Vec<Spooled>> {
        let rows = sqlx::query("SELECT id, json, bytes FROM items ORDER BY seq LIMIT ?")
            .bind(max_items as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for row in rows {
            let bytes: i64 = row.get("bytes");
            total += bytes as usize + 1;
            if total > max_bytes && !out.is_empty() {
                break;
            }
            out.push(Spooled {
                id: row.get("id"),
                json: row.get("json"),
            });
        }
        Ok(out)
    }

    /// Deletes acknowledged items (one transaction); returns how many went.
    pub async fn remove(&self, ids: &[String]) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut n = 0i64;
        for id in ids {
            let r = sqlx::query("DELETE FROM items WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            n += r.rows_affected() as i64;
        }
        bump(&mut tx, "acknowledged", n).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n as u64)
    }

    pub async fn stats(&self) -> Result<Stats> {
        let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM items")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let counters = sqlx::query("SELECT name, value FROM counters")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let get = |name: &str| {
            counters
                .iter()
                .find(|r| r.get::<String, _>("name") == name)
                .map(|r| r.get::<i64, _>("value") as u64)
                .unwrap_or(0)
        };
        Ok(Stats {
            pending: row.get::<i64, _>("n") as u64,
            pending_bytes: row.get::<i64, _>("b") as u64,
            spooled: get("spooled"),
            acknowledged: get("acknowledged"),
            dropped: get("dropped"),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn bump(tx: &mut sqlx::SqliteConnection, name: &str, by: i64) -> Result<()> {
    if by != 0 {
        sqlx::query("UPDATE counters SET value = value + ? WHERE name = ?")
            .bind(by)
            .bind(name)
            .execute(tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Drops the oldest items until the spool is within `limits`.
async fn evict(tx: &mut sqlx::SqliteConnection, limits: Limits) -> Result<u64> {
    let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM items")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
    let (mut n, mut b) = (row.get::<i64, _>("n") as u64, row.get::<i64, _>("b") as u64);
    if n <= limits.max_items && b <= limits.max_bytes {
        return Ok(0);
    }
    let mut cutoff = None;
    let mut dropped = 0u64;
    // Walk from the oldest in pages until enough is freed.
    let mut after = 0i64;
    'outer: loop {
        let page =
            sqlx::query("SELECT seq, bytes FROM items WHERE seq > ? ORDER BY seq LIMIT 1000")
                .bind(after)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        if page.is_empty() {
            break;
        }
        for r in page {
            if n <= limits.max_items && b <= limits.max_bytes {
                break 'outer;
            }
            let seq: i64 = r.get("seq");
            n -= 1;
            b = b.saturating_sub(r.get::<i64, _>("bytes") as u64);
            dropped += 1;
            cutoff = Some(seq);
            after = seq;
        }
    }
    if let Some(seq) = cutoff {
        sqlx::query("DELETE FROM items WHERE seq <= ?")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        bump(tx, "dropped", dropped as i64).await?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_proto::telemetry::{DeviceRecord, Reading, ScanDone};

    fn reading(id: &str) -> IngestItem {
        IngestItem::Reading(Reading {
            id: id.into(),
            scan: "s".into(),
            taken_at: "2026-01-01T00:00:00Z".into(),
            record: DeviceRecord {
                address: "10.0.0.1".into(),
                ..Default::default()
            },
        })
    }

    const ROOMY: Limits = Limits {
        max_items: 1000,
        max_bytes: 1 << 30,
    };

    #[tokio::test]
    async fn items_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let s = Spool::open(&path, ROOMY).await.unwrap();
        let done = IngestItem::ScanDone(ScanDone {
            id: "s".into(),
            started_at: "a".into(),
            finished_at: "b".into(),
            trigger: "schedule".into(),
            ranges: vec![],
            addresses: 1,
            found: 2,
        });
        s.push(&[reading("r1"), reading("r2"), done]).await.unwrap();
        // The same ids again (a retried push) add nothing.
        s.push(&[reading("r1")]).await.unwrap();
        s.close().await;

        let s = Spool::open(&path, ROOMY).await.unwrap();
        let items = s.peek(10, 1 << 20).await.unwrap();
        let ids: Vec<_> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "s"], "oldest first, each once");
        let back: IngestItem = serde_json::from_str(&items[2].json).unwrap();
        assert!(matches!(back, IngestItem::ScanDone(_)));

        assert_eq!(s.remove(&["r1".into(), "nope".into()]).await.unwrap(), 1);
        let st = s.stats().await.unwrap();
        assert_eq!(
            (st.pending, st.spooled, st.acknowledged, st.dropped),
            (2, 3, 1, 0)
        );
        assert_eq!(s.peek(1, 1 << 20).await.unwrap()[0].id, "r2");
    }

    #[tokio::test]
    async fn peek_respects_the_byte_budget_but_always_returns_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(&dir.path().join("s.db"), ROOMY).await.unwrap();
        s.push(&[reading("a"), reading("b"), reading("c")])
            .await
            .unwrap();
        let one = s.peek(10, 10).await.unwrap();
        assert_eq!(
            one.len(),
            1,
            "an item larger than the budget still goes alone"
        );
        let size = one[0].json.len() + 1;
        assert_eq!(s.peek(10, 2 * size).await.unwrap().len(), 2);
        assert_eq!(s.peek(2, 1 << 20).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_items: 3,
            max_bytes: 1 << 30,
        };
        let s = Spool::open(&dir.path().join("s.db"), limits).await.unwrap();
        s.push(&[reading("1"), reading("2")]).await.unwrap();
        assert_eq!(
            s.push(&[reading("3"), reading("4"), reading("5")])
                .await
                .unwrap(),
            2
        );
        let ids: Vec<_> = s
            .peek(10, 1 << 20)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["3", "4", "5"]);
        assert_eq!(s.stats().await.unwrap().dropped, 2);

        // The byte bound too.
        let size = s.peek(1, 1 << 20).await.unwrap()[0].json.len() as u64;
        let limits = Limits {
            max_items: 100,
            max_bytes: 2 * size,
        };
        let s = Spool::open(&dir.path().join("b.db"), limits).await.unwrap();
        assert_eq!(
            s.push(&[reading("x"), reading("y"), reading("z")])
                .await
                .unwrap(),
            1
        );
        assert_eq!(s.stats().await.unwrap().pending, 2);
    }
}
