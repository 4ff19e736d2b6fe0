use thiserror::Error;

/// Errors at the relay library's boundary.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("refused: {0}")]
    Refused(String),
    /// Not logged in, or the credentials are wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Too many requests (429); retry after this many seconds.
    #[error("{msg}")]
    RateLimited { msg: String, retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// The account is locked (423) until an administrator unlocks it.
    #[error("{0}")]
    Locked(String),
    /// Password right, two-factor missing or wrong (401 with its own code:
    /// `totp_required`, `totp_invalid`, `totp_reused`).
    #[error("{msg}")]
    TwoFactor { code: &'static str, msg: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("SSH key: {0}")]
    Key(String),
    #[error(transparent)]
    Proto(#[from] dwa_proto::ProtoError),
    #[error(transparent)]
    BadInput(#[from] crate::util::BadInput),
    /// A log-in that must enroll two-factor before anything else (403).
    #[error("{}", crate::services::auth::RESTRICTED_MESSAGE)]
    Restricted,
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
    #[error(transparent)]
    Auth(#[from] crate::services::auth::AuthError),
    #[error(transparent)]
    Web(#[from] crate::services::web_sessions::WebSessionError),
    #[error(transparent)]
    Grant(#[from] crate::services::grants::GrantError),
    #[error(transparent)]
    Stream(#[from] crate::services::streams::StreamError),
    #[error(transparent)]
    Enroll(#[from] crate::services::enrollment::EnrollError),
}

impl crate::services::error::Failure for RelayError {
    fn class(&self) -> crate::services::error::Class {
        use crate::services::error::Class;
        match self {
            RelayError::Refused(_) | RelayError::Restricted => Class::Forbidden,
            RelayError::Unauthorized(_) | RelayError::TwoFactor { .. } => Class::Unauthorized,
            RelayError::NotFound(_) => Class::NotFound,
            RelayError::Conflict(_) => Class::Conflict,
            RelayError::Invalid(_) | RelayError::BadInput(_) => Class::Invalid,
            RelayError::Unavailable(_) => Class::Unavailable,
            RelayError::Locked(_) => Class::Locked,
            RelayError::RateLimited { retry_after, .. } => Class::RateLimited {
                retry_after: *retry_after,
            },
            RelayError::Store(e) => e.class(),
            RelayError::Auth(e) => e.class(),
            RelayError::Web(e) => e.class(),
            RelayError::Grant(e) => e.class(),
            RelayError::Stream(e) => e.class(),
            RelayError::Enroll(e) => e.class(),
            _ => Class::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RelayError::TwoFactor { code, .. } => code,
            RelayError::Restricted => crate::services::auth::RESTRICTED_CODE,
            RelayError::Store(e) => e.code(),
            RelayError::Auth(e) => e.code(),
            _ => self.class().code(),
        }
    }
}

impl From<crate::config::ConfigError> for RelayError {
    fn from(e: crate::config::ConfigError) -> Self {
        match e {
            crate::config::ConfigError::Invalid(m) => RelayError::Config(m),
            crate::config::ConfigError::File { path, source } => RelayError::File { path, source },
        }
    }
}

impl From<crate::util::FileError> for RelayError {
    fn from(e: crate::util::FileError) -> Self {
        RelayError::file(&e.path, e.source)
    }
}

impl RelayError {
    pub fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = RelayError> = std::result::Result<T, E>;
