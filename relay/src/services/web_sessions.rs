//! Web sessions: one printer web page opened by one user, on its own host
//! `s-<id>.<domain>`. The registry, the one-time ticket and the session
//! cookie, the limits (maximum duration, idle timeout) and the end of a
//! session, which closes every connection of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::web::pool::PrinterPool;
use crate::adapters::web::rewrite::{PrinterOrigin, Rewriter, Scheme, SessionOrigin};
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

/// Why a session ended (audited, shown on the "session ended" page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Expired,
    Idle,
    Deleted,
    Logout,
    AgentGone,
    Shutdown,
}

impl EndReason {
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::Expired => "it reached its maximum duration",
            EndReason::Idle => "it was idle too long",
            EndReason::Deleted => "it was closed",
            EndReason::Logout => "its user logged out",
            EndReason::AgentGone => "the site's agent disconnected",
            EndReason::Shutdown => "the relay restarted",
        }
    }
}

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
    /// Built once: every request of the session uses it.
    pub rewriter: Rewriter,
    pub user_id: i64,
    pub actor: String,
    /// The log-in session that created it (ends with its logout).
    pub login: Option<String>,
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
    pub pool: PrinterPool,
    limiter: governor::DefaultDirectRateLimiter,
    pub cert: Mutex<Option<PrinterCert>>,
}

pub struct NewSession {
    pub domain: String,
    pub https_port: u16,
    pub device: DeviceTarget,
    pub port: u16,
    pub tls: bool,
    pub rewrite_bodies: bool,
    pub user_id: i64,
    pub actor: String,
    pub login: Option<String>,
    pub max_duration: Duration,
    pub idle: Duration,
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub printer_connections: usize,
}

impl WebSession {
    /// A new session and its first ticket (returned once, kept hashed).
    pub fn new(n: NewSession) -> (Arc<Self>, String) {
        // 128 bits each, from the OS CSPRNG; hex keeps the id a DNS label.
        let id = random_secret(16);
        let ticket = random_secret(16);
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
        let rewriter = Rewriter::new(
            PrinterOrigin {
                scheme: if n.tls { Scheme::Https } else { Scheme::Http },
                host: n.device.address.clone(),
                port: n.port,
            },
            SessionOrigin {
                host: host.clone(),
                port: n.https_port,
            },
            SESSION_COOKIE,
        );
        let rewriter = if n.rewrite_bodies {
            rewriter
        } else {
            rewriter.without_body_rewriting()
        };
        let s = Arc::new(Self {
            rewriter,
            id,
            host,
            url_base,
            device: n.device,
            port: n.port,
            tls: n.tls,
            rewrite_bodies: n.rewrite_bodies,
            user_id: n.user_id,
            actor: n.actor,
            login: n.login,
            created_at: SystemTime::now(),
            expires_at: SystemTime::now() + n.max_duration,
            started: now,
            deadline: now + n.max_duration,
            idle: n.idle,
            last_activity: AtomicU64::new(0),
            ticket: Mutex::new(Some((sha256_hex(&ticket), now + TICKET_TTL))),
            cookie: Mutex::new(None),
            cancel: CancellationToken::new(),
            ended: Mutex::new(None),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            pool: PrinterPool::new(n.printer_connections),
            limiter: governor::RateLimiter::direct(quota),
            cert: Mutex::new(None),
        });
        (s, ticket)
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
        self.pool.clear();
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
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "host": self.host,
            "url": self.url_base,
            "device": self.device,
            "port": self.port,
            "tls": self.tls,
            "rewrite": self.rewrite_bodies,
            "user": self.actor,
            "created_at": humantime::format_rfc3339_seconds(self.created_at).to_string(),
            "expires_at": humantime::format_rfc3339_seconds(self.expires_at).to_string(),
            "ended": self.ended(),
            "bytes_up": self.bytes_up.load(Ordering::Relaxed),
            "bytes_down": self.bytes_down.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "certificate": *lock(&self.cert),
        })
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

    /// Live sessions matching `pred`.
    pub fn live_where(&self, pred: impl Fn(&WebSession) -> bool) -> Vec<Arc<WebSession>> {
        lock(&self.map)
            .values()
            .filter(|s| s.ended().is_none() && pred(s))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(idle: Duration, max: Duration) -> (Arc<WebSession>, String) {
        WebSession::new(NewSession {
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
            user_id: 1,
            actor: "user:t".into(),
            login: None,
            max_duration: max,
            idle,
            requests_per_second: 10,
            request_burst: 10,
            printer_connections: 4,
        })
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
