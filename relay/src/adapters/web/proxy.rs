//! The session host: every request on `s-<id>.<domain>` is carried through a
//! tunnel stream to the printer, with the headers (and HTML, CSS and
//! JavaScript bodies) rewritten so the printer's pages work under the
//! session's origin. Bodies stream both ways; WebSocket upgrades are
//! carried; the end of the session closes every connection of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use dwa_proto::audit::Event;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use crate::adapters::state::Relay;
use crate::adapters::web::pool::{PrinterPool, Sender, Wait};
use crate::adapters::web::rewrite::{BodyPlan, PrinterOrigin, Rewriter, Scheme, SessionOrigin};
use crate::error::RelayError;
use crate::services::streams::{open_stream, StreamRecord, StreamRequest};
use crate::services::web_sessions::{
    EndReason, TicketError, WebSession, ENTER_PATH, SESSION_COOKIE,
};
use crate::services::web_sessions::{Warmup, WarmupError};

/// How long a request waits for a free printer connection.
const SLOT_WAIT: Duration = Duration::from_secs(30);
/// How long the printer may take to answer with headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy keeps per session: its printer connections and its
/// rewriter (built once from the session's origins).
pub struct Runtime {
    pool: PrinterPool,
    rewriter: Rewriter,
}

/// The proxy's runtimes, by session id; an ended session's goes (its
/// idle printer connections with it).
#[derive(Default)]
pub struct Runtimes(std::sync::Mutex<std::collections::HashMap<String, Arc<Runtime>>>);

impl Runtimes {
    fn get(&self, s: &WebSession) -> Arc<Runtime> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = m.get(&s.id) {
            return r.clone();
        }
        m.retain(|id, _| id != &s.id);
        let rewriter = Rewriter::new(
            PrinterOrigin {
                scheme: if s.tls { Scheme::Https } else { Scheme::Http },
                host: s.device.address.clone(),
                port: s.port,
            },
            SessionOrigin {
                host: s.host.clone(),
                port: url_port(&s.url_base),
            },
            SESSION_COOKIE,
        );
        let rewriter = if s.rewrite_bodies {
            rewriter
        } else {
            rewriter.without_body_rewriting()
        };
        let r = Arc::new(Runtime {
            pool: PrinterPool::new(s.printer_connections),
            rewriter,
        });
        m.insert(s.id.clone(), r.clone());
        r
    }

    /// Forgets the runtimes of sessions that ended.
    fn prune(&self, relay: &Relay) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|id, _| relay.web.get(id).is_some_and(|s| s.ended().is_none()));
    }
}

/// The port of the session's URL base (`https://host:port`), 443 if none.
fn url_port(base: &str) -> u16 {
    base.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(443)
}

/// The first printer connection of a new session (see [`Warmup`]).
pub struct Prewarm(pub Relay);

impl Warmup for Prewarm {
    fn prewarm<'a>(
        &'a self,
        _svc: &'a crate::services::Svc,
        s: &'a Arc<WebSession>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WarmupError>> + Send + 'a>>
    {
        Box::pin(async move {
            self.0.web_rt.prune(&self.0);
            prewarm(&self.0, s).await.map_err(|e| {
                use crate::services::error::{Class, Failure};
                WarmupError {
                    refused: e.class() == Class::Forbidden,
                    message: e.to_string(),
                }
            })
        })
    }
}

/// A small HTML page of our own (errors, "session ended").
pub fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>{title}</h1><p>{text}</p><p><small>DWA Device Web Access</small></p></body></html>"
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn ended_page(reason: EndReason) -> Response<Body> {
    page(
        StatusCode::GONE,
        "Session ended",
        &format!(
            "This Device Web Access session has ended: {}. Open the device again from the portal to start a new one.",
            reason.describe()
        ),
    )
}

