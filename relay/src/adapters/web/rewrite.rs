//! Header rewriting and URL matching for one web session.
//!
//! A [`Rewriter`] is built once per session from the printer's origin (as the
//! agent reaches it) and the session's public origin. The proxy then calls
//! [`Rewriter::request_headers`] on every request before sending it to the
//! printer, [`Rewriter::response_headers`] on every response, and, when that
//! returns [`BodyPlan::Rewrite`], wraps the body with
//! [`super::body::rewrite_body`].
//!
//! # When a URL "points at the printer"
//!
//! [`Rewriter::rewrite_url`] (headers) and the body rewriter use the same
//! rules:
//!
//! - scheme `http` or `https` (either, whatever the printer's own scheme:
//!   printers redirect http→https and back), and in bodies and
//!   [`Rewriter::rewrite_url`] also `ws`/`wss`; a `Location` may also be
//!   protocol-relative (`//addr/...`);
//! - host equal to the printer's, ASCII case-insensitively; an IPv6 printer
//!   is written in brackets (`[2001:db8::5]`) — in headers any spelling of the
//!   same address matches, in bodies the registered and the canonical
//!   spelling do; an IPv4 literal matches only as written (`10.0.0.5`, not
//!   `010.0.0.5` or `0x0a000005`);
//! - the host ends at a boundary: `http://10.0.0.5` does not match inside
//!   `http://10.0.0.50`, `http://10.0.0.5.evil.com` or
//!   `http://10.0.0.5@evil.com` (where `10.0.0.5` is userinfo);
//! - port: an explicit port must equal the printer's port. A URL without a
//!   port matches when the printer's port is the default port of the URL's
//!   scheme (`https://addr/` for a printer on 443) or of the printer's own
//!   scheme (`https://addr/` for a printer on `http://addr:80`, the usual
//!   http→https redirect). **Decision**: when the printer is on a
//!   non-default port (say `http://addr:8080`), `http://addr/` is *not*
//!   rewritten: it names the same device but another port (most likely 80),
//!   which this session does not proxy, and pretending it were the proxied
//!   port would serve one port's pages under the other's paths. A
//!   protocol-relative URL has no scheme of its own: without a port it
//!   matches only when the printer is on its scheme's default port.
//!
//! The rewritten URL is the session's origin (`https://s-abc.example:8443`,
//! or `wss://...` for `ws`/`wss`) followed by the rest of the original URL
//! (path, query, fragment) byte for byte. Userinfo in a header URL
//! (`http://user@addr/`) is dropped.
//!
//! A redirect from a printer registered as `http` to its own `https://addr/`
//! is rewritten to the session like any other: if the printer insists on the
//! other scheme, the browser loops on that redirect. The cure is to register
//! the printer with the scheme it serves; nothing here can tell.

use std::net::Ipv6Addr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

/// URL scheme of a printer's embedded web server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where the printer lives, as the agent reaches it.
#[derive(Clone, Debug)]
pub struct PrinterOrigin {
    pub scheme: Scheme,
    /// IP literal or name, as registered: `"192.168.1.50"`, `"2001:db8::5"`
    /// (no brackets; brackets are tolerated and stripped), `"printer.local"`.
    pub host: String,
    pub port: u16,
}

/// The session's public origin, always served over HTTPS.
#[derive(Clone, Debug)]
pub struct SessionOrigin {
    /// `"s-abc.dwa.localhost"`.
    pub host: String,
    /// 443 is omitted in URLs.
    pub port: u16,
}

/// Content coding of a response body that will be rewritten. The body is
/// decoded on the way and sent to the browser without a content coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    /// `gzip` or `x-gzip`.
    Gzip,
    /// `deflate`: zlib-wrapped as the RFC says, or raw as some servers send
    /// it (told apart by the first bytes, as browsers do).
    Deflate,
    /// `br`.
    Brotli,
}

/// What the proxy must do with a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyPlan {
    /// Forward the body as it is (headers say nothing changed about it).
    PassThrough,
    /// Wrap the body with [`super::body::rewrite_body`] using `encoding`;
    /// [`Rewriter::response_headers`] has already removed `Content-Length`
    /// and `Content-Encoding`.
    Rewrite { encoding: Encoding },
}

/// Response content types whose bodies are rewritten (the media type, without
/// parameters, compared case-insensitively).
///
/// **Decision**: pages, style sheets and scripts only. JSON and XML are
/// *not* rewritten: embedded web servers use them as the data channel of
/// their own scripts (HP's LEDM, Xerox, Ricoh...), which read settings and
/// write them back; rewriting a URL the printer holds in its settings (a
/// web-services endpoint, a scan destination) would make the page write the
/// session's host into the printer's configuration.
pub const REWRITTEN_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "application/xhtml+xml",
    "text/css",
    "application/javascript",
    "text/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "text/ecmascript",
];

/// Content codings the body rewriter decodes; `Accept-Encoding` on requests
/// is narrowed to these.
const DECODABLE_CODINGS: &[&str] = &["gzip", "x-gzip", "deflate", "br", "identity"];

/// Hop-by-hop headers removed in both directions (besides those named in
/// `Connection`).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Scheme of a URL being matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UrlScheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl UrlScheme {
    fn default_port(self) -> u16 {
        match self {
            UrlScheme::Http | UrlScheme::Ws => 80,
            UrlScheme::Https | UrlScheme::Wss => 443,
        }
    }

    fn is_websocket(self) -> bool {
        matches!(self, UrlScheme::Ws | UrlScheme::Wss)
    }
}

/// The port rule (see the module doc): `explicit` is the URL's port if it
/// has one, `url_default` its scheme's default port (None when
/// protocol-relative).
pub(crate) fn port_rule(
    printer_port: u16,
    printer_default: u16,
    url_default: Option<u16>,
    explicit: Option<u32>,
) -> bool {
    match explicit {
        Some(p) => p == u32::from(printer_port),
        None => url_default == Some(printer_port) || printer_port == printer_default,
    }
}

/// Rewrites headers and URLs of one web session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Rewriter {
    scheme: Scheme,
    /// Lowercase, no brackets.
    host: String,
    /// The printer's address when `host` is an IPv6 literal.
    host_v6: Option<Ipv6Addr>,
    port: u16,
    /// Lowercase, no brackets.
    session_host: String,
    session_port: u16,
    cookie: String,
    printer_origin: String,
    session_origin: String,
    session_ws_origin: String,
    host_header: HeaderValue,
    /// Rewrite HTML/CSS/JavaScript bodies (on by default).
    bodies: bool,
}

