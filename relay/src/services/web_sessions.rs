//! Web sessions: one printer web page opened by one user, on its own host
//! `s-<id>.<domain>`. Each is a grant (`services::grants`) derived from the
//! log-in or API token it was opened with. The registry, the one-time
//! ticket and the session cookie, the limits (maximum duration, idle
//! timeout, request rate) and the end of a session, which closes every
//! connection of it. The proxy that carries its requests is an adapter
//! (`adapters::web`); it reaches the printer through [`Warmup`] here and
//! `streams::open_stream`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use dwa_policy::roles::Action;
use dwa_proto::audit::{Event, PrinterCertificate};
use dwa_store::grants::{GrantKind, NewGrant, Selector};
use serde::Serialize;
use tracing::Instrument;

use crate::services::auth::Principal;
use crate::services::clock::rfc3339_seconds;
use crate::services::error::{Class, Failure};
pub use crate::services::grants::EndReason;
use crate::services::{Services, Svc};
use crate::util::{random_secret, sha256_hex};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ticket is good for one exchange, within this time.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Ended sessions are remembered this long, so a late request gets "session
/// ended" rather than "no such session".
const TOMBSTONE: Duration = Duration::from_secs(3600);

/// The session host's cookie. `__Host-` makes browsers insist on Secure,
/// Path=/ and no Domain: it can never reach another host.
pub const SESSION_COOKIE: &str = "__Host-dwa_ws";

/// The path on the session host that exchanges a ticket for the cookie.
pub const ENTER_PATH: &str = "/__dwa/enter";

/// The device a session reaches.
pub use dwa_store::devices::DeviceTarget;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketError {
    /// No ticket, a wrong one, or one already used.
    Invalid,
    Expired,
}

/// The certificate an HTTPS printer showed, and whether it changed since the
/// first time this device's port was reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrinterCert {
    pub sha256: String,
    pub version: String,
    /// Reached through the agent's legacy (OpenSSL, TLS 1.0+) connector.
    pub legacy: bool,
    pub first_seen: String,
    pub changed_from: Option<String>,
}

impl PrinterCert {
    /// As its session's audit record shows it (the record's own type, so
    /// the view can change without changing the audit schema).
    pub fn audited(&self) -> PrinterCertificate {
        PrinterCertificate {
            sha256: self.sha256.clone(),
            version: self.version.clone(),
            legacy: self.legacy,
            first_seen: self.first_seen.clone(),
            changed_from: self.changed_from.clone(),
        }
    }
}

pub struct WebSession {
    pub id: String,
    /// `s-<id>.<domain>`.
    pub host: String,
    pub url_base: String,
    pub device: DeviceTarget,
    pub port: u16,
    pub tls: bool,
    /// HTML/CSS/JavaScript bodies rewritten (on by default).
    pub rewrite_bodies: bool,
    /// Its grant in the store.
    pub grant: i64,
    pub user_id: i64,
    pub actor: String,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    started: Instant,
    deadline: Instant,
    idle: Duration,
    /// Milliseconds after `started` of the last activity.
    last_activity: AtomicU64,
    ticket: Mutex<Option<(String, Instant)>>,
    cookie: Mutex<Option<String>>,
    /// Cancelled at the end: every connection of the session watches it.
    pub cancel: CancellationToken,
    ended: Mutex<Option<(EndReason, Instant)>>,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub requests: AtomicU64,
    /// Printer connections the proxy may keep open for it.
    pub printer_connections: usize,
    limiter: governor::DefaultDirectRateLimiter,
    pub cert: Mutex<Option<PrinterCert>>,
}

pub struct NewSession {
    /// When the session is created (the services' clock).
    pub created_at: SystemTime,
    pub domain: String,
    pub https_port: u16,
    pub device: DeviceTarget,
    pub port: u16,
    pub tls: bool,
    pub rewrite_bodies: bool,
    pub grant: i64,
    pub user_id: i64,
    pub actor: String,
    pub max_duration: Duration,
    pub idle: Duration,
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub printer_connections: usize,
}

