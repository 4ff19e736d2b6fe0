//! The log-in check: failure rates, lockout, inactivity, password, then
//! two-factor. Every attempt is audited with its outcome.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use dwa_proto::audit::{Event, TotpEvent};
use dwa_store::users::Failures;

use super::AccountError;
use crate::services::auth::{LoginOk, LoginRequest};
use crate::services::metrics::LoginFailure;
use crate::services::Services;

type Result<T, E = AccountError> = std::result::Result<T, E>;

/// The 423 answer's text (the issue fixes it).
pub fn locked_message(n: u32) -> String {
    format!("account locked after {n} failed log-ins; an administrator must unlock it")
}

async fn audit_attempt(svc: &Services, user: &str, event: Event) {
    if let Event::UserLoginFailed { reason, .. } = &event {
        svc.metrics.login_failed(failure_kind(reason));
    }
    svc.audit.record(event, &format!("user:{user}"), None).await;
}

/// The metric's label of a failure's audited reason (the reasons are this
/// file's own constants).
fn failure_kind(reason: &str) -> LoginFailure {
    match reason {
        "account locked" => LoginFailure::Locked,
        "account deactivated" => LoginFailure::Deactivated,
        "two-factor code required" => LoginFailure::TotpRequired,
        "two-factor code already used" => LoginFailure::TotpReused,
        "wrong two-factor code" => LoginFailure::TotpInvalid,
        _ => LoginFailure::Password,
    }
}

fn failed(peer: &str, reason: &str) -> Event {
    Event::UserLoginFailed {
        peer: peer.to_string(),
        reason: reason.to_string(),
    }
}

fn rate_limited(peer: &str, which: &str) -> Event {
    Event::UserLoginRateLimited {
        peer: peer.to_string(),
        limit: which.to_string(),
    }
}

/// Whether `role` must use two-factor under this svc's configuration.
pub fn totp_required(svc: &Services, role: dwa_policy::roles::Role) -> bool {
    svc.cfg()
        .accounts
        .require_totp
        .iter()
        .any(|r| r == role.as_str())
}

