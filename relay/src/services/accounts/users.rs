//! Account services: two-factor enrollment for oneself, and the admin's
//! users, customers and enrollment tokens. The JSON API and the portal's
//! forms both call these; each checks the acting principal and audits.

use dwa_policy::roles::{Action, Role};
use dwa_proto::audit::{Event, TotpEvent, UserAdmin};
use dwa_store::customers::CustomerRow;
use dwa_store::users::{UserChange, UserRow};
use dwa_store::Store;
use serde::{Deserialize, Serialize};

use super::{totp, AccountError};
use crate::services::auth::Principal;
use crate::services::grants::{self, EndReason};
use crate::services::Services;
use crate::util::random_password;

type Result<T, E = AccountError> = std::result::Result<T, E>;

/// A new TOTP secret made active for `user_id` (init, `user add`, the
/// admin API's create): returns the otpauth URI, shown once.
pub async fn provision_totp(
    store: &Store,
    user_id: i64,
    username: &str,
    domain: &str,
) -> Result<String> {
    let secret = totp::new_secret();
    let uri = totp::otpauth_uri(&secret, username, domain)?;
    store.set_totp(user_id, &secret).await?;
    Ok(uri)
}

/// A pending two-factor secret: its otpauth URI, QR code and the secret.
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrollment {
    pub otpauth_uri: String,
    pub qr_svg: String,
    pub secret: String,
}

/// Two-factor made active, and the recovery codes (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnabled {
    pub enabled: bool,
    pub recovery_codes: Vec<String>,
}

fn no_user(id: i64) -> AccountError {
    AccountError::NotFound(format!("no user {id}"))
}

/// Starts two-factor enrollment for the caller's own account: a pending
/// secret, its otpauth URI and QR code. Refused if two-factor is already
/// active (an admin resets it first).
pub async fn begin_totp(svc: &Services, p: &Principal) -> Result<TotpEnrollment> {
    let s = svc
        .store
        .totp_secrets(p.user_id)
        .await?
        .ok_or_else(|| no_user(p.user_id))?;
    if s.secret.is_some() {
        return Err(AccountError::Conflict(
            "two-factor is already active on this account; an administrator can reset it".into(),
        ));
    }
    let secret = totp::new_secret();
    let uri = totp::otpauth_uri(&secret, &p.username, &svc.cfg().domain)?;
    svc.store.set_totp_pending(p.user_id, &secret).await?;
    svc.audit
        .record(
            Event::UserTotp(TotpEvent::EnrollmentStarted {}),
            &p.actor(),
            None,
        )
        .await;
    Ok(TotpEnrollment {
        qr_svg: totp::qr_svg(&uri)?,
        otpauth_uri: uri,
        secret,
    })
}

/// Confirms enrollment with a code from the app: two-factor becomes active,
/// the log-in is no longer restricted, and ten recovery codes are returned
/// (once; only their hashes are kept).
pub async fn confirm_totp(svc: &Services, p: &Principal, code: &str) -> Result<TotpEnabled> {
    let pending = svc
        .store
        .totp_secrets(p.user_id)
        .await?
        .ok_or_else(|| no_user(p.user_id))?
        .pending
        .ok_or_else(|| {
            AccountError::Conflict("no enrollment in progress: POST /api/v1/me/totp first".into())
        })?;
    let now = u64::try_from(svc.time.unix()).unwrap_or(0);
    let step = match totp::check(&pending, code, None, now)? {
        Some(Ok(step)) => step,
        _ => {
            return Err(AccountError::TwoFactor {
                code: "totp_invalid",
                msg: "wrong two-factor code; check the app's clock and try the current code".into(),
            })
        }
    };
    let codes = totp::recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|(_, h)| h.clone()).collect();
    svc.store.confirm_totp(p.user_id, step, &hashes).await?;
    if let crate::services::auth::Via::Session { grant, .. } = &p.via {
        svc.store.unrestrict_grant(*grant).await?;
    }
    svc.audit
        .record(Event::UserTotp(TotpEvent::Enrolled {}), &p.actor(), None)
        .await;
    Ok(TotpEnabled {
        enabled: true,
        recovery_codes: codes.into_iter().map(|(c, _)| c).collect(),
    })
}

