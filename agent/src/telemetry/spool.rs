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
//!
//! Encrypted at rest: each item's JSON is sealed with AES-256-GCM (the
//! `aes-gcm` crate) under a random 96-bit nonce, with the item's id as
//! associated data (a sealed payload cannot be moved to another row). The
//! key is 32 random bytes in a 0600 file beside the agent's key
//! (`spool.key_file`, hex). Per-item encryption rather than an encrypted
//! database (SQLCipher): the agent keeps the sqlx SQLite it already links
//! and needs no second SQLite build with its own crypto; what stays in the
//! clear is only the random item ids, the sizes and the counters, none of
//! which names a device. A key check (a sealed constant in `meta`) tells a
//! wrong or lost key from a damaged item: the spool is then moved aside
//! (its readings cannot be read by anyone without that key) and a fresh
//! one is started, with one clear log line. A spool written before
//! encryption (plaintext `json` column) is sealed in place on first open,
//! in one transaction, then vacuumed so no plaintext page survives in the
//! file or its write-ahead log.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
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

#[derive(Clone)]
pub struct Spool {
    pool: SqlitePool,
    limits: Limits,
    key: Arc<SpoolKey>,
    opened: Opened,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("limits", &self.limits)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

/// What opening found, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext items sealed by this open (a spool from before encryption).
    pub migrated: u64,
    /// The spool could not be decrypted with the key (lost or wrong key):
    /// it was moved here and a fresh spool started.
    pub moved_aside: Option<PathBuf>,
}

/// What to do when the key does not open the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadKey {
    /// `dwa-agent run`: move the spool aside, start a fresh one.
    StartFresh,
    /// Read-only callers (`spool status`): report the error, touch nothing.
    Fail,
}

/// The spool's AES-256-GCM key.
pub struct SpoolKey(Aes256Gcm);

/// Nonce length of AES-GCM (96 bits).
const NONCE: usize = 12;
/// Sealed in `meta` to check the key on open.
const KEY_CHECK: &[u8] = b"dwa-spool-key-check-v1";

impl SpoolKey {
    fn from_bytes(b: &[u8; 32]) -> SpoolKey {
        SpoolKey(Aes256Gcm::new(&(*b).into()))
    }

    /// Reads the key file (64 hex digits). `create`: make a new random key
    /// (0600, written to a temporary file and renamed) when there is none.
    pub fn load(path: &Path, create: bool) -> Result<SpoolKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).ok();
                let key: Option<[u8; 32]> = bytes.and_then(|b| b.try_into().ok());
                match key {
                    Some(k) => Ok(SpoolKey::from_bytes(&k)),
                    None => Err(AgentError::Spool(format!(
                        "{}: not a spool key (64 hex digits expected); \
                         move it away to start a fresh spool",
                        path.display()
                    ))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let k: [u8; 32] = rand::random();
                write_private(path, format!("{}\n", hex::encode(k)).as_bytes())?;
                Ok(SpoolKey::from_bytes(&k))
            }
            Err(e) => Err(AgentError::file(path, e)),
        }
    }

    /// nonce ‖ ciphertext+tag of `plain`, bound to `id`.
    fn seal(&self, id: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .0
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| AgentError::Spool("encryption failed".into()))?;
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, id: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().ok()?;
        self.0
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .ok()
    }
}

/// Writes `data` to `path` with mode 0600 (temporary file, then rename).
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| AgentError::file(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| AgentError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AgentError::file(path, e))
}

fn db_err(e: sqlx::Error) -> AgentError {
    AgentError::Spool(e.to_string())
}

const SCHEMA: &[&str] = &[
    // sealed: nonce ‖ AES-256-GCM(json); bytes: length of the JSON.
    "CREATE TABLE IF NOT EXISTS items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        sealed BLOB NOT NULL,
        bytes INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )",
    "INSERT OR IGNORE INTO counters (name, value) VALUES
        ('spooled', 0), ('acknowledged', 0), ('dropped', 0)",
];

/// How long opening the spool retries while another process holds it.
const OPEN_RETRY: Duration = Duration::from_secs(5);

async fn connect(path: &Path) -> Result<SqlitePool> {
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
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| AgentError::Spool(format!("{}: {e}", path.display())))
}

async fn has_column(pool: &SqlitePool, table: &str, column: &str) -> Result<bool> {
    let rows = sqlx::query(&format!("PRAGMA table_info({table})"))
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
    Ok(rows.iter().any(|r| r.get::<String, _>("name") == column))
}

