//! The relay as one value: its shared state (built once, handed to every
//! task), and the one place that starts and stops it.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DataDir, RelayConfig};
use crate::db::Db;
use crate::error::Result;
use crate::init::{load_host_key, load_tls};
use crate::services::audit::Audit;
use crate::services::streams::AgentRegistry;

pub struct RelayState {
    pub cfg: RelayConfig,
    pub dir: DataDir,
    pub db: Db,
    pub audit: Audit,
    pub agents: AgentRegistry,
    pub ssh_config: Arc<russh::server::Config>,
    pub tls: Arc<rustls::ServerConfig>,
    pub tls_fingerprint: String,
    /// The host key's public half, OpenSSH form, as agents pin it.
    pub host_key_public: String,
    /// SSH port agents are told to dial: `ssh.public_port`, else the bound one.
    pub ssh_port: u16,
    /// One signal stops everything; the tracker says when all of it stopped.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Open connections (SSH + HTTPS), and SSH handshakes in progress.
    pub connections: Arc<Semaphore>,
    pub handshakes: Arc<Semaphore>,
    /// New TCP connections per source address (SSH and HTTPS together).
    pub conn_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Enrollment attempts per source address: 10 a minute, bursts of 10.
    pub enroll_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Log-in attempts per source address (`web.logins_per_minute`).
    pub login_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Web sessions created per user (`web.sessions_per_minute`).
    pub session_rate: Arc<governor::DefaultKeyedRateLimiter<i64>>,
    /// HTTPS port in the URLs we hand out: `https.public_port`, else the bound one.
    pub https_port: u16,
    pub web: crate::services::web_sessions::WebSessions,
    pub telemetry: crate::services::telemetry::Telemetry,
    /// Diagnostics waiting for their agent; their rate limits.
    pub diag: crate::services::diagnostics::Diags,
    pub tunnels: crate::services::tunnels::Tunnels,
    /// A password hash to verify against for unknown users (equal timing).
    pub dummy_hash: String,
    /// Single sign-on (`[oidc]`), when configured.
    pub oidc: Option<Arc<crate::services::sso::Oidc>>,
    /// Failed log-ins per account and per source address.
    pub gates: crate::services::accounts::Gates,
}

/// 20 new connections a second per source address, bursts of 200: enough
/// for a site's agents reconnecting together, not for a flood.
fn conn_quota() -> governor::Quota {
    let per_sec = std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(200).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_second(per_sec).allow_burst(burst)
}

fn per_minute(n: u32) -> governor::Quota {
    governor::Quota::per_minute(std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN))
}

impl RelayState {
    /// The portal's origin, as browsers send it in `Origin`.
    pub fn portal_origin(&self) -> String {
        if self.https_port == 443 {
            format!("https://{}", self.cfg.domain)
        } else {
            format!("https://{}:{}", self.cfg.domain, self.https_port)
        }
    }

    /// Whether a new connection from `ip` is within its rate.
    pub fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.conn_rate.check_key(&ip).is_ok()
    }
}

pub type Relay = Arc<RelayState>;

impl RelayState {
    pub async fn load(dir: DataDir, bound_ssh_port: u16, bound_https_port: u16) -> Result<Relay> {
        let cfg = RelayConfig::load(&dir.0)?;
        let db = Db::open(&dir, false).await?;
        let key = load_host_key(&dir)?;
        let host_key_public = dwa_link::ssh::public_openssh(key.public_key());
        let tls = load_tls(&dir)?;
        let ssh_port = cfg.ssh.public_port.unwrap_or(bound_ssh_port);
        let ssh_config = Arc::new(dwa_link::ssh::server_config(cfg.keepalive(), vec![key]));
        let oidc = cfg
            .oidc
            .as_ref()
            .map(crate::services::sso::Oidc::new)
            .transpose()?
            .map(Arc::new);
        Ok(Arc::new(RelayState {
            oidc,
            connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(cfg.limits.max_handshakes)),
            conn_rate: Arc::new(governor::RateLimiter::keyed(conn_quota())),
            enroll_rate: Arc::new(governor::RateLimiter::keyed(per_minute(10))),
            login_rate: Arc::new(governor::RateLimiter::keyed(per_minute(
                cfg.web.logins_per_minute,
            ))),
            session_rate: Arc::new(governor::RateLimiter::keyed(per_minute(
                cfg.web.sessions_per_minute,
            ))),
            https_port: cfg.https.public_port.unwrap_or(bound_https_port),
            web: Default::default(),
            telemetry: Default::default(),
            diag: Default::default(),
            tunnels: Default::default(),
            dummy_hash: crate::init::hash_password(&crate::util::random_password())?,
            gates: crate::services::accounts::Gates::new(&cfg.accounts),
            audit: Audit::new(db.clone()),
            agents: AgentRegistry::default(),
            dir,
            db,
            ssh_config,
            cfg,
            tls: tls.config,
            tls_fingerprint: tls.fingerprint,
            host_key_public,
            ssh_port,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }))
    }
}

