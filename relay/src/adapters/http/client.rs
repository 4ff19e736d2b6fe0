//! The relay's outbound HTTP/1.1 client for its few calls out (the alert
//! webhook, the identity provider): one request per connection, over
//! plain TCP or rustls against roots from a CA file. Callers bound the
//! whole exchange with their own time-out.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::error::RelayError;

/// Client TLS trusting the certificates of `ca_file` only; `key` names the
/// setting in errors (`alerts.ca_file`).
pub fn roots_from(ca_file: &Path, key: &str) -> Result<rustls::ClientConfig, RelayError> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca_file).map_err(|e| RelayError::file(ca_file, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(RelayError::Config(format!(
            "{key} {}: no certificates",
            ca_file.display()
        )));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RelayError::Tls(e.to_string()))
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The answer's head, and its body read up to the limit (an error past it).
pub type Answer = (http::response::Parts, Result<bytes::Bytes, String>);

/// Sends `req` to `host:port` (TLS when `tls` is given, the certificate
/// checked for `host`) and reads the answer's body up to `max_body` bytes.
pub async fn exchange(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: http::Request<Full<bytes::Bytes>>,
    max_body: usize,
) -> Result<Answer, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let io: Box<dyn Io> = match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("server name: {e}"))?;
            Box::new(
                tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?,
            )
        }
        None => Box::new(tcp),
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let call = async {
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, max_body)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading the answer: {e}"));
        Ok((parts, body))
    };
    // The connection is driven here, beside the call, rather than in a
    // task of its own: it lives exactly as long as the request using it.
    tokio::pin!(call, conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut call => break r,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = c {
                    break Err(format!("HTTP: {e}"));
                }
            }
        }
    }
}
