//! `dwa-agent run`: keep one outbound SSH session to the relay up, forever.
//!
//! Connect over the configured transport (`auto`: SSH, then the WebSocket on
//! the HTTPS port), check the relay's host key against the pin, authenticate
//! with the agent key, open the control channel, say hello, then serve
//! relay-opened streams until the session ends; reconnect with exponential
//! backoff and jitter (cap 60 s).

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dwa_link::backoff::Backoff;
use dwa_link::control::{spawn_control, ControlEvent};
use dwa_link::flow::CreditTable;
use dwa_link::transport::{BoxIo, TcpTransport, Transport, WsTransport};
use dwa_proto::control::{ControlMsg, Hello};
use dwa_proto::stream::DEFAULT_WINDOW;
use dwa_proto::stream::{ORIGINATOR, ORIGINATOR_TLS};
use dwa_proto::{CONTROL_SUBSYSTEM, PROTOCOL_VERSION};
use russh::client::{ChannelOpenHandle, Msg, Session};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{join_host_port, AgentConfig, TransportMode};
use crate::diag::DiagService;
use crate::error::{AgentError, Result};
use crate::local_audit::LocalAudit;
use crate::policy::LivePolicy;
use crate::relay_http::RelayHttp;
use crate::status::StatusBoard;
use crate::streams::StreamService;
use crate::telemetry::collector::{Collector, Plan};
use crate::telemetry::names::Names;
use crate::telemetry::scan::ScanOptions;
use crate::telemetry::spool::{Limits, OnBadKey, Spool};
use crate::telemetry::traps::TrapListener;
use crate::telemetry::upload::Uploader;

/// One upload request, connect to answer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

async fn refuse(reply: ChannelOpenHandle) {
    reply
        .reject(ChannelOpenFailure::AdministrativelyProhibited)
        .await;
}

/// Thin russh adapter: host key pin, and streams handed to the service.
struct AgentHandler {
    pinned: PublicKey,
    mismatch: Arc<Mutex<Option<String>>>,
    streams: Arc<StreamService>,
}

impl russh::client::Handler for AgentHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Only a plain host key can match the pin; certificates are not used.
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                "the relay presented a host certificate; a pinned plain key is expected".into(),
            );
            return Ok(false);
        };
        if key.key_data() == self.pinned.key_data() {
            return Ok(true);
        }
        let msg = format!(
            "the relay presented SSH host key {} but {} is pinned: refusing to connect \
             (a different relay or an interception; if the relay was rebuilt, re-enroll)",
            dwa_link::ssh::fingerprint(key),
            dwa_link::ssh::fingerprint(&self.pinned)
        );
        *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        Ok(false)
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let tls = match originator_address {
            ORIGINATOR => false,
            ORIGINATOR_TLS => true,
            _ => {
                refuse(reply).await;
                return Ok(());
            }
        };
        let svc = self.streams.clone();
        let host = host_to_connect.to_string();
        let span = tracing::info_span!("stream", id = originator_port, target = %format!("{host}:{port_to_connect}"));
        // Never wait inside a callback: the session loop would stall.
        tokio::spawn(
            svc.serve(channel, host, port_to_connect, tls, originator_port, reply)
                .instrument(span),
        );
        Ok(())
    }

    // Everything else the relay could open is refused: the agent carries
    // nothing but policy-checked streams.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _c: Channel<Msg>,
        _a: &str,
        _p: u32,
        _oa: &str,
        _op: u32,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _c: Channel<Msg>,
        _p: &str,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _c: Channel<Msg>,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_session(
        &mut self,
        _c: Channel<Msg>,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _c: Channel<Msg>,
        _p: &str,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _c: Channel<Msg>,
        _a: &str,
        _p: u32,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await;
        Ok(())
    }
}

pub struct Agent {
    cfg: AgentConfig,
    key: Arc<PrivateKey>,
    pinned: PublicKey,
    /// The agent's own audit log, and its writer until `run` starts it.
    audit: LocalAudit,
    audit_writer: Option<crate::local_audit::Writer>,
    /// What `dwa-agent status` shows (written to status.json).
    status: Arc<StatusBoard>,
    policy: Arc<LivePolicy>,
    telemetry: Option<Telemetry>,
    /// One for the agent's life: its concurrency cap spans reconnects.
    diag: Arc<DiagService>,
}

/// The scheduled telemetry of `run`: the collector scans into the spool,
/// the uploader drains it over HTTPS, whatever state the tunnel is in.
struct Telemetry {
    collector: Arc<Collector>,
    uploader: Option<Uploader>,
    relay_up: Arc<Notify>,
    /// The resolver the collector's scans use (a reload keeps it).
    names: Arc<Names>,
    /// `[traps]` when enabled: the listener and its bound socket.
    traps: Option<(TrapListener, tokio::net::UdpSocket)>,
}

