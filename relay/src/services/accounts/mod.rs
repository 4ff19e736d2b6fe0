//! Accounts: two-factor (TOTP), lockout and failure rates, inactivity,
//! the admin user API, log-in session timeouts, CSRF and the portal's
//! security headers. Services take the relay and the acting [`Principal`]
//! so the JSON API and the portal's forms share them.
//!
//! [`Principal`]: crate::services::auth::Principal

pub mod inactivity;
pub mod login;
pub mod totp;
pub mod users;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};

use crate::services::error::{Class, Failure};

/// Errors of the accounts services (users, log-in, inactivity).
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Logged in (or the password is right) but not allowed (403).
    #[error("refused: {0}")]
    Refused(String),
    /// Wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The account is locked (423) until an administrator unlocks it.
    #[error("{0}")]
    Locked(String),
    /// Too many failed log-ins (429); retry after this many seconds.
    #[error("{msg}")]
    RateLimited { msg: String, retry_after: u64 },
    /// Password right, two-factor missing or wrong (401 with its own code:
    /// `totp_required`, `totp_invalid`, `totp_reused`).
    #[error("{msg}")]
    TwoFactor { code: &'static str, msg: String },
    #[error(transparent)]
    Auth(#[from] crate::services::auth::AuthError),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Grant(#[from] crate::services::grants::GrantError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
    #[error(transparent)]
    Totp(#[from] totp::TotpError),
    #[error(transparent)]
    Enroll(#[from] crate::services::enrollment::EnrollError),
}

impl Failure for AccountError {
    fn class(&self) -> Class {
        match self {
            AccountError::Invalid(_) => Class::Invalid,
            AccountError::NotFound(_) => Class::NotFound,
            AccountError::Conflict(_) => Class::Conflict,
            AccountError::Refused(_) => Class::Forbidden,
            AccountError::Unauthorized(_) | AccountError::TwoFactor { .. } => Class::Unauthorized,
            AccountError::Locked(_) => Class::Locked,
            AccountError::RateLimited { retry_after, .. } => Class::RateLimited {
                retry_after: *retry_after,
            },
            AccountError::Auth(e) => e.class(),
            AccountError::Store(e) => e.class(),
            AccountError::Grant(e) => e.class(),
            AccountError::Audit(e) => e.class(),
            AccountError::Totp(e) => e.class(),
            AccountError::Enroll(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AccountError::TwoFactor { code, .. } => code,
            AccountError::Auth(e) => e.code(),
            AccountError::Store(e) => e.code(),
            AccountError::Enroll(e) => e.code(),
            _ => self.class().code(),
        }
    }
}

/// Counts failures (not attempts) per key with a governor quota; once a
/// failure overruns it, the key is refused until the quota has room again.
pub struct FailureGate<K: Hash + Eq + Clone> {
    limiter: governor::DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

/// Keys blocked at once; beyond it the oldest entries go (memory stays bounded).
const MAX_BLOCKED: usize = 100_000;

impl<K: Hash + Eq + Clone> FailureGate<K> {
    pub fn per_minute(n: u32) -> Self {
        let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait if `key` is refused now.
    pub fn refused(&self, key: &K) -> Option<u64> {
        let mut b = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match b.get(key) {
            Some(until) if *until > now => Some((*until - now).as_secs().max(1)),
            Some(_) => {
                b.remove(key);
                None
            }
            None => None,
        }
    }

    /// Counts a failure; `Some(seconds)` when it overran the quota.
    pub fn fail(&self, key: &K) -> Option<u64> {
        let Err(not_until) = self.limiter.check_key(key) else {
            return None;
        };
        let wait = not_until
            .wait_time_from(DefaultClock::default().now())
            .max(Duration::from_secs(1));
        let mut b = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() >= MAX_BLOCKED {
            let now = Instant::now();
            b.retain(|_, until| *until > now);
        }
        if b.len() < MAX_BLOCKED {
            b.insert(key.clone(), Instant::now() + wait);
        }
        Some(wait.as_secs().max(1))
    }

    /// Forgets idle keys (called every minute).
    pub fn gc(&self) {
        self.limiter.retain_recent();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// Failed log-ins per account name and source address (a stranger's
/// failures slow down the stranger, not the account's owner elsewhere),
/// and per source address.
pub struct Gates {
    pub account: FailureGate<(String, std::net::IpAddr)>,
    pub address: FailureGate<std::net::IpAddr>,
}

impl Gates {
    pub fn new(cfg: &crate::config::AccountsSection) -> Self {
        Self {
            account: FailureGate::per_minute(cfg.failures_per_account_per_minute),
            address: FailureGate::per_minute(cfg.failures_per_address_per_minute),
        }
    }
}
