//! The SSH side of the relay. [`SshHandler`] is a thin russh adapter: it
//! turns callbacks into calls on the agent registry and audit log, and
//! refuses everything an agent does not need.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwa_link::control::{spawn_control, ControlEvent};
use dwa_link::flow::{Flow, FlowStream};
use dwa_link::transport::BoxIo;
use dwa_proto::audit::Event;
use dwa_proto::control::ControlMsg;
use dwa_proto::stream::{StreamId, DEFAULT_WINDOW};
use dwa_proto::{CONTROL_SUBSYSTEM, PROTOCOL_VERSION};
use russh::keys::PublicKey;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::adapters::state::Relay;
use crate::services::streams::{AgentConn, AgentLink, LinkError, LinkFuture, Native};
use dwa_store::agents::AgentRow;

/// Remote forwards one SSH connection may hold.
const MAX_FORWARDS: usize = 16;

/// Virtual ports handed to `ssh -R 0:...` clients start here.
const FIRST_VIRTUAL_PORT: u32 = 20_000;

type Slot = Arc<Mutex<Option<Arc<AgentConn>>>>;

pub struct SshHandler {
    relay: Relay,
    peer: SocketAddr,
    transport: &'static str,
    /// Agent whose key verified, until auth_succeeded registers it.
    pending: Option<AgentRow>,
    conn: Slot,
    kill: tokio_util::sync::CancellationToken,
    authed: Option<oneshot::Sender<()>>,
    session_channel: Option<Channel<Msg>>,
    next_virtual_port: u32,
}

fn publickey_only() -> MethodSet {
    let mut m = MethodSet::empty();
    m.push(MethodKind::PublicKey);
    m
}

fn reject() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(publickey_only()),
        partial_success: false,
    }
}

impl SshHandler {
    fn conn(&self) -> Option<Arc<AgentConn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn refuse_key(&self, key: &PublicKey, reason: &str) {
        crate::services::refusals::record(
            &self.relay,
            Some(self.peer.ip()),
            Event::AgentAuthRefused {
                key_fingerprint: dwa_link::ssh::fingerprint(key),
                reason: reason.to_string(),
                transport: self.transport.to_string(),
            },
            &format!("peer:{}", self.peer),
            None,
        )
        .await;
    }

    async fn lookup(&self, key: &PublicKey) -> Option<AgentRow> {
        let public = dwa_link::ssh::public_openssh(key);
        match self.relay.store.agent_by_key(&public).await {
            Ok(Some(a)) if a.revoked_at.is_none() => Some(a),
            Ok(Some(_)) => {
                self.refuse_key(key, "agent key revoked").await;
                None
            }
            Ok(None) => {
                self.refuse_key(key, "unknown key").await;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "agent lookup failed");
                None
            }
        }
    }
}

/// The agent's session, as the streams service reaches it.
struct SshLink {
    handle: russh::server::Handle,
    tracker: tokio_util::task::TaskTracker,
    /// Cuts the connection under the session when a polite disconnect is
    /// not enough (a frozen or hostile peer).
    kill: tokio_util::sync::CancellationToken,
}

type ServerChannel = Channel<Msg>;

/// Waits at most `t` for a channel open. If the far end confirms later, the
/// channel is closed at once, so it is not left holding an orphan stream
/// (and a connection to a printer) that nobody reads.
async fn open_bounded<F>(
    tracker: &tokio_util::task::TaskTracker,
    t: Duration,
    open: F,
) -> Result<ServerChannel, LinkError>
where
    F: std::future::Future<Output = Result<ServerChannel, russh::Error>> + Send + 'static,
{
    let mut task = tracker.spawn(open.instrument(tracing::debug_span!("channel_open")));
    match tokio::time::timeout(t, &mut task).await {
        Ok(Ok(Ok(ch))) => Ok(ch),
        Ok(Ok(Err(e))) => Err(LinkError::Refused(e.to_string())),
        Ok(Err(_)) => Err(LinkError::Refused("session gone".into())),
        Err(_) => {
            tracker.spawn(
                async move {
                    if let Ok(Ok(ch)) = task.await {
                        let _ = ch.close().await;
                    }
                }
                .instrument(tracing::debug_span!("late_channel_close")),
            );
            Err(LinkError::Timeout)
        }
    }
}

