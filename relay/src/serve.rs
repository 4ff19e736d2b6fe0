//! `dwa-relay serve`: binds the listeners, runs until Ctrl-C / SIGTERM, then
//! stops every task through one signal and waits for them to finish.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::{DataDir, ADMIN_SOCKET};
use crate::error::{RelayError, Result};
use crate::state::{Relay, RelayState};

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
    crate::admin::listen(relay.clone(), &dir.path(ADMIN_SOCKET)).await?;
    relay.tracker.spawn(
        crate::ssh::listen_tcp(relay.clone(), ssh).instrument(tracing::info_span!("ssh_listener")),
    );
    relay.tracker.spawn(
        crate::https::listen(relay.clone(), https)
            .instrument(tracing::info_span!("https_listener")),
    );
    crate::telemetry::webhook::spawn(relay.clone())?;
    crate::accounts::inactivity::spawn(relay.clone());
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
