//! Account services: two-factor enrollment for oneself, and the admin's
//! users, customers and enrollment tokens. The JSON API and the portal's
//! forms both call these; each checks the acting principal and audits.

use dwa_policy::roles::{Action, Role};
use dwa_proto::audit::kind;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::totp;
use crate::app::Relay;
use crate::error::{RelayError, Result};
use crate::services::auth::Principal;
use crate::util::{now_rfc3339, random_password, unix_now};

/// A new TOTP secret made active for `user_id` (init, `user add`, the
/// admin API's create): returns the otpauth URI, shown once.
pub async fn provision_totp(
    db: &crate::db::Db,
    user_id: i64,
    username: &str,
    domain: &str,
) -> Result<String> {
    let secret = totp::new_secret();
    let uri = totp::otpauth_uri(&secret, username, domain)?;
    sqlx::query(
        "UPDATE users SET totp_secret = ?, totp_pending = NULL, totp_last_step = NULL WHERE id = ?",
    )
    .bind(&secret)
    .bind(user_id)
    .execute(&db.pool)
    .await?;
    Ok(uri)
}

/// Starts two-factor enrollment for the caller's own account: a pending
/// secret, its otpauth URI and QR code. Refused if two-factor is already
/// active (an admin resets it first).
pub async fn begin_totp(relay: &Relay, p: &Principal) -> Result<Value> {
    let active: Option<String> = sqlx::query_scalar("SELECT totp_secret FROM users WHERE id = ?")
        .bind(p.user_id)
        .fetch_one(&relay.db.pool)
        .await?;
    if active.is_some() {
        return Err(RelayError::Conflict(
            "two-factor is already active on this account; an administrator can reset it".into(),
        ));
    }
    let secret = totp::new_secret();
    let uri = totp::otpauth_uri(&secret, &p.username, &relay.cfg.domain)?;
    sqlx::query("UPDATE users SET totp_pending = ? WHERE id = ?")
        .bind(&secret)
        .bind(p.user_id)
        .execute(&relay.db.pool)
        .await?;
    relay
        .audit
        .record(
            kind::USER_TOTP,
            &p.actor(),
            None,
            json!({"event": "enrollment started"}),
        )
        .await;
    Ok(json!({"otpauth_uri": uri, "qr_svg": totp::qr_svg(&uri)?, "secret": secret}))
}

/// Confirms enrollment with a code from the app: two-factor becomes active,
/// the log-in is no longer restricted, and ten recovery codes are returned
/// (once; only their hashes are kept).
pub async fn confirm_totp(relay: &Relay, p: &Principal, code: &str) -> Result<Value> {
    let pending: Option<String> = sqlx::query_scalar("SELECT totp_pending FROM users WHERE id = ?")
        .bind(p.user_id)
        .fetch_one(&relay.db.pool)
        .await?;
    let pending = pending.ok_or_else(|| {
        RelayError::Conflict("no enrollment in progress: POST /api/v1/me/totp first".into())
    })?;
    let step = match totp::check(&pending, code, None, unix_now() as u64)? {
        Some(Ok(step)) => step,
        _ => {
            return Err(RelayError::TwoFactor {
                code: "totp_invalid",
                msg: "wrong two-factor code; check the app's clock and try the current code".into(),
            })
        }
    };
    let codes = totp::recovery_codes();
    let mut tx = relay.db.pool.begin().await?;
    sqlx::query(
        "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = ? WHERE id = ?",
    )
    .bind(step)
    .bind(p.user_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = ?")
        .bind(p.user_id)
        .execute(&mut *tx)
        .await?;
    for (_, hash) in &codes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)")
            .bind(p.user_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if let crate::services::auth::Via::Session { grant, .. } = &p.via {
        relay.store.unrestrict_grant(*grant).await?;
    }
    relay
        .audit
        .record(
            kind::USER_TOTP,
            &p.actor(),
            None,
            json!({"event": "enrolled"}),
        )
        .await;
    let shown: Vec<&str> = codes.iter().map(|(c, _)| c.as_str()).collect();
    Ok(json!({"enabled": true, "recovery_codes": shown}))
}

async fn admin_audit(relay: &Relay, p: &Principal, detail: Value) {
    relay
        .audit
        .record(kind::USER_ADMIN, &p.actor(), None, detail)
        .await;
}

fn user_view(r: &sqlx::sqlite::SqliteRow, customers: Vec<i64>) -> Value {
    json!({
        "id": r.get::<i64, _>("id"),
        "username": r.get::<String, _>("username"),
        "role": r.get::<String, _>("role"),
        "customers": customers,
        "active": r.get::<i64, _>("active") != 0,
        "locked": r.get::<Option<String>, _>("locked_at").is_some(),
        "locked_at": r.get::<Option<String>, _>("locked_at"),
        "failed_logins": r.get::<i64, _>("failed_logins"),
        "totp": r.get::<Option<String>, _>("totp_secret").is_some(),
        "created_at": r.get::<String, _>("created_at"),
        "last_login": r.get::<Option<String>, _>("last_login"),
        "deactivated_at": r.get::<Option<String>, _>("deactivated_at"),
    })
}

const USER_COLUMNS: &str = "id, username, role, active, locked_at, failed_logins, totp_secret, created_at, last_login, deactivated_at";

async fn customers_of(relay: &Relay, id: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT customer_id FROM user_customers WHERE user_id = ? ORDER BY customer_id",
    )
    .bind(id)
    .fetch_all(&relay.db.pool)
    .await?)
}

