//! Raw TCP tunnels: a user allowed `RawTunnel` for a device's customer asks
//! for one of the device's ports (9100, 631 ...); the relay listens on a port
//! of `tunnels.ports` that serves only the requester's source address, for a
//! limited time. Each accepted connection is carried through the agent like
//! any relay-opened stream (the agent's policy decides again). Connections
//! from other addresses are closed at once and audited. Expiry, revocation
//! (`DELETE`), the user's log-out and the relay's shutdown close the listener
//! and every live connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use dwa_policy::relay::{relay_decide, RelayCheck};
use dwa_policy::roles::Action;
use dwa_proto::audit::Event;
use dwa_store::grants::{GrantKind, NewGrant};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::services::auth::Principal;
use crate::services::clock::rfc3339_seconds;
use crate::services::error::{Class, Failure};
pub use crate::services::grants::EndReason;
use crate::services::ipp_audit::{IppEvent, StreamTap};
use crate::services::streams::{open_stream, StreamRequest};
use crate::services::web_sessions::DeviceTarget;
use crate::services::{Services, Svc};

/// The IPP port: its client→printer bytes go through [`StreamTap`].
const IPP_PORT: u16 = 631;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{msg}")]
    RateLimited { msg: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Grant(#[from] crate::services::grants::GrantError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Failure for TunnelError {
    fn class(&self) -> Class {
        match self {
            TunnelError::Invalid(_) => Class::Invalid,
            TunnelError::Refused(_) => Class::Forbidden,
            TunnelError::NotFound(_) => Class::NotFound,
            TunnelError::RateLimited { retry_after, .. } => Class::RateLimited {
                retry_after: *retry_after,
            },
            TunnelError::Unavailable(_) => Class::Unavailable,
            TunnelError::Store(e) => e.class(),
            TunnelError::Grant(e) => e.class(),
            TunnelError::Io(_) => Class::Internal,
        }
    }
}

/// A tunnel as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelView {
    pub id: String,
    pub device: i64,
    pub address: String,
    pub port: u16,
    pub listen: String,
    pub host: String,
    pub listen_port: u16,
    pub client: String,
    pub user: String,
    pub expires_at: String,
    pub live_connections: usize,
    pub connections: u64,
    pub refused: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// One live tunnel.
pub struct Tunnel {
    pub id: String,
    pub user_id: i64,
    pub actor: String,
    /// Its grant in the store.
    pub grant: i64,
    pub device: DeviceTarget,
    pub port: u16,
    pub listen: SocketAddr,
    /// Where clients connect: the bound address, or the relay's domain
    /// when the listener binds every address.
    pub host: String,
    /// The only source address served.
    pub client: IpAddr,
    pub created: Instant,
    pub expires_at: SystemTime,
    cancel: CancellationToken,
    /// Cancelled once the listener is closed.
    listener_closed: CancellationToken,
    ended: Mutex<Option<EndReason>>,
    live: AtomicUsize,
    connections: AtomicU64,
    refused: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Tunnel {
    pub fn view(&self) -> TunnelView {
        TunnelView {
            id: self.id.clone(),
            device: self.device.id,
            address: self.device.address.clone(),
            port: self.port,
            listen: self.listen.to_string(),
            host: self.host.clone(),
            listen_port: self.listen.port(),
            client: self.client.to_string(),
            user: self.actor.clone(),
            expires_at: rfc3339_seconds(self.expires_at),
            live_connections: self.live.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }

    pub fn ended(&self) -> Option<EndReason> {
        *lock(&self.ended)
    }

    /// Marks the tunnel ended (once); true for the caller that ended it.
    fn end(&self, r: EndReason) -> bool {
        let mut e = lock(&self.ended);
        if e.is_some() {
            return false;
        }
        *e = Some(r);
        self.cancel.cancel();
        true
    }
}

/// The live tunnels.
#[derive(Default)]
pub struct Tunnels {
    map: Mutex<HashMap<String, Arc<Tunnel>>>,
}

impl Tunnels {
    fn live_where(&self, f: impl Fn(&Tunnel) -> bool) -> Vec<Arc<Tunnel>> {
        lock(&self.map).values().filter(|t| f(t)).cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        lock(&self.map).get(id).cloned()
    }

    /// How many tunnels are live.
    pub fn live(&self) -> usize {
        lock(&self.map)
            .values()
            .filter(|t| t.ended().is_none())
            .count()
    }
}

/// The asked lifetime (default `tunnels.ttl`), within the bounds.
fn requested_ttl(svc: &Services, t: Option<Duration>) -> Result<Duration, TunnelError> {
    let c = &svc.cfg().tunnels;
    let ttl = t.unwrap_or(c.ttl);
    if ttl < c.min_ttl || ttl > c.max_ttl {
        return Err(TunnelError::Invalid(format!(
            "ttl must be {}..={}",
            humantime::format_duration(c.min_ttl),
            humantime::format_duration(c.max_ttl)
        )));
    }
    Ok(ttl)
}

/// Binds a free port of the range, starting at a random one.
async fn bind_free(ip: IpAddr, first: u16, last: u16) -> Option<TcpListener> {
    use rand::Rng;
    let n = u32::from(last - first) + 1;
    let start = rand::thread_rng().gen_range(0..n);
    for i in 0..n {
        let port = first as u32 + (start + i) % n;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if let Ok(l) = TcpListener::bind((ip, port)).await {
            return Some(l);
        }
    }
    None
}

/// What a refused tunnel request asked for.
#[derive(Clone, Copy)]
struct Asked {
    device: i64,
    port: u16,
    client: IpAddr,
}

async fn refuse(
    svc: &Services,
    p: &Principal,
    agent: &str,
    d: Asked,
    e: TunnelError,
) -> TunnelError {
    let event = Event::TunnelRefused {
        device: d.device,
        port: d.port,
        client: d.client.to_string(),
        reason: e.to_string(),
    };
    svc.audit.record(event, &p.actor(), Some(agent)).await;
    e
}

/// Opens a tunnel to `port` of `device` for `p`, served to `client` only,
/// for `ttl` (default `tunnels.ttl`). Its grant derives from `p`'s log-in
/// or token.
pub async fn open(
    svc: &Svc,
    p: &Principal,
    client: IpAddr,
    device: i64,
    port: u16,
    ttl: Option<Duration>,
) -> Result<TunnelView, TunnelError> {
    let target = svc.store.device_target(device).await?;
    let d = Asked {
        device,
        port,
        client,
    };
    let agent = target.agent_id.clone();
    if let Err(e) = p.require(Action::RawTunnel, Some(target.customer_id)) {
        let e = TunnelError::Refused(e.to_string());
        return Err(refuse(svc, p, &agent, d, e).await);
    }
    if port == 0 {
        return Err(TunnelError::Invalid("port must be 1..=65535".into()));
    }
    let ttl = requested_ttl(svc, ttl)?;
    // The relay's own check, as for any stream: the agent must be online
    // with a control channel that allows the port. The agent decides again
    // for every connection.
    let Some(conn) = svc.agents.get(&agent) else {
        let e = TunnelError::Unavailable(format!("agent {agent} is not connected"));
        return Err(refuse(svc, p, &agent, d, e).await);
    };
    let Some(native) = conn.native() else {
        let e = TunnelError::Unavailable("the agent's session has no control channel".into());
        return Err(refuse(svc, p, &agent, d, e).await);
    };
    let decision = relay_decide(&RelayCheck {
        device_registered: true,
        port,
        agent_ports: &native.hello.ports,
    });
    if !decision.allowed {
        let e = TunnelError::Refused(decision.reason);
        return Err(refuse(svc, p, &agent, d, e).await);
    }
    let c = &svc.cfg().tunnels;
    if svc.tunnels.live_where(|t| t.user_id == p.user_id).len() >= c.max_per_user {
        let e = TunnelError::RateLimited {
            msg: format!(
                "you have the maximum of {} tunnels open; close one first",
                c.max_per_user
            ),
            retry_after: 60,
        };
        return Err(refuse(svc, p, &agent, d, e).await);
    }
    let (first, last) = c
        .port_range()
        .map_err(|e| TunnelError::Invalid(e.to_string()))?;
    let bind_ip = c.bind.unwrap_or(svc.cfg().https.listen.ip());
    let Some(listener) = bind_free(bind_ip, first, last).await else {
        let e = TunnelError::Unavailable(format!("no free tunnel port in {first}-{last}"));
        return Err(refuse(svc, p, &agent, d, e).await);
    };
    let listen = listener.local_addr()?;
    let id = crate::util::random_id("tun_");
    let now = svc.time.unix();
    let detail = json!({"port": port, "client": client.to_string(), "listen": listen.to_string()})
        .to_string();
    let mut g = NewGrant::new(GrantKind::Tunnel, now);
    g.handle = Some(&id);
    g.user_id = Some(p.user_id);
    g.parent_id = p.grant();
    g.customer_id = Some(target.customer_id);
    g.device_id = Some(target.id);
    g.agent_id = Some(&agent);
    g.expires_at = Some(now + ttl.as_secs() as i64);
    g.detail = Some(&detail);
    let grant = svc.store.issue_grant(&g).await?;
    let t = Arc::new(Tunnel {
        id,
        user_id: p.user_id,
        actor: p.actor(),
        grant,
        device: target,
        port,
        listen,
        host: if listen.ip().is_unspecified() {
            svc.cfg().domain.clone()
        } else {
            listen.ip().to_string()
        },
        client,
        created: Instant::now(),
        expires_at: svc.time.now() + ttl,
        cancel: svc.shutdown.child_token(),
        listener_closed: CancellationToken::new(),
        ended: Mutex::new(None),
        live: AtomicUsize::new(0),
        connections: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        bytes_up: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
    });
    let view = t.view();
    // No record, no tunnel.
    let opened = svc
        .audit
        .append(
            Event::TunnelOpen {
                tunnel: t.id.clone(),
                device: t.device.id,
                address: t.device.address.clone(),
                port: t.port,
                listen: listen.to_string(),
                client: client.to_string(),
                expires_at: view.expires_at.clone(),
            },
            &t.actor,
            Some(&agent),
        )
        .await;
    if let Err(e) = opened {
        tracing::error!(error = %e, "the audit log cannot be written: tunnel refused");
        let ended = crate::services::grants::end(
            svc,
            dwa_store::grants::Selector::Id(t.grant),
            EndReason::Revoked,
            "relay",
        )
        .await;
        if let Err(e) = ended {
            tracing::warn!(error = %e, "ending an unused tunnel's grant");
        }
        return Err(TunnelError::Unavailable(
            crate::services::error::AUDIT_DOWN.into(),
        ));
    }
    lock(&svc.tunnels.map).insert(t.id.clone(), t.clone());
    let span = tracing::info_span!("tunnel", id = %t.id, %listen, client = %client);
    svc.tracker
        .spawn(serve(svc.clone(), t.clone(), listener, ttl).instrument(span));
    Ok(view)
}

/// The tunnel's listener until it ends.
async fn serve(relay: Svc, t: Arc<Tunnel>, listener: TcpListener, ttl: Duration) {
    let expiry = tokio::time::sleep(ttl);
    tokio::pin!(expiry);
    let audited = relay.cfg().tunnels.max_refusals_audited;
    let reason = loop {
        let (sock, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tunnel accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut expiry => break EndReason::Expired,
            // Revoked or logged out: whoever ended it writes the record.
            // At shutdown nobody does.
            _ = t.cancel.cancelled() => break EndReason::Shutdown,
        };
        let why = if peer.ip() != t.client {
            Some(format!(
                "source {} is not the tunnel's client {}",
                peer.ip(),
                t.client
            ))
        } else if t.live.load(Ordering::Relaxed) >= relay.cfg().tunnels.max_connections {
            Some(format!(
                "the tunnel carries its maximum of {} connections",
                relay.cfg().tunnels.max_connections
            ))
        } else {
            None
        };
        if let Some(why) = why {
            drop(sock);
            let n = t.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, reason = %why, "tunnel connection refused");
            if n < audited {
                relay
                    .audit
                    .record(
                        Event::TunnelSourceRefused {
                            tunnel: t.id.clone(),
                            source: peer.to_string(),
                            reason: why,
                            port: t.port,
                            device: t.device.id,
                        },
                        "anonymous",
                        Some(&t.device.agent_id),
                    )
                    .await;
            }
            continue;
        }
        let _ = sock.set_nodelay(true);
        t.live.fetch_add(1, Ordering::Relaxed);
        let n = t.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let (r, t2) = (relay.clone(), t.clone());
        relay.tracker.spawn(
            async move {
                connection(&r, &t2, sock, peer).await;
                t2.live.fetch_sub(1, Ordering::Relaxed);
            }
            .instrument(tracing::info_span!("tunnel_conn", n, %peer)),
        );
    };
    // The listener closes first, so nothing is accepted once the end is
    // reported; live connections end on the token.
    drop(listener);
    t.listener_closed.cancel();
    // Expired, or the relay stops; an end from elsewhere closed it already.
    if t.ended().is_none() {
        if let Err(e) = end(&relay, &t, reason, "relay").await {
            tracing::error!(error = %e, "ending a tunnel");
        }
    }
}

/// Carries one accepted connection through the agent.
async fn connection(relay: &Services, t: &Arc<Tunnel>, sock: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let req = StreamRequest {
        agent: t.device.agent_id.clone(),
        host: t.device.address.clone(),
        port: t.port,
        actor: t.actor.clone(),
        tls: false,
    };
    let opened = tokio::select! {
        s = open_stream(relay, &req) => s,
        _ = t.cancel.cancelled() => Err(crate::services::streams::StreamError::Unavailable("tunnel ended".into())),
    };
    let mut s = match opened {
        Ok(s) => s,
        Err(e) => {
            // open_stream audited the refusal or failure; this ties it to the tunnel.
            relay
                .audit
                .record(
                    Event::TunnelConnection {
                        tunnel: t.id.clone(),
                        source: peer.to_string(),
                        port: Some(t.port),
                        bytes_up: 0,
                        bytes_down: 0,
                        duration_ms: started.elapsed().as_millis() as u64,
                        error: Some(e.to_string()),
                        ipp_operations_not_audited: None,
                    },
                    &t.actor,
                    Some(&t.device.agent_id),
                )
                .await;
            return;
        }
    };
    let ipp = (t.port == IPP_PORT).then(|| Arc::new(Mutex::new(StreamTap::new())));
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut client = Counted {
        inner: sock,
        up: 0,
        down: 0,
        ipp: ipp.clone(),
        notify: notify.clone(),
    };
    let r = {
        let copy = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut s.stream,
            64 * 1024,
            64 * 1024,
        );
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => break r.map(|_| ()),
                _ = notify.notified() => {
                    if let Some(tap) = &ipp {
                        let events = lock(tap).take();
                        audit_ipp(relay, t, peer, events).await;
                    }
                }
                _ = t.cancel.cancelled() => break Err(std::io::Error::other(
                    match *lock(&t.ended) {
                        Some(EndReason::Expired) => "tunnel expired",
                        Some(EndReason::Revoked) => "tunnel revoked",
                        Some(EndReason::Logout) => "tunnel's user logged out",
                        _ => "relay shutting down",
                    })),
            }
        }
    };
    let (up, down) = (client.up, client.down);
    let dropped = if let Some(tap) = &ipp {
        let (events, dropped) = {
            let mut g = lock(tap);
            g.end();
            (g.take(), g.dropped)
        };
        audit_ipp(relay, t, peer, events).await;
        Some(dropped)
    } else {
        None
    };
    drop(client);
    t.bytes_up.fetch_add(up, Ordering::Relaxed);
    t.bytes_down.fetch_add(down, Ordering::Relaxed);
    let err = r.err().map(|e| e.to_string());
    s.finish(relay, err.clone()).await;
    relay
        .audit
        .record(
            Event::TunnelConnection {
                tunnel: t.id.clone(),
                source: peer.to_string(),
                port: Some(t.port),
                bytes_up: up,
                bytes_down: down,
                duration_ms: started.elapsed().as_millis() as u64,
                error: err,
                ipp_operations_not_audited: dropped,
            },
            &t.actor,
            Some(&t.device.agent_id),
        )
        .await;
}