/// `host` with brackets if it is an IPv6 literal, then `:port` unless it is
/// `default`.
fn authority(host: &str, port: u16, default: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == default {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

impl Rewriter {
    /// `our_cookie` is the name of the relay's session cookie: it is never
    /// forwarded to the printer, and the printer cannot set it.
    pub fn new(printer: PrinterOrigin, session: SessionOrigin, our_cookie: &str) -> Self {
        let host = normalize_host(&printer.host);
        let host_v6 = host.parse::<Ipv6Addr>().ok();
        let session_host = normalize_host(&session.host);
        let printer_authority = authority(&host, printer.port, printer.scheme.default_port());
        let session_authority = authority(&session_host, session.port, 443);
        // A registered host is validated upstream; should it still hold a
        // byte a header cannot carry, drop that byte rather than panic.
        let header: String = printer_authority
            .chars()
            .filter(char::is_ascii_graphic)
            .collect();
        let host_header =
            HeaderValue::from_str(&header).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Rewriter {
            scheme: printer.scheme,
            printer_origin: format!("{}://{printer_authority}", printer.scheme.as_str()),
            session_origin: format!("https://{session_authority}"),
            session_ws_origin: format!("wss://{session_authority}"),
            host,
            host_v6,
            port: printer.port,
            session_host,
            session_port: session.port,
            cookie: our_cookie.to_owned(),
            host_header,
            bodies: true,
        }
    }

    /// Leaves every body as the printer sent it (headers are still
    /// rewritten): for a page the literal rewriting would break.
    pub fn without_body_rewriting(mut self) -> Self {
        self.bodies = false;
        self
    }

    /// The `Host` header sent to the printer: `192.168.1.50`,
    /// `192.168.1.50:8080`, `[2001:db8::5]:8080` — the port omitted when it
    /// is the default for the printer's scheme.
    pub fn printer_host_header(&self) -> HeaderValue {
        self.host_header.clone()
    }

    /// `http://192.168.1.50` or `https://[2001:db8::5]:8443`.
    pub fn printer_origin(&self) -> String {
        self.printer_origin.clone()
    }

    /// `https://s-abc.dwa.localhost:8443` (`:443` omitted).
    pub fn session_origin(&self) -> String {
        self.session_origin.clone()
    }

    /// The spellings of the printer's host searched for in bodies, lowercase;
    /// an IPv6 literal in brackets, registered and canonical spellings.
    /// Empty for an empty host (which nothing should match).
    pub(crate) fn body_host_forms(&self) -> Vec<String> {
        if self.host.is_empty() {
            return Vec::new();
        }
        match self.host_v6 {
            Some(addr) => {
                let mut forms = vec![format!("[{}]", self.host)];
                let canonical = format!("[{addr}]");
                if !forms.contains(&canonical) {
                    forms.push(canonical);
                }
                forms
            }
            None => vec![self.host.clone()],
        }
    }

    pub(crate) fn printer_port(&self) -> u16 {
        self.port
    }

    pub(crate) fn printer_default_port(&self) -> u16 {
        self.scheme.default_port()
    }

    /// `https://session` and `wss://session`.
    pub(crate) fn session_origins(&self) -> (&str, &str) {
        (&self.session_origin, &self.session_ws_origin)
    }

    fn printer_host_matches(&self, host: &str, bracketed: bool) -> bool {
        if bracketed {
            match (self.host_v6, host.parse::<Ipv6Addr>()) {
                (Some(ours), Ok(theirs)) => ours == theirs,
                // A zone index or the like: compare as written.
                _ => self.host.contains(':') && host.eq_ignore_ascii_case(&self.host),
            }
        } else {
            !self.host.contains(':') && host.eq_ignore_ascii_case(&self.host)
        }
    }

    /// Rewrites one URL string if it points at the printer (see the module
    /// doc for the rules): `http://10.0.0.5/a?b#c` →
    /// `https://s-abc.dwa.localhost:8443/a?b#c`. None if it does not,
    /// including relative URLs.
    pub fn rewrite_url(&self, url: &str) -> Option<String> {
        let (scheme, after) = match parse_scheme(url) {
            Some((scheme, after)) => (Some(scheme), after),
            None => (None, url),
        };
        let parts = split_authority(after, scheme.is_some())?;
        if !self.printer_host_matches(parts.host, parts.bracketed)
            || !port_rule(
                self.port,
                self.scheme.default_port(),
                scheme.map(UrlScheme::default_port),
                parts.port.map(u32::from),
            )
        {
            return None;
        }
        let origin = if scheme.is_some_and(UrlScheme::is_websocket) {
            &self.session_ws_origin
        } else {
            &self.session_origin
        };
        Some(format!("{origin}{}", parts.rest))
    }

    /// A URL on the session's origin (`https`, same host, same port) → the
    /// same path and query on the printer's origin. None otherwise.
    fn session_to_printer(&self, url: &str) -> Option<String> {
        let (scheme, after) = parse_scheme(url)?;
        if scheme != UrlScheme::Https {
            return None;
        }
        let parts = split_authority(after, true)?;
        let host_ok = parts.bracketed == self.session_host.contains(':')
            && parts.host.eq_ignore_ascii_case(&self.session_host);
        let port_ok = match parts.port {
            Some(p) => p == self.session_port,
            None => self.session_port == 443,
        };
        (host_ok && port_ok).then(|| format!("{}{}", self.printer_origin, parts.rest))
    }

    /// `Refresh: 5; url=http://printer/x` (also `5;URL='...'`, `5, ...`,
    /// or the URL without `url=`): the URL rewritten, the rest kept.
    fn rewrite_refresh(&self, value: &str) -> Option<String> {
        let b = value.as_bytes();
        let mut i = 0;
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        i = skip_ws(i);
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        i = skip_ws(i);
        if i < b.len() && (b[i] == b';' || b[i] == b',') {
            i += 1;
        }
        i = skip_ws(i);
        if b.len() >= i + 3 && b[i..i + 3].eq_ignore_ascii_case(b"url") {
            let j = skip_ws(i + 3);
            if j < b.len() && b[j] == b'=' {
                i = skip_ws(j + 1);
            }
        }
        let (start, end) = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let start = i + 1;
                let end = b[start..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |p| start + p);
                (start, end)
            }
            _ => (i, value.trim_end().len().max(i)),
        };
        // Every index above sits on an ASCII byte or the end: valid slices.
        let url = value.get(start..end)?;
        let new = self.rewrite_url(url)?;
        Some(format!("{}{new}{}", &value[..start], &value[end..]))
    }

    /// Removes our cookie from one `Cookie` header value. None: unchanged;
    /// Some(empty): nothing left.
    fn strip_our_cookie(&self, value: &[u8]) -> Option<Vec<u8>> {
        let ours = self.cookie.as_bytes();
        let mut found = false;
        let kept: Vec<&[u8]> = value
            .split(|&b| b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|pair| {
                let is_ours = cookie_name(pair) == ours;
                found |= is_ours;
                !pair.is_empty() && !is_ours
            })
            .collect();
        found.then(|| kept.join(&b"; "[..]))
    }

    /// One `Set-Cookie` from the printer: None drops it (it is named like
    /// ours); otherwise without `Domain`, with `Secure`.
    fn rewrite_set_cookie(&self, value: &[u8]) -> Option<Vec<u8>> {
        let mut parts = value.split(|&b| b == b';');
        let first = parts.next().unwrap_or_default().trim_ascii();
        if cookie_name(first) == self.cookie.as_bytes() {
            return None;
        }
        let mut out = first.to_vec();
        let mut secure = false;
        for attr in parts {
            let attr = attr.trim_ascii();
            let name = cookie_name(attr);
            let name = if name.is_empty() { attr } else { name };
            if attr.is_empty() || name.eq_ignore_ascii_case(b"domain") {
                continue;
            }
            secure |= name.eq_ignore_ascii_case(b"secure");
            out.extend_from_slice(b"; ");
            out.extend_from_slice(attr);
        }
        if !secure {
            out.extend_from_slice(b"; Secure");
        }
        Some(out)
    }

    /// Request going to the printer:
    ///
    /// - `Host` := [`Self::printer_host_header`];
    /// - `Referer` and `Origin` on the session's origin → the printer's
    ///   origin, same path and query; `Origin: null` and other origins are
    ///   left alone;
    /// - our cookie removed from every `Cookie` header (the others kept, the
    ///   header dropped when nothing is left);
    /// - hop-by-hop headers removed: `Connection` and every header it names,
    ///   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`,
    ///   `Proxy-Authenticate`, `TE`, `Trailer`, `Transfer-Encoding`,
    ///   `Upgrade` — except when `upgrade` is true (a WebSocket upgrade):
    ///   then `Upgrade` is kept and `Connection` is exactly `upgrade`;
    /// - `Forwarded`, `X-Forwarded-*` and `X-Real-IP` sent by the client
    ///   dropped (the proxy adds its own if it wants);
    /// - `Accept-Encoding` narrowed to the codings the body rewriter can
    ///   decode (`gzip`, `x-gzip`, `deflate`, `br`, `identity`), so that a
    ///   page is never sent in a coding that would force it through
    ///   unrewritten; `identity` when none is left.
    pub fn request_headers(&self, headers: &mut HeaderMap, upgrade: bool) {
        strip_hop_by_hop(headers, upgrade);
        let forwarded: Vec<HeaderName> = headers
            .keys()
            .filter(|n| {
                let n = n.as_str();
                n == "forwarded" || n == "x-real-ip" || n.starts_with("x-forwarded-")
            })
            .cloned()
            .collect();
        for name in forwarded {
            headers.remove(name);
        }
        headers.insert(header::HOST, self.printer_host_header());
        rewrite_each(headers, header::REFERER, |v| self.session_to_printer(v));
        rewrite_each(headers, header::ORIGIN, |v| self.session_to_printer(v));
        self.strip_cookie_headers(headers);
        narrow_accept_encoding(headers);
    }

    fn strip_cookie_headers(&self, headers: &mut HeaderMap) {
        let values: Vec<(HeaderValue, Option<Vec<u8>>)> = headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| (v.clone(), self.strip_our_cookie(v.as_bytes())))
            .collect();
        if values.iter().all(|(_, changed)| changed.is_none()) {
            return;
        }
        headers.remove(header::COOKIE);
        for (original, changed) in values {
            let value = match changed {
                None => original,
                Some(v) if v.is_empty() => continue,
                // Only removes bytes from a valid value: cannot fail; if it
                // did, dropping the header is the safe side.
                Some(v) => match HeaderValue::from_bytes(&v) {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            headers.append(header::COOKIE, value);
        }
    }

    /// Response coming back from the printer:
    ///
    /// - `Location`, `Content-Location` and the URL in `Refresh` rewritten
    ///   when they point at the printer ([`Self::rewrite_url`]); relative
    ///   ones untouched;
    /// - `Set-Cookie`: `Domain` removed (the cookie becomes host-only on the
    ///   session's host), `Path` kept, `Secure` added if absent; a cookie
    ///   named like ours is dropped entirely;
    /// - hop-by-hop headers removed as in [`Self::request_headers`];
    ///   `Upgrade` and `Connection: upgrade` kept on a 101;
    /// - `Strict-Transport-Security` dropped (a printer must not pin the
    ///   session host's policy) and `Alt-Svc` dropped (it would advertise
    ///   the printer's alternative services for the session's host).
    ///
    /// Returns the body plan. [`BodyPlan::Rewrite`] is returned for
    /// 2xx (except 204, 205, 206) and 4xx/5xx responses whose
    /// `Content-Type` is in [`REWRITTEN_CONTENT_TYPES`], which are not
    /// downloads (`Content-Disposition: attachment` → pass through), and
    /// whose `Content-Encoding` is absent, `identity`, `gzip`, `x-gzip`,
    /// `deflate` or `br` (anything else, or several codings stacked → pass
    /// through). A response without `Content-Type` passes through (no
    /// sniffing). For a rewritten body these headers are then changed:
    ///
    /// - `Content-Length` removed: the length changes;
    /// - `Content-Encoding` removed: **decision** — the body is sent decoded;
    ///   the session's hop is the relay's HTTPS, re-compressing would cost
    ///   CPU for a few pages;
    /// - `ETag`: a strong validator is weakened (`"x"` → `W/"x"`):
    ///   **decision** — the bytes are no longer the printer's, so a strong
    ///   tag would lie to range requests (`If-Range` and `If-Match` compare
    ///   strongly and so no longer match), while `If-None-Match`, which
    ///   compares weakly, still gets 304s from printers that follow RFC 9110;
    /// - `Accept-Ranges` removed, and the digests of the printer's bytes
    ///   (`Content-MD5`, `Digest`, `Content-Digest`, `Repr-Digest`).
    ///
    /// The proxy must not wrap bodies of responses to `HEAD` (there is none);
    /// an empty body wrapped anyway yields an empty body.
    pub fn response_headers(&self, status: StatusCode, headers: &mut HeaderMap) -> BodyPlan {
        strip_hop_by_hop(headers, status == StatusCode::SWITCHING_PROTOCOLS);
        rewrite_each(headers, header::LOCATION, |v| self.rewrite_url(v));
        rewrite_each(headers, header::CONTENT_LOCATION, |v| self.rewrite_url(v));
        rewrite_each(headers, HeaderName::from_static("refresh"), |v| {
            self.rewrite_refresh(v)
        });
        if headers.contains_key(header::SET_COOKIE) {
            let cookies: Vec<HeaderValue> = headers
                .get_all(header::SET_COOKIE)
                .iter()
                .filter_map(|v| self.rewrite_set_cookie(v.as_bytes()))
                .filter_map(|v| HeaderValue::from_bytes(&v).ok())
                .collect();
            headers.remove(header::SET_COOKIE);
            for cookie in cookies {
                headers.append(header::SET_COOKIE, cookie);
            }
        }
        headers.remove(header::STRICT_TRANSPORT_SECURITY);
        headers.remove(header::ALT_SVC);

        let plan = if self.bodies {
            body_plan(status, headers)
        } else {
            BodyPlan::PassThrough
        };
        if let BodyPlan::Rewrite { .. } = plan {
            for name in [
                "content-length",
                "content-encoding",
                "accept-ranges",
                "content-md5",
                "digest",
                "content-digest",
                "repr-digest",
            ] {
                headers.remove(name);
            }
            if let Some(etag) = headers.get(header::ETAG) {
                if etag.as_bytes().starts_with(b"\"") {
                    let mut weak = b"W/".to_vec();
                    weak.extend_from_slice(etag.as_bytes());
                    if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                        headers.insert(header::ETAG, weak);
                    }
                }
            }
        }
        plan
    }
}

