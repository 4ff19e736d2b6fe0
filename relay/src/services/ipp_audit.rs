//! IPP recognised in traffic to port 631 and audited per operation: the
//! operation's name, its request id and the attributes it asks for — never
//! document data.
//!
//! Two entries: [`BodyTap`] for a web session, where hyper already parsed
//! the HTTP request and hands over its de-chunked body; [`StreamTap`] for a
//! raw tunnel, which follows the client→printer byte stream itself (HTTP
//! head, `Content-Length` or chunked body, pipelined requests). Both keep
//! at most [`MAX_ATTRIBUTES`] bytes of one request body, only until its
//! attribute groups are parsed (by the `ipp` crate), and give up quietly on
//! anything they do not understand: the stream is never held up or changed.

use std::io::Cursor;

use dwa_proto::audit::Event;
use ipp::model::{DelimiterTag, Operation};
use ipp::parser::{IppParseError, IppParser};
use num_traits::FromPrimitive;
use serde::Serialize;

/// The IPP header and attribute groups of one request, at most.
pub const MAX_ATTRIBUTES: usize = 64 * 1024;
/// An HTTP request head, at most.
const MAX_HEAD: usize = 16 * 1024;
/// One chunk-size or trailer line, at most.
const MAX_LINE: usize = 1024;
/// Operations reported per connection; beyond it they are only counted.
pub const MAX_EVENTS: u64 = 1000;
/// Requested attribute names kept per operation.
const MAX_REQUESTED: usize = 64;

/// One recognised IPP operation (or why a request could not be read).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IppOperation {
    /// e.g. `Get-Printer-Attributes`; `unknown-0x1234` for unknown ids.
    pub operation: String,
    pub operation_id: i16,
    /// e.g. `2.0`.
    pub version: String,
    pub request_id: i32,
    pub requested_attributes: Vec<String>,
    pub printer_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IppEvent {
    Operation(IppOperation),
    /// An IPP request whose attributes could not be parsed (malformed,
    /// truncated, oversized): the reason, for the audit record.
    Unreadable(String),
}

/// RFC 8011 style names, from the crate's enum (`GetPrinterAttributes` →
/// `Get-Printer-Attributes`).
pub fn operation_name(id: i16) -> String {
    match Operation::from_i16(id) {
        Some(op) => {
            let raw = format!("{op:?}");
            let mut out = String::with_capacity(raw.len() + 4);
            let mut prev_lower = false;
            for c in raw.chars() {
                if prev_lower && c.is_ascii_uppercase() {
                    out.push('-');
                }
                prev_lower = c.is_ascii_lowercase();
                out.push(c);
            }
            let out = out.replace("Cups-", "CUPS-");
            match out.strip_suffix("-Uri") {
                Some(base) => format!("{base}-URI"),
                None => out,
            }
        }
        None => format!("unknown-0x{:04x}", id as u16),
    }
}

