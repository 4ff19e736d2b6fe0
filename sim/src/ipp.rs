//! What a printer answers on its IPP port (HTTP, `POST` of
//! `application/ipp`) and on its raw port (PJL `INFO ID` / `INFO STATUS`),
//! enough for the agent's diagnostics and the demo. Values follow the
//! printer's SNMP profile when it has one (make and model), so every
//! protocol tells the same story.

use std::convert::Infallible;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipp::attribute::IppAttribute;
use ipp::model::{DelimiterTag, IppVersion, Operation, StatusCode};
use ipp::parser::IppParser;
use ipp::reader::IppReader;
use ipp::request::IppRequestResponse;
use ipp::value::IppValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Largest IPP request read (a Get-Printer-Attributes is a few hundred
/// bytes; print jobs are not accepted).
const MAX_REQUEST: usize = 64 * 1024;
/// A PJL client that says nothing for this long is dropped.
const PJL_IDLE: Duration = Duration::from_secs(10);
/// Most PJL bytes read from one connection.
const MAX_PJL: usize = 64 * 1024;

/// Who the printer says it is on IPP and PJL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub make_and_model: String,
    pub firmware: String,
    /// `idle`: IPP printer-state 3, PJL CODE=10001 "Ready".
    pub state_reasons: Vec<String>,
}

impl Identity {
    /// From the SNMP profile's vendor and model when there is one.
    pub fn new(vendor: Option<&str>, model: Option<&str>) -> Identity {
        let make_and_model = match (vendor, model) {
            (_, Some(m)) => m.to_string(),
            (Some(v), None) => format!("{v} printer"),
            (None, None) => "DWA Simulated Printer".to_string(),
        };
        Identity {
            make_and_model,
            firmware: format!("dwa-sim {}", env!("CARGO_PKG_VERSION")),
            state_reasons: vec!["none".to_string()],
        }
    }
}

fn attr(name: &str, v: IppValue) -> Option<IppAttribute> {
    IppAttribute::with_name(name, v).ok()
}

fn text(s: &str) -> Option<IppValue> {
    ipp::value::IppTextValue::new(s)
        .ok()
        .map(IppValue::TextWithoutLanguage)
}

/// The IPP answer to `body` (an IPP request), encoded.
pub fn answer(id: &Identity, body: &[u8]) -> Vec<u8> {
    let req = IppParser::new(IppReader::new(Cursor::new(body.to_vec()))).parse();
    let (version, request_id, op) = match &req {
        Ok(r) => (
            r.header().version,
            r.header().request_id,
            r.header().operation_or_status,
        ),
        Err(_) => (IppVersion::v1_1(), 0, -1),
    };
    let status = if req.is_err() {
        StatusCode::ClientErrorBadRequest
    } else if op == Operation::GetPrinterAttributes as i16 {
        StatusCode::SuccessfulOk
    } else {
        StatusCode::ServerErrorOperationNotSupported
    };
    let Ok(mut resp) = IppRequestResponse::new_response(version, status, request_id) else {
        return Vec::new();
    };
    if status == StatusCode::SuccessfulOk {
        let reasons = IppValue::Array(
            id.state_reasons
                .iter()
                .filter_map(|r| r.as_str().try_into().ok().map(IppValue::Keyword))
                .collect(),
        );
        let attrs = [
            attr("printer-state", IppValue::Enum(3)),
            attr("printer-state-reasons", reasons),
            text(&id.make_and_model).and_then(|v| attr("printer-make-and-model", v)),
            text(&id.firmware).and_then(|v| attr("printer-firmware-string-version", v)),
            text(&id.make_and_model).and_then(|v| attr("printer-info", v)),
        ];
        for a in attrs.into_iter().flatten() {
            resp.attributes_mut()
                .add(DelimiterTag::PrinterAttributes, a);
        }
    }
    resp.to_bytes().to_vec()
}