impl WebSession {
    /// A new session and its first ticket (returned once, kept hashed).
    /// A session with id `id` and its first ticket's hash.
    pub fn new(id: String, ticket_hash: String, n: NewSession) -> Arc<Self> {
        let host = format!("s-{id}.{}", n.domain);
        let url_base = if n.https_port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{}", n.https_port)
        };
        let now = Instant::now();
        let nz = |v: u32| std::num::NonZeroU32::new(v).unwrap_or(std::num::NonZeroU32::MIN);
        let quota =
            governor::Quota::per_second(nz(n.requests_per_second)).allow_burst(nz(n.request_burst));
        Arc::new(Self {
            id,
            host,
            url_base,
            device: n.device,
            port: n.port,
            tls: n.tls,
            rewrite_bodies: n.rewrite_bodies,
            grant: n.grant,
            user_id: n.user_id,
            actor: n.actor,
            created_at: n.created_at,
            expires_at: n.created_at + n.max_duration,
            started: now,
            deadline: now + n.max_duration,
            idle: n.idle,
            last_activity: AtomicU64::new(0),
            ticket: Mutex::new(Some((ticket_hash, now + TICKET_TTL))),
            cookie: Mutex::new(None),
            cancel: CancellationToken::new(),
            ended: Mutex::new(None),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            printer_connections: n.printer_connections,
            limiter: governor::RateLimiter::direct(quota),
            cert: Mutex::new(None),
        })
    }

    /// The URL the user opens: the session host, carrying the ticket.
    pub fn entry_url(&self, ticket: &str) -> String {
        format!("{}{ENTER_PATH}?ticket={ticket}", self.url_base)
    }

    /// Exchanges the one-time ticket for the session cookie's value.
    pub fn exchange_ticket(&self, presented: &str) -> Result<String, TicketError> {
        let mut t = lock(&self.ticket);
        let Some((hash, expires)) = t.as_ref() else {
            return Err(TicketError::Invalid);
        };
        let ok: bool = sha256_hex(presented)
            .as_bytes()
            .ct_eq(hash.as_bytes())
            .into();
        if !ok {
            return Err(TicketError::Invalid);
        }
        let expired = Instant::now() >= *expires;
        // Used or expired, it is gone either way.
        *t = None;
        if expired {
            return Err(TicketError::Expired);
        }
        let cookie = random_secret(32);
        *lock(&self.cookie) = Some(sha256_hex(&cookie));
        Ok(cookie)
    }

    pub fn cookie_ok(&self, value: &str) -> bool {
        match lock(&self.cookie).as_ref() {
            Some(h) => sha256_hex(value).as_bytes().ct_eq(h.as_bytes()).into(),
            None => false,
        }
    }

    /// Records activity (requests, bytes): pushes the idle deadline back.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_activity.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether the session's request rate allows one more request.
    pub fn admit_request(&self) -> bool {
        self.limiter.check().is_ok()
    }

    fn idle_deadline(&self) -> Instant {
        self.started + Duration::from_millis(self.last_activity.load(Ordering::Relaxed)) + self.idle
    }

    /// Ends the session once; later calls return false. Every connection of
    /// the session watches `cancel` and closes.
    pub fn end(&self, reason: EndReason) -> bool {
        let mut e = lock(&self.ended);
        if e.is_some() {
            return false;
        }
        *e = Some((reason, Instant::now()));
        drop(e);
        self.cancel.cancel();
        true
    }

    pub fn ended(&self) -> Option<EndReason> {
        lock(&self.ended).map(|(r, _)| r)
    }

    pub fn duration(&self) -> Duration {
        match *lock(&self.ended) {
            Some((_, at)) => at - self.started,
            None => self.started.elapsed(),
        }
    }

    /// Waits until the session must end by itself (max duration or idle),
    /// or until it was ended otherwise; returns the reason in the first case.
    pub async fn watch(&self) -> Option<EndReason> {
        loop {
            let idle_at = self.idle_deadline();
            let (at, reason) = if idle_at < self.deadline {
                (idle_at, EndReason::Idle)
            } else {
                (self.deadline, EndReason::Expired)
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep_until(at) => {
                    // Activity may have moved the idle deadline meanwhile.
                    if reason == EndReason::Expired || self.idle_deadline() <= Instant::now() {
                        return Some(reason);
                    }
                }
            }
        }
    }

    /// The API's view of the session.
    pub fn view(&self) -> SessionView {
        SessionView {
            id: self.id.clone(),
            host: self.host.clone(),
            url: self.url_base.clone(),
            device: self.device.clone(),
            port: self.port,
            tls: self.tls,
            rewrite: self.rewrite_bodies,
            user: self.actor.clone(),
            created_at: rfc3339_seconds(self.created_at),
            expires_at: rfc3339_seconds(self.expires_at),
            ended: self.ended(),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            certificate: lock(&self.cert).clone(),
        }
    }

    pub fn set_cert(&self, c: PrinterCert) {
        *lock(&self.cert) = Some(c);
    }

    pub fn tls_seen(&self) -> Option<String> {
        lock(&self.cert).as_ref().map(|c| c.sha256.clone())
    }
}

