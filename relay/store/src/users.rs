//! Users: accounts, the customers each is assigned to, two-factor and
//! recovery codes, the lockout fields, directory (single-sign-on) users.

use crate::{unique, Result, Store, StoreError, Tx};

/// A user as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub active: bool,
    pub locked_at: Option<String>,
    pub failed_logins: i64,
    /// Two-factor is active.
    pub totp: bool,
    /// The password was issued by an administrator and not yet changed.
    pub password_change_required: bool,
    pub created_at: String,
    pub last_login: Option<String>,
    pub deactivated_at: Option<String>,
}

const USER_COLUMNS: &str = "id, username, role, active, locked_at, failed_logins, \
    totp_secret IS NOT NULL AS totp, password_change_required, created_at, last_login, deactivated_at";

/// A user of the portal's list: its customers' names joined.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserListRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub created_at: String,
    pub last_login: Option<String>,
    pub locked_at: Option<String>,
    pub active: bool,
    /// Customer names, `", "`-separated; None without customers.
    pub customers: Option<String>,
}

/// A local account to create.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub customers: &'a [i64],
    pub created_at: &'a str,
    /// Starts the inactivity clock (None: the creation time counts).
    pub last_active: Option<i64>,
    /// The password is one-time: its first log-in must choose another.
    pub password_change_required: bool,
}

/// What the log-in check needs of a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginRow {
    pub id: i64,
    pub role: String,
    pub password_hash: String,
    pub totp_secret: Option<String>,
    pub totp_last_step: Option<i64>,
    pub failed_logins: i64,
    pub locked_at: Option<String>,
    pub active: bool,
    /// Unix seconds of the last use: the last log-in, else creation or
    /// reactivation.
    pub last_active: Option<i64>,
}

/// Log-in sources kept per user.
pub const LOGIN_SOURCES: i64 = 8;

/// A user's two-factor secrets: the active one, the one being enrolled.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotpSecrets {
    pub secret: Option<String>,
    pub pending: Option<String>,
}

/// The failure count and lock of an account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Failures {
    pub id: i64,
    pub failed_logins: i64,
    pub locked_at: Option<String>,
}

/// What an admin changes of a user, in one transaction.
#[derive(Debug, Clone)]
pub struct UserChange<'a> {
    pub role: &'a str,
    /// Replaces the customers.
    pub customers: Option<&'a [i64]>,
    pub active: Option<bool>,
    /// The time of the change: RFC 3339 (deactivation), unix seconds
    /// (reactivation restarts the inactivity clock).
    pub now: &'a str,
    pub now_unix: i64,
}

/// A directory (single-sign-on) user to create or refresh.
#[derive(Debug, Clone)]
pub struct DirectoryUser<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The name a new user gets, and the one it gets when that is taken.
    pub username: &'a str,
    pub username_taken: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    /// Replaces the customers.
    pub customers: &'a [i64],
    pub created_at: &'a str,
}

/// An active account unused since `used` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StaleUser {
    pub id: i64,
    pub username: String,
    pub used: i64,
}

/// What deciding who a caller is needs of a user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserAuthRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub active: bool,
    pub locked_at: Option<String>,
    pub password_change_required: bool,
}

