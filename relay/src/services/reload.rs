//! SIGHUP: relay.toml is read and validated again, and what is read at
//! each use is put in force at once; what the relay reads once at start
//! keeps its running value until the next start, and both are audited.
//!
//! Read once at start: the listeners (`ssh`, `https`, `domain`), the SSH
//! keepalive, the connection and handshake slots of `[limits]`, the
//! log-in and session rate quotas of `[web]` and `[accounts]`, and the
//! sections whose loops and clients are built at start (`[alerts]`,
//! `[smtp]`, `[oidc]`, `[metrics]`, the checkpoint and prune intervals). Everything
//! else — web-session and tunnel limits and durations, lockout, two-factor
//! roles, inactivity, log-in lifetime, stream limits and timeouts,
//! retention — is read where it is used, so a reload applies to the next
//! log-in, session, tunnel or stream (live ones keep what they started
//! with).

use dwa_proto::audit::Event;

use super::audit::AuditError;
use super::Services;
use crate::config::{ConfigError, RelayConfig};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// relay.toml did not load; the running configuration stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Sections with a setting that changed and is in force now.
    pub applied: Vec<String>,
    /// Settings that changed in the file but keep their running values.
    pub restart_needed: Vec<String>,
}

/// `new` with every setting read once at start put back to its running
/// value in `old`, and the names of those that differed. Pure.
pub fn keep_start_settings(old: &RelayConfig, new: &RelayConfig) -> (RelayConfig, Vec<String>) {
    let mut eff = new.clone();
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($path:ident).+) => {
            if eff.$($path).+ != old.$($path).+ {
                eff.$($path).+ = old.$($path).+.clone();
                kept.push(stringify!($($path).+).replace(' ', ""));
            }
        };
    }
    keep!(domain);
    keep!(ssh);
    keep!(https);
    keep!(keepalive);
    keep!(limits.max_connections);
    keep!(limits.connections_per_source);
    keep!(limits.max_handshakes);
    keep!(limits.handshakes_per_source);
    keep!(limits.tls_handshakes_per_source);
    keep!(web.logins_per_minute);
    keep!(web.sessions_per_minute);
    keep!(accounts.failures_per_account_per_minute);
    keep!(accounts.failures_per_address_per_minute);
    keep!(alerts);
    keep!(smtp);
    keep!(oidc);
    keep!(audit);
    keep!(telemetry.prune_interval);
    keep!(metrics);
    (eff, kept)
}

/// The top-level sections in which `a` and `b` differ.
fn changed_sections(a: &RelayConfig, b: &RelayConfig) -> Vec<String> {
    let mut v = Vec::new();
    macro_rules! section {
        ($($name:ident),+) => {
            $(if a.$name != b.$name {
                v.push(stringify!($name).to_string());
            })+
        };
    }
    section!(
        domain, ssh, https, limits, keepalive, web, alerts, smtp, oidc, accounts, tunnels, audit,
        telemetry
    );
    v
}

/// Reads relay.toml again; see the module comment for what changes.
/// A file that does not load changes nothing and is audited as refused.
pub async fn reload(svc: &Services) -> Result<Reloaded, ReloadError> {
    let new = match RelayConfig::load(&svc.dir.0) {
        Ok(c) => c,
        Err(e) => {
            svc.audit
                .append(
                    Event::RelayConfigReloadRefused {
                        error: e.to_string(),
                    },
                    "relay",
                    None,
                )
                .await?;
            return Err(e.into());
        }
    };
    let old = svc.cfg();
    let (eff, restart_needed) = keep_start_settings(&old, &new);
    let applied = changed_sections(&old, &eff);
    svc.set_cfg(eff);
    svc.audit
        .append(
            Event::RelayConfigReloaded {
                applied: applied.clone(),
                restart_needed: restart_needed.clone(),
            },
            "relay",
            None,
        )
        .await?;
    Ok(Reloaded {
        applied,
        restart_needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RelayConfig {
        RelayConfig::parse(
            r#"
domain = "dwa.localhost"
[ssh]
listen = "127.0.0.1:2222"
[https]
listen = "127.0.0.1:8443"
"#,
        )
        .expect("parses")
    }

    #[test]
    fn per_use_settings_change_and_start_settings_are_kept() {
        let old = config();
        let mut new = old.clone();
        new.accounts.lockout_after = 2;
        new.web.max_duration = std::time::Duration::from_secs(600);
        new.limits.stream_open_timeout = std::time::Duration::from_secs(3);
        new.limits.max_connections = 7;
        new.ssh.listen = "127.0.0.1:2223".parse().unwrap();
        new.web.logins_per_minute = 1;
        let (eff, kept) = keep_start_settings(&old, &new);
        assert_eq!(
            kept,
            vec!["ssh", "limits.max_connections", "web.logins_per_minute"]
        );
        assert_eq!(eff.accounts.lockout_after, 2);
        assert_eq!(eff.web.max_duration, std::time::Duration::from_secs(600));
        assert_eq!(
            eff.limits.stream_open_timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(eff.limits.max_connections, old.limits.max_connections);
        assert_eq!(eff.ssh, old.ssh);
        assert_eq!(eff.web.logins_per_minute, old.web.logins_per_minute);
        assert_eq!(
            changed_sections(&old, &eff),
            vec!["limits", "web", "accounts"]
        );
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let old = config();
        let (eff, kept) = keep_start_settings(&old, &old.clone());
        assert!(kept.is_empty());
        assert!(changed_sections(&old, &eff).is_empty());
    }
}
