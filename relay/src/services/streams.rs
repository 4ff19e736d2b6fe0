//! Connected agents and the streams the relay opens through them.
//! [`open_stream`] is the one way anything on the relay reaches a device:
//! the relay's own check, then the agent's, which has the last word. The
//! SSH session under an agent is the adapter's; it is reached through the
//! [`AgentLink`] port.
//!
//! The registry maps an agent id to its one live session. A reconnecting
//! agent's new session replaces the old one under the lock (atomically), and
//! the old session's cleanup only removes the entry if it is still its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use dwa_link::control::ControlSender;
use dwa_link::flow::{CreditTable, Flow, FlowStream};
use dwa_policy::relay::{relay_decide, RelayCheck};
use dwa_proto::audit::Event;
use dwa_proto::control::{Denial, Hello, TlsInfo};
use dwa_proto::stream::{StreamId, DEFAULT_WINDOW, ORIGINATOR, ORIGINATOR_TLS};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::services::error::{Class, Failure};
use crate::services::metrics::{DenyReason, StreamGauge};
use crate::services::Services;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Control-channel state of a native (dwa-agent) session.
#[derive(Clone)]
pub struct Native {
    pub control: ControlSender,
    pub hello: Hello,
}

/// A stream being opened: who asked, where the agent's refusal goes, and
/// (TLS streams) where the certificate report goes.
struct Pending {
    actor: String,
    denial: oneshot::Sender<Denial>,
    tls: Option<oneshot::Sender<TlsInfo>>,
}

/// How a stream reaches the agent's side.
#[derive(Debug, PartialEq)]
pub enum Route<N> {
    Native(N),
    /// A standard SSH client's `ssh -R` binding: (address as sent, port).
    Forward((String, u32)),
}

/// A session's ways to reach the agent's side: the control channel of a
/// native agent, or the remote forwards of a standard SSH client.
pub struct Routes<N> {
    native: Mutex<Option<N>>,
    forwards: Mutex<Vec<(String, u32)>>,
    /// Woken when a control channel or a forward appears: a stream asked
    /// for between authentication and the agent's Hello waits for it
    /// instead of being refused.
    usable: tokio::sync::Notify,
}

impl<N> Default for Routes<N> {
    fn default() -> Self {
        Self {
            native: Mutex::new(None),
            forwards: Mutex::new(vec![]),
            usable: tokio::sync::Notify::new(),
        }
    }
}

impl<N: Clone> Routes<N> {
    pub fn set_native(&self, n: N) {
        *lock(&self.native) = Some(n);
        self.usable.notify_waiters();
    }

    pub fn native(&self) -> Option<N> {
        lock(&self.native).clone()
    }

    pub fn add_forward(&self, address: String, port: u32) {
        lock(&self.forwards).push((address, port));
        self.usable.notify_waiters();
    }

    pub fn remove_forward(&self, address: &str, port: u32) -> bool {
        let mut f = lock(&self.forwards);
        let before = f.len();
        f.retain(|(a, p)| !(a == address && *p == port));
        f.len() != before
    }

    pub fn forwards(&self) -> Vec<(String, u32)> {
        lock(&self.forwards).clone()
    }