/// The session id in a host name `s-<id>.<domain>[:port]`, if it is one.
pub fn session_id_from_host(host: &str, domain: &str) -> Option<String> {
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let label = host
        .strip_suffix(domain)
        .filter(|_| host.len() > domain.len())
        .and_then(|h| h.strip_suffix('.'))?;
    let id = label.strip_prefix("s-")?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// All web sessions, live and recently ended.
#[derive(Default)]
pub struct WebSessions {
    map: Mutex<HashMap<String, Arc<WebSession>>>,
}

impl WebSessions {
    /// Adds a session unless `max` live ones exist already.
    pub fn insert(&self, s: Arc<WebSession>, max: usize) -> bool {
        let mut m = lock(&self.map);
        m.retain(|_, v| match *lock(&v.ended) {
            Some((_, at)) => at.elapsed() < TOMBSTONE,
            None => true,
        });
        // Many short sessions in an hour: forget the ended ones early
        // rather than grow (their hosts then say "no such session").
        if m.len() >= max.saturating_mul(4) {
            m.retain(|_, v| v.ended().is_none());
        }
        if m.values().filter(|v| v.ended().is_none()).count() >= max {
            return false;
        }
        m.insert(s.id.clone(), s);
        true
    }

    pub fn get(&self, id: &str) -> Option<Arc<WebSession>> {
        lock(&self.map).get(id).cloned()
    }

    /// How many sessions are live.
    pub fn live(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|s| s.ended().is_none())
            .count()
    }

    /// Live sessions matching `pred`.
    pub fn live_where(&self, pred: impl Fn(&WebSession) -> bool) -> Vec<Arc<WebSession>> {
        lock(&self.map)
            .values()
            .filter(|s| s.ended().is_none() && pred(s))
            .cloned()
            .collect()
    }
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    pub host: String,
    pub url: String,
    pub device: DeviceTarget,
    pub port: u16,
    pub tls: bool,
    pub rewrite: bool,
    pub user: String,
    pub created_at: String,
    pub expires_at: String,
    pub ended: Option<EndReason>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub requests: u64,
    pub certificate: Option<PrinterCert>,
}

/// A new session: open `url` in the browser (it carries the one-time ticket).
#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    pub id: String,
    pub url: String,
    pub expires_at: String,
    pub host: String,
    pub tls: bool,
    pub certificate: Option<PrinterCert>,
}

/// What a caller asks for.
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    pub port: u16,
    /// TLS toward the printer (default: port 443).
    pub tls: Option<bool>,
    /// Rewrite the printer's URLs in HTML/CSS/JavaScript (default true).
    pub rewrite: Option<bool>,
}

use crate::services::error::AUDIT_DOWN;

#[derive(Debug, thiserror::Error)]
pub enum WebSessionError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{msg}")]
    RateLimited { msg: String, retry_after: u64 },
    /// The printer, its agent or the relay's capacity is not there.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Grant(#[from] crate::services::grants::GrantError),
}

impl Failure for WebSessionError {
    fn class(&self) -> Class {
        match self {
            WebSessionError::Invalid(_) => Class::Invalid,
            WebSessionError::Refused(_) => Class::Forbidden,
            WebSessionError::NotFound(_) => Class::NotFound,
            WebSessionError::Conflict(_) => Class::Conflict,
            WebSessionError::RateLimited { retry_after, .. } => Class::RateLimited {
                retry_after: *retry_after,
            },
            WebSessionError::Unavailable(_) => Class::Unavailable,
            WebSessionError::Store(e) => e.class(),
            WebSessionError::Grant(e) => e.class(),
        }
    }
}

