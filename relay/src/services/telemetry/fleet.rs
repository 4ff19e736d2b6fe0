//! Customers and agents as the fleet views (API and portal) show them:
//! what is enrolled, what is connected, what it was told to scan.

use std::collections::HashMap;

use dwa_store::agents::AgentRow;
use dwa_store::customers::CustomerRow;
use dwa_store::devices::CustomerCounts;
use serde::Serialize;

use super::settings::{self, Stored};
use super::{Result, TelemetryError};
use crate::services::Services;

/// An agent in the fleet list.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub customer: String,
    pub customer_id: i64,
    pub hostname: String,
    pub connected: bool,
    pub last_seen: Option<String>,
    pub revoked: bool,
    pub scan: ScanView,
}

/// An agent's scan settings as the list shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanView {
    pub ranges: Option<Vec<String>>,
    pub interval_secs: Option<u64>,
    pub updated_at: Option<String>,
    pub applied: Option<serde_json::Value>,
    pub applied_at: Option<String>,
}

impl From<Stored> for ScanView {
    fn from(s: Stored) -> Self {
        let (ranges, interval_secs) = s
            .settings
            .map(|x| (x.ranges, x.interval_secs))
            .unwrap_or_default();
        ScanView {
            ranges,
            interval_secs,
            updated_at: s.updated_at,
            applied: s.applied,
            applied_at: s.applied_at,
        }
    }
}

fn visible(scope: Option<&[i64]>, customer: i64) -> bool {
    scope.is_none_or(|s| s.contains(&customer))
}

/// The agents of the customers in `scope` (None: all), oldest first.
pub async fn agents(svc: &Services, scope: Option<&[i64]>) -> Result<Vec<AgentView>> {
    let mut scans: HashMap<String, Stored> = svc
        .store
        .all_scan_settings()
        .await?
        .into_iter()
        .map(|r| (r.agent_id.clone(), Stored::from(r)))
        .collect();
    Ok(svc
        .store
        .agents()
        .await?
        .into_iter()
        .filter(|a| visible(scope, a.customer_id))
        .map(|a| AgentView {
            connected: svc.agents.get(&a.id).is_some(),
            scan: scans.remove(&a.id).map(ScanView::from).unwrap_or_default(),
            revoked: a.revoked_at.is_some(),
            id: a.id,
            name: a.name,
            customer: a.customer,
            customer_id: a.customer_id,
            hostname: a.hostname,
            last_seen: a.last_seen,
        })
        .collect())
}

/// The customers in `scope` with their counts, by name.
pub async fn customers(svc: &Services, scope: Option<&[i64]>) -> Result<Vec<CustomerCounts>> {
    Ok(svc
        .store
        .customer_counts()
        .await?
        .into_iter()
        .filter(|c| visible(scope, c.id))
        .collect())
}

pub async fn customer(svc: &Services, id: i64) -> Result<CustomerRow> {
    svc.store
        .customer(id)
        .await?
        .ok_or_else(|| TelemetryError::NotFound(format!("no customer {id}")))
}

/// An agent, whether it is connected (and what it said when it did),
/// when it last uploaded telemetry, and its scan settings.
#[derive(Debug, Clone)]
pub struct AgentDetail {
    pub agent: AgentRow,
    /// What the agent said when it connected (native agents).
    pub hello: Option<dwa_proto::control::Hello>,
    pub connected: bool,
    pub last_telemetry: Option<String>,
    pub scan: Stored,
}

pub async fn agent_row(svc: &Services, id: &str) -> Result<AgentRow> {
    svc.store
        .agent(id)
        .await?
        .ok_or_else(|| TelemetryError::NotFound(format!("no agent {id}")))
}

pub async fn agent(svc: &Services, id: &str) -> Result<AgentDetail> {
    let agent = agent_row(svc, id).await?;
    let conn = svc.agents.get(id);
    Ok(AgentDetail {
        connected: conn.is_some(),
        hello: conn.and_then(|c| c.native()).map(|n| n.hello),
        last_telemetry: svc.store.last_reading_received(id).await?,
        scan: settings::load(svc, id).await?,
        agent,
    })
}
