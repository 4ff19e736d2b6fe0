//! `dwa-relay backup` taken while the relay writes (streams back to back,
//! each an open and a close record) gives a data directory that opens,
//! passes SQLite's integrity check and whose audit chain verifies; each
//! backup holds more records than the one before (they were taken
//! mid-write).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};

use dwa_e2e_tests::*;
use serde_json::Value;

async fn relay_json(data: &std::path::Path, args: &[&str]) -> (bool, Value) {
    let out = tokio::process::Command::new(&bins().0)
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .args(args)
        .output()
        .await
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

async fn integrity(db: &std::path::Path) -> String {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (r,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_mid_write_opens_and_verifies() {
    let (relay, agent, ip) = Relay::with_agent(&[7000]);
    let _echo = echo_target(&format!("{ip}:7000")).await;
    let out = tempfile::tempdir().unwrap();
    let done = AtomicBool::new(false);

    let writer = async {
        let mut streams = 0u32;
        while !done.load(Ordering::Relaxed) {
            let mut s = relay.open(&agent.id, &ip, 7000).await.expect("stream");
            assert_eq!(roundtrip(&mut s, b"audit me").await, b"audit me");
            streams += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        streams
    };
    let backups = async {
        let mut counts = vec![];
        for i in 0..5 {
            let to = out.path().join(format!("b{i}"));
            let (ok, v) = relay_json(&relay.data, &["backup", "--to", to.to_str().unwrap()]).await;
            assert!(ok, "backup {i}: {v}");
            assert_eq!(integrity(&to.join("dwa.db")).await, "ok");
            let (ok, v) = relay_json(&to, &["audit", "verify"]).await;
            assert!(ok && v["ok"] == true, "backup {i} verifies: {v}");
            counts.push(v["records"].as_u64().unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        done.store(true, Ordering::Relaxed);
        counts
    };
    let (streams, counts) = tokio::join!(writer, backups);
    assert!(streams > 5, "the relay was writing: {streams} streams");
    assert!(
        counts.windows(2).all(|w| w[1] > w[0]),
        "each backup holds more than the one before: {counts:?}"
    );
    // A backup is a whole data directory: config and keys beside the
    // database, and refused onto a directory that is not empty.
    let b0 = out.path().join("b0");
    assert!(b0.join("relay.toml").exists());
    let (ok, _) = relay_json(&relay.data, &["backup", "--to", b0.to_str().unwrap()]).await;
    assert!(!ok, "a backup over a non-empty directory is refused");
}
