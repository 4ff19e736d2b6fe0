//! `dwa-relay audit verify` detects an edited, an inserted and a deleted
//! record and names it; the database itself refuses casual edits.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use dwa_e2e_tests::*;
use sqlx::Connection;

async fn sql(db: &Path, statements: &[&str]) -> Result<(), sqlx::Error> {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    for s in statements {
        sqlx::query(s).execute(&mut c).await?;
    }
    c.close().await
}

fn verify(relay: &Relay) -> (bool, String) {
    let out = relay.cli(&["audit", "verify"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// A relay (stopped) whose log holds several records, and a copy of its DB.
fn relay_with_records() -> (Relay, std::path::PathBuf, tempfile::TempDir) {
    let relay = Relay::init();
    for name in ["a", "b", "c", "d"] {
        relay.ok(&["customer", "add", name]);
    }
    let backup = tempfile::tempdir().unwrap();
    let copy = backup.path().join("dwa.db");
    // The database is in WAL mode: the newest records may sit in -wal.
    for ext in ["", "-wal", "-shm"] {
        let src = relay.data.join(format!("dwa.db{ext}"));
        if src.exists() {
            std::fs::copy(&src, backup.path().join(format!("dwa.db{ext}"))).unwrap();
        }
    }
    (relay, copy, backup)
}

fn restore(relay: &Relay, copy: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let dst = relay.data.join(format!("dwa.db{ext}"));
        let _ = std::fs::remove_file(&dst);
        let src = copy.with_file_name(format!("dwa.db{ext}"));
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_named() {
    let (relay, copy, _b) = relay_with_records();
    let db = relay.data.join("dwa.db");
    let (ok, text) = verify(&relay);
    assert!(ok, "{text}");
    assert!(text.contains("5 records"), "{text}");

    // Casual edits are refused by the database.
    let e = sql(&db, &["UPDATE audit SET actor = 'mallory' WHERE id = 3"])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let e = sql(&db, &["DELETE FROM audit WHERE id = 3"])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");

    // Edited (triggers dropped first, as a determined attacker would).
    sql(
        &db,
        &[
            "DROP TRIGGER audit_no_update",
            "DROP TRIGGER audit_no_delete",
            "UPDATE audit SET actor = 'mallory' WHERE id = 3",
        ],
    )
    .await
    .unwrap();
    let (ok, text) = verify(&relay);
    assert!(!ok);
    assert!(
        text.contains("record 3") && text.contains("edited"),
        "{text}"
    );

    // Deleted.
    restore(&relay, &copy);
    sql(
        &db,
        &[
            "DROP TRIGGER audit_no_delete",
            "DELETE FROM audit WHERE id = 2",
        ],
    )
    .await
    .unwrap();
    let (ok, text) = verify(&relay);
    assert!(!ok);
    assert!(
        text.contains("record 2") && text.contains("missing"),
        "{text}"
    );

    // Inserted: a forged record with a made-up chain link.
    restore(&relay, &copy);
    sql(&db, &["INSERT INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash)
                VALUES (6, '2026-01-01T00:00:00.000Z', 'admin.command', 'mallory', NULL, '{}', 'x', 'y')"])
        .await
        .unwrap();
    let (ok, text) = verify(&relay);
    assert!(!ok);
    assert!(text.contains("record 6"), "{text}");

    // The exit code is what scripts rely on; and the export still works.
    restore(&relay, &copy);
    assert!(verify(&relay).0);
    let csv = relay.cli(&["audit", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("id,ts,kind,actor,agent,detail,prev_hash,hash"));
    assert_eq!(csv.lines().count(), 6);
    let all = relay.ok(&["audit"]);
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(5),
        "--json gives one array: {all}"
    );
    let since = relay.cli(&["audit", "--since", "2099-01-01T00:00:00Z"]);
    assert!(since.status.success() && since.stdout.is_empty());
}
