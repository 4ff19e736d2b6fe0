//! Grants: everything a user holds — log-in sessions, API tokens, web
//! sessions, raw tunnels, pending single-sign-on log-ins — with one
//! lifecycle. A grant records the user and the authority it was issued
//! under (its parent grant, the customer, device and agent it reaches) and
//! ends once, with a reason. Ending a grant ends every live grant derived
//! from it, in the same statement.

use crate::{unique, Result, Store, StoreError};

/// The kinds of grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    Login,
    ApiToken,
    WebSession,
    Tunnel,
    SsoPending,
}

impl GrantKind {
    pub const ALL: [GrantKind; 5] = [
        GrantKind::Login,
        GrantKind::ApiToken,
        GrantKind::WebSession,
        GrantKind::Tunnel,
        GrantKind::SsoPending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Login => "login",
            GrantKind::ApiToken => "api_token",
            GrantKind::WebSession => "web_session",
            GrantKind::Tunnel => "tunnel",
            GrantKind::SsoPending => "sso_pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GrantRow {
    pub id: i64,
    kind: String,
    pub handle: Option<String>,
    pub secret_hash: Option<String>,
    pub user_id: Option<i64>,
    pub parent_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub device_id: Option<i64>,
    pub agent_id: Option<String>,
    pub name: Option<String>,
    pub restricted: bool,
    pub detail: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_seen: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
}

impl GrantRow {
    pub fn kind(&self) -> Result<GrantKind> {
        GrantKind::parse(&self.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("grant {}: kind {:?}", self.id, self.kind)))
    }

