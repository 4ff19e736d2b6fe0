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
//! costs time, not memory), rewrites, yields data frames. **Decision**:
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