/// The path with query values replaced by nothing: `/a?user=&page=`.
pub fn redacted_path(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_string(),
        Some(q) => {
            let keys: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
                .collect();
            format!(
                "{path}?{}",
                keys.iter()
                    .map(|k| format!("{k}="))
                    .collect::<Vec<_>>()
                    .join("&")
            )
        }
    }
}

fn is_upgrade(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Serves one request on a session host. `session` is the session the host
/// names, if the relay knows it.
pub async fn serve(
    relay: Relay,
    session: Option<Arc<WebSession>>,
    req: Request<Body>,
) -> Response<Body> {
    match gate(&relay, session, req).await {
        Ok(r) => r,
        Err(early) => {
            let (page, body) = *early;
            drain(body).await;
            page
        }
    }
}

/// Reads and drops up to `DRAIN_MAX` of a request body we answer ourselves,
/// so a browser's form post gets our page rather than a reset connection.
const DRAIN_MAX: u64 = 1 << 20;

async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let mut n = 0u64;
    let read = async {
        while let Some(Ok(f)) = body.frame().await {
            n += f.data_ref().map_or(0, |d| d.len() as u64);
            if n > DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
}

/// Our own answer, with the request body still to drain.
type Early = Box<(Response<Body>, Body)>;

async fn gate(
    relay: &Relay,
    session: Option<Arc<WebSession>>,
    req: Request<Body>,
) -> Result<Response<Body>, Early> {
    let relay = relay.clone();
    let early = |p: Response<Body>, req: Request<Body>| Err(Box::new((p, req.into_body())));
    let Some(s) = session else {
        return early(page(
            StatusCode::NOT_FOUND,
            "No such session",
            "This Device Web Access session does not exist (it may have ended before the relay restarted). Open the device again from the portal.",
        ), req);
    };
    if let Some(r) = s.ended() {
        return early(ended_page(r), req);
    }
    // First, so that neither ticket guesses nor cookie-less requests (each
    // answered, the former audited) are unbounded.
    if !s.admit_request() {
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "Slow down, then reload.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return early(r, req);
    }
    if req.uri().path() == ENTER_PATH {
        let query = req.uri().query().unwrap_or("").to_string();
        let p = enter(&relay, &s, &query).await;
        return early(p, req);
    }
    if !crate::util::cookie_value(req.headers(), SESSION_COOKIE).is_some_and(|c| s.cookie_ok(c)) {
        return early(
            page(
                StatusCode::UNAUTHORIZED,
                "Not signed in to this session",
                "Open this device from the portal: each session is entered with a one-time link.",
            ),
            req,
        );
    }
    // Audit first: a request's record is written when it completes, so
    // while the log cannot be written none is carried out. The refusal's
    // own record is the probe that finds the log back.
    if !relay.audit.writable() {
        let refused = Event::WebRequest {
            session: s.id.clone(),
            device: s.device.id,
            method: req.method().to_string(),
            path: redacted_path(req.uri()),
            status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            complete: Some(false),
            websocket: None,
            error: Some("refused: the audit log could not be written".into()),
        };
        let _ = relay
            .audit
            .append(refused, &s.actor, Some(&s.device.agent_id))
            .await;
        return early(
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Audit log unavailable",
                crate::services::error::AUDIT_DOWN,
            ),
            req,
        );
    }
    s.touch();
    s.requests.fetch_add(1, Ordering::Relaxed);
    if is_upgrade(&req) {
        return Ok(websocket(relay, s, req).await);
    }
    Ok(forward(relay, s, req).await)
}

/// The ticket exchange: a host-only cookie, then `/`.
async fn enter(relay: &Relay, s: &WebSession, query: &str) -> Response<Body> {
    let ticket = query
        .split('&')
        .find_map(|p| p.strip_prefix("ticket="))
        .unwrap_or("");
    match s.exchange_ticket(ticket) {
        Ok(cookie) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={cookie}; Path=/; Secure; HttpOnly; SameSite=Lax"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            relay
                .audit
                .record(
                    Event::WebTicketRefused {
                        session: s.id.clone(),
                        why: format!("{e:?}"),
                    },
                    "anonymous",
                    Some(&s.device.agent_id),
                )
                .await;
            let why = match e {
                TicketError::Invalid => {
                    "This link was already used, or is not valid for this session."
                }
                TicketError::Expired => "This link expired (links are valid for one minute).",
            };
            page(
                StatusCode::FORBIDDEN,
                "Link not valid",
                &format!("{why} Open the device again from the portal."),
            )
        }
    }
}

