//! The HTTP client single sign-on talks to the identity provider with:
//! our hyper and rustls, one request per connection, no redirects
//! followed, `https://` (or loopback `http://`) only, the answer read up to
//! [`MAX_RESPONSE_BYTES`], everything within the configured time-out.

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;

use crate::adapters::http::client::{exchange, roots_from};

use crate::config::oidc::allowed_url;
use crate::config::OidcSection;
use crate::error::Result;
use crate::services::sso::{ProviderFuture, ProviderHttp, ProviderHttpError};

/// A provider's answer (discovery, keys, token, userinfo) is read up to this.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub struct ProviderClient {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl ProviderClient {
    /// For `[oidc]`: an `https://` issuer needs the roots of `ca_file`.
    pub fn new(cfg: &OidcSection) -> Result<Self> {
        let tls = if cfg.issuer.starts_with("https://") {
            Some(Arc::new(roots_from(&cfg.ca_file, "oidc.ca_file")?))
        } else {
            None
        };
        Ok(Self {
            tls,
            timeout: cfg.timeout,
        })
    }

    async fn exchange(
        &self,
        req: openidconnect::HttpRequest,
    ) -> std::result::Result<openidconnect::HttpResponse, ProviderHttpError> {
        let err = ProviderHttpError;
        let uri = req.uri().clone();
        let url = url::Url::parse(&uri.to_string()).map_err(|e| err(format!("URL: {e}")))?;
        if !allowed_url(&url) {
            return Err(err(format!(
                "{url}: only https:// (or http:// on loopback) is allowed"
            )));
        }
        let https = url.scheme() == "https";
        let host = url
            .host_str()
            .ok_or_else(|| err("URL without host".into()))?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let tls = if https { self.tls.clone() } else { None };
        if https && tls.is_none() {
            return Err(err("no TLS configuration".into()));
        }
        let (parts, body) = req.into_parts();
        let mut out = http::Request::builder()
            .method(parts.method)
            .uri(path)
            .header(header::HOST, authority)
            .header(
                header::USER_AGENT,
                concat!("dwa-relay/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in parts.headers.iter() {
            if k != header::HOST {
                out = out.header(k, v);
            }
        }
        let out = out
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| err(format!("request: {e}")))?;
        let work = async {
            let (parts, body) = exchange(&host, port, tls, out, MAX_RESPONSE_BYTES)
                .await
                .map_err(err)?;
            Ok(http::Response::from_parts(
                parts,
                body.map_err(err)?.to_vec(),
            ))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(err(format!("{uri}: no answer within {:?}", self.timeout))),
        }
    }
}

impl ProviderHttp for ProviderClient {
    fn call(&self, req: openidconnect::HttpRequest) -> ProviderFuture<'_> {
        Box::pin(self.exchange(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::oidc::fixtures::section;

    #[test]
    fn https_issuer_needs_roots_from_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let mut s = section();
        s.ca_file = empty;
        let e = ProviderClient::new(&s).err().expect("no roots");
        assert!(e.to_string().contains("oidc.ca_file"), "{e}");
        s.ca_file = dir.path().join("missing.pem");
        assert!(ProviderClient::new(&s).is_err());
        // A loopback http:// issuer (tests) needs no CA file.
        s.issuer = "http://127.0.0.1:9000".into();
        assert!(ProviderClient::new(&s).is_ok());
    }
}
