//! The telemetry spool is encrypted at rest: a copy of its files shows no
//! serial, address or counter; a lost or wrong key gives a clear error and
//! a fresh spool (the old one moved aside), never a crash; a spool written
//! in clear by an older agent is sealed on first open with nothing lost.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use dwa_agent::telemetry::spool::{Limits, OnBadKey, Spool};
use dwa_proto::telemetry::{Counters, DeviceRecord, IngestItem, Reading};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions as _;

const SERIAL: &str = "CNBSECRET7731";
const ADDRESS: &str = "10.77.31.9";
const TOTAL: u64 = 86_420_317;

const LIMITS: Limits = Limits {
    max_items: 1000,
    max_bytes: 1 << 30,
};

fn reading(id: &str) -> IngestItem {
    IngestItem::Reading(Reading {
        id: id.into(),
        scan: "5ca9".into(),
        taken_at: "2026-12-01T10:00:00Z".into(),
        record: DeviceRecord {
            address: ADDRESS.into(),
            serial: Some(SERIAL.into()),
            counters: Counters {
                total: Some(TOTAL),
                ..Default::default()
            },
            ..Default::default()
        },
    })
}

/// Every file of the spool (database, WAL, shared memory), concatenated.
fn spool_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for ext in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(ext);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_nothing_readable(bytes: &[u8], what: &str) {
    for secret in [SERIAL, ADDRESS, &TOTAL.to_string()] {
        assert!(
            !contains(bytes, secret),
            "{what}: {secret} readable in the spool file"
        );
    }
}

#[tokio::test]
async fn a_copy_of_the_spool_reveals_no_serial_address_or_counter() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (dir.path().join("spool.db"), dir.path().join("spool_key"));
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    s.push(&[reading("r1"), reading("r2")]).await.unwrap();
    // While open (the WAL holds the pages) and after a clean close.
    let copy = dir.path().join("copy.db");
    std::fs::write(&copy, spool_bytes(&db)).unwrap();
    assert_nothing_readable(&std::fs::read(&copy).unwrap(), "open spool");
    s.close().await;
    assert_nothing_readable(&spool_bytes(&db), "closed spool");

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);

    // The same key reads every item back.
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    let items = s.peek(10, 1 << 20).await.unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0].json.contains(SERIAL), "{}", items[0].json);
    let back: IngestItem = serde_json::from_str(&items[1].json).unwrap();
    assert_eq!(back, reading("r2"));
    assert_eq!(s.opened().moved_aside, None);
}

#[tokio::test]
async fn a_wrong_or_lost_key_starts_a_fresh_spool_and_keeps_the_old_one_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (dir.path().join("spool.db"), dir.path().join("spool_key"));
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    s.push(&[reading("r1")]).await.unwrap();
    s.close().await;

    // Another key: `spool status` (read-only) says so and changes nothing.
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = Spool::open(&db, &key, LIMITS, OnBadKey::Fail)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be decrypted") && err.contains("spool_key"),
        "{err}"
    );
    assert!(db.exists());

    // `run`: a fresh spool, the old one moved aside, whole.
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    let aside = s.opened().moved_aside.clone().expect("moved aside");
    assert!(aside.exists(), "{}", aside.display());
    assert!(aside.to_string_lossy().contains("undecryptable"));
    assert_eq!(s.stats().await.unwrap().pending, 0);
    s.push(&[reading("r2")]).await.unwrap();
    assert_eq!(s.peek(10, 1 << 20).await.unwrap().len(), 1);
    s.close().await;

    // The key file lost: a new key, and again a fresh spool.
    std::fs::remove_file(&key).unwrap();
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    assert!(s.opened().moved_aside.is_some());
    assert_eq!(s.stats().await.unwrap().pending, 0);
    assert!(key.exists());
    s.close().await;

    // A key file that is no key is an error naming it; it is not replaced.
    std::fs::write(&key, "not a key\n").unwrap();
    let err = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a spool key"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "not a key\n");
}

#[tokio::test]
async fn a_plaintext_spool_from_an_older_agent_is_sealed_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (dir.path().join("spool.db"), dir.path().join("spool_key"));
    // The schema and rows an agent without encryption wrote.
    {
        let mut c = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        for stmt in [
            "CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, \
             json TEXT NOT NULL, bytes INTEGER NOT NULL)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO counters (name, value) VALUES ('spooled', 2), ('acknowledged', 0), ('dropped', 0)",
        ] {
            sqlx::query(stmt).execute(&mut c).await.unwrap();
        }
        for id in ["old1", "old2"] {
            let json = serde_json::to_string(&reading(id)).unwrap();
            sqlx::query("INSERT INTO items (id, json, bytes) VALUES (?, ?, ?)")
                .bind(id)
                .bind(&json)
                .bind(json.len() as i64)
                .execute(&mut c)
                .await
                .unwrap();
        }
        sqlx::Connection::close(c).await.unwrap();
    }
    assert!(
        contains(&spool_bytes(&db), SERIAL),
        "the old spool is in clear"
    );

    // `spool status` counts it without touching it.
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::Fail).await;
    assert!(s.is_err(), "status must not create a key");

    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    assert_eq!(s.opened().migrated, 2);
    let st = s.stats().await.unwrap();
    assert_eq!((st.pending, st.spooled), (2, 2));
    let items = s.peek(10, 1 << 20).await.unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["old1", "old2"], "order and ids kept");
    assert_eq!(
        serde_json::from_str::<IngestItem>(&items[0].json).unwrap(),
        reading("old1")
    );
    assert_nothing_readable(&spool_bytes(&db), "migrated spool (open)");
    s.close().await;
    assert_nothing_readable(&spool_bytes(&db), "migrated spool (closed)");

    // Opening again migrates nothing more.
    let s = Spool::open(&db, &key, LIMITS, OnBadKey::StartFresh)
        .await
        .unwrap();
    assert_eq!(s.opened().migrated, 0);
    assert_eq!(s.stats().await.unwrap().pending, 2);
}