/// Why a first printer connection could not be made.
#[derive(Debug, Clone)]
pub struct WarmupError {
    /// Refused (by policy: the relay's check or the agent), or unavailable.
    pub refused: bool,
    pub message: String,
}

/// The proxy's part of opening a session: the first printer connection,
/// made at once so that errors show to the caller, not in the browser.
pub trait Warmup: Send + Sync {
    fn prewarm<'a>(
        &'a self,
        svc: &'a Svc,
        s: &'a Arc<WebSession>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WarmupError>> + Send + 'a>>;
}

/// Opens a web session to `device` for `p`: permission, rate, its grant
/// (derived from `p`'s log-in or token), a first printer connection, then
/// the session's entry URL.
pub async fn open(
    svc: &Svc,
    p: &Principal,
    device: i64,
    req: &OpenRequest,
    warmup: &dyn Warmup,
) -> Result<Opened, WebSessionError> {
    let target = svc.store.device_target(device).await?;
    let agent = target.agent_id.clone();
    let refused = |reason: String| {
        let (svc, actor, agent) = (svc.clone(), p.actor(), agent.clone());
        async move {
            svc.audit
                .record(
                    Event::WebSessionRefused {
                        device,
                        port: req.port,
                        reason,
                    },
                    &actor,
                    Some(&agent),
                )
                .await;
        }
    };
    if let Err(e) = p.require(Action::WebSession, Some(target.customer_id)) {
        refused(e.to_string()).await;
        return Err(WebSessionError::Refused(e.to_string()));
    }
    if req.port == 0 {
        return Err(WebSessionError::Invalid("port must be 1..=65535".into()));
    }
    if svc.session_rate.check_key(&p.user_id).is_err() {
        return Err(WebSessionError::RateLimited {
            msg: "too many web sessions created; retry in a minute".into(),
            retry_after: 60,
        });
    }
    let w = &svc.cfg().web;
    // 128 bits each, from the OS CSPRNG; hex keeps the id a DNS label.
    let id = random_secret(16);
    let ticket = random_secret(16);
    let now = svc.time.unix();
    let mut g = NewGrant::new(GrantKind::WebSession, now);
    g.handle = Some(&id);
    g.user_id = Some(p.user_id);
    g.parent_id = p.grant();
    g.customer_id = Some(target.customer_id);
    g.device_id = Some(target.id);
    g.agent_id = Some(&target.agent_id);
    g.expires_at = Some(now + w.max_duration.as_secs() as i64);
    let grant = svc.store.issue_grant(&g).await?;
    let s = WebSession::new(
        id,
        sha256_hex(&ticket),
        NewSession {
            created_at: svc.time.now(),
            domain: svc.cfg().domain.clone(),
            https_port: svc.https_port,
            device: target,
            port: req.port,
            tls: req.tls.unwrap_or(req.port == 443),
            rewrite_bodies: req.rewrite.unwrap_or(true),
            grant,
            user_id: p.user_id,
            actor: p.actor(),
            max_duration: w.max_duration,
            idle: w.idle_timeout,
            requests_per_second: w.requests_per_second,
            request_burst: w.request_burst,
            printer_connections: w.printer_connections,
        },
    );
    // Never started: its grant ends without a session-end record.
    let abandon = |s: Arc<WebSession>| async move {
        s.end(EndReason::Deleted);
        if let Err(e) =
            crate::services::grants::end(svc, Selector::Id(s.grant), EndReason::Deleted, "relay")
                .await
        {
            tracing::warn!(error = %e, "ending an unused web session's grant");
        }
    };
    if let Err(e) = warmup.prewarm(svc, &s).await {
        refused(e.message.clone()).await;
        abandon(s).await;
        return Err(if e.refused {
            WebSessionError::Refused(e.message)
        } else {
            WebSessionError::Unavailable(e.message)
        });
    }
    if !svc.web.insert(s.clone(), w.max_sessions) {
        abandon(s).await;
        return Err(WebSessionError::Unavailable(
            "the relay carries its maximum of web sessions".into(),
        ));
    }
    spawn_watchdog(svc, s.clone());
    let view = s.view();
    // No record, no session: the ticket is never handed out unaudited.
    let created = svc
        .audit
        .append(
            Event::WebSessionCreate {
                session: s.id.clone(),
                device: s.device.id,
                address: s.device.address.clone(),
                port: s.port,
                tls: s.tls,
                certificate: view.certificate.as_ref().map(PrinterCert::audited),
                expires_at: view.expires_at.clone(),
            },
            &p.actor(),
            Some(&s.device.agent_id),
        )
        .await;
    if let Err(e) = created {
        tracing::error!(error = %e, "the audit log cannot be written: web session refused");
        // The watchdog ends the grant and takes it out of the registry.
        s.end(EndReason::Deleted);
        return Err(WebSessionError::Unavailable(AUDIT_DOWN.into()));
    }
    Ok(Opened {
        id: s.id.clone(),
        url: s.entry_url(&ticket),
        expires_at: view.expires_at,
        host: s.host.clone(),
        tls: s.tls,
        certificate: view.certificate,
    })
}

