//! `dwa-agent enroll`: generate the agent's key, register it with the relay
//! over HTTPS pinned to the certificate named in the token, pin the relay's
//! SSH host key, write agent.toml. Nothing is written unless all of it worked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dwa_policy::agent::PolicyConfig;
use dwa_proto::enroll::{EnrollRequest, EnrollResponse, EnrollToken};

use crate::config::{AgentConfig, LinkConfig, Pins, ScanConfig, SpoolConfig, TransportMode};
use crate::error::{AgentError, Result};
use crate::relay_http::{error_text, RelayHttp};

const TIMEOUT: Duration = Duration::from_secs(20);

pub struct EnrollOptions {
    pub relay: String,
    pub token: String,
    pub config_path: PathBuf,
    pub allow: Vec<String>,
    pub ports: Vec<u16>,
    pub transport: TransportMode,
    pub force: bool,
}

pub struct Enrolled {
    pub config: AgentConfig,
    pub response: EnrollResponse,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "agent".into())
}

/// Writes a secret file owner-only and atomically (see `dwa_link::fs`).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    dwa_link::fs::write_private(path, contents).map_err(|(p, e)| AgentError::file(&p, e))
}

async fn post_enroll(relay: &url::Url, pin: &str, req: &EnrollRequest) -> Result<EnrollResponse> {
    let http = RelayHttp::new(relay, pin, TIMEOUT)?;
    let body = serde_json::to_vec(req).map_err(|e| AgentError::Enroll(e.to_string()))?;
    let (status, bytes) = http
        .post_json("/api/v1/enroll", &[], body)
        .await
        .map_err(|e| AgentError::Enroll(e.0))?;
    if !status.is_success() {
        return Err(AgentError::EnrollRefused(error_text(status, &bytes)));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| AgentError::Enroll(format!("unexpected answer from the relay: {e}")))
}

pub async fn enroll(o: EnrollOptions) -> Result<Enrolled> {
    let token = EnrollToken::parse(&o.token)?;
    let relay = url::Url::parse(&o.relay)
        .map_err(|e| AgentError::Config(format!("--relay {:?}: {e}", o.relay)))?;
    if relay.scheme() != "https" {
        return Err(AgentError::Config(format!(
            "--relay {:?}: must be https://",
            o.relay
        )));
    }
    if o.config_path.exists() && !o.force {
        return Err(AgentError::Config(format!(
            "{} already exists: this agent is enrolled (use --force to enroll again)",
            o.config_path.display()
        )));
    }
    let key = dwa_link::ssh::generate_ed25519();
    let pin = hex_encode(&token.tls_fingerprint);
    let req = EnrollRequest {
        secret: o
            .token
            .trim()
            .split('.')
            .nth(1)
            .unwrap_or_default()
            .to_string(),
        public_key: dwa_link::ssh::public_openssh(key.public_key()),
        hostname: hostname(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    let response = post_enroll(&relay, &pin, &req).await?;
    dwa_link::ssh::parse_public(&response.ssh_host_key)
        .map_err(|e| AgentError::Enroll(format!("the relay sent an unusable host key: {e}")))?;

    let mut policy = PolicyConfig {
        allow: o.allow,
        ..PolicyConfig::default()
    };
    if !o.ports.is_empty() {
        policy.ports = o.ports;
    }
    let config = AgentConfig {
        relay: relay.as_str().trim_end_matches('/').to_string(),
        transport: o.transport,
        agent_id: response.agent_id.clone(),
        ssh_port: response.ssh_port,
        key_file: PathBuf::from("agent_key"),
        pins: Pins {
            ssh_host_key: response.ssh_host_key.clone(),
            tls_fingerprint: pin,
        },
        scan: ScanConfig::default(),
        policy,
        link: LinkConfig::default(),
        spool: SpoolConfig::default(),
        traps: Default::default(),
        audit_log: PathBuf::from("audit.jsonl"),
    };
    config.validate()?;
    if let Some(dir) = o.config_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::file(dir, e))?;
    }
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| AgentError::Enroll(format!("encoding the key: {e}")))?;
    write_private(&config.key_path(&o.config_path), pem.as_bytes())?;
    let text = toml::to_string(&config).map_err(|e| AgentError::Config(e.to_string()))?;
    write_private(&o.config_path, text.as_bytes())?;
    Ok(Enrolled { config, response })
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