/// Parses the IPP header and attribute groups at the start of `body`.
/// `Ok(None)`: more bytes are needed.
fn parse(body: &[u8]) -> Result<Option<IppOperation>, String> {
    // The parser wants an owned reader; the copy is bounded by MAX_ATTRIBUTES.
    let parser = IppParser::new(Cursor::new(body.to_vec()));
    match parser.parse_parts() {
        Ok((header, attrs, _rest)) => {
            let op_group = attrs.first_of(DelimiterTag::OperationAttributes);
            let text = |name: &str| {
                op_group
                    .and_then(|g| g.get(name))
                    .map(|a| a.value().to_string())
            };
            let requested = op_group
                .and_then(|g| g.get("requested-attributes"))
                .map(|a| match a.value() {
                    ipp::value::IppValue::Array(v) => v.iter().map(|x| x.to_string()).collect(),
                    other => vec![other.to_string()],
                })
                .unwrap_or_default()
                .into_iter()
                .take(MAX_REQUESTED)
                .map(|s: String| s.chars().take(128).collect())
                .collect();
            let v = header.version.0;
            Ok(Some(IppOperation {
                operation: operation_name(header.operation_or_status),
                operation_id: header.operation_or_status,
                version: format!("{}.{}", v >> 8, v & 0xff),
                request_id: header.request_id,
                requested_attributes: requested,
                printer_uri: text("printer-uri").map(|s| s.chars().take(512).collect()),
            }))
        }
        Err(IppParseError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(format!("malformed IPP request: {e}")),
    }
}

/// Follows one IPP request body, de-chunked, until its attributes are read.
#[derive(Debug, Default)]
pub struct BodyTap {
    buf: Vec<u8>,
    /// Parse again once the buffer holds this much (doubling: a body fed
    /// byte by byte costs O(n log n), not O(n²)).
    next_try: usize,
    done: bool,
}

impl BodyTap {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            next_try: 8,
            done: false,
        }
    }

    /// Body bytes in order; returns the event once there is one.
    pub fn feed(&mut self, data: &[u8]) -> Option<IppEvent> {
        if self.done {
            return None;
        }
        let room = MAX_ATTRIBUTES - self.buf.len();
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        if self.buf.len() < self.next_try && self.buf.len() < MAX_ATTRIBUTES {
            return None;
        }
        self.next_try = (self.buf.len() * 2).max(64);
        self.attempt(false)
    }

    /// The body ended: what it held, if nothing was reported yet.
    pub fn end(&mut self) -> Option<IppEvent> {
        if self.done {
            return None;
        }
        self.attempt(true)
    }

    fn attempt(&mut self, ended: bool) -> Option<IppEvent> {
        let ev = match parse(&self.buf) {
            Ok(Some(op)) => IppEvent::Operation(op),
            Ok(None) if ended => IppEvent::Unreadable(format!(
                "IPP request ends inside its attributes ({} bytes)",
                self.buf.len()
            )),
            Ok(None) if self.buf.len() >= MAX_ATTRIBUTES => {
                IppEvent::Unreadable(format!("IPP attributes longer than {MAX_ATTRIBUTES} bytes"))
            }
            Ok(None) => return None,
            Err(e) => IppEvent::Unreadable(e),
        };
        self.done = true;
        // Whatever followed the attributes (document data) is dropped now.
        self.buf = Vec::new();
        Some(ev)
    }
}

/// Where [`StreamTap`] is in the client's byte stream.
#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    /// `Content-Length` body: bytes left.
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    /// The CRLF after a chunk's data: bytes of it left.
    ChunkEnd(u8),
    Trailer(Vec<u8>),
    /// Not HTTP we can follow: nothing more is inspected on this connection.
    Lost,
}

/// Follows a client→printer byte stream (a raw tunnel to 631) and reports
/// each IPP request in it. Never fails and never blocks: it only looks.
#[derive(Debug)]
pub struct StreamTap {
    state: State,
    /// The current request's body is IPP and is being read.
    body: Option<BodyTap>,
    chunked: bool,
    events: Vec<IppEvent>,
    reported: u64,
    /// Operations seen beyond [`MAX_EVENTS`].
    pub dropped: u64,
}

impl Default for StreamTap {
    fn default() -> Self {
        Self::new()
    }
}

/// How a request's body is framed, from its head.
struct Head {
    ipp: bool,
    chunked: bool,
    length: u64,
}

fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete HTTP head".into()),
        Err(e) => return Err(format!("not an HTTP request: {e}")),
    }
    let (mut ipp, mut chunked, mut length) = (false, false, 0u64);
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        let v = v.trim();
        if h.name.eq_ignore_ascii_case("content-type") {
            ipp = v
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/ipp"));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            length = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
        }
    }
    let post = req.method.is_some_and(|m| m.eq_ignore_ascii_case("POST"));
    Ok(Head {
        ipp: ipp && post,
        chunked,
        length,
    })
}

impl StreamTap {
    pub fn new() -> Self {
        Self {
            state: State::Head(Vec::new()),
            body: None,
            chunked: false,
            events: Vec::new(),
            reported: 0,
            dropped: 0,
        }
    }

