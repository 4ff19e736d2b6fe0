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

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use dwa_policy::relay::{relay_decide, RelayCheck};
use dwa_policy::roles::Action;
use dwa_proto::audit::kind;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::adapters::http::PeerAddr;
use crate::app::Relay;
use crate::error::{RelayError, Result};
use crate::services::auth::Principal;
use crate::services::ipp_audit::{IppEvent, StreamTap};
use crate::services::streams::{open_stream, StreamRequest};
use crate::services::web_sessions::DeviceTarget;

/// The IPP port: its client→printer bytes go through [`StreamTap`].
const IPP_PORT: u16 = 631;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Expired,
    Revoked,
    Logout,
    Shutdown,
}

/// One live tunnel.
pub struct Tunnel {
    pub id: String,
    pub user_id: i64,
    pub actor: String,
    /// The log-in session it was opened under (it ends with it).
    pub login: Option<String>,
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
    fn view(&self) -> serde_json::Value {
        json!({
            "id": self.id, "device": self.device.id, "address": self.device.address,
            "port": self.port, "listen": self.listen.to_string(),
            "host": self.host, "listen_port": self.listen.port(),
            "client": self.client.to_string(), "user": self.actor,
            "expires_at": humantime::format_rfc3339_seconds(self.expires_at).to_string(),
            "live_connections": self.live.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "bytes_up": self.bytes_up.load(Ordering::Relaxed),
            "bytes_down": self.bytes_down.load(Ordering::Relaxed),
        })
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

    fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        lock(&self.map).get(id).cloned()
    }
}

pub fn routes() -> Router<Relay> {
    Router::new()
        .route("/api/v1/devices/{id}/tunnels", post(create))
        .route("/api/v1/tunnels", get(list))
        .route("/api/v1/tunnels/{id}", delete(revoke))
}

/// `ttl` as seconds or a duration such as "30m".
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelRequest {
    pub port: u16,
    #[serde(default)]
    pub ttl: Option<Ttl>,
}

type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

async fn refuse(
    relay: &Relay,
    p: &Principal,
    agent: &str,
    d: serde_json::Value,
    e: RelayError,
) -> RelayError {
    let mut d = d;
    d["reason"] = json!(e.to_string());
    relay
        .audit
        .record(kind::TUNNEL_REFUSED, &p.actor(), Some(agent), d)
        .await;
    e
}

