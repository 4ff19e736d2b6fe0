//! Telemetry on the relay: what agents upload, the device inventory it
//! feeds, alerts, their webhook, and reports.
//!
//! - [`ingest`]: checking and storing an agent's signed upload, one
//!   transaction per batch, idempotent by item id.
//! - [`inventory`]: matching a reading to a device (identity within the
//!   customer, address changes, claiming hand-added devices, displacement)
//!   and the inventory's views.
//! - [`alerts`]: rules per customer, raising and resolving alerts from
//!   readings and finished scans.
//! - [`webhook`]: the durable outbox and its delivery task (HMAC-signed).
//! - [`report`]: the CSV export.
//! - [`billing`]: billing meter reports per customer and period (CSV,
//!   XLSX) and their scheduled e-mail.
//! - [`settings`]: scan settings per agent (stored, pushed on connect) and
//!   scan-now.
//! - [`fleet`]: customers and agents as the fleet views show them.
//! - [`retention`]: removing readings older than the retention.

pub mod alerts;
pub mod billing;
pub mod email;
pub mod fleet;
pub mod ingest;
pub mod inventory;
pub mod report;
pub mod retention;
pub mod settings;
pub mod webhook;

use std::net::IpAddr;

use crate::services::error::{Class, Failure};

/// Errors of the telemetry services.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The agent is not connected (or is going away).
    #[error("{0}")]
    Conflict(String),
    /// Stored data the relay cannot use (an agent's key that no longer
    /// parses): a fault of the relay, logged, not shown.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Auth(#[from] crate::services::auth::AuthError),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
}

impl Failure for TelemetryError {
    fn class(&self) -> Class {
        match self {
            TelemetryError::Invalid(_) => Class::Invalid,
            TelemetryError::NotFound(_) => Class::NotFound,
            TelemetryError::Conflict(_) => Class::Conflict,
            TelemetryError::Internal(_) => Class::Internal,
            TelemetryError::Auth(e) => e.class(),
            TelemetryError::Store(e) => e.class(),
            TelemetryError::Audit(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            TelemetryError::Auth(e) => e.code(),
            TelemetryError::Store(e) => e.code(),
            TelemetryError::Audit(e) => e.code(),
            _ => self.class().code(),
        }
    }
}

pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;

/// Telemetry's share of the relay state.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Wakes the webhook delivery task when events were queued.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// Wakes the e-mail delivery task likewise.
    pub mail_wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The agent an upload came from, as the relay knows it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub id: String,
    pub customer_id: i64,
}

/// [`clock::normalize_time`](crate::services::clock::normalize_time) with
/// the telemetry error.
pub fn normalize_time(field: &str, s: &str) -> Result<String> {
    crate::services::clock::normalize_time(field, s).map_err(TelemetryError::Invalid)
}

/// One scan range as the agent accepts them: a CIDR network, a single
/// address, or `first-last` (same family, first ≤ last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Range {
    Net(ipnetwork::IpNetwork),
    Span(IpAddr, IpAddr),
}

/// Largest span of a `first-last` range (the agent has its own ceiling;
/// this only catches typos like a whole /8 written as a range).
const MAX_SPAN: u128 = 1 << 20;

impl Range {
    pub fn parse(s: &str) -> Result<Range> {
        let s = s.trim();
        let bad = |why: &str| TelemetryError::Invalid(format!("range {s:?}: {why}"));
        if s.is_empty() || s.len() > 100 {
            return Err(bad("must be 1..=100 characters"));
        }
        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| bad("start is not an address"))?;
            let b: IpAddr = b.trim().parse().map_err(|_| bad("end is not an address"))?;
            let span = match (a, b) {
                (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => u128::from(u32::from(b) - u32::from(a)),
                (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => u128::from(b) - u128::from(a),
                _ => return Err(bad("start and end must be one family, start ≤ end")),
            };
            if span > MAX_SPAN {
                return Err(bad("spans more than 2^20 addresses"));
            }
            return Ok(Range::Span(a, b));
        }
        s.parse::<ipnetwork::IpNetwork>()
            .map(Range::Net)
            .map_err(|_| bad("expected CIDR (10.0.0.0/24), an address, or first-last"))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match *self {
            Range::Net(n) => n.contains(ip),
            Range::Span(IpAddr::V4(a), IpAddr::V4(b)) => {
                matches!(ip, IpAddr::V4(x) if a <= x && x <= b)
            }
            Range::Span(IpAddr::V6(a), IpAddr::V6(b)) => {
                matches!(ip, IpAddr::V6(x) if a <= x && x <= b)
            }
            Range::Span(..) => false,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_contain() {
        let r = Range::parse("10.0.0.0/24").unwrap();
        assert!(r.contains("10.0.0.7".parse().unwrap()));
        assert!(!r.contains("10.0.1.7".parse().unwrap()));
        let r = Range::parse("10.0.0.5-10.0.0.9").unwrap();
        assert!(r.contains("10.0.0.9".parse().unwrap()));
        assert!(!r.contains("10.0.0.10".parse().unwrap()));
        assert!(Range::parse("10.0.0.5").is_ok());
        for bad in [
            "",
            "10.0.0.9-10.0.0.5",
            "10.0.0.0/33",
            "printer",
            "10.0.0.1-::1",
            "0.0.0.0-255.255.255.255",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_normalised() {
        assert_eq!(
            normalize_time("t", "2026-01-02T03:04:05Z").unwrap(),
            "2026-01-02T03:04:05.000Z"
        );
        assert!(normalize_time("t", "yesterday").is_err());
    }
}
