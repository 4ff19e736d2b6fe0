//! The log-in check: failure rates, lockout, inactivity, password, then
//! two-factor. Every attempt is audited with its outcome.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use dwa_proto::audit::kind;
use serde_json::json;
use sqlx::Row;

use crate::app::Relay;
use crate::error::{RelayError, Result};
use crate::services::auth::{LoginOk, LoginRequest};
use crate::util::{now_rfc3339, unix_now};

/// The 423 answer's text (the issue fixes it).
pub fn locked_message(n: u32) -> String {
    format!("account locked after {n} failed log-ins; an administrator must unlock it")
}

fn peer_ip(peer: &str) -> Option<std::net::IpAddr> {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse())
        .ok()
}

async fn audit_attempt(relay: &Relay, kind: &str, user: &str, detail: serde_json::Value) {
    relay
        .audit
        .record(kind, &format!("user:{user}"), None, detail)
        .await;
}

/// Whether `role` must use two-factor under this relay's configuration.
pub fn totp_required(relay: &Relay, role: dwa_policy::roles::Role) -> bool {
    relay
        .cfg
        .accounts
        .require_totp
        .iter()
        .any(|r| r == role.as_str())
}

/// Checks the credentials; on success opens a log-in session.
pub async fn login(relay: &Relay, req: &LoginRequest, peer: &str) -> Result<LoginOk> {
    let now = unix_now();
    let name = req.username.trim().to_string();
    let account_key = name.to_lowercase();
    let ip = peer_ip(peer);
    let gates = &relay.gates;
    let limited = ip
        .and_then(|ip| gates.address.refused(&ip).map(|s| (s, "address")))
        .or_else(|| gates.account.refused(&account_key).map(|s| (s, "account")));
    if let Some((retry_after, which)) = limited {
        audit_attempt(
            relay,
            kind::USER_LOGIN_RATE_LIMITED,
            &name,
            json!({"peer": peer, "limit": which}),
        )
        .await;
        return Err(RelayError::RateLimited {
            msg: format!("too many failed log-ins for this {which}; retry later"),
            retry_after,
        });
    }

    let row = sqlx::query(
        "SELECT id, role, password_hash, totp_secret, totp_last_step, failed_logins, locked_at, active,
                COALESCE(last_active, CAST(strftime('%s', created_at) AS INTEGER)) AS last_active
         FROM users WHERE username = ?",
    )
    .bind(&name)
    .fetch_optional(&relay.db.pool)
    .await?;
    let limit = relay.cfg.accounts.lockout_after;
    if let Some(r) = &row {
        if r.get::<Option<String>, _>("locked_at").is_some() {
            audit_attempt(
                relay,
                kind::USER_LOGIN_FAILED,
                &name,
                json!({"peer": peer, "reason": "account locked"}),
            )
            .await;
            return Err(RelayError::Locked(locked_message(limit)));
        }
    }

    // Verify against a real hash even for unknown users, so the timing does
    // not tell which user names exist.
    let stored = row
        .as_ref()
        .map(|r| r.get::<String, _>("password_hash"))
        .unwrap_or_else(|| relay.dummy_hash.clone());
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    let Some(r) = row.filter(|_| ok) else {
        return Err(failure(relay, &name, ip, peer, "wrong user name or password").await);
    };
    let user_id: i64 = r.get("id");

    if r.get::<i64, _>("active") == 0 {
        audit_attempt(
            relay,
            kind::USER_LOGIN_FAILED,
            &name,
            json!({"peer": peer, "reason": "account deactivated"}),
        )
        .await;
        return Err(RelayError::Refused(
            "this account is deactivated; an administrator must reactivate it".into(),
        ));
    }
    let inactive_after = relay.cfg.accounts.inactive_after.as_secs() as i64;
    let last_active: i64 = r.try_get("last_active").unwrap_or(now);
    if now - last_active > inactive_after {
        super::inactivity::deactivate(relay, user_id, &name, last_active, "relay").await?;
        return Err(RelayError::Refused(format!(
            "this account was deactivated: unused for more than {} days; an administrator must reactivate it",
            inactive_after / 86_400
        )));
    }

    let role: dwa_policy::roles::Role = r
        .get::<String, _>("role")
        .parse()
        .map_err(|e: String| RelayError::Invalid(format!("stored role: {e}")))?;
    let secret: Option<String> = r.get("totp_secret");
    let mut restricted = false;
    match (&secret, req.totp.as_deref().map(str::trim)) {
        (Some(_), None | Some("")) => {
            audit_attempt(
                relay,
                kind::USER_LOGIN_FAILED,
                &name,
                json!({"peer": peer, "reason": "two-factor code required"}),
            )
            .await;
            return Err(RelayError::TwoFactor {
                code: "totp_required",
                msg: "this account uses two-factor: send the 6-digit code (or a recovery code) as \"totp\"".into(),
            });
        }
        (Some(secret), Some(code)) => {
            let last: Option<i64> = r.get("totp_last_step");
            if super::totp::is_recovery_form(code) {
                let used = sqlx::query(
                    "UPDATE recovery_codes SET used_at = ? WHERE user_id = ? AND code_hash = ? AND used_at IS NULL",
                )
                .bind(now_rfc3339())
                .bind(user_id)
                .bind(super::totp::hash_recovery(code))
                .execute(&relay.db.pool)
                .await?
                .rows_affected();
                if used == 0 {
                    return Err(two_factor_failure(relay, &name, ip, peer, "totp_invalid").await);
                }
                let left: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ? AND used_at IS NULL",
                )
                .bind(user_id)
                .fetch_one(&relay.db.pool)
                .await?;
                relay
                    .audit
                    .record(
                        kind::USER_TOTP,
                        &format!("user:{name}"),
                        None,
                        json!({"event": "recovery code used", "left": left, "peer": peer}),
                    )
                    .await;
            } else {
                match super::totp::check(secret, code, last, now as u64)? {
                    Some(Ok(step)) => {
                        // Compare-and-set: two log-ins racing with one code, one wins.
                        let set = sqlx::query(
                            "UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
                        )
                        .bind(step)
                        .bind(user_id)
                        .bind(step)
                        .execute(&relay.db.pool)
                        .await?
                        .rows_affected();
                        if set == 0 {
                            return Err(
                                two_factor_failure(relay, &name, ip, peer, "totp_reused").await
                            );
                        }
                    }
                    Some(Err(_)) => {
                        return Err(two_factor_failure(relay, &name, ip, peer, "totp_reused").await)
                    }
                    None => {
                        return Err(two_factor_failure(relay, &name, ip, peer, "totp_invalid").await)
                    }
                }
            }
        }
        (None, _) => restricted = totp_required(relay, role),
    }

    let ok = crate::services::auth::open_login(relay, user_id, restricted).await?;
    let principal = &ok.principal;
    relay
        .audit
        .record(
            kind::USER_LOGIN,
            &principal.actor(),
            None,
            json!({"peer": peer, "role": principal.role.as_str(), "two_factor": secret.is_some(),
                   "restricted": restricted}),
        )
        .await;
    Ok(ok)
}

