//! IPP Get-Printer-Attributes over HTTP (`POST /ipp/print`), built and
//! parsed with the `ipp` crate.

use std::io::Cursor;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dwa_proto::diag::{truncate, IppResult, MAX_TEXT};
use http_body_util::Full;
use ipp::attribute::IppAttributes;
use ipp::model::DelimiterTag;
use ipp::operation::{GetPrinterAttributes, IppOperation};
use ipp::parser::IppParser;
use ipp::reader::IppReader;
use ipp::value::IppValue;

use super::http::{connect, exchange, host_header};
use super::ms_since;

/// Largest IPP answer read (the attributes asked for fit in a few KiB;
/// a full attribute dump of a big MFP is tens of KiB).
const MAX_BODY: usize = 256 * 1024;

const ATTRS: [&str; 5] = [
    "printer-state",
    "printer-state-reasons",
    "printer-make-and-model",
    "printer-firmware-string-version",
    "printer-info",
];

/// What the probe reports of an IPP response.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub status: String,
    pub state: Option<String>,
    pub reasons: Vec<String>,
    pub make_and_model: Option<String>,
    pub firmware: Option<String>,
}

fn text(v: &IppValue) -> String {
    truncate(&v.to_string(), MAX_TEXT)
}

fn values(v: &IppValue) -> Vec<String> {
    match v {
        IppValue::Array(a) => a.iter().take(64).map(text).collect(),
        other => vec![text(other)],
    }
}

fn state_name(v: &IppValue) -> String {
    match v {
        IppValue::Enum(3) | IppValue::Integer(3) => "idle".into(),
        IppValue::Enum(4) | IppValue::Integer(4) => "processing".into(),
        IppValue::Enum(5) | IppValue::Integer(5) => "stopped".into(),
        other => text(other),
    }
}

fn find<'a>(attrs: &'a IppAttributes, name: &str) -> Option<&'a IppValue> {
    attrs
        .groups_of(DelimiterTag::PrinterAttributes)
        .find_map(|g| g.get(name))
        .map(|a| a.value())
}

/// Parses an IPP response; any malformed, truncated or hostile input is an
/// error, never a panic.
pub fn parse_response(body: &[u8]) -> Result<Summary, String> {
    let body = body.to_vec();
    // The crate is not ours: a panic in it must not take the agent down.
    let parsed =
        std::panic::catch_unwind(move || IppParser::new(IppReader::new(Cursor::new(body))).parse())
            .map_err(|_| "the IPP parser failed on this answer".to_string())?
            .map_err(|e| format!("malformed IPP answer: {e}"))?;
    let attrs = parsed.attributes();
    let firmware = find(attrs, "printer-firmware-string-version")
        .map(|v| values(v).join(", "))
        .filter(|s| !s.is_empty());
    Ok(Summary {
        status: parsed.header().status_code().to_string(),
        state: find(attrs, "printer-state").map(state_name),
        reasons: find(attrs, "printer-state-reasons")
            .map(values)
            .unwrap_or_default(),
        make_and_model: find(attrs, "printer-make-and-model").map(text),
        firmware,
    })
}

pub async fn probe(addr: IpAddr, port: u16, timeout: Duration) -> Result<IppResult, String> {
    let t = Instant::now();
    let host = host_header(addr, port);
    let uri: ipp::prelude::Uri = format!("ipp://{host}/ipp/print")
        .parse()
        .map_err(|e| format!("printer URI: {e}"))?;
    let op = GetPrinterAttributes::with_attributes(uri, ATTRS)
        .map_err(|e| format!("building the IPP request: {e}"))?;
    let body = op.into_ipp_request().to_bytes();
    let req = hyper::Request::post("/ipp/print")
        .header(hyper::header::HOST, &host)
        .header(hyper::header::CONTENT_TYPE, "application/ipp")
        .header(hyper::header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let work = async {
        let tcp = connect(addr, port, timeout).await?;
        exchange(tcp, req, MAX_BODY).await
    };
    let (parts, body) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no IPP answer within {timeout:?}"))??;
    if !parts.status.is_success() {
        return Err(format!("the printer answered HTTP {}", parts.status));
    }
    let s = parse_response(&body)?;
    Ok(IppResult {
        address: addr.to_string(),
        port,
        http_status: parts.status.as_u16(),
        ipp_status: s.status,
        printer_state: s.state,
        printer_state_reasons: s.reasons,
        make_and_model: s.make_and_model,
        firmware: s.firmware,
        time_ms: ms_since(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipp::attribute::IppAttribute;
    use ipp::model::{IppVersion, StatusCode};
    use ipp::request::IppRequestResponse;

    fn answer() -> Vec<u8> {
        let mut r =
            IppRequestResponse::new_response(IppVersion::v1_1(), StatusCode::SuccessfulOk, 1)
                .unwrap();
        let a = r.attributes_mut();
        let p = DelimiterTag::PrinterAttributes;
        a.add(
            p,
            IppAttribute::with_name("printer-state", IppValue::Enum(3)).unwrap(),
        );
        a.add(
            p,
            IppAttribute::with_name(
                "printer-state-reasons",
                IppValue::Array(vec![
                    IppValue::Keyword("toner-low-warning".try_into().unwrap()),
                    IppValue::Keyword("media-low-report".try_into().unwrap()),
                ]),
            )
            .unwrap(),
        );
        a.add(
            p,
            IppAttribute::with_name(
                "printer-make-and-model",
                IppValue::TextWithoutLanguage("HP LaserJet M507".try_into().unwrap()),
            )
            .unwrap(),
        );
        a.add(
            p,
            IppAttribute::with_name(
                "printer-firmware-string-version",
                IppValue::TextWithoutLanguage("2409081_052578".try_into().unwrap()),
            )
            .unwrap(),
        );
        r.to_bytes().to_vec()
    }

    #[test]
    fn a_printer_answer_is_summarised() {
        let s = parse_response(&answer()).unwrap();
        assert_eq!(s.status, StatusCode::SuccessfulOk.to_string());
        assert_eq!(s.state.as_deref(), Some("idle"));
        assert_eq!(s.reasons, vec!["toner-low-warning", "media-low-report"]);
        assert_eq!(s.make_and_model.as_deref(), Some("HP LaserJet M507"));
        assert_eq!(s.firmware.as_deref(), Some("2409081_052578"));
    }

    #[test]
    fn truncated_and_hostile_answers_are_errors_not_panics() {
        let full = answer();
        for cut in 0..full.len() {
            // Any prefix: an error or a partial summary, never a panic.
            let _ = parse_response(&full[..cut]);
        }
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        // A value claiming 65535 bytes with 3 behind it.
        let mut bad = full[..8].to_vec();
        bad.extend_from_slice(&[0x04, 0x21, 0x00, 0x01, b'x', 0xff, 0xff, 1, 2, 3]);
        assert!(parse_response(&bad).is_err());
        let noise: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        let _ = parse_response(&noise);
    }
}