impl AgentLink for SshLink {
    fn open_direct(
        &self,
        host: String,
        port: u16,
        originator: &'static str,
        id: StreamId,
        flow: Flow,
        wait: Duration,
    ) -> LinkFuture<'_, Result<FlowStream, LinkError>> {
        let h = self.handle.clone();
        Box::pin(async move {
            let ch = open_bounded(&self.tracker, wait, async move {
                h.channel_open_direct_tcpip(host, u32::from(port), originator, id)
                    .await
            })
            .await?;
            Ok(FlowStream::new(ch, id, flow))
        })
    }

    fn open_forwarded(
        &self,
        address: String,
        port: u32,
        id: StreamId,
        wait: Duration,
    ) -> LinkFuture<'_, Result<FlowStream, LinkError>> {
        let h = self.handle.clone();
        Box::pin(async move {
            let ch = open_bounded(&self.tracker, wait, async move {
                h.channel_open_forwarded_tcpip(address, port, "127.0.0.1", 0)
                    .await
            })
            .await?;
            Ok(FlowStream::new(ch, id, Flow::Plain))
        })
    }

    fn disconnect(&self, why: String) -> LinkFuture<'_, ()> {
        Box::pin(async move {
            let polite = self
                .handle
                .disconnect(russh::Disconnect::ByApplication, why, "en".into());
            let _ = tokio::time::timeout(Duration::from_secs(2), polite).await;
            // Give the message a moment to leave, then cut the pipe
            // regardless: a frozen or hostile peer must not keep its session.
            let kill = self.kill.clone();
            self.tracker.spawn(
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    kill.cancel();
                }
                .instrument(tracing::debug_span!("session_kill")),
            );
        })
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.lookup(offer.public_key).await.is_some() {
            Auth::Accept
        } else {
            reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // russh verified the signature; check the key again (it may have been
        // revoked between the offer and now).
        match self.lookup(key.public_key).await {
            Some(a) => {
                self.pending = Some(a);
                Ok(Auth::Accept)
            }
            None => Ok(reject()),
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(agent) = self.pending.take() else {
            return Err(russh::Error::NotAuthenticated);
        };
        let relay = &self.relay;
        let link = Arc::new(SshLink {
            handle: session.handle(),
            tracker: relay.tracker.clone(),
            kill: self.kill.clone(),
        });
        let conn = Arc::new(AgentConn::new(
            agent.id.clone(),
            agent.name.clone(),
            agent.customer.clone(),
            relay.agents.next_generation(),
            link,
            self.peer,
            self.transport,
            relay.cfg().limits.max_streams_per_agent,
            relay.time.now(),
        ));
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        if let Some(old) = relay.agents.insert(conn.clone()) {
            relay
                .audit
                .record(
                    Event::AgentReplaced {
                        old_peer: old.peer.to_string(),
                        new_peer: self.peer.to_string(),
                    },
                    &format!("agent:{}", agent.id),
                    Some(&agent.id),
                )
                .await;
            relay.tracker.spawn(
                async move {
                    old.disconnect("replaced by a newer session of this agent")
                        .await
                }
                .instrument(tracing::info_span!("replaced_session", agent = %agent.id)),
            );
        }
        let _ = relay
            .store
            .touch_agent(&agent.id, &relay.time.rfc3339())
            .await;
        relay
            .audit
            .record(
                Event::AgentConnect {
                    peer: self.peer.to_string(),
                    transport: self.transport.to_string(),
                    name: agent.name.clone(),
                },
                &format!("agent:{}", agent.id),
                Some(&agent.id),
            )
            .await;
        if let Some(tx) = self.authed.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // One session channel per connection: the control channel.
        if self.conn().is_some() && self.session_channel.is_none() {
            self.session_channel = Some(channel);
            reply.accept().await;
        } else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ours = self.session_channel.as_ref().map(|c| c.id()) == Some(channel);
        let (Some(conn), true, true) = (self.conn(), ours, name == CONTROL_SUBSYSTEM) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(ch) = self.session_channel.take() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let (control, events) = spawn_control(ch, conn.credits.clone());
        let relay = self.relay.clone();
        let span = tracing::info_span!("control", agent = %conn.agent_id);
        let tracker = relay.tracker.clone();
        tracker.spawn(control_loop(relay, conn, control, events).instrument(span));
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(conn) = self.conn() else {
            return Ok(false);
        };
        // Forwards are for standard SSH clients: a native session has no
        // use for them; duplicates and more than a handful are refused so
        // a client cannot grow memory or the audit log at will.
        let existing = conn.forwards();
        if conn.native().is_some()
            || existing.len() >= MAX_FORWARDS
            || (*port != 0 && existing.iter().any(|(a, p)| a == address && *p == *port))
        {
            return Ok(false);
        }
        // Virtual binding: nothing listens on the relay; the relay carries
        // its own streams to this forward. Port 0 gets one allocated.
        if *port == 0 {
            *port = self.next_virtual_port;
            self.next_virtual_port += 1;
        }
        conn.add_forward(address.to_string(), *port);
        self.relay
            .audit
            .record(
                Event::ForwardBind {
                    address: address.to_string(),
                    port: *port,
                },
                &format!("agent:{}", conn.agent_id),
                Some(&conn.agent_id),
            )
            .await;
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.conn().is_some_and(|c| c.remove_forward(address, port)))
    }
    // Every other channel type and request keeps russh's default: refused.
}

