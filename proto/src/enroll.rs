//! Enrollment: the token a dealer hands to the site, and the request/response
//! the agent exchanges with the relay over pinned HTTPS.
//!
//! Token text: `dwa1.<secret>.<fingerprint>`, both parts unpadded base64url:
//! a 128-bit random secret and the SHA-256 of the relay's TLS certificate.
//! Like a kubeadm join token it authenticates the relay on first contact.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ProtoError;

const PREFIX: &str = "dwa1";

#[derive(Clone, PartialEq, Eq)]
pub struct EnrollToken {
    pub secret: [u8; 16],
    /// SHA-256 of the relay's TLS certificate (DER).
    pub tls_fingerprint: [u8; 32],
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollToken")
            .field("secret", &"[redacted]")
            .field("tls_fingerprint", &hex::encode(self.tls_fingerprint))
            .finish()
    }
}

impl EnrollToken {
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}.{}.{}",
            URL_SAFE_NO_PAD.encode(self.secret),
            URL_SAFE_NO_PAD.encode(self.tls_fingerprint)
        )
    }

    pub fn parse(text: &str) -> Result<Self, ProtoError> {
        let mut parts = text.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(ProtoError::BadToken("it does not start with \"dwa1.\""));
        }
        let secret = parts
            .next()
            .ok_or(ProtoError::BadToken("the secret part is missing"))?;
        let fp = parts
            .next()
            .ok_or(ProtoError::BadToken("the fingerprint part is missing"))?;
        if parts.next().is_some() {
            return Err(ProtoError::BadToken("it has too many parts"));
        }
        let secret: [u8; 16] = URL_SAFE_NO_PAD
            .decode(secret)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(ProtoError::BadToken(
                "the secret is not 16 bytes of base64url",
            ))?;
        let tls_fingerprint: [u8; 32] = URL_SAFE_NO_PAD
            .decode(fp)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(ProtoError::BadToken(
                "the fingerprint is not 32 bytes of base64url",
            ))?;
        Ok(Self {
            secret,
            tls_fingerprint,
        })
    }

    /// What the relay stores and looks tokens up by (the secret never is).
    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

pub fn secret_hash(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// SHA-256 fingerprint of a certificate in DER, lowercase hex.
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The token's secret, base64url (the fingerprint part stays with the agent).
    pub secret: String,
    /// The agent's public key, OpenSSH format.
    pub public_key: String,
    pub hostname: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub agent_name: String,
    pub customer: String,
    /// The relay's SSH host key, OpenSSH format: the agent pins it.
    pub ssh_host_key: String,
    /// SSH port agents should dial (the relay's public one).
    pub ssh_port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_errors() {
        let t = EnrollToken {
            secret: [7; 16],
            tls_fingerprint: [9; 32],
        };
        let s = t.encode();
        assert!(s.starts_with("dwa1."));
        assert_eq!(EnrollToken::parse(&s), Ok(t.clone()));
        assert_eq!(EnrollToken::parse(&format!("  {s}\n")), Ok(t));
        for bad in [
            "",
            "dwa2.a.b",
            "dwa1",
            "dwa1.AAAA",
            "dwa1.AAAA.BBBB",
            "dwa1.a.b.c",
            "dwa1.!!.??",
        ] {
            assert!(EnrollToken::parse(bad).is_err(), "{bad} should not parse");
        }
        let dbg = format!("{:?}", EnrollToken::parse(&s).unwrap());
        assert!(dbg.contains("redacted") && !dbg.contains("BwcH"));
    }
}
