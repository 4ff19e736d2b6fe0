//! Uploads the spool to the relay: oldest first, in batches, each request
//! signed with the agent's enrollment key (`dwa_link::agent_auth`). An item
//! leaves the spool only when the relay's answer names it; anything else
//! (relay down, timeout, 5xx, an answer we cannot read) leaves the spool as
//! it was and the upload is retried with backoff. Independent of the SSH
//! session: telemetry keeps flowing while the tunnel is down.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dwa_link::backoff::Backoff;
use dwa_proto::telemetry::{IngestAck, INGEST_PATH, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use russh::keys::PrivateKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::spool::Spool;
use crate::error::{AgentError, Result};
use crate::relay_http::{error_text, RelayHttp};

/// With nothing pending, look again this often even without a nudge.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

pub struct Uploader {
    pub spool: Spool,
    pub http: RelayHttp,
    pub agent_id: String,
    pub key: Arc<PrivateKey>,
    /// Items per batch (at most `MAX_BATCH_ITEMS`).
    pub batch_items: usize,
    /// Nudged when new items are spooled.
    pub wake: Arc<Notify>,
    /// Nudged when the SSH session to the relay comes up: a sign the relay
    /// is back, so a failed upload is retried at once instead of after its
    /// backoff.
    pub relay_up: Arc<Notify>,
    /// Told of each acknowledged batch (`dwa-agent status`).
    pub status: Option<Arc<crate::status::StatusBoard>>,
}

/// The body of a batch, built from the spooled JSON without re-encoding.
fn batch_body(items: &[super::spool::Spooled]) -> Vec<u8> {
    let mut body =
        String::with_capacity(items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 16);
    body.push_str("{\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item.json);
    }
    body.push_str("]}");
    body.into_bytes()
}

/// The ids of the batch that the relay's ack names (accepted or rejected);
/// ids the batch did not hold are ignored.
fn acknowledged(batch: &[super::spool::Spooled], ack: &IngestAck) -> Vec<String> {
    let sent: HashSet<&str> = batch.iter().map(|i| i.id.as_str()).collect();
    ack.accepted
        .iter()
        .chain(ack.rejected.iter().map(|r| &r.id))
        .filter(|id| sent.contains(id.as_str()))
        .cloned()
        .collect()
}

impl Uploader {
    /// Sends one batch; returns how many items left the spool (0: nothing
    /// was pending).
    pub async fn upload_once(&self) -> Result<usize> {
        let batch = self
            .spool
            .peek(
                self.batch_items.clamp(1, MAX_BATCH_ITEMS),
                MAX_BATCH_BYTES - 64,
            )
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let body = batch_body(&batch);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let auth =
            dwa_link::agent_auth::sign(&self.key, &self.agent_id, "POST", INGEST_PATH, now, &body)
                .map_err(|e| AgentError::Upload(e.to_string()))?;
        let (status, answer) = self
            .http
            .post_json(INGEST_PATH, &[("authorization", auth)], body)
            .await
            .map_err(|e| AgentError::Upload(e.0))?;
        if !status.is_success() {
            return Err(AgentError::Upload(format!(
                "the relay refused {} items: {}",
                batch.len(),
                error_text(status, &answer)
            )));
        }
        let ack: IngestAck = serde_json::from_slice(&answer)
            .map_err(|e| AgentError::Upload(format!("unreadable answer from the relay: {e}")))?;
        for r in &ack.rejected {
            tracing::warn!(id = %r.id, error = %r.error, "the relay rejected a spooled item; dropping it");
        }
        let done = acknowledged(&batch, &ack);
        if done.is_empty() {
            return Err(AgentError::Upload(format!(
                "the relay acknowledged none of {} items",
                batch.len()
            )));
        }
        self.spool.remove(&done).await?;
        if let Some(b) = &self.status {
            let empty = self.spool.stats().await.is_ok_and(|s| s.pending == 0);
            b.uploaded(done.len(), empty);
        }
        tracing::debug!(
            sent = batch.len(),
            acknowledged = done.len(),
            "batch uploaded"
        );
        Ok(done.len())
    }

    /// Uploads until `shutdown`: drains the spool whenever it has items,
    /// backs off (1 s → 5 min, jittered) after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        loop {
            // Registered before looking, so a push during the upload is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let wait = match self.upload_once().await {
                Ok(0) => IDLE_RECHECK,
                Ok(_) => {
                    backoff.reset();
                    continue;
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "telemetry upload failed; readings stay spooled");
                    // After a failure new items do not wake us: only the
                    // timer, or the relay visibly back.
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.relay_up.notified() => backoff.reset(),
                        _ = shutdown.cancelled() => return,
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::spool::Spooled;
    use super::*;
    use dwa_proto::telemetry::{IngestBatch, Rejected};

    fn spooled(id: &str) -> Spooled {
        Spooled {
            id: id.into(),
            json: format!(
                r#"{{"type":"scan_done","id":"{id}","started_at":"a","finished_at":"b","trigger":"t","ranges":[],"addresses":1,"found":0}}"#
            ),
        }
    }

    #[test]
    fn batch_body_is_a_valid_ingest_batch() {
        let items = [spooled("a"), spooled("b")];
        let batch: IngestBatch = serde_json::from_slice(&batch_body(&items)).unwrap();
        let ids: Vec<_> = batch.items.iter().map(|i| i.id().to_string()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn only_ids_of_the_batch_count_as_acknowledged() {
        let items = [spooled("a"), spooled("b"), spooled("c")];
        let ack = IngestAck {
            accepted: vec!["a".into(), "zzz".into()],
            rejected: vec![Rejected {
                id: "c".into(),
                error: "bad".into(),
            }],
        };
        assert_eq!(acknowledged(&items, &ack), ["a", "c"]);
    }
}
