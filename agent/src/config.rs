//! agent.toml: parsed with unknown keys rejected (the error names the key),
//! then validated; the policy section compiles into the allowlist here, so
//! a bad entry stops the agent before it ever connects.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dwa_policy::agent::{AgentPolicy, PolicyConfig};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use crate::telemetry::v3::{V3Field, V3Input, V3Security};

/// A secret that never shows in logs or debug output.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportMode {
    Ssh,
    Websocket,
    /// SSH first; the WebSocket on the HTTPS port if SSH cannot get out.
    #[default]
    Auto,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Relay base URL (https), written by enroll.
    pub relay: String,
    #[serde(default)]
    pub transport: TransportMode,
    /// Identity assigned at enrollment.
    pub agent_id: String,
    /// Relay SSH port (from enrollment).
    pub ssh_port: u16,
    /// Private key, relative to this file's directory.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    pub pins: Pins,
    #[serde(default)]
    pub scan: ScanConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub link: LinkConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub traps: TrapsConfig,
    /// The agent's own audit log (streams, diagnostics, the relay's signed
    /// checkpoints), relative to this file's directory.
    #[serde(default = "default_audit_log")]
    pub audit_log: PathBuf,
}

fn default_audit_log() -> PathBuf {
    PathBuf::from("audit.jsonl")
}

/// `[traps]`: printer alert traps trigger an immediate scan of the sender
/// (see `telemetry::traps`). Off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrapsConfig {
    pub enabled: bool,
    /// UDP address to listen on; 162 needs root or CAP_NET_BIND_SERVICE.
    pub listen: String,
    /// Accepted trap communities; when absent, the scan communities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<Secret>>,
    /// One trap-triggered scan per device per this interval.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
}

impl Default for TrapsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "0.0.0.0:162".into(),
            communities: None,
            min_interval: Duration::from_secs(60),
        }
    }
}

fn default_key_file() -> PathBuf {
    PathBuf::from("agent_key")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    /// The relay's SSH host key, OpenSSH form.
    pub ssh_host_key: String,
    /// SHA-256 of the relay's TLS certificate, hex.
    pub tls_fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    pub ranges: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub snmp_port: u16,
    /// v1/v2c communities, tried in order after the v3 users. When absent:
    /// "public", unless `[[scan.v3]]` users are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<Secret>>,
    /// `[[scan.v3]]`: SNMPv3 users, tried in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v3: Vec<V3UserConfig>,
    /// Per SNMP request; each request is retried `retries` times.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub retries: u32,
    /// Devices walked at the same time. Discovery, which finds them, covers
    /// the whole range over one paced socket regardless.
    pub concurrency: usize,
    /// Look up each printer's DNS name (PTR record).
    pub dns_names: bool,
    /// Ask each printer for its NetBIOS name (node status, UDP, unicast to
    /// the printer's own address only).
    pub netbios_names: bool,
    /// DNS servers (`address` or `address:port`) for host-name ranges and
    /// PTR lookups; empty: the system's (resolv.conf, /etc/hosts).
    pub dns_servers: Vec<String>,
    /// The NetBIOS name service port (137; another only for labs and tests).
    pub netbios_port: u16,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            ranges: vec![],
            interval: Duration::from_secs(300),
            snmp_port: 161,
            communities: None,
            v3: vec![],
            timeout: Duration::from_secs(1),
            retries: 1,
            concurrency: 64,
            dns_names: true,
            netbios_names: true,
            dns_servers: vec![],
            netbios_port: crate::telemetry::netbios::PORT,
        }
    }
}

/// `[spool]`: where readings wait for the relay, and its bounds (see
/// `telemetry::spool` for the policy when full).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// SQLite file, relative to this file's directory.
    pub path: PathBuf,
    /// The spool's AES-256-GCM key (64 hex digits, 0600), relative to this
    /// file's directory; created on first run. Keep it with `key_file`:
    /// without it the spooled readings cannot be read.
    pub key_file: PathBuf,
    pub max_items: u64,
    pub max_bytes: u64,
    /// Items per upload (1..=256).
    pub batch_items: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("spool.db"),
            key_file: PathBuf::from("spool_key"),
            // About 3 days of 5-minute scans of 200 printers.
            max_items: 200_000,
            max_bytes: 512 * 1024 * 1024,
            batch_items: dwa_proto::telemetry::MAX_BATCH_ITEMS,
        }
    }
}

