//! Signing and checking audit checkpoints ([`dwa_proto::audit::Checkpoint`])
//! with the relay's SSH host key, as SSHSIG: the same format as
//! `ssh-keygen -Y sign`, so anyone holding the relay's public key can check
//! one with OpenSSH alone (namespace [`CHECKPOINT_NAMESPACE`]).

use dwa_proto::audit::{signed_text, Checkpoint, CHECKPOINT_NAMESPACE};
use russh::keys::ssh_key::{HashAlg, LineEnding, SshSig};
use russh::keys::{PrivateKey, PublicKey};

/// The key checkpoints are signed with: the relay's SSH host key.
pub type SigningKey = PrivateKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint version {0} is not understood")]
    Version(u32),
    #[error("the checkpoint names relay key {0}, not this relay's")]
    OtherRelay(String),
    #[error("the checkpoint's signature is malformed")]
    Malformed,
    #[error("the checkpoint's signature does not verify with the relay's key")]
    BadSignature,
    #[error("signing the checkpoint failed: {0}")]
    Sign(String),
}

/// A checkpoint of record `id` (its `hash`) at `ts`, signed with `key`.
pub fn sign(key: &PrivateKey, id: i64, hash: &str, ts: i64) -> Result<Checkpoint, CheckpointError> {
    let relay = crate::ssh::fingerprint(key.public_key());
    let text = signed_text(&relay, id, hash, ts);
    let sig = key
        .sign(CHECKPOINT_NAMESPACE, HashAlg::Sha512, text.as_bytes())
        .and_then(|s| s.to_pem(LineEnding::LF))
        .map_err(|e| CheckpointError::Sign(e.to_string()))?;
    Ok(Checkpoint {
        v: 1,
        relay,
        id,
        hash: hash.to_string(),
        ts,
        sig,
    })
}

/// Checks that `cp` was signed by `key` (and names it).
pub fn verify(cp: &Checkpoint, key: &PublicKey) -> Result<(), CheckpointError> {
    if cp.v != 1 {
        return Err(CheckpointError::Version(cp.v));
    }
    if cp.relay != crate::ssh::fingerprint(key) {
        return Err(CheckpointError::OtherRelay(cp.relay.clone()));
    }
    let sig = SshSig::from_pem(cp.sig.as_bytes()).map_err(|_| CheckpointError::Malformed)?;
    key.verify(CHECKPOINT_NAMESPACE, &cp.message(), &sig)
        .map_err(|_| CheckpointError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let key = crate::ssh::generate_ed25519();
        let cp = sign(&key, 42, "ab12", 1_900_000_000).expect("sign");
        assert!(cp.sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        assert_eq!(verify(&cp, key.public_key()), Ok(()));

        let mut moved = cp.clone();
        moved.id = 41;
        assert_eq!(
            verify(&moved, key.public_key()),
            Err(CheckpointError::BadSignature)
        );
        let mut rehashed = cp.clone();
        rehashed.hash = "ab13".into();
        assert_eq!(
            verify(&rehashed, key.public_key()),
            Err(CheckpointError::BadSignature)
        );
        let other = crate::ssh::generate_ed25519();
        assert!(matches!(
            verify(&cp, other.public_key()),
            Err(CheckpointError::OtherRelay(_))
        ));
        let mut garbled = cp.clone();
        garbled.sig = "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n".into();
        assert_eq!(
            verify(&garbled, key.public_key()),
            Err(CheckpointError::Malformed)
        );
        let mut future = cp;
        future.v = 2;
        assert_eq!(
            verify(&future, key.public_key()),
            Err(CheckpointError::Version(2))
        );
    }
}
