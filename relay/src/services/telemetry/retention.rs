//! Readings retention: readings taken longer ago than
//! `telemetry.readings_retention` are removed, a small batch per
//! transaction with a pause between, so an agent's upload waits at most
//! for one batch, never for the whole prune. One audit record per run that
//! removed any.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dwa_proto::audit::Event;
use tracing::Instrument;

use crate::services::clock::rfc3339;
use crate::services::telemetry::Result;
use crate::services::{Services, Svc};

/// Readings deleted per transaction: a few milliseconds of the write lock.
pub const BATCH: i64 = 1000;

/// Pause between batches: ingest's writers get the lock in between.
const PAUSE: Duration = Duration::from_millis(20);

/// The cutoff for `now`: readings taken before it go (None: before 1970).
pub fn cutoff(now: SystemTime, retention: Duration) -> Option<String> {
    now.checked_sub(retention)
        .filter(|t| *t >= UNIX_EPOCH)
        .map(rfc3339)
}

/// Removes the readings taken before `now` minus the retention, in
/// batches; stops early (having audited what went) on shutdown. Returns
/// how many went.
pub async fn prune(svc: &Services, now: SystemTime) -> Result<u64> {
    let Some(before) = cutoff(now, svc.cfg().telemetry.readings_retention) else {
        return Ok(0);
    };
    let mut total = 0u64;
    loop {
        let n = svc.store.prune_readings(&before, BATCH).await?;
        total += n;
        if n < BATCH as u64 || svc.shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if total > 0 {
        svc.audit
            .append(
                Event::TelemetryReadingsPruned {
                    older_than: before.clone(),
                    readings: total,
                },
                "relay",
                None,
            )
            .await?;
        tracing::info!(readings = total, older_than = %before, "readings pruned");
    }
    Ok(total)
}

/// The prune task: a run at start, then every `telemetry.prune_interval`.
pub fn spawn(svc: &Svc) {
    let r = svc.clone();
    let every = svc
        .cfg()
        .telemetry
        .prune_interval
        .max(Duration::from_secs(1));
    svc.tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = prune(&r, r.time.now()).await {
                            tracing::error!(error = %e, "pruning readings");
                        }
                    }
                    _ = r.shutdown.cancelled() => break,
                }
            }
        }
        .instrument(tracing::info_span!("readings_retention")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_retention() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_341_600); // 2026-11-22T10:00:00Z
        assert_eq!(
            cutoff(now, Duration::from_secs(365 * 86_400)).as_deref(),
            Some("2025-11-22T10:00:00.000Z")
        );
        assert_eq!(cutoff(UNIX_EPOCH, Duration::from_secs(1)), None);
    }

    #[tokio::test]
    async fn a_run_removes_old_readings_and_audits_once() {
        let (_tmp, svc) = crate::testutil::svc().await;
        let dev = svc
            .store
            .add_device("agt_a", "10.0.0.5", None, "2026-01-01T00:00:00.000Z")
            .await
            .expect("device");
        let mut tx = svc.store.begin().await.expect("tx");
        for (id, taken) in [
            ("r-old", "2024-01-01T00:00:00.000Z"),
            ("r-new", "2026-11-01T00:00:00.000Z"),
        ] {
            tx.insert_item(id, "agt_a", "reading", taken)
                .await
                .expect("item");
            tx.insert_reading(&dwa_store::readings::NewReading {
                id,
                device_id: dev,
                agent_id: "agt_a",
                scan: "s",
                taken_at: taken,
                received_at: taken,
                address: "10.0.0.5",
                identity: "serial:X",
                record: "{}",
            })
            .await
            .expect("reading");
        }
        tx.note_newest_reading(dev, None, "2026-11-01T00:00:00.000Z", "r-new", "s")
            .await
            .expect("newest");
        tx.commit().await.expect("commit");

        // Default retention (25 months) from 2026-11-22: the 2024 reading goes.
        assert_eq!(prune(&svc, svc.time.now()).await.expect("prune"), 1);
        assert_eq!(prune(&svc, svc.time.now()).await.expect("prune"), 0);
        let left = svc
            .store
            .device_readings(dev, None, 10)
            .await
            .expect("readings");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, "r-new");
        let pruned: Vec<_> = svc
            .audit
            .records(None)
            .await
            .expect("records")
            .into_iter()
            .filter(|r| r.entry.kind == "telemetry.readings_pruned")
            .collect();
        assert_eq!(pruned.len(), 1, "one record, for the run that removed some");
        assert!(pruned[0].entry.detail.contains("\"readings\":1"));
        svc.audit.verify().await.expect("chain verifies");
    }
}