impl ScanConfig {
    /// The communities to try (see [`ScanConfig::communities`]).
    pub fn effective_communities(&self) -> Vec<String> {
        match &self.communities {
            Some(c) => c.iter().map(|s| s.0.clone()).collect(),
            None if self.v3.is_empty() => vec!["public".into()],
            None => vec![],
        }
    }

    /// The communities a trap may carry (`[traps] communities`, else these).
    pub fn trap_communities(&self, traps: &TrapsConfig) -> Vec<String> {
        match &traps.communities {
            Some(c) => c.iter().map(|s| s.0.clone()).collect(),
            None => self.effective_communities(),
        }
    }

    /// The DNS servers, parsed; the error names the key.
    pub fn dns_servers(&self) -> Result<Vec<std::net::SocketAddr>> {
        self.dns_servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                crate::telemetry::names::parse_server(s)
                    .map_err(|e| AgentError::Config(format!("scan.dns_servers[{i}]: {e}")))
            })
            .collect()
    }

    /// NetBIOS settings of a scan, when on.
    pub fn netbios(&self) -> Option<crate::telemetry::netbios::NetbiosOptions> {
        self.netbios_names
            .then_some(crate::telemetry::netbios::NetbiosOptions {
                port: self.netbios_port,
                timeout: self.timeout,
                retries: self.retries,
            })
    }

    /// The v3 users, checked; the error names the key.
    pub fn v3_security(&self) -> Result<Vec<V3Security>> {
        self.v3
            .iter()
            .enumerate()
            .map(|(i, u)| {
                u.security()
                    .map_err(|(k, why)| AgentError::Config(format!("scan.v3[{i}].{k}: {why}")))
            })
            .collect()
    }
}

/// One `[[scan.v3]]` user. Level and protocol names stay strings here so
/// that `validate` can name the key of a bad one (net-snmp's spellings, any
/// case: `authPriv`, `SHA-256`, `AES`...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct V3UserConfig {
    pub user: String,
    /// noAuthNoPriv, authNoPriv or authPriv.
    pub level: String,
    /// md5, sha (SHA-1), sha224, sha256, sha384, sha512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<Secret>,
    /// des, aes (AES-128), aes192, aes256, aes192c, aes256c.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priv_password: Option<Secret>,
}

impl V3UserConfig {
    /// The checked credentials, or (key, reason).
    pub fn security(&self) -> std::result::Result<V3Security, (&'static str, String)> {
        fn parse<T: std::str::FromStr<Err = String>>(
            key: &'static str,
            v: &Option<String>,
        ) -> std::result::Result<Option<T>, (&'static str, String)> {
            v.as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| (key, e))
        }
        let input = V3Input {
            user: self.user.clone(),
            level: Some(self.level.parse().map_err(|e| ("level", e))?),
            auth_protocol: parse("auth_protocol", &self.auth_protocol)?,
            auth_password: self.auth_password.clone(),
            priv_protocol: parse("priv_protocol", &self.priv_protocol)?,
            priv_password: self.priv_password.clone(),
        };
        input.build().map_err(|e| {
            let key = match e.field {
                V3Field::User => "user",
                V3Field::AuthProtocol => "auth_protocol",
                V3Field::AuthPassword => "auth_password",
                V3Field::PrivProtocol => "priv_protocol",
                V3Field::PrivPassword => "priv_password",
            };
            (key, e.message)
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Streams carried at once; more are refused with a reason.
    pub max_streams: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            connect_timeout: Duration::from_secs(10),
            max_streams: 512,
        }
    }
}