    /// The route to `port`: the control channel, else a remote forward
    /// bound on that port. Waits up to `wait` for one to appear.
    pub async fn route(&self, port: u16, wait: Duration) -> Option<Route<N>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.usable.notified();
            tokio::pin!(notified);
            // Registered before the check, so a Hello in between is not missed.
            notified.as_mut().enable();
            if let Some(n) = self.native() {
                return Some(Route::Native(n));
            }
            if let Some(f) = self
                .forwards()
                .into_iter()
                .find(|(_, p)| *p == u32::from(port))
            {
                return Some(Route::Forward(f));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A boxed future, as the link's methods return them.
pub type LinkFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why a channel through the agent's session did not open.
#[derive(Debug, Clone)]
pub enum LinkError {
    /// No answer within the time given (a late channel is closed at once).
    Timeout,
    /// The far end refused or the session is gone.
    Refused(String),
}

/// The agent's SSH session as the streams service sees it: open a channel
/// and wrap it in a [`FlowStream`], or drop the session. Implemented by the
/// SSH adapter.
pub trait AgentLink: Send + Sync {
    /// A `direct-tcpip` channel to `host:port` (a dwa-agent), within `wait`.
    fn open_direct(
        &self,
        host: String,
        port: u16,
        originator: &'static str,
        id: StreamId,
        flow: Flow,
        wait: Duration,
    ) -> LinkFuture<'_, Result<FlowStream, LinkError>>;

    /// A `forwarded-tcpip` channel to a plain SSH client's `ssh -R` binding.
    fn open_forwarded(
        &self,
        address: String,
        port: u32,
        id: StreamId,
        wait: Duration,
    ) -> LinkFuture<'_, Result<FlowStream, LinkError>>;

    /// Ends the session: politely, then by cutting the connection.
    fn disconnect(&self, why: String) -> LinkFuture<'_, ()>;
}

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Refused by the relay's check or by the agent (its reason).
    #[error("{0}")]
    Refused(String),
    /// The agent is not connected, or did not answer.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(dwa_store::StoreError),
}

impl From<dwa_store::StoreError> for StreamError {
    fn from(e: dwa_store::StoreError) -> Self {
        match e {
            dwa_store::StoreError::NotFound(m) => StreamError::NotFound(m),
            dwa_store::StoreError::Invalid(m) => StreamError::Invalid(m),
            e => StreamError::Store(e),
        }
    }
}

impl Failure for StreamError {
    fn class(&self) -> Class {
        match self {
            StreamError::Refused(_) => Class::Forbidden,
            StreamError::Unavailable(_) => Class::Unavailable,
            StreamError::NotFound(_) => Class::NotFound,
            StreamError::Invalid(_) => Class::Invalid,
            StreamError::Store(e) => e.class(),
        }
    }
}

/// How long a stream request waits for a just-authenticated session to
/// become usable.
const ROUTE_WAIT: Duration = Duration::from_secs(3);

/// One authenticated agent session.
pub struct AgentConn {
    pub agent_id: String,
    pub agent_name: String,
    pub customer: String,
    pub generation: u64,
    /// The SSH session under it.
    link: Arc<dyn AgentLink>,
    pub peer: SocketAddr,
    pub transport: &'static str,
    pub connected_at: SystemTime,
    pub since: Instant,
    pub credits: Arc<CreditTable>,
    routes: Routes<Native>,
    next_stream: AtomicU32,
    streams: Arc<Semaphore>,
    /// Streams being opened: who asked, and where the agent's refusal goes.
    pending: Mutex<HashMap<StreamId, Pending>>,
    /// Scan settings pushed and not yet answered.
    scan_answers: AtomicU32,
    /// Control messages the agent sent unasked (dropped).
    unsolicited: AtomicU64,
}

impl AgentConn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        agent_id: String,
        agent_name: String,
        customer: String,
        generation: u64,
        link: Arc<dyn AgentLink>,
        peer: SocketAddr,
        transport: &'static str,
        max_streams: usize,
        connected_at: SystemTime,
    ) -> Self {
        Self {
            agent_id,
            agent_name,
            customer,
            generation,
            link,
            peer,
            transport,
            connected_at,
            since: Instant::now(),
            credits: Arc::default(),
            routes: Routes::default(),
            next_stream: AtomicU32::new(1),
            streams: Arc::new(Semaphore::new(max_streams)),
            pending: Mutex::new(HashMap::new()),
            scan_answers: AtomicU32::new(0),
            unsolicited: AtomicU64::new(0),
        }
    }

    pub fn set_native(&self, n: Native) {
        self.routes.set_native(n);
    }

    pub fn native(&self) -> Option<Native> {
        self.routes.native()
    }

    pub fn add_forward(&self, address: String, port: u32) {
        self.routes.add_forward(address, port);
    }

    pub fn remove_forward(&self, address: &str, port: u32) -> bool {
        self.routes.remove_forward(address, port)
    }

    pub fn forwards(&self) -> Vec<(String, u32)> {
        self.routes.forwards()
    }

    /// The agent explained a refusal of a stream we are opening: returns
    /// who asked for it, and hands the reason to the waiting opener. Reports
    /// for streams we never asked for are ignored (a hostile agent cannot
    /// flood the audit log with them).
    pub fn deliver_denial(&self, d: Denial) -> Option<String> {
        let p = lock(&self.pending).remove(&d.stream)?;
        let _ = p.denial.send(d);
        Some(p.actor)
    }

    /// The agent reports the TLS session of a TLS stream we are opening;
    /// reports for any other stream are ignored.
    pub fn deliver_tls(&self, info: TlsInfo) -> bool {
        match lock(&self.pending)
            .get_mut(&info.stream)
            .and_then(|p| p.tls.take())
        {
            Some(tx) => {
                let _ = tx.send(info);
                true
            }
            None => false,
        }
    }

    /// Settings were pushed: one `ScanConfigApplied` is expected.
    pub fn expect_scan_answer(&self) {
        self.scan_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a `ScanConfigApplied` answers a push (and counts it).
    pub fn take_scan_answer(&self) -> bool {
        self.scan_answers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// A control message the agent sent unasked: dropped, counted (the
    /// count goes into the disconnect record).
    pub fn note_unsolicited(&self, what: &'static str) {
        let n = self.unsolicited.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(agent = %self.agent_id, what, total = n, "unsolicited control message dropped");
        }
    }

    /// Control messages dropped as unsolicited so far.
    pub fn unsolicited(&self) -> u64 {
        self.unsolicited.load(Ordering::Relaxed)
    }

    pub fn open_streams(&self) -> usize {
        self.credits.len()
    }

    pub async fn disconnect(&self, why: &str) {
        self.credits.close_all();
        self.link.disconnect(why.to_string()).await;
    }
}

