//! The relay's rules. Each service takes what it needs (the store, the
//! audit log, the clock) and returns typed results; none of them knows
//! HTTP, SSH or SQL.
//!
//! - [`streams`]: the registry of connected agents and `open_stream`, the
//!   one way to reach a device.
//! - [`web_sessions`]: Device Web Access sessions: tickets, cookies,
//!   limits, the end of a session.
//! - [`tunnels`]: raw TCP tunnels to a device port.
//! - [`diagnostics`]: probes run by agents.
//! - [`accounts`]: log-in, two-factor, lockout, inactivity, users.
//! - [`auth`]: who is calling: log-in sessions, API tokens, permissions.
//! - [`sso`]: single sign-on (OpenID Connect).
//! - [`enrollment`]: enrollment tokens and redeeming them.
//! - [`telemetry`]: ingest, inventory, alerts, webhook, reports.
//! - [`audit`]: the hash-chained audit log.
//! - [`ipp_audit`]: IPP operations recognised in traffic to port 631.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod diagnostics;
pub mod enrollment;
pub mod ipp_audit;
pub mod sso;
pub mod streams;
pub mod telemetry;
pub mod tunnels;
pub mod web_sessions;