/// Handles the control channel's messages for one agent session.
async fn control_loop(
    relay: Relay,
    conn: Arc<AgentConn>,
    control: dwa_link::control::ControlSender,
    mut events: tokio::sync::mpsc::Receiver<ControlEvent>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            ControlEvent::Msg(ControlMsg::Hello(h)) => {
                // One hello per session; a repeat is ignored (no replies for
                // an agent to multiply).
                if conn.native().is_some() {
                    conn.note_unsolicited("hello");
                    continue;
                }
                if h.protocol != PROTOCOL_VERSION {
                    tracing::warn!(
                        protocol = h.protocol,
                        "agent speaks another protocol version"
                    );
                }
                tracing::info!(version = %h.agent_version, ports = ?h.ports, "agent hello");
                control.send(ControlMsg::Welcome {
                    relay_version: env!("CARGO_PKG_VERSION").into(),
                    window: DEFAULT_WINDOW,
                });
                // The agent's own copy of the audit log's head starts now.
                if let Some(cp) = crate::services::checkpoints::newest(&relay) {
                    control.send(ControlMsg::AuditCheckpoint(cp));
                }
                conn.set_native(Native {
                    control: control.clone(),
                    hello: h,
                });
                // Scan settings made on the relay follow the agent across
                // reconnects: sent after every Welcome.
                if let Err(e) =
                    crate::services::telemetry::settings::push(&relay, &conn.agent_id).await
                {
                    tracing::error!(error = %e, "sending scan settings");
                }
            }
            ControlEvent::Msg(ControlMsg::Denied(d)) => {
                let event = Event::StreamDenied {
                    target: format!("{}:{}", d.host, d.port),
                    decided_by: "agent".into(),
                    reason: d.reason.clone(),
                    stream: Some(d.stream),
                    rule: Some(d.rule.clone()),
                };
                match conn.deliver_denial(d) {
                    Some(actor) => {
                        relay
                            .audit
                            .record(event, &actor, Some(&conn.agent_id))
                            .await
                    }
                    None => conn.note_unsolicited("denied"),
                }
            }
            // Only an answer to settings we pushed is stored and audited.
            ControlEvent::Msg(ControlMsg::ScanConfigApplied(a)) => {
                if conn.take_scan_answer() {
                    crate::services::telemetry::settings::applied(&relay, &conn.agent_id, &a).await
                } else {
                    conn.note_unsolicited("scan_config_applied");
                }
            }
            ControlEvent::Msg(ControlMsg::DiagResult { request, outcome }) => {
                if !relay.diag.deliver(&conn.agent_id, request, outcome) {
                    conn.note_unsolicited("diag_result");
                }
            }
            ControlEvent::Msg(ControlMsg::TlsInfo(t)) => {
                if !conn.deliver_tls(t) {
                    conn.note_unsolicited("tls_info");
                }
            }
            ControlEvent::Msg(ControlMsg::Pong { .. }) => {}
            ControlEvent::Msg(_) => conn.note_unsolicited("other"),
            ControlEvent::Error(e) => {
                relay
                    .audit
                    .record(
                        Event::ProtocolError {
                            error: e.to_string(),
                        },
                        &format!("agent:{}", conn.agent_id),
                        Some(&conn.agent_id),
                    )
                    .await;
                conn.disconnect("control channel protocol error").await;
                break;
            }
        }
    }
}