/// The collector's template for each scan, from `[scan]`.
pub(crate) fn scan_options(
    scan: &crate::config::ScanConfig,
    names: &Arc<Names>,
    policy: &Arc<LivePolicy>,
) -> Result<ScanOptions> {
    Ok(ScanOptions {
        dns: scan.dns_names.then(|| names.clone()),
        netbios: scan.netbios(),
        target_names: vec![],
        policy: Some(policy.clone()),
        v3: scan.v3_security()?,
        communities: scan.effective_communities(),
        port: scan.snmp_port,
        timeout: scan.timeout,
        retries: scan.retries,
        concurrency: scan.concurrency,
        progress: false,
    })
}

/// What to scan and how often, from `[scan]`.
pub(crate) fn plan(scan: &crate::config::ScanConfig) -> Plan {
    Plan {
        ranges: scan.ranges.clone(),
        interval: scan.interval,
    }
}

impl Agent {
    pub fn load(cfg: AgentConfig, config_path: &Path) -> Result<Self> {
        let key_path = cfg.key_path(config_path);
        let key = russh::keys::load_secret_key(&key_path, None)
            .map_err(|e| AgentError::Config(format!("key_file {}: {e}", key_path.display())))?;
        let pinned = dwa_link::ssh::parse_public(&cfg.pins.ssh_host_key)
            .map_err(|e| AgentError::Config(format!("pins.ssh_host_key: {e}")))?;
        let policy = Arc::new(LivePolicy::new(cfg.policy(crate::config::own_addresses())?));
        let (audit, writer) = LocalAudit::open(cfg.audit_log_path(config_path));
        Ok(Self {
            cfg,
            key: Arc::new(key),
            pinned,
            audit,
            audit_writer: Some(writer),
            status: Arc::new(StatusBoard::new(config_path)),
            diag: Arc::new(DiagService::new(policy.clone())),
            policy,
            telemetry: None,
        })
    }

    /// Opens the spool and prepares the collector and the uploader; they
    /// start with [`Agent::run`].
    /// What SIGHUP changes in this agent (see [`crate::reload`]); take it
    /// before `run`.
    pub fn reloader(&self, config_path: &Path) -> crate::reload::Reloader {
        crate::reload::Reloader {
            path: config_path.to_path_buf(),
            running: std::sync::Mutex::new(self.cfg.clone()),
            policy: self.policy.clone(),
            scan: self
                .telemetry
                .as_ref()
                .map(|t| (t.collector.clone(), t.names.clone())),
            audit: self.audit.clone(),
        }
    }

    pub async fn with_telemetry(mut self, config_path: &Path) -> Result<Self> {
        let scan = &self.cfg.scan;
        let spool = Spool::open(
            &self.cfg.spool_path(config_path),
            &self.cfg.spool_key_path(config_path),
            Limits {
                max_items: self.cfg.spool.max_items,
                max_bytes: self.cfg.spool.max_bytes,
            },
            OnBadKey::StartFresh,
        )
        .await?;
        let names = Arc::new(Names::new(&scan.dns_servers()?)?);
        let options = scan_options(scan, &names, &self.policy)?;
        let names_kept = names.clone();
        let wake = Arc::new(Notify::new());
        let relay_up = Arc::new(Notify::new());
        let relay = url::Url::parse(&self.cfg.relay)
            .map_err(|e| AgentError::Config(format!("relay: {e}")))?;
        let uploader = Uploader {
            spool: spool.clone(),
            http: RelayHttp::new(&relay, &self.cfg.pins.tls_fingerprint, UPLOAD_TIMEOUT)?,
            agent_id: self.cfg.agent_id.clone(),
            key: self.key.clone(),
            batch_items: self.cfg.spool.batch_items,
            wake: wake.clone(),
            relay_up: relay_up.clone(),
            status: Some(self.status.clone()),
        };
        let collector = Arc::new(Collector::new(
            plan(scan),
            self.policy.clone(),
            options,
            names,
            spool,
            wake,
        ));
        collector.report_to(self.status.clone());
        let traps = if self.cfg.traps.enabled {
            let listen = &self.cfg.traps.listen;
            let socket = tokio::net::UdpSocket::bind(listen.as_str())
                .await
                .map_err(|e| {
                    AgentError::Config(format!(
                        "traps.listen {listen}: {e} (port 162 needs root or CAP_NET_BIND_SERVICE)"
                    ))
                })?;
            tracing::info!(%listen, "listening for SNMP traps");
            Some((
                TrapListener {
                    policy: self.policy.clone(),
                    collector: collector.clone(),
                    communities: scan.trap_communities(&self.cfg.traps),
                    min_interval: self.cfg.traps.min_interval,
                    stats: Arc::default(),
                },
                socket,
            ))
        } else {
            None
        };
        self.telemetry = Some(Telemetry {
            names: names_kept,
            collector,
            uploader: Some(uploader),
            relay_up,
            traps,
        });
        Ok(self)
    }

