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

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use sqlx::{Row, SqliteConnection};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::config::AlertsSection;
use crate::db::Db;
use crate::error::{RelayError, Result};
use crate::util::{now_rfc3339, random_secret, unix_now};

/// Delivered and failed rows are kept this long, for inspection.
const KEEP_DONE_SECS: i64 = 7 * 24 * 3600;
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

/// Queues one event (inside the caller's transaction). Returns false when
/// the outbox is full and the event was dropped.
pub async fn enqueue(
    conn: &mut SqliteConnection,
    cfg: &AlertsSection,
    event: &str,
    mut payload: Value,
) -> Result<bool> {
    if cfg.webhook_url.is_none() {
        return Ok(true);
    }
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    if pending >= cfg.outbox_max as i64 {
        tracing::warn!(event, pending, "webhook outbox full; event dropped");
        return Ok(false);
    }
    payload["event"] = Value::from(event);
    payload["event_id"] = Value::from(random_secret(16));
    payload["created_at"] = Value::from(now_rfc3339());
    sqlx::query(
        "INSERT INTO webhook_outbox (event, body, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
    )
    .bind(event)
    .bind(payload.to_string())
    .bind(now_rfc3339())
    .bind(unix_now())
    .execute(&mut *conn)
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
pub async fn deliver_due(db: &Db, cfg: &AlertsSection, tls: &Tls, now: i64) -> Result<usize> {
    let Some(url) = cfg.webhook_url.as_deref() else {
        return Ok(0);
    };
    let secret = cfg
        .webhook_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or("");
    let rows = sqlx::query(
        "SELECT id, event, body, attempts FROM webhook_outbox \
         WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ? \
         ORDER BY next_attempt_at, id LIMIT ?",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&db.pool)
    .await?;
    for r in &rows {
        let (id, event, body, attempts): (i64, String, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let attempts = attempts as u32 + 1;
        let res = post(url, tls, cfg.timeout, id, &event, secret, body.into_bytes()).await;
        match res {
            Ok(()) => {
                sqlx::query("UPDATE webhook_outbox SET delivered_at = ?, attempts = ?, last_error = NULL WHERE id = ?")
                    .bind(now_rfc3339())
                    .bind(attempts)
                    .bind(id)
                    .execute(&db.pool)
                    .await?;
            }
            Err(e) => {
                let failed = attempts >= cfg.max_attempts;
                tracing::warn!(delivery = id, attempts, failed, error = %e, "webhook delivery failed");
                sqlx::query(
                    "UPDATE webhook_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, \
                     failed_at = CASE WHEN ? THEN ? ELSE NULL END WHERE id = ?",
                )
                .bind(attempts)
                .bind(e.to_string())
                .bind(now + backoff(cfg, attempts).as_secs() as i64)
                .bind(failed)
                .bind(now_rfc3339())
                .bind(id)
                .execute(&db.pool)
                .await?;
            }
        }
    }
    Ok(rows.len())
}

/// When the next pending row is due (unix seconds).
async fn next_due(db: &Db) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(&db.pool)
    .await?)
}

async fn prune(db: &Db) -> Result<()> {
    let cutoff = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - Duration::from_secs(KEEP_DONE_SECS as u64),
    )
    .to_string();
    sqlx::query(
        "DELETE FROM webhook_outbox WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL) AND created_at < ?",
    )
    .bind(cutoff)
    .execute(&db.pool)
    .await?;
    Ok(())
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
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(&cfg.ca_file).map_err(|e| RelayError::file(&cfg.ca_file, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(RelayError::Config(format!(
                "alerts.ca_file {}: no certificates",
                cfg.ca_file.display()
            )));
        }
        let c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Tls(Some(Arc::new(c))))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One POST, bounded by `timeout` from connect to the response's end.
