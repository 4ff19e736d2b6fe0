//! What kind of failure a service error is, so that each adapter maps
//! every service's error in one place (HTTP status, portal page, SSH
//! refusal) without knowing the service.

/// The kinds of failure an adapter needs to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The request is malformed or out of bounds (400).
    Invalid,
    /// Not logged in, or the credentials are wrong (401).
    Unauthorized,
    /// Logged in, but not allowed (403).
    Forbidden,
    /// The named thing does not exist, or the caller may not know of it (404).
    NotFound,
    /// The request contradicts the current state (409).
    Conflict,
    /// The account is locked (423).
    Locked,
    /// Too many requests; retry after this many seconds (429).
    RateLimited { retry_after: u64 },
    /// A peer the relay depends on (an agent, a printer, the provider) is
    /// not there or did not answer (503).
    Unavailable,
    /// A fault of the relay itself (500): logged, not shown.
    Internal,
}

impl Class {
    /// The class's name as the API's `code` field gives it.
    pub fn code(self) -> &'static str {
        match self {
            Class::Invalid => "invalid",
            Class::Unauthorized => "unauthorized",
            Class::Forbidden => "refused",
            Class::NotFound => "not_found",
            Class::Conflict => "conflict",
            Class::Locked => "locked",
            Class::RateLimited { .. } => "rate_limited",
            Class::Unavailable => "unavailable",
            Class::Internal => "internal",
        }
    }
}

/// Implemented by every service's error enum.
pub trait Failure: std::error::Error {
    fn class(&self) -> Class;

    /// A stable machine-readable code for the API's `code` field; the
    /// class's own name unless the service has a finer one.
    fn code(&self) -> &'static str {
        self.class().code()
    }
}

impl Failure for dwa_store::StoreError {
    fn class(&self) -> Class {
        match self {
            dwa_store::StoreError::Conflict(_) => Class::Conflict,
            dwa_store::StoreError::NotFound(_) => Class::NotFound,
            dwa_store::StoreError::Invalid(_) => Class::Invalid,
            _ => Class::Internal,
        }
    }
}

/// What a caller hears when an action cannot be audited.
pub const AUDIT_DOWN: &str =
    "the audit log cannot be written right now, so this is not done; try again later";