impl Store {
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn user(&self, id: i64) -> Result<Option<UserRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every user with its customers' names, by user name (the portal).
    pub async fn user_list(&self) -> Result<Vec<UserListRow>> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.username, u.role, u.created_at, u.last_login, u.locked_at, u.active, \
             (SELECT group_concat(c.name, ', ') FROM user_customers uc JOIN customers c ON c.id = uc.customer_id \
              WHERE uc.user_id = u.id) AS customers \
             FROM users u ORDER BY u.username",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates a local account and assigns its customers, atomically; its
    /// id. `Conflict` when the name is taken.
    pub async fn add_user(&self, u: &NewUser<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let r = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at, last_active, password_change_required) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(u.username)
        .bind(u.password_hash)
        .bind(u.role)
        .bind(u.created_at)
        .bind(u.last_active)
        .bind(u.password_change_required)
        .fetch_one(&mut *tx.tx)
        .await;
        let id = unique(r, || format!("user {:?} already exists", u.username))?;
        tx.assign_customers(id, u.customers).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Changes a user's role, customers and activation, atomically.
    pub async fn change_user(&self, id: i64, c: &UserChange<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(c.role)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        if let Some(customers) = c.customers {
            tx.clear_customers(id).await?;
            tx.assign_customers(id, customers).await?;
        }
        match c.active {
            // Reactivated: the inactivity clock starts again now.
            Some(true) => {
                sqlx::query(
                    "UPDATE users SET active = 1, deactivated_at = NULL, last_active = $1 WHERE id = $2",
                )
                .bind(c.now_unix)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
            }
            Some(false) => {
                sqlx::query("UPDATE users SET active = 0, deactivated_at = $1 WHERE id = $2")
                    .bind(c.now)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await?;
            }
            None => {}
        }
        tx.commit().await
    }

