//! Two writers on one database file — like `dwa-relay serve` and a CLI
//! command, each with its own pool and its own idea of the chain's end —
//! append at the same time: the chain stays a single unbroken line.

use dwa_relay::config::DataDir;
use dwa_relay::db::Db;
use dwa_relay::services::audit::Audit;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_writers_never_fork_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir(tmp.path().to_path_buf());
    let a = Audit::new(Db::open(&dir, true).await.unwrap());
    let b = Audit::new(Db::open(&dir, false).await.unwrap());
    let write = |audit: Audit, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..150 {
                audit
                    .append("admin.command", who, None, serde_json::json!({ "i": i }))
                    .await
                    .expect("append");
            }
        })
    };
    let (x, y) = (write(a.clone(), "serve"), write(b.clone(), "cli"));
    x.await.unwrap();
    y.await.unwrap();
    assert_eq!(a.verify().await.expect("chain intact"), 300);
    let records = b.records(None).await.unwrap();
    assert_eq!(
        records.iter().filter(|r| r.entry.actor == "cli").count(),
        150
    );
    assert_eq!(
        records.iter().filter(|r| r.entry.actor == "serve").count(),
        150
    );
}
