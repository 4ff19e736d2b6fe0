//! What the adapters share: the services, plus what only the listeners
//! need (SSH and TLS configuration, connection slots and rates, the
//! session-host proxy's runtimes, the identity provider's client).

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::DataDir;
use crate::error::Result;
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
    /// How single sign-on reaches the identity provider (`[oidc]` only).
    pub oidc_http: Option<Arc<crate::adapters::oidc_client::ProviderClient>>,
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
        let oidc_http = cfg
            .oidc
            .as_ref()
            .map(crate::adapters::oidc_client::ProviderClient::new)
            .transpose()?
            .map(Arc::new);
        Ok(Arc::new(RelayState {
            connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(cfg.limits.max_handshakes)),
            conn_rate: Arc::new(governor::RateLimiter::keyed(conn_quota())),
            web_rt: Default::default(),
            oidc_http,
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
