//! Audit records and their hash chain.
//!
//! Each record's hash covers its own fields and the previous record's hash,
//! so an edited, inserted or deleted record breaks the chain at a point that
//! [`verify_chain`] names. The hash input is length-prefixed field by field:
//! no field's content can be shifted into another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ProtoError;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Event kinds. Stored as text so old records stay readable when kinds are added.
pub mod kind {
    pub const ENROLL_OK: &str = "enroll.ok";
    pub const ENROLL_REFUSED: &str = "enroll.refused";
    pub const AGENT_CONNECT: &str = "agent.connect";
    pub const AGENT_DISCONNECT: &str = "agent.disconnect";
    pub const AGENT_AUTH_REFUSED: &str = "agent.auth_refused";
    pub const AGENT_REPLACED: &str = "agent.replaced";
    pub const STREAM_OPEN: &str = "stream.open";
    pub const STREAM_CLOSE: &str = "stream.close";
    pub const STREAM_DENIED: &str = "stream.denied";
    /// A stream that was allowed but could not be opened (agent offline,
    /// timeout, connection failure).
    pub const STREAM_FAILED: &str = "stream.failed";
    pub const FORWARD_BIND: &str = "forward.bind";
    /// A TLS client refused the relay's certificate (a stale or wrong pin).
    pub const TLS_CERT_REJECTED: &str = "tls.cert_rejected";
    pub const ADMIN_COMMAND: &str = "admin.command";
    pub const USER_LOGIN: &str = "user.login";
    pub const USER_LOGIN_FAILED: &str = "user.login_failed";
    pub const USER_LOGOUT: &str = "user.logout";
    /// Too many failed log-ins for an account or a source address (429).
    pub const USER_LOGIN_RATE_LIMITED: &str = "user.login_rate_limited";
    /// An account locked after consecutive failed log-ins.
    pub const USER_LOCKED: &str = "user.locked";
    /// An account deactivated (unused too long).
    pub const USER_DEACTIVATED: &str = "user.deactivated";
    /// Two-factor enrolled, confirmed or a recovery code used.
    pub const USER_TOTP: &str = "user.totp";
    /// An administrator's change to a user, customer or enrollment token
    /// (create, update, unlock, reset two-factor).
    pub const USER_ADMIN: &str = "user.admin";
    pub const TOKEN_CREATE: &str = "token.create";
    pub const TOKEN_REVOKE: &str = "token.revoke";
    pub const WEB_SESSION_CREATE: &str = "web.session_create";
    pub const WEB_SESSION_END: &str = "web.session_end";
    pub const WEB_SESSION_REFUSED: &str = "web.session_refused";
    pub const WEB_REQUEST: &str = "web.request";
    pub const WEB_TICKET_REFUSED: &str = "web.ticket_refused";
    /// A device's HTTPS certificate differs from the one seen before.
    pub const TLS_CERT_CHANGED: &str = "tls.cert_changed";
    pub const PROTOCOL_ERROR: &str = "protocol.error";
    /// A telemetry upload whose signature or agent was refused.
    pub const TELEMETRY_AUTH_REFUSED: &str = "telemetry.auth_refused";
    /// Scan settings of an agent changed on the relay.
    pub const TELEMETRY_SCAN_CONFIG: &str = "telemetry.scan_config";
    /// What the agent made of the scan settings it was sent.
    pub const TELEMETRY_SCAN_CONFIG_APPLIED: &str = "telemetry.scan_config_applied";
    pub const TELEMETRY_SCAN_NOW: &str = "telemetry.scan_now";
    /// A customer's alert rules changed.
    pub const TELEMETRY_ALERT_RULES: &str = "telemetry.alert_rules";
    /// A diagnostic run by an agent: who, device, kind, parameters and the
    /// result (or the agent's refusal).
    pub const DIAG_RUN: &str = "diag.run";
    /// A diagnostic refused before reaching the agent (permission, rate).
    pub const DIAG_REFUSED: &str = "diag.refused";
    /// A directory user logged in through single sign-on (OpenID Connect).
    pub const SSO_LOGIN: &str = "sso.login";
    /// A single-sign-on log-in that was refused (state, provider, token or
    /// group mapping).
    pub const SSO_REFUSED: &str = "sso.refused";
    /// A raw TCP tunnel opened (who, device, port, client address, expiry).
    pub const TUNNEL_OPEN: &str = "tunnel.open";
    /// A tunnel request refused (permission, limits, relay-side policy).
    pub const TUNNEL_REFUSED: &str = "tunnel.refused";
    /// A connection to a tunnel's listener from another source address.
    pub const TUNNEL_SOURCE_REFUSED: &str = "tunnel.source_refused";
    /// One connection carried by a tunnel: bytes each way, duration.
    pub const TUNNEL_CONNECTION: &str = "tunnel.connection";
    /// A tunnel closed (expired, revoked, logout, shutdown).
    pub const TUNNEL_CLOSE: &str = "tunnel.close";
    /// One IPP request seen on its way to port 631 (operation, requested
    /// attributes; never document data).
    pub const IPP_OPERATION: &str = "ipp.operation";
    /// A log-in session, API token or pending single-sign-on log-in ended
    /// (its reason: logout, revoked, deactivated, locked ...).
    pub const GRANT_END: &str = "grant.end";
    /// A customer and all its data erased (agents, devices, readings,
    /// alerts); earlier audit records stay.
    pub const CUSTOMER_ERASE: &str = "customer.erase";
}