/// The name of a `name=value` pair, trimmed; empty when there is no `=`.
fn cookie_name(pair: &[u8]) -> &[u8] {
    match pair.iter().position(|&b| b == b'=') {
        Some(i) => pair[..i].trim_ascii(),
        None => b"",
    }
}

/// Applies `f` to every value of `name` that is UTF-8; a value `f` leaves
/// alone (None) or whose rewrite is not a valid header stays as it was.
fn rewrite_each(headers: &mut HeaderMap, name: HeaderName, f: impl Fn(&str) -> Option<String>) {
    if !headers.contains_key(&name) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(&name)
        .iter()
        .map(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(&f)
                .and_then(|s| HeaderValue::from_str(&s).ok())
                .unwrap_or_else(|| v.clone())
        })
        .collect();
    headers.remove(&name);
    for v in values {
        headers.append(name.clone(), v);
    }
}

/// Comma-separated tokens of every value of `name`, trimmed, non-empty.
/// Values that are not UTF-8 are skipped.
fn tokens(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    for token in tokens(headers, header::CONNECTION) {
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        if !(keep_upgrade && *name == "upgrade") {
            headers.remove(*name);
        }
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn narrow_accept_encoding(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCEPT_ENCODING) {
        return;
    }
    let all = tokens(headers, header::ACCEPT_ENCODING);
    let kept: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|t| {
            let coding = t.split(';').next().unwrap_or_default().trim();
            DECODABLE_CODINGS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(coding))
        })
        .collect();
    let count = headers.get_all(header::ACCEPT_ENCODING).iter().count();
    if kept.len() == all.len() && count == 1 {
        return;
    }
    let value = if kept.is_empty() {
        "identity".to_owned()
    } else {
        kept.join(", ")
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(header::ACCEPT_ENCODING, v);
        }
        Err(_) => {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
    }
}

