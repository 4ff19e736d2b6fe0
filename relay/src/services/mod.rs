//! The relay's rules. Each service takes what it needs (the store, the
//! audit log, the clock) and returns typed results; none of them knows
//! HTTP, SSH or SQL.
//!
//! - [`streams`]: the registry of connected agents and `open_stream`, the
//!   one way to reach a device.
//! - [`web_sessions`]: Device Web Access sessions: tickets, cookies,
//!   limits, the end of a session.
//! - [`tunnels`]: raw TCP tunnels to a device port.
//! - [`grants`]: the one lifecycle of everything a user holds, and the one
//!   place every grant ends.
//! - [`diagnostics`]: probes run by agents.
//! - [`accounts`]: log-in, two-factor, lockout, inactivity, users.
//! - [`auth`]: who is calling: log-in sessions, API tokens, permissions.
//! - [`sso`]: single sign-on (OpenID Connect).
//! - [`enrollment`]: enrollment tokens and redeeming them.
//! - [`devices`]: registering and removing devices, revoking agents,
//!   erasing customers.
//! - [`export`]: a customer's data in one archive.
//! - [`telemetry`]: ingest, inventory, alerts, webhook, reports.
//! - [`audit`]: the hash-chained audit log.
//! - [`checkpoints`]: the log's head signed and kept outside the database
//!   (a file, the agents), and `audit verify` against it.
//! - [`refusals`]: refusals before authentication, one record per source
//!   and interval plus a count.
//! - [`ipp_audit`]: IPP operations recognised in traffic to port 631.
//! - [`metrics`]: the registry of the relay's Prometheus metrics.
//! - [`clock`]: the one clock every service reads the time from.
//! - [`error`]: the failure classes adapters map services' errors by.
//!
//! [`Services`] holds them all; `app` builds it once and every adapter
//! and task shares it.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod checkpoints;
pub mod clock;
pub mod devices;
pub mod diagnostics;
pub mod enrollment;
pub mod error;
pub mod export;
pub mod grants;
pub mod ipp_audit;
pub mod metrics;
pub mod refusals;
pub mod reload;
pub mod sso;
pub mod streams;
pub mod telemetry;
pub mod tunnels;
pub mod web_sessions;

use std::sync::Arc;

use dwa_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DataDir, RelayConfig};
use audit::Audit;
use clock::Time;

/// Everything the services share: configuration, the store, the audit
/// log, the clock, the live registries and the limits. Built once by
/// `Services::open` (in `app`: opening one reads keys and files, which
/// is not a service's business) for the server or one CLI command, and
/// shared.
pub struct Services {
    /// relay.toml as in force: replaced whole by a reload (`reload`), read
    /// through [`Services::cfg`] at each use.
    pub(crate) config: std::sync::RwLock<Arc<RelayConfig>>,
    pub dir: DataDir,
    pub store: Store,
    pub audit: Audit,
    pub time: Time,
    /// What `/metrics` shows (the services count into it).
    pub metrics: Arc<metrics::Metrics>,
    /// Connected agents and the streams opened through them.
    pub agents: streams::AgentRegistry,
    pub web: web_sessions::WebSessions,
    pub telemetry: telemetry::Telemetry,
    /// Diagnostics waiting for their agent; their rate limits.
    pub diag: diagnostics::Diags,
    pub tunnels: tunnels::Tunnels,
    /// Single sign-on (`[oidc]`), when configured.
    pub oidc: Option<Arc<sso::Oidc>>,
    /// Failed log-ins per account and per source address.
    pub gates: accounts::Gates,
    /// Refusals before authentication, digested (`refusals`).
    pub refusals: std::sync::Mutex<refusals::RefusalDigest>,
    /// A password hash to verify against for unknown users (equal timing).
    pub dummy_hash: String,
    /// Enrollment attempts per source address: 10 a minute.
    pub enroll_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Log-in attempts per source address (`web.logins_per_minute`).
    pub login_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Web sessions created per user (`web.sessions_per_minute`).
    pub session_rate: Arc<governor::DefaultKeyedRateLimiter<i64>>,
    /// What agents pin: the SSH host key (OpenSSH form) and the TLS
    /// certificate's SHA-256.
    pub host_key_public: String,
    /// The relay's SSH host key: signs audit checkpoints too.
    pub host_key: Arc<dwa_link::checkpoint::SigningKey>,
    /// The newest checkpoint written (sent to an agent when it connects).
    pub checkpoint: std::sync::Mutex<Option<dwa_proto::audit::Checkpoint>>,
    pub tls_fingerprint: String,
    /// The ports handed out in URLs and to agents: the configured public
    /// ones, else the bound ones.
    pub ssh_port: u16,
    pub https_port: u16,
    /// One signal stops everything; the tracker says when all of it stopped.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

pub type Svc = Arc<Services>;

impl Services {
    /// relay.toml as in force now. Settings read once at start (listeners,
    /// slots, rate quotas, spawned loops) never change in it: `reload`
    /// keeps them as they run.
    pub fn cfg(&self) -> Arc<RelayConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `cfg` in force for every later read (`reload`, and tests).
    pub fn set_cfg(&self, cfg: RelayConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
    }

    /// The portal's origin, as browsers send it in `Origin`.
    pub fn portal_origin(&self) -> String {
        if self.https_port == 443 {
            format!("https://{}", self.cfg().domain)
        } else {
            format!("https://{}:{}", self.cfg().domain, self.https_port)
        }
    }
}