    /// Live at `now`: not ended and not past its expiry.
    pub fn live_at(&self, now: i64) -> bool {
        self.ended_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A grant to issue.
#[derive(Debug, Clone)]
pub struct NewGrant<'a> {
    pub kind: GrantKind,
    pub handle: Option<&'a str>,
    pub secret_hash: Option<&'a str>,
    pub user_id: Option<i64>,
    pub parent_id: Option<i64>,
    pub customer_id: Option<i64>,
    pub device_id: Option<i64>,
    pub agent_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub restricted: bool,
    pub detail: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl<'a> NewGrant<'a> {
    pub fn new(kind: GrantKind, created_at: i64) -> Self {
        Self {
            kind,
            handle: None,
            secret_hash: None,
            user_id: None,
            parent_id: None,
            customer_id: None,
            device_id: None,
            agent_id: None,
            name: None,
            restricted: false,
            detail: None,
            created_at,
            expires_at: None,
        }
    }
}

/// Which live grants an end applies to (their descendants follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Id(i64),
    /// Every grant of the user.
    User(i64),
    /// The user's grants of these kinds.
    UserKinds(i64, Vec<GrantKind>),
    /// Every grant of the user but this one and what was opened under it
    /// (a password change ends the other sessions).
    UserExcept(i64, i64),
    /// Grants reaching a device of this customer.
    Customer(i64),
    Device(i64),
    Agent(String),
    /// Grants of these kinds whose expiry has passed at this time.
    Expired(Vec<GrantKind>, i64),
}

const COLUMNS: &str = "id, kind, handle, secret_hash, user_id, parent_id, customer_id, device_id, \
    agent_id, name, restricted, detail, created_at, expires_at, last_seen, ended_at, end_reason, ended_by";

fn kinds_json(k: &[GrantKind]) -> String {
    let v: Vec<&str> = k.iter().map(|k| k.as_str()).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Issues a grant; its id.
    pub async fn issue_grant(&self, g: &NewGrant<'_>) -> Result<i64> {
        let r = sqlx::query_scalar(
            "INSERT INTO grants (kind, handle, secret_hash, user_id, parent_id, customer_id, device_id, \
             agent_id, name, restricted, detail, created_at, expires_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12) RETURNING id",
        )
        .bind(g.kind.as_str())
        .bind(g.handle)
        .bind(g.secret_hash)
        .bind(g.user_id)
        .bind(g.parent_id)
        .bind(g.customer_id)
        .bind(g.device_id)
        .bind(g.agent_id)
        .bind(g.name)
        .bind(g.restricted)
        .bind(g.detail)
        .bind(g.created_at)
        .bind(g.expires_at)
        .fetch_one(&self.pool)
        .await;
        unique(r, || "a grant with this handle or secret exists".into())
    }

    pub async fn grant(&self, id: i64) -> Result<Option<GrantRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM grants WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The grant of `kind` whose secret hashes to `hash` (ended or not).
    pub async fn grant_by_secret(&self, kind: GrantKind, hash: &str) -> Result<Option<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM grants WHERE secret_hash = $1 AND kind = $2"
        ))
        .bind(hash)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The grant of `kind` with public handle `handle` (ended or not).
    pub async fn grant_by_handle(&self, kind: GrantKind, handle: &str) -> Result<Option<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM grants WHERE handle = $1 AND kind = $2"
        ))
        .bind(handle)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Live (not ended) grants of `kind`, optionally of one user.
    pub async fn live_grants(&self, kind: GrantKind, user: Option<i64>) -> Result<Vec<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM grants WHERE kind = $1 AND ended_at IS NULL \
             AND ($2 IS NULL OR user_id = $2) ORDER BY id"
        ))
        .bind(kind.as_str())
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many grants of `kind` are live at `now`.
    pub async fn count_live_grants(&self, kind: GrantKind, now: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM grants WHERE kind = $1 AND ended_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(kind.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Notes use of a grant (idle clocks).
    pub async fn touch_grant(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE grants SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A restricted log-in (two-factor to enroll) becomes a full one.
    pub async fn unrestrict_grant(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE grants SET restricted = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends the live grants `sel` names and every live grant derived from
    /// them, atomically; returns the grants this call ended (a grant ends
    /// once: a second call for it returns nothing).
    pub async fn end_grants(
        &self,
        sel: &Selector,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<GrantRow>> {
        // $1..$3: reason, by, now; $4, $5: the selector's values.
        let (cond, a, b): (&str, Option<String>, Option<i64>) = match sel {
            Selector::Id(id) => ("id = $5", None, Some(*id)),
            Selector::User(u) => ("user_id = $5", None, Some(*u)),
            Selector::UserKinds(u, k) => (
                "user_id = $5 AND kind IN (SELECT value FROM json_each($4))",
                Some(kinds_json(k)),
                Some(*u),
            ),
            Selector::UserExcept(u, keep) => (
                "user_id = $5 AND id NOT IN ( \
                   WITH RECURSIVE k(id) AS (SELECT CAST($4 AS INTEGER) \
                     UNION SELECT g.id FROM grants g JOIN k ON g.parent_id = k.id) \
                   SELECT id FROM k)",
                Some(keep.to_string()),
                Some(*u),
            ),
            Selector::Customer(c) => ("customer_id = $5", None, Some(*c)),
            Selector::Device(d) => ("device_id = $5", None, Some(*d)),
            Selector::Agent(a) => ("agent_id = $4", Some(a.clone()), None),
            Selector::Expired(k, t) => (
                "expires_at <= $5 AND kind IN (SELECT value FROM json_each($4))",
                Some(kinds_json(k)),
                Some(*t),
            ),
        };
        let sql = format!(
            "UPDATE grants SET ended_at = $3, end_reason = $1, ended_by = $2 \
             WHERE ended_at IS NULL AND id IN ( \
               WITH RECURSIVE t(id) AS ( \
                 SELECT id FROM grants WHERE ended_at IS NULL AND ({cond}) \
                 UNION SELECT g.id FROM grants g JOIN t ON g.parent_id = t.id WHERE g.ended_at IS NULL) \
               SELECT id FROM t) \
             RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(&sql)
            .bind(reason)
            .bind(by)
            .bind(now)
            .bind(a)
            .bind(b)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Grants ended at or after `since` (a relay catching up on ends made
    /// by another process).
    pub async fn grants_ended_since(&self, since: i64) -> Result<Vec<GrantRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM grants WHERE ended_at >= $1 ORDER BY id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ending_a_users_other_grants_keeps_this_one_and_its_children() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&tmp.path().join("t.db"), true)
            .await
            .expect("open");
        let uid: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, created_at) \
             VALUES ('ann', 'x', 'technician', 't') RETURNING id",
        )
        .fetch_one(&store.pool)
        .await
        .expect("user");
        let grant = |kind, parent| {
            let mut g = NewGrant::new(kind, 1);
            g.user_id = Some(uid);
            g.parent_id = parent;
            g
        };
        let here = store
            .issue_grant(&grant(GrantKind::Login, None))
            .await
            .expect("g");
        let here_child = store
            .issue_grant(&grant(GrantKind::WebSession, Some(here)))
            .await
            .expect("g");
        let other = store
            .issue_grant(&grant(GrantKind::Login, None))
            .await
            .expect("g");
        let other_child = store
            .issue_grant(&grant(GrantKind::WebSession, Some(other)))
            .await
            .expect("g");
        let token = store
            .issue_grant(&grant(GrantKind::ApiToken, None))
            .await
            .expect("g");
        let ended = store
            .end_grants(&Selector::UserExcept(uid, here), "password_changed", "t", 2)
            .await
            .expect("end");
        let mut ids: Vec<i64> = ended.iter().map(|g| g.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![other, other_child, token]);
        let again = store
            .end_grants(&Selector::User(uid), "logout", "t", 3)
            .await
            .expect("end");
        let mut left: Vec<i64> = again.iter().map(|g| g.id).collect();
        left.sort_unstable();
        assert_eq!(left, vec![here, here_child]);
    }
}