/// Opens a tunnel to a device port, for the caller's address only.
#[utoipa::path(
    post, path = "/api/v1/devices/{id}/tunnels", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    params(("id" = i64, Path, description = "device id")),
    request_body = TunnelRequest,
    responses(
        (status = 201, description = "{id, host, port, client, expires_at, ...}: connect to host:port from client"),
        (status = 400, description = "bad port or ttl"),
        (status = 403, description = "not allowed for this customer, or the port is not allowed"),
        (status = 404, description = "no such device"),
        (status = 429, description = "the user has the maximum of tunnels open"),
        (status = 503, description = "no free listening port, or the agent is offline"),
    )
)]
pub async fn create(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    p: Principal,
    Path(device): Path<i64>,
    body: Body<TunnelRequest>,
) -> Result<Response> {
    let req = body
        .map(|Json(v)| v)
        .map_err(|e| RelayError::Invalid(e.body_text()))?;
    let v = open(&relay, &p, peer.ip(), device, &req).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn requested_ttl(relay: &Relay, t: &Option<Ttl>) -> Result<Duration> {
    let c = &relay.cfg.tunnels;
    let ttl = match t {
        None => c.ttl,
        Some(Ttl::Seconds(s)) => Duration::from_secs(*s),
        Some(Ttl::Text(s)) => crate::util::parse_duration(s)?,
    };
    if ttl < c.min_ttl || ttl > c.max_ttl {
        return Err(RelayError::Invalid(format!(
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

pub async fn open(
    relay: &Relay,
    p: &Principal,
    client: IpAddr,
    device: i64,
    req: &TunnelRequest,
) -> Result<serde_json::Value> {
    let target = relay.store.device_target(device).await?;
    let d = json!({"device": device, "port": req.port, "client": client.to_string()});
    let agent = target.agent_id.clone();
    if let Err(e) = p.require(Action::RawTunnel, Some(target.customer_id)) {
        return Err(refuse(relay, p, &agent, d, e).await);
    }
    if req.port == 0 {
        return Err(RelayError::Invalid("port must be 1..=65535".into()));
    }
    let ttl = requested_ttl(relay, &req.ttl)?;
    // The relay's own check, as for any stream: the agent must be online
    // with a control channel that allows the port. The agent decides again
    // for every connection.
    let Some(conn) = relay.agents.get(&agent) else {
        let e = RelayError::Unavailable(format!("agent {agent} is not connected"));
        return Err(refuse(relay, p, &agent, d, e).await);
    };
    let Some(native) = conn.native() else {
        let e = RelayError::Unavailable("the agent's session has no control channel".into());
        return Err(refuse(relay, p, &agent, d, e).await);
    };
    let decision = relay_decide(&RelayCheck {
        device_registered: true,
        port: req.port,
        agent_ports: &native.hello.ports,
    });
    if !decision.allowed {
        let e = RelayError::Refused(decision.reason);
        return Err(refuse(relay, p, &agent, d, e).await);
    }
    let c = &relay.cfg.tunnels;
    if relay.tunnels.live_where(|t| t.user_id == p.user_id).len() >= c.max_per_user {
        let e = RelayError::RateLimited {
            msg: format!(
                "you have the maximum of {} tunnels open; close one first",
                c.max_per_user
            ),
            retry_after: 60,
        };
        return Err(refuse(relay, p, &agent, d, e).await);
    }
    let (first, last) = c.port_range()?;
    let bind_ip = c.bind.unwrap_or(relay.cfg.https.listen.ip());
    let Some(listener) = bind_free(bind_ip, first, last).await else {
        let e = RelayError::Unavailable(format!("no free tunnel port in {first}-{last}"));
        return Err(refuse(relay, p, &agent, d, e).await);
    };
    let listen = listener.local_addr()?;
    let t = Arc::new(Tunnel {
        id: crate::util::random_id("tun_"),
        user_id: p.user_id,
        actor: p.actor(),
        login: p.login_session().map(str::to_string),
        device: target,
        port: req.port,
        listen,
        host: if listen.ip().is_unspecified() {
            relay.cfg.domain.clone()
        } else {
            listen.ip().to_string()
        },
        client,
        created: Instant::now(),
        expires_at: SystemTime::now() + ttl,
        cancel: relay.shutdown.child_token(),
        listener_closed: CancellationToken::new(),
        ended: Mutex::new(None),
        live: AtomicUsize::new(0),
        connections: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        bytes_up: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
    });
    lock(&relay.tunnels.map).insert(t.id.clone(), t.clone());
    let view = t.view();
    relay
        .audit
        .record(
            kind::TUNNEL_OPEN,
            &t.actor,
            Some(&agent),
            json!({"tunnel": t.id, "device": t.device.id, "address": t.device.address,
                   "port": t.port, "listen": listen.to_string(), "client": client.to_string(),
                   "expires_at": view["expires_at"]}),
        )
        .await;
    let span = tracing::info_span!("tunnel", id = %t.id, %listen, client = %client);
    relay
        .tracker
        .spawn(serve(relay.clone(), t.clone(), listener, ttl).instrument(span));
    Ok(view)
}

/// The tunnel's listener until it ends.
async fn serve(relay: Relay, t: Arc<Tunnel>, listener: TcpListener, ttl: Duration) {
    let expiry = tokio::time::sleep(ttl);
    tokio::pin!(expiry);
    let audited = relay.cfg.tunnels.max_refusals_audited;
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
        } else if t.live.load(Ordering::Relaxed) >= relay.cfg.tunnels.max_connections {
            Some(format!(
                "the tunnel carries its maximum of {} connections",
                relay.cfg.tunnels.max_connections
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
                        kind::TUNNEL_SOURCE_REFUSED,
                        "anonymous",
                        Some(&t.device.agent_id),
                        json!({"tunnel": t.id, "source": peer.to_string(), "reason": why,
                               "port": t.port, "device": t.device.id}),
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
    lock(&relay.tunnels.map).remove(&t.id);
    end(&relay, &t, reason, "relay").await;
}

/// Carries one accepted connection through the agent.
async fn connection(relay: &Relay, t: &Arc<Tunnel>, sock: TcpStream, peer: SocketAddr) {
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
        _ = t.cancel.cancelled() => Err(RelayError::Unavailable("tunnel ended".into())),
    };
    let mut s = match opened {
        Ok(s) => s,
        Err(e) => {
            // open_stream audited the refusal or failure; this ties it to the tunnel.
            relay
                .audit
                .record(
                    kind::TUNNEL_CONNECTION,
                    &t.actor,
                    Some(&t.device.agent_id),
                    json!({"tunnel": t.id, "source": peer.to_string(), "bytes_up": 0, "bytes_down": 0,
                           "duration_ms": started.elapsed().as_millis() as u64, "error": e.to_string()}),
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
            kind::TUNNEL_CONNECTION,
            &t.actor,
            Some(&t.device.agent_id),
            json!({"tunnel": t.id, "source": peer.to_string(), "port": t.port,
                   "bytes_up": up, "bytes_down": down,
                   "duration_ms": started.elapsed().as_millis() as u64, "error": err,
                   "ipp_operations_not_audited": dropped}),
        )
        .await;
}

async fn audit_ipp(relay: &Relay, t: &Tunnel, peer: SocketAddr, events: Vec<IppEvent>) {
    for ev in events {
        let mut d = crate::services::ipp_audit::detail(&ev);
        d["tunnel"] = json!(t.id);
        d["device"] = json!(t.device.id);
        d["source"] = json!(peer.to_string());
        relay
            .audit
            .record(kind::IPP_OPERATION, &t.actor, Some(&t.device.agent_id), d)
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

/// Ends a tunnel: close record, listener and connections closed.
pub async fn end(relay: &Relay, t: &Tunnel, reason: EndReason, by: &str) {
    if !t.end(reason) {
        return;
    }
    // The listener task sees the token at once; when this returns, the
    // tunnel's port accepts nothing more.
    let _ = tokio::time::timeout(Duration::from_secs(2), t.listener_closed.cancelled()).await;
    relay
        .audit
        .record(
            kind::TUNNEL_CLOSE,
            by,
            Some(&t.device.agent_id),
            json!({"tunnel": t.id, "device": t.device.id, "port": t.port, "user": t.actor,
                   "reason": reason, "duration_ms": t.created.elapsed().as_millis() as u64,
                   "connections": t.connections.load(Ordering::Relaxed),
                   "refused": t.refused.load(Ordering::Relaxed),
                   "bytes_up": t.bytes_up.load(Ordering::Relaxed),
                   "bytes_down": t.bytes_down.load(Ordering::Relaxed)}),
        )
        .await;
}

/// Ends the tunnels opened under a log-in session (at its log-out).
pub async fn end_for_login(relay: &Relay, login: &str, by: &str) {
    for t in relay
        .tunnels
        .live_where(|t| t.login.as_deref() == Some(login))
    {
        end(relay, &t, EndReason::Logout, by).await;
    }
}

/// The tunnel if it exists and the caller may see it (its creator, or
/// someone allowed tunnels for that customer).
fn visible(relay: &Relay, p: &Principal, id: &str) -> Result<Arc<Tunnel>> {
    let t = relay
        .tunnels
        .get(id)
        .ok_or_else(|| RelayError::NotFound(format!("no tunnel {id}")))?;
    if t.user_id != p.user_id {
        p.require(Action::RawTunnel, Some(t.device.customer_id))?;
    }
    Ok(t)
}

/// Live tunnels the caller may see.
#[utoipa::path(get, path = "/api/v1/tunnels", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    responses((status = 200, description = "the caller's tunnels, and those of customers it may open tunnels for")))]
pub async fn list(State(relay): State<Relay>, p: Principal) -> Json<serde_json::Value> {
    let mut v: Vec<_> = relay.tunnels.live_where(|t| {
        t.user_id == p.user_id
            || p.require(Action::RawTunnel, Some(t.device.customer_id))
                .is_ok()
    });
    v.sort_by_key(|t| t.created);
    Json(json!(v.iter().map(|t| t.view()).collect::<Vec<_>>()))
}

/// Closes a tunnel and every connection it carries.
#[utoipa::path(delete, path = "/api/v1/tunnels/{id}", tag = "tunnels", security(("cookie" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "tunnel id")),
    responses(
        (status = 200, description = "the tunnel as it ended"),
        (status = 403, description = "not the caller's and not allowed for its customer"),
        (status = 404, description = "no such live tunnel"),
    ))]
pub async fn revoke(
    State(relay): State<Relay>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let t = visible(&relay, &p, &id)?;
    end(&relay, &t, EndReason::Revoked, &p.actor()).await;
    lock(&relay.tunnels.map).remove(&t.id);
    Ok(Json(t.view()))
}