/// The fields a record is made of, before it is chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts: String,
    pub kind: String,
    /// Who: a user name, `agent:<id>`, `cli:<user>` or `relay`.
    pub actor: String,
    /// The agent concerned, if any.
    pub agent: Option<String>,
    /// Kind-specific details, JSON text exactly as stored.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

fn put(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

/// Hash of record `id` with contents `e`, chained to `prev_hash`.
pub fn record_hash(prev_hash: &str, id: i64, e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    put(&mut h, prev_hash.as_bytes());
    put(&mut h, &id.to_be_bytes());
    put(&mut h, e.ts.as_bytes());
    put(&mut h, e.kind.as_bytes());
    put(&mut h, e.actor.as_bytes());
    match &e.agent {
        Some(a) => {
            put(&mut h, b"1");
            put(&mut h, a.as_bytes());
        }
        None => put(&mut h, b"0"),
    }
    put(&mut h, e.detail.as_bytes());
    hex::encode(h.finalize())
}

/// Walks records in id order (ids start at 1 and have no gaps). Returns the
/// number of records checked, or the first record where the chain breaks.
pub fn verify_chain<I>(records: I) -> Result<u64, ProtoError>
where
    I: IntoIterator<Item = AuditRecord>,
{
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    for (expected_id, r) in (1i64..).zip(records) {
        if r.id != expected_id {
            return Err(ProtoError::ChainBroken {
                id: expected_id,
                reason: format!("record {expected_id} is missing (next present is {})", r.id),
            });
        }
        if r.prev_hash != prev {
            return Err(ProtoError::ChainBroken {
                id: r.id,
                reason: "its previous-hash does not match record before it (a record was inserted, removed or altered)".into(),
            });
        }
        let computed = record_hash(&prev, r.id, &r.entry);
        if computed != r.hash {
            return Err(ProtoError::ChainBroken {
                id: r.id,
                reason: "its contents do not match its hash (the record was edited)".into(),
            });
        }
        prev = r.hash;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let entry = AuditEntry {
                    ts: format!("2026-11-22T10:00:{id:02}Z"),
                    kind: kind::STREAM_OPEN.into(),
                    actor: "admin".into(),
                    agent: Some("agt_1".into()),
                    detail: format!(r#"{{"port":{id}}}"#),
                };
                let hash = record_hash(&prev, id, &entry);
                let r = AuditRecord {
                    id,
                    entry,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn broken_at(r: Result<u64, ProtoError>) -> i64 {
        match r {
            Err(ProtoError::ChainBroken { id, .. }) => id,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(chain(5)), Ok(5));
        assert_eq!(verify_chain(vec![]), Ok(0));
    }

    #[test]
    fn edit_insert_delete_are_named() {
        let mut c = chain(5);
        c[2].entry.actor = "mallory".into();
        assert_eq!(broken_at(verify_chain(c)), 3);

        // Edited and re-hashed: the next record's link breaks.
        let mut c = chain(5);
        c[2].entry.detail = "{}".into();
        c[2].hash = record_hash(&c[2].prev_hash, 3, &c[2].entry);
        assert_eq!(broken_at(verify_chain(c)), 4);

        let mut c = chain(5);
        c.remove(1);
        assert_eq!(broken_at(verify_chain(c)), 2);

        let mut c = chain(5);
        c.remove(0);
        assert_eq!(broken_at(verify_chain(c)), 1);

        // Inserted with renumbering: the inserted record (now 3) does not
        // link to record 2.
        let mut c = chain(5);
        let mut fake = c[1].clone();
        fake.entry.kind = "stream.close".into();
        c.insert(2, fake);
        for (i, r) in c.iter_mut().enumerate() {
            r.id = i as i64 + 1;
        }
        assert_eq!(broken_at(verify_chain(c)), 3);
    }

    #[test]
    fn fields_cannot_be_shifted() {
        let a = AuditEntry {
            ts: "t".into(),
            kind: "ab".into(),
            actor: "c".into(),
            agent: None,
            detail: "{}".into(),
        };
        let b = AuditEntry {
            kind: "a".into(),
            actor: "bc".into(),
            ..a.clone()
        };
        assert_ne!(record_hash(GENESIS, 1, &a), record_hash(GENESIS, 1, &b));
    }
}
