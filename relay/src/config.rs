//! relay.toml: parsed with unknown keys rejected, then validated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod oidc;
pub mod smtp;
pub use oidc::{GroupMap, OidcSection};
pub use smtp::{SmtpSection, StartTls};

/// A relay.toml that cannot be read or is not valid; the text names the
/// key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

pub const CONFIG_FILE: &str = "relay.toml";
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
pub const TLS_CERT_FILE: &str = "tls_cert.pem";
pub const TLS_KEY_FILE: &str = "tls_key.pem";
pub const DB_FILE: &str = "dwa.db";
pub const ADMIN_SOCKET: &str = "admin.sock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Domain of the portal; web sessions get `s-<random>.<domain>`.
    pub domain: String,
    pub ssh: SshSection,
    pub https: HttpsSection,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub keepalive: KeepaliveSection,
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    /// The mail server of e-mail alerts; none: no e-mail is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSection>,
    /// Single sign-on for directory users; none: local accounts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSection>,
    #[serde(default)]
    pub accounts: AccountsSection,
    #[serde(default)]
    pub tunnels: TunnelsSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// Where the Prometheus metrics are served: an address, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetricsListen {
    Off,
    At(SocketAddr),
}

impl TryFrom<String> for MetricsListen {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|_| format!("{s:?} is neither an address (ip:port) nor \"off\""))
    }
}

impl From<MetricsListen> for String {
    fn from(l: MetricsListen) -> String {
        match l {
            MetricsListen::Off => "off".into(),
            MetricsListen::At(a) => a.to_string(),
        }
    }
}

/// The Prometheus metrics listener (`GET /metrics`, plain HTTP): its own
/// address, apart from the public HTTPS one, so it is reachable only
/// where the operator puts it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Default `127.0.0.1:9464`: the host's own scraper only.
    pub listen: MetricsListen,
    /// A file holding the bearer token scrapers must send (16 characters
    /// at least); required when `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// 9464: the port Prometheus' registry of exporter ports gives
/// OpenTelemetry's exporter, unused by anything else on a relay host.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: MetricsListen::At(SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                DEFAULT_METRICS_PORT,
            ))),
            token_file: None,
        }
    }
}

/// Stored telemetry: how long readings are kept (docs/privacy.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Readings taken longer ago than this are removed (each device's
    /// newest stays). The default, 25 months, covers a yearly billing
    /// comparison (this month against the same month last year) with a
    /// month to spare for late invoices.
    #[serde(with = "humantime_serde")]
    pub readings_retention: Duration,
    /// How often the prune task runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

/// 25 months of 30.44 days (humantime's month): 761 days.
pub const DEFAULT_READINGS_RETENTION: Duration = Duration::from_secs(761 * 86_400);

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            readings_retention: DEFAULT_READINGS_RETENTION,
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// The audit log's anchors outside the database (`services::checkpoints`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// How often the chain's head is signed, written to the checkpoint file
    /// and sent to the connected agents (only when it moved).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// Log-in security: two-factor, lockout, failure rates, inactivity, the
