//! SIGHUP: agent.toml is read and validated again; `[policy]` and most of
//! `[scan]` take effect at once, everything else at the next start.
//!
//! The policy is why this exists: a site's IT narrows what the agent may
//! reach and expects it to hold from that moment, without dropping the
//! link. A file that does not load changes nothing (the running
//! configuration stays, the error is returned for the log). What needs a
//! restart — the relay, identity, key, pins, transport, link, spool, traps
//! and the name lookups, which are bound once at start — is kept as it
//! runs and named in the result, so nobody believes a change is in force
//! that is not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{AgentConfig, ScanConfig};
use crate::error::Result;
use crate::local_audit::LocalAudit;
use crate::policy::LivePolicy;
use crate::telemetry::collector::Collector;
use crate::telemetry::names::Names;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings in force from now on.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but take effect at the next start.
    pub restart_needed: Vec<&'static str>,
}

/// The parts of a running agent a reload changes.
pub struct Reloader {
    pub(crate) path: PathBuf,
    pub(crate) running: Mutex<AgentConfig>,
    pub(crate) policy: Arc<LivePolicy>,
    /// `None`: the agent runs without telemetry (no collector).
    pub(crate) scan: Option<(Arc<Collector>, Arc<Names>)>,
    pub(crate) audit: LocalAudit,
}

/// `[scan]` fields read once at start (the resolver and name lookups).
fn scan_fixed(s: &ScanConfig) -> impl PartialEq + '_ {
    (
        &s.dns_names,
        &s.netbios_names,
        &s.dns_servers,
        &s.netbios_port,
    )
}

/// The settings of `new` that differ from `old` and need a restart.
pub fn restart_needed(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |changed: bool, name| {
        if changed {
            v.push(name);
        }
    };
    check(old.relay != new.relay, "relay");
    check(old.transport != new.transport, "transport");
    check(old.agent_id != new.agent_id, "agent_id");
    check(old.ssh_port != new.ssh_port, "ssh_port");
    check(old.key_file != new.key_file, "key_file");
    check(old.pins != new.pins, "pins");
    check(old.link != new.link, "link");
    check(old.spool != new.spool, "spool");
    check(old.traps != new.traps, "traps");
    check(old.audit_log != new.audit_log, "audit_log");
    check(
        scan_fixed(&old.scan) != scan_fixed(&new.scan),
        "scan (dns_names, netbios_names, dns_servers, netbios_port)",
    );
    v
}

impl Reloader {
    /// Reads agent.toml again and puts what may change at once in force.
    pub fn reload(&self) -> Result<Reloaded> {
        let new = AgentConfig::load(&self.path)?;
        // Everything is checked before anything changes.
        let policy = new.policy(crate::config::own_addresses())?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let options = match &self.scan {
            Some((_, names)) => Some(crate::session::scan_options(
                &new.scan,
                names,
                &self.policy,
            )?),
            None => None,
        };
        let restart = restart_needed(&running, &new);
        let mut applied = Vec::new();
        if running.policy != new.policy || running.scan.ranges != new.scan.ranges {
            // policy.allow defaults to the scan ranges: either may move it.
            self.policy.replace(policy);
            applied.push("policy");
        }
        // The fields read once stay as they run.
        let mut scan = new.scan.clone();
        scan.dns_names = running.scan.dns_names;
        scan.netbios_names = running.scan.netbios_names;
        scan.dns_servers = running.scan.dns_servers.clone();
        scan.netbios_port = running.scan.netbios_port;
        if scan != running.scan {
            if let (Some((collector, _)), Some(options)) = (&self.scan, options) {
                collector.reconfigure(crate::session::plan(&scan), options);
            }
            applied.push("scan");
        }
        running.policy = new.policy;
        running.scan = scan;
        let r = Reloaded {
            applied,
            restart_needed: restart,
        };
        self.audit.record(
            "config.reloaded",
            serde_json::json!({
                "applied": r.applied,
                "restart_needed": r.restart_needed,
            }),
        );
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::parse(
            r#"
relay = "https://relay.example:8443"
agent_id = "a1"
ssh_port = 2222
[pins]
ssh_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEoJ2R6RKN+L13hBrfKOGVTkd84ksDGoIIsgV56mDNyY"
tls_fingerprint = "b081c0d8742638c16991c636167f40b45f630ab668e76fe22dce6f074a51759d"
"#,
        )
        .expect("parses")
    }

    #[test]
    fn names_only_the_settings_bound_at_start() {
        let old = config();
        let mut new = old.clone();
        new.scan.ranges = vec!["10.0.0.0/24".into()];
        new.scan.timeout = std::time::Duration::from_secs(3);
        new.policy.ports = vec![80];
        assert!(restart_needed(&old, &new).is_empty());
        new.relay = "https://other.example".into();
        new.scan.dns_servers = vec!["127.0.0.1".into()];
        new.traps.enabled = true;
        assert_eq!(
            restart_needed(&old, &new),
            vec![
                "relay",
                "traps",
                "scan (dns_names, netbios_names, dns_servers, netbios_port)"
            ]
        );
    }
}