async fn admin_audit(svc: &Services, p: &Principal, change: UserAdmin) {
    svc.audit
        .record(Event::UserAdmin(change), &p.actor(), None)
        .await;
}

/// A user as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub customers: Vec<i64>,
    pub active: bool,
    pub locked: bool,
    pub locked_at: Option<String>,
    pub failed_logins: i64,
    pub totp: bool,
    /// The password is an administrator's one-time password, not yet
    /// replaced.
    pub password_change_required: bool,
    pub created_at: String,
    pub last_login: Option<String>,
    pub deactivated_at: Option<String>,
}

impl User {
    fn from_row(r: UserRow, customers: Vec<i64>) -> Self {
        Self {
            id: r.id,
            username: r.username,
            role: r.role,
            customers,
            active: r.active,
            locked: r.locked_at.is_some(),
            locked_at: r.locked_at,
            failed_logins: r.failed_logins,
            totp: r.totp,
            password_change_required: r.password_change_required,
            created_at: r.created_at,
            last_login: r.last_login,
            deactivated_at: r.deactivated_at,
        }
    }
}

pub async fn list_users(svc: &Services, p: &Principal) -> Result<Vec<User>> {
    p.require(Action::Administer, None)?;
    let mut out = vec![];
    for r in svc.store.users().await? {
        let customers = svc.store.user_customers(r.id).await?;
        out.push(User::from_row(r, customers));
    }
    Ok(out)
}

async fn user(svc: &Services, id: i64) -> Result<User> {
    let r = svc.store.user(id).await?.ok_or_else(|| no_user(id))?;
    Ok(User::from_row(r, svc.store.user_customers(id).await?))
}

pub async fn get_user(svc: &Services, p: &Principal, id: i64) -> Result<User> {
    p.require(Action::Administer, None)?;
    user(svc, id).await
}

/// A user of the portal's list, with its customers' names.
pub type UserListEntry = dwa_store::users::UserListRow;

/// Every user with its customers' names, by user name (the portal's list).
pub async fn user_list(svc: &Services, p: &Principal) -> Result<Vec<UserListEntry>> {
    p.require(Action::Administer, None)?;
    Ok(svc.store.user_list().await?)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// admin, technician, viewer or customer.
    pub role: String,
    /// Customer ids (a customer user: exactly one).
    #[serde(default)]
    pub customers: Vec<i64>,
}

/// A new user and its one-time password (shown once). The first log-in
/// with it may only choose the user's own password; a role that requires
/// two-factor then enrolls it, so nobody but the user learns either
/// secret.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    pub password: String,
}

fn check_role_customers(role: Role, customers: &[i64]) -> Result<()> {
    if role == Role::Customer && customers.len() != 1 {
        return Err(AccountError::Invalid(
            "a customer user belongs to exactly one customer".into(),
        ));
    }
    Ok(())
}

async fn check_customers_exist(svc: &Services, customers: &[i64]) -> Result<()> {
    for c in customers {
        if svc.store.customer(*c).await?.is_none() {
            return Err(AccountError::Invalid(format!("no customer {c}")));
        }
    }
    Ok(())
}

fn parse_role(r: &str) -> Result<Role> {
    r.parse().map_err(AccountError::Invalid)
}

/// Hashes a password (argon2id, a fresh salt).
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("hashing password: {e}")))
}