/// Checks the credentials; on success opens a log-in session.
pub async fn login(svc: &Services, req: &LoginRequest, peer: &str) -> Result<LoginOk> {
    let now = svc.time.unix();
    let name = req.username.trim().to_string();
    let account_key = name.to_lowercase();
    let ip = crate::services::refusals::source_of(peer);
    let gates = &svc.gates;
    let account_gate = (account_key.clone(), ip.unwrap_or(UNKNOWN_SOURCE));
    let limited = ip
        .and_then(|ip| gates.address.refused(&ip).map(|s| (s, "address")))
        .or_else(|| gates.account.refused(&account_gate).map(|s| (s, "account")));
    if let Some((retry_after, which)) = limited {
        // Counted here only: the notice `failure` writes when a failure
        // reaches the limit belongs to an attempt counted already.
        svc.metrics.login_failed(LoginFailure::RateLimited);
        audit_attempt(svc, &name, rate_limited(peer, which)).await;
        return Err(AccountError::RateLimited {
            msg: format!("too many failed log-ins for this {which}; retry later"),
            retry_after,
        });
    }

    let row = svc.store.login_row(&name).await?;
    let limit = svc.cfg().accounts.lockout_after;
    let known_id = row.as_ref().map(|r| r.id);

    // Verify against a real hash even for unknown users, and before the
    // lock is looked at, so neither the answer nor its timing tells which
    // user names exist or are locked.
    let stored = row
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| svc.dummy_hash.clone());
    let ok = password_matches(stored, req.password.clone()).await;
    let Some(r) = row.filter(|_| ok) else {
        let why = "wrong user name or password";
        return Err(failure(svc, &name, known_id, ip, peer, why).await);
    };
    let user_id = r.id;
    // Only the right password learns that the account is locked.
    if r.locked_at.is_some() {
        audit_attempt(svc, &name, failed(peer, "account locked")).await;
        return Err(AccountError::Locked(locked_message(limit)));
    }

    if !r.active {
        audit_attempt(svc, &name, failed(peer, "account deactivated")).await;
        return Err(AccountError::Refused(
            "this account is deactivated; an administrator must reactivate it".into(),
        ));
    }
    let inactive_after = svc.cfg().accounts.inactive_after;
    let last_active = r.last_active.unwrap_or(now);
    if unused_too_long(last_active, now, inactive_after) {
        super::inactivity::deactivate(svc, user_id, &name, last_active, "relay").await?;
        return Err(AccountError::Refused(format!(
            "this account was deactivated: unused for more than {} days; an administrator must reactivate it",
            inactive_after.as_secs() / 86_400
        )));
    }

    let role: dwa_policy::roles::Role = r
        .role
        .parse()
        .map_err(|e: String| AccountError::Invalid(format!("stored role: {e}")))?;
    let secret = r.totp_secret.clone();
    let mut restricted = false;
    match (&secret, req.totp.as_deref().map(str::trim)) {
        (Some(_), None | Some("")) => {
            audit_attempt(svc, &name, failed(peer, "two-factor code required")).await;
            return Err(AccountError::TwoFactor {
                code: "totp_required",
                msg: "this account uses two-factor: send the 6-digit code (or a recovery code) as \"totp\"".into(),
            });
        }
        (Some(secret), Some(code)) => {
            let last = r.totp_last_step;
            if super::totp::is_recovery_form(code) {
                let used = svc
                    .store
                    .use_recovery_code(
                        user_id,
                        &super::totp::hash_recovery(code),
                        &svc.time.rfc3339(),
                    )
                    .await?;
                if !used {
                    let f = Fail::new(&name, user_id, ip, peer);
                    return Err(two_factor_failure(svc, f, "totp_invalid").await);
                }
                let left = svc.store.recovery_codes_left(user_id).await?;
                svc.audit
                    .record(
                        Event::UserTotp(TotpEvent::RecoveryCodeUsed {
                            left,
                            peer: peer.to_string(),
                        }),
                        &format!("user:{name}"),
                        None,
                    )
                    .await;
            } else {
                let at = u64::try_from(now).unwrap_or(0);
                match super::totp::check(secret, code, last, at)? {
                    Some(Ok(step)) => {
                        // Compare-and-set: two log-ins racing with one code, one wins.
                        if !svc.store.use_totp_step(user_id, step).await? {
                            let f = Fail::new(&name, user_id, ip, peer);
                            return Err(two_factor_failure(svc, f, "totp_reused").await);
                        }
                    }
                    Some(Err(_)) => {
                        let f = Fail::new(&name, user_id, ip, peer);
                        return Err(two_factor_failure(svc, f, "totp_reused").await);
                    }
                    None => {
                        let f = Fail::new(&name, user_id, ip, peer);
                        return Err(two_factor_failure(svc, f, "totp_invalid").await);
                    }
                }
            }
        }
        (None, _) => restricted = totp_required(svc, role),
    }

    let ok = crate::services::auth::open_login(svc, user_id, restricted).await?;
    // From now on this address's failures count toward the lockout.
    if let Some(ip) = ip {
        svc.store
            .note_login_source(user_id, &source_key(ip), now)
            .await?;
    }
    let principal = &ok.principal;
    svc.audit
        .record(
            Event::UserLogin {
                peer: peer.to_string(),
                role: principal.role.as_str().to_string(),
                two_factor: secret.is_some(),
                restricted,
                password_change: principal.password_change,
            },
            &principal.actor(),
            None,
        )
        .await;
    Ok(ok)
}

/// Whether `password` matches the argon2id hash `stored` (off the async
/// workers: a verification takes tens of milliseconds).
pub async fn password_matches(stored: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Who failed a log-in, from where.
struct Fail<'a> {
    name: &'a str,
    user: Option<i64>,
    ip: Option<std::net::IpAddr>,
    peer: &'a str,
}

impl<'a> Fail<'a> {
    fn new(name: &'a str, user: i64, ip: Option<std::net::IpAddr>, peer: &'a str) -> Self {
        Self {
            name,
            user: Some(user),
            ip,
            peer,
        }
    }
}