/// The session if it exists and `p` may see it (its creator, or someone
/// allowed web sessions for that customer).
pub fn visible(
    svc: &Services,
    p: &Principal,
    id: &str,
) -> Result<Arc<WebSession>, WebSessionError> {
    let s = svc
        .web
        .get(id)
        .ok_or_else(|| WebSessionError::NotFound(format!("no web session {id}")))?;
    if s.user_id != p.user_id {
        p.require(Action::WebSession, Some(s.device.customer_id))
            .map_err(|e| WebSessionError::Refused(e.to_string()))?;
    }
    Ok(s)
}

pub fn get(svc: &Services, p: &Principal, id: &str) -> Result<SessionView, WebSessionError> {
    Ok(visible(svc, p, id)?.view())
}

/// Live sessions `p` may see.
pub fn list(svc: &Services, p: &Principal) -> Vec<SessionView> {
    svc.web
        .live_where(|s| {
            s.user_id == p.user_id
                || p.require(Action::WebSession, Some(s.device.customer_id))
                    .is_ok()
        })
        .iter()
        .map(|s| s.view())
        .collect()
}

/// Closes a session at `p`'s request: every connection of it closes.
pub async fn delete(
    svc: &Services,
    p: &Principal,
    id: &str,
) -> Result<SessionView, WebSessionError> {
    let s = visible(svc, p, id)?;
    if s.ended().is_some() {
        return Err(WebSessionError::Conflict(format!(
            "web session {id} already ended"
        )));
    }
    end(svc, &s, EndReason::Deleted, &p.actor()).await?;
    Ok(s.view())
}

/// Ends a session through its grant (the one way a session ends).
pub async fn end(
    svc: &Services,
    s: &WebSession,
    reason: EndReason,
    by: &str,
) -> Result<(), WebSessionError> {
    // Its grant may have ended already in the store (another process):
    // the session here still ends, with the reason it ended for.
    let (reason, by) = crate::services::grants::end_one(svc, s.grant, reason, by).await?;
    close(svc, s, reason, &by).await;
    Ok(())
}

/// Ends the live session on this relay and writes its end record, once.
/// Called by `grants` when the session's grant ended.
pub async fn close(svc: &Services, s: &WebSession, reason: EndReason, by: &str) {
    if !s.end(reason) {
        return;
    }
    svc.audit
        .record(
            Event::WebSessionEnd {
                session: s.id.clone(),
                device: s.device.id,
                address: s.device.address.clone(),
                port: s.port,
                user: s.actor.clone(),
                reason: reason.as_str().to_string(),
                duration_ms: s.duration().as_millis() as u64,
                bytes_up: s.bytes_up.load(Ordering::Relaxed),
                bytes_down: s.bytes_down.load(Ordering::Relaxed),
                requests: s.requests.load(Ordering::Relaxed),
            },
            by,
            Some(&s.device.agent_id),
        )
        .await;
}