async fn post(
    url: &str,
    tls: &Tls,
    timeout: Duration,
    delivery: i64,
    event: &str,
    secret: &str,
    body: Vec<u8>,
) -> std::result::Result<(), String> {
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
    let sig = signature(secret, &body);
    let work = async move {
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io: Box<dyn Io> = if https {
            let cfg = tls.0.clone().ok_or("no TLS configuration")?;
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| format!("server name: {e}"))?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("dwa-relay/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-DWA-Event", event)
            .header("X-DWA-Delivery", delivery.to_string())
            .header("X-DWA-Timestamp", unix_now().to_string())
            .header("X-DWA-Signature", sig)
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status();
        // Drain a little of the body so the receiver is not cut mid-write.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await;
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

/// Runs deliveries until shutdown: wakes when an event is queued, when the
/// next retry is due, and at least every 30 s.
pub fn spawn(relay: crate::app::Relay) -> Result<()> {
    let cfg = relay.cfg.alerts.clone();
    if cfg.webhook_url.is_none() {
        return Ok(());
    }
    let tls = Tls::load(&cfg)?;
    let notify: Arc<Notify> = relay.telemetry.wake.clone();
    let r = relay.clone();
    relay.tracker.spawn(
        async move {
            let mut last_prune = 0;
            loop {
                if let Err(e) = deliver_due(&r.db, &cfg, &tls, unix_now()).await {
                    tracing::error!(error = %e, "webhook outbox");
                }
                if unix_now() - last_prune > 3600 {
                    last_prune = unix_now();
                    if let Err(e) = prune(&r.db).await {
                        tracing::error!(error = %e, "webhook outbox prune");
                    }
                }
                let wait = match next_due(&r.db).await {
                    Ok(Some(t)) => (t - unix_now()).clamp(0, 30) as u64,
                    _ => 30,
                };
                if wait == 0 {
                    // Still due rows (a full batch): go on, but yield.
                    tokio::task::yield_now().await;
                    if r.shutdown.is_cancelled() {
                        break;
                    }
                    continue;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = r.shutdown.cancelled() => break,
                }
            }
        }
        .instrument(tracing::info_span!("webhook_outbox")),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    #[tokio::test]
    async fn delivery_retries_after_a_500_and_survives_in_the_outbox() {
        let (_tmp, db) = crate::services::telemetry::testutil::db().await;
        let (url, hits, got) = receiver("s3cret-s3cret-s3cret").await;
        let cfg = AlertsSection {
            webhook_url: Some(url),
            webhook_secret: Some(crate::config::Secret::new("s3cret-s3cret-s3cret")),
            ..Default::default()
        };
        let mut conn = db.pool.acquire().await.unwrap();
        assert!(enqueue(
            &mut conn,
            &cfg,
            "alert.raised",
            serde_json::json!({"alert": {"id": 1}})
        )
        .await
        .unwrap());
        drop(conn);
        let tls = Tls::load(&cfg).unwrap();
        let now = unix_now();
        assert_eq!(deliver_due(&db, &cfg, &tls, now).await.unwrap(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Not due again before the backoff.
        assert_eq!(deliver_due(&db, &cfg, &tls, now).await.unwrap(), 0);
        let (attempts, err): (i64, Option<String>) =
            sqlx::query_as("SELECT attempts, last_error FROM webhook_outbox")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(attempts, 1);
        assert!(err.unwrap_or_default().contains("500"));
        let later = now + backoff(&cfg, 1).as_secs() as i64;
        assert_eq!(deliver_due(&db, &cfg, &tls, later).await.unwrap(), 1);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["event"], "alert.raised");
        assert_eq!(got[0]["alert"]["id"], 1);
        let delivered: Option<String> =
            sqlx::query_scalar("SELECT delivered_at FROM webhook_outbox")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(delivered.is_some());
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_the_outbox_is_too() {
        let (_tmp, db) = crate::services::telemetry::testutil::db().await;
        // Nothing listens on this port (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = AlertsSection {
            webhook_url: Some(format!("http://127.0.0.1:{port}/x")),
            webhook_secret: Some(crate::config::Secret::new("s3cret-s3cret-s3cret")),
            max_attempts: 2,
            outbox_max: 1,
            ..Default::default()
        };
        let mut conn = db.pool.acquire().await.unwrap();
        assert!(
            enqueue(&mut conn, &cfg, "alert.raised", serde_json::json!({}))
                .await
                .unwrap()
        );
        assert!(
            !enqueue(&mut conn, &cfg, "alert.raised", serde_json::json!({}))
                .await
                .unwrap(),
            "outbox full"
        );
        drop(conn);
        let tls = Tls::load(&cfg).unwrap();
        let far = unix_now() + 1_000_000;
        deliver_due(&db, &cfg, &tls, unix_now()).await.unwrap();
        deliver_due(&db, &cfg, &tls, far).await.unwrap();
        assert_eq!(
            deliver_due(&db, &cfg, &tls, far * 2).await.unwrap(),
            0,
            "gave up after 2"
        );
        let failed: Option<String> = sqlx::query_scalar("SELECT failed_at FROM webhook_outbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(failed.is_some());
    }
}
