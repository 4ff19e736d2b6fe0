//! Alert webhook: events go into a durable outbox (`webhook_outbox`) in the
//! same transaction that raised or resolved the alert, and a background
//! task delivers them.
//!
//! - `POST webhook_url` with the JSON body, `Content-Type:
//!   application/json`, `X-DWA-Event`, `X-DWA-Delivery` (outbox id, stable
//!   across retries: receivers dedupe on it), `X-DWA-Timestamp` (unix
//!   seconds of this attempt) and `X-DWA-Signature: sha256=<hex>`, the
//!   HMAC-SHA256 of the body with `webhook_secret`.
//! - 2xx is delivered; anything else (or a timeout) is retried with
//!   exponential backoff from `retry_base` up to `retry_max`, at most
//!   `max_attempts` times, then marked failed. Pending rows survive a
//!   restart. At most `outbox_max` pending rows: further events are dropped
//!   with a log line (a dead receiver cannot fill the disk).
//!
//! The HTTP client that posts is an adapter (`adapters::webhook`), behind
//! [`Sender`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dwa_store::outbox::Attempt;
use dwa_store::Tx;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tracing::Instrument;

use super::Result;
use crate::config::AlertsSection;
use crate::services::{Services, Svc};
use crate::util::random_secret;

/// Delivered and failed rows are kept this long, for inspection.
const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows one pass of the delivery task takes.
const BATCH: i64 = 32;

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery attempt as the sender makes it.
#[derive(Debug, Clone)]
pub struct Post {
    /// The outbox id: stable across retries, receivers dedupe on it.
    pub delivery: i64,
    pub event: String,
    pub body: Vec<u8>,
    /// `sha256=<hex>` of the body.
    pub signature: String,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
}

pub type SendFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>>;

/// What posts one event to the receiver: the HTTP client
/// (`adapters::webhook`). Ok for a 2xx answer; otherwise why not.
pub trait Sender: Send + Sync {
    fn send(&self, post: Post) -> SendFuture<'_>;
}

/// Queues one event (inside the caller's transaction). Returns false when
/// the outbox is full and the event was dropped.
pub async fn enqueue(
    tx: &mut Tx,
    cfg: &AlertsSection,
    event: &str,
    mut payload: Value,
    now: &str,
    now_unix: i64,
) -> Result<bool> {
    if cfg.webhook_url.is_none() {
        return Ok(true);
    }
    let pending = tx.outbox_pending().await?;
    if pending >= cfg.outbox_max as i64 {
        tracing::warn!(event, pending, "webhook outbox full; event dropped");
        return Ok(false);
    }
    payload["event"] = Value::from(event);
    payload["event_id"] = Value::from(random_secret(16));
    payload["created_at"] = Value::from(now);
    tx.enqueue_webhook(event, &payload.to_string(), now, now_unix)
        .await?;
    Ok(true)
}

/// Backoff before attempt `attempts + 1`.
pub fn backoff(cfg: &AlertsSection, attempts: u32) -> Duration {
    let exp = cfg
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    exp.min(cfg.retry_max)
}

/// Delivers the rows due at `now` (unix seconds); returns how many were
/// attempted.
pub async fn deliver_due(svc: &Services, sender: &dyn Sender, now: i64) -> Result<usize> {
    let cfg = &svc.cfg().alerts;
    if cfg.webhook_url.is_none() {
        return Ok(0);
    }
    let secret = cfg
        .webhook_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or("");
    let rows = svc.store.deliveries_due(now, BATCH).await?;
    for r in &rows {
        let attempts = u32::try_from(r.attempts).unwrap_or(u32::MAX - 1) + 1;
        let body = r.body.clone().into_bytes();
        let post = Post {
            delivery: r.id,
            event: r.event.clone(),
            signature: signature(secret, &body),
            body,
            timestamp: svc.time.unix(),
        };
        let res = sender.send(post).await;
        let at = svc.time.rfc3339();
        let outcome = match &res {
            Ok(()) => Attempt::Delivered,
            Err(e) => {
                let give_up = attempts >= cfg.max_attempts;
                tracing::warn!(delivery = r.id, attempts, failed = give_up, error = %e, "webhook delivery failed");
                Attempt::Failed {
                    error: e,
                    next_at: now + backoff(cfg, attempts).as_secs() as i64,
                    give_up,
                }
            }
        };
        svc.store
            .record_attempt(r.id, i64::from(attempts), &outcome, &at)
            .await?;
    }
    Ok(rows.len())
}

async fn prune(svc: &Services) -> Result<()> {
    let cutoff = crate::services::clock::rfc3339(svc.time.now() - KEEP_DONE);
    svc.store.prune_outbox(&cutoff).await?;
    Ok(())
}

/// Runs deliveries until shutdown: wakes when an event is queued, when the
/// next retry is due, and at least every 30 s.
pub fn spawn(svc: &Svc, sender: Arc<dyn Sender>) {
    if svc.cfg().alerts.webhook_url.is_none() {
        return;
    }
    let notify = svc.telemetry.wake.clone();
    let s = svc.clone();
    svc.tracker.spawn(
        async move {
            let (svc, sender): (&Services, &dyn Sender) = (&s, &*sender);
            run_outbox(
                svc,
                "webhook outbox",
                &notify,
                move |now| deliver_due(svc, sender, now),
                move || prune(svc),
                move || async move { svc.store.next_delivery_due().await.ok().flatten() },
            )
            .await;
        }
        .instrument(tracing::info_span!("webhook_outbox")),
    );
}

/// The loop every outbox runs until shutdown: deliver what is due, prune
/// finished rows hourly, then sleep until the next row is due (at most
/// 30 s) or `notify` says something was queued.
pub async fn run_outbox<D, DF, P, PF, N, NF>(
    svc: &Services,
    what: &str,
    notify: &tokio::sync::Notify,
    deliver: D,
    prune: P,
    next_due: N,
) where
    D: Fn(i64) -> DF,
    DF: Future<Output = Result<usize>>,
    P: Fn() -> PF,
    PF: Future<Output = Result<()>>,
    N: Fn() -> NF,
    NF: Future<Output = Option<i64>>,
{
    let mut last_prune = 0;
    loop {
        if let Err(e) = deliver(svc.time.unix()).await {
            tracing::error!(error = %e, "{what}");
        }
        if svc.time.unix() - last_prune > 3600 {
            last_prune = svc.time.unix();
            if let Err(e) = prune().await {
                tracing::error!(error = %e, "{what} prune");
            }
        }
        let wait = match next_due().await {
            Some(t) => (t - svc.time.unix()).clamp(0, 30) as u64,
            None => 30,
        };
        if wait == 0 {
            // Still due rows (a full batch): go on, but yield.
            tokio::task::yield_now().await;
            if svc.shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = svc.shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = AlertsSection::default();
        assert_eq!(backoff(&cfg, 1), cfg.retry_base);
        assert_eq!(backoff(&cfg, 2), cfg.retry_base * 2);
        assert_eq!(backoff(&cfg, 30), cfg.retry_max);
        // The default schedule spans roughly an hour over its attempts.
        let total: Duration = (1..cfg.max_attempts).map(|a| backoff(&cfg, a)).sum();
        assert!(
            total > Duration::from_secs(1800) && total < Duration::from_secs(2 * 3600),
            "{total:?}"
        );
    }
}