async fn two_factor_failure(svc: &Services, f: Fail<'_>, code: &'static str) -> AccountError {
    let why = if code == "totp_reused" {
        "two-factor code already used"
    } else {
        "wrong two-factor code"
    };
    match failure(svc, f.name, f.user, f.ip, f.peer, why).await {
        AccountError::Unauthorized(_) => AccountError::TwoFactor {
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

/// The gate key of a log-in without a peer address (the CLI, tests).
const UNKNOWN_SOURCE: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// How a source address is kept in `login_sources`: IPv4-mapped IPv6 as
/// IPv4.
pub fn source_key(ip: std::net::IpAddr) -> String {
    dwa_policy::agent::normalize_addr(ip).to_string()
}

/// Counts a failure against the gates, and against the account's lockout
/// when it comes from an address the account logged in from (its owner's
/// own attempts); audits it. The answer is the same whether the account
/// exists, and whether this failure locked it.
async fn failure(
    svc: &Services,
    name: &str,
    user: Option<i64>,
    ip: Option<std::net::IpAddr>,
    peer: &str,
    reason: &str,
) -> AccountError {
    audit_attempt(svc, name, failed(peer, reason)).await;
    // The same query for a missing name (id 0 has no sources): equal work.
    let own = match ip {
        Some(ip) => svc
            .store
            .is_login_source(user.unwrap_or(0), &source_key(ip))
            .await
            .unwrap_or(false),
        None => false,
    };
    if own {
        count_own_failure(svc, name, peer).await;
    }
    let mut result = AccountError::Unauthorized("invalid username or password".into());
    let over = ip
        .and_then(|ip| svc.gates.address.fail(&ip).map(|s| (s, "address")))
        .into_iter()
        .chain(
            svc.gates
                .account
                .fail(&(name.to_lowercase(), ip.unwrap_or(UNKNOWN_SOURCE)))
                .map(|s| (s, "account")),
        )
        .next();
    if let Some((retry_after, which)) = over {
        audit_attempt(svc, name, rate_limited(peer, which)).await;
        result = AccountError::RateLimited {
            msg: format!("too many failed log-ins for this {which}; retry later"),
            retry_after,
        };
    }
    result
}

/// Counts a failure of the account's owner (a log-in from one of its own
/// addresses, or a wrong current password in its own session) toward the
/// lockout; at the limit the account locks and its grants end.
pub async fn count_own_failure(svc: &Services, name: &str, peer: &str) {
    let limit = svc.cfg().accounts.lockout_after;
    // Lockout: the count and the lock in one transaction.
    match count_failure(svc, name, limit).await {
        Ok(Some(f)) if f.locked_at.is_some() => {
            let n = f.failed_logins;
            // A locked account holds nothing any more.
            if let Err(e) = super::users::end_sessions_of(
                svc,
                f.id,
                "relay",
                crate::services::grants::EndReason::Locked,
            )
            .await
            {
                tracing::error!(error = %e, "ending a locked account's grants");
            }
            svc.audit
                .record(
                    Event::UserLocked {
                        failed_logins: n,
                        peer: peer.to_string(),
                    },
                    &format!("user:{name}"),
                    None,
                )
                .await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "counting a failed log-in"),
    }
}

/// Counts a failed log-in against the account named `name`, if there is
/// one: read and written in one transaction, so concurrent failures all
/// count. The account's count and lock after it.
async fn count_failure(svc: &Services, name: &str, limit: u32) -> Result<Option<Failures>> {
    let mut tx = svc.store.begin().await?;
    let Some(f) = tx.failures(name).await? else {
        return Ok(None);
    };
    let next = after_failure(&f, limit, &svc.time.rfc3339());
    tx.set_failures(&next).await?;
    tx.commit().await?;
    Ok(Some(next))
}

/// The lockout rule: one more failure; the account locks at `now` when the
/// count reaches `limit`, and a lock already set keeps its time.
pub fn after_failure(f: &Failures, limit: u32, now: &str) -> Failures {
    let failed_logins = f.failed_logins.saturating_add(1);
    let locked_at = match &f.locked_at {
        Some(at) => Some(at.clone()),
        None if failed_logins >= i64::from(limit) => Some(now.to_string()),
        None => None,
    };
    Failures {
        id: f.id,
        failed_logins,
        locked_at,
    }
}

/// Whether an account last used at `last_active` (unix seconds) is unused
/// for longer than `inactive_after` at `now`: the log-in deactivates it.
pub fn unused_too_long(last_active: i64, now: i64, inactive_after: Duration) -> bool {
    let after = i64::try_from(inactive_after.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(last_active) > after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(failed_logins: i64, locked_at: Option<&str>) -> Failures {
        Failures {
            id: 7,
            failed_logins,
            locked_at: locked_at.map(str::to_string),
        }
    }

    #[test]
    fn the_account_locks_when_the_failures_reach_the_limit() {
        let now = "2030-01-01T00:00:00.000Z";
        assert_eq!(after_failure(&f(0, None), 5, now), f(1, None));
        assert_eq!(after_failure(&f(3, None), 5, now), f(4, None));
        assert_eq!(after_failure(&f(4, None), 5, now), f(5, Some(now)));
        // Locked stays locked, at the time it locked.
        assert_eq!(
            after_failure(&f(5, Some("earlier")), 5, now),
            f(6, Some("earlier"))
        );
        // A limit of one locks at the first failure.
        assert_eq!(after_failure(&f(0, None), 1, now), f(1, Some(now)));
    }

    #[test]
    fn an_account_unused_beyond_the_limit_is_refused_at_log_in() {
        let day = Duration::from_secs(86_400);
        assert!(!unused_too_long(1_000, 1_000 + 86_400, day));
        assert!(unused_too_long(1_000, 1_001 + 86_400, day));
        // The clock behind the last use (a restored backup) is not unused.
        assert!(!unused_too_long(5_000, 1_000, day));
        assert!(!unused_too_long(i64::MIN, 0, Duration::from_secs(u64::MAX)));
    }
}
