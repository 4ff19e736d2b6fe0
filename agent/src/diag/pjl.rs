//! PJL `INFO ID` and `INFO STATUS` on the raw port (9100). Each answer ends
//! with a form feed; reading stops after both, at [`MAX_READ`] bytes, or at
//! the timeout, whichever comes first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dwa_proto::diag::{truncate, PjlResult, MAX_TEXT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http::connect;
use super::ms_since;

pub const MAX_READ: usize = 16 * 1024;

/// Universal Exit Language around the commands: the printer leaves any
/// language it was in and returns to PJL afterwards.
const REQUEST: &[u8] = b"\x1b%-12345X@PJL\r\n@PJL INFO ID\r\n@PJL INFO STATUS\r\n\x1b%-12345X";

/// What `INFO ID` and `INFO STATUS` said.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub id: Option<String>,
    pub code: Option<u32>,
    pub display: Option<String>,
    pub online: Option<bool>,
}

fn unquote(s: &str) -> String {
    truncate(s.trim().trim_matches('"'), MAX_TEXT)
}

/// Parses the printer's answers (any bytes: never panics).
pub fn parse(data: &[u8]) -> Parsed {
    let text = String::from_utf8_lossy(data);
    let mut out = Parsed::default();
    for section in text.split('\x0c') {
        let mut lines = section
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let Some(head) = lines.next() else { continue };
        let head = head
            .trim_start_matches(|c: char| c != '@')
            .to_ascii_uppercase();
        if head.starts_with("@PJL INFO ID") {
            out.id = lines.next().map(unquote);
        } else if head.starts_with("@PJL INFO STATUS") {
            for l in lines {
                let Some((k, v)) = l.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_uppercase().as_str() {
                    "CODE" => out.code = v.trim().parse().ok(),
                    "DISPLAY" => out.display = Some(unquote(v)),
                    "ONLINE" => out.online = Some(v.trim().eq_ignore_ascii_case("TRUE")),
                    _ => {}
                }
            }
        }
    }
    out
}

pub async fn probe(addr: IpAddr, port: u16, timeout: Duration) -> Result<PjlResult, String> {
    let t = Instant::now();
    let mut s = connect(addr, port, timeout).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, s.write_all(REQUEST))
        .await
        .map_err(|_| format!("sending PJL timed out after {timeout:?}"))?
        .map_err(|e| format!("sending PJL: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    // Both answers in, the connection closed, the cap or the deadline.
    while buf.iter().filter(|b| **b == 0x0c).count() < 2 && buf.len() < MAX_READ {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                let room = MAX_READ - buf.len();
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Ok(Err(e)) => return Err(format!("reading the PJL answer: {e}")),
        }
    }
    if buf.is_empty() {
        return Err(format!("no PJL answer within {timeout:?}"));
    }
    let p = parse(&buf);
    Ok(PjlResult {
        address: addr.to_string(),
        port,
        id: p.id,
        status_code: p.code,
        display: p.display,
        online: p.online,
        raw: truncate(&String::from_utf8_lossy(&buf), MAX_TEXT),
        time_ms: ms_since(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] = b"@PJL INFO ID\r\n\"HP LaserJet M507\"\r\n\x0c@PJL INFO STATUS\r\nCODE=10001\r\nDISPLAY=\"Ready\"\r\nONLINE=TRUE\r\n\x0c";

    #[test]
    fn id_and_status_are_read() {
        let p = parse(ANSWER);
        assert_eq!(p.id.as_deref(), Some("HP LaserJet M507"));
        assert_eq!(p.code, Some(10001));
        assert_eq!(p.display.as_deref(), Some("Ready"));
        assert_eq!(p.online, Some(true));
    }

    #[test]
    fn truncated_oversized_and_garbage_answers_do_not_panic() {
        for cut in 0..ANSWER.len() {
            let _ = parse(&ANSWER[..cut]);
        }
        let p = parse(b"@PJL INFO STATUS\r\nCODE=99999999999999999999\r\nONLINE\r\nDISPLAY=\x0c");
        assert_eq!(p.code, None);
        let big = vec![b'A'; 1 << 20];
        let mut huge = b"@PJL INFO ID\r\n".to_vec();
        huge.extend_from_slice(&big);
        assert!(parse(&huge).id.unwrap().len() <= MAX_TEXT);
        let _ = parse(&[0xff, 0xfe, 0x0c, 0x0c, b'@', 0x80]);
        assert_eq!(parse(b""), Parsed::default());
    }
}