    fn emit(&mut self, e: Option<IppEvent>) {
        let Some(e) = e else { return };
        if self.reported < MAX_EVENTS {
            self.reported += 1;
            self.events.push(e);
        } else {
            self.dropped += 1;
        }
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Events found so far, handed over once.
    pub fn take(&mut self) -> Vec<IppEvent> {
        std::mem::take(&mut self.events)
    }

    fn body_bytes(&mut self, d: &[u8]) {
        if let Some(b) = self.body.as_mut() {
            let e = b.feed(d);
            self.emit(e);
        }
    }

    fn request_done(&mut self) {
        if let Some(mut b) = self.body.take() {
            let e = b.end();
            self.emit(e);
        }
        self.state = State::Head(Vec::new());
    }

    fn lose(&mut self, why: String) {
        if self.body.is_some() {
            self.body = None;
            self.emit(Some(IppEvent::Unreadable(why)));
        }
        self.state = State::Lost;
    }

    /// The next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Lost => return,
                State::Head(h) => {
                    // Bytes up to and including the head's blank line.
                    let before = h.len();
                    let take = data.len().min(MAX_HEAD - before);
                    h.extend_from_slice(&data[..take]);
                    let Some(end) = find_blank_line(h, before.saturating_sub(3)) else {
                        if h.len() >= MAX_HEAD {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    let consumed = end - before;
                    let head = parse_head(&h[..end]);
                    data = &data[consumed..];
                    let head = match head {
                        Ok(x) => x,
                        Err(_) => {
                            self.state = State::Lost;
                            return;
                        }
                    };
                    self.body = head.ipp.then(BodyTap::new);
                    self.chunked = head.chunked;
                    self.state = if head.chunked {
                        State::ChunkSize(Vec::new())
                    } else if head.length > 0 {
                        State::Fixed(head.length)
                    } else {
                        self.request_done();
                        continue;
                    };
                }
                State::Fixed(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    let finished = *left == 0;
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    self.body_bytes(chunk);
                    if finished {
                        self.request_done();
                    }
                }
                State::ChunkSize(line) => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_LINE {
                            self.lose("chunk-size line too long".into());
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let text = String::from_utf8_lossy(line);
                    let size = text.split(';').next().unwrap_or("").trim().to_string();
                    match u64::from_str_radix(&size, 16) {
                        Ok(0) => self.state = State::Trailer(Vec::new()),
                        Ok(n) => self.state = State::ChunkData(n),
                        Err(_) => self.lose(format!("bad chunk size {size:?}")),
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    self.body_bytes(chunk);
                }
                State::ChunkEnd(left) => {
                    // CRLF (a bare LF is tolerated).
                    if data[0] == b'\n' {
                        self.state = State::ChunkSize(Vec::new());
                    } else if data[0] == b'\r' && *left == 2 {
                        *left = 1;
                    } else {
                        self.lose("chunk not followed by CRLF".into());
                        return;
                    }
                    data = &data[1..];
                }
                State::Trailer(line) => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_LINE {
                            self.lose("trailer line too long".into());
                        }
                        return;
                    };
                    line.extend_from_slice(&data[..nl]);
                    let blank = line.iter().all(|b| *b == b'\r');
                    line.clear();
                    data = &data[nl + 1..];
                    if blank {
                        self.request_done();
                    }
                }
            }
        }
    }

    /// The client's side ended: a request cut short is reported.
    pub fn end(&mut self) {
        if let Some(mut b) = self.body.take() {
            let e = b.end();
            self.emit(e);
        }
        self.state = State::Lost;
    }
}

