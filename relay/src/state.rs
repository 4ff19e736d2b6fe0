//! The relay's shared state, built once by `serve` and handed to every task.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::AgentRegistry;
use crate::audit::Audit;
use crate::config::{DataDir, RelayConfig};
use crate::db::Db;
use crate::error::Result;
use crate::init::{load_host_key, load_tls};

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
}

pub type Relay = Arc<RelayState>;

impl RelayState {
    pub async fn load(dir: DataDir, bound_ssh_port: u16) -> Result<Relay> {
        let cfg = RelayConfig::load(&dir.0)?;
        let db = Db::open(&dir, false).await?;
        let key = load_host_key(&dir)?;
        let host_key_public = dwa_link::ssh::public_openssh(key.public_key());
        let tls = load_tls(&dir)?;
        let ssh_port = cfg.ssh.public_port.unwrap_or(bound_ssh_port);
        let ssh_config = Arc::new(dwa_link::ssh::server_config(cfg.keepalive(), vec![key]));
        Ok(Arc::new(RelayState {
            connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(cfg.limits.max_handshakes)),
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
