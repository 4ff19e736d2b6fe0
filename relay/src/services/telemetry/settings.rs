//! Scan settings per agent, made on the relay (`PUT /api/v1/agents/{id}/scan`),
//! stored in `agent_scan_settings`, and sent as `ScanConfig` to the agent
//! now if it is connected and after every (re)connect; the agent's answer
//! (`ScanConfigApplied`) is stored and audited. Also scan-now.

use dwa_proto::audit::kind;
use dwa_proto::control::{ControlMsg, ScanApplied, ScanSettings};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::Range;
use crate::app::Relay;
use crate::db::Db;
use crate::error::{RelayError, Result};
use crate::util::{now_rfc3339, random_secret};

/// Most ranges one agent is given.
pub const MAX_RANGES: usize = 256;
pub const MIN_INTERVAL_SECS: u64 = 60;
pub const MAX_INTERVAL_SECS: u64 = 7 * 24 * 3600;

/// An interval as the API takes it: seconds, or a duration text ("5m").
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Interval {
    Secs(u64),
    Text(String),
}

/// Body of `PUT /api/v1/agents/{id}/scan`. It replaces the stored
/// settings: an absent field leaves that setting to the agent's own config.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanInput {
    #[serde(default)]
    pub ranges: Option<Vec<String>>,
    #[serde(default)]
    pub interval: Option<Interval>,
}

/// Checks the input; the settings as they will be stored and sent.
pub fn validate(input: &ScanInput) -> Result<ScanSettings> {
    let ranges = match &input.ranges {
        None => None,
        Some(r) if r.len() > MAX_RANGES => {
            return Err(RelayError::Invalid(format!("at most {MAX_RANGES} ranges")))
        }
        Some(r) => {
            let mut out = vec![];
            for s in r {
                Range::parse(s)?;
                out.push(s.trim().to_string());
            }
            Some(out)
        }
    };
    let interval_secs = match &input.interval {
        None => None,
        Some(Interval::Secs(s)) => Some(*s),
        Some(Interval::Text(t)) => Some(crate::util::parse_duration(t)?.as_secs()),
    };
    if let Some(s) = interval_secs {
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&s) {
            return Err(RelayError::Invalid(format!(
                "interval must be 1 minute to 7 days (got {s} s)"
            )));
        }
    }
    Ok(ScanSettings {
        ranges,
        interval_secs,
    })
}

/// The stored settings (None: never set) and the agent's last answer.
pub async fn load(db: &Db, agent: &str) -> Result<(Option<ScanSettings>, Option<Value>)> {
    let r = sqlx::query(
        "SELECT ranges, interval_secs, applied FROM agent_scan_settings WHERE agent_id = ?",
    )
    .bind(agent)
    .fetch_optional(&db.pool)
    .await?;
    Ok(match r {
        None => (None, None),
        Some(r) => {
            let ranges: Option<String> = r.get("ranges");
            let interval: Option<i64> = r.get("interval_secs");
            let applied: Option<String> = r.get("applied");
            (
                Some(ScanSettings {
                    ranges: ranges.and_then(|t| serde_json::from_str(&t).ok()),
                    interval_secs: interval.map(|i| i as u64),
                }),
                applied.and_then(|t| serde_json::from_str(&t).ok()),
            )
        }
    })
}

pub async fn store(db: &Db, agent: &str, s: &ScanSettings, actor: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_scan_settings (agent_id, ranges, interval_secs, updated_at, updated_by) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (agent_id) DO UPDATE SET ranges = ?2, \
         interval_secs = ?3, updated_at = ?4, updated_by = ?5",
    )
    .bind(agent)
    .bind(s.ranges.as_ref().map(|r| json!(r).to_string()))
    .bind(s.interval_secs.map(|i| i as i64))
    .bind(now_rfc3339())
    .bind(actor)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Sends the stored settings to the agent if it is connected; returns
/// whether it was sent.
pub async fn push(relay: &Relay, agent: &str) -> Result<bool> {
    let (Some(s), _) = load(&relay.db, agent).await? else {
        return Ok(false);
    };
    let Some(native) = relay.agents.get(agent).and_then(|c| c.native()) else {
        return Ok(false);
    };
    Ok(native.control.send(ControlMsg::ScanConfig(s)))
}

/// The agent's answer to a `ScanConfig`: stored and audited.
pub async fn applied(relay: &Relay, agent: &str, a: &ScanApplied) {
    let text = json!(a).to_string();
    let r = sqlx::query(
        "UPDATE agent_scan_settings SET applied = ?, applied_at = ? WHERE agent_id = ?",
    )
    .bind(&text)
    .bind(now_rfc3339())
    .bind(agent)
    .execute(&relay.db.pool)
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "storing the agent's applied scan settings");
    }
    relay
        .audit
        .record(
            kind::TELEMETRY_SCAN_CONFIG_APPLIED,
            &format!("agent:{agent}"),
            Some(agent),
            json!({"ranges": a.ranges, "interval_secs": a.interval_secs, "refused": a.refused}),
        )
        .await;
}

/// Asks a connected agent to scan now; returns the request id echoed in
/// the scan's trigger. 409 when the agent is not connected.
pub async fn scan_now(relay: &Relay, agent: &str, actor: &str) -> Result<String> {
    let Some(native) = relay.agents.get(agent).and_then(|c| c.native()) else {
        return Err(RelayError::Conflict(format!(
            "agent {agent} is not connected"
        )));
    };
    let request = random_secret(8);
    if !native.control.send(ControlMsg::ScanNow {
        request: request.clone(),
    }) {
        return Err(RelayError::Conflict(format!(
            "agent {agent} is disconnecting"
        )));
    }
    relay
        .audit
        .record(
            kind::TELEMETRY_SCAN_NOW,
            actor,
            Some(agent),
            json!({"request": request}),
        )
        .await;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> ScanInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ranges_and_interval_are_checked() {
        let s = validate(&input(
            json!({"ranges": ["10.0.0.0/24", "10.0.1.5-10.0.1.9"], "interval": "5m"}),
        ))
        .unwrap();
        assert_eq!(s.interval_secs, Some(300));
        assert_eq!(s.ranges.unwrap().len(), 2);
        assert_eq!(
            validate(&input(json!({"interval": 120})))
                .unwrap()
                .interval_secs,
            Some(120)
        );
        assert_eq!(
            validate(&input(json!({}))).unwrap(),
            ScanSettings::default()
        );
        for bad in [
            json!({"interval": 30}),
            json!({"interval": "10s"}),
            json!({"ranges": ["bogus"]}),
            json!({"interval": "soon"}),
        ] {
            assert!(validate(&input(bad.clone())).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<ScanInput>(json!({"rangez": []})).is_err());
    }

    #[tokio::test]
    async fn settings_are_stored_and_replaced() {
        let (_tmp, db) = crate::services::telemetry::testutil::db().await;
        assert_eq!(load(&db, "agt_a").await.unwrap().0, None);
        let s = ScanSettings {
            ranges: Some(vec!["10.0.0.0/24".into()]),
            interval_secs: Some(600),
        };
        store(&db, "agt_a", &s, "user:admin").await.unwrap();
        assert_eq!(load(&db, "agt_a").await.unwrap().0, Some(s));
        let s2 = ScanSettings {
            ranges: None,
            interval_secs: Some(60),
        };
        store(&db, "agt_a", &s2, "user:admin").await.unwrap();
        assert_eq!(load(&db, "agt_a").await.unwrap().0, Some(s2));
    }
}
