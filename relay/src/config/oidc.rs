//! `[oidc]` in relay.toml: single sign-on through an OpenID Connect
//! provider, and the URL rule every call to the provider follows.

use std::path::PathBuf;
use std::time::Duration;

use dwa_policy::roles::Role;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// The longest group name considered (longer ones are ignored).
pub const MAX_GROUP_LEN: usize = 256;

pub fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
pub fn default_groups_claim() -> String {
    "groups".into()
}
pub fn default_ca_file() -> PathBuf {
    PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[oidc]` in relay.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL (discovery: `<issuer>/.well-known/openid-configuration`).
    /// `https://`; `http://` only on a loopback address (tests).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim (in the ID token, else from userinfo) that lists the groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Roots for an `https://` issuer (the provider's CA).
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Each call to the provider, connect to last byte.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Group → role and customers. See `services::sso::map_groups` for several matches.
    #[serde(default)]
    pub map: Vec<GroupMap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupMap {
    /// Group name as the provider sends it (exact, case-sensitive).
    pub group: String,
    /// admin, technician, viewer or customer.
    pub role: String,
    /// Customer names (as `dwa-relay customer add` made them).
    #[serde(default)]
    pub customers: Vec<String>,
}

/// Whether `host` (from a URL) is a loopback address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `https://…`, or `http://` to a loopback host; anything else is refused.
pub fn allowed_url(u: &url::Url) -> bool {
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => u.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

impl OidcSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError::Invalid(format!("oidc.{k}: {why}")));
        match url::Url::parse(&self.issuer) {
            Ok(u) if allowed_url(&u) && u.query().is_none() && u.fragment().is_none() => {}
            _ => {
                return bad(
                    "issuer",
                    "must be an https:// URL (http:// only on a loopback address), without query",
                )
            }
        }
        if self.client_id.trim().is_empty() || self.client_id.len() > 255 {
            return bad("client_id", "must be 1..=255 characters");
        }
        if self.client_secret.expose().is_empty() {
            return bad("client_secret", "must be set");
        }
        if self.scopes.len() > 20
            || self
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 100 || !s.chars().all(|c| c.is_ascii_graphic()))
        {
            return bad(
                "scopes",
                "at most 20 scope names, each 1..=100 printable characters without spaces",
            );
        }
        if self.groups_claim.trim().is_empty() {
            return bad("groups_claim", "must be set");
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(10) {
            return bad("timeout", "must be 1s..=10s");
        }
        if self.map.is_empty() {
            return bad(
                "map",
                "needs at least one [[oidc.map]] (group → role); no mapping would refuse everyone",
            );
        }
        for (i, m) in self.map.iter().enumerate() {
            if m.group.is_empty() || m.group.len() > MAX_GROUP_LEN {
                return bad(&format!("map[{i}].group"), "must be 1..=256 characters");
            }
            if m.role.parse::<Role>().is_err() {
                return bad(
                    &format!("map[{i}].role"),
                    "must be admin, technician, viewer or customer",
                );
            }
            if m.customers.iter().any(|c| c.trim().is_empty()) {
                return bad(&format!("map[{i}].customers"), "names must not be empty");
            }
        }
        Ok(())
    }
}

/// Fixtures for the tests that need an `[oidc]` section.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn m(group: &str, role: &str, customers: &[&str]) -> GroupMap {
        GroupMap {
            group: group.into(),
            role: role.into(),
            customers: customers.iter().map(|c| c.to_string()).collect(),
        }
    }

    pub(crate) fn section() -> OidcSection {
        OidcSection {
            issuer: "https://idp.example.com/realms/x".into(),
            client_id: "dwa".into(),
            client_secret: Secret::new("s3cret-value"),
            scopes: default_scopes(),
            groups_claim: default_groups_claim(),
            ca_file: default_ca_file(),
            timeout: default_timeout(),
            map: vec![m("dwa-techs", "technician", &["acme"])],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::section;
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(section().validate().is_ok());
        let mut s = section();
        s.issuer = "http://idp.example.com".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("oidc.issuer"));
        s.issuer = "http://127.0.0.1:9000".into();
        assert!(s.validate().is_ok());
        let mut s = section();
        s.map[0].role = "root".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("oidc.map[0].role"));
        let mut s = section();
        s.map.clear();
        assert!(s.validate().unwrap_err().to_string().contains("oidc.map"));
        assert!(!format!("{:?}", section()).contains("s3cret-value"));
    }

    #[test]
    fn relay_toml_with_oidc_section() {
        let base = "domain = \"d.localhost\"\n[ssh]\nlisten = \"127.0.0.1:1\"\n[https]\nlisten = \"127.0.0.1:2\"\n";
        let text = format!(
            "{base}[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"dwa\"\nclient_secret = \"x\"\n\
             [[oidc.map]]\ngroup = \"dwa-techs\"\nrole = \"technician\"\ncustomers = [\"Acme\"]\n"
        );
        let c = crate::config::RelayConfig::parse(&text).unwrap();
        let o = c.oidc.as_ref().unwrap();
        assert_eq!(o.groups_claim, "groups");
        assert_eq!(o.scopes, default_scopes());
        assert_eq!(o.map[0].customers, vec!["Acme"]);
        let e = crate::config::RelayConfig::parse(&format!("{text}bogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        // Round trip (the section is kept when serialised).
        let again = crate::config::RelayConfig::parse(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn only_https_or_loopback_http() {
        let ok = |u: &str| allowed_url(&url::Url::parse(u).unwrap());
        assert!(ok("https://idp.example.com/x"));
        assert!(ok("http://127.0.0.5:3000/"));
        assert!(ok("http://[::1]:3000/"));
        assert!(ok("http://localhost:3000/"));
        assert!(!ok("http://10.0.0.1/"));
        assert!(!ok("http://idp.example.com/"));
        assert!(!ok("ftp://127.0.0.1/"));
    }
}