/// Index just past the first "\r\n\r\n" (or "\n\n") in `h`, searching from `from`.
fn find_blank_line(h: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < h.len() {
        if h[i] == b'\n' {
            if h.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if h.get(i + 1) == Some(&b'\r') && h.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Where an IPP request was seen.
#[derive(Debug, Clone)]
pub enum Via {
    /// A web session (its id).
    Session(String),
    /// A raw tunnel and the client address the request came from.
    Tunnel { id: String, source: String },
}

/// The audit record of one event, to `device`.
pub fn event(ev: &IppEvent, device: i64, via: Via) -> Event {
    let (session, tunnel, source) = match via {
        Via::Session(s) => (Some(s), None, None),
        Via::Tunnel { id, source } => (None, Some(id), Some(source)),
    };
    let (operation, op) = match ev {
        IppEvent::Operation(op) => (Some(op.operation.clone()), Some(op)),
        IppEvent::Unreadable(_) => (None, None),
    };
    Event::IppOperation {
        device,
        session,
        tunnel,
        source,
        operation,
        operation_id: op.map(|o| o.operation_id),
        version: op.map(|o| o.version.clone()),
        request_id: op.map(|o| o.request_id),
        requested_attributes: op.map(|o| o.requested_attributes.clone()),
        printer_uri: op.and_then(|o| o.printer_uri.clone()),
        error: match ev {
            IppEvent::Unreadable(why) => Some(why.clone()),
            IppEvent::Operation(_) => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipp::operation::IppOperation as _;
    use ipp::prelude::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Any bytes a client sends to port 631, in any chunks: the tap
        /// never panics and holds bounded state.
        #[test]
        fn the_stream_tap_takes_any_bytes(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            cut in 1usize..300,
        ) {
            let mut tap = StreamTap::new();
            for c in data.chunks(cut) {
                tap.feed(c);
            }
            let _ = tap.take();
        }

        /// A real request, with bytes flipped, in any chunks: same.
        #[test]
        fn mutated_requests_are_read_or_given_up(
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..16),
            cut in 1usize..64,
            chunked in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = http(&print_job(b"%!PS data"), chunked);
            for (at, x) in flips {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
            let mut tap = StreamTap::new();
            for c in bytes.chunks(cut) {
                tap.feed(c);
            }
            let _ = tap.take();
        }
    }

    fn get_printer_attributes() -> Vec<u8> {
        let uri: Uri = "ipp://printer.local/ipp/print".parse().unwrap_or_default();
        let op = IppOperationBuilder::get_printer_attributes(uri)
            .attributes(["printer-state", "printer-name"])
            .build()
            .expect("operation");
        op.into_ipp_request().to_bytes().to_vec()
    }

    fn print_job(doc: &[u8]) -> Vec<u8> {
        let uri: Uri = "ipp://printer.local/ipp/print".parse().unwrap_or_default();
        let payload = IppPayload::new(std::io::Cursor::new(doc.to_vec()));
        let op = IppOperationBuilder::print_job(uri, payload)
            .job_title("secret title")
            .build()
            .expect("operation");
        let req = op.into_ipp_request();
        let mut out = req.header().to_bytes().to_vec();
        out.extend_from_slice(&req.attributes().to_bytes());
        out.extend_from_slice(doc);
        out
    }

    fn http(body: &[u8], chunked: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if chunked {
            out.extend_from_slice(
                b"POST /ipp/print HTTP/1.1\r\nHost: p\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            for c in body.chunks(7) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(
                format!(
                    "POST /ipp/print HTTP/1.1\r\nHost: p\r\nContent-Type: application/ipp\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
        out
    }

    fn ops(events: &[IppEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                IppEvent::Operation(o) => o.operation.clone(),
                IppEvent::Unreadable(w) => format!("unreadable: {w}"),
            })
            .collect()
    }

    #[test]
    fn names_follow_the_rfc() {
        assert_eq!(operation_name(0x0b), "Get-Printer-Attributes");
        assert_eq!(operation_name(0x02), "Print-Job");
        assert_eq!(operation_name(0x4002), "CUPS-Get-Printers");
        assert_eq!(operation_name(0x0003), "Print-URI");
        assert_eq!(operation_name(0x400c), "CUPS-Get-PPDs");
        assert_eq!(operation_name(0x7777), "unknown-0x7777");
    }

    #[test]
    fn a_body_yields_operation_and_requested_attributes() {
        let mut t = BodyTap::new();
        let ev = t.feed(&get_printer_attributes()).or_else(|| t.end());
        let Some(IppEvent::Operation(op)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(op.operation, "Get-Printer-Attributes");
        assert_eq!(op.requested_attributes, ["printer-state", "printer-name"]);
        assert_eq!(
            op.printer_uri.as_deref(),
            Some("ipp://printer.local/ipp/print")
        );
        assert_eq!(op.version, "1.1");
    }

    #[test]
    fn pipelined_plain_and_chunked_requests_over_odd_splits() {
        let mut stream = http(&get_printer_attributes(), false);
        stream.extend(b"GET / HTTP/1.1\r\nHost: p\r\n\r\n");
        stream.extend(http(&print_job(&[0x42; 100_000]), true));
        stream.extend(http(&get_printer_attributes(), true));
        for split in [1usize, 3, 7, 1000, usize::MAX] {
            let mut t = StreamTap::new();
            for c in stream.chunks(split.min(stream.len())) {
                t.feed(c);
            }
            t.end();
            assert_eq!(
                ops(&t.take()),
                [
                    "Get-Printer-Attributes",
                    "Print-Job",
                    "Get-Printer-Attributes"
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn document_data_is_never_kept() {
        let mut t = BodyTap::new();
        let body = print_job(&[0x42; 200_000]);
        let mut ev = None;
        for c in body.chunks(4096) {
            ev = ev.or(t.feed(c));
        }
        assert!(matches!(ev, Some(IppEvent::Operation(_))));
        assert!(
            t.buf.capacity() == 0,
            "buffer released after the attributes"
        );
        let ev = event(
            &ev.unwrap_or(IppEvent::Unreadable(String::new())),
            1,
            Via::Session("s".into()),
        );
        let detail = format!("{:?}", ev.detail());
        assert!(!detail.contains("BBBB"), "{detail}");
    }

    #[test]
    fn hostile_input_never_panics_and_stays_bounded() {
        // Not HTTP at all: the connection is no longer inspected.
        let mut t = StreamTap::new();
        t.feed(&[0xff; 100_000]);
        t.end();
        assert!(t.take().is_empty());
        // An endless head.
        let mut t = StreamTap::new();
        t.feed(b"POST / HTTP/1.1\r\n");
        for _ in 0..10_000 {
            t.feed(b"X-A: b\r\n");
        }
        assert!(matches!(t.state, State::Lost));
        // IPP content type, garbage body.
        let mut t = StreamTap::new();
        t.feed(&http(
            &[0x01, 0x01, 0x00, 0x0b, 0, 0, 0, 1, 0x99, 0x99],
            false,
        ));
        let e = ops(&t.take());
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("unreadable"), "{e:?}");
        // Truncated attributes, then the client goes away.
        let mut t = StreamTap::new();
        let b = get_printer_attributes();
        let mut s = http(&b, false);
        s.truncate(s.len() - 5);
        t.feed(&s);
        t.end();
        let e = ops(&t.take());
        assert!(e.len() == 1 && e[0].contains("ends inside"), "{e:?}");
        // Attributes that never end, within a huge chunked body.
        let mut t = StreamTap::new();
        t.feed(b"POST / HTTP/1.1\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut body = vec![0x02, 0x00, 0x00, 0x0b, 0, 0, 0, 1, 0x01];
        for _ in 0..10_000 {
            // charset attribute, name "a", value 20 bytes
            body.extend([0x47, 0, 1, b'a', 0, 20]);
            body.extend([b'x'; 20]);
        }
        for c in body.chunks(4000) {
            t.feed(format!("{:x}\r\n", c.len()).as_bytes());
            t.feed(c);
            t.feed(b"\r\n");
        }
        let e = ops(&t.take());
        assert!(e.len() == 1 && e[0].contains("longer than"), "{e:?}");
        // Bad chunk sizes, bad lengths, random bytes after a valid head.
        for junk in [
            &b"POST / HTTP/1.1\r\nContent-Type: application/ipp\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Type: application/ipp\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Type: application/ipp\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"\r\n\r\n\r\n\n\n\n",
        ] {
            let mut t = StreamTap::new();
            t.feed(junk);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut rnd = vec![0u8; 5000];
            for b in rnd.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            t.feed(&rnd);
            t.end();
            let _ = t.take();
        }
    }

    #[test]
    fn the_number_of_reported_operations_is_bounded() {
        let one = http(&get_printer_attributes(), false);
        let mut t = StreamTap::new();
        for _ in 0..(MAX_EVENTS + 10) {
            t.feed(&one);
        }
        assert_eq!(t.take().len() as u64, MAX_EVENTS);
        assert_eq!(t.dropped, 10);
    }
}