/// Creates a user with a one-time password: its first log-in must choose
/// another, and two-factor is the user's own to enroll.
pub async fn create_user(svc: &Services, p: &Principal, req: &NewUser) -> Result<CreatedUser> {
    p.require(Action::Administer, None)?;
    let name = req.username.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(
            "username must be 1..=64 characters".into(),
        ));
    }
    let role = parse_role(&req.role)?;
    check_role_customers(role, &req.customers)?;
    check_customers_exist(svc, &req.customers).await?;
    let password = random_password();
    let hash = hash_password(&password)?;
    let id = svc
        .store
        .add_user(&dwa_store::users::NewUser {
            username: name,
            password_hash: &hash,
            role: role.as_str(),
            customers: &req.customers,
            created_at: &svc.time.rfc3339(),
            last_active: Some(svc.time.unix()),
            password_change_required: true,
        })
        .await?;
    admin_audit(
        svc,
        p,
        UserAdmin::UserCreate {
            user: name.to_string(),
            id,
            role: role.as_str().to_string(),
            customers: req.customers.clone(),
            totp: false,
        },
    )
    .await;
    let user = get_user(svc, p, id).await?;
    Ok(CreatedUser { user, password })
}

/// A password a user may choose: 12..=1024 characters, not the current
/// one, not the user name.
pub fn check_new_password(new: &str, current: &str, username: &str) -> Result<()> {
    let n = new.chars().count();
    let why = if n < MIN_PASSWORD {
        format!("the new password must have at least {MIN_PASSWORD} characters")
    } else if n > MAX_PASSWORD {
        format!("the new password must have at most {MAX_PASSWORD} characters")
    } else if new == current {
        "the new password must differ from the current one".into()
    } else if new.trim().eq_ignore_ascii_case(username.trim()) {
        "the new password must not be the user name".into()
    } else {
        return Ok(());
    };
    Err(AccountError::Invalid(why))
}

pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 1024;

/// A password change: the current password and the new one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// What a password change did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    pub changed: bool,
    /// Grants ended: the user's other log-ins, API tokens and what they
    /// opened.
    pub grants_ended: u64,
    /// Two-factor is still to enroll before the log-in may do more.
    pub totp_enrollment_required: bool,
}

/// Changes the caller's own password from a log-in session: the current
/// password is required (a wrong one counts toward the lockout, as the
/// account's own failed log-in would), and every other grant of the user
/// ends.
pub async fn change_password(
    svc: &Services,
    p: &Principal,
    req: &PasswordChange,
    peer: &str,
) -> Result<PasswordChanged> {
    let crate::services::auth::Via::Session { grant, .. } = &p.via else {
        return Err(AccountError::Invalid(
            "a password is changed from a log-in session, not with an API token".into(),
        ));
    };
    let grant = *grant;
    let fail = |reason: &str| Event::UserPasswordChangeFailed {
        reason: reason.to_string(),
    };
    let stored = svc
        .store
        .password_hash(p.user_id)
        .await?
        .ok_or_else(|| no_user(p.user_id))?;
    if !super::login::password_matches(stored, req.current_password.clone()).await {
        svc.audit
            .record(fail("wrong current password"), &p.actor(), None)
            .await;
        super::login::count_own_failure(svc, &p.username, peer).await;
        return Err(AccountError::Unauthorized(
            "the current password is wrong".into(),
        ));
    }
    if let Err(e) = check_new_password(&req.new_password, &req.current_password, &p.username) {
        svc.audit
            .record(fail(&e.to_string()), &p.actor(), None)
            .await;
        return Err(e);
    }
    let hash = hash_password(&req.new_password)?;
    svc.store.set_password(p.user_id, &hash, false).await?;
    let ended = grants::end(
        svc,
        dwa_store::grants::Selector::UserExcept(p.user_id, grant),
        EndReason::PasswordChanged,
        &p.actor(),
    )
    .await?;
    let grants_ended = u64::try_from(ended.len()).unwrap_or(u64::MAX);
    svc.audit
        .record(
            Event::UserPasswordChanged {
                was_one_time: p.password_change,
                grants_ended,
            },
            &p.actor(),
            None,
        )
        .await;
    Ok(PasswordChanged {
        changed: true,
        grants_ended,
        totp_enrollment_required: p.restricted,
    })
}

