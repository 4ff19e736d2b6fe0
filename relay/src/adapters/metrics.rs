//! The Prometheus metrics listener: plain HTTP on `metrics.listen`, one
//! route (`GET /metrics`), behind a bearer token when `metrics.token_file`
//! is set. It samples what other registries count (`services::metrics::
//! Live`) and encodes the registry: OpenMetrics to a scraper that asks for
//! it, else Prometheus' text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::adapters::state::Relay;
use crate::config::MetricsListen;
use crate::services::metrics::Live;

/// Why the metrics listener did not start; the text names the key.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics.token_file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("metrics.token_file {0}: the token must be at least 16 characters")]
    TokenShort(String),
    #[error("metrics.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Scrapes served at once: a scraper or two, not a crowd.
const MAX_CONNECTIONS: usize = 16;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The token's SHA-256: compared in constant time, whatever its length.
#[derive(Clone)]
struct Token([u8; 32]);

impl Token {
    fn load(path: &std::path::Path) -> Result<Self, MetricsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetricsError::TokenFile {
            path: shown.clone(),
            source,
        })?;
        let t = text.trim();
        if t.len() < 16 {
            return Err(MetricsError::TokenShort(shown));
        }
        Ok(Self(Sha256::digest(t.as_bytes()).into()))
    }

    fn admits(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// Reads the token (a relative `token_file` from the data directory),
/// binds `metrics.listen` and serves it until the shutdown signal.
/// Returns the bound address; None when `listen` is `off`.
pub async fn start(relay: &Relay) -> Result<Option<SocketAddr>, MetricsError> {
    let MetricsListen::At(addr) = relay.cfg().metrics.listen else {
        return Ok(None);
    };
    let token = token(relay)?.map(Arc::new);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    relay.tracker.spawn(
        serve(relay.clone(), listener, token).instrument(tracing::info_span!("metrics_listener")),
    );
    Ok(Some(bound))
}

/// The token scrapers must send, if any.
fn token(relay: &Relay) -> Result<Option<Token>, MetricsError> {
    relay
        .cfg()
        .metrics
        .token_file
        .as_ref()
        .map(|p| -> PathBuf { relay.dir.0.join(p) })
        .map(|p| Token::load(&p))
        .transpose()
}

async fn serve(relay: Relay, listener: TcpListener, token: Option<Arc<Token>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = relay.shutdown.cancelled() => break,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (r, token) = (relay.clone(), token.clone());
        let shutdown = relay.shutdown.clone();
        relay.tracker.spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = answer(&r, token.as_deref(), &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(sock), svc);
                tokio::select! {
                    r = conn => if let Err(e) = r { tracing::debug!(error = %e, "metrics connection ended with an error") },
                    _ = shutdown.cancelled() => {}
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("metrics_conn", %peer)),
        );
    }
}

fn reply(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn answer(
    relay: &Relay,
    token: Option<&Token>,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            plain,
            "not found: GET /metrics\n".into(),
        );
    }
    if *req.method() != Method::GET && *req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into());
    }
    if token.is_some_and(|t| !t.admits(req)) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            plain,
            "bearer token required\n".into(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"dwa-relay metrics\""),
        );
        return r;
    }
    let slots = relay.cfg().limits.max_handshakes;
    relay.metrics.sample(Live {
        agents: relay.agents.len(),
        web_sessions: relay.web.live(),
        tunnels: relay.tunnels.live(),
        handshakes_in_use: slots.saturating_sub(relay.handshakes.available_permits()),
        handshake_slots: slots,
    });
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (body, kind) = if openmetrics {
        (relay.metrics.encode_openmetrics(), OPENMETRICS)
    } else {
        (relay.metrics.encode_text(), PROMETHEUS_TEXT)
    };
    match body {
        Ok(b) => reply(StatusCode::OK, kind, b),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            plain,
            "metrics could not be encoded\n".into(),
        ),
    }
}
