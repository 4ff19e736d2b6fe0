//! Streaming body rewriting: the printer's absolute URLs in pages, style
//! sheets and scripts are replaced by the session's origin, chunk by chunk.
//!
//! [`StreamRewriter`] replaces, ASCII case-insensitively,
//!
//! - `http://HOST[:PORT]` and `https://HOST[:PORT]` → `https://SESSION`,
//! - `ws://HOST[:PORT]` and `wss://HOST[:PORT]` → `wss://SESSION`,
//! - the same four with JSON/JS-escaped slashes (`http:\/\/HOST`, common in
//!   scripts) → `https:\/\/SESSION` / `wss:\/\/SESSION` (escaping kept),
//!
//! with the host, boundary and port rules of [`super::rewrite`]: the byte
//! after the host (or its port) must not continue it (`[A-Za-z0-9._@-]`, or a
//! `:` not followed by the printer's port), an explicit port must be the
//! printer's, and the byte before the scheme must not continue a scheme
//! (`[A-Za-z0-9+.-]`: `myhttp://HOST` is left alone). Not rewritten:
//! protocol-relative `//HOST/` in bodies, URLs with userinfo, entity-encoded
//! slashes (`http:&#x2F;&#x2F;`).
//!
//! This is literal rewriting, not parsing: a form field whose value is the
//! printer's own URL is rewritten too, and would be submitted back so.
//!
//! A chunk may end in the middle of a pattern: the rewriter holds back only
//! the bytes that could still start one (at most
//! [`StreamRewriter::max_buffered`], about 20 bytes plus the host's length)
//! and never the body.
//!
//! [`rewrite_body`] wraps a response body: decodes it per [`Encoding`]
//! (streaming, 16 KiB of decoded output at a time, so a decompression bomb
//! costs time, not memory), rewrites, yields data frames. A gzip body is one
//! member; bytes after its end are ignored, as Chromium does. **Decision**:
//! trailers of the printer's body are dropped — `Trailer` is hop-by-hop and
//! removed from the response headers anyway, and embedded web servers do not
//! send them.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use super::rewrite::{port_rule, Encoding, Rewriter};

/// Decoded bytes read at a time: the largest frame before rewriting.
const DECODE_CHUNK: usize = 16 * 1024;

/// Why a rewritten body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The printer's body failed (connection lost, tunnel closed...).
    #[error("reading the printer's response body: {0}")]
    Upstream(#[source] Box<dyn StdError + Send + Sync>),
    /// The body is not valid in its declared content coding (corrupt or
    /// truncated gzip, deflate or brotli).
    #[error("decoding the printer's {encoding:?} response body: {source}")]
    Decode {
        encoding: Encoding,
        #[source]
        source: io::Error,
    },
}

/// Carries an upstream error through the decoder's `io::Error`s so it can be
/// told apart from a decoding error.
#[derive(Debug)]
struct UpstreamError(Box<dyn StdError + Send + Sync>);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for UpstreamError {}

fn classify(error: io::Error, encoding: Encoding) -> BodyError {
    if error.get_ref().is_some_and(|e| e.is::<UpstreamError>()) {
        if let Some(inner) = error.into_inner() {
            return match inner.downcast::<UpstreamError>() {
                Ok(upstream) => BodyError::Upstream(upstream.0),
                Err(other) => BodyError::Upstream(other),
            };
        }
        return BodyError::Upstream("upstream error".into());
    }
    BodyError::Decode {
        encoding,
        source: error,
    }
}

/// Literal replacement of the printer's absolute URL prefixes in a byte
/// stream, chunk by chunk (see the module doc for the patterns).
#[derive(Debug)]
pub struct StreamRewriter {
    /// Lowercase spellings of the printer's host (IPv6 in brackets).
    hosts: Vec<Vec<u8>>,
    port: u16,
    printer_default: u16,
    /// `https://SESSION`, `wss://SESSION`, and with `\/\/`.
    https: Vec<u8>,
    wss: Vec<u8>,
    https_escaped: Vec<u8>,
    wss_escaped: Vec<u8>,
    /// Bytes held back: they may start a pattern that the next chunk ends.
    tail: Vec<u8>,
    /// The last byte passed (for the scheme's left boundary).
    prev: Option<u8>,
    max_tail: usize,
}

/// The input ended before a pattern could be decided.
struct NeedMore;

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
    eof: bool,
}