/// Runs one SSH connection (over TCP or WebSocket) to its end.
pub async fn serve_connection(
    relay: Relay,
    mut io: BoxIo,
    peer: SocketAddr,
    transport: &'static str,
) {
    let limits = relay.cfg().limits.clone();
    // One address cannot hold every handshake: its own cap first, then the
    // client's version line (a silent connection costs no shared slot),
    // and only then a place among all handshakes.
    let Some(source_slot) = relay.handshake_sources.try_take(peer.ip()) else {
        tracing::warn!(%peer, "too many SSH handshakes from this address; dropping connection");
        return;
    };
    let prefix = match tokio::time::timeout(
        limits.version_timeout,
        dwa_link::transport::read_ssh_version(&mut io),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "no SSH version line");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "silent before its SSH version line; dropped");
            return;
        }
    };
    // Bounded handshakes: a reconnect storm queues here instead of eating
    // the CPU; whoever waits too long is dropped.
    let permit = match tokio::time::timeout(
        limits.handshake_timeout,
        relay.handshakes.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            tracing::warn!(%peer, "too many SSH handshakes in progress; dropping connection");
            return;
        }
    };
    let (authed_tx, authed_rx) = oneshot::channel();
    let slot: Slot = Arc::default();
    let kill = tokio_util::sync::CancellationToken::new();
    let io = dwa_link::transport::read_ahead_after(io, dwa_link::transport::READ_AHEAD, prefix);
    let io: BoxIo = Box::new(dwa_link::transport::Killable::new(io, kill.clone()));
    let handler = SshHandler {
        relay: relay.clone(),
        peer,
        transport,
        pending: None,
        conn: slot.clone(),
        kill: kill.clone(),
        authed: Some(authed_tx),
        session_channel: None,
        next_virtual_port: FIRST_VIRTUAL_PORT,
    };
    let running = match tokio::time::timeout(
        limits.handshake_timeout,
        russh::server::run_stream(relay.ssh_config.clone(), io, handler),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "SSH version exchange timed out");
            return;
        }
    };
    let handle = running.handle();
    tokio::select! {
        _ = authed_rx => {}
        _ = tokio::time::sleep(limits.handshake_timeout) => {
            // Key exchange or authentication never finished (a slow or
            // silent client): cut it, whatever state russh is in.
            tracing::debug!(%peer, "SSH handshake timed out");
            kill.cancel();
        }
    }
    drop(permit);
    drop(source_slot);
    let result = tokio::select! {
        r = running => r.err().map(|e| e.to_string()),
        _ = relay.shutdown.cancelled() => {
            let bye = handle.disconnect(russh::Disconnect::ByApplication, "relay shutting down".into(), "en".into());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), bye).await;
            kill.cancel();
            Some("relay shutting down".into())
        }
    };
    tracing::info!(%peer, reason = ?result, "SSH session ended");
    let conn = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(conn) = conn {
        conn.credits.close_all();
        let current = relay.agents.remove_if(&conn.agent_id, conn.generation);
        relay
            .audit
            .record(
                Event::AgentDisconnect {
                    peer: peer.to_string(),
                    transport: transport.to_string(),
                    duration_ms: conn.since.elapsed().as_millis() as u64,
                    reason: result,
                    replaced: !current,
                    unsolicited: Some(conn.unsolicited()).filter(|n| *n > 0),
                },
                &format!("agent:{}", conn.agent_id),
                Some(&conn.agent_id),
            )
            .await;
        // The agent is gone (not replaced by its own new session): its web
        // sessions cannot go on.
        if current {
            for s in relay.web.live_where(|s| s.device.agent_id == conn.agent_id) {
                let r = crate::services::web_sessions::end(
                    &relay,
                    &s,
                    crate::services::web_sessions::EndReason::AgentGone,
                    "relay",
                )
                .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "ending a web session");
                }
            }
        }
    }
}

/// Accepts SSH over TCP until shutdown.
pub async fn listen_tcp(relay: Relay, listener: TcpListener) {
    while let Some(a) = relay.accept(&listener).await {
        let r = relay.clone();
        let peer = a.peer;
        relay.tracker.spawn(
            async move {
                serve_connection(r, Box::new(a.sock), peer, "ssh").await;
                drop(a.slot);
            }
            .instrument(tracing::info_span!("ssh_conn", %peer)),
        );
    }
}
