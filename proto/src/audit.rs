//! Audit records, their typed events ([`Event`]) and their hash chain.
//!
//! Each record's hash covers its own fields and the previous record's hash,
//! so an edited, inserted or deleted record breaks the chain at a point that
//! [`verify_chain`] names. The hash input is length-prefixed field by field:
//! no field's content can be shifted into another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ProtoError;

mod checkpoint;
mod event;
pub use checkpoint::*;
pub use event::*;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
                    kind: "stream.open".into(),
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
