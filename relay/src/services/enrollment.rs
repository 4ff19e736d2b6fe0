//! Enrollment service: redeem a token, register the agent's key, answer with
//! what the agent must pin. Every outcome is audited.

use dwa_proto::audit::Event;
use dwa_proto::enroll::{secret_hash, EnrollRequest, EnrollResponse};

use dwa_store::enroll::TokenCheck;

use crate::services::error::{Class, Failure};
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token or request was refused (audited with the reason).
    #[error("{0}")]
    Refused(String),
    /// The relay's own TLS material cannot be read.
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
}

impl Failure for EnrollError {
    fn class(&self) -> Class {
        match self {
            EnrollError::Refused(_) => Class::Forbidden,
            EnrollError::Tls(_) => Class::Internal,
            EnrollError::Store(e) => e.class(),
            EnrollError::Audit(e) => e.class(),
        }
    }
}

/// A new enrollment token for customer `customer_id`: at most `uses` uses,
/// valid `ttl_secs`; it carries the relay certificate's fingerprint. Returns
/// the token text (shown once; only its hash is stored) and its expiry.
pub async fn issue_token(
    svc: &crate::services::Services,
    customer_id: i64,
    uses: u8,
    ttl_secs: i64,
    actor: &str,
) -> Result<(String, i64), EnrollError> {
    let (store, time) = (&svc.store, &svc.time);
    let fp: [u8; 32] = hex::decode(&svc.tls_fingerprint)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| EnrollError::Tls("bad certificate fingerprint".into()))?;
    let mut secret = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let token = dwa_proto::enroll::EnrollToken {
        secret,
        tls_fingerprint: fp,
    };
    let expires = time.unix() + ttl_secs;
    store
        .create_enroll_token(
            &token.secret_hash(),
            customer_id,
            i64::from(uses),
            expires,
            actor,
            &time.rfc3339(),
        )
        .await?;
    Ok((token.encode(), expires))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

pub async fn enroll(
    relay: &Services,
    req: EnrollRequest,
    peer: &str,
) -> Result<EnrollResponse, EnrollError> {
    let refuse = |reason: String| async {
        relay
            .audit
            .record(
                Event::EnrollRefused {
                    reason: reason.clone(),
                    hostname: req.hostname.clone(),
                },
                &format!("peer:{peer}"),
                None,
            )
            .await;
        EnrollError::Refused(reason)
    };
    use base64::Engine;
    let secret = match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(req.secret.trim()) {
        Ok(s) if s.len() == 16 => s,
        _ => return Err(refuse("malformed token secret".into()).await),
    };
    if !valid_hostname(&req.hostname) {
        return Err(refuse("invalid hostname".into()).await);
    }
    let key = match dwa_link::ssh::parse_public(&req.public_key) {
        Ok(k) if dwa_link::ssh::is_ed25519(&k) => k,
        Ok(_) => return Err(refuse("the agent key must be ed25519".into()).await),
        Err(e) => return Err(refuse(e).await),
    };
    let public = dwa_link::ssh::public_openssh(&key);
    let id = crate::util::random_id("agt_");
    let check = match relay
        .store
        .enroll_agent(
            &secret_hash(&secret),
            dwa_store::enroll::NewAgent {
                id: &id,
                public_key: &public,
                hostname: &req.hostname,
            },
            &relay.time.rfc3339(),
            relay.time.unix(),
        )
        .await
    {
        Ok(x) => x,
        Err(dwa_store::StoreError::Conflict(m)) => return Err(refuse(m).await),
        Err(e) => return Err(e.into()),
    };
    let agent = match check {
        TokenCheck::Ok(a) => a,
        TokenCheck::Unknown => return Err(refuse("unknown enrollment token".into()).await),
        TokenCheck::Expired => return Err(refuse("the enrollment token has expired".into()).await),
        TokenCheck::UsedUp { max_uses } => {
            return Err(refuse(format!(
                "the enrollment token was already used {max_uses} times (its limit)"
            ))
            .await)
        }
    };
    relay
        .audit
        .append(
            Event::EnrollOk {
                agent_name: agent.name.clone(),
                customer: agent.customer.clone(),
                key_fingerprint: dwa_link::ssh::fingerprint(&key),
                agent_version: req.agent_version.clone(),
            },
            &format!("peer:{peer}"),
            Some(&agent.id),
        )
        .await?;
    Ok(EnrollResponse {
        agent_id: agent.id,
        agent_name: agent.name,
        customer: agent.customer,
        ssh_host_key: relay.host_key_public.clone(),
        ssh_port: relay.ssh_port,
    })
}
