//! Accounts unused for `accounts.inactive_after` are deactivated: by a
//! daily task and at log-in. "Used" means the last log-in, else the
//! creation or the last reactivation. Time is passed in, so tests need no
//! waiting.

use std::time::Duration;

use dwa_proto::audit::kind;
use serde_json::json;
use sqlx::Row;
use tracing::Instrument;

use crate::app::Relay;
use crate::error::Result;
use crate::util::{now_rfc3339, unix_now};

/// Deactivates one account (unused too long), ends its sessions, audits.
pub async fn deactivate(
    relay: &Relay,
    user_id: i64,
    username: &str,
    last_active: i64,
    by: &str,
) -> Result<()> {
    let r =
        sqlx::query("UPDATE users SET active = 0, deactivated_at = ? WHERE id = ? AND active = 1")
            .bind(now_rfc3339())
            .bind(user_id)
            .execute(&relay.db.pool)
            .await?;
    if r.rows_affected() == 0 {
        return Ok(());
    }
    super::users::end_sessions_of(
        relay,
        user_id,
        by,
        crate::services::grants::EndReason::Inactive,
    )
    .await?;
    relay
        .audit
        .record(
            kind::USER_DEACTIVATED,
            by,
            None,
            json!({"user": username, "id": user_id, "reason": "unused",
                   "last_active": last_active,
                   "inactive_after_days": relay.cfg.accounts.inactive_after.as_secs() / 86_400}),
        )
        .await;
    Ok(())
}

/// Active accounts whose last use is more than `after` before `now`:
/// (id, username, last use).
pub async fn stale_accounts(
    db: &crate::db::Db,
    now: i64,
    after: Duration,
) -> Result<Vec<(i64, String, i64)>> {
    let cutoff = now - after.as_secs() as i64;
    let rows = sqlx::query(
        "SELECT id, username, COALESCE(last_active, CAST(strftime('%s', created_at) AS INTEGER)) AS used
         FROM users WHERE active = 1 AND used < ?",
    )
    .bind(cutoff)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("id"), r.get("username"), r.get("used")))
        .collect())
}

/// One sweep at `now`; returns the user names deactivated.
pub async fn sweep(relay: &Relay, now: i64) -> Result<Vec<String>> {
    let stale = stale_accounts(&relay.db, now, relay.cfg.accounts.inactive_after).await?;
    let mut done = vec![];
    for (id, name, used) in stale {
        deactivate(relay, id, &name, used, "relay").await?;
        done.push(name);
    }
    Ok(done)
}

/// The daily sweep, stopped by the relay's shutdown signal.
pub fn spawn(relay: Relay) {
    let r = relay.clone();
    relay.tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(86_400));
            loop {
                tokio::select! {
                    _ = tick.tick() => match sweep(&r, unix_now()).await {
                        Ok(names) if !names.is_empty() => tracing::info!(?names, "deactivated unused accounts"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "inactivity sweep failed"),
                    },
                    _ = r.shutdown.cancelled() => break,
                }
            }
        }
        .instrument(tracing::info_span!("inactivity_sweep")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataDir;

    #[tokio::test]
    async fn unused_accounts_are_found_after_the_limit_only() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(&DataDir(tmp.path().to_path_buf()), true)
            .await
            .unwrap();
        let id = db.add_user("old", "x", "viewer", &[]).await.unwrap();
        let start = 2_000_000_000i64;
        sqlx::query("UPDATE users SET last_active = ? WHERE id = ?")
            .bind(start)
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
        let after = Duration::from_secs(90 * 86_400);
        let day = 86_400;
        assert!(stale_accounts(&db, start + 89 * day, after)
            .await
            .unwrap()
            .is_empty());
        let s = stale_accounts(&db, start + 91 * day, after).await.unwrap();
        assert_eq!(s, vec![(id, "old".to_string(), start)]);
        // Deactivated accounts are not found again.
        sqlx::query("UPDATE users SET active = 0 WHERE id = ?")
            .bind(id)
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(stale_accounts(&db, start + 91 * day, after)
            .await
            .unwrap()
            .is_empty());
        // Never logged in: the creation time counts.
        let fresh = db.add_user("new", "x", "viewer", &[]).await.unwrap();
        let s = stale_accounts(&db, unix_now() + 91 * day, after)
            .await
            .unwrap();
        assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![fresh]);
        assert!(stale_accounts(&db, unix_now() + 89 * day, after)
            .await
            .unwrap()
            .is_empty());
    }
}
