//! Scan settings per agent, made on the relay (`PUT /api/v1/agents/{id}/scan`),
//! stored in `agent_scan_settings`, and sent as `ScanConfig` to the agent
//! now if it is connected and after every (re)connect; the agent's answer
//! (`ScanConfigApplied`) is stored and audited. Also scan-now.

use dwa_proto::audit::Event;
use dwa_proto::control::{ControlMsg, ScanApplied, ScanSettings};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Range, Result, TelemetryError};
use crate::services::Services;
use crate::util::random_secret;

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
            return Err(TelemetryError::Invalid(format!(
                "at most {MAX_RANGES} ranges"
            )))
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
        Some(Interval::Text(t)) => Some(
            crate::util::parse_duration(t)
                .map_err(|e| TelemetryError::Invalid(e.to_string()))?
                .as_secs(),
        ),
    };
    if let Some(s) = interval_secs {
        if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&s) {
            return Err(TelemetryError::Invalid(format!(
                "interval must be 1 minute to 7 days (got {s} s)"
            )));
        }
    }
    Ok(ScanSettings {
        ranges,
        interval_secs,
    })
}

/// An agent's scan settings as stored, with the agent's last answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stored {
    /// None: never set on the relay.
    pub settings: Option<ScanSettings>,
    pub updated_at: Option<String>,
    /// The agent's last `ScanConfigApplied`, as it sent it.
    pub applied: Option<Value>,
    pub applied_at: Option<String>,
}

/// The stored settings (None: never set) and the agent's last answer.
pub async fn load(svc: &Services, agent: &str) -> Result<Stored> {
    Ok(svc
        .store
        .scan_settings(agent)
        .await?
        .map(Stored::from)
        .unwrap_or_default())
}

impl From<dwa_store::settings::ScanSettingsRow> for Stored {
    fn from(r: dwa_store::settings::ScanSettingsRow) -> Self {
        Stored {
            settings: Some(ScanSettings {
                ranges: r.ranges.and_then(|t| serde_json::from_str(&t).ok()),
                interval_secs: r.interval_secs.and_then(|i| u64::try_from(i).ok()),
            }),
            updated_at: Some(r.updated_at),
            applied: r.applied.and_then(|t| serde_json::from_str(&t).ok()),
            applied_at: r.applied_at,
        }
    }
}

pub async fn store(svc: &Services, agent: &str, s: &ScanSettings, actor: &str) -> Result<()> {
    let ranges = s.ranges.as_ref().map(|r| json!(r).to_string());
    let interval = s.interval_secs.and_then(|i| i64::try_from(i).ok());
    svc.store
        .put_scan_settings(
            agent,
            ranges.as_deref(),
            interval,
            &svc.time.rfc3339(),
            actor,
        )
        .await?;
    Ok(())
}

/// What replacing an agent's scan settings did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanSet {
    pub agent: String,
    pub ranges: Option<Vec<String>>,
    pub interval_secs: Option<u64>,
    /// Sent to the agent at once (it was connected).
    pub pushed: bool,
}

/// Replaces an agent's scan settings (checked), pushes them if it is
/// connected, and audits the change. The caller has checked that `actor`
/// may operate the agent.
pub async fn set(svc: &Services, agent: &str, input: &ScanInput, actor: &str) -> Result<ScanSet> {
    let s = validate(input)?;
    store(svc, agent, &s, actor).await?;
    let pushed = push(svc, agent).await?;
    svc.audit
        .record(
            Event::TelemetryScanConfig {
                ranges: s.ranges.clone(),
                interval_secs: s.interval_secs,
                pushed,
            },
            actor,
            Some(agent),
        )
        .await;
    Ok(ScanSet {
        agent: agent.to_string(),
        ranges: s.ranges,
        interval_secs: s.interval_secs,
        pushed,
    })
}

/// Sends the stored settings to the agent if it is connected; returns
/// whether it was sent.
pub async fn push(svc: &Services, agent: &str) -> Result<bool> {
    let Some(s) = load(svc, agent).await?.settings else {
        return Ok(false);
    };
    let Some(conn) = svc.agents.get(agent) else {
        return Ok(false);
    };
    let Some(native) = conn.native() else {
        return Ok(false);
    };
    conn.expect_scan_answer();
    Ok(native.control.send(ControlMsg::ScanConfig(s)))
}

/// The agent's answer to a `ScanConfig`: stored and audited.
pub async fn applied(svc: &Services, agent: &str, a: &ScanApplied) {
    let text = json!(a).to_string();
    if let Err(e) = svc
        .store
        .scan_settings_applied(agent, &text, &svc.time.rfc3339())
        .await
    {
        tracing::error!(error = %e, "storing the agent's applied scan settings");
    }
    svc.audit
        .record(
            Event::TelemetryScanConfigApplied {
                ranges: a.ranges.clone(),
                interval_secs: a.interval_secs,
                refused: a.refused.clone(),
            },
            &format!("agent:{agent}"),
            Some(agent),
        )
        .await;
}

/// Asks a connected agent to scan now; returns the request id echoed in
/// the scan's trigger. A conflict when the agent is not connected.
pub async fn scan_now(svc: &Services, agent: &str, actor: &str) -> Result<String> {
    let Some(native) = svc.agents.get(agent).and_then(|c| c.native()) else {
        return Err(TelemetryError::Conflict(format!(
            "agent {agent} is not connected"
        )));
    };
    let request = random_secret(8);
    if !native.control.send(ControlMsg::ScanNow {
        request: request.clone(),
    }) {
        return Err(TelemetryError::Conflict(format!(
            "agent {agent} is disconnecting"
        )));
    }
    svc.audit
        .record(
            Event::TelemetryScanNow {
                request: request.clone(),
            },
            actor,
            Some(agent),
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
        let (_tmp, svc) = crate::testutil::svc().await;
        let db = &*svc;
        assert_eq!(load(db, "agt_a").await.unwrap().settings, None);
        let s = ScanSettings {
            ranges: Some(vec!["10.0.0.0/24".into()]),
            interval_secs: Some(600),
        };
        store(db, "agt_a", &s, "user:admin").await.unwrap();
        assert_eq!(load(db, "agt_a").await.unwrap().settings, Some(s));
        let s2 = ScanSettings {
            ranges: None,
            interval_secs: Some(60),
        };
        store(db, "agt_a", &s2, "user:admin").await.unwrap();
        assert_eq!(load(db, "agt_a").await.unwrap().settings, Some(s2));
    }
}