#[derive(Default)]
pub struct AgentRegistry {
    map: Mutex<HashMap<String, Arc<AgentConn>>>,
    generation: AtomicU64,
}

impl AgentRegistry {
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Installs `conn` as the agent's session; returns the one it replaced.
    pub fn insert(&self, conn: Arc<AgentConn>) -> Option<Arc<AgentConn>> {
        lock(&self.map).insert(conn.agent_id.clone(), conn)
    }

    /// Removes the entry only if it is still this generation's.
    pub fn remove_if(&self, agent_id: &str, generation: u64) -> bool {
        let mut m = lock(&self.map);
        if m.get(agent_id).map(|c| c.generation) == Some(generation) {
            m.remove(agent_id);
            true
        } else {
            false
        }
    }

    pub fn get(&self, agent_id: &str) -> Option<Arc<AgentConn>> {
        lock(&self.map).get(agent_id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<AgentConn>> {
        lock(&self.map).values().cloned().collect()
    }

    /// How many agents are connected.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The agent a request names, resolved.
struct AgentRef {
    id: String,
    name: String,
    revoked: bool,
}

/// Who wants which target through which agent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StreamRequest {
    /// Agent id or name.
    pub agent: String,
    pub host: String,
    pub port: u16,
    /// Audited as "who".
    pub actor: String,
    /// The agent wraps the stream in TLS toward the target (HTTPS printers).
    pub tls: bool,
}

/// An open stream plus what its close record needs.
pub struct OpenStream {
    pub stream: FlowStream,
    /// The target's TLS session, as the agent reported it (TLS streams).
    pub tls: Option<TlsInfo>,
    pub record: StreamRecord,
}

/// What a stream's close record needs, apart from the stream itself: kept
/// by whoever ends up owning the stream (a copy loop, an HTTP client).
pub struct StreamRecord {
    agent_id: String,
    target: String,
    actor: String,
    opened: Instant,
    id: StreamId,
    stats: Arc<dwa_link::flow::StreamStats>,
    _permit: OwnedSemaphorePermit,
    /// Counts the stream as open, and its bytes when it ends (closed or
    /// dropped).
    _open: StreamGauge,
}

async fn failed(
    relay: &Services,
    agent_id: &str,
    req: &StreamRequest,
    err: StreamError,
) -> StreamError {
    relay.metrics.stream_failed();
    relay
        .audit
        .record(
            Event::StreamFailed {
                target: format!("{}:{}", req.host, req.port),
                reason: err.to_string(),
            },
            &req.actor,
            Some(agent_id),
        )
        .await;
    err
}

async fn deny(
    relay: &Services,
    agent_id: &str,
    req: &StreamRequest,
    why: DenyReason,
    reason: String,
) -> StreamError {
    relay.metrics.stream_denied(why);
    relay
        .audit
        .record(
            Event::StreamDenied {
                target: format!("{}:{}", req.host, req.port),
                decided_by: "relay".into(),
                reason: reason.clone(),
                stream: None,
                rule: None,
            },
            &req.actor,
            Some(agent_id),
        )
        .await;
    StreamError::Refused(reason)
}

/// Whether the agent reached the target through its legacy (OpenSSL,
/// TLS 1.0+) connector: it marks the cipher so (`TlsInfo` has no field of
/// its own for it), and anything older than TLS 1.2 is legacy anyway.
pub fn tls_is_legacy(t: &TlsInfo) -> bool {
    t.cipher.starts_with("openssl:") || matches!(t.version.as_str(), "TLSv1_0" | "TLSv1_1")
}

/// Opens a stream to `host:port` through the agent, after the relay's own
/// check. The agent decides again, and has the last word.
pub async fn open_stream(relay: &Services, req: &StreamRequest) -> Result<OpenStream, StreamError> {
    // Always from the database: revocation and name ambiguity are checked
    // for every stream, whatever the registry holds.
    let agent = {
        let a = relay.store.find_agent(&req.agent).await?;
        AgentRef {
            revoked: a.revoked_at.is_some(),
            id: a.id,
            name: a.name,
        }
    };
    if agent.revoked {
        return Err(deny(
            relay,
            &agent.id,
            req,
            DenyReason::AgentRevoked,
            format!("agent {} is revoked", agent.id),
        )
        .await);
    }
    let Some(conn) = relay.agents.get(&agent.id) else {
        let e = StreamError::Unavailable(format!(
            "agent {} ({}) is not connected",
            agent.name, agent.id
        ));
        return Err(failed(relay, &agent.id, req, e).await);
    };
    let target = format!("{}:{}", req.host, req.port);
    let route = conn.routes.route(req.port, ROUTE_WAIT).await;
    let (native, forward) = match route {
        Some(Route::Native(n)) => (Some(n), None),
        Some(Route::Forward(f)) => (None, Some(f)),
        None => (None, None),
    };
    if native.is_none() && forward.is_none() {
        return Err(deny(
            relay,
            &agent.id,
            req,
            DenyReason::NoRoute,
            format!(
                "agent session has no control channel and no remote forward on port {}",
                req.port
            ),
        )
        .await);
    }
    if let Some(n) = &native {
        let registered = relay.store.device_registered(&agent.id, &req.host).await?;
        let d = relay_decide(&RelayCheck {
            device_registered: registered,
            port: req.port,
            agent_ports: &n.hello.ports,
        });
        if !d.allowed {
            return Err(deny(relay, &agent.id, req, DenyReason::RelayPolicy, d.reason).await);
        }
    }
    let Ok(permit) = conn.streams.clone().try_acquire_owned() else {
        return Err(deny(
            relay,
            &agent.id,
            req,
            DenyReason::StreamLimit,
            format!(
                "agent has the maximum of {} streams open",
                relay.cfg().limits.max_streams_per_agent
            ),
        )
        .await);
    };
    let id = conn.next_stream.fetch_add(1, Ordering::Relaxed);
    let open_timeout = relay.cfg().limits.stream_open_timeout;
    if req.tls && native.is_none() {
        return Err(deny(
            relay,
            &agent.id,
            req,
            DenyReason::TlsNeedsAgent,
            "TLS toward the target needs a dwa-agent session (not a plain SSH forward)".into(),
        )
        .await);
    }
    let mut tls = None;
    let stream = match (&native, &forward) {
        (Some(n), _) => {
            let (tx, rx) = oneshot::channel();
            let (tls_tx, tls_rx) = oneshot::channel();
            lock(&conn.pending).insert(
                id,
                Pending {
                    actor: req.actor.clone(),
                    denial: tx,
                    tls: req.tls.then_some(tls_tx),
                },
            );
            let originator = if req.tls { ORIGINATOR_TLS } else { ORIGINATOR };
            let flow = Flow::Credit {
                table: conn.credits.clone(),
                control: n.control.clone(),
                peer_window: n.hello.window,
                own_window: DEFAULT_WINDOW,
            };
            let r = conn
                .link
                .open_direct(
                    req.host.clone(),
                    req.port,
                    originator,
                    id,
                    flow,
                    open_timeout,
                )
                .await;
            match r {
                Ok(stream) => {
                    if req.tls {
                        // Sent before the accept, on the control channel,
                        // which another task reads: it may land just after.
                        tls = tokio::time::timeout(Duration::from_secs(2), tls_rx)
                            .await
                            .ok()
                            .and_then(|r| r.ok());
                    }
                    lock(&conn.pending).remove(&id);
                    if req.tls && tls.is_none() {
                        drop(stream);
                        let e = StreamError::Unavailable(
                            "the agent did not report the target's TLS certificate".into(),
                        );
                        return Err(failed(relay, &agent.id, req, e).await);
                    }
                    stream
                }
                Err(other) => {
                    // The agent sends its reason on the control channel just
                    // before refusing; give it a moment to arrive. The control
                    // loop audits it.
                    if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                        relay.metrics.stream_denied(DenyReason::AgentPolicy);
                        return Err(StreamError::Refused(format!(
                            "denied by the agent: {}",
                            d.reason
                        )));
                    }
                    lock(&conn.pending).remove(&id);
                    let e = match other {
                        LinkError::Timeout => StreamError::Unavailable(format!(
                            "the agent did not answer within {open_timeout:?}"
                        )),
                        LinkError::Refused(e) => {
                            StreamError::Refused(format!("the agent refused the stream: {e}"))
                        }
                    };
                    return Err(failed(relay, &agent.id, req, e).await);
                }
            }
        }
        (None, Some((addr, port))) => {
            match conn
                .link
                .open_forwarded(addr.clone(), *port, id, open_timeout)
                .await
            {
                Ok(stream) => stream,
                Err(LinkError::Refused(e)) => {
                    let e = StreamError::Refused(format!("the SSH client refused the stream: {e}"));
                    return Err(failed(relay, &agent.id, req, e).await);
                }
                Err(LinkError::Timeout) => {
                    let e = StreamError::Unavailable(format!("no answer within {open_timeout:?}"));
                    return Err(failed(relay, &agent.id, req, e).await);
                }
            }
        }
        (None, None) => {
            return Err(deny(
                relay,
                &agent.id,
                req,
                DenyReason::NoRoute,
                "agent session has no route".into(),
            )
            .await)
        }
    };
    // Audit first: a stream whose open record cannot be written is closed
    // before a byte of the client's flows through it.
    let written = relay
        .audit
        .append(
            Event::StreamOpen {
                stream: id,
                target: target.clone(),
                transport: conn.transport.to_string(),
                tls_sha256: tls.as_ref().map(|t| t.cert_sha256.clone()),
                tls_version: tls.as_ref().map(|t| t.version.clone()),
                tls_legacy: tls.as_ref().map(tls_is_legacy),
            },
            &req.actor,
            Some(&agent.id),
        )
        .await;
    if let Err(e) = written {
        tracing::error!(error = %e, target = %target, "stream refused: its open record could not be written");
        drop(stream);
        relay.metrics.stream_failed();
        return Err(StreamError::Unavailable(
            crate::services::error::AUDIT_DOWN.into(),
        ));
    }
    Ok(OpenStream {
        record: StreamRecord {
            agent_id: agent.id,
            target,
            actor: req.actor.clone(),
            opened: Instant::now(),
            id,
            stats: stream.stats(),
            _permit: permit,
            _open: relay.metrics.stream_opened(stream.stats()),
        },
        stream,
        tls,
    })
}

impl OpenStream {
    /// Closes the stream and writes its close record.
    pub async fn finish(self, relay: &Services, error: Option<String>) {
        drop(self.stream);
        self.record.finish(relay, error).await;
    }
}

impl StreamRecord {
    /// Writes the close record: bytes each way and duration.
    pub async fn finish(self, relay: &Services, error: Option<String>) {
        let (stats, id) = (self.stats, self.id);
        relay
            .audit
            .record(
                Event::StreamClose {
                    stream: id,
                    target: self.target,
                    bytes_up: stats.sent.load(Ordering::Relaxed),
                    bytes_down: stats.received.load(Ordering::Relaxed),
                    duration_ms: self.opened.elapsed().as_millis() as u64,
                    error,
                },
                &self.actor,
                Some(&self.agent_id),
            )
            .await;
    }
}

/// Opens a stream and carries `client` through it until both sides finish.
pub async fn carry<C>(
    relay: &Services,
    req: &StreamRequest,
    mut client: C,
) -> Result<(), StreamError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut s = open_stream(relay, req).await?;
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut s.stream, 64 * 1024, 64 * 1024);
    // At shutdown the close record is written before the database closes.
    let r = tokio::select! {
        r = copy => r,
        _ = relay.shutdown.cancelled() => Err(std::io::Error::other("relay shutting down")),
    };
    s.finish(relay, r.err().map(|e| e.to_string())).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Route, Routes};

    /// A link that opens nothing (the tests below need none).
    struct NoLink;

    impl super::AgentLink for NoLink {
        fn open_direct(
            &self,
            _: String,
            _: u16,
            _: &'static str,
            _: super::StreamId,
            _: super::Flow,
            _: Duration,
        ) -> super::LinkFuture<'_, Result<super::FlowStream, super::LinkError>> {
            Box::pin(async { Err(super::LinkError::Timeout) })
        }

        fn open_forwarded(
            &self,
            _: String,
            _: u32,
            _: super::StreamId,
            _: Duration,
        ) -> super::LinkFuture<'_, Result<super::FlowStream, super::LinkError>> {
            Box::pin(async { Err(super::LinkError::Timeout) })
        }

        fn disconnect(&self, _: String) -> super::LinkFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn conn() -> super::AgentConn {
        super::AgentConn::new(
            "agt_a".into(),
            "a".into(),
            "acme".into(),
            1,
            Arc::new(NoLink),
            "192.0.2.1:4022".parse().expect("addr"),
            "ssh",
            8,
            std::time::SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn only_answers_to_pushed_settings_are_taken() {
        let c = conn();
        // An answer nobody asked for.
        assert!(!c.take_scan_answer());
        c.expect_scan_answer();
        c.expect_scan_answer();
        assert!(c.take_scan_answer());
        assert!(c.take_scan_answer());
        // A third, unasked: dropped and counted.
        assert!(!c.take_scan_answer());
        for _ in 0..1000 {
            c.note_unsolicited("scan_config_applied");
        }
        assert_eq!(c.unsolicited(), 1000);
    }

    #[test]
    fn reports_for_streams_not_being_opened_are_not_delivered() {
        let c = conn();
        let tls = dwa_proto::control::TlsInfo {
            stream: 99,
            cert_sha256: "00".into(),
            version: "TLSv1_3".into(),
            cipher: "x".into(),
        };
        assert!(!c.deliver_tls(tls));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_for_the_hello_of_a_fresh_session() {
        let routes: Arc<Routes<&str>> = Arc::default();
        let r = routes.clone();
        let waiter = tokio::spawn(async move { r.route(80, Duration::from_secs(3)).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        routes.set_native("control");
        assert_eq!(waiter.await.ok().flatten(), Some(Route::Native("control")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forward_on_another_port_does_not_count() {
        let routes: Arc<Routes<&str>> = Arc::default();
        let r = routes.clone();
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move { r.route(80, Duration::from_secs(3)).await });
        routes.add_forward("printer".into(), 443);
        tokio::time::sleep(Duration::from_millis(100)).await;
        routes.add_forward("localhost".into(), 80);
        assert_eq!(
            waiter.await.ok().flatten(),
            Some(Route::Forward(("localhost".into(), 80)))
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_never_becomes_usable_is_refused_after_the_wait() {
        let routes: Routes<&str> = Routes::default();
        let started = tokio::time::Instant::now();
        assert_eq!(routes.route(80, Duration::from_secs(3)).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