/// A connection to the printer through a new tunnel stream. The returned
/// task drives it; it ends when the connection closes or the session ends.
/// If the caller keeps the receiver, the stream's close record is handed
/// to it when the connection is upgraded (a WebSocket lives on).
async fn connect(
    relay: &Relay,
    s: &Arc<WebSession>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Connected, RelayError> {
    let os = open_stream(
        relay,
        &StreamRequest {
            agent: s.device.agent_id.clone(),
            host: s.device.address.clone(),
            port: s.port,
            actor: s.actor.clone(),
            tls: s.tls,
        },
    )
    .await?;
    let (stream, tls, record) = (os.stream, os.tls, os.record);
    let (sender, conn) = match tokio::time::timeout(
        RESPONSE_TIMEOUT,
        hyper::client::conn::http1::Builder::new().handshake::<_, Body>(TokioIo::new(stream)),
    )
    .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            record.finish(relay, Some(e.to_string())).await;
            return Err(RelayError::Unavailable(format!("HTTP to the printer: {e}")));
        }
        Err(_) => {
            record
                .finish(relay, Some("HTTP handshake timed out".into()))
                .await;
            return Err(RelayError::Unavailable(
                "HTTP to the printer timed out".into(),
            ));
        }
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (relay2, cancel) = (relay.clone(), s.cancel.clone());
    relay.tracker.spawn(
        async move {
            let r = tokio::select! {
                r = conn.with_upgrades() => r.err().map(|e| e.to_string()),
                _ = cancel.cancelled() => Some("web session ended".into()),
                _ = relay2.shutdown.cancelled() => Some("relay shutting down".into()),
            };
            // An upgraded (WebSocket) connection lives on in its copy task,
            // which writes the close record itself.
            if let Err(record) = done_tx.send(record) {
                record.finish(&relay2, r).await;
            }
            drop(slot);
        }
        .instrument(tracing::info_span!("printer_conn", session = %s.id)),
    );
    Ok((sender, tls, done_rx))
}

type Connected = (
    Sender,
    Option<dwa_proto::control::TlsInfo>,
    tokio::sync::oneshot::Receiver<StreamRecord>,
);

/// Remembers the printer's certificate; flags a change in the audit log.
pub async fn note_certificate(relay: &Relay, s: &WebSession, info: &dwa_proto::control::TlsInfo) {
    if s.tls_seen().as_deref() == Some(info.cert_sha256.as_str()) {
        return;
    }
    match relay
        .store
        .note_device_cert(
            s.device.id,
            s.port,
            &info.cert_sha256,
            &relay.time.rfc3339(),
        )
        .await
    {
        Ok(dwa_store::devices::CertSeen {
            first_seen,
            changed_from: previous,
        }) => {
            if let Some(old) = &previous {
                relay
                    .audit
                    .record(
                        Event::TlsCertChanged {
                            session: s.id.clone(),
                            device: s.device.id,
                            address: s.device.address.clone(),
                            port: s.port,
                            previous_sha256: old.clone(),
                            sha256: info.cert_sha256.clone(),
                        },
                        &s.actor,
                        Some(&s.device.agent_id),
                    )
                    .await;
            }
            s.set_cert(crate::services::web_sessions::PrinterCert {
                sha256: info.cert_sha256.clone(),
                version: info.version.clone(),
                legacy: crate::services::streams::tls_is_legacy(info),
                first_seen,
                changed_from: previous,
            });
        }
        Err(e) => tracing::warn!(error = %e, "could not record the printer's certificate"),
    }
}

