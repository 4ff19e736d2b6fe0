//! Test support: services on a fresh data directory, with a clock that
//! stands still.

use std::sync::Arc;

use crate::config::DataDir;
use crate::services::clock::{ManualClock, Time};
use crate::services::Services;

/// Services on a fresh data directory with customer `acme` (id 1) and
/// agents `agt_a`, `agt_b` of it, and `agt_x` of customer `other`
/// (id 2); the clock stands still at 2026-11-22T10:00:00Z.
pub async fn svc() -> (tempfile::TempDir, Arc<Services>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = DataDir(tmp.path().to_path_buf());
    let (ssh, https) = ("127.0.0.1:2222", "127.0.0.1:8443");
    crate::init::init(
        &dir,
        "dwa.localhost",
        ssh.parse().expect("addr"),
        https.parse().expect("addr"),
    )
    .await
    .expect("init");
    let time = Time::from_clock(Arc::new(ManualClock::at_unix(1_795_341_600)));
    let svc = Services::open(dir, None, time).await.expect("services");
    let store = &svc.store;
    let now = "2026-01-01T00:00:00.000Z";
    for name in ["acme", "other"] {
        store.add_customer(name, now).await.expect("customer");
    }
    for (id, c) in [("agt_a", "acme"), ("agt_b", "acme"), ("agt_x", "other")] {
        let c = store.customer_id(c).await.expect("customer id");
        let hash = format!("token-{id}");
        store
            .create_enroll_token(&hash, c, 1, i64::MAX, "test", now)
            .await
            .expect("token");
        let key = format!("key-{id}");
        store
            .enroll_agent(
                &hash,
                dwa_store::enroll::NewAgent {
                    id,
                    public_key: &key,
                    hostname: "h",
                },
                now,
                0,
            )
            .await
            .expect("agent");
    }
    (tmp, Arc::new(svc))
}