/// log-in session's idle timeout (its absolute one is `web.login_lifetime`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsSection {
    /// Roles that must use TOTP; such a user without it gets a log-in that
    /// may only enroll it.
    pub require_totp: Vec<String>,
    /// Consecutive failed log-ins that lock an account (until an admin unlocks it).
    pub lockout_after: u32,
    /// Failed log-ins per account name and minute (then 429).
    pub failures_per_account_per_minute: u32,
    /// Failed log-ins per source address and minute (then 429).
    pub failures_per_address_per_minute: u32,
    /// Accounts unused this long are deactivated (at most 180 days).
    #[serde(with = "humantime_serde")]
    pub inactive_after: Duration,
    /// A log-in session ends after this long without a request.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            require_totp: vec!["admin".into(), "technician".into()],
            lockout_after: 5,
            failures_per_account_per_minute: 10,
            failures_per_address_per_minute: 20,
            inactive_after: Duration::from_secs(90 * 86_400),
            session_idle_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Raw TCP tunnels (relay/src/tunnels.rs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelsSection {
    /// Ports the relay may listen on for tunnels: "first-last".
    pub ports: String,
    /// Address the listeners bind; none: the HTTPS listen address.
    pub bind: Option<std::net::IpAddr>,
    /// A tunnel's lifetime when the request names none ...
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// ... and the bounds a requested one must keep.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Live tunnels per user.
    pub max_per_user: usize,
    /// Live connections per tunnel.
    pub max_connections: usize,
    /// Refused connections audited one by one per tunnel (the rest are
    /// counted in its close record).
    pub max_refusals_audited: u64,
}

impl Default for TunnelsSection {
    fn default() -> Self {
        Self {
            ports: "20000-20999".into(),
            bind: None,
            ttl: Duration::from_secs(15 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(8 * 3600),
            max_per_user: 5,
            max_connections: 16,
            max_refusals_audited: 100,
        }
    }
}

impl TunnelsSection {
    /// The port range, first and last; errors name the key.
    pub fn port_range(&self) -> Result<(u16, u16)> {
        let bad = || {
            ConfigError::Invalid(format!(
                "tunnels.ports: {:?} must be \"first-last\" with 1 ≤ first ≤ last ≤ 65535",
                self.ports
            ))
        };
        let (a, b) = self.ports.split_once('-').ok_or_else(bad)?;
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok((a, b))
    }
}

/// A secret from the config: shown as `***` in logs and debug output.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Telemetry alerts and their webhook (one receiver for the relay; the
/// payload names the customer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// `http://` or `https://` URL that gets every alert raised and
    /// resolved; none: alerts are only kept and listed.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of `X-DWA-Signature` (16 characters at least).
    pub webhook_secret: Option<Secret>,
    /// One delivery attempt, connect to last byte.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event before it is marked failed.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles per attempt up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Undelivered events kept at most; newer ones are dropped beyond it.
    pub outbox_max: usize,
    /// Roots for an `https://` webhook.
    pub ca_file: PathBuf,
}

impl Default for AlertsSection {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: None,
            timeout: Duration::from_secs(10),
            // 10 s, 20 s ... capped at 15 min: ten attempts over about an hour.
            max_attempts: 10,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(15 * 60),
            outbox_max: 10_000,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

/// Device Web Access sessions and the dealer API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// A web session ends this long after it was created, whatever happens.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// ... or after this long without a request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Proxied requests per session and second, and the burst above it.
    pub requests_per_second: u32,
    pub request_burst: u32,
    /// Web sessions a user may create per minute.
    pub sessions_per_minute: u32,
    /// Live web sessions on the relay.
    pub max_sessions: usize,
    /// Connections to the printer per session (embedded web servers are
    /// small: a browser's six plus a few).
    pub printer_connections: usize,
    /// Log-in attempts per source address and minute.
    pub logins_per_minute: u32,
    /// A log-in session (cookie) lasts this long.
    #[serde(with = "humantime_serde")]
    pub login_lifetime: Duration,
}

impl Default for WebSection {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(5 * 60),
            requests_per_second: 200,
            request_burst: 1000,
            sessions_per_minute: 10,
            max_sessions: 1000,
            printer_connections: 16,
            logins_per_minute: 30,
            login_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    pub listen: SocketAddr,
    /// Port agents are told to dial (differs from `listen` behind NAT or a
    /// load balancer). Defaults to the listen port.
    #[serde(default)]
    pub public_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpsSection {
    pub listen: SocketAddr,
    /// Port in the URLs the relay hands out (portal, web sessions) when it
    /// differs from `listen` (behind NAT or a load balancer).
    #[serde(default)]
    pub public_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open SSH + HTTPS connections at once.
    pub max_connections: usize,
    /// Open SSH + HTTPS connections from one source address (an IPv6 /64
    /// counts as one): one address cannot take every slot.
    pub connections_per_source: usize,
    /// SSH handshakes (connect → authenticated) in progress at once; mass
    /// reconnects queue instead of exhausting the CPU.
    pub max_handshakes: usize,
    /// SSH handshakes in progress from one source address (an IPv6 /64
    /// counts as one): one address cannot take every slot.
    pub handshakes_per_source: usize,
    /// How long a new SSH connection may stay silent before its version
    /// line (an HTTPS one before its first TLS byte); only then does it
    /// wait for a handshake slot.
    #[serde(with = "humantime_serde")]
    pub version_timeout: Duration,
    /// HTTPS connections from one source address (an IPv6 /64 counts as
    /// one) that have not yet sent their first request: TLS handshakes and
    /// request headers in progress, however slow.
    pub tls_handshakes_per_source: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    pub max_streams_per_agent: usize,
    #[serde(with = "humantime_serde")]
    pub stream_open_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            connections_per_source: 1_000,
            max_handshakes: 64,
            handshakes_per_source: 8,
            version_timeout: Duration::from_secs(5),
            // Browsers open several connections per host at once, and
            // offices share one address: more than SSH's 8.
            tls_handshakes_per_source: 32,
            handshake_timeout: Duration::from_secs(10),
            max_streams_per_agent: 256,
            stream_open_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveSection {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub max: usize,
}

impl Default for KeepaliveSection {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            max: 3,
        }
    }
}

impl RelayConfig {
    pub fn new(domain: String, ssh: SocketAddr, https: SocketAddr) -> Self {
        Self {
            domain,
            ssh: SshSection {
                listen: ssh,
                public_port: None,
            },
            https: HttpsSection {
                listen: https,
                public_port: None,
            },
            limits: Limits::default(),
            keepalive: KeepaliveSection::default(),
            web: WebSection::default(),
            alerts: AlertsSection::default(),
            smtp: None,
            oidc: None,
            accounts: AccountsSection::default(),
            tunnels: TunnelsSection::default(),
            audit: AuditSection::default(),
            telemetry: TelemetrySection::default(),
            metrics: MetricsSection {
                // On the HTTPS address when that is a loopback one (each
                // test relay has its own), else the host's loopback.
                listen: MetricsListen::At(SocketAddr::new(
                    if https.ip().is_loopback() {
                        https.ip()
                    } else {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    },
                    DEFAULT_METRICS_PORT,
                )),
                token_file: None,
            },
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: &str| Err(ConfigError::Invalid(format!("{k}: {why}")));
        let d = &self.domain;
        if d.is_empty()
            || d.len() > 200
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return bad("domain", "must be a DNS name (letters, digits, '-', '.')");
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if l.max_handshakes == 0 {
            return bad("limits.max_handshakes", "must be at least 1");
        }
        if l.connections_per_source == 0 {
            return bad("limits.connections_per_source", "must be at least 1");
        }
        if l.handshakes_per_source == 0 {
            return bad("limits.handshakes_per_source", "must be at least 1");
        }
        if l.tls_handshakes_per_source == 0 {
            return bad("limits.tls_handshakes_per_source", "must be at least 1");
        }
        if l.version_timeout.is_zero() {
            return bad("limits.version_timeout", "must be positive");
        }
        if l.max_streams_per_agent == 0 || l.max_streams_per_agent > 65_536 {
            return bad("limits.max_streams_per_agent", "must be 1..=65536");
        }
        if l.handshake_timeout.is_zero() {
            return bad("limits.handshake_timeout", "must be positive");
        }
        // The agent may take 8 s to resolve and connect before it answers.
        if l.stream_open_timeout < Duration::from_secs(10) {
            return bad("limits.stream_open_timeout", "must be at least 10s");
        }
        if self.keepalive.interval < Duration::from_secs(1) || self.keepalive.max == 0 {
            return bad("keepalive", "interval must be ≥ 1s and max ≥ 1");
        }
        let w = &self.web;
        if w.max_duration < Duration::from_secs(10)
            || w.max_duration > Duration::from_secs(24 * 3600)
        {
            return bad("web.max_duration", "must be 10s..=24h");
        }
        if w.idle_timeout < Duration::from_secs(1) || w.idle_timeout > w.max_duration {
            return bad(
                "web.idle_timeout",
                "must be at least 1s and at most web.max_duration",
            );
        }
        for (k, v) in [
            ("web.requests_per_second", w.requests_per_second),
            ("web.request_burst", w.request_burst),
            ("web.sessions_per_minute", w.sessions_per_minute),
            ("web.logins_per_minute", w.logins_per_minute),
        ] {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        if w.max_sessions == 0 || w.printer_connections == 0 || w.printer_connections > 256 {
            return bad(
                "web.max_sessions / web.printer_connections",
                "must be ≥ 1 (printer_connections ≤ 256)",
            );
        }
        if w.login_lifetime < Duration::from_secs(60) {
            return bad("web.login_lifetime", "must be at least 60s");
        }
        let a = &self.alerts;
        if let Some(u) = &a.webhook_url {
            let ok = u.parse::<http::Uri>().is_ok_and(|x| {
                matches!(x.scheme_str(), Some("http" | "https")) && x.host().is_some()
            });
            if !ok {
                return bad("alerts.webhook_url", "must be an http:// or https:// URL");
            }
            if a.webhook_secret.as_ref().is_none_or(|s| s.0.len() < 16) {
                return bad(
                    "alerts.webhook_secret",
                    "must be set (16 characters at least) when webhook_url is",
                );
            }
        }
        if a.timeout < Duration::from_secs(1) || a.timeout > Duration::from_secs(120) {
            return bad("alerts.timeout", "must be 1s..=120s");
        }
        if a.max_attempts == 0 || a.max_attempts > 100 {
            return bad("alerts.max_attempts", "must be 1..=100");
        }
        if a.retry_base < Duration::from_secs(1) || a.retry_max < a.retry_base {
            return bad(
                "alerts.retry_base / retry_max",
                "retry_base ≥ 1s and retry_max ≥ retry_base",
            );
        }
        if a.outbox_max == 0 || a.outbox_max > 1_000_000 {
            return bad("alerts.outbox_max", "must be 1..=1000000");
        }
        if let Some(m) = &self.smtp {
            m.validate()?;
        }
        if let Some(o) = &self.oidc {
            o.validate()?;
        }
        let ac = &self.accounts;
        for r in &ac.require_totp {
            if r.parse::<dwa_policy::roles::Role>().is_err() {
                return bad(
                    "accounts.require_totp",
                    &format!("unknown role {r:?} (admin, technician, viewer, customer)"),
                );
            }
        }
        if ac.lockout_after == 0 || ac.lockout_after > 100 {
            return bad("accounts.lockout_after", "must be 1..=100");
        }
        if ac.failures_per_account_per_minute == 0 || ac.failures_per_address_per_minute == 0 {
            return bad(
                "accounts.failures_per_account_per_minute / failures_per_address_per_minute",
                "must be at least 1",
            );
        }
        if ac.inactive_after < Duration::from_secs(86_400)
            || ac.inactive_after > Duration::from_secs(180 * 86_400)
        {
            return bad("accounts.inactive_after", "must be 1d..=180d");
        }
        if ac.session_idle_timeout < Duration::from_secs(60)
            || ac.session_idle_timeout > w.login_lifetime
        {
            return bad(
                "accounts.session_idle_timeout",
                "must be at least 60s and at most web.login_lifetime",
            );
        }
        let t = &self.tunnels;
        t.port_range()?;
        if t.min_ttl < Duration::from_secs(1) || t.min_ttl > t.max_ttl {
            return bad(
                "tunnels.min_ttl",
                "must be at least 1s and at most tunnels.max_ttl",
            );
        }
        if t.max_ttl > Duration::from_secs(7 * 24 * 3600) {
            return bad("tunnels.max_ttl", "must be at most 7d");
        }
        if t.ttl < t.min_ttl || t.ttl > t.max_ttl {
            return bad(
                "tunnels.ttl",
                "must be within tunnels.min_ttl..=tunnels.max_ttl",
            );
        }
        if t.max_per_user == 0 || t.max_per_user > 1000 {
            return bad("tunnels.max_per_user", "must be 1..=1000");
        }
        if t.max_connections == 0 || t.max_connections > 1024 {
            return bad("tunnels.max_connections", "must be 1..=1024");
        }
        let every = self.audit.checkpoint_interval;
        if every < Duration::from_secs(1) || every > Duration::from_secs(86_400) {
            return bad("audit.checkpoint_interval", "must be 1s..=24h");
        }
        let tm = &self.telemetry;
        if tm.readings_retention < Duration::from_secs(86_400)
            || tm.readings_retention > Duration::from_secs(3653 * 86_400)
        {
            return bad("telemetry.readings_retention", "must be 1d..=10years");
        }
        if tm.prune_interval < Duration::from_secs(1)
            || tm.prune_interval > Duration::from_secs(86_400)
        {
            return bad("telemetry.prune_interval", "must be 1s..=24h");
        }
        // Counts of agents, sessions and failures are for the operator's
        // scraper, not for the network: elsewhere than loopback only with
        // a token.
        if let MetricsListen::At(a) = self.metrics.listen {
            if !a.ip().is_loopback() && self.metrics.token_file.is_none() {
                return bad(
                    "metrics.token_file",
                    "must be set when metrics.listen is not a loopback address",
                );
            }
        }
        Ok(())
    }

    pub fn ssh_public_port(&self) -> u16 {
        self.ssh.public_port.unwrap_or(self.ssh.listen.port())
    }

    pub fn keepalive(&self) -> dwa_link::ssh::Keepalive {
        dwa_link::ssh::Keepalive {
            interval: self.keepalive.interval,
            max: self.keepalive.max,
        }
    }
}

/// Paths of everything in a data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.path(DB_FILE).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_key() {
        let c = RelayConfig::new(
            "dwa.localhost".into(),
            "127.0.0.1:2222".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap(),
        );
        let text = toml::to_string(&c).unwrap();
        assert_eq!(RelayConfig::parse(&text).unwrap(), c);

        let e = RelayConfig::parse(&format!("{text}\nbogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = RelayConfig::parse(&text.replace("dwa.localhost", "bad domain!")).unwrap_err();
        assert!(e.to_string().contains("domain"), "{e}");
    }

    #[test]
    fn accounts_limits_are_validated() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let c = RelayConfig::parse(base).unwrap();
        assert_eq!(c.accounts.inactive_after, Duration::from_secs(90 * 86_400));
        assert_eq!(c.accounts.require_totp, vec!["admin", "technician"]);
        let e = RelayConfig::parse(&format!("{base}[accounts]\ninactive_after = \"181d\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("accounts.inactive_after"), "{e}");
        assert!(
            RelayConfig::parse(&format!("{base}[accounts]\ninactive_after = \"180d\"\n")).is_ok()
        );
        let e = RelayConfig::parse(&format!("{base}[accounts]\nrequire_totp = [\"root\"]\n"))
            .unwrap_err();
        assert!(e.to_string().contains("accounts.require_totp"), "{e}");
        let e = RelayConfig::parse(&format!(
            "{base}[accounts]\nsession_idle_timeout = \"13h\"\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("accounts.session_idle_timeout"),
            "{e}"
        );
    }

    #[test]
    fn readings_retention_defaults_to_25_months_and_is_bounded() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let c = RelayConfig::parse(base).unwrap();
        assert_eq!(c.telemetry.readings_retention, DEFAULT_READINGS_RETENTION);
        let c = RelayConfig::parse(&format!(
            "{base}[telemetry]\nreadings_retention = \"25months\"\n"
        ))
        .unwrap();
        assert!(c.telemetry.readings_retention >= Duration::from_secs(760 * 86_400));
        for bad in ["1h", "11years"] {
            let e = RelayConfig::parse(&format!(
                "{base}[telemetry]\nreadings_retention = \"{bad}\"\n"
            ))
            .unwrap_err();
            assert!(
                e.to_string().contains("telemetry.readings_retention"),
                "{e}"
            );
        }
    }

    #[test]
    fn metrics_listen_on_loopback_by_default_and_elsewhere_only_with_a_token() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let c = RelayConfig::parse(base).unwrap();
        assert_eq!(
            c.metrics.listen,
            MetricsListen::At("127.0.0.1:9464".parse().unwrap())
        );
        let c = RelayConfig::parse(&format!("{base}[metrics]\nlisten = \"off\"\n")).unwrap();
        assert_eq!(c.metrics.listen, MetricsListen::Off);
        let e = RelayConfig::parse(&format!("{base}[metrics]\nlisten = \"0.0.0.0:9464\"\n"))
            .unwrap_err();
        assert!(e.to_string().contains("metrics.token_file"), "{e}");
        assert!(RelayConfig::parse(&format!(
            "{base}[metrics]\nlisten = \"0.0.0.0:9464\"\ntoken_file = \"/etc/dwa/metrics.token\"\n"
        ))
        .is_ok());
        let e =
            RelayConfig::parse(&format!("{base}[metrics]\nlisten = \"nowhere\"\n")).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let e = RelayConfig::parse(&format!("{base}[metrics]\nport = 1\n")).unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        // What init writes: beside a loopback HTTPS address; it reads back.
        let c = RelayConfig::new(
            "d.localhost".into(),
            "127.0.0.1:1".parse().unwrap(),
            "127.5.6.1:2".parse().unwrap(),
        );
        assert_eq!(
            c.metrics.listen,
            MetricsListen::At("127.5.6.1:9464".parse().unwrap())
        );
        let text = toml::to_string(&c).unwrap();
        assert_eq!(RelayConfig::parse(&text).unwrap(), c);
    }

    #[test]
    fn webhook_needs_a_secret_that_debug_hides() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let e = RelayConfig::parse(&format!(
            "{base}[alerts]\nwebhook_url = \"http://127.0.0.1:9/h\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("webhook_secret"), "{e}");
        let e = RelayConfig::parse(&format!(
            "{base}[alerts]\nwebhook_url = \"ftp://x/h\"\nwebhook_secret = \"0123456789abcdef\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("webhook_url"), "{e}");
        let c = RelayConfig::parse(&format!("{base}[alerts]\nwebhook_url = \"https://x.example/h\"\nwebhook_secret = \"0123456789abcdef\"\n")).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
