//! HTTPS requests from the agent to the relay's web port (enrollment,
//! telemetry upload): TLS pinned to the relay's certificate fingerprint,
//! one connection per request, every wait bounded, answers size-capped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

use crate::config::join_host_port;
use crate::error::{AgentError, Result};

/// Largest answer read from the relay.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a request did not get an answer: connect/TLS/HTTP/timeouts. The
/// caller wraps it in its own error kind.
#[derive(Debug)]
pub struct Unreachable(pub String);

#[derive(Clone)]
pub struct RelayHttp {
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl RelayHttp {
    /// `pin`: SHA-256 of the relay's certificate, hex.
    pub fn new(relay: &url::Url, pin: &str, timeout: Duration) -> Result<RelayHttp> {
        let host = relay
            .host_str()
            .ok_or_else(|| AgentError::Config("relay URL has no host".into()))?
            .trim_matches(['[', ']'])
            .to_string();
        Ok(RelayHttp {
            host,
            port: relay.port_or_known_default().unwrap_or(443),
            tls: Arc::new(dwa_link::tls::pinned_client_config(pin)?),
            timeout,
        })
    }

    /// POSTs a JSON body; returns the status and the (capped) answer.
    pub async fn post_json(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> std::result::Result<(StatusCode, Bytes), Unreachable> {
        let addr = join_host_port(&self.host, self.port);
        let stream =
            dwa_link::transport::tls_connect(&addr, &self.host, self.tls.clone(), self.timeout)
                .await
                .map_err(|e| Unreachable(format!("cannot reach the relay at {addr}: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Unreachable(format!("HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| Unreachable("the relay did not answer in time".into()))?
            .map_err(|e| Unreachable(format!("HTTP: {e}")))?;
        let status = resp.status();
        // Bounded: a hostile or broken server cannot make us buffer much.
        let bytes = tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| Unreachable("the relay's answer timed out".into()))?
        .map_err(|e| Unreachable(format!("reading the answer: {e}")))?
        .to_bytes();
        Ok((status, bytes))
    }
}

/// The `error` field of a JSON error answer, else the status.
pub fn error_text(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {status}"))
}