impl Cursor<'_> {
    /// Consumes `lit` (ASCII case-insensitively) if the input starts with
    /// it; NeedMore if the input is a proper prefix of it and may go on.
    fn eat(&mut self, lit: &[u8]) -> Result<bool, NeedMore> {
        let rest = &self.s[self.pos..];
        let n = rest.len().min(lit.len());
        if !rest[..n].eq_ignore_ascii_case(&lit[..n]) {
            return Ok(false);
        }
        if n < lit.len() {
            return if self.eof { Ok(false) } else { Err(NeedMore) };
        }
        self.pos += lit.len();
        Ok(true)
    }

    /// The next byte; None at the end of the stream.
    fn peek(&self) -> Result<Option<u8>, NeedMore> {
        match self.s.get(self.pos) {
            Some(&b) => Ok(Some(b)),
            None if self.eof => Ok(None),
            None => Err(NeedMore),
        }
    }
}

fn continues_scheme(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-')
}

fn continues_host(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b':')
}

impl StreamRewriter {
    pub fn new(rw: &Rewriter) -> Self {
        let hosts: Vec<Vec<u8>> = rw
            .body_host_forms()
            .into_iter()
            .map(String::into_bytes)
            .collect();
        let longest_host = hosts.iter().map(Vec::len).max().unwrap_or(0);
        let (https, wss) = rw.session_origins();
        let escape = |origin: &str| origin.replacen("://", ":\\/\\/", 1).into_bytes();
        StreamRewriter {
            // `https` + `:\/\/` + host + `:` + 5 digits + 1 byte to decide.
            max_tail: 5 + 5 + longest_host + 1 + 5 + 1,
            hosts,
            port: rw.printer_port(),
            printer_default: rw.printer_default_port(),
            https_escaped: escape(https),
            wss_escaped: escape(wss),
            https: https.as_bytes().to_vec(),
            wss: wss.as_bytes().to_vec(),
            tail: Vec::new(),
            prev: None,
        }
    }

    /// Bytes currently held back between chunks.
    pub fn buffered(&self) -> usize {
        self.tail.len()
    }

    /// The most bytes ever held back between chunks.
    pub fn max_buffered(&self) -> usize {
        self.max_tail
    }