    /// Clears a lockout and the failure count; false for no such user.
    pub async fn unlock_user(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE users SET locked_at = NULL, failed_logins = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// [`Store::unlock_user`] by name.
    pub async fn unlock_user_named(&self, username: &str) -> Result<bool> {
        let r =
            sqlx::query("UPDATE users SET locked_at = NULL, failed_logins = 0 WHERE username = $1")
                .bind(username)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// What the log-in check needs of the user named `username`.
    pub async fn login_row(&self, username: &str) -> Result<Option<LoginRow>> {
        Ok(sqlx::query_as(
            "SELECT id, role, password_hash, totp_secret, totp_last_step, failed_logins, locked_at, active, \
             COALESCE(last_active, CAST(strftime('%s', created_at) AS INTEGER)) AS last_active \
             FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn totp_secrets(&self, id: i64) -> Result<Option<TotpSecrets>> {
        Ok(sqlx::query_as(
            "SELECT totp_secret AS secret, totp_pending AS pending FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Makes `secret` the user's active two-factor secret (provisioned by
    /// an admin or at `init`): no enrollment pending, no step used yet.
    pub async fn set_totp(&self, id: i64, secret: &str) -> Result<()> {
        sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_pending = NULL, totp_last_step = NULL WHERE id = $2",
        )
        .bind(secret)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Starts enrollment: `secret` waits for its first code.
    pub async fn set_totp_pending(&self, id: i64, secret: &str) -> Result<()> {
        sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2")
            .bind(secret)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finishes enrollment, atomically: the pending secret becomes active
    /// with `step` used, and the recovery codes are replaced by these
    /// hashes.
    pub async fn confirm_totp(&self, id: i64, step: i64, recovery_hashes: &[String]) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 WHERE id = $2",
        )
        .bind(step)
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        for hash in recovery_hashes {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(id)
                .bind(hash)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await
    }

    /// Removes a user's two-factor and recovery codes.
    pub async fn reset_totp(&self, id: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// Notes `step` as used if it is newer than the last used one
    /// (compare-and-set: of two log-ins racing with one code, one wins).
    pub async fn use_totp_step(&self, id: i64, step: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Uses the unused recovery code hashing to `hash` at `now`; false
    /// when there is none.
    pub async fn use_recovery_code(&self, id: i64, hash: &str, now: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn recovery_codes_left(&self, id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Creates the directory user keyed by issuer and subject, or
    /// refreshes its role; either way its customers become `customers`.
    /// Its id.
    pub async fn upsert_directory_user(&self, u: &DirectoryUser<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2")
                .bind(u.issuer)
                .bind(u.subject)
                .fetch_optional(&mut *tx.tx)
                .await?;
        let id = match existing {
            Some(id) => {
                sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
                    .bind(u.role)
                    .bind(id)
                    .execute(&mut *tx.tx)
                    .await?;
                tx.clear_customers(id).await?;
                id
            }
            None => {
                let taken: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                        .bind(u.username)
                        .fetch_optional(&mut *tx.tx)
                        .await?;
                let name = if taken.is_some() {
                    u.username_taken
                } else {
                    u.username
                };
                sqlx::query_scalar(
                    "INSERT INTO users (username, password_hash, role, created_at, source, oidc_issuer, oidc_subject) \
                     VALUES ($1, $2, $3, $4, 'oidc', $5, $6) RETURNING id",
                )
                .bind(name)
                .bind(u.password_hash)
                .bind(u.role)
                .bind(u.created_at)
                .bind(u.issuer)
                .bind(u.subject)
                .fetch_one(&mut *tx.tx)
                .await?
            }
        };
        tx.assign_customers(id, u.customers).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn user_auth(&self, id: i64) -> Result<Option<UserAuthRow>> {
        Ok(
            sqlx::query_as("SELECT id, username, role, active, locked_at, password_change_required FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The stored password hash of a local account.
    pub async fn password_hash(&self, id: i64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Replaces a user's password hash. `change_required`: an
    /// administrator's one-time password (the next log-in must choose its
    /// own); false for the user's own choice.
    pub async fn set_password(&self, id: i64, hash: &str, change_required: bool) -> Result<()> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = $1, password_change_required = $2 WHERE id = $3",
        )
        .bind(hash)
        .bind(change_required)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no user {id}")));
        }
        Ok(())
    }

    pub async fn user_id_by_name(&self, username: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The customers a user is assigned to (ids, ascending).
    pub async fn user_customers(&self, id: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT customer_id FROM user_customers WHERE user_id = $1 ORDER BY customer_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Notes a log-in (single sign-on included): the inactivity clock
    /// starts again.
    pub async fn note_login(&self, id: i64, now: &str, now_unix: i64) -> Result<()> {
        sqlx::query(
            "UPDATE users SET last_login = $1, last_active = $2, failed_logins = 0 WHERE id = $3",
        )
        .bind(now)
        .bind(now_unix)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Notes that user `id` logged in from `source` at `now` (unix
    /// seconds); only the newest [`LOGIN_SOURCES`] are kept.
    pub async fn note_login_source(&self, id: i64, source: &str, now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO login_sources (user_id, source, last_login) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, source) DO UPDATE SET last_login = excluded.last_login",
        )
        .bind(id)
        .bind(source)
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
        sqlx::query(
            "DELETE FROM login_sources WHERE user_id = $1 AND source NOT IN \
             (SELECT source FROM login_sources WHERE user_id = $1 \
              ORDER BY last_login DESC, source LIMIT $2)",
        )
        .bind(id)
        .bind(LOGIN_SOURCES)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether user `id` has logged in from `source` (false for no such
    /// user: the query runs either way, so timing tells nothing).
    pub async fn is_login_source(&self, id: i64, source: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM login_sources WHERE user_id = $1 AND source = $2",
        )
        .bind(id)
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Whether the user has two-factor enrolled (false for no such user).
    pub async fn has_totp(&self, id: i64) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT totp_secret IS NOT NULL FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(false),
        )
    }

    /// Active accounts last used (last log-in, else creation or
    /// reactivation) before `cutoff` (unix seconds).
    pub async fn stale_users(&self, cutoff: i64) -> Result<Vec<StaleUser>> {
        Ok(sqlx::query_as(
            "SELECT id, username, COALESCE(last_active, CAST(strftime('%s', created_at) AS INTEGER)) AS used
             FROM users WHERE active = 1 AND used < $1 ORDER BY id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deactivates an active account at `now`; false when it was not
    /// active (already deactivated, or gone).
    pub async fn deactivate_user(&self, id: i64, now: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE users SET active = 0, deactivated_at = $1 WHERE id = $2 AND active = 1",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

impl Tx {
    async fn assign_customers(&mut self, user: i64, customers: &[i64]) -> Result<()> {
        for c in customers {
            sqlx::query(
                "INSERT OR IGNORE INTO user_customers (user_id, customer_id) VALUES ($1, $2)",
            )
            .bind(user)
            .bind(c)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    async fn clear_customers(&mut self, user: i64) -> Result<()> {
        sqlx::query("DELETE FROM user_customers WHERE user_id = $1")
            .bind(user)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The failure count and lock of the account named `username` (read
    /// inside the transaction that writes the new ones).
    pub async fn failures(&mut self, username: &str) -> Result<Option<Failures>> {
        Ok(
            sqlx::query_as("SELECT id, failed_logins, locked_at FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    pub async fn set_failures(&mut self, f: &Failures) -> Result<()> {
        let r = sqlx::query("UPDATE users SET failed_logins = $1, locked_at = $2 WHERE id = $3")
            .bind(f.failed_logins)
            .bind(&f.locked_at)
            .bind(f.id)
            .execute(&mut *self.tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no user {}", f.id)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn add(store: &Store, name: &str, created_at: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at)
             VALUES ($1, 'x', 'viewer', $2) RETURNING id",
        )
        .bind(name)
        .bind(created_at)
        .fetch_one(&store.pool)
        .await
        .expect("insert user")
    }

    #[tokio::test]
    async fn unused_accounts_are_found_after_the_limit_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&tmp.path().join("t.db"), true)
            .await
            .expect("open");
        let day = 86_400i64;
        let start = 2_000_000_000i64;
        let old = add(&store, "old", "2020-01-01T00:00:00Z").await;
        sqlx::query("UPDATE users SET last_active = $1 WHERE id = $2")
            .bind(start)
            .bind(old)
            .execute(&store.pool)
            .await
            .expect("last_active");
        // The last use counts, not the creation.
        assert!(store.stale_users(start - day).await.expect("q").is_empty());
        let s = store.stale_users(start + day).await.expect("q");
        assert_eq!(
            s,
            vec![StaleUser {
                id: old,
                username: "old".into(),
                used: start
            }]
        );
        // Never logged in: the creation time counts (2033-05-18 = start).
        let fresh = add(&store, "new", "2033-05-18T03:33:20Z").await;
        let ids = |v: Vec<StaleUser>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.stale_users(start).await.expect("q")),
            Vec::<i64>::new()
        );
        assert_eq!(
            ids(store.stale_users(start + 1).await.expect("q")),
            vec![old, fresh]
        );
        // Deactivated accounts are not found again, and deactivate once.
        assert!(store
            .deactivate_user(old, "2033-06-01T00:00:00Z")
            .await
            .expect("d"));
        assert!(!store
            .deactivate_user(old, "2033-06-01T00:00:00Z")
            .await
            .expect("d"));
        assert_eq!(
            ids(store.stale_users(start + day).await.expect("q")),
            vec![fresh]
        );
    }

    async fn open(tmp: &tempfile::TempDir) -> Store {
        Store::open_sqlite(&tmp.path().join("t.db"), true)
            .await
            .expect("open")
    }

    fn new_user<'a>(name: &'a str, customers: &'a [i64]) -> NewUser<'a> {
        NewUser {
            username: name,
            password_hash: "h",
            role: "technician",
            customers,
            created_at: "2030-01-01T00:00:00Z",
            last_active: Some(1_900_000_000),
            password_change_required: false,
        }
    }

    #[tokio::test]
    async fn users_are_created_once_changed_and_listed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp).await;
        let acme = store.add_customer("acme", "t").await.expect("c");
        let beta = store.add_customer("beta", "t").await.expect("c");
        let id = store
            .add_user(&new_user("ann", &[acme, acme]))
            .await
            .expect("add");
        let e = store.add_user(&new_user("ann", &[])).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Conflict(m) if m == "user \"ann\" already exists"),
            "{e:?}"
        );
        assert_eq!(store.user_count().await.expect("n"), 1);
        assert_eq!(store.user_customers(id).await.expect("c"), vec![acme]);
        let u = store.user(id).await.expect("u").expect("some");
        assert_eq!(
            (u.username.as_str(), u.role.as_str()),
            ("ann", "technician")
        );
        assert!(u.active && !u.totp && u.locked_at.is_none() && u.failed_logins == 0);
        assert_eq!(store.users().await.expect("all"), vec![u]);

        let change = |role, customers, active| UserChange {
            role,
            customers,
            active,
            now: "2030-02-01T00:00:00Z",
            now_unix: 1_950_000_000,
        };
        let both = [beta, acme];
        store
            .change_user(id, &change("viewer", Some(&both[..]), Some(false)))
            .await
            .expect("change");
        let u = store.user(id).await.expect("u").expect("some");
        assert_eq!(u.role, "viewer");
        assert!(!u.active);
        assert_eq!(u.deactivated_at.as_deref(), Some("2030-02-01T00:00:00Z"));
        assert_eq!(store.user_customers(id).await.expect("c"), vec![acme, beta]);
        let l = store.user_list().await.expect("list");
        assert_eq!(
            l[0].customers.as_deref().map(|c| c.len()),
            Some("acme, beta".len())
        );
        // Reactivated: the inactivity clock restarts; customers untouched.
        store
            .change_user(id, &change("viewer", None, Some(true)))
            .await
            .expect("change");
        let u = store.user(id).await.expect("u").expect("some");
        assert!(u.active && u.deactivated_at.is_none());
        let row = store.login_row("ann").await.expect("l").expect("some");
        assert_eq!(row.last_active, Some(1_950_000_000));
        assert_eq!(store.user_customers(id).await.expect("c"), vec![acme, beta]);
        assert!(store.login_row("nobody").await.expect("l").is_none());
    }

    #[tokio::test]
    async fn two_factor_enrollment_steps_and_recovery_codes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp).await;
        let id = store.add_user(&new_user("ann", &[])).await.expect("add");
        store.set_totp_pending(id, "PENDING").await.expect("p");
        let s = store.totp_secrets(id).await.expect("s").expect("some");
        assert_eq!((s.secret, s.pending.as_deref()), (None, Some("PENDING")));
        store
            .confirm_totp(id, 7, &["h1".into(), "h2".into()])
            .await
            .expect("confirm");
        let s = store.totp_secrets(id).await.expect("s").expect("some");
        assert_eq!((s.secret.as_deref(), s.pending), (Some("PENDING"), None));
        assert!(store.has_totp(id).await.expect("t"));
        // A step is good once, and only forward.
        assert!(!store.use_totp_step(id, 7).await.expect("s"));
        assert!(store.use_totp_step(id, 8).await.expect("s"));
        assert!(!store.use_totp_step(id, 6).await.expect("s"));
        // A recovery code is good once.
        assert_eq!(store.recovery_codes_left(id).await.expect("n"), 2);
        assert!(store.use_recovery_code(id, "h1", "t").await.expect("r"));
        assert!(!store.use_recovery_code(id, "h1", "t").await.expect("r"));
        assert!(!store.use_recovery_code(id, "nope", "t").await.expect("r"));
        assert_eq!(store.recovery_codes_left(id).await.expect("n"), 1);
        // Re-enrolling replaces the codes.
        store.set_totp_pending(id, "NEXT").await.expect("p");
        store.confirm_totp(id, 9, &["h3".into()]).await.expect("c");
        assert_eq!(store.recovery_codes_left(id).await.expect("n"), 1);
        assert!(!store.use_recovery_code(id, "h2", "t").await.expect("r"));
        store.reset_totp(id).await.expect("reset");
        assert!(!store.has_totp(id).await.expect("t"));
        assert_eq!(store.recovery_codes_left(id).await.expect("n"), 0);
        store.set_totp(id, "ADMIN").await.expect("set");
        let row = store.login_row("ann").await.expect("l").expect("some");
        assert_eq!(row.totp_secret.as_deref(), Some("ADMIN"));
        assert_eq!(row.totp_last_step, None);
    }

    #[tokio::test]
    async fn failures_are_counted_in_a_transaction_and_unlocked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp).await;
        let id = store.add_user(&new_user("ann", &[])).await.expect("add");
        let mut tx = store.begin().await.expect("tx");
        assert!(tx.failures("nobody").await.expect("f").is_none());
        let f = tx.failures("ann").await.expect("f").expect("some");
        assert_eq!(
            f,
            Failures {
                id,
                failed_logins: 0,
                locked_at: None
            }
        );
        tx.set_failures(&Failures {
            id,
            failed_logins: 5,
            locked_at: Some("L".into()),
        })
        .await
        .expect("set");
        tx.commit().await.expect("commit");
        let row = store.login_row("ann").await.expect("l").expect("some");
        assert_eq!(
            (row.failed_logins, row.locked_at.as_deref()),
            (5, Some("L"))
        );
        assert!(store.unlock_user(id).await.expect("u"));
        assert!(!store.unlock_user(id + 1).await.expect("u"));
        let u = store.user(id).await.expect("u").expect("some");
        assert_eq!((u.failed_logins, u.locked_at), (0, None));
        assert!(store.unlock_user_named("ann").await.expect("u"));
        assert!(!store.unlock_user_named("bob").await.expect("u"));
    }

    #[tokio::test]
    async fn login_sources_keep_the_newest_few_per_user() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp).await;
        let ann = store.add_user(&new_user("ann", &[])).await.expect("ann");
        let bob = store.add_user(&new_user("bob", &[])).await.expect("bob");
        assert!(!store.is_login_source(ann, "192.0.2.1").await.expect("q"));
        for i in 0..10 {
            store
                .note_login_source(ann, &format!("192.0.2.{i}"), 1_000 + i)
                .await
                .expect("note");
        }
        // Seen again: its time moves, it stays.
        store
            .note_login_source(ann, "192.0.2.0", 2_000)
            .await
            .expect("note");
        assert!(store.is_login_source(ann, "192.0.2.0").await.expect("q"));
        assert!(
            !store.is_login_source(ann, "192.0.2.1").await.expect("q"),
            "oldest gone"
        );
        assert!(
            !store.is_login_source(ann, "192.0.2.2").await.expect("q"),
            "oldest gone"
        );
        assert!(store.is_login_source(ann, "192.0.2.9").await.expect("q"));
        assert!(
            !store.is_login_source(bob, "192.0.2.9").await.expect("q"),
            "per user"
        );
        assert!(!store.is_login_source(-1, "192.0.2.9").await.expect("q"));
    }

    #[tokio::test]
    async fn directory_users_are_keyed_by_identity_not_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp).await;
        let acme = store.add_customer("acme", "t").await.expect("c");
        let beta = store.add_customer("beta", "t").await.expect("c");
        let local = store.add_user(&new_user("alice", &[])).await.expect("add");
        let d = |subject, customers| DirectoryUser {
            issuer: "https://idp",
            subject,
            username: "alice",
            username_taken: "alice~1234",
            password_hash: "!oidc",
            role: "viewer",
            customers,
            created_at: "t",
        };
        let (only_acme, only_beta) = ([acme], [beta]);
        let id = store
            .upsert_directory_user(&d("s1", &only_acme))
            .await
            .expect("upsert");
        assert_ne!(id, local);
        assert_eq!(
            store.user(id).await.expect("u").expect("some").username,
            "alice~1234"
        );
        // The same identity again: the same user, its customers replaced.
        let mut again = d("s1", &only_beta);
        again.role = "technician";
        assert_eq!(store.upsert_directory_user(&again).await.expect("u"), id);
        let u = store.user(id).await.expect("u").expect("some");
        assert_eq!(u.role, "technician");
        assert_eq!(store.user_customers(id).await.expect("c"), vec![beta]);
        assert_eq!(
            store.user_customers(local).await.expect("c"),
            Vec::<i64>::new()
        );
    }
}
