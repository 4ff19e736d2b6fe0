//! The one place that starts and stops the relay: opening the services
//! from the data directory, binding the listeners, starting the tasks,
//! and the one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::adapters::state::{Relay, RelayState};
use crate::config::{DataDir, ADMIN_SOCKET};
use crate::error::{RelayError, Result};
use crate::services::clock::Time;
use crate::services::Services;

fn per_minute(n: u32) -> governor::Quota {
    governor::Quota::per_minute(std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN))
}

impl Services {
    /// Opens the data directory's store and builds the services.
    /// `ports`: the SSH and HTTPS ports the server bound (None for a CLI
    /// command: the configured ones).
    pub async fn open(dir: DataDir, ports: Option<(u16, u16)>, time: Time) -> Result<Self> {
        let cfg = crate::config::RelayConfig::load(&dir.0)?;
        let metrics = Arc::new(crate::services::metrics::Metrics::new());
        let store = dwa_store::Store::open_sqlite(&dir.path(crate::config::DB_FILE), false)
            .await?
            .with_observer(metrics.clone());
        let key = crate::init::load_host_key(&dir)?;
        let host_key_public = dwa_link::ssh::public_openssh(key.public_key());
        let tls = crate::init::load_tls(&dir)?;
        let (bound_ssh, bound_https) =
            ports.unwrap_or((cfg.ssh.listen.port(), cfg.https.listen.port()));
        let oidc = cfg
            .oidc
            .as_ref()
            .map(crate::services::sso::Oidc::new)
            .map(Arc::new);
        Ok(Self {
            oidc,
            enroll_rate: Arc::new(governor::RateLimiter::keyed(per_minute(10))),
            login_rate: Arc::new(governor::RateLimiter::keyed(per_minute(
                cfg.web.logins_per_minute,
            ))),
            session_rate: Arc::new(governor::RateLimiter::keyed(per_minute(
                cfg.web.sessions_per_minute,
            ))),
            ssh_port: cfg.ssh.public_port.unwrap_or(bound_ssh),
            https_port: cfg.https.public_port.unwrap_or(bound_https),
            web: Default::default(),
            telemetry: Default::default(),
            diag: Default::default(),
            tunnels: Default::default(),
            dummy_hash: crate::init::hash_password(&crate::util::random_password())?,
            gates: crate::services::accounts::Gates::new(&cfg.accounts),
            refusals: Default::default(),
            audit: crate::services::audit::Audit::new(store.clone(), time.clone(), metrics.clone()),
            metrics,
            agents: crate::services::streams::AgentRegistry::default(),
            time,
            store,
            dir,
            config: std::sync::RwLock::new(Arc::new(cfg)),
            tls_fingerprint: tls.fingerprint,
            host_key_public,
            host_key: Arc::new(key),
            checkpoint: Default::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
        })
    }
}

pub struct Bound {
    pub relay: Relay,
    pub ssh: SocketAddr,
    pub https: SocketAddr,
    /// The metrics listener's address; None when `metrics.listen = "off"`.
    pub metrics: Option<SocketAddr>,
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
    // Before anything is served: streams a killed predecessor left open get
    // their close records, so every stream.open has one.
    let closed = relay
        .svc
        .audit
        .close_unfinished_streams(env!("CARGO_PKG_VERSION"))
        .await?;
    if closed > 0 {
        tracing::warn!(
            closed,
            "the previous run stopped with streams open; close records written"
        );
    }
    // Before the other listeners: a bad token file stops the start here.
    let metrics = crate::adapters::metrics::start(&relay)
        .await
        .map_err(|e| RelayError::Config(e.to_string()))?;
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
    crate::adapters::smtp::spawn(&relay).map_err(|e| RelayError::Config(e.to_string()))?;
    crate::services::accounts::inactivity::spawn(&relay.svc);
    crate::services::refusals::spawn(&relay.svc);
    crate::services::grants::spawn_watcher(&relay.svc);
    crate::services::checkpoints::spawn(&relay.svc);
    crate::services::telemetry::retention::spawn(&relay.svc);
    spawn_reload_on_sighup(&relay)?;
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
        metrics,
    })
}

/// SIGHUP (`systemctl reload`) reads relay.toml again
/// (`services::reload`); the outcome is logged and audited.
fn spawn_reload_on_sighup(relay: &Relay) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let r = relay.clone();
    relay.tracker.spawn(
        async move {
            loop {
                tokio::select! {
                    got = hup.recv() => if got.is_none() { return },
                    _ = r.shutdown.cancelled() => return,
                }
                match crate::services::reload::reload(&r.svc).await {
                    Ok(done) => {
                        tracing::info!(applied = ?done.applied,
                            restart_needed = ?done.restart_needed, "relay.toml reloaded");
                        if !done.restart_needed.is_empty() {
                            tracing::warn!(settings = ?done.restart_needed,
                                "changed in relay.toml, in force at the next start only");
                        }
                    }
                    Err(e) => tracing::error!(error = %e,
                        "relay.toml not reloaded; the running configuration stays"),
                }
            }
        }
        .instrument(tracing::info_span!("reload")),
    );
    Ok(())
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
