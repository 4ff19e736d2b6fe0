//! Signed HTTPS requests from an enrolled agent (the telemetry upload).
//!
//! The credential is the agent's enrollment key: the agent signs each
//! request with its SSH private key as an SSHSIG (the format of
//! `ssh-keygen -Y sign`), the relay checks it against the public key it
//! registered at enrollment. No extra secret to store, rotate or leak; a
//! revoked agent is refused here as on the SSH port.
//!
//! Header: `Authorization: DWA-Agent <agent-id> <unix-seconds> <base64 sig>`.
//! Signed message: method, path, agent id, time and the body's SHA-256, one
//! per line. The time bounds replay to [`MAX_SKEW`]; uploads are idempotent
//! anyway (item ids), so a replay inside that window changes nothing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use russh::keys::ssh_key::encoding::{Decode, Encode};
use russh::keys::ssh_key::{HashAlg, SshSig};
use russh::keys::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};

/// SSHSIG namespace: a signature made for this cannot be reused elsewhere.
pub const NAMESPACE: &str = "dwa-agent-request@v1";
pub const SCHEME: &str = "DWA-Agent";
/// How far the request's time may be from the relay's clock.
pub const MAX_SKEW_SECS: u64 = 300;
/// Longest accepted header value (an ed25519 SSHSIG is ~300 bytes base64).
const MAX_HEADER: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing or malformed DWA-Agent authorization: {0}")]
    Malformed(&'static str),
    #[error("request time is {0} s away from the relay's clock (limit {MAX_SKEW_SECS} s)")]
    Skew(u64),
    #[error("signature does not verify with the agent's enrolled key")]
    BadSignature,
    #[error("signing failed: {0}")]
    Sign(String),
}

fn message(method: &str, path: &str, agent: &str, ts: u64, body: &[u8]) -> Vec<u8> {
    format!(
        "{method}\n{path}\n{agent}\n{ts}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// The `Authorization` header value for one request.
pub fn sign(
    key: &PrivateKey,
    agent: &str,
    method: &str,
    path: &str,
    ts: u64,
    body: &[u8],
) -> Result<String, AuthError> {
    let msg = message(method, path, agent, ts, body);
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha256, &msg)
        .map_err(|e| AuthError::Sign(e.to_string()))?;
    let bytes = sig
        .encode_vec()
        .map_err(|e| AuthError::Sign(e.to_string()))?;
    Ok(format!("{SCHEME} {agent} {ts} {}", STANDARD.encode(bytes)))
}

/// A parsed header; check it with [`Signed::verify`] once the agent's key
/// is looked up by `agent`.
#[derive(Debug)]
pub struct Signed {
    pub agent: String,
    pub ts: u64,
    sig: SshSig,
}

impl Signed {
    pub fn parse(header: &str) -> Result<Signed, AuthError> {
        if header.len() > MAX_HEADER {
            return Err(AuthError::Malformed("header too long"));
        }
        let mut parts = header.split_ascii_whitespace();
        if parts.next() != Some(SCHEME) {
            return Err(AuthError::Malformed("scheme is not DWA-Agent"));
        }
        let agent = parts.next().ok_or(AuthError::Malformed("no agent id"))?;
        if agent.len() > 64
            || !agent
                .bytes()
                // Relay agent ids are `agt_` + base32 (util::random_id).
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthError::Malformed("agent id"));
        }
        let ts = parts
            .next()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or(AuthError::Malformed("time"))?;
        let sig = parts
            .next()
            .and_then(|s| STANDARD.decode(s).ok())
            .and_then(|b| SshSig::decode(&mut b.as_slice()).ok())
            .ok_or(AuthError::Malformed("signature"))?;
        if parts.next().is_some() {
            return Err(AuthError::Malformed("trailing fields"));
        }
        Ok(Signed {
            agent: agent.to_string(),
            ts,
            sig,
        })
    }

    /// Checks time and signature. `now` is the relay's unix time.
    pub fn verify(
        &self,
        key: &PublicKey,
        method: &str,
        path: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(), AuthError> {
        let skew = now.abs_diff(self.ts);
        if skew > MAX_SKEW_SECS {
            return Err(AuthError::Skew(skew));
        }
        let msg = message(method, path, &self.agent, self.ts, body);
        key.verify(NAMESPACE, &msg, &self.sig)
            .map_err(|_| AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        crate::ssh::generate_ed25519()
    }

    #[test]
    fn signed_request_verifies_and_any_change_is_refused() {
        let k = key();
        let h = sign(&k, "agent-1", "POST", "/agent/v1/ingest", 1000, b"{}").unwrap();
        let s = Signed::parse(&h).unwrap();
        assert_eq!((s.agent.as_str(), s.ts), ("agent-1", 1000));
        let pk = k.public_key();
        assert_eq!(
            s.verify(pk, "POST", "/agent/v1/ingest", b"{}", 1100),
            Ok(())
        );
        assert_eq!(
            s.verify(pk, "POST", "/agent/v1/ingest", b"{ }", 1100),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify(pk, "POST", "/other", b"{}", 1100),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify(key().public_key(), "POST", "/agent/v1/ingest", b"{}", 1100),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            s.verify(
                pk,
                "POST",
                "/agent/v1/ingest",
                b"{}",
                1000 + MAX_SKEW_SECS + 1
            ),
            Err(AuthError::Skew(MAX_SKEW_SECS + 1))
        );
        // Real agent ids have an underscore (`agt_...`).
        let h2 = sign(&k, "agt_abc234", "POST", "/agent/v1/ingest", 1000, b"{}").unwrap();
        assert_eq!(
            Signed::parse(&h2).map(|s| s.agent),
            Ok("agt_abc234".to_string())
        );
        // Another agent id with the same signature.
        let forged = h.replacen("agent-1", "agent-2", 1);
        let f = Signed::parse(&forged).unwrap();
        assert_eq!(
            f.verify(pk, "POST", "/agent/v1/ingest", b"{}", 1000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "Bearer x",
            "DWA-Agent",
            "DWA-Agent a",
            "DWA-Agent a 12",
            "DWA-Agent a x AAAA",
            "DWA-Agent a 12 !!!",
            "DWA-Agent a 12 AAAA",
            "DWA-Agent a/b 12 AAAA",
        ] {
            assert!(
                matches!(Signed::parse(bad), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("DWA-Agent a 1 {}", "A".repeat(5000));
        assert!(Signed::parse(&long).is_err());
    }
}