/// Whether `key` opens the spool: `Some(true)` it does (the check is
/// written when missing), `Some(false)` it does not.
async fn check_key(pool: &SqlitePool, key: &SpoolKey) -> Result<bool> {
    let row = sqlx::query("SELECT value FROM meta WHERE name = 'key_check'")
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
    match row {
        Some(r) => {
            let sealed: Vec<u8> = r.get("value");
            Ok(key.open("key_check", &sealed).as_deref() == Some(KEY_CHECK))
        }
        None => {
            // A spool with sealed items but no check was not written by
            // this code: let the first item decide.
            let first = sqlx::query("SELECT id, sealed FROM items ORDER BY seq LIMIT 1")
                .fetch_optional(pool)
                .await
                .map_err(db_err)?;
            if let Some(r) = first {
                let (id, sealed): (String, Vec<u8>) = (r.get("id"), r.get("sealed"));
                if key.open(&id, &sealed).is_none() {
                    return Ok(false);
                }
            }
            // Another process (`spool status` while `run` starts) may
            // write the check at the same moment: keep whichever came
            // first, and check the key against it.
            sqlx::query(
                "INSERT INTO meta (name, value) VALUES ('key_check', ?) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(key.seal("key_check", KEY_CHECK)?)
            .execute(pool)
            .await
            .map_err(db_err)?;
            let sealed: Vec<u8> =
                sqlx::query_scalar("SELECT value FROM meta WHERE name = 'key_check'")
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
            Ok(key.open("key_check", &sealed).as_deref() == Some(KEY_CHECK))
        }
    }
}

/// Seals every item of a spool written before encryption, in one
/// transaction, then scrubs the freed plaintext pages.
async fn migrate_plaintext(pool: &SqlitePool, key: &SpoolKey) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    sqlx::query(
        "CREATE TABLE items_sealed (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            sealed BLOB NOT NULL,
            bytes INTEGER NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    let rows = sqlx::query("SELECT seq, id, json FROM items ORDER BY seq")
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
    let n = rows.len() as u64;
    for r in rows {
        let (seq, id, json): (i64, String, String) = (r.get("seq"), r.get("id"), r.get("json"));
        sqlx::query("INSERT INTO items_sealed (seq, id, sealed, bytes) VALUES (?, ?, ?, ?)")
            .bind(seq)
            .bind(&id)
            .bind(key.seal(&id, json.as_bytes())?)
            .bind(json.len() as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    for stmt in [
        "DROP TABLE items",
        "ALTER TABLE items_sealed RENAME TO items",
    ] {
        sqlx::query(stmt).execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    scrub(pool).await?;
    Ok(n)
}

/// Rewrites the file without free pages and empties the WAL, so that no
/// plaintext page of a migrated spool stays on disk.
async fn scrub(pool: &SqlitePool) -> Result<()> {
    for stmt in ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"] {
        sqlx::query(stmt).execute(pool).await.map_err(db_err)?;
    }
    Ok(())
}

/// `spool.db` → `spool.db.undecryptable-<unix seconds>`, with its WAL and
/// shared-memory files.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".undecryptable-{secs}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| AgentError::file(path, e))?;
    for ext in ["-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(ext);
        let mut to = aside.as_os_str().to_owned();
        to.push(ext);
        // Absent after a clean close: nothing to move.
        let _ = std::fs::rename(PathBuf::from(from), PathBuf::from(to));
    }
    Ok(aside)
}

impl Spool {
    /// Opens (creating when missing) the spool at `path`, sealed with the
    /// key at `key_path` (created when missing, if `on_bad_key` is
    /// `StartFresh`). See the module docs for a wrong or lost key and for
    /// spools from before encryption.
    pub async fn open(
        path: &Path,
        key_path: &Path,
        limits: Limits,
        on_bad_key: OnBadKey,
    ) -> Result<Spool> {
        // Another process (`dwa-agent spool status`) may hold the file's
        // lock while this one creates the schema; SQLite then answers
        // "database is locked" at once rather than waiting. Try again for
        // a few seconds before giving up on the spool.
        let deadline = std::time::Instant::now() + OPEN_RETRY;
        loop {
            match Self::open_once(path, key_path, limits, on_bad_key).await {
                Err(AgentError::Spool(e))
                    if e.contains("database is locked") && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!("spool busy while opening ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(
        path: &Path,
        key_path: &Path,
        limits: Limits,
        on_bad_key: OnBadKey,
    ) -> Result<Spool> {
        let key = SpoolKey::load(key_path, on_bad_key == OnBadKey::StartFresh)?;
        let mut opened = Opened::default();
        let mut pool = connect(path).await?;
        loop {
            let plaintext = has_column(&pool, "items", "json").await?
                && !has_column(&pool, "items", "sealed").await?;
            if plaintext {
                if on_bad_key == OnBadKey::Fail {
                    // Read-only callers count items without migrating.
                    break;
                }
                for stmt in &SCHEMA[1..] {
                    sqlx::query(stmt).execute(&pool).await.map_err(db_err)?;
                }
                opened.migrated = migrate_plaintext(&pool, &key).await?;
                tracing::info!(
                    items = opened.migrated,
                    "telemetry spool {} encrypted (it was written by an older agent in clear)",
                    path.display()
                );
            }
            for stmt in SCHEMA {
                sqlx::query(stmt).execute(&pool).await.map_err(db_err)?;
            }
            if check_key(&pool, &key).await? {
                break;
            }
            let why = format!(
                "telemetry spool {} cannot be decrypted with the key in {} (the key was lost or \
                 replaced)",
                path.display(),
                key_path.display()
            );
            if on_bad_key == OnBadKey::Fail || opened.moved_aside.is_some() {
                pool.close().await;
                return Err(AgentError::Spool(why));
            }
            pool.close().await;
            let aside = move_aside(path)?;
            tracing::error!(
                "{why}: moved to {} and starting a fresh spool; the readings in it cannot be \
                 uploaded without that key",
                aside.display()
            );
            opened.moved_aside = Some(aside);
            pool = connect(path).await?;
        }
        Ok(Spool {
            pool,
            limits,
            key: Arc::new(key),
            opened,
        })
    }

    /// What opening did (migration, a spool moved aside).
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Stores `items` in one transaction, then drops the oldest items while
    /// the spool is over its limits. Returns how many were dropped. An item
    /// whose id is already spooled is ignored.
    pub async fn push(&self, items: &[IngestItem]) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let mut added = 0i64;
        for item in items {
            let json = serde_json::to_string(item).map_err(|e| AgentError::Spool(e.to_string()))?;
            let sealed = self.key.seal(item.id(), json.as_bytes())?;
            let r = sqlx::query("INSERT OR IGNORE INTO items (id, sealed, bytes) VALUES (?, ?, ?)")
                .bind(item.id())
                .bind(sealed)
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
    /// oversized item) `max_bytes` of JSON. An item that does not decrypt
    /// (damaged on disk: the key itself was checked at open) is dropped
    /// with a log line and counted as dropped, so it cannot block the
    /// items behind it.
    pub async fn peek(&self, max_items: usize, max_bytes: usize) -> Result<Vec<Spooled>> {
        let rows = sqlx::query("SELECT id, sealed, bytes FROM items ORDER BY seq LIMIT ?")
            .bind(max_items as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let mut total = 0usize;
        for row in rows {
            let bytes: i64 = row.get("bytes");
            total += bytes as usize + 1;
            if total > max_bytes && !out.is_empty() {
                break;
            }
            let id: String = row.get("id");
            let sealed: Vec<u8> = row.get("sealed");
            match self
                .key
                .open(&id, &sealed)
                .and_then(|p| String::from_utf8(p).ok())
            {
                Some(json) => out.push(Spooled { id, json }),
                None => damaged.push(id),
            }
        }
        if !damaged.is_empty() {
            tracing::error!(
                items = damaged.len(),
                "spooled items that do not decrypt (damaged on disk) dropped"
            );
            let mut tx = self.pool.begin().await.map_err(db_err)?;
            for id in &damaged {
                sqlx::query("DELETE FROM items WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            bump(&mut tx, "dropped", damaged.len() as i64).await?;
            tx.commit().await.map_err(db_err)?;
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

    async fn open(path: &Path, limits: Limits) -> Result<Spool> {
        Spool::open(
            path,
            &path.with_extension("key"),
            limits,
            OnBadKey::StartFresh,
        )
        .await
    }

    const ROOMY: Limits = Limits {
        max_items: 1000,
        max_bytes: 1 << 30,
    };

    /// `dwa-agent spool status` may open the spool while `run` is
    /// creating it: both find no key check and write one; neither may
    /// fail, and both accept the key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_writing_the_key_check_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let key_path = path.with_extension("key");
        drop(open(&path, ROOMY).await.unwrap());
        let key = SpoolKey::load(&key_path, false).unwrap();
        let (a, b) = (connect(&path).await.unwrap(), connect(&path).await.unwrap());
        for _ in 0..20 {
            sqlx::query("DELETE FROM meta WHERE name = 'key_check'")
                .execute(&a)
                .await
                .unwrap();
            let (x, y) = tokio::join!(check_key(&a, &key), check_key(&b, &key));
            assert!(x.unwrap() && y.unwrap());
        }
    }

    #[tokio::test]
    async fn items_survive_reopening_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        let s = open(&path, ROOMY).await.unwrap();
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

        let s = open(&path, ROOMY).await.unwrap();
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
        let s = open(&dir.path().join("s.db"), ROOMY).await.unwrap();
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
        let s = open(&dir.path().join("s.db"), limits).await.unwrap();
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
        let s = open(&dir.path().join("b.db"), limits).await.unwrap();
        assert_eq!(
            s.push(&[reading("x"), reading("y"), reading("z")])
                .await
                .unwrap(),
            1
        );
        assert_eq!(s.stats().await.unwrap().pending, 2);
    }
}