async fn audit_ipp(relay: &Services, t: &Tunnel, peer: SocketAddr, events: Vec<IppEvent>) {
    for ev in events {
        let via = crate::services::ipp_audit::Via::Tunnel {
            id: t.id.clone(),
            source: peer.to_string(),
        };
        let event = crate::services::ipp_audit::event(&ev, t.device.id, via);
        relay
            .audit
            .record(event, &t.actor, Some(&t.device.agent_id))
            .await;
    }
}

/// The client's socket, counted both ways; on 631 its bytes toward the
/// printer are also shown to the IPP tap (which only looks, bounded).
struct Counted {
    inner: TcpStream,
    up: u64,
    down: u64,
    ipp: Option<Arc<Mutex<StreamTap>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            self.up += new.len() as u64;
            if let Some(tap) = &self.ipp {
                let mut g = lock(tap);
                if new.is_empty() {
                    g.end();
                } else {
                    g.feed(new);
                }
                // notify_one keeps a permit: no event is missed.
                if g.has_events() {
                    self.notify.notify_one();
                }
            }
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.down += *n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Ends a tunnel through its grant (the one way a tunnel ends).
pub async fn end(
    svc: &Services,
    t: &Tunnel,
    reason: EndReason,
    by: &str,
) -> Result<(), TunnelError> {
    let (reason, by) = crate::services::grants::end_one(svc, t.grant, reason, by).await?;
    close(svc, t, reason, &by).await;
    Ok(())
}

/// Closes the tunnel on this relay: listener first, then its connections,
/// then the close record, once. Called by `grants` when its grant ended.
pub async fn close(svc: &Services, t: &Tunnel, reason: EndReason, by: &str) {
    if !t.end(reason) {
        return;
    }
    // The listener task sees the token at once; when this returns, the
    // tunnel's port accepts nothing more.
    let _ = tokio::time::timeout(Duration::from_secs(2), t.listener_closed.cancelled()).await;
    lock(&svc.tunnels.map).remove(&t.id);
    svc.audit
        .record(
            Event::TunnelClose {
                tunnel: t.id.clone(),
                device: t.device.id,
                port: t.port,
                user: t.actor.clone(),
                reason: reason.as_str().to_string(),
                duration_ms: t.created.elapsed().as_millis() as u64,
                connections: t.connections.load(Ordering::Relaxed),
                refused: t.refused.load(Ordering::Relaxed),
                bytes_up: t.bytes_up.load(Ordering::Relaxed),
                bytes_down: t.bytes_down.load(Ordering::Relaxed),
            },
            by,
            Some(&t.device.agent_id),
        )
        .await;
}

/// The tunnel if it exists and `p` may see it (its creator, or someone
/// allowed tunnels for that customer).
fn visible(svc: &Services, p: &Principal, id: &str) -> Result<Arc<Tunnel>, TunnelError> {
    let t = svc
        .tunnels
        .get(id)
        .ok_or_else(|| TunnelError::NotFound(format!("no tunnel {id}")))?;
    if t.user_id != p.user_id {
        p.require(Action::RawTunnel, Some(t.device.customer_id))
            .map_err(|e| TunnelError::Refused(e.to_string()))?;
    }
    Ok(t)
}

/// Live tunnels `p` may see, oldest first.
pub fn list(svc: &Services, p: &Principal) -> Vec<TunnelView> {
    let mut v: Vec<_> = svc.tunnels.live_where(|t| {
        t.user_id == p.user_id
            || p.require(Action::RawTunnel, Some(t.device.customer_id))
                .is_ok()
    });
    v.sort_by_key(|t| t.created);
    v.iter().map(|t| t.view()).collect()
}

/// Closes a tunnel at `p`'s request, and every connection it carries.
pub async fn revoke(svc: &Services, p: &Principal, id: &str) -> Result<TunnelView, TunnelError> {
    let t = visible(svc, p, id)?;
    end(svc, &t, EndReason::Revoked, &p.actor()).await?;
    Ok(t.view())
}