    /// Rewrites `chunk`, appending to `out` everything that is decided; holds
    /// back at most [`Self::max_buffered`] bytes for the next call.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        out.reserve(chunk.len() + self.tail.len());
        let mut rest = chunk;
        if !self.tail.is_empty() {
            // Join the held-back bytes with just enough of the chunk to
            // decide every pattern that starts in them.
            let mut joined = std::mem::take(&mut self.tail);
            let held = joined.len();
            let take = chunk.len().min(self.max_tail);
            joined.extend_from_slice(&chunk[..take]);
            let done = self.process(&joined, held, false, out);
            if done < held {
                // Undecided even with `take` more bytes: the chunk was short
                // and is all held back with them.
                joined.drain(..done);
                self.tail = joined;
                self.check_tail();
                return;
            }
            rest = &chunk[done - held..];
            joined.clear();
            self.tail = joined; // keeps its small allocation
        }
        let done = self.process(rest, rest.len(), false, out);
        self.tail.extend_from_slice(&rest[done..]);
        self.check_tail();
    }

    /// Ends the stream: flushes what was held back (a pattern cut by the end
    /// of the body is decided as such).
    pub fn finish(&mut self, out: &mut BytesMut) {
        let tail = std::mem::take(&mut self.tail);
        let done = self.process(&tail, tail.len(), true, out);
        out.extend_from_slice(&tail[done..]);
    }

    fn check_tail(&self) {
        debug_assert!(self.tail.len() <= self.max_tail, "tail {}", self.tail.len());
    }

    /// Rewrites `data`, trying matches that start before `limit`; returns how
    /// far it got (everything before that is written to `out`). Without
    /// `eof`, stops at the first position that needs more input.
    fn process(&mut self, data: &[u8], limit: usize, eof: bool, out: &mut BytesMut) -> usize {
        let mut i = 0;
        let mut flushed = 0;
        while i < limit {
            let lower = data[i] | 0x20;
            if lower == b'h' || lower == b'w' {
                let prev = if i == 0 { self.prev } else { Some(data[i - 1]) };
                if !prev.is_some_and(continues_scheme) {
                    match self.try_match(&data[i..], eof) {
                        Err(NeedMore) => break,
                        Ok(Some((len, replacement))) => {
                            out.extend_from_slice(&data[flushed..i]);
                            out.extend_from_slice(replacement);
                            i += len;
                            flushed = i;
                            continue;
                        }
                        Ok(None) => {}
                    }
                }
            }
            i += 1;
        }
        out.extend_from_slice(&data[flushed..i]);
        if i > 0 {
            self.prev = Some(data[i - 1]);
        }
        i
    }

    /// A pattern at the start of `s`: its length and replacement.
    fn try_match(&self, s: &[u8], eof: bool) -> Result<Option<(usize, &[u8])>, NeedMore> {
        let mut c = Cursor { s, pos: 0, eof };
        let (default_port, websocket) = if c.eat(b"http")? {
            if c.eat(b"s")? {
                (443, false)
            } else {
                (80, false)
            }
        } else if c.eat(b"ws")? {
            if c.eat(b"s")? {
                (443, true)
            } else {
                (80, true)
            }
        } else {
            return Ok(None);
        };
        let escaped = if c.eat(b"://")? {
            false
        } else if c.eat(b":\\/\\/")? {
            true
        } else {
            return Ok(None);
        };
        let mut host = false;
        for form in &self.hosts {
            if c.eat(form)? {
                host = true;
                break;
            }
        }
        if !host {
            return Ok(None);
        }
        let mut explicit = None;
        if c.peek()? == Some(b':') {
            c.pos += 1;
            let mut port = 0u32;
            let mut digits = 0;
            while let Some(d) = c.peek()?.filter(u8::is_ascii_digit) {
                digits += 1;
                if digits > 5 {
                    return Ok(None);
                }
                port = port * 10 + u32::from(d - b'0');
                c.pos += 1;
            }
            if digits == 0 {
                return Ok(None);
            }
            explicit = Some(port);
        }
        if c.peek()?.is_some_and(continues_host) {
            return Ok(None);
        }
        if !port_rule(
            self.port,
            self.printer_default,
            Some(default_port),
            explicit,
        ) {
            return Ok(None);
        }
        let replacement = match (websocket, escaped) {
            (false, false) => &self.https,
            (true, false) => &self.wss,
            (false, true) => &self.https_escaped,
            (true, true) => &self.wss_escaped,
        };
        Ok(Some((c.pos, replacement)))
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

enum State {
    /// Waiting for the first bytes (to choose the deflate flavour, and to
    /// let an empty body stay empty whatever its declared coding).
    Start(ByteStream),
    /// Decoded bytes to rewrite.
    Decoding(ByteStream),
    Done,
}

/// A response body decoded and rewritten; see [`rewrite_body`].
pub struct RewriteBody {
    state: State,
    encoding: Encoding,
    rewriter: StreamRewriter,
}

impl fmt::Debug for RewriteBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewriteBody")
            .field("encoding", &self.encoding)
            .field("done", &matches!(self.state, State::Done))
            .field("buffered", &self.rewriter.buffered())
            .finish()
    }
}

impl RewriteBody {
    /// Bytes the rewriter holds back between frames (see
    /// [`StreamRewriter::buffered`]).
    pub fn buffered(&self) -> usize {
        self.rewriter.buffered()
    }

    /// The bound on [`Self::buffered`].
    pub fn max_buffered(&self) -> usize {
        self.rewriter.max_buffered()
    }
}

/// Is this the first byte of a zlib stream (CM = 8, window ≤ 32 KiB) rather
/// than raw deflate? A raw stream's first block could only start so with
/// non-zero padding bits, which no encoder writes. With the second byte, the
/// header checksum is checked too.
fn looks_like_zlib(first: &[u8]) -> bool {
    match first {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        [cmf] => cmf & 0x0f == 8 && cmf >> 4 <= 7,
        [] => false,
    }
}

fn decoder(encoding: Encoding, first: Bytes, raw: ByteStream) -> ByteStream {
    fn decoded<R: AsyncRead + Send + Sync + 'static>(reader: R) -> ByteStream {
        Box::pin(ReaderStream::with_capacity(reader, DECODE_CHUNK))
    }
    let zlib = looks_like_zlib(&first);
    let joined = stream::iter([Ok(first)]).chain(raw);
    match encoding {
        Encoding::Identity => Box::pin(joined),
        Encoding::Gzip => decoded(GzipDecoder::new(StreamReader::new(joined))),
        Encoding::Deflate if zlib => decoded(ZlibDecoder::new(StreamReader::new(joined))),
        Encoding::Deflate => decoded(DeflateDecoder::new(StreamReader::new(joined))),
        Encoding::Brotli => decoded(BrotliDecoder::new(StreamReader::new(joined))),
    }
}