/// Ends the session by itself at its maximum duration or when idle, and
/// at the relay's shutdown.
pub fn spawn_watchdog(svc: &Svc, s: Arc<WebSession>) {
    let r = svc.clone();
    let span = tracing::info_span!("web_session", id = %s.id);
    svc.tracker.spawn(
        async move {
            let reason = tokio::select! {
                reason = s.watch() => reason,
                _ = r.shutdown.cancelled() => Some(EndReason::Shutdown),
            };
            if let Some(reason) = reason {
                if let Err(e) = end(&r, &s, reason, "relay").await {
                    tracing::error!(error = %e, "ending a web session");
                }
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(idle: Duration, max: Duration) -> (Arc<WebSession>, String) {
        let ticket = random_secret(16);
        let s = WebSession::new(
            random_secret(16),
            sha256_hex(&ticket),
            NewSession {
                created_at: SystemTime::now(),
                domain: "dwa.test".into(),
                https_port: 8443,
                device: DeviceTarget {
                    id: 1,
                    name: None,
                    address: "10.0.0.5".into(),
                    agent_id: "a".into(),
                    customer_id: 1,
                },
                port: 80,
                tls: false,
                rewrite_bodies: true,
                grant: 1,
                user_id: 1,
                actor: "user:t".into(),
                max_duration: max,
                idle,
                requests_per_second: 10,
                request_burst: 10,
                printer_connections: 4,
            },
        );
        (s, ticket)
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_works_once_and_only_within_its_minute() {
        let (s, t) = session(Duration::from_secs(300), Duration::from_secs(1800));
        assert_eq!(s.exchange_ticket("nope"), Err(TicketError::Invalid));
        let cookie = s.exchange_ticket(&t).expect("first use");
        assert!(s.cookie_ok(&cookie));
        assert!(!s.cookie_ok("forged"));
        assert_eq!(s.exchange_ticket(&t), Err(TicketError::Invalid), "replay");

        let (s2, t2) = session(Duration::from_secs(300), Duration::from_secs(1800));
        tokio::time::advance(TICKET_TTL + Duration::from_millis(1)).await;
        assert_eq!(s2.exchange_ticket(&t2), Err(TicketError::Expired));
        assert!(!s.cookie_ok(""), "no cookie for the expired one");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_maximum_duration_end_a_session() {
        let (s, _) = session(Duration::from_secs(300), Duration::from_secs(1800));
        let t0 = Instant::now();
        // Activity at 200 s moves the idle end to 500 s.
        let w = {
            let s = s.clone();
            tokio::spawn(async move { s.watch().await })
        };
        tokio::time::sleep(Duration::from_secs(200)).await;
        s.touch();
        assert_eq!(w.await.ok().flatten(), Some(EndReason::Idle));
        let at = t0.elapsed().as_secs();
        assert!((500..=501).contains(&at), "idle end at {at}s");

        let (s, _) = session(Duration::from_secs(300), Duration::from_secs(900));
        let t0 = Instant::now();
        let keep_busy = {
            let s = s.clone();
            tokio::spawn(async move {
                loop {
                    s.touch();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            })
        };
        assert_eq!(s.watch().await, Some(EndReason::Expired));
        assert_eq!(t0.elapsed().as_secs(), 900);
        keep_busy.abort();
    }

    #[tokio::test]
    async fn ending_cancels_once() {
        let (s, _) = session(Duration::from_secs(300), Duration::from_secs(1800));
        assert!(s.end(EndReason::Deleted));
        assert!(!s.end(EndReason::Logout));
        assert!(s.cancel.is_cancelled());
        assert_eq!(s.ended(), Some(EndReason::Deleted));
        assert_eq!(s.watch().await, None);
    }

    #[test]
    fn session_hosts_are_recognised_exactly() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            session_id_from_host(&format!("s-{id}.dwa.test:8443"), "dwa.test").as_deref(),
            Some(id)
        );
        assert_eq!(
            session_id_from_host(&format!("s-{id}.dwa.test"), "dwa.test").as_deref(),
            Some(id)
        );
        assert_eq!(session_id_from_host("dwa.test", "dwa.test"), None);
        assert_eq!(
            session_id_from_host(&format!("s-{id}.evil.test"), "dwa.test"),
            None
        );
        assert_eq!(
            session_id_from_host(&format!("s-{id}xdwa.test"), "dwa.test"),
            None
        );
        assert_eq!(
            session_id_from_host(&format!("x.s-{id}.dwa.test"), "dwa.test"),
            None
        );
        assert_eq!(session_id_from_host("s-short.dwa.test", "dwa.test"), None);
    }
}