/// The PJL answers to whatever `INFO ID` / `INFO STATUS` the client sent.
pub fn pjl_answer(id: &Identity, input: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input).to_ascii_uppercase();
    let mut out = Vec::new();
    for line in text.split(['\r', '\n']) {
        let l = line.trim_start_matches(|c: char| c != '@').trim();
        if l.starts_with("@PJL INFO ID") {
            out.extend_from_slice(
                format!("@PJL INFO ID\r\n\"{}\"\r\n\x0c", id.make_and_model).as_bytes(),
            );
        } else if l.starts_with("@PJL INFO STATUS") {
            out.extend_from_slice(
                b"@PJL INFO STATUS\r\nCODE=10001\r\nDISPLAY=\"Ready\"\r\nONLINE=TRUE\r\n\x0c",
            );
        }
    }
    out
}

async fn handle(
    id: Arc<Identity>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, body: Vec<u8>, ctype: &str| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .header("server", "DWA-Sim IPP")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != hyper::Method::POST {
        return Ok(reply(405, b"IPP takes POST\n".to_vec(), "text/plain"));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(413, b"too large\n".to_vec(), "text/plain")),
    };
    Ok(reply(200, answer(&id, &body), "application/ipp"))
}

async fn serve_ipp(id: Arc<Identity>, sock: TcpStream, cancel: CancellationToken) {
    let svc = service_fn(move |req| handle(id.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc);
    tokio::select! {
        r = conn => if let Err(e) = r { tracing::debug!(error = %e, "IPP connection ended with an error") },
        _ = cancel.cancelled() => {}
    }
}

async fn serve_pjl(id: Arc<Identity>, mut sock: TcpStream, cancel: CancellationToken) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(PJL_IDLE, sock.read(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            },
        };
        seen.extend_from_slice(&buf[..n]);
        // Answer each complete line once; keep the unfinished tail.
        let Some(end) = seen.iter().rposition(|b| *b == b'\n') else {
            if seen.len() > MAX_PJL {
                return;
            }
            continue;
        };
        let out = pjl_answer(&id, &seen[..=end]);
        seen.drain(..=end);
        if !out.is_empty() && sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[derive(Clone, Copy)]
pub enum Kind {
    Ipp,
    Pjl,
}

/// Accepts on `listener` until `cancel`, one task per connection.
pub fn spawn(
    kind: Kind,
    id: Arc<Identity>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let name = match kind {
        Kind::Ipp => "ipp",
        Kind::Pjl => "pjl",
    };
    let t = tracker.clone();
    tracker.spawn(
        async move {
            loop {
                let (sock, _) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (id, cancel) = (id.clone(), cancel.clone());
                match kind {
                    Kind::Ipp => t.spawn(serve_ipp(id, sock, cancel)),
                    Kind::Pjl => t.spawn(serve_pjl(id, sock, cancel)),
                };
            }
        }
        .instrument(tracing::info_span!("printer", %addr, scheme = name)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_printer_attributes_is_answered_and_garbage_is_a_bad_request() {
        let id = Identity::new(Some("HP"), Some("HP Color LaserJet MFP M480f"));
        let uri: ipp::prelude::Uri = "ipp://127.0.0.1/ipp/print".parse().unwrap();
        let req = ipp::operation::GetPrinterAttributes::new(uri).unwrap();
        let body = ipp::operation::IppOperation::into_ipp_request(req).to_bytes();
        let out = answer(&id, &body);
        let r = IppParser::new(IppReader::new(Cursor::new(out)))
            .parse()
            .unwrap();
        assert_eq!(r.header().status_code(), StatusCode::SuccessfulOk);
        let g = r
            .attributes()
            .groups_of(DelimiterTag::PrinterAttributes)
            .next()
            .unwrap();
        assert_eq!(
            g.get("printer-make-and-model").unwrap().value().to_string(),
            "HP Color LaserJet MFP M480f"
        );
        let bad = answer(&id, b"\x01");
        let r = IppParser::new(IppReader::new(Cursor::new(bad)))
            .parse()
            .unwrap();
        assert_eq!(r.header().status_code(), StatusCode::ClientErrorBadRequest);
    }

    #[test]
    fn pjl_info_is_answered() {
        let id = Identity::new(None, None);
        let out = pjl_answer(
            &id,
            b"\x1b%-12345X@PJL\r\n@PJL INFO ID\r\n@PJL INFO STATUS\r\n",
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\"DWA Simulated Printer\"\r\n\x0c"), "{s}");
        assert!(s.contains("CODE=10001"), "{s}");
    }
}
