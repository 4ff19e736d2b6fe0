//! Telemetry on the relay: what agents upload, the device inventory it
//! feeds, alerts, their webhook, and reports.
//!
//! - [`ingest`]: `POST /agent/v1/ingest` — signed by the agent's enrollment
//!   key, size- and time-bounded, one SQLite transaction per batch,
//!   idempotent by item id.
//! - [`inventory`]: matching a reading to a device (identity within the
//!   customer, address changes, claiming hand-added devices, displacement)
//!   and the inventory's queries.
//! - [`alerts`]: rules per customer, raising and resolving alerts from
//!   readings and finished scans.
//! - [`webhook`]: the durable outbox and its delivery task (HMAC-signed).
//! - [`report`]: the CSV export.
//! - [`settings`]: scan settings per agent (stored, pushed on connect) and
//!   scan-now.

pub mod alerts;
pub mod ingest;
pub mod inventory;
pub mod report;
pub mod settings;
pub mod webhook;

use std::net::IpAddr;
use std::time::SystemTime;

use crate::error::{RelayError, Result};

/// Telemetry's share of the relay state.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Wakes the webhook delivery task when events were queued.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The agent an upload came from, as the relay knows it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub id: String,
    pub customer_id: i64,
}

/// Parses an RFC 3339 time and writes it back in the relay's one format
/// (UTC, milliseconds, `Z`), so stored times compare as text.
pub fn normalize_time(field: &str, s: &str) -> Result<String> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(s))
        .map_err(|e| RelayError::Invalid(format!("{field}: not an RFC 3339 UTC time ({e})")))?;
    Ok(humantime::format_rfc3339_millis(t).to_string())
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
        let bad = |why: &str| RelayError::Invalid(format!("range {s:?}: {why}"));
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
pub(crate) mod testutil {
    use crate::config::DataDir;
    use crate::db::Db;

    /// A fresh database with customer `acme` (id 1) and agents `agt_a`,
    /// `agt_b` of it, and `agt_x` of customer `other` (id 2).
    pub async fn db() -> (tempfile::TempDir, Db) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&DataDir(tmp.path().to_path_buf()), true)
            .await
            .expect("db");
        for name in ["acme", "other"] {
            sqlx::query(
                "INSERT INTO customers (name, created_at) VALUES (?, '2026-01-01T00:00:00.000Z')",
            )
            .bind(name)
            .execute(&db.pool)
            .await
            .expect("customer");
        }
        for (id, c) in [("agt_a", 1), ("agt_b", 1), ("agt_x", 2)] {
            sqlx::query(
                "INSERT INTO agents (id, name, customer_id, public_key, hostname, created_at)
                 VALUES (?, ?, ?, ?, 'h', '2026-01-01T00:00:00.000Z')",
            )
            .bind(id)
            .bind(id)
            .bind(c)
            .bind(format!("key-{id}"))
            .execute(&db.pool)
            .await
            .expect("agent");
        }
        (tmp, db)
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
