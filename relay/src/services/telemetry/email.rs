//! E-mail alerts: a rule's recipients get its alerts raised and resolved,
//! one message each (`immediate`) or one per customer and recipient list
//! per `smtp.digest_interval` (`digest`).
//!
//! Like the webhook, a change goes into a durable outbox (`email_outbox`)
//! in the transaction that made it, and a background task sends it: an
//! SMTP outage or a restart loses nothing. Failures are retried on the
//! webhook's schedule (`alerts.retry_base`, `retry_max`, `max_attempts`)
//! and the outbox is bounded by `alerts.outbox_max`. Each message
//! delivered or given up is audited as a summary (`telemetry.alert_email`).
//!
//! The SMTP client is an adapter (`adapters::smtp`), behind [`Mailer`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dwa_store::mail_outbox::{Mail, NewMail};
use dwa_store::Tx;
use tracing::Instrument;

use super::alerts::{AlertView, EmailMode, Rules};
use super::webhook::{backoff, SendFuture};
use super::Result;
use crate::config::RelayConfig;
use crate::services::{Services, Svc};

/// Delivered and failed rows are kept this long, for inspection.
const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Rows one pass of the delivery task takes.
const BATCH: i64 = 500;
/// Alert changes in one digest at most (the rest go in the next one).
const DIGEST_MAX: usize = 200;

/// One message as the mailer sends it (the adapter adds `From:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// A file sent with it (a billing report).
    pub attachment: Option<Attachment>,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What sends one message: the SMTP client. Ok once the server took it;
/// otherwise why not (never a credential).
pub trait Mailer: Send + Sync {
    fn send(&self, m: Message) -> SendFuture<'_>;
}

/// End of the digest interval that `now` falls in (unix seconds).
pub fn digest_due(now: i64, interval: Duration) -> i64 {
    let i = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1);
    (now.div_euclid(i) + 1).saturating_mul(i)
}

/// How one alert change reads in a message.
pub fn render(alert: &AlertView, raised: bool) -> (String, String) {
    let what = if raised { "raised" } else { "resolved" };
    let device = match &alert.device.name {
        Some(n) if !n.is_empty() => format!("{n} ({})", alert.device.address),
        _ => alert.device.address.clone(),
    };
    let kind = if alert.subject.is_empty() {
        alert.kind.clone()
    } else {
        format!("{} ({})", alert.kind, alert.subject)
    };
    let subject = format!("[DWA] {}: {kind} {what} on {device}", alert.customer.name);
    let mut body = format!(
        "Alert {what}: {kind}\nCustomer: {}\nDevice: {device}, agent {}\nMessage: {}\nRaised at: {}\n",
        alert.customer.name, alert.device.agent_id, alert.message, alert.raised_at
    );
    if let Some(r) = &alert.resolved_at {
        body.push_str(&format!("Resolved at: {r}\n"));
    }
    body.push_str(&format!("Alert id: {}\n", alert.id));
    // Header injection: names come from agents and admins.
    let subject = subject
        .replace(['\r', '\n'], " ")
        .chars()
        .take(200)
        .collect();
    (subject, body)
}

/// Queues the change for the rule's recipients (inside the caller's
/// transaction). Returns whether a row was queued.
pub async fn enqueue(
    tx: &mut Tx,
    cfg: &RelayConfig,
    rules: &Rules,
    alert: &AlertView,
    raised: bool,
    now: &str,
    now_unix: i64,
) -> Result<bool> {
    let Some(smtp) = &cfg.smtp else {
        return Ok(false);
    };
    let Some(email) = rules.email(&alert.kind) else {
        return Ok(false);
    };
    let pending = tx.mail_pending().await?;
    if pending >= cfg.alerts.outbox_max as i64 {
        tracing::warn!(pending, "e-mail outbox full; alert e-mail dropped");
        return Ok(false);
    }
    let (subject, body) = render(alert, raised);
    let due = match email.mode {
        EmailMode::Immediate => now_unix,
        EmailMode::Digest => digest_due(now_unix, smtp.digest_interval),
    };
    let recipients = serde_json::to_string(&email.to)
        .map_err(|e| super::TelemetryError::Internal(format!("recipients: {e}")))?;
    tx.enqueue_mail(&NewMail {
        customer_id: alert.customer.id,
        customer_name: &alert.customer.name,
        mode: email.mode.as_str(),
        recipients: &recipients,
        event: if raised {
            "alert.raised"
        } else {
            "alert.resolved"
        },
        subject: &subject,
        body: &body,
        created_at: now,
        due,
        attachment: None,
    })
    .await?;
    Ok(true)
}

