//! The alert webhook's HTTP client: posts one outbox row to
//! `alerts.webhook_url` (plain HTTP or HTTPS against `alerts.ca_file`),
//! bounded by `alerts.timeout` from connect to the answer's end. The
//! outbox and its retries are `services::telemetry::webhook`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;

use crate::adapters::http::client::{exchange, roots_from};
use crate::adapters::state::Relay;
use crate::config::AlertsSection;
use crate::error::Result;
use crate::services::telemetry::webhook::{self, Post, SendFuture, Sender};

/// Starts the delivery task when a webhook is configured.
pub fn spawn(relay: &Relay) -> Result<()> {
    if let Some(client) = Client::new(&relay.cfg().alerts)? {
        webhook::spawn(&relay.svc, Arc::new(client));
    }
    Ok(())
}

/// Posts to one receiver.
pub struct Client {
    url: String,
    tls: Tls,
    timeout: Duration,
}

impl Client {
    pub fn new(cfg: &AlertsSection) -> Result<Option<Client>> {
        let Some(url) = cfg.webhook_url.clone() else {
            return Ok(None);
        };
        Ok(Some(Client {
            url,
            tls: Tls::load(cfg)?,
            timeout: cfg.timeout,
        }))
    }
}

impl Sender for Client {
    fn send(&self, p: Post) -> SendFuture<'_> {
        Box::pin(post(&self.url, &self.tls, self.timeout, p))
    }
}

/// TLS settings for `https://` webhooks: the CA file's roots.
#[derive(Clone)]
pub struct Tls(Option<Arc<rustls::ClientConfig>>);

impl Tls {
    pub fn load(cfg: &AlertsSection) -> Result<Tls> {
        let https = cfg
            .webhook_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        if !https {
            return Ok(Tls(None));
        }
        let c = roots_from(&cfg.ca_file, "alerts.ca_file")?;
        Ok(Tls(Some(Arc::new(c))))
    }
}

/// One POST, bounded by `timeout` from connect to the response's end.
async fn post(url: &str, tls: &Tls, timeout: Duration, p: Post) -> std::result::Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("webhook_url: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("webhook_url has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let Post {
        delivery,
        event,
        body,
        signature,
        timestamp,
    } = p;
    if https && tls.0.is_none() {
        return Err("no TLS configuration".into());
    }
    let tls = if https { tls.0.clone() } else { None };
    let work = async move {
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("dwa-relay/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-DWA-Event", event)
            .header("X-DWA-Delivery", delivery.to_string())
            .header("X-DWA-Timestamp", timestamp.to_string())
            .header("X-DWA-Signature", signature)
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        // A little of the body is read so the receiver is not cut
        // mid-write; what it says does not matter.
        let (parts, _) = exchange(&host, port, tls, req, 64 * 1024).await?;
        let status = parts.status;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {status}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::telemetry::webhook::{backoff, deliver_due, enqueue, signature};
    use serde_json::Value;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A receiver on 127.0.0.1:0 answering 500 first, then 200; it checks
    /// the signature of every request it gets.
    async fn receiver(
        secret: &'static str,
    ) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<Value>>>) {
        use axum::routing::post;
        let hits = Arc::new(AtomicUsize::new(0));
        let got = Arc::new(std::sync::Mutex::new(vec![]));
        let (h, g) = (hits.clone(), got.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (h, g) = (h.clone(), g.clone());
                async move {
                    let sig = headers
                        .get("x-dwa-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    assert_eq!(sig, signature(secret, &body), "signature");
                    assert!(headers.get("x-dwa-timestamp").is_some());
                    if h.fetch_add(1, Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, hits, got)
    }

    /// Services whose alerts section is `cfg`, and a client for it.
    async fn with(
        cfg: AlertsSection,
    ) -> (tempfile::TempDir, Arc<crate::services::Services>, Client) {
        let (tmp, svc) = crate::testutil::svc().await;
        let client = Client::new(&cfg).unwrap().expect("a webhook is configured");
        let mut all = (*svc.cfg()).clone();
        all.alerts = cfg;
        svc.set_cfg(all);
        (tmp, svc, client)
    }

    async fn queue(svc: &crate::services::Services, payload: Value) -> bool {
        let mut tx = svc.store.begin().await.unwrap();
        let now = svc.time.rfc3339();
        let queued = enqueue(
            &mut tx,
            &svc.cfg().alerts,
            "alert.raised",
            payload,
            &now,
            svc.time.unix(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        queued
    }

    #[tokio::test]
    async fn delivery_retries_after_a_500_and_survives_in_the_outbox() {
        let (url, hits, got) = receiver("s3cret-s3cret-s3cret").await;
        let (_tmp, svc, client) = with(AlertsSection {
            webhook_url: Some(url),
            webhook_secret: Some(crate::config::Secret::new("s3cret-s3cret-s3cret")),
            ..Default::default()
        })
        .await;
        assert!(queue(&svc, serde_json::json!({"alert": {"id": 1}})).await);
        let now = svc.time.unix();
        assert_eq!(deliver_due(&svc, &client, now).await.unwrap(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Not due again before the backoff.
        assert_eq!(deliver_due(&svc, &client, now).await.unwrap(), 0);
        let row = svc.store.outbox().await.unwrap().remove(0);
        assert_eq!(row.attempts, 1);
        assert!(row.last_error.unwrap_or_default().contains("500"));
        let later = now + backoff(&svc.cfg().alerts, 1).as_secs() as i64;
        assert_eq!(deliver_due(&svc, &client, later).await.unwrap(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["event"], "alert.raised");
        assert_eq!(got[0]["alert"]["id"], 1);
        let row = svc.store.outbox().await.unwrap().remove(0);
        assert!(row.delivered_at.is_some());
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_outbox_is_too() {
        // Nothing listens on this port (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (_tmp, svc, client) = with(AlertsSection {
            webhook_url: Some(format!("http://127.0.0.1:{port}/x")),
            webhook_secret: Some(crate::config::Secret::new("s3cret-s3cret-s3cret")),
            max_attempts: 2,
            outbox_max: 1,
            ..Default::default()
        })
        .await;
        assert!(queue(&svc, serde_json::json!({})).await);
        assert!(!queue(&svc, serde_json::json!({})).await, "outbox full");
        let now = svc.time.unix();
        let far = now + 1_000_000;
        deliver_due(&svc, &client, now).await.unwrap();
        deliver_due(&svc, &client, far).await.unwrap();
        assert_eq!(
            deliver_due(&svc, &client, far * 2).await.unwrap(),
            0,
            "gave up after 2"
        );
        let row = svc.store.outbox().await.unwrap().remove(0);
        assert!(row.failed_at.is_some());
    }
}