impl AgentConfig {
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| AgentError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::file(path, e))?;
        Self::parse(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(AgentError::Config(format!("{k}: {why}")));
        let url = match url::Url::parse(&self.relay) {
            Ok(u) => u,
            Err(e) => return bad("relay", format!("invalid URL {:?}: {e}", self.relay)),
        };
        if url.scheme() != "https" || url.host_str().is_none() {
            return bad(
                "relay",
                format!("{:?} must be an https:// URL with a host", self.relay),
            );
        }
        if self.ssh_port == 0 {
            return bad("ssh_port", "must be 1..=65535".into());
        }
        if self.agent_id.is_empty() {
            return bad("agent_id", "is empty".into());
        }
        if let Err(e) = dwa_link::ssh::parse_public(&self.pins.ssh_host_key) {
            return bad("pins.ssh_host_key", e);
        }
        let fp = self.pins.tls_fingerprint.trim_start_matches("sha256:");
        if fp.len() != 64 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad(
                "pins.tls_fingerprint",
                "must be 64 hex digits (SHA-256)".into(),
            );
        }
        for (i, r) in self.scan.ranges.iter().enumerate() {
            if r.parse::<ipnetwork::IpNetwork>().is_err()
                && r.parse::<IpAddr>().is_err()
                && !crate::telemetry::names::is_host_name(r)
            {
                return bad(
                    &format!("scan.ranges[{i}]"),
                    format!("invalid network or host name {r:?}"),
                );
            }
        }
        // Short intervals are for labs and tests; the relay cannot push
        // anything below a minute (see `telemetry::collector`).
        if self.scan.interval < Duration::from_secs(1) {
            return bad("scan.interval", "must be at least 1s".into());
        }
        if self.scan.timeout < Duration::from_millis(10)
            || self.scan.timeout > Duration::from_secs(60)
        {
            return bad("scan.timeout", "must be between 10ms and 60s".into());
        }
        if self.scan.retries > 10 {
            return bad("scan.retries", "must be at most 10".into());
        }
        if !(1..=4096).contains(&self.scan.concurrency) {
            return bad("scan.concurrency", "must be 1..=4096".into());
        }
        if self.spool.max_items == 0 || self.spool.max_bytes < 1024 * 1024 {
            return bad(
                "spool",
                "max_items must be at least 1 and max_bytes at least 1 MiB".into(),
            );
        }
        if !(1..=dwa_proto::telemetry::MAX_BATCH_ITEMS).contains(&self.spool.batch_items) {
            return bad(
                "spool.batch_items",
                format!("must be 1..={}", dwa_proto::telemetry::MAX_BATCH_ITEMS),
            );
        }
        if self.scan.snmp_port == 0 {
            return bad("scan.snmp_port", "must be 1..=65535".into());
        }
        if self.scan.netbios_port == 0 {
            return bad("scan.netbios_port", "must be 1..=65535".into());
        }
        self.scan.dns_servers()?;
        if self.traps.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "traps.listen",
                format!("{:?} is not an address:port", self.traps.listen),
            );
        }
        if self.traps.min_interval < Duration::from_secs(1) {
            return bad("traps.min_interval", "must be at least 1s".into());
        }
        self.scan.v3_security()?;
        if self.link.max_streams == 0 || self.link.keepalive_max == 0 {
            return bad(
                "link",
                "max_streams and keepalive_max must be at least 1".into(),
            );
        }
        if self.link.keepalive_interval < Duration::from_secs(1)
            || self.link.connect_timeout.is_zero()
        {
            return bad(
                "link",
                "keepalive_interval must be ≥ 1s, connect_timeout > 0".into(),
            );
        }
        // Compile now so policy errors name their key before anything runs.
        self.policy(vec![])?;
        Ok(())
    }

    /// The policy as configured; `allow` defaults to the scan ranges.
    pub fn policy(&self, own_addresses: Vec<IpAddr>) -> Result<AgentPolicy> {
        let mut p = self.policy.clone();
        if p.allow.is_empty() {
            // Host-name ranges are no networks: they name no ceiling (set
            // policy.allow to scan them).
            p.allow = self
                .scan
                .ranges
                .iter()
                .filter(|r| !crate::telemetry::names::is_host_name(r))
                .cloned()
                .collect();
        }
        Ok(AgentPolicy::from_config(&p, own_addresses)?)
    }

    pub fn relay_host(&self) -> String {
        url::Url::parse(&self.relay)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_default()
    }

    pub fn relay_https_port(&self) -> u16 {
        url::Url::parse(&self.relay)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(443)
    }

    /// `key_file` resolved against the config file's directory.
    pub fn key_path(&self, config_path: &Path) -> PathBuf {
        beside(config_path, &self.key_file)
    }

    /// `audit_log` resolved against the config file's directory.
    pub fn audit_log_path(&self, config_path: &Path) -> PathBuf {
        beside(config_path, &self.audit_log)
    }

    /// `spool.path` resolved against the config file's directory.
    pub fn spool_path(&self, config_path: &Path) -> PathBuf {
        beside(config_path, &self.spool.path)
    }

    /// `spool.key_file` resolved against the config file's directory.
    pub fn spool_key_path(&self, config_path: &Path) -> PathBuf {
        beside(config_path, &self.spool.key_file)
    }
}

fn beside(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// host:port with IPv6 hosts bracketed.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// This host's interface addresses: denied as targets unless named.
pub fn own_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}
