//! The audit table cannot be rewritten through SQL the application never
//! runs but an intruder with the file might: UPDATE, DELETE, and INSERT OR
//! REPLACE over an existing id (which deletes without firing DELETE
//! triggers) are all refused, and the chain still verifies.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_proto::audit::{verify_chain, AuditEntry};
use dwa_store::Store;

#[tokio::test]
async fn records_cannot_be_updated_deleted_or_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("dwa.db");
    let store = Store::open_sqlite(&path, true).await.expect("open");
    for i in 0..3 {
        let e = AuditEntry {
            ts: "2026-01-01T00:00:00.000Z".into(),
            kind: "admin.command".into(),
            actor: "cli:test".into(),
            agent: None,
            detail: format!("{{\"i\":{i}}}"),
        };
        store.audit_append(&e).await.expect("append");
    }
    let url = format!("sqlite://{}", path.display());
    let raw = sqlx::SqlitePool::connect(&url).await.expect("raw pool");
    for sql in [
        "UPDATE audit SET detail = '{}' WHERE id = 2",
        "DELETE FROM audit WHERE id = 3",
        "INSERT OR REPLACE INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash) \
         SELECT id, ts, kind, actor, agent, '{\"forged\":1}', prev_hash, hash FROM audit WHERE id = 2",
        "REPLACE INTO audit (id, ts, kind, actor, agent, detail, prev_hash, hash) \
         VALUES (1, 'x', 'x', 'x', NULL, '{}', 'x', 'x')",
    ] {
        let e = sqlx::query(sql).execute(&raw).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    raw.close().await;
    let records = store.audit_records(None).await.expect("records");
    assert_eq!(verify_chain(records.clone()).expect("chain intact"), 3);
    assert_eq!(records[1].entry.detail, "{\"i\":1}");
}
