//! The relay as one value: the services every adapter shares, plus what
//! only the listeners need (SSH and TLS configuration, connection slots),
//! and the one place that starts and stops it all.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::{DataDir, ADMIN_SOCKET};
use crate::error::{RelayError, Result};
use crate::services::clock::Time;
use crate::services::{Services, Svc};

pub struct RelayState {
    pub svc: Svc,
    pub ssh_config: Arc<russh::server::Config>,
    pub tls: Arc<rustls::ServerConfig>,
    /// Open connections (SSH + HTTPS), and SSH handshakes in progress.
    pub connections: Arc<Semaphore>,
    pub handshakes: Arc<Semaphore>,
    /// New TCP connections per source address (SSH and HTTPS together).
    pub conn_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// The session-host proxy's per-session runtimes.
    pub web_rt: crate::adapters::web::proxy::Runtimes,
}

/// Adapters reach the services through the relay.
impl Deref for RelayState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.svc
    }
}

/// 20 new connections a second per source address, bursts of 200: enough
/// for a site's agents reconnecting together, not for a flood.
fn conn_quota() -> governor::Quota {
    let per_sec = std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(200).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_second(per_sec).allow_burst(burst)
}

pub type Relay = Arc<RelayState>;

impl RelayState {
    pub async fn load(dir: DataDir, bound_ssh_port: u16, bound_https_port: u16) -> Result<Relay> {
        let svc = Arc::new(
            Services::open(
                dir.clone(),
                Some((bound_ssh_port, bound_https_port)),
                Time::system(),
            )
            .await?,
        );
        let key = crate::init::load_host_key(&dir)?;
        let tls = crate::init::load_tls(&dir)?;
        let cfg = &svc.cfg;
        let ssh_config = Arc::new(dwa_link::ssh::server_config(cfg.keepalive(), vec![key]));
        Ok(Arc::new(RelayState {
            connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(cfg.limits.max_handshakes)),
            conn_rate: Arc::new(governor::RateLimiter::keyed(conn_quota())),
            web_rt: Default::default(),
            ssh_config,
            tls: tls.config,
            svc,
        }))
    }

    /// Whether a new connection from `ip` is within its rate.
    pub fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.conn_rate.check_key(&ip).is_ok()
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
    crate::adapters::webhook::spawn(&relay)?;
    crate::services::accounts::inactivity::spawn(&relay.svc);
    crate::services::grants::spawn_watcher(&relay.svc);
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
    relay.store.close().await;
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
