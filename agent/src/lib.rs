//! `dwa-agent`, the site side of DWA.
//!
//! - [`config`]: agent.toml (unknown keys rejected; the policy section
//!   compiles into the allowlist at load, so errors name their key).
//! - [`diag`]: typed diagnostics the relay asks for (ping, TCP, HTTP,
//!   IPP, PJL), each target decided by the policy first.
//! - [`enroll`]: one-time enrollment with a token over pinned HTTPS.
//! - [`policy`]: the policy deciding with the host's own addresses as they
//!   are now (read again while the agent runs).
//! - [`relay_http`]: pinned HTTPS requests to the relay's web port.
//! - [`session`]: the persistent outbound SSH session, its russh adapter,
//!   transports and reconnect loop.
//! - [`streams`]: relay-opened streams: resolve, decide, connect, carry.
//! - [`telemetry`]: SNMP walks (snmprec) decoded into device records.

pub mod config;
pub mod diag;
pub mod enroll;
pub mod error;
pub mod local_audit;
pub mod policy;
pub mod relay_http;
pub mod reload;
pub mod session;
pub mod status;
pub mod streams;
pub mod telemetry;

pub use error::{AgentError, Result};