fn body_plan(status: StatusCode, headers: &HeaderMap) -> BodyPlan {
    let code = status.as_u16();
    let status_ok = matches!(code, 200..=299 | 400..=599) && !matches!(code, 204..=206);
    if !status_ok || !rewritten_content_type(headers) || is_attachment(headers) {
        return BodyPlan::PassThrough;
    }
    match content_encoding(headers) {
        Some(encoding) => BodyPlan::Rewrite { encoding },
        None => BodyPlan::PassThrough,
    }
}

fn rewritten_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false; // absent or ambiguous
    };
    let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    REWRITTEN_CONTENT_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(media))
}

fn is_attachment(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_DISPOSITION)
        .iter()
        .any(|v| {
            let v = v.as_bytes().trim_ascii_start();
            v.len() >= 10 && v[..10].eq_ignore_ascii_case(b"attachment")
        })
}

/// The single content coding of the body, or None if it is not one the body
/// rewriter decodes.
fn content_encoding(headers: &HeaderMap) -> Option<Encoding> {
    if headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| std::str::from_utf8(v.as_bytes()).is_err())
    {
        return None;
    }
    let codings: Vec<String> = tokens(headers, header::CONTENT_ENCODING)
        .into_iter()
        .filter(|t| !t.eq_ignore_ascii_case("identity"))
        .collect();
    match codings.as_slice() {
        [] => Some(Encoding::Identity),
        [one] => match one.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            "br" => Some(Encoding::Brotli),
            _ => None,
        },
        _ => None,
    }
}

fn parse_scheme(url: &str) -> Option<(UrlScheme, &str)> {
    const SCHEMES: [(&str, UrlScheme); 4] = [
        ("https:", UrlScheme::Https),
        ("http:", UrlScheme::Http),
        ("wss:", UrlScheme::Wss),
        ("ws:", UrlScheme::Ws),
    ];
    SCHEMES.iter().find_map(|(name, scheme)| {
        let head = url.as_bytes().get(..name.len())?;
        // ASCII prefix matched: `name.len()` is a char boundary.
        head.eq_ignore_ascii_case(name.as_bytes())
            .then(|| (*scheme, &url[name.len()..]))
    })
}

struct Authority<'a> {
    host: &'a str,
    /// The host was an IPv6 literal in brackets (brackets not included).
    bracketed: bool,
    port: Option<u16>,
    /// Everything after the authority: path, query, fragment.
    rest: &'a str,
}

