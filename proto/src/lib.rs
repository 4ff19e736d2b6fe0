//! Wire types shared by `dwa-agent` and `dwa-relay`. Nothing here does I/O or
//! reads a clock, so every rule is tested deterministically.
//!
//! - [`control`]: messages on the per-session control channel (hello, stream
//!   credits, denials, heartbeats) and their length-prefixed frame codec.
//! - [`csv`]: the one CSV writer of every export, with its formula rule.
//! - [`diag`]: typed diagnostics (ping, TCP, HTTP, IPP, PJL) and their
//!   results.
//! - [`enroll`]: the enrollment token format and the enroll request/response.
//! - [`audit`]: audit events (one typed variant per kind), the canonical
//!   record form and the hash chain (compute and verify).
//! - [`stream`]: how a relay-opened stream is named on the SSH channel.
//! - [`snmprec`]: the snmpsim `OID|type|value` walk format (agent tests,
//!   fleet simulator).
//! - [`telemetry`]: device records (identity, counters, supplies, status)
//!   and the upload contract (items, batches, acks).

#![forbid(unsafe_code)]

pub mod audit;
pub mod control;
pub mod csv;
pub mod diag;
pub mod enroll;
pub mod snmprec;
pub mod stream;
pub mod telemetry;

/// Version of the agent↔relay protocol carried in [`control::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// SSH subsystem name the agent requests for the control channel.
pub const CONTROL_SUBSYSTEM: &str = "dwa-control@v1";

/// Errors at this crate's boundary: anything decoded from the network or a user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("control frame of {0} bytes exceeds the {max} byte limit", max = control::MAX_FRAME)]
    FrameTooLarge(usize),
    #[error("malformed control frame: {0}")]
    BadFrame(String),
    #[error("malformed enrollment token: {0}")]
    BadToken(&'static str),
    #[error("audit chain broken at record {id}: {reason}")]
    ChainBroken { id: i64, reason: String },
    #[error("audit detail of {kind}: {reason}")]
    BadDetail { kind: String, reason: String },
}
