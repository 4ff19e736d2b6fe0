//! HTTP(S) probe: `GET /`, status and Server header; for TLS the
//! negotiated version, the certificate's subject and SHA-256. The printer
//! TLS configuration is the stream service's: any certificate (printers'
//! are self-signed), handshake signatures checked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dwa_proto::diag::{truncate, HttpResult, MAX_TEXT};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::ms_since;

pub async fn connect(addr: IpAddr, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let sa = SocketAddr::new(addr, port);
    match tokio::time::timeout(timeout, TcpStream::connect(sa)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connecting to {sa}: {e}")),
        Err(_) => Err(format!("no connection to {sa} within {timeout:?}")),
    }
}

/// The subject of a DER certificate, RFC 4514-ish text.
pub fn parse_subject(der: &[u8]) -> Option<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| truncate(&c.subject().to_string(), MAX_TEXT))
}

/// One HTTP/1.1 exchange on `io`; the body is read up to `max_body` bytes
/// (more is an error), or not at all when `max_body` is 0.
pub async fn exchange<I>(
    io: I,
    req: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(hyper::http::response::Parts, Bytes), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let r = async {
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP request: {e}"))?;
        let (parts, body) = resp.into_parts();
        if max_body == 0 {
            return Ok((parts, Bytes::new()));
        }
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| format!("HTTP body: {e}"))?
            .to_bytes();
        Ok((parts, body))
    }
    .await;
    conn.abort();
    r
}

fn get(host: &str) -> Result<Request<Full<Bytes>>, String> {
    Request::get("/")
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "dwa-agent-diagnostics")
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

pub fn host_header(addr: IpAddr, port: u16) -> String {
    SocketAddr::new(addr, port).to_string()
}

pub async fn probe(
    addr: IpAddr,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<HttpResult, String> {
    let t = Instant::now();
    let work = async {
        let tcp = connect(addr, port, timeout).await?;
        let req = get(&host_header(addr, port))?;
        let mut out = HttpResult {
            address: addr.to_string(),
            port,
            tls: tls.is_some(),
            status: 0,
            server: None,
            time_ms: 0.0,
            tls_version: None,
            cert_subject: None,
            cert_sha256: None,
        };
        let (parts, _) = match tls {
            None => exchange(tcp, req, 0).await?,
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.into());
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}:{port}: {e}"))?;
                let (_, conn) = s.get_ref();
                out.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
                if let Some(der) = conn.peer_certificates().and_then(|c| c.first()) {
                    out.cert_sha256 = Some(dwa_link::tls::fingerprint(der));
                    out.cert_subject = parse_subject(der);
                }
                exchange(s, req, 0).await?
            }
        };
        out.status = parts.status.as_u16();
        out.server = parts
            .headers
            .get(hyper::header::SERVER)
            .map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), MAX_TEXT));
        Ok::<_, String>(out)
    };
    let mut out = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("no HTTP answer within {timeout:?}")),
    };
    out.time_ms = ms_since(t);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_is_no_subject() {
        assert_eq!(super::parse_subject(b""), None);
        assert_eq!(super::parse_subject(&[0x30, 0x82, 0xff, 0xff, 1, 2]), None);
    }
}