pub async fn list_users(relay: &Relay, p: &Principal) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
        .fetch_all(&relay.db.pool)
        .await?;
    let mut out = vec![];
    for r in &rows {
        out.push(user_view(r, customers_of(relay, r.get("id")).await?));
    }
    Ok(Value::Array(out))
}

pub async fn get_user(relay: &Relay, p: &Principal, id: i64) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let r = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
        .bind(id)
        .fetch_optional(&relay.db.pool)
        .await?
        .ok_or_else(|| RelayError::NotFound(format!("no user {id}")))?;
    Ok(user_view(&r, customers_of(relay, id).await?))
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

fn check_role_customers(role: Role, customers: &[i64]) -> Result<()> {
    if role == Role::Customer && customers.len() != 1 {
        return Err(RelayError::Invalid(
            "a customer user belongs to exactly one customer".into(),
        ));
    }
    Ok(())
}

async fn check_customers_exist(relay: &Relay, customers: &[i64]) -> Result<()> {
    for c in customers {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE id = ?")
            .bind(c)
            .fetch_one(&relay.db.pool)
            .await?;
        if n == 0 {
            return Err(RelayError::Invalid(format!("no customer {c}")));
        }
    }
    Ok(())
}

/// Creates a user with a one-time password (and, for roles that require
/// it, an active TOTP secret whose URI is shown once).
pub async fn create_user(relay: &Relay, p: &Principal, req: &NewUser) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let name = req.username.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(RelayError::Invalid(
            "username must be 1..=64 characters".into(),
        ));
    }
    let role: Role = req.role.parse().map_err(RelayError::Invalid)?;
    check_role_customers(role, &req.customers)?;
    check_customers_exist(relay, &req.customers).await?;
    let password = random_password();
    let hash = crate::init::hash_password(&password)?;
    let mut tx = relay.db.pool.begin().await?;
    let r = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at, last_active) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(name)
    .bind(&hash)
    .bind(role.as_str())
    .bind(now_rfc3339())
    .bind(unix_now())
    .execute(&mut *tx)
    .await;
    let id = match r {
        Ok(r) => r.last_insert_rowid(),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(RelayError::Conflict(format!(
                "user {name:?} already exists"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    for c in &req.customers {
        sqlx::query("INSERT OR IGNORE INTO user_customers (user_id, customer_id) VALUES (?, ?)")
            .bind(id)
            .bind(c)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let totp_uri = if super::login::totp_required(relay, role) {
        Some(provision_totp(&relay.db, id, name, &relay.cfg.domain).await?)
    } else {
        None
    };
    admin_audit(
        relay,
        p,
        json!({"action": "user create", "user": name, "id": id, "role": role.as_str(),
               "customers": req.customers, "totp": totp_uri.is_some()}),
    )
    .await;
    let mut v = get_user(relay, p, id).await?;
    v["password"] = json!(password);
    if let Some(u) = totp_uri {
        v["totp_qr_svg"] = json!(totp::qr_svg(&u)?);
        v["totp_uri"] = json!(u);
    }
    Ok(v)
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
    relay: &Relay,
    user_id: i64,
    by: &str,
    reason: crate::services::grants::EndReason,
) -> Result<()> {
    crate::services::grants::end(
        relay,
        dwa_store::grants::Selector::User(user_id),
        reason,
        by,
    )
    .await?;
    Ok(())
}

pub async fn update_user(
    relay: &Relay,
    p: &Principal,
    id: i64,
    patch: &UserPatch,
) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let current = get_user(relay, p, id).await?;
    let role: Role = match &patch.role {
        Some(r) => r.parse().map_err(RelayError::Invalid)?,
        None => current["role"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(RelayError::Invalid)?,
    };
    let customers = match &patch.customers {
        Some(c) => c.clone(),
        None => customers_of(relay, id).await?,
    };
    check_role_customers(role, &customers)?;
    check_customers_exist(relay, &customers).await?;
    if id == p.user_id
        && (patch.active == Some(false) || (patch.role.is_some() && role != Role::Admin))
    {
        return Err(RelayError::Invalid(
            "an admin cannot deactivate or demote their own account".into(),
        ));
    }
    let mut tx = relay.db.pool.begin().await?;
    sqlx::query("UPDATE users SET role = ? WHERE id = ?")
        .bind(role.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if patch.customers.is_some() {
        sqlx::query("DELETE FROM user_customers WHERE user_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for c in &customers {
            sqlx::query(
                "INSERT OR IGNORE INTO user_customers (user_id, customer_id) VALUES (?, ?)",
            )
            .bind(id)
            .bind(c)
            .execute(&mut *tx)
            .await?;
        }
    }
    match patch.active {
        // Reactivated: the inactivity clock starts again now.
        Some(true) => {
            sqlx::query(
                "UPDATE users SET active = 1, deactivated_at = NULL, last_active = ? WHERE id = ?",
            )
            .bind(unix_now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Some(false) => {
            sqlx::query("UPDATE users SET active = 0, deactivated_at = ? WHERE id = ?")
                .bind(now_rfc3339())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        None => {}
    }
    tx.commit().await?;
    // Authority lost: deactivation, a role change, or a customer taken away.
    let old_role = current["role"].as_str().unwrap_or_default();
    let old_customers: Vec<i64> = current["customers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_i64()).collect())
        .unwrap_or_default();
    let lost = if patch.active == Some(false) {
        Some(crate::services::grants::EndReason::Deactivated)
    } else if role.as_str() != old_role {
        Some(crate::services::grants::EndReason::RoleChanged)
    } else if old_customers.iter().any(|c| !customers.contains(c)) {
        Some(crate::services::grants::EndReason::CustomersChanged)
    } else {
        None
    };
    if let Some(reason) = lost {
        end_sessions_of(relay, id, &p.actor(), reason).await?;
    }
    admin_audit(
        relay,
        p,
        json!({"action": "user update", "id": id, "user": current["username"],
               "role": patch.role, "customers": patch.customers, "active": patch.active}),
    )
    .await;
    get_user(relay, p, id).await
}

/// Clears a lockout (and the failure count).
pub async fn unlock_user(relay: &Relay, p: &Principal, id: i64) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let v = get_user(relay, p, id).await?;
    sqlx::query("UPDATE users SET locked_at = NULL, failed_logins = 0 WHERE id = ?")
        .bind(id)
        .execute(&relay.db.pool)
        .await?;
    admin_audit(
        relay,
        p,
        json!({"action": "user unlock", "id": id, "user": v["username"], "was_locked": v["locked"]}),
    )
    .await;
    get_user(relay, p, id).await
}

/// Removes a user's two-factor (lost phone): their sessions end; at the
/// next log-in a role that requires it must enroll again.
pub async fn reset_totp(relay: &Relay, p: &Principal, id: i64) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let v = get_user(relay, p, id).await?;
    sqlx::query(
        "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL WHERE id = ?",
    )
    .bind(id)
    .execute(&relay.db.pool)
    .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = ?")
        .bind(id)
        .execute(&relay.db.pool)
        .await?;
    end_sessions_of(
        relay,
        id,
        &p.actor(),
        crate::services::grants::EndReason::TwoFactorReset,
    )
    .await?;
    admin_audit(
        relay,
        p,
        json!({"action": "user reset-totp", "id": id, "user": v["username"]}),
    )
    .await;
    get_user(relay, p, id).await
}

pub async fn list_customers(relay: &Relay, p: &Principal) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let rows = sqlx::query("SELECT id, name, created_at FROM customers ORDER BY id")
        .fetch_all(&relay.db.pool)
        .await?;
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                json!({"id": r.get::<i64, _>("id"), "name": r.get::<String, _>("name"),
                       "created_at": r.get::<String, _>("created_at")})
            })
            .collect(),
    ))
}

pub async fn create_customer(relay: &Relay, p: &Principal, name: &str) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(RelayError::Invalid(
            "customer name must be 1..=100 characters".into(),
        ));
    }
    let id = relay
        .store
        .add_customer(name, &relay.time.rfc3339())
        .await?;
    admin_audit(
        relay,
        p,
        json!({"action": "customer create", "id": id, "customer": name}),
    )
    .await;
    Ok(json!({"id": id, "name": name}))
}

