//! Audit checkpoints: the chain's head (record id and hash) at a moment,
//! signed by the relay's SSH host key and kept outside the database — in
//! the relay's checkpoint file and in every connected agent's own audit
//! log. The chain alone cannot show that its newest records were deleted
//! (what remains is a valid chain); a checkpoint naming a record the
//! database no longer holds, or holds with another hash, does.
//!
//! Pure: the signature is made and checked in `dwa_link::checkpoint`; this
//! is the data, the exact signed text, and the comparison with a chain.

use serde::{Deserialize, Serialize};

use super::AuditRecord;

/// SSHSIG namespace of a checkpoint signature (`ssh-keygen -Y verify -n`).
pub const CHECKPOINT_NAMESPACE: &str = "dwa-audit-checkpoint@v1";

/// Longest line a checkpoint source may hold; longer ones are skipped.
pub const MAX_CHECKPOINT_LINE: usize = 8 * 1024;

/// The kind of an agent's local audit-log line that holds a checkpoint.
pub const CHECKPOINT_KIND: &str = "relay.checkpoint";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u32,
    /// The signing key's fingerprint (`SHA256:…`, as `ssh-keygen -l`).
    pub relay: String,
    /// The newest record at the time, and its hash.
    pub id: i64,
    pub hash: String,
    /// Unix seconds.
    pub ts: i64,
    /// The SSHSIG over [`Checkpoint::message`], PEM-armoured (the form
    /// `ssh-keygen -Y sign` writes).
    pub sig: String,
}

impl Checkpoint {
    /// The exact bytes signed: one field per line, fixed order.
    pub fn message(&self) -> Vec<u8> {
        signed_text(&self.relay, self.id, &self.hash, self.ts).into_bytes()
    }
}

/// The signed text of a checkpoint of record `id` with `hash`.
pub fn signed_text(relay: &str, id: i64, hash: &str, ts: i64) -> String {
    format!("dwa audit checkpoint v1\nrelay {relay}\nrecord {id}\nhash {hash}\ntime {ts}\n")
}

/// How a chain compares with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointMismatch {
    #[error("the log ends at record {last} but a checkpoint of {ts} names record {id}: records {first_missing}..={id} were deleted (truncated)", first_missing = last + 1)]
    Truncated { id: i64, last: i64, ts: i64 },
    #[error("record {id} does not have the hash a checkpoint of {ts} gives it: the log was rewritten from record {id} or before")]
    Rewritten { id: i64, ts: i64 },
}

/// Checks a (verified) chain against a checkpoint: the checkpoint's record
/// must be there with the checkpoint's hash.
pub fn check_against(cp: &Checkpoint, chain: &[AuditRecord]) -> Result<(), CheckpointMismatch> {
    let last = chain.last().map_or(0, |r| r.id);
    match chain.iter().find(|r| r.id == cp.id) {
        None => Err(CheckpointMismatch::Truncated {
            id: cp.id,
            last,
            ts: cp.ts,
        }),
        Some(r) if r.hash != cp.hash => Err(CheckpointMismatch::Rewritten {
            id: cp.id,
            ts: cp.ts,
        }),
        Some(_) => Ok(()),
    }
}

/// Every checkpoint in `text`: lines that are a checkpoint (the relay's
/// file) or an agent's audit-log line of kind [`CHECKPOINT_KIND`]. Other
/// and malformed lines are skipped; so are lines over
/// [`MAX_CHECKPOINT_LINE`].
pub fn checkpoints_in(text: &str) -> Vec<Checkpoint> {
    #[derive(Deserialize)]
    struct LogLine {
        kind: String,
        detail: serde_json::Value,
    }
    text.lines()
        .filter(|l| l.len() <= MAX_CHECKPOINT_LINE && !l.trim().is_empty())
        .filter_map(|l| {
            serde_json::from_str::<Checkpoint>(l).ok().or_else(|| {
                let line: LogLine = serde_json::from_str(l).ok()?;
                (line.kind == CHECKPOINT_KIND)
                    .then(|| serde_json::from_value(line.detail).ok())
                    .flatten()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{record_hash, AuditEntry, GENESIS};

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = vec![];
        for id in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |r| r.hash.clone());
            let entry = AuditEntry {
                ts: "t".into(),
                kind: "k".into(),
                actor: "a".into(),
                agent: None,
                detail: "{}".into(),
            };
            out.push(AuditRecord {
                id,
                hash: record_hash(&prev, id, &entry),
                entry,
                prev_hash: prev,
            });
        }
        out
    }

    fn cp(id: i64, hash: &str) -> Checkpoint {
        Checkpoint {
            v: 1,
            relay: "SHA256:x".into(),
            id,
            hash: hash.into(),
            ts: 7,
            sig: String::new(),
        }
    }

    #[test]
    fn a_checkpoint_finds_truncation_and_rewrites() {
        let c = chain(5);
        assert_eq!(check_against(&cp(5, &c[4].hash), &c), Ok(()));
        assert_eq!(check_against(&cp(3, &c[2].hash), &c), Ok(()));
        assert_eq!(
            check_against(&cp(5, &c[4].hash), &c[..3]),
            Err(CheckpointMismatch::Truncated {
                id: 5,
                last: 3,
                ts: 7
            })
        );
        assert!(matches!(
            check_against(&cp(4, "0f"), &c),
            Err(CheckpointMismatch::Rewritten { id: 4, .. })
        ));
        assert!(check_against(&cp(1, &c[0].hash), &[]).is_err());
    }

    #[test]
    fn checkpoints_are_read_from_the_relays_file_and_an_agents_log() {
        let a = cp(3, "aa");
        let b = cp(9, "bb");
        let text = format!(
            "{}\nnot json\n{{\"ts\":1,\"kind\":\"stream.open\",\"detail\":{{}}}}\n{{\"ts\":2,\"kind\":\"relay.checkpoint\",\"detail\":{}}}\n{}\n",
            serde_json::to_string(&a).unwrap_or_default(),
            serde_json::to_string(&b).unwrap_or_default(),
            "x".repeat(MAX_CHECKPOINT_LINE + 1),
        );
        assert_eq!(checkpoints_in(&text), vec![a, b]);
    }

    #[test]
    fn the_signed_text_is_fixed() {
        assert_eq!(
            signed_text("SHA256:k", 12, "ab", 99),
            "dwa audit checkpoint v1\nrelay SHA256:k\nrecord 12\nhash ab\ntime 99\n"
        );
    }
}