/// Issues a new one-time password for user `id` (forgotten password): the
/// user's log-ins and API tokens end, and the next log-in must choose a
/// new password. Shown once to the administrator.
pub async fn reset_password(svc: &Services, p: &Principal, id: i64) -> Result<CreatedUser> {
    p.require(Action::Administer, None)?;
    let v = user(svc, id).await?;
    if id == p.user_id {
        return Err(AccountError::Invalid(
            "change your own password with POST /api/v1/me/password".into(),
        ));
    }
    let password = issue_one_time_password(svc, id).await?;
    end_sessions_of(svc, id, &p.actor(), EndReason::PasswordChanged).await?;
    admin_audit(
        svc,
        p,
        UserAdmin::UserResetPassword {
            id,
            user: v.username.clone(),
        },
    )
    .await;
    Ok(CreatedUser {
        user: user(svc, id).await?,
        password,
    })
}

/// A fresh one-time password stored (hashed) for `id`.
async fn issue_one_time_password(svc: &Services, id: i64) -> Result<String> {
    let password = random_password();
    svc.store
        .set_password(id, &hash_password(&password)?, true)
        .await?;
    Ok(password)
}

/// [`reset_password`] for the CLI on the relay host (by name, as `actor`).
pub async fn reset_password_named(svc: &Services, actor: &str, username: &str) -> Result<String> {
    let id = svc
        .store
        .user_id_by_name(username)
        .await?
        .ok_or_else(|| AccountError::NotFound(format!("no user {username:?}")))?;
    let password = issue_one_time_password(svc, id).await?;
    end_sessions_of(svc, id, actor, EndReason::PasswordChanged).await?;
    svc.audit
        .append(
            Event::UserAdmin(UserAdmin::UserResetPassword {
                id,
                user: username.to_string(),
            }),
            actor,
            None,
        )
        .await?;
    Ok(password)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<String>,
    /// Replaces the user's customers (ids).
    #[serde(default)]
    pub customers: Option<Vec<i64>>,
    /// false deactivates (ends the user's sessions); true reactivates.
    #[serde(default)]
    pub active: Option<bool>,
}

/// Ends every grant of `user_id` (log-ins, tokens, web sessions, tunnels):
/// the authority they were issued under is gone.
pub async fn end_sessions_of(
    svc: &Services,
    user_id: i64,
    by: &str,
    reason: EndReason,
) -> Result<()> {
    grants::end(svc, dwa_store::grants::Selector::User(user_id), reason, by).await?;
    Ok(())
}

/// The authority a change takes away, if any: deactivation, a role
/// change, or a customer taken away (adding one takes nothing).
pub fn lost_authority(
    old_role: &str,
    old_customers: &[i64],
    new_role: Role,
    new_customers: &[i64],
    deactivated: bool,
) -> Option<EndReason> {
    if deactivated {
        Some(EndReason::Deactivated)
    } else if new_role.as_str() != old_role {
        Some(EndReason::RoleChanged)
    } else if old_customers.iter().any(|c| !new_customers.contains(c)) {
        Some(EndReason::CustomersChanged)
    } else {
        None
    }
}