/// The messages the due rows make: an immediate row alone; digest rows by
/// (customer, recipients), at most [`DIGEST_MAX`] changes each.
pub fn messages(rows: Vec<Mail>) -> Vec<(Vec<Mail>, Message)> {
    let mut out = vec![];
    let mut digests: BTreeMap<(i64, String), Vec<Mail>> = BTreeMap::new();
    for r in rows {
        if r.mode == "digest" {
            digests
                .entry((r.customer_id, r.recipients.clone()))
                .or_default()
                .push(r);
        } else {
            let attachment = match (&r.attachment_name, &r.attachment_type, &r.attachment) {
                (Some(name), Some(t), Some(bytes)) => Some(Attachment {
                    name: name.clone(),
                    content_type: t.clone(),
                    bytes: bytes.clone(),
                }),
                _ => None,
            };
            let m = Message {
                to: serde_json::from_str(&r.recipients).unwrap_or_default(),
                subject: r.subject.clone(),
                body: r.body.clone(),
                attachment,
            };
            out.push((vec![r], m));
        }
    }
    for (_, mut group) in digests {
        while !group.is_empty() {
            let rest = group.split_off(group.len().min(DIGEST_MAX));
            let n = group.len();
            let mut body = format!(
                "{n} alert change{} for {}:\n",
                if n == 1 { "" } else { "s" },
                group[0].customer_name
            );
            for r in &group {
                body.push('\n');
                body.push_str(&r.body);
            }
            let subject = format!(
                "[DWA] {}: {n} alert change{}",
                group[0].customer_name.replace(['\r', '\n'], " "),
                if n == 1 { "" } else { "s" }
            );
            let m = Message {
                to: serde_json::from_str(&group[0].recipients).unwrap_or_default(),
                subject,
                body,
                attachment: None,
            };
            out.push((group, m));
            group = rest;
        }
    }
    out
}

/// Sends the rows due at `now` (unix seconds); returns how many messages
/// were attempted.
pub async fn deliver_due(svc: &Services, mailer: &dyn Mailer, now: i64) -> Result<usize> {
    if svc.cfg().smtp.is_none() {
        return Ok(0);
    }
    // Due billing reports join the outbox first: this loop runs at least
    // every 30 s, often enough for a monthly schedule.
    if let Err(e) = super::billing::schedule::queue_due(svc, now).await {
        tracing::warn!(error = %e, "billing reports not queued");
    }
    let all = svc.cfg();
    let cfg = &all.alerts;
    let rows = svc.store.mail_due(now, BATCH).await?;
    let batch = messages(rows);
    for (rows, msg) in &batch {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let before = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
        let attempts = u32::try_from(before).unwrap_or(u32::MAX - 1) + 1;
        let recipients = msg.to.len() as u64;
        let res = if msg.to.is_empty() {
            Err("no recipients".to_string())
        } else {
            mailer.send(msg.clone()).await
        };
        let at = svc.time.rfc3339();
        let give_up = res.is_err() && attempts >= cfg.max_attempts;
        match &res {
            Ok(()) => {
                svc.store
                    .mail_delivered(&ids, i64::from(attempts), &at)
                    .await?
            }
            Err(e) => {
                tracing::warn!(messages = ids.len(), attempts, failed = give_up, error = %e, "alert e-mail not sent");
                let next_at = now + backoff(cfg, attempts).as_secs() as i64;
                svc.store
                    .mail_failed(&ids, i64::from(attempts), e, next_at, give_up, &at)
                    .await?;
            }
        }
        if res.is_ok() || give_up {
            let first = &rows[0];
            svc.audit
                .record(
                    dwa_proto::audit::Event::TelemetryAlertEmail {
                        customer: first.customer_id,
                        mode: first.mode.clone(),
                        recipients,
                        alerts: rows.len() as u64,
                        outcome: if res.is_ok() { "delivered" } else { "failed" }.into(),
                        attempts: u64::from(attempts),
                        error: res.err().map(|e| e.chars().take(300).collect()),
                    },
                    "relay",
                    None,
                )
                .await;
        }
    }
    Ok(batch.len())
}

async fn prune(svc: &Services) -> Result<()> {
    let cutoff = crate::services::clock::rfc3339(svc.time.now() - KEEP_DONE);
    svc.store.prune_mail(&cutoff).await?;
    Ok(())
}