/// A ready connection: an idle one, else a new one.
async fn sender(relay: &Relay, s: &Arc<WebSession>) -> Result<Sender, RelayError> {
    let deadline = tokio::time::Instant::now() + SLOT_WAIT;
    loop {
        let rt = relay.web_rt.get(s);
        if let Some(mut c) = rt.pool.take() {
            // Its last response was read to the end: hyper marks it ready
            // a moment later.
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), c.ready()).await {
                return Ok(c);
            }
            continue;
        }
        let slot = match rt.pool.try_slot() {
            Some(p) => p,
            None => match tokio::time::timeout_at(deadline, rt.pool.wait()).await {
                Ok(Wait::Slot(p)) => p,
                Ok(Wait::Returned) => continue,
                Err(_) => {
                    return Err(RelayError::Unavailable(
                        "the printer's connections are all busy".into(),
                    ))
                }
            },
        };
        let (c, tls, _done) = connect(relay, s, slot).await?;
        if let Some(info) = tls {
            note_certificate(relay, s, &info).await;
        }
        return Ok(c);
    }
}

/// Opens the session's first printer connection at creation: errors show at
/// once, the certificate is known, and the first page needs no new stream.
pub async fn prewarm(relay: &Relay, s: &Arc<WebSession>) -> Result<(), RelayError> {
    let c = sender(relay, s).await?;
    relay.web_rt.get(s).pool.put(c);
    Ok(())
}