pub async fn update_user(
    svc: &Services,
    p: &Principal,
    id: i64,
    patch: &UserPatch,
) -> Result<User> {
    p.require(Action::Administer, None)?;
    let current = user(svc, id).await?;
    let role = parse_role(patch.role.as_deref().unwrap_or(&current.role))?;
    let customers = match &patch.customers {
        Some(c) => c.clone(),
        None => current.customers.clone(),
    };
    check_role_customers(role, &customers)?;
    check_customers_exist(svc, &customers).await?;
    if id == p.user_id
        && (patch.active == Some(false) || (patch.role.is_some() && role != Role::Admin))
    {
        return Err(AccountError::Invalid(
            "an admin cannot deactivate or demote their own account".into(),
        ));
    }
    svc.store
        .change_user(
            id,
            &UserChange {
                role: role.as_str(),
                customers: patch.customers.as_deref(),
                active: patch.active,
                now: &svc.time.rfc3339(),
                now_unix: svc.time.unix(),
            },
        )
        .await?;
    let lost = lost_authority(
        &current.role,
        &current.customers,
        role,
        &customers,
        patch.active == Some(false),
    );
    if let Some(reason) = lost {
        end_sessions_of(svc, id, &p.actor(), reason).await?;
    }
    admin_audit(
        svc,
        p,
        UserAdmin::UserUpdate {
            id,
            user: current.username.clone(),
            role: patch.role.clone(),
            customers: patch.customers.clone(),
            active: patch.active,
        },
    )
    .await;
    user(svc, id).await
}

/// Clears a lockout (and the failure count).
pub async fn unlock_user(svc: &Services, p: &Principal, id: i64) -> Result<User> {
    p.require(Action::Administer, None)?;
    let v = user(svc, id).await?;
    svc.store.unlock_user(id).await?;
    admin_audit(
        svc,
        p,
        UserAdmin::UserUnlock {
            user: v.username.clone(),
            id: Some(id),
            was_locked: Some(v.locked),
        },
    )
    .await;
    user(svc, id).await
}

/// Clears the lockout of the user named `username` (the CLI, acting as
/// `actor` on the relay host); audited.
pub async fn unlock_user_named(svc: &Services, actor: &str, username: &str) -> Result<()> {
    if !svc.store.unlock_user_named(username).await? {
        return Err(AccountError::NotFound(format!("no user {username:?}")));
    }
    svc.audit
        .append(
            Event::UserAdmin(UserAdmin::UserUnlock {
                user: username.to_string(),
                id: None,
                was_locked: None,
            }),
            actor,
            None,
        )
        .await?;
    Ok(())
}

/// Removes a user's two-factor (lost phone): their sessions end; at the
/// next log-in a role that requires it must enroll again.
pub async fn reset_totp(svc: &Services, p: &Principal, id: i64) -> Result<User> {
    p.require(Action::Administer, None)?;
    let v = user(svc, id).await?;
    svc.store.reset_totp(id).await?;
    end_sessions_of(svc, id, &p.actor(), EndReason::TwoFactorReset).await?;
    admin_audit(
        svc,
        p,
        UserAdmin::UserResetTotp {
            id,
            user: v.username.clone(),
        },
    )
    .await;
    user(svc, id).await
}

pub async fn list_customers(svc: &Services, p: &Principal) -> Result<Vec<CustomerRow>> {
    p.require(Action::Administer, None)?;
    Ok(svc.store.customers().await?)
}

/// A customer just created.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedCustomer {
    pub id: i64,
    pub name: String,
}

pub async fn create_customer(svc: &Services, p: &Principal, name: &str) -> Result<CreatedCustomer> {
    p.require(Action::Administer, None)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(
            "customer name must be 1..=100 characters".into(),
        ));
    }
    let id = svc.store.add_customer(name, &svc.time.rfc3339()).await?;
    admin_audit(
        svc,
        p,
        UserAdmin::CustomerCreate {
            id,
            customer: name.to_string(),
        },
    )
    .await;
    Ok(CreatedCustomer {
        id,
        name: name.to_string(),
    })
}

/// An enrollment token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrollmentToken {
    pub id: i64,
    pub customer: String,
    pub customer_id: i64,
    pub uses: i64,
    pub max_uses: i64,
    pub expires_at: i64,
    /// Not expired at the time of the listing, and uses left.
    pub usable: bool,
    pub created_at: String,
    pub created_by: String,
}

/// Whether a token can still be redeemed at `now`.
pub fn token_usable(expires_at: i64, uses: i64, max_uses: i64, now: i64) -> bool {
    expires_at > now && uses < max_uses
}

