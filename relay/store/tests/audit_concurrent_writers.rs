//! Two writers on one database file — like `dwa-relay serve` and a CLI
//! command, each with its own pool and its own idea of the chain's end —
//! append at the same time: the chain stays a single unbroken line.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_proto::audit::{verify_chain, AuditEntry};
use dwa_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_writers_never_fork_the_chain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("dwa.db");
    let a = Store::open_sqlite(&path, true).await.expect("open a");
    let b = Store::open_sqlite(&path, false).await.expect("open b");
    let write = |store: Store, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..150 {
                let e = AuditEntry {
                    ts: "2026-01-01T00:00:00.000Z".into(),
                    kind: "admin.command".into(),
                    actor: who.into(),
                    agent: None,
                    detail: format!("{{\"i\":{i}}}"),
                };
                store.audit_append(&e).await.expect("append");
            }
        })
    };
    let (x, y) = (write(a.clone(), "serve"), write(b.clone(), "cli"));
    x.await.expect("writer a");
    y.await.expect("writer b");
    let records = b.audit_records(None).await.expect("records");
    assert_eq!(verify_chain(records.clone()).expect("chain intact"), 300);
    for who in ["cli", "serve"] {
        assert_eq!(records.iter().filter(|r| r.entry.actor == who).count(), 150);
    }
}
