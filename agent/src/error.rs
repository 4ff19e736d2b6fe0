use thiserror::Error;

/// Errors at the agent library's boundary.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("enrollment refused by the relay: {0}")]
    EnrollRefused(String),
    #[error("{0}")]
    Enroll(String),
    #[error(transparent)]
    Link(#[from] dwa_link::LinkError),
    #[error("SSH: {0}")]
    Ssh(String),
    #[error("{0}")]
    HostKeyMismatch(String),
    #[error(transparent)]
    Policy(#[from] dwa_policy::PolicyError),
    #[error(transparent)]
    Proto(#[from] dwa_proto::ProtoError),
    #[error("spool: {0}")]
    Spool(String),
    #[error("upload: {0}")]
    Upload(String),
    #[error("SNMP discovery: {0}")]
    Discovery(String),
}

impl AgentError {
    pub fn file(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::File {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<russh::Error> for AgentError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e.to_string())
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;