pub async fn list_enrollment_tokens(relay: &Relay, p: &Principal) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let rows = sqlx::query(
        "SELECT t.id, c.name AS customer, t.customer_id, t.max_uses, t.uses, t.expires_at, t.created_at, t.created_by
         FROM enroll_tokens t JOIN customers c ON c.id = t.customer_id ORDER BY t.id",
    )
    .fetch_all(&relay.db.pool)
    .await?;
    let now = unix_now();
    Ok(Value::Array(
        rows.iter()
            .map(|r| {
                let exp: i64 = r.get("expires_at");
                let (uses, max): (i64, i64) = (r.get("uses"), r.get("max_uses"));
                json!({"id": r.get::<i64, _>("id"), "customer": r.get::<String, _>("customer"),
                       "customer_id": r.get::<i64, _>("customer_id"), "uses": uses, "max_uses": max,
                       "expires_at": exp, "usable": exp > now && uses < max,
                       "created_at": r.get::<String, _>("created_at"),
                       "created_by": r.get::<String, _>("created_by")})
            })
            .collect(),
    ))
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

/// A new enrollment token (the same as `dwa-relay token create`), shown once.
pub async fn create_enrollment_token(
    relay: &Relay,
    p: &Principal,
    req: &NewEnrollmentToken,
) -> Result<Value> {
    p.require(Action::Administer, None)?;
    let uses = req.uses.unwrap_or(5);
    if !(1..=5).contains(&uses) {
        return Err(RelayError::Invalid("uses must be 1..=5".into()));
    }
    let ttl = req.ttl_secs.unwrap_or(86_400);
    if !(1..=30 * 86_400).contains(&ttl) {
        return Err(RelayError::Invalid(
            "ttl_secs must be 1..=2592000 (30 days)".into(),
        ));
    }
    check_customers_exist(relay, &[req.customer_id]).await?;
    let (token, expires) = crate::services::enrollment::issue_token(
        &relay.dir,
        &relay.store,
        &relay.time,
        req.customer_id,
        uses,
        ttl,
        &p.actor(),
    )
    .await?;
    admin_audit(
        relay,
        p,
        json!({"action": "enrollment token create", "customer_id": req.customer_id,
               "uses": uses, "expires_at": expires}),
    )
    .await;
    Ok(json!({"token": token, "customer_id": req.customer_id, "uses": uses, "expires_at": expires}))
}