/// Sends until shutdown: wakes when a change is queued, when the next row
/// is due, and at least every 30 s.
pub fn spawn(svc: &Svc, mailer: Arc<dyn Mailer>) {
    if svc.cfg().smtp.is_none() {
        return;
    }
    let notify = svc.telemetry.mail_wake.clone();
    let s = svc.clone();
    svc.tracker.spawn(
        async move {
            let (svc, mailer): (&Services, &dyn Mailer) = (&s, &*mailer);
            super::webhook::run_outbox(
                svc,
                "e-mail outbox",
                &notify,
                move |now| deliver_due(svc, mailer, now),
                move || prune(svc),
                move || async move { svc.store.next_mail_due().await.ok().flatten() },
            )
            .await;
        }
        .instrument(tracing::info_span!("email_outbox")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, mode: &str, to: &str) -> Mail {
        Mail {
            id,
            customer_id: 1,
            customer_name: "Acme".into(),
            mode: mode.into(),
            recipients: to.into(),
            event: "alert.raised".into(),
            subject: format!("s{id}"),
            body: format!("b{id}\n"),
            attempts: 0,
            attachment_name: None,
            attachment_type: None,
            attachment: None,
        }
    }

    #[test]
    fn digests_group_by_customer_and_recipients() {
        let a = r#"["a@x.example"]"#;
        let b = r#"["b@x.example"]"#;
        let out = messages(vec![
            row(1, "digest", a),
            row(2, "immediate", a),
            row(3, "digest", a),
            row(4, "digest", b),
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].1.subject, "s2");
        assert_eq!(out[1].0.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(out[1].1.subject, "[DWA] Acme: 2 alert changes");
        assert!(out[1].1.body.contains("b1\n") && out[1].1.body.contains("b3\n"));
        assert_eq!(out[2].1.to, ["b@x.example"]);
    }

    /// Fails the first `fail` messages, then takes every one.
    struct Fake {
        fail: std::sync::atomic::AtomicUsize,
        sent: std::sync::Mutex<Vec<Message>>,
    }

    impl Mailer for Fake {
        fn send(&self, m: Message) -> SendFuture<'_> {
            use std::sync::atomic::Ordering;
            let failing = self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !failing {
                self.sent.lock().unwrap().push(m);
            }
            Box::pin(async move {
                if failing {
                    Err("451 try again later".to_string())
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn failures_are_retried_then_given_up_and_audited() {
        let (_tmp, svc) = crate::testutil::svc().await;
        let mut cfg = (*svc.cfg()).clone();
        cfg.smtp =
            Some(toml::from_str("host = \"127.0.0.1\"\nfrom = \"dwa@x.example\"\n").unwrap());
        cfg.alerts.max_attempts = 2;
        svc.set_cfg(cfg);
        let now = svc.time.rfc3339();
        let c = svc.store.add_customer("mailco", &now).await.unwrap();
        let mut tx = svc.store.begin().await.unwrap();
        for (mode, due) in [("immediate", 0), ("immediate", 0)] {
            tx.enqueue_mail(&NewMail {
                customer_id: c,
                customer_name: "acme",
                mode,
                recipients: r#"["a@x.example"]"#,
                event: "alert.raised",
                subject: "s",
                body: "b\n",
                created_at: &now,
                due,
                attachment: None,
            })
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        // Both fail once; the first fails again and is given up (2 attempts).
        let fake = Fake {
            fail: 3.into(),
            sent: Default::default(),
        };
        let t = svc.time.unix();
        assert_eq!(deliver_due(&svc, &fake, t).await.unwrap(), 2);
        assert_eq!(deliver_due(&svc, &fake, t).await.unwrap(), 0, "backoff");
        let later = t + 1_000_000;
        assert_eq!(deliver_due(&svc, &fake, later).await.unwrap(), 2);
        let rows = svc.store.mail_outbox().await.unwrap();
        assert!(rows[0].failed_at.is_some(), "{rows:?}");
        assert_eq!(rows[0].attempts, 2);
        assert!(rows[1].delivered_at.is_some(), "{rows:?}");
        assert_eq!(fake.sent.lock().unwrap().len(), 1);
        let audit: Vec<String> = svc
            .audit
            .records(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.kind == "telemetry.alert_email")
            .map(|r| r.entry.detail)
            .collect();
        assert_eq!(audit.len(), 2, "{audit:?}");
        assert!(
            audit[0].contains("\"failed\"") && audit[0].contains("451"),
            "{audit:?}"
        );
        assert!(audit[1].contains("\"delivered\""), "{audit:?}");
        assert!(!audit.concat().contains("a@x.example"));
    }

    #[test]
    fn digest_due_is_the_interval_end() {
        let h = Duration::from_secs(3600);
        assert_eq!(digest_due(0, h), 3600);
        assert_eq!(digest_due(3599, h), 3600);
        assert_eq!(digest_due(3600, h), 7200);
    }
}