fn bad_gateway(e: &RelayError) -> Response<Body> {
    use crate::services::error::{Class, Failure};
    let (status, title) = match e.class() {
        Class::Forbidden => (StatusCode::FORBIDDEN, "Refused"),
        _ => (StatusCode::BAD_GATEWAY, "Printer unreachable"),
    };
    page(status, title, &html_escape(&e.to_string()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What one proxied request's audit record needs at the end of its body.
struct Finish {
    relay: Relay,
    session: Arc<WebSession>,
    method: String,
    path: String,
    status: u16,
    started: Instant,
    up: Arc<std::sync::atomic::AtomicU64>,
    /// Back to the pool once the response was read to its end.
    conn: Option<Sender>,
}

impl Finish {
    fn done(mut self, down: u64, complete: bool) {
        if complete {
            if let Some(c) = self.conn.take() {
                self.relay.web_rt.get(&self.session).pool.put(c);
            }
        }
        self.session.touch();
        let relay = self.relay.clone();
        let tracker = relay.tracker.clone();
        let s = self.session.clone();
        let event = Event::WebRequest {
            session: s.id.clone(),
            device: s.device.id,
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status,
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: down,
            duration_ms: self.started.elapsed().as_millis() as u64,
            complete: Some(complete),
            websocket: None,
            error: None,
        };
        tracker.spawn(async move {
            relay
                .audit
                .record(event, &s.actor, Some(&s.device.agent_id))
                .await;
        });
    }
}

/// A body that counts its bytes into the session and, at its end (or when
/// dropped early), hands its record to [`Finish`].
struct Tracked<B: HttpBody> {
    inner: B,
    session: Arc<WebSession>,
    down: u64,
    finish: Option<Finish>,
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.down += d.len() as u64;
                    this.session
                        .bytes_down
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    this.session.touch();
                }
                // hyper's server stops polling once the body says it has
                // ended, so this is where a complete response is seen.
                if this.inner.is_end_stream() {
                    if let Some(f) = this.finish.take() {
                        f.done(this.down, true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.take() {
                    f.done(this.down, true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.finish.take() {
                    f.done(this.down, false);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            // An empty body (a redirect, a 304) is never polled at all.
            f.done(self.down, self.inner.is_end_stream());
        }
    }
}

/// The request body on its way to the printer, counted.
struct Counted {
    inner: Body,
    session: Arc<WebSession>,
    up: Arc<std::sync::atomic::AtomicU64>,
    /// An IPP request to port 631: its operation is audited (the tap only
    /// looks at the attributes, never keeps document data).
    ipp: Option<(crate::services::ipp_audit::BodyTap, Relay)>,
}

impl Counted {
    fn ipp_event(&mut self, ev: Option<crate::services::ipp_audit::IppEvent>) {
        let (Some(ev), Some((_, relay))) = (ev, &self.ipp) else {
            return;
        };
        let via = crate::services::ipp_audit::Via::Session(self.session.id.clone());
        let event = crate::services::ipp_audit::event(&ev, self.session.device.id, via);
        let (relay, s) = (relay.clone(), self.session.clone());
        relay.tracker.clone().spawn(async move {
            relay
                .audit
                .record(event, &s.actor, Some(&s.device.agent_id))
                .await;
        });
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.up.fetch_add(d.len() as u64, Ordering::Relaxed);
                self.session
                    .bytes_up
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                self.session.touch();
                let ev = self.ipp.as_mut().and_then(|(t, _)| t.feed(d));
                self.ipp_event(ev);
            }
        }
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            let ev = self.ipp.as_mut().and_then(|(t, _)| t.end());
            self.ipp_event(ev);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The IPP port: POSTs of `application/ipp` to it are audited per operation.
const IPP_PORT: u16 = 631;

fn is_ipp(h: &axum::http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/ipp"))
}

async fn forward(relay: Relay, s: Arc<WebSession>, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let rt = relay.web_rt.get(&s);
    let rw = &rt.rewriter;
    let method = req.method().to_string();
    let path = redacted_path(req.uri());
    let (mut parts, body) = req.into_parts();
    rw.request_headers(&mut parts.headers, false);
    // Origin-form toward the printer, whatever the client sent.
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = pq.into();
    }
    let up = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ipp = (s.port == IPP_PORT && method == "POST" && is_ipp(&parts.headers))
        .then(|| (crate::services::ipp_audit::BodyTap::new(), relay.clone()));
    let body = Body::new(Counted {
        inner: body,
        session: s.clone(),
        up: up.clone(),
        ipp,
    });
    let out = Request::from_parts(parts, body);
    let mut conn = match sender(&relay, &s).await {
        Ok(c) => c,
        Err(e) => return bad_gateway(&e),
    };
    let resp = tokio::select! {
        r = tokio::time::timeout(RESPONSE_TIMEOUT, conn.send_request(out)) => r,
        _ = s.cancel.cancelled() => return ended_page(s.ended().unwrap_or(EndReason::Deleted)),
    };
    let resp = match resp {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return bad_gateway(&RelayError::Unavailable(format!(
                "the printer closed the connection: {e}"
            )))
        }
        Err(_) => {
            return bad_gateway(&RelayError::Unavailable(format!(
                "the printer did not answer within {RESPONSE_TIMEOUT:?}"
            )))
        }
    };
    let (mut parts, body) = resp.into_parts();
    let mut plan = rw.response_headers(parts.status, &mut parts.headers);
    if method == "HEAD" {
        // No body to rewrite (and an empty one must not be framed as one).
        plan = BodyPlan::PassThrough;
    }
    let finish = Finish {
        relay: relay.clone(),
        session: s.clone(),
        method,
        path,
        status: parts.status.as_u16(),
        started,
        up,
        conn: Some(conn),
    };
    let body = match plan {
        BodyPlan::PassThrough => Body::new(Tracked {
            inner: body,
            session: s.clone(),
            down: 0,
            finish: Some(finish),
        }),
        BodyPlan::Rewrite { encoding } => Body::new(crate::adapters::web::body::rewrite_body(
            Tracked {
                inner: body,
                session: s.clone(),
                down: 0,
                finish: Some(finish),
            },
            rw,
            encoding,
        )),
    };
    Response::from_parts(parts, body)
}

/// A WebSocket: a connection of its own to the printer, upgraded on both
/// sides, then bytes copied until either side closes or the session ends.
async fn websocket(relay: Relay, s: Arc<WebSession>, mut req: Request<Body>) -> Response<Body> {
    let rt = relay.web_rt.get(&s);
    let rw = &rt.rewriter;
    let path = redacted_path(req.uri());
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    rw.request_headers(&mut parts.headers, true);
    if let Some(pq) = parts.uri.path_and_query().cloned() {
        parts.uri = pq.into();
    }
    let slot = match rt.pool.try_slot() {
        Some(p) => p,
        None => match tokio::time::timeout(SLOT_WAIT, rt.pool.wait()).await {
            Ok(Wait::Slot(p)) => p,
            // WebSockets never share a connection: only a slot will do.
            _ => {
                return bad_gateway(&RelayError::Unavailable(
                    "the printer's connections are all busy".into(),
                ))
            }
        },
    };
    let (mut conn, _tls, done) = match connect(&relay, &s, slot).await {
        Ok(c) => c,
        Err(e) => return bad_gateway(&e),
    };
    let mut resp = match tokio::time::timeout(
        RESPONSE_TIMEOUT,
        conn.send_request(Request::from_parts(parts, Body::empty())),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return bad_gateway(&RelayError::Unavailable(format!(
                "WebSocket to the printer: {e}"
            )))
        }
        Err(_) => {
            return bad_gateway(&RelayError::Unavailable(
                "the printer did not answer the WebSocket upgrade".into(),
            ))
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        rw.response_headers(parts.status, &mut parts.headers);
        return Response::from_parts(parts, Body::new(body));
    }
    let printer_upgrade = hyper::upgrade::on(&mut resp);
    let (relay2, s2) = (relay.clone(), s.clone());
    relay.tracker.spawn(
        async move {
            let started = Instant::now();
            let both = tokio::time::timeout(RESPONSE_TIMEOUT, async {
                tokio::join!(client_upgrade, printer_upgrade)
            });
            let (c, p) = match both.await {
                Ok((Ok(c), Ok(p))) => (c, p),
                _ => return,
            };
            // The printer connection's task saw the upgrade and handed over
            // the stream's close record.
            let record = done.await.ok();
            let (mut c, mut p) = (TokioIo::new(c), TokioIo::new(p));
            let r = tokio::select! {
                r = tokio::io::copy_bidirectional(&mut c, &mut p) => r,
                _ = s2.cancel.cancelled() => Err(std::io::Error::other("web session ended")),
                _ = relay2.shutdown.cancelled() => Err(std::io::Error::other("relay shutting down")),
            };
            let (up, down) = match &r {
                Ok((u, d)) => (*u, *d),
                Err(_) => (0, 0),
            };
            s2.bytes_up.fetch_add(up, Ordering::Relaxed);
            s2.bytes_down.fetch_add(down, Ordering::Relaxed);
            if let Some(record) = record {
                record.finish(&relay2, r.as_ref().err().map(|e| e.to_string())).await;
            }
            relay2
                .audit
                .record(
                    Event::WebRequest {
                        session: s2.id.clone(),
                        device: s2.device.id,
                        method: "GET".into(),
                        path,
                        status: 101,
                        bytes_up: up,
                        bytes_down: down,
                        duration_ms: started.elapsed().as_millis() as u64,
                        complete: None,
                        websocket: Some(true),
                        error: r.err().map(|e| e.to_string()),
                    },
                    &s2.actor,
                    Some(&s2.device.agent_id),
                )
                .await;
        }
        .instrument(tracing::info_span!("web_socket", session = %s.id)),
    );
    let (mut parts, _) = resp.into_parts();
    rw.response_headers(parts.status, &mut parts.headers);
    Response::from_parts(parts, Body::empty())
}
