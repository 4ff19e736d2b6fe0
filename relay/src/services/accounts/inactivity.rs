//! Accounts unused for `accounts.inactive_after` are deactivated: by a
//! daily task and at log-in. "Used" means the last log-in, else the
//! creation or the last reactivation. Time is passed in, so tests need no
//! waiting.

use std::time::Duration;

use dwa_proto::audit::Event;
use tracing::Instrument;

use super::AccountError;
use crate::services::grants::{self, EndReason};
use crate::services::{Services, Svc};

type Result<T> = std::result::Result<T, AccountError>;

/// Deactivates one account (unused too long), ends its sessions, audits.
pub async fn deactivate(
    svc: &Services,
    user_id: i64,
    username: &str,
    last_active: i64,
    by: &str,
) -> Result<()> {
    if !svc
        .store
        .deactivate_user(user_id, &svc.time.rfc3339())
        .await?
    {
        return Ok(());
    }
    grants::end(
        svc,
        dwa_store::grants::Selector::User(user_id),
        EndReason::Inactive,
        by,
    )
    .await?;
    svc.audit
        .record(
            Event::UserDeactivated {
                user: username.to_string(),
                id: user_id,
                reason: "unused".into(),
                last_active,
                inactive_after_days: svc.cfg().accounts.inactive_after.as_secs() / 86_400,
            },
            by,
            None,
        )
        .await;
    Ok(())
}

/// The last use (unix seconds) before which an account counts as unused at
/// `now`.
pub fn unused_before(now: i64, after: Duration) -> i64 {
    now.saturating_sub(i64::try_from(after.as_secs()).unwrap_or(i64::MAX))
}

/// One sweep at `now`; returns the user names deactivated.
pub async fn sweep(svc: &Services, now: i64) -> Result<Vec<String>> {
    let cutoff = unused_before(now, svc.cfg().accounts.inactive_after);
    let mut done = vec![];
    for u in svc.store.stale_users(cutoff).await? {
        deactivate(svc, u.id, &u.username, u.used, "relay").await?;
        done.push(u.username);
    }
    Ok(done)
}

/// The daily sweep, stopped by the relay's shutdown signal.
pub fn spawn(svc: &Svc) {
    let r = svc.clone();
    svc.tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(86_400));
            loop {
                tokio::select! {
                    _ = tick.tick() => match sweep(&r, r.time.unix()).await {
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
    use crate::services::clock::rfc3339;

    #[tokio::test]
    async fn single_sign_on_counts_as_use_of_a_directory_account() {
        let (_tmp, svc) = crate::testutil::svc().await;
        let created = rfc3339(svc.time.now() - Duration::from_secs(100 * 86_400));
        let mut ids = vec![];
        for (subject, name) in [("s1", "dora"), ("s2", "ivan")] {
            let id = svc
                .store
                .upsert_directory_user(&dwa_store::users::DirectoryUser {
                    issuer: "https://idp.test",
                    subject,
                    username: name,
                    username_taken: name,
                    password_hash: "!",
                    role: "technician",
                    customers: &[],
                    created_at: &created,
                })
                .await
                .expect("directory user");
            ids.push(id);
        }
        // Dora logs in through the directory today; Ivan never did.
        crate::services::auth::open_login(&svc, ids[0], false)
            .await
            .expect("log-in");
        let gone = sweep(&svc, svc.time.unix()).await.expect("sweep");
        assert_eq!(gone, ["ivan"]);
    }

    #[test]
    fn an_account_is_unused_once_the_limit_has_passed() {
        let day = Duration::from_secs(86_400);
        assert_eq!(unused_before(1_000_000, day), 1_000_000 - 86_400);
        // A limit beyond the epoch cannot wrap around.
        assert_eq!(
            unused_before(5, Duration::from_secs(u64::MAX)),
            i64::MIN + 6
        );
    }
}
