//! `[smtp]`: the mail server that e-mail alerts go through.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Result, Secret};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// STARTTLS or no message: a server that does not offer it, or whose
    /// certificate does not verify against `ca_file`, gets nothing.
    #[default]
    Required,
    /// STARTTLS when the server offers it, else in clear.
    Opportunistic,
    /// In clear; loopback hosts only.
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// Host name (checked against the certificate) or address.
    pub host: String,
    /// Submission port by default.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The envelope sender and `From:`.
    pub from: String,
    #[serde(default)]
    pub starttls: StartTls,
    /// Log-in name; the password then comes from `password_file` or
    /// `password_env`, never from relay.toml itself.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Roots the server's certificate is checked against.
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// One message, connect to the server's last answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A digest rule's changes are sent once per interval.
    #[serde(default = "default_digest", with = "humantime_serde")]
    pub digest_interval: Duration,
}

fn default_port() -> u16 {
    587
}
fn default_ca_file() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_digest() -> Duration {
    Duration::from_secs(3600)
}

/// Whether `host` names this machine only.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl SmtpSection {
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: &str| Err(ConfigError::Invalid(format!("smtp.{k}: {why}")));
        if self.host.is_empty()
            || self.host.len() > 253
            || self.host.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return bad("host", "must be a host name or address");
        }
        if self.port == 0 {
            return bad("port", "must be 1..=65535");
        }
        if self.from.parse::<lettre::Address>().is_err() {
            return bad("from", "must be an e-mail address");
        }
        // In clear, the alerts (customer, device addresses) and any
        // password cross the network readable: only where there is none.
        if self.starttls == StartTls::Off && !is_loopback(&self.host) {
            return bad(
                "starttls",
                "\"off\" is only allowed for a loopback host (nothing would protect the messages)",
            );
        }
        match (&self.username, &self.password_file, &self.password_env) {
            (None, None, None) => {}
            (Some(u), f, e) => {
                if u.is_empty() || u.len() > 256 {
                    return bad("username", "must be 1..=256 characters");
                }
                if f.is_some() == e.is_some() {
                    return bad(
                        "password_file / password_env",
                        "exactly one is needed with a username",
                    );
                }
                // A server that hides STARTTLS would get the password in clear.
                if self.starttls == StartTls::Opportunistic {
                    return bad(
                        "starttls",
                        "\"opportunistic\" cannot be used with a username (a downgrade would expose the password)",
                    );
                }
            }
            (None, _, _) => return bad("password_file / password_env", "need a username"),
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(300) {
            return bad("timeout", "must be 1s..=300s");
        }
        if self.digest_interval < Duration::from_secs(10)
            || self.digest_interval > Duration::from_secs(7 * 86_400)
        {
            return bad("digest_interval", "must be 10s..=7d");
        }
        Ok(())
    }

    /// The password, read from its file or variable (at start, so that a
    /// missing one stops the relay instead of every delivery failing).
    pub fn password(&self) -> Result<Option<Secret>> {
        if let Some(p) = &self.password_file {
            let s = std::fs::read_to_string(p).map_err(|source| ConfigError::File {
                path: p.display().to_string(),
                source,
            })?;
            let s = s.trim_end_matches(['\r', '\n']);
            if s.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "smtp.password_file: {} is empty",
                    p.display()
                )));
            }
            return Ok(Some(Secret::new(s)));
        }
        if let Some(v) = &self.password_env {
            return match std::env::var(v) {
                Ok(s) if !s.is_empty() => Ok(Some(Secret::new(s))),
                _ => Err(ConfigError::Invalid(format!(
                    "smtp.password_env: the variable {v} is not set"
                ))),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(host: &str, starttls: StartTls) -> SmtpSection {
        SmtpSection {
            host: host.into(),
            port: 25,
            from: "dwa@example.com".into(),
            starttls,
            username: None,
            password_file: None,
            password_env: None,
            ca_file: default_ca_file(),
            timeout: default_timeout(),
            digest_interval: default_digest(),
        }
    }

    #[test]
    fn clear_text_only_on_loopback() {
        assert!(section("127.0.0.1", StartTls::Off).validate().is_ok());
        assert!(section("localhost", StartTls::Off).validate().is_ok());
        assert!(section("::1", StartTls::Off).validate().is_ok());
        assert!(section("mail.example.com", StartTls::Off)
            .validate()
            .is_err());
        assert!(section("10.0.0.1", StartTls::Off).validate().is_err());
        assert!(section("mail.example.com", StartTls::Required)
            .validate()
            .is_ok());
    }

    #[test]
    fn a_password_needs_a_source_and_no_downgrade() {
        let mut s = section("mail.example.com", StartTls::Required);
        s.username = Some("dwa".into());
        assert!(s.validate().is_err(), "no password source");
        s.password_env = Some("DWA_SMTP_PASSWORD".into());
        assert!(s.validate().is_ok());
        s.password_file = Some("/run/secrets/smtp".into());
        assert!(s.validate().is_err(), "two sources");
        s.password_file = None;
        s.starttls = StartTls::Opportunistic;
        assert!(s.validate().is_err(), "downgrade");
        let mut s = section("mail.example.com", StartTls::Required);
        s.from = "not an address".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn the_password_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut s = section("mail.example.com", StartTls::Required);
        s.username = Some("dwa".into());
        s.password_file = Some(f);
        assert_eq!(s.password().unwrap().unwrap().expose(), "s3cret");
        s.password_file = Some(dir.path().join("missing"));
        assert!(s.password().is_err());
        // Shown masked when the config is printed.
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: std::result::Result<SmtpSection, _> =
            toml::from_str("host = \"h\"\nfrom = \"a@b.c\"\npassword = \"x\"\n");
        assert!(r.is_err());
    }
}