/// One admitted TCP connection: within its address's rate and holding a
/// slot of `limits.max_connections` until dropped.
pub struct Admitted {
    pub sock: tokio::net::TcpStream,
    pub peer: std::net::SocketAddr,
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

impl RelayState {
    /// Next admitted connection on `listener`; `None` at shutdown. Refused
    /// connections are dropped at once (closed), with a log line.
    pub async fn accept(&self, listener: &tokio::net::TcpListener) -> Option<Admitted> {
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.shutdown.cancelled() => return None,
            };
            if !self.admit(peer.ip()) {
                tracing::warn!(%peer, "connection rate limit exceeded; refusing");
                continue;
            }
            let Ok(slot) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached; refusing");
                continue;
            };
            let _ = sock.set_nodelay(true);
            return Some(Admitted { sock, peer, slot });
        }
    }
}

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::ADMIN_SOCKET;
use crate::error::RelayError;

pub struct Bound {
    pub relay: Relay,
    pub ssh: SocketAddr,
    pub https: SocketAddr,
}

/// Loads the data directory and binds everything; tasks start running.
pub async fn start(dir: DataDir) -> Result<Bound> {
    let cfg = crate::config::RelayConfig::load(&dir.0)?;
    let ssh = TcpListener::bind(cfg.ssh.listen)
        .await
        .map_err(|e| RelayError::Config(format!("ssh.listen {}: {e}", cfg.ssh.listen)))?;
    let https = TcpListener::bind(cfg.https.listen)
        .await
        .map_err(|e| RelayError::Config(format!("https.listen {}: {e}", cfg.https.listen)))?;
    let ssh_addr = ssh.local_addr()?;
    let https_addr = https.local_addr()?;
    let relay = RelayState::load(dir.clone(), ssh_addr.port(), https_addr.port()).await?;
    crate::adapters::admin_socket::listen(relay.clone(), &dir.path(ADMIN_SOCKET)).await?;
    relay.tracker.spawn(
        crate::adapters::ssh::listen_tcp(relay.clone(), ssh)
            .instrument(tracing::info_span!("ssh_listener")),
    );
    relay.tracker.spawn(
        crate::adapters::http::listen(relay.clone(), https)
            .instrument(tracing::info_span!("https_listener")),
    );
    crate::services::telemetry::webhook::spawn(relay.clone())?;
    crate::services::accounts::inactivity::spawn(relay.clone());
    // Forget idle rate-limit keys so the table does not grow without bound.
    let r = relay.clone();
    relay.tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        r.conn_rate.retain_recent();
                        r.enroll_rate.retain_recent();
                        r.login_rate.retain_recent();
                        r.session_rate.retain_recent();
                        r.gates.account.gc();
                        r.gates.address.gc();
                    }
                    _ = r.shutdown.cancelled() => break,
                }
            }
        }
        .instrument(tracing::info_span!("rate_limit_gc")),
    );
    Ok(Bound {
        relay,
        ssh: ssh_addr,
        https: https_addr,
    })
}

/// Stops everything and waits (bounded) for tasks to end.
pub async fn stop(relay: &Relay) {
    relay.shutdown.cancel();
    relay.tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), relay.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10s");
    }
    let _ = std::fs::remove_file(relay.dir.path(ADMIN_SOCKET));
    relay.db.pool.close().await;
}

pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
