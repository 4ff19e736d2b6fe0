//! The link between a `dwa-agent` and the `dwa-relay`: everything both ends
//! share that does I/O.
//!
//! - [`transport`]: the byte pipe the SSH session runs over — plain TCP to the
//!   SSH port, or a WebSocket on the HTTPS port ([`ws::WsStream`]).
//! - [`tls`]: certificate pinning by SHA-256 fingerprint for the agent's
//!   HTTPS and WebSocket connections.
//! - [`flow`]: [`flow::FlowStream`], a byte stream over one SSH channel with
//!   per-stream credit flow control, so a stalled consumer never stalls the
//!   SSH session (russh tops up windows on arrival, not on consumption).
//! - [`control`]: the control channel (hello, credits, denials, heartbeats).
//! - [`ssh`]: SSH settings shared by both ends (ciphers, packet size,
//!   keepalives).
//! - [`agent_auth`]: agent requests signed with the enrollment key (SSHSIG).
//! - [`backoff`]: reconnect delays with exponential growth and jitter.
//! - [`cli`]: what both binaries' `main` share.
//! - [`fs`]: writing keys and configs: owner-only, atomically.
//! - [`resolve`]: `localhost` names are loopback (RFC 6761), without DNS.

pub mod agent_auth;
pub mod backoff;
pub mod checkpoint;
pub mod cli;
pub mod control;
pub mod flow;
pub mod fs;
pub mod resolve;
pub mod ssh;
pub mod tls;
pub mod transport;
pub mod ws;

/// Errors at this crate's boundary.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?} {1}")]
    Timeout(std::time::Duration, &'static str),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("WebSocket: {0}")]
    WebSocket(String),
    #[error("control channel: {0}")]
    Control(#[from] dwa_proto::ProtoError),
    #[error("SSH: {0}")]
    Ssh(#[from] russh::Error),
}