async fn two_factor_failure(
    relay: &Relay,
    name: &str,
    ip: Option<std::net::IpAddr>,
    peer: &str,
    code: &'static str,
) -> RelayError {
    let why = if code == "totp_reused" {
        "two-factor code already used"
    } else {
        "wrong two-factor code"
    };
    match failure(relay, name, ip, peer, why).await {
        RelayError::Unauthorized(_) => RelayError::TwoFactor {
            code,
            msg: if code == "totp_reused" {
                "this two-factor code was already used; wait for the next one".into()
            } else {
                "wrong two-factor code".into()
            },
        },
        other => other,
    }
}

/// Counts a failure against the account (lockout) and the gates; audits it.
async fn failure(
    relay: &Relay,
    name: &str,
    ip: Option<std::net::IpAddr>,
    peer: &str,
    reason: &str,
) -> RelayError {
    let limit = relay.cfg.accounts.lockout_after;
    audit_attempt(
        relay,
        kind::USER_LOGIN_FAILED,
        name,
        json!({"peer": peer, "reason": reason}),
    )
    .await;
    // Lockout: only real accounts; the count and the lock in one statement.
    let locked = sqlx::query(
        "UPDATE users SET failed_logins = failed_logins + 1,
            locked_at = CASE WHEN failed_logins + 1 >= ? AND locked_at IS NULL THEN ? ELSE locked_at END
         WHERE username = ? RETURNING failed_logins, locked_at",
    )
    .bind(limit)
    .bind(now_rfc3339())
    .bind(name)
    .fetch_optional(&relay.db.pool)
    .await;
    let mut result = RelayError::Unauthorized("invalid username or password".into());
    match locked {
        Ok(Some(r)) if r.get::<Option<String>, _>("locked_at").is_some() => {
            let n: i64 = r.get("failed_logins");
            // A locked account holds nothing any more.
            if let Ok(Some(id)) = relay.store.user_id_by_name(name).await {
                if let Err(e) = super::users::end_sessions_of(
                    relay,
                    id,
                    "relay",
                    crate::services::grants::EndReason::Locked,
                )
                .await
                {
                    tracing::error!(error = %e, "ending a locked account's grants");
                }
            }
            relay
                .audit
                .record(
                    kind::USER_LOCKED,
                    &format!("user:{name}"),
                    None,
                    json!({"failed_logins": n, "peer": peer}),
                )
                .await;
            result = RelayError::Locked(locked_message(limit));
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "counting a failed log-in"),
    }
    let over = ip
        .and_then(|ip| relay.gates.address.fail(&ip).map(|s| (s, "address")))
        .into_iter()
        .chain(
            relay
                .gates
                .account
                .fail(&name.to_lowercase())
                .map(|s| (s, "account")),
        )
        .next();
    if let (Some((retry_after, which)), false) = (over, matches!(result, RelayError::Locked(_))) {
        audit_attempt(
            relay,
            kind::USER_LOGIN_RATE_LIMITED,
            name,
            json!({"peer": peer, "limit": which}),
        )
        .await;
        result = RelayError::RateLimited {
            msg: format!("too many failed log-ins for this {which}; retry later"),
            retry_after,
        };
    }
    result
}