/// Wraps a response body: decodes it per `encoding`, rewrites it with a
/// [`StreamRewriter`], yields `Bytes` data frames. Trailers are dropped (see
/// the module doc). An error of the printer's body, or a corrupt or truncated
/// encoding, ends the body with a [`BodyError`].
///
/// Returns a concrete, nameable body (`Send + Sync + 'static`): box it with
/// `http_body_util::combinators::BoxBody::new` if needed.
pub fn rewrite_body<B>(body: B, rw: &Rewriter, encoding: Encoding) -> RewriteBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let raw = body
        .into_data_stream()
        .map(|r| r.map_err(|e| io::Error::other(UpstreamError(e.into()))));
    RewriteBody {
        state: State::Start(Box::pin(raw)),
        encoding,
        rewriter: StreamRewriter::new(rw),
    }
}

impl Body for RewriteBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Start(raw) => match raw.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(classify(e, this.encoding))));
                    }
                    Poll::Ready(Some(Ok(first))) if first.is_empty() => {}
                    Poll::Ready(Some(Ok(first))) => {
                        let State::Start(raw) = std::mem::replace(&mut this.state, State::Done)
                        else {
                            return Poll::Ready(None); // unreachable: matched above
                        };
                        this.state = State::Decoding(decoder(this.encoding, first, raw));
                    }
                },
                State::Decoding(decoded) => match decoded.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        let mut out = BytesMut::new();
                        this.rewriter.feed(&chunk, &mut out);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(classify(e, this.encoding))));
                    }
                    Poll::Ready(None) => {
                        this.state = State::Done;
                        let mut out = BytesMut::new();
                        this.rewriter.finish(&mut out);
                        return Poll::Ready(
                            (!out.is_empty()).then(|| Ok(Frame::data(out.freeze()))),
                        );
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http_body_util::combinators::BoxBody;
    use http_body_util::StreamBody;

    use super::*;
    use crate::adapters::web::rewrite::{PrinterOrigin, Scheme, SessionOrigin};

    use crate::adapters::web::rewrite::tests::rw;

    fn http80() -> Rewriter {
        rw(Scheme::Http, "10.0.0.5", 80)
    }

    const S: &str = "https://s-abc.dwa.localhost:8443";

    /// Several patterns, escaped and not, near misses, and one at the very
    /// end of the stream.
    const SAMPLE: &str = concat!(
        "<a href=\"http://10.0.0.5/x\">a</a>\n",
        "<img src=\"HTTPS://10.0.0.5:80/y.png\">\n",
        "<script>var u = \"http:\\/\\/10.0.0.5\\/api\";",
        " new WebSocket(\"ws://10.0.0.5/sock\");</script>\n",
        "wss://10.0.0.5:80/s hhttp wwws http:/ http:\\/ ws:/\n",
        "http://10.0.0.50/no http://10.0.0.5.evil.com/no http://10.0.0.5:8080/no\n",
        "http://10.0.0.5@evil.com/no http://10.0.0.5:80@evil.com/no http://10.0.0.5_x/no\n",
        "http://10.0.0.5:000080/no http://10.0.0.5:/no\n",
        "myhttp://10.0.0.5/no xws://10.0.0.5/no\n",
        "(http://10.0.0.5) 'https://10.0.0.5:80' http://10.0.0.5?q http://10.0.0.5#f\n",
        "http://10.0.0.5",
    );

    fn expected_sample() -> String {
        [
            format!("<a href=\"{S}/x\">a</a>\n"),
            format!("<img src=\"{S}/y.png\">\n"),
            "<script>var u = \"https:\\/\\/s-abc.dwa.localhost:8443\\/api\";".into(),
            " new WebSocket(\"wss://s-abc.dwa.localhost:8443/sock\");</script>\n".into(),
            "wss://s-abc.dwa.localhost:8443/s hhttp wwws http:/ http:\\/ ws:/\n".into(),
            "http://10.0.0.50/no http://10.0.0.5.evil.com/no http://10.0.0.5:8080/no\n".into(),
            "http://10.0.0.5@evil.com/no http://10.0.0.5:80@evil.com/no http://10.0.0.5_x/no\n"
                .into(),
            "http://10.0.0.5:000080/no http://10.0.0.5:/no\n".into(),
            "myhttp://10.0.0.5/no xws://10.0.0.5/no\n".into(),
            format!("({S}) '{S}' {S}?q {S}#f\n"),
            S.into(),
        ]
        .concat()
    }

    /// Feeds `chunks` one by one, checking the held-back bytes stay bounded.
    fn run(rw: &Rewriter, chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = StreamRewriter::new(rw);
        let mut out = BytesMut::new();
        for chunk in chunks {
            s.feed(chunk, &mut out);
            assert!(s.buffered() <= s.max_buffered(), "{}", s.buffered());
        }
        s.finish(&mut out);
        assert_eq!(s.buffered(), 0);
        out.to_vec()
    }

    fn run_str(rw: &Rewriter, input: &str) -> String {
        String::from_utf8(run(rw, &[input.as_bytes()])).unwrap()
    }

    /// Pieces a printer page is made of: our patterns, near misses,
    /// escapes, arbitrary bytes.
    fn page_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"http://10.0.0.5/".to_vec()),
            Just(b"https://10.0.0.5:80".to_vec()),
            Just(b"http:\\/\\/10.0.0.5".to_vec()),
            Just(b"ws://10.0.0.5:8".to_vec()),
            Just(b"HTTP://10.0.0.50".to_vec()),
            Just(b"http:/".to_vec()),
            "[ -~]{0,12}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Whatever the page and wherever the network cuts it, the
        /// rewritten bytes are those of the page in one piece, and the
        /// rewriter holds back only a few bytes.
        #[test]
        fn the_rewrite_does_not_depend_on_chunk_boundaries(
            pieces in proptest::collection::vec(page_piece(), 0..40),
            cuts in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let r = http80();
            let page: Vec<u8> = pieces.concat();
            let whole = run(&r, &[&page]);
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut rest = &page[..];
            let mut sizes = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap_or(&1)).min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            proptest::prop_assert_eq!(run(&r, &chunks), whole);
        }
    }

    #[test]
    fn rewrites_every_pattern_in_one_chunk() {
        assert_eq!(run_str(&http80(), SAMPLE), expected_sample());
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let r = http80();
        let input = SAMPLE.as_bytes();
        let whole = run(&r, &[input]);
        assert_eq!(whole, expected_sample().as_bytes());
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run(&r, &[a, b]), whole, "split at {i}");
        }
        for size in 1..=40 {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(run(&r, &chunks), whole, "chunks of {size}");
        }
        // Two splits around every pattern-sized window, and empty chunks.
        for i in 0..input.len() {
            for j in i..(i + 40).min(input.len()) {
                let chunks = [&input[..i], &[][..], &input[i..j], &input[j..]];
                assert_eq!(run(&r, &chunks), whole, "splits at {i}, {j}");
            }
        }
    }

    #[test]
    fn without_a_pattern_the_output_is_the_input() {
        let r = http80();
        let mut input = Vec::new();
        for i in 0..20_000u32 {
            // Every byte value, and lots of h, w and near misses.
            input.push((i.wrapping_mul(2_654_435_761) >> 24) as u8);
            if i % 97 == 0 {
                input.extend_from_slice(b"http://10.0.0.");
            }
            if i % 89 == 0 {
                input.extend_from_slice(b"wss:\\/");
            }
        }
        input.extend_from_slice(b"http://10.0.0.");
        assert_eq!(run(&r, &[&input]), input);
        let chunks: Vec<&[u8]> = input.chunks(13).collect();
        assert_eq!(run(&r, &chunks), input);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&r, &chunks), input);
    }

    #[test]
    fn boundaries_and_ports() {
        let r = http80();
        let same = [
            "http://10.0.0.50",
            "http://10.0.0.5.",
            "http://10.0.0.5-x",
            "http://10.0.0.5A",
            "http://10.0.0.5:8080",
            "http://10.0.0.5:800",
            "http://10.0.0.5:8",
            "http://10.0.0.5:",
            "http://10.0.0.5:x",
            "http://10.0.0.5:80:",
            "http://10.0.0.5:80a",
            "http://10.0.0.5:443",
            "ftp://10.0.0.5/",
            "http://110.0.0.5/",
            "1http://10.0.0.5/",
            "+http://10.0.0.5/",
            "http//10.0.0.5/",
            "https:/\\/10.0.0.5/",
        ];
        for input in same {
            assert_eq!(run_str(&r, input), input, "{input}");
            assert_eq!(run_str(&r, &format!("{input} ")), format!("{input} "));
        }
        let cases = [
            ("http://10.0.0.5", S.to_owned()),
            ("http://10.0.0.5:80", S.to_owned()),
            ("http://10.0.0.5:80/", format!("{S}/")),
            ("https://10.0.0.5\"", format!("{S}\"")),
            ("http://10.0.0.5,", format!("{S},")),
            ("HtTp://10.0.0.5/", format!("{S}/")),
            ("\"http://10.0.0.5\"", format!("\"{S}\"")),
            ("=http://10.0.0.5/", format!("={S}/")),
            ("/http://10.0.0.5/", format!("/{S}/")),
            ("url(http://10.0.0.5/a.png)", format!("url({S}/a.png)")),
            ("http://10.0.0.5\\/", format!("{S}\\/")),
            (
                "https:\\/\\/10.0.0.5",
                "https:\\/\\/s-abc.dwa.localhost:8443".into(),
            ),
            (
                "ws:\\/\\/10.0.0.5:80",
                "wss:\\/\\/s-abc.dwa.localhost:8443".into(),
            ),
            ("http://10.0.0.5/http://10.0.0.5/", format!("{S}/{S}/")),
        ];
        for (input, want) in cases {
            assert_eq!(run_str(&r, input), want, "{input}");
        }
    }

    #[test]
    fn non_default_port_printer() {
        let r = rw(Scheme::Https, "Printer.Local", 8443);
        let input = "https://printer.local:8443/a http://PRINTER.LOCAL:8443/b \
                     https://printer.local/c http://printer.local/d https://printer.local:443/e";
        assert_eq!(
            run_str(&r, input),
            format!(
                "{S}/a {S}/b https://printer.local/c http://printer.local/d \
                 https://printer.local:443/e"
            )
        );
    }

    #[test]
    fn ipv6_printer() {
        let r = rw(Scheme::Http, "2001:0DB8::5", 80);
        let input = "http://[2001:0db8::5]/a http://[2001:db8::5]:80/b \
                     http://[2001:db8::50]/c http://2001:db8::5/d http://[2001:db8::5]:81/e";
        assert_eq!(
            run_str(&r, input),
            format!(
                "{S}/a {S}/b http://[2001:db8::50]/c http://2001:db8::5/d \
                 http://[2001:db8::5]:81/e"
            )
        );
    }

    #[test]
    fn an_empty_printer_host_matches_nothing() {
        let r = rw(Scheme::Http, " ", 80);
        assert_eq!(r.rewrite_url("http:///x"), None);
        assert_eq!(run_str(&r, "http:///x http://"), "http:///x http://");
    }

    #[test]
    fn session_on_443_has_no_port() {
        let r = Rewriter::new(
            PrinterOrigin {
                scheme: Scheme::Http,
                host: "10.0.0.5".into(),
                port: 80,
            },
            SessionOrigin {
                host: "s-abc.dwa.example".into(),
                port: 443,
            },
            "dwa_session",
        );
        assert_eq!(
            run_str(&r, "http://10.0.0.5/a ws://10.0.0.5/b"),
            "https://s-abc.dwa.example/a wss://s-abc.dwa.example/b"
        );
    }

    #[test]
    fn held_back_bytes_stay_small_whatever_the_input() {
        let r = rw(Scheme::Http, "printer.example.com", 80);
        let mut s = StreamRewriter::new(&r);
        let bound = s.max_buffered();
        assert!(bound < 64, "{bound}");
        let mut out = BytesMut::new();
        // Long runs of almost-patterns, fed byte by byte and in big chunks.
        let nasty = b"https:\\/\\/printer.example.com:0000".repeat(1000);
        for b in &nasty {
            s.feed(std::slice::from_ref(b), &mut out);
            assert!(s.buffered() <= bound);
        }
        s.feed(&nasty, &mut out);
        assert!(s.buffered() <= bound);
        s.finish(&mut out);
        assert_eq!(out.len(), 2 * nasty.len());
    }

    fn body_of(chunks: Vec<Vec<u8>>) -> StreamBody<impl Stream<Item = io::Result<Frame<Bytes>>>> {
        StreamBody::new(stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, io::Error>(Frame::data(Bytes::from(c)))),
        ))
    }

    fn chunked(data: &[u8], size: usize) -> Vec<Vec<u8>> {
        data.chunks(size).map(<[u8]>::to_vec).collect()
    }

    async fn collect(mut body: RewriteBody) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        assert!(body.is_end_stream());
        Ok(out)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn identity_body_is_rewritten_in_any_framing() {
        let r = http80();
        for size in [1, 3, 7, 64, 100_000] {
            let body = body_of(chunked(SAMPLE.as_bytes(), size));
            let out = collect(rewrite_body(body, &r, Encoding::Identity))
                .await
                .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected_sample(), "{size}");
        }
    }

    #[tokio::test]
    async fn encoded_bodies_are_decoded_and_rewritten() {
        let r = http80();
        let page = SAMPLE.repeat(50);
        // The last URL of one copy is followed by the next copy's `<`.
        let want = expected_sample().repeat(50);
        let plain = collect(rewrite_body(
            body_of(vec![page.clone().into_bytes()]),
            &r,
            Encoding::Identity,
        ))
        .await
        .unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), want);
        let encoded = [
            (Encoding::Gzip, gzip(page.as_bytes())),
            (Encoding::Deflate, zlib(page.as_bytes())),
            (Encoding::Deflate, raw_deflate(page.as_bytes())),
            (Encoding::Brotli, brotli(page.as_bytes())),
        ];
        for (encoding, data) in encoded {
            assert_ne!(data, page.as_bytes());
            for size in [1, 2, 7, 1000, 1 << 20] {
                let body = body_of(chunked(&data, size));
                let out = collect(rewrite_body(body, &r, encoding)).await;
                let out = out.unwrap_or_else(|e| panic!("{encoding:?} by {size}: {e}"));
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    want,
                    "{encoding:?} by {size}"
                );
            }
        }
    }

    #[test]
    fn zlib_and_raw_deflate_are_told_apart() {
        for level in 0..=9 {
            let c = flate2::Compression::new(level);
            for data in [&b""[..], b"x", b"<html>hello</html>", &[0u8; 70_000]] {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), c);
                e.write_all(data).unwrap();
                let z = e.finish().unwrap();
                assert!(looks_like_zlib(&z), "zlib level {level}");
                assert!(looks_like_zlib(&z[..1]), "zlib level {level}");
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), c);
                e.write_all(data).unwrap();
                let d = e.finish().unwrap();
                assert!(!looks_like_zlib(&d), "raw level {level} {:x?}", &d[..2]);
                assert!(!looks_like_zlib(&d[..1]), "raw level {level}");
            }
        }
    }

    async fn decode_error(encoding: Encoding, chunks: Vec<Vec<u8>>) {
        match collect(rewrite_body(body_of(chunks), &http80(), encoding)).await {
            Err(BodyError::Decode { encoding: e, .. }) => assert_eq!(e, encoding),
            other => panic!("{encoding:?}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn corrupt_or_truncated_bodies_fail_cleanly() {
        let page = SAMPLE.repeat(20);
        let gz = gzip(page.as_bytes());
        // Not gzip at all.
        decode_error(Encoding::Gzip, vec![b"<html>plain</html>".to_vec()]).await;
        // Corrupt in the middle (the CRC or the stream itself fails).
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0x5a;
        }
        decode_error(Encoding::Gzip, chunked(&bad, 5)).await;
        // Truncated: the trailer is missing.
        decode_error(Encoding::Gzip, vec![gz[..gz.len() - 4].to_vec()]).await;
        decode_error(Encoding::Gzip, vec![gz[..20].to_vec()]).await;
        // Deflate and brotli.
        let z = zlib(page.as_bytes());
        decode_error(Encoding::Deflate, vec![z[..z.len() / 2].to_vec()]).await;
        decode_error(Encoding::Deflate, vec![vec![0x78, 0x9c, 0xff, 0xff, 0xff]]).await;
        decode_error(Encoding::Deflate, vec![vec![0xff; 64]]).await;
        let br = brotli(page.as_bytes());
        decode_error(Encoding::Brotli, vec![br[..br.len() / 2].to_vec()]).await;
        decode_error(Encoding::Brotli, vec![b"\xff\xff\xff\xff garbage".to_vec()]).await;
        // Random garbage in every coding: an error, never a panic.
        let mut x = 0x1234_5678u32;
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Brotli] {
            decode_error(encoding, chunked(&garbage, 100)).await;
        }
    }

    #[tokio::test]
    async fn empty_bodies_stay_empty_in_any_coding() {
        for encoding in [
            Encoding::Identity,
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
        ] {
            let out = collect(rewrite_body(body_of(vec![]), &http80(), encoding)).await;
            assert_eq!(out.unwrap(), b"", "{encoding:?}");
            let out = collect(rewrite_body(body_of(vec![vec![]]), &http80(), encoding)).await;
            assert_eq!(out.unwrap(), b"", "{encoding:?}");
        }
    }

    #[tokio::test]
    async fn upstream_errors_are_reported_as_such() {
        for encoding in [Encoding::Identity, Encoding::Gzip] {
            let first = match encoding {
                Encoding::Identity => b"<html>http://10.0.0.5/".to_vec(),
                _ => gzip(b"<html>http://10.0.0.5/")[..10].to_vec(),
            };
            let body = StreamBody::new(stream::iter(vec![
                Ok(Frame::data(Bytes::from(first))),
                Err(io::Error::other("tunnel closed")),
            ]));
            match collect(rewrite_body(body, &http80(), encoding)).await {
                Err(BodyError::Upstream(e)) => assert_eq!(e.to_string(), "tunnel closed"),
                other => panic!("{encoding:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn trailers_are_dropped() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
        let body = StreamBody::new(stream::iter(vec![
            Ok::<_, io::Error>(Frame::data(Bytes::from_static(b"http://10.0.0.5/a"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let mut body = rewrite_body(body, &http80(), Encoding::Identity);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap());
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data_ref().unwrap(), format!("{S}/a").as_bytes());
    }

    /// A body of `count` copies of `chunk`, made on the fly.
    struct Repeat {
        chunk: Bytes,
        count: usize,
    }

    impl Body for Repeat {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.count == 0 {
                return Poll::Ready(None);
            }
            self.count -= 1;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }

    #[tokio::test]
    async fn a_64_mib_body_streams_with_bounded_buffering() {
        // Each chunk ends in the middle of a URL that the next one ends, and
        // holds another one whole.
        let mut chunk = b".0.5/ <a href=\"http://10.0.0.5/a\">".to_vec();
        chunk.resize(4093 - b"http://10.0".len(), b' ');
        chunk.extend_from_slice(b"http://10.0");
        let count = (64 << 20) / chunk.len() + 1;
        let body = Repeat {
            chunk: Bytes::from(chunk.clone()),
            count,
        };
        let mut body = rewrite_body(body, &http80(), Encoding::Identity);
        let bound = body.max_buffered();
        assert!(bound < 64);
        let (mut total, mut frames, mut largest) = (0usize, 0usize, 0usize);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(body.buffered() <= bound, "{}", body.buffered());
            total += data.len();
            largest = largest.max(data.len());
            frames += 1;
        }
        let delta = S.len() - "http://10.0.0.5".len();
        assert_eq!(total, count * chunk.len() + (2 * count - 1) * delta);
        assert!(frames >= count - 1, "{frames} frames for {count} chunks");
        assert!(largest <= chunk.len() + bound + 2 * delta, "{largest}");
    }

    #[tokio::test]
    async fn a_decompression_bomb_is_streamed_in_small_frames() {
        let size = 64 << 20;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let zeros = vec![0u8; 1 << 16];
        for _ in 0..size / zeros.len() {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < size / 500, "{}", bomb.len());
        let mut body = rewrite_body(body_of(vec![bomb]), &http80(), Encoding::Gzip);
        let (mut total, mut largest) = (0usize, 0usize);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            total += data.len();
            largest = largest.max(data.len());
        }
        assert_eq!(total, size);
        assert!(largest <= DECODE_CHUNK, "{largest}");
    }

    #[test]
    fn usable_with_hyper_bodies_and_box_body() {
        fn wrap(body: hyper::body::Incoming, rw: &Rewriter) -> BoxBody<Bytes, BodyError> {
            BoxBody::new(rewrite_body(body, rw, Encoding::Gzip))
        }
        let _: fn(hyper::body::Incoming, &Rewriter) -> BoxBody<Bytes, BodyError> = wrap;
    }
}