pub async fn list_enrollment_tokens(svc: &Services, p: &Principal) -> Result<Vec<EnrollmentToken>> {
    p.require(Action::Administer, None)?;
    let now = svc.time.unix();
    Ok(svc
        .store
        .enroll_tokens()
        .await?
        .into_iter()
        .map(|t| EnrollmentToken {
            usable: token_usable(t.expires_at, t.uses, t.max_uses, now),
            id: t.id,
            customer: t.customer,
            customer_id: t.customer_id,
            uses: t.uses,
            max_uses: t.max_uses,
            expires_at: t.expires_at,
            created_at: t.created_at,
            created_by: t.created_by,
        })
        .collect())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    pub customer_id: i64,
    /// 1..=5 (default 5).
    #[serde(default)]
    pub uses: Option<u8>,
    /// Seconds (default 86400; at most 30 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// A new enrollment token, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedEnrollmentToken {
    pub token: String,
    pub customer_id: i64,
    pub uses: u8,
    pub expires_at: i64,
}

/// A new enrollment token (the same as `dwa-relay token create`), shown once.
pub async fn create_enrollment_token(
    svc: &Services,
    p: &Principal,
    req: &NewEnrollmentToken,
) -> Result<CreatedEnrollmentToken> {
    p.require(Action::Administer, None)?;
    let uses = req.uses.unwrap_or(5);
    if !(1..=5).contains(&uses) {
        return Err(AccountError::Invalid("uses must be 1..=5".into()));
    }
    let ttl = req.ttl_secs.unwrap_or(86_400);
    if !(1..=30 * 86_400).contains(&ttl) {
        return Err(AccountError::Invalid(
            "ttl_secs must be 1..=2592000 (30 days)".into(),
        ));
    }
    check_customers_exist(svc, &[req.customer_id]).await?;
    let (token, expires) =
        crate::services::enrollment::issue_token(svc, req.customer_id, uses, ttl, &p.actor())
            .await?;
    admin_audit(
        svc,
        p,
        UserAdmin::EnrollmentTokenCreate {
            customer_id: req.customer_id,
            uses,
            expires_at: expires,
        },
    )
    .await;
    Ok(CreatedEnrollmentToken {
        token,
        customer_id: req.customer_id,
        uses,
        expires_at: expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loss_of_authority_ends_grants() {
        let r = |s: &str| s.parse::<Role>().expect("role");
        assert_eq!(
            lost_authority("viewer", &[1], r("viewer"), &[1], true),
            Some(EndReason::Deactivated)
        );
        assert_eq!(
            lost_authority("viewer", &[1], r("technician"), &[1], false),
            Some(EndReason::RoleChanged)
        );
        assert_eq!(
            lost_authority("viewer", &[1, 2], r("viewer"), &[2, 3], false),
            Some(EndReason::CustomersChanged)
        );
        // Adding a customer takes nothing away.
        assert_eq!(
            lost_authority("viewer", &[1], r("viewer"), &[1, 2], false),
            None
        );
    }

    #[test]
    fn a_new_password_is_long_new_and_not_the_name() {
        let ok = |n: &str| check_new_password(n, "old one-time pw", "ann").is_ok();
        assert!(ok("correct horse battery"));
        assert!(ok(&"é".repeat(MIN_PASSWORD)), "characters, not bytes");
        assert!(!ok(&"x".repeat(MIN_PASSWORD - 1)));
        assert!(!ok(&"x".repeat(MAX_PASSWORD + 1)));
        assert!(!ok("old one-time pw"));
        assert!(check_new_password("Ann-the-user", "x", "ann-the-user").is_err());
    }

    #[test]
    fn a_token_is_usable_until_it_expires_or_is_used_up() {
        assert!(token_usable(100, 0, 5, 99));
        assert!(!token_usable(100, 0, 5, 100));
        assert!(!token_usable(100, 5, 5, 0));
    }
}
