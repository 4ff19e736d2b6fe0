use thiserror::Error;

/// Errors at the relay library's boundary.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("{0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
