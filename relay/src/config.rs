//! relay.toml: parsed with unknown keys rejected, then validated.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{RelayError, Result};

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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open SSH + HTTPS connections at once.
    pub max_connections: usize,
    /// SSH handshakes (connect → authenticated) in progress at once; mass
    /// reconnects queue instead of exhausting the CPU.
    pub max_handshakes: usize,
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
            max_handshakes: 64,
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
            https: HttpsSection { listen: https },
            limits: Limits::default(),
            keepalive: KeepaliveSection::default(),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| RelayError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RelayError::file(&path, e))?;
        Self::parse(&text).map_err(|e| RelayError::Config(format!("{}: {e}", path.display())))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: &str| Err(RelayError::Config(format!("{k}: {why}")));
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
}