/// Splits `//[userinfo@]host[:port]rest`. After a scheme, `\` counts as `/`
/// as browsers do; a protocol-relative URL needs `//`.
fn split_authority(after_scheme: &str, had_scheme: bool) -> Option<Authority<'_>> {
    let b = after_scheme.as_bytes();
    let slash = |c: u8| c == b'/' || (had_scheme && c == b'\\');
    if b.len() < 2 || !slash(b[0]) || !slash(b[1]) {
        return None;
    }
    let after = &after_scheme[2..];
    let end = after.find(['/', '\\', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, bracketed, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, tail) = inner.split_once(']')?;
        let port = if tail.is_empty() {
            None
        } else {
            Some(tail.strip_prefix(':')?)
        };
        (host, true, port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, false, Some(port)),
            None => (hostport, false, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|c| c.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some(Authority {
        host,
        bracketed,
        port,
        rest,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const COOKIE: &str = "dwa_session";

    /// A rewriter for a printer at `scheme://host:port` behind the session
    /// host `s-abc.dwa.localhost:8443` (shared with `body`'s tests).
    pub(crate) fn rw(scheme: Scheme, host: &str, port: u16) -> Rewriter {
        Rewriter::new(
            PrinterOrigin {
                scheme,
                host: host.into(),
                port,
            },
            SessionOrigin {
                host: "s-abc.dwa.localhost".into(),
                port: 8443,
            },
            COOKIE,
        )
    }

    fn http80() -> Rewriter {
        rw(Scheme::Http, "10.0.0.5", 80)
    }

    const S: &str = "https://s-abc.dwa.localhost:8443";

    /// Header names a browser or printer sends that the rewriter reads,
    /// and any other.
    fn header_name() -> impl proptest::strategy::Strategy<Value = HeaderName> {
        use proptest::prelude::*;
        prop_oneof![
            Just(header::HOST),
            Just(header::ORIGIN),
            Just(header::REFERER),
            Just(header::COOKIE),
            Just(header::SET_COOKIE),
            Just(header::LOCATION),
            Just(header::CONTENT_TYPE),
            Just(header::CONTENT_ENCODING),
            Just(header::CONTENT_LENGTH),
            Just(header::CONTENT_SECURITY_POLICY),
            Just(header::REFRESH),
            "[a-z-]{1,12}"
                .prop_filter_map("a valid name", |n| HeaderName::from_bytes(n.as_bytes())
                    .ok()),
        ]
    }

    fn header_value() -> impl proptest::strategy::Strategy<Value = HeaderValue> {
        use proptest::prelude::*;
        prop_oneof![
            "(https?|wss?)://(10\\.0\\.0\\.5|s-abc\\.dwa\\.localhost)(:[0-9]{1,5})?/[ -~]{0,20}",
            "[ -~]{0,40}",
            "([a-z_]{1,8}=[ -:<-~]{0,8}; ?){0,4}",
        ]
        .prop_filter_map("a valid value", |v| HeaderValue::from_str(&v).ok())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Whatever headers a browser sends or a printer answers: rewritten
        /// or dropped, never a panic, and our cookie never reaches the
        /// printer.
        #[test]
        fn any_headers_are_rewritten_without_a_panic(
            pairs in proptest::collection::vec((header_name(), header_value()), 0..16),
            status in 100u16..600,
            upgrade in proptest::prelude::any::<bool>(),
        ) {
            let r = http80();
            let mut req = HeaderMap::new();
            for (k, v) in &pairs {
                req.append(k.clone(), v.clone());
            }
            let mut resp = req.clone();
            r.request_headers(&mut req, upgrade);
            for v in req.get_all(header::COOKIE) {
                let text = String::from_utf8_lossy(v.as_bytes());
                proptest::prop_assert!(!text.split(';').any(|c| c.trim().starts_with(&format!("{COOKIE}="))), "{text}");
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let _ = r.response_headers(status, &mut resp);
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    fn one(h: &HeaderMap, name: &str) -> Option<String> {
        let v = all(h, name);
        assert!(v.len() <= 1, "{name}: {v:?}");
        v.into_iter().next()
    }

    #[test]
    fn origins_and_host_header() {
        let r = http80();
        assert_eq!(r.printer_host_header(), "10.0.0.5");
        assert_eq!(r.printer_origin(), "http://10.0.0.5");
        assert_eq!(r.session_origin(), S);
        let r = rw(Scheme::Http, "192.168.1.50", 8080);
        assert_eq!(r.printer_host_header(), "192.168.1.50:8080");
        assert_eq!(r.printer_origin(), "http://192.168.1.50:8080");
        let r = rw(Scheme::Https, "2001:DB8::5", 8080);
        assert_eq!(r.printer_host_header(), "[2001:db8::5]:8080");
        assert_eq!(r.printer_origin(), "https://[2001:db8::5]:8080");
        let r = rw(Scheme::Https, "[2001:db8::5]", 443);
        assert_eq!(r.printer_host_header(), "[2001:db8::5]");
        let r = rw(Scheme::Https, "Printer.Local", 80);
        assert_eq!(r.printer_host_header(), "printer.local:80");
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
            COOKIE,
        );
        assert_eq!(r.session_origin(), "https://s-abc.dwa.example");
        assert_eq!(
            r.rewrite_url("http://10.0.0.5/x").as_deref(),
            Some("https://s-abc.dwa.example/x")
        );
    }

    #[test]
    fn host_header_never_panics_on_a_bad_host() {
        let r = rw(Scheme::Http, "bad host\n\u{7f}é", 80);
        assert_eq!(r.printer_host_header(), "badhost");
    }

    #[test]
    fn rewrite_url_absolute_with_and_without_port() {
        let r = http80();
        let cases = [
            ("http://10.0.0.5/", Some(format!("{S}/"))),
            ("http://10.0.0.5", Some(S.to_owned())),
            ("http://10.0.0.5:80/a", Some(format!("{S}/a"))),
            ("https://10.0.0.5/a", Some(format!("{S}/a"))), // http→https redirect
            ("HTTP://10.0.0.5/a", Some(format!("{S}/a"))),
            ("http://10.0.0.5:/a", Some(format!("{S}/a"))), // empty port = default
            (
                "http://10.0.0.5/a?b=c&d#frag",
                Some(format!("{S}/a?b=c&d#frag")),
            ),
            ("http://10.0.0.5?q", Some(format!("{S}?q"))),
            ("http://10.0.0.5#f", Some(format!("{S}#f"))),
            ("http://10.0.0.5:0080/a", Some(format!("{S}/a"))),
            (
                "ws://10.0.0.5/sock",
                Some("wss://s-abc.dwa.localhost:8443/sock".into()),
            ),
            (
                "wss://10.0.0.5/sock",
                Some("wss://s-abc.dwa.localhost:8443/sock".into()),
            ),
            ("http:\\\\10.0.0.5\\a", Some(format!("{S}\\a"))),
            ("http://admin:pw@10.0.0.5/a", Some(format!("{S}/a"))),
            // Different explicit port.
            ("http://10.0.0.5:8080/a", None),
            ("https://10.0.0.5:443/a", None),
            ("http://10.0.0.5:99999/a", None),
            ("http://10.0.0.5:8x/a", None),
        ];
        for (url, want) in cases {
            assert_eq!(r.rewrite_url(url), want, "{url}");
        }
    }

    #[test]
    fn rewrite_url_boundaries() {
        let r = http80();
        for url in [
            "http://10.0.0.50/",
            "http://10.0.0.5.evil.com/",
            "http://10.0.0.5@evil.com/",
            "http://10.0.0.5:80@evil.com/",
            "http://110.0.0.5/",
            "http://evil.com/10.0.0.5",
            "http://evil.com/?u=http://10.0.0.5/",
            "ftp://10.0.0.5/",
            "http:10.0.0.5/",
            "http:/10.0.0.5/",
            "/relative",
            "relative/path",
            "?q=http://10.0.0.5",
            "",
            "http://",
            "http://[10.0.0.5]/",
        ] {
            assert_eq!(r.rewrite_url(url), None, "{url}");
        }
    }

    #[test]
    fn rewrite_url_port_rules() {
        // Printer on a non-default port: only that port, explicitly.
        let r = rw(Scheme::Http, "10.0.0.5", 8080);
        assert_eq!(
            r.rewrite_url("http://10.0.0.5:8080/a"),
            Some(format!("{S}/a"))
        );
        assert_eq!(
            r.rewrite_url("https://10.0.0.5:8080/a"),
            Some(format!("{S}/a"))
        );
        assert_eq!(r.rewrite_url("http://10.0.0.5/a"), None);
        assert_eq!(r.rewrite_url("https://10.0.0.5/a"), None);
        assert_eq!(r.rewrite_url("//10.0.0.5/a"), None);
        assert_eq!(r.rewrite_url("//10.0.0.5:8080/a"), Some(format!("{S}/a")));

        // HTTPS printer on 443: http://addr/ (an https→http redirect) too.
        let r = rw(Scheme::Https, "10.0.0.5", 443);
        assert_eq!(r.rewrite_url("http://10.0.0.5/a"), Some(format!("{S}/a")));
        assert_eq!(r.rewrite_url("https://10.0.0.5/a"), Some(format!("{S}/a")));
        assert_eq!(r.rewrite_url("http://10.0.0.5:80/a"), None);

        // Printer on a port that is the default of the other scheme.
        let r = rw(Scheme::Http, "10.0.0.5", 443);
        assert_eq!(r.rewrite_url("https://10.0.0.5/a"), Some(format!("{S}/a")));
        assert_eq!(r.rewrite_url("http://10.0.0.5/a"), None);

        let r = rw(Scheme::Https, "10.0.0.5", 8443);
        assert_eq!(r.rewrite_url("https://10.0.0.5/a"), None);
        assert_eq!(
            r.rewrite_url("https://10.0.0.5:8443/a"),
            Some(format!("{S}/a"))
        );
    }

    #[test]
    fn rewrite_url_ipv6_uppercase_and_names() {
        let r = rw(Scheme::Http, "2001:db8::5", 8080);
        assert_eq!(
            r.rewrite_url("http://[2001:db8::5]:8080/a"),
            Some(format!("{S}/a"))
        );
        assert_eq!(
            r.rewrite_url("http://[2001:DB8:0:0::5]:8080/a"),
            Some(format!("{S}/a"))
        );
        assert_eq!(r.rewrite_url("http://[2001:db8::5]/a"), None);
        assert_eq!(r.rewrite_url("http://[2001:db8::50]:8080/a"), None);
        assert_eq!(r.rewrite_url("http://2001:db8::5:8080/a"), None);
        assert_eq!(r.rewrite_url("http://[2001:db8::5:8080/a"), None);

        let r = rw(Scheme::Http, "Printer.Local", 80);
        assert_eq!(
            r.rewrite_url("http://PRINTER.local/a"),
            Some(format!("{S}/a"))
        );
        assert_eq!(r.rewrite_url("http://printer.local.evil/a"), None);
        assert_eq!(r.rewrite_url("http://xprinter.local/a"), None);

        // An IPv4 printer never matches a bracketed host, nor the reverse.
        let r = rw(Scheme::Http, "::1", 80);
        assert_eq!(r.rewrite_url("http://[::1]/"), Some(format!("{S}/")));
        assert_eq!(r.rewrite_url("http://::1/"), None);
    }

    #[test]
    fn location_header() {
        let r = http80();
        let cases = [
            (
                "http://10.0.0.5/login?next=%2F#top",
                format!("{S}/login?next=%2F#top"),
            ),
            ("https://10.0.0.5/secure", format!("{S}/secure")),
            ("http://10.0.0.5:80/p", format!("{S}/p")),
            ("http://10.0.0.5:8080/p", "http://10.0.0.5:8080/p".into()),
            ("//10.0.0.5/p", format!("{S}/p")),
            ("/relative/p", "/relative/p".into()),
            ("p2.html", "p2.html".into()),
            ("http://example.com/", "http://example.com/".into()),
            ("http://10.0.0.50/", "http://10.0.0.50/".into()),
            (
                "http://10.0.0.5.evil.com/",
                "http://10.0.0.5.evil.com/".into(),
            ),
        ];
        for (location, want) in cases {
            let mut h = headers(&[("location", location)]);
            let plan = r.response_headers(StatusCode::FOUND, &mut h);
            assert_eq!(plan, BodyPlan::PassThrough);
            assert_eq!(
                one(&h, "location").as_deref(),
                Some(want.as_str()),
                "{location}"
            );
        }
        let r = rw(Scheme::Https, "2001:db8::5", 443);
        let mut h = headers(&[("location", "https://[2001:DB8::5]/x")]);
        r.response_headers(StatusCode::MOVED_PERMANENTLY, &mut h);
        assert_eq!(one(&h, "location").unwrap(), format!("{S}/x"));
        let r = rw(Scheme::Http, "PRINTER.local", 80);
        let mut h = headers(&[("location", "http://Printer.LOCAL/x")]);
        r.response_headers(StatusCode::SEE_OTHER, &mut h);
        assert_eq!(one(&h, "location").unwrap(), format!("{S}/x"));
    }

    #[test]
    fn location_with_non_utf8_bytes_is_left_alone() {
        let r = http80();
        let mut h = HeaderMap::new();
        let raw = HeaderValue::from_bytes(b"http://10.0.0.5/\xff").unwrap();
        h.insert(header::LOCATION, raw.clone());
        r.response_headers(StatusCode::FOUND, &mut h);
        assert_eq!(h.get(header::LOCATION), Some(&raw));
    }

    #[test]
    fn content_location_and_refresh() {
        let r = http80();
        let mut h = headers(&[
            ("content-location", "http://10.0.0.5/index.html"),
            ("refresh", "5; url=http://10.0.0.5/home?x=1"),
        ]);
        r.response_headers(StatusCode::OK, &mut h);
        assert_eq!(
            one(&h, "content-location").unwrap(),
            format!("{S}/index.html")
        );
        assert_eq!(one(&h, "refresh").unwrap(), format!("5; url={S}/home?x=1"));

        let cases = [
            ("0;URL=http://10.0.0.5/", format!("0;URL={S}/")),
            ("0; URL='http://10.0.0.5/a' ", format!("0; URL='{S}/a' ")),
            (
                "3, url = \"https://10.0.0.5/a\"",
                format!("3, url = \"{S}/a\""),
            ),
            ("1; http://10.0.0.5/a", format!("1; {S}/a")),
            ("5; url=/relative", "5; url=/relative".into()),
            (
                "5; url=http://10.0.0.50/",
                "5; url=http://10.0.0.50/".into(),
            ),
            ("5", "5".into()),
            ("", "".into()),
            ("url=", "url=".into()),
        ];
        for (value, want) in cases {
            let mut h = headers(&[("refresh", value)]);
            r.response_headers(StatusCode::OK, &mut h);
            assert_eq!(one(&h, "refresh").unwrap(), want, "{value:?}");
        }
    }

    #[test]
    fn referer_and_origin_from_the_session_go_to_the_printer() {
        let r = rw(Scheme::Http, "10.0.0.5", 8080);
        let mut h = headers(&[
            (
                "referer",
                "https://s-abc.dwa.localhost:8443/status/page.html?a=1",
            ),
            ("origin", "https://S-ABC.dwa.localhost:8443"),
        ]);
        r.request_headers(&mut h, false);
        assert_eq!(
            one(&h, "referer").unwrap(),
            "http://10.0.0.5:8080/status/page.html?a=1"
        );
        assert_eq!(one(&h, "origin").unwrap(), "http://10.0.0.5:8080");
    }

    #[test]
    fn referer_and_origin_from_elsewhere_are_untouched() {
        let r = http80();
        for (referer, origin) in [
            ("https://other.example/x", "https://other.example"),
            (
                "http://s-abc.dwa.localhost:8443/x",
                "http://s-abc.dwa.localhost:8443",
            ),
            (
                "https://s-abc.dwa.localhost/x",
                "https://s-abc.dwa.localhost",
            ),
            (
                "https://s-abc.dwa.localhost:9443/x",
                "https://s-abc.dwa.localhost:9443",
            ),
            (
                "https://s-abc.dwa.localhost.evil:8443/",
                "https://s-abcd.dwa.localhost:8443",
            ),
            ("https://s-abc.dwa.localhost:8443/", "null"),
        ] {
            let mut h = headers(&[("referer", referer), ("origin", origin)]);
            r.request_headers(&mut h, false);
            if referer.starts_with(S) {
                assert_eq!(one(&h, "referer").unwrap(), "http://10.0.0.5/");
            } else {
                assert_eq!(one(&h, "referer").unwrap(), referer);
            }
            assert_eq!(one(&h, "origin").unwrap(), origin);
        }
    }

    #[test]
    fn host_is_the_printers() {
        let r = rw(Scheme::Http, "192.168.1.50", 8080);
        let mut h = headers(&[("host", "s-abc.dwa.localhost:8443")]);
        r.request_headers(&mut h, false);
        assert_eq!(one(&h, "host").unwrap(), "192.168.1.50:8080");
        let mut h = HeaderMap::new();
        r.request_headers(&mut h, false);
        assert_eq!(one(&h, "host").unwrap(), "192.168.1.50:8080");
    }

    #[test]
    fn our_cookie_is_never_sent_to_the_printer() {
        let r = http80();
        let mut h = headers(&[("cookie", "a=1; dwa_session=secret; b=2")]);
        r.request_headers(&mut h, false);
        assert_eq!(all(&h, "cookie"), ["a=1; b=2"]);

        let mut h = headers(&[("cookie", "dwa_session=secret")]);
        r.request_headers(&mut h, false);
        assert!(h.get("cookie").is_none());

        // Several Cookie headers (HTTP/2 style), odd spacing.
        let mut h = headers(&[
            ("cookie", " dwa_session = secret ;"),
            ("cookie", "x=1;dwa_session=secret;y=2"),
            ("cookie", "dwa_session_other=keep"),
        ]);
        r.request_headers(&mut h, false);
        assert_eq!(all(&h, "cookie"), ["x=1; y=2", "dwa_session_other=keep"]);

        // Without ours, the header is left exactly as it was.
        let mut h = headers(&[("cookie", "a=1;b=2")]);
        r.request_headers(&mut h, false);
        assert_eq!(all(&h, "cookie"), ["a=1;b=2"]);
    }

    #[test]
    fn our_cookie_is_removed_from_non_utf8_cookie_headers_too() {
        let r = http80();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"n=\xe9t\xe9; dwa_session=secret").unwrap(),
        );
        r.request_headers(&mut h, false);
        assert_eq!(h.get(header::COOKIE).unwrap().as_bytes(), b"n=\xe9t\xe9");
    }

    #[test]
    fn set_cookie_loses_domain_gains_secure_and_cannot_be_ours() {
        let r = http80();
        let mut h = headers(&[
            ("set-cookie", "sid=1; Domain=10.0.0.5; Path=/; HttpOnly"),
            (
                "set-cookie",
                "lang=en;  domain = 10.0.0.5 ;path=/cgi; secure",
            ),
            ("set-cookie", "dwa_session=evil; Path=/"),
            ("set-cookie", " dwa_session =evil"),
            ("set-cookie", "t=2; DOMAIN=.example; SameSite=Lax"),
            (
                "set-cookie",
                "u=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure",
            ),
        ]);
        r.response_headers(StatusCode::OK, &mut h);
        assert_eq!(
            all(&h, "set-cookie"),
            [
                "sid=1; Path=/; HttpOnly; Secure",
                "lang=en; path=/cgi; secure",
                "t=2; SameSite=Lax; Secure",
                "u=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure",
            ]
        );
        let mut h = headers(&[("set-cookie", "dwa_session=evil; Path=/")]);
        r.response_headers(StatusCode::OK, &mut h);
        assert!(h.get("set-cookie").is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let r = http80();
        let mut h = headers(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("connection", "Upgrade"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        r.request_headers(&mut h, false);
        for name in [
            "connection",
            "x-custom-hop",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(h.get(name).is_none(), "{name} kept");
        }
        assert_eq!(one(&h, "x-kept").unwrap(), "yes");
    }

    #[test]
    fn websocket_upgrade_keeps_upgrade_and_connection_upgrade_only() {
        let r = http80();
        let mut h = headers(&[
            ("connection", "keep-alive, Upgrade, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("origin", "https://s-abc.dwa.localhost:8443"),
        ]);
        r.request_headers(&mut h, true);
        assert_eq!(one(&h, "connection").unwrap(), "upgrade");
        assert_eq!(one(&h, "upgrade").unwrap(), "websocket");
        assert!(h.get("x-custom-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(one(&h, "sec-websocket-version").unwrap(), "13");
        assert_eq!(one(&h, "origin").unwrap(), "http://10.0.0.5");

        // The 101 keeps them; any other response drops them.
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        r.response_headers(StatusCode::SWITCHING_PROTOCOLS, &mut h);
        assert_eq!(one(&h, "connection").unwrap(), "upgrade");
        assert_eq!(one(&h, "upgrade").unwrap(), "websocket");
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        r.response_headers(StatusCode::OK, &mut h);
        assert!(h.get("connection").is_none());
        assert!(h.get("upgrade").is_none());
    }

    #[test]
    fn client_forwarding_headers_are_dropped() {
        let r = http80();
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("X-Forwarded-Host", "evil"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwardedness", "kept"),
        ]);
        r.request_headers(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-forwardedness", "host"]);
    }

    #[test]
    fn accept_encoding_is_narrowed_to_what_we_decode() {
        let r = http80();
        let mut h = headers(&[("accept-encoding", "gzip, deflate, br, zstd")]);
        r.request_headers(&mut h, false);
        assert_eq!(one(&h, "accept-encoding").unwrap(), "gzip, deflate, br");
        let mut h = headers(&[("accept-encoding", "zstd;q=1, *;q=0.5")]);
        r.request_headers(&mut h, false);
        assert_eq!(one(&h, "accept-encoding").unwrap(), "identity");
        let mut h = headers(&[("accept-encoding", "gzip;q=1.0, identity; q=0.5")]);
        r.request_headers(&mut h, false);
        assert_eq!(
            one(&h, "accept-encoding").unwrap(),
            "gzip;q=1.0, identity; q=0.5"
        );
        let mut h = HeaderMap::new();
        r.request_headers(&mut h, false);
        assert!(h.get("accept-encoding").is_none());
    }

    #[test]
    fn hsts_and_alt_svc_are_dropped() {
        let r = rw(Scheme::Https, "10.0.0.5", 443);
        let mut h = headers(&[
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains",
            ),
            ("alt-svc", "h3=\":443\""),
            ("x-frame-options", "SAMEORIGIN"),
        ]);
        r.response_headers(StatusCode::OK, &mut h);
        assert!(h.get("strict-transport-security").is_none());
        assert!(h.get("alt-svc").is_none());
        assert_eq!(one(&h, "x-frame-options").unwrap(), "SAMEORIGIN");
    }

    fn plan(status: u16, pairs: &[(&str, &str)]) -> (BodyPlan, HeaderMap) {
        let mut h = headers(pairs);
        let p = http80().response_headers(StatusCode::from_u16(status).unwrap(), &mut h);
        (p, h)
    }

    #[test]
    fn body_plan_by_content_type() {
        let rewrite = BodyPlan::Rewrite {
            encoding: Encoding::Identity,
        };
        for ct in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/HTML;Charset=ISO-8859-1",
            " text/html ",
            "application/xhtml+xml",
            "text/css",
            "application/javascript",
            "text/javascript; charset=UTF-8",
            "application/x-javascript",
            "application/ecmascript",
            "text/ecmascript",
        ] {
            assert_eq!(plan(200, &[("content-type", ct)]).0, rewrite, "{ct}");
        }
        for ct in [
            "application/json",
            "text/xml",
            "application/xml",
            "image/svg+xml",
            "image/png",
            "text/plain",
            "application/octet-stream",
            "text/htmlx",
            "",
        ] {
            assert_eq!(
                plan(200, &[("content-type", ct)]).0,
                BodyPlan::PassThrough,
                "{ct}"
            );
        }
        assert_eq!(plan(200, &[]).0, BodyPlan::PassThrough);
        assert_eq!(
            plan(
                200,
                &[("content-type", "text/html"), ("content-type", "text/css")]
            )
            .0,
            BodyPlan::PassThrough
        );
        assert_eq!(
            plan(
                200,
                &[
                    ("content-type", "text/html"),
                    (
                        "content-disposition",
                        "Attachment; filename=\"backup.html\""
                    )
                ]
            )
            .0,
            BodyPlan::PassThrough
        );
        assert_eq!(
            plan(
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-disposition", "inline")
                ]
            )
            .0,
            rewrite
        );
    }

    #[test]
    fn body_plan_by_status() {
        let html = [("content-type", "text/html")];
        for status in [200, 201, 203, 404, 401, 500, 503] {
            assert_ne!(plan(status, &html).0, BodyPlan::PassThrough, "{status}");
        }
        for status in [101, 204, 205, 206, 301, 302, 304] {
            assert_eq!(plan(status, &html).0, BodyPlan::PassThrough, "{status}");
        }
    }

    #[test]
    fn body_plan_by_encoding() {
        let cases = [
            (vec![], Some(Encoding::Identity)),
            (vec!["identity"], Some(Encoding::Identity)),
            (vec!["gzip"], Some(Encoding::Gzip)),
            (vec!["GZIP"], Some(Encoding::Gzip)),
            (vec!["x-gzip"], Some(Encoding::Gzip)),
            (vec!["deflate"], Some(Encoding::Deflate)),
            (vec!["br"], Some(Encoding::Brotli)),
            (vec!["Br "], Some(Encoding::Brotli)),
            (vec!["identity, gzip"], Some(Encoding::Gzip)),
            (vec!["zstd"], None),
            (vec!["compress"], None),
            (vec!["gzip, br"], None),
            (vec!["gzip", "gzip"], None),
        ];
        for (encodings, want) in cases {
            let mut pairs = vec![("content-type", "text/html; charset=utf-8")];
            pairs.extend(encodings.iter().map(|e| ("content-encoding", *e)));
            let want = want.map_or(BodyPlan::PassThrough, |encoding| BodyPlan::Rewrite {
                encoding,
            });
            assert_eq!(plan(200, &pairs).0, want, "{encodings:?}");
        }
    }

    #[test]
    fn rewritten_bodies_lose_length_encoding_ranges_and_strong_etag() {
        let (p, h) = plan(
            200,
            &[
                ("content-type", "text/html"),
                ("content-length", "1234"),
                ("content-encoding", "gzip"),
                ("etag", "\"abc\""),
                ("accept-ranges", "bytes"),
                ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
                ("vary", "Accept-Encoding"),
            ],
        );
        assert_eq!(
            p,
            BodyPlan::Rewrite {
                encoding: Encoding::Gzip
            }
        );
        for name in [
            "content-length",
            "content-encoding",
            "accept-ranges",
            "content-md5",
        ] {
            assert!(h.get(name).is_none(), "{name} kept");
        }
        assert_eq!(one(&h, "etag").unwrap(), "W/\"abc\"");
        assert_eq!(one(&h, "vary").unwrap(), "Accept-Encoding");

        let (_, h) = plan(200, &[("content-type", "text/html"), ("etag", "W/\"abc\"")]);
        assert_eq!(one(&h, "etag").unwrap(), "W/\"abc\"");

        // Passed through: untouched.
        let (p, h) = plan(
            200,
            &[
                ("content-type", "image/png"),
                ("content-length", "1234"),
                ("etag", "\"abc\""),
            ],
        );
        assert_eq!(p, BodyPlan::PassThrough);
        assert_eq!(one(&h, "content-length").unwrap(), "1234");
        assert_eq!(one(&h, "etag").unwrap(), "\"abc\"");
        let (p, h) = plan(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", "zstd"),
                ("content-length", "99"),
            ],
        );
        assert_eq!(p, BodyPlan::PassThrough);
        assert_eq!(one(&h, "content-encoding").unwrap(), "zstd");
        assert_eq!(one(&h, "content-length").unwrap(), "99");
    }

    #[test]
    fn body_rewriting_can_be_turned_off() {
        let rw = rw(Scheme::Http, "10.0.0.5", 80).without_body_rewriting();
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://10.0.0.5/x"),
        );
        assert!(matches!(
            rw.response_headers(StatusCode::FOUND, &mut h),
            BodyPlan::PassThrough
        ));
        assert_eq!(
            h[header::CONTENT_ENCODING],
            "gzip",
            "the body stays encoded"
        );
        assert_eq!(h[header::CONTENT_LENGTH], "10");
        assert_eq!(
            h[header::LOCATION],
            "https://s-abc.dwa.localhost:8443/x",
            "headers still rewritten"
        );
    }
}