    async fn connect_transport(&self) -> Result<(BoxIo, &'static str)> {
        let host = self.cfg.relay_host();
        let timeout = self.cfg.link.connect_timeout;
        let tcp = TcpTransport {
            addr: join_host_port(&host, self.cfg.ssh_port),
            timeout,
        };
        let ws = || -> Result<WsTransport> {
            Ok(WsTransport {
                addr: join_host_port(&host, self.cfg.relay_https_port()),
                host: host.clone(),
                tls: Arc::new(dwa_link::tls::pinned_client_config(
                    &self.cfg.pins.tls_fingerprint,
                )?),
                timeout,
            })
        };
        match self.cfg.transport {
            TransportMode::Ssh => Ok((tcp.connect().await?, tcp.name())),
            TransportMode::Websocket => {
                let w = ws()?;
                Ok((w.connect().await?, w.name()))
            }
            TransportMode::Auto => match tcp.connect().await {
                Ok(io) => Ok((io, tcp.name())),
                Err(e) => {
                    tracing::info!(error = %e, "SSH port unreachable; trying SSH over WebSocket on the HTTPS port");
                    let w = ws()?;
                    Ok((w.connect().await?, w.name()))
                }
            },
        }
    }

    /// One session, from connect to its end.
    async fn session(&self, shutdown: &CancellationToken) -> Result<()> {
        let (io, transport) = self.connect_transport().await?;
        let io = dwa_link::transport::read_ahead(io, dwa_link::transport::READ_AHEAD);
        let link = &self.cfg.link;
        let ssh_cfg = Arc::new(dwa_link::ssh::client_config(dwa_link::ssh::Keepalive {
            interval: link.keepalive_interval,
            max: link.keepalive_max,
        }));
        let streams = Arc::new(StreamService {
            policy: self.policy.clone(),
            credits: Arc::new(CreditTable::default()),
            control: OnceLock::new(),
            limit: Arc::new(Semaphore::new(link.max_streams)),
            connect_timeout: link.connect_timeout,
            printer_tls: OnceLock::new(),
            audit: self.audit.clone(),
        });
        let mismatch = Arc::new(Mutex::new(None));
        let handler = AgentHandler {
            pinned: self.pinned.clone(),
            mismatch: mismatch.clone(),
            streams: streams.clone(),
        };
        let hs_timeout = link.connect_timeout * 2;
        let connected = tokio::time::timeout(
            hs_timeout,
            russh::client::connect_stream(ssh_cfg, io, handler),
        )
        .await;
        let mut handle = match connected {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                if let Some(m) = mismatch.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(AgentError::HostKeyMismatch(m));
                }
                return Err(e.into());
            }
            Err(_) => {
                return Err(AgentError::Ssh(format!(
                    "SSH handshake timed out after {hs_timeout:?}"
                )))
            }
        };
        let auth = tokio::time::timeout(
            hs_timeout,
            handle.authenticate_publickey(
                self.cfg.agent_id.clone(),
                PrivateKeyWithHashAlg::new(self.key.clone(), None),
            ),
        )
        .await
        .map_err(|_| AgentError::Ssh("authentication timed out".into()))??;
        if !auth.success() {
            return Err(AgentError::Ssh(
                "the relay refused this agent's key (revoked or unknown: re-enroll)".into(),
            ));
        }
        let ch = tokio::time::timeout(hs_timeout, handle.channel_open_session())
            .await
            .map_err(|_| AgentError::Ssh("opening the control channel timed out".into()))??;
        ch.request_subsystem(true, CONTROL_SUBSYSTEM).await?;
        let (control, mut events) = spawn_control(ch, streams.credits.clone());
        let _ = streams.control.set(control.clone());
        control.send(ControlMsg::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: crate::enroll::hostname(),
            ports: self.policy.ports(),
            allow: self.policy.allow().iter().map(|n| n.to_string()).collect(),
            window: DEFAULT_WINDOW,
        }));
        tracing::info!(transport, agent = %self.cfg.agent_id, "connected to the relay");
        self.status.connected(transport);
        loop {
            tokio::select! {
                r = &mut handle => {
                    streams.credits.close_all();
                    return r.map_err(Into::into);
                }
                ev = events.recv() => match ev {
                    Some(ControlEvent::Msg(ControlMsg::Ping { seq })) => { control.send(ControlMsg::Pong { seq }); }
                    Some(ControlEvent::Msg(ControlMsg::Welcome { relay_version, .. })) => {
                        tracing::info!(%relay_version, "relay welcomed us");
                        if let Some(t) = &self.telemetry {
                            t.relay_up.notify_one();
                        }
                    }
                    Some(ControlEvent::Msg(ControlMsg::ScanNow { request })) => match &self.telemetry {
                        Some(t) => t.collector.scan_now(request),
                        None => tracing::warn!("scan requested, but telemetry is not running"),
                    },
                    Some(ControlEvent::Msg(ControlMsg::ScanConfig(settings))) => {
                        if let Some(t) = &self.telemetry {
                            control.send(ControlMsg::ScanConfigApplied(t.collector.configure(&settings)));
                        }
                    }
                    Some(ControlEvent::Msg(ControlMsg::AuditCheckpoint(cp))) => {
                        if self.audit.checkpoint(&cp, &self.pinned) {
                            tracing::debug!(id = cp.id, "relay audit checkpoint kept");
                        }
                    }
                    Some(ControlEvent::Msg(ControlMsg::Diag { request, target, diag })) => {
                        let (svc, control, audit) = (self.diag.clone(), control.clone(), self.audit.clone());
                        let span = tracing::info_span!("diag", %request, kind = diag.kind.as_str(), %target);
                        // Runs beside the session loop; its own timeouts bound it.
                        tokio::spawn(async move {
                            let outcome = svc.run(&target, &diag).await;
                            tracing::info!(?outcome, "diagnostic done");
                            audit.record("diag.run", serde_json::json!({
                                "request": request, "target": target,
                                "kind": diag.kind.as_str(), "outcome": outcome,
                            }));
                            control.send(ControlMsg::DiagResult { request, outcome });
                        }.instrument(span));
                    }
                    Some(ControlEvent::Msg(_)) => {}
                    Some(ControlEvent::Error(e)) => {
                        let _ = handle.disconnect(russh::Disconnect::ProtocolError, &e.to_string(), "en").await;
                        streams.credits.close_all();
                        return Err(e.into());
                    }
                    None => {
                        // Control channel gone: the session is useless.
                        let _ = handle.disconnect(russh::Disconnect::ByApplication, "control channel closed", "en").await;
                        streams.credits.close_all();
                        return Err(AgentError::Ssh("control channel closed by the relay".into()));
                    }
                },
                _ = shutdown.cancelled() => {
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, "agent shutting down", "en").await;
                    streams.credits.close_all();
                    return Ok(());
                }
            }
        }
    }

    /// Runs until `shutdown`, reconnecting after any failure; telemetry
    /// (when prepared) runs alongside, independent of the session.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let board = self.status.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move { board.run_writer(stop).await }.instrument(tracing::info_span!("status")),
        );
        if let Some(w) = self.audit_writer.take() {
            tracker.spawn(
                w.run(shutdown.clone())
                    .instrument(tracing::info_span!("local_audit")),
            );
        }
        if let Some(t) = &mut self.telemetry {
            tracker.spawn(
                t.collector
                    .clone()
                    .run(shutdown.clone())
                    .instrument(tracing::info_span!("collector")),
            );
            if let Some(u) = t.uploader.take() {
                tracker.spawn(
                    u.run(shutdown.clone())
                        .instrument(tracing::info_span!("uploader")),
                );
            }
            if let Some((listener, socket)) = t.traps.take() {
                tracker.spawn(
                    listener
                        .run(socket, shutdown.clone())
                        .instrument(tracing::info_span!("traps")),
                );
            }
        }
        tracker.close();
        self.sessions(&shutdown).await;
        tracker.wait().await;
    }

    async fn sessions(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            let started = Instant::now();
            self.status.connecting();
            let r = self
                .session(shutdown)
                .instrument(tracing::info_span!("session"))
                .await;
            match &r {
                Ok(()) => self.status.down("the relay ended the session".into()),
                Err(e) => self.status.down(e.to_string()),
            }
            if shutdown.is_cancelled() {
                return;
            }
            match r {
                Ok(()) => tracing::warn!("relay session ended"),
                Err(AgentError::HostKeyMismatch(m)) => tracing::error!("{m}"),
                Err(e) => tracing::warn!(error = %e, "relay session failed"),
            }
            if started.elapsed() > STABLE {
                backoff.reset();
            }
            let d = backoff.next_delay();
            tracing::info!(delay = ?d, "reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
