//! Agents' uploads of spooled telemetry (`POST /agent/v1/ingest`; the
//! HTTP side, with its body limits, is `adapters::http::ingest`).
//!
//! Order of checks, cheapest refusal first: [`identify`] — the
//! `Authorization` header parses and names a known, unrevoked agent; then,
//! once the adapter has the bounded body, [`accept`] — the signature covers
//! this body, the JSON is a batch of at most `MAX_BATCH_ITEMS` items.
//! Refusals of who is calling are audited.
//!
//! The batch is stored in one write transaction ([`store_batch`]): on any
//! storage error nothing of it stays (the agent retries). An invalid item
//! is `rejected` with its reason and the others are stored; an item stored
//! before (by this agent) is `accepted` again without a second copy.

use dwa_link::agent_auth::Signed;
use dwa_proto::audit::Event;
use dwa_proto::telemetry::{
    IngestAck, IngestBatch, IngestItem, Reading, Rejected, ScanDone, INGEST_PATH, MAX_BATCH_ITEMS,
};
use dwa_store::readings::{NewReading, NewScan};
use dwa_store::Tx;
use serde_json::json;

use super::alerts::{self, Rules};
use super::{inventory, normalize_time, AgentInfo, Result, TelemetryError};
use crate::config::RelayConfig;
use crate::services::error::{Class, Failure};
use crate::services::Services;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Who is calling could not be established (audited).
    #[error("{0}")]
    Unauthorized(String),
    /// Not a batch.
    #[error("{0}")]
    Invalid(String),
    /// More items than one batch may hold.
    #[error("{0}")]
    TooManyItems(String),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

impl Failure for IngestError {
    fn class(&self) -> Class {
        match self {
            IngestError::Unauthorized(_) => Class::Unauthorized,
            IngestError::Invalid(_) | IngestError::TooManyItems(_) => Class::Invalid,
            IngestError::Telemetry(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::Invalid(_) => "invalid",
            IngestError::TooManyItems(_) => "too_many_items",
            IngestError::Telemetry(e) => e.code(),
        }
    }
}

impl From<dwa_store::StoreError> for IngestError {
    fn from(e: dwa_store::StoreError) -> Self {
        IngestError::Telemetry(e.into())
    }
}

/// The agent an upload claims to come from, known and not revoked; its
/// signature is checked by [`accept`].
#[derive(Debug)]
pub struct Uploader {
    signed: Signed,
    public_key: String,
    pub agent: AgentInfo,
}

async fn refuse(svc: &Services, peer: &str, agent: Option<&str>, reason: String) -> IngestError {
    crate::services::refusals::record(
        svc,
        crate::services::refusals::source_of(peer),
        Event::TelemetryAuthRefused {
            reason: reason.clone(),
        },
        &format!("peer:{peer}"),
        agent,
    )
    .await;
    IngestError::Unauthorized(reason)
}

/// Who is uploading, from the `Authorization` header, before the body is
/// read.
pub async fn identify(
    svc: &Services,
    peer: &str,
    authorization: &str,
) -> Result<Uploader, IngestError> {
    let signed = match Signed::parse(authorization) {
        Ok(s) => s,
        Err(e) => return Err(refuse(svc, peer, None, e.to_string()).await),
    };
    let Some(row) = svc.store.agent(&signed.agent).await? else {
        let why = format!("unknown agent {}", signed.agent);
        return Err(refuse(svc, peer, None, why).await);
    };
    if row.revoked_at.is_some() {
        return Err(refuse(svc, peer, Some(&row.id), "agent revoked".into()).await);
    }
    Ok(Uploader {
        signed,
        public_key: row.public_key,
        agent: AgentInfo {
            id: row.id,
            customer_id: row.customer_id,
        },
    })
}

/// Checks the signature over `body`, parses the batch and stores it.
pub async fn accept(
    svc: &Services,
    peer: &str,
    up: &Uploader,
    body: &[u8],
) -> Result<IngestAck, IngestError> {
    let key = dwa_link::ssh::parse_public(&up.public_key)
        .map_err(|e| TelemetryError::Internal(format!("stored agent key: {e}")))?;
    let now = u64::try_from(svc.time.unix()).unwrap_or(0);
    if let Err(e) = up.signed.verify(&key, "POST", INGEST_PATH, body, now) {
        return Err(refuse(svc, peer, Some(&up.agent.id), e.to_string()).await);
    }
    let batch: IngestBatch =
        serde_json::from_slice(body).map_err(|e| IngestError::Invalid(format!("batch: {e}")))?;
    if batch.items.len() > MAX_BATCH_ITEMS {
        return Err(IngestError::TooManyItems(format!(
            "{} items in one batch; at most {MAX_BATCH_ITEMS}",
            batch.items.len()
        )));
    }
    let (ack, events) = store_batch(svc, &up.agent, &batch.items).await?;
    if events > 0 {
        svc.telemetry.wake.notify_one();
        svc.telemetry.mail_wake.notify_one();
    }
    if let Err(e) = svc
        .store
        .touch_agent(&up.agent.id, &svc.time.rfc3339())
        .await
    {
        tracing::warn!(agent = %up.agent.id, error = %e, "noting the agent's last upload");
    }
    tracing::debug!(agent = %up.agent.id, accepted = ack.accepted.len(), rejected = ack.rejected.len(), "ingest");
    Ok(ack)
}

/// Ids are the agent's random 128-bit hex; accept a little more, not
/// anything.
fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TelemetryError::Invalid(format!(
            "{what} must be 1..=64 characters of letters, digits, '-' or '_'"
        )))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(TelemetryError::Invalid(format!(
            "{field}: longer than {max} bytes"
        )));
    }
    Ok(())
}

/// The counters of a stored reading and when it was taken; None when it
/// does not parse (stored by ingest only: then no counter alert).
fn previous_counters(
    taken_at: &str,
    record: &str,
) -> Option<(i64, dwa_proto::telemetry::Counters)> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(default)]
        counters: dwa_proto::telemetry::Counters,
    }
    let at = humantime::parse_rfc3339(taken_at).ok()?;
    let r: Only = serde_json::from_str(record).ok()?;
    Some((crate::services::clock::unix(at), r.counters))
}

/// A reading as stored: its normalised time.
fn check_reading(r: &Reading) -> Result<String> {
    check_id("scan", &r.scan)?;
    let taken = normalize_time("taken_at", &r.taken_at)?;
    r.record.address.parse::<std::net::IpAddr>().map_err(|_| {
        TelemetryError::Invalid(format!(
            "record.address {:?} is not an IP address",
            r.record.address
        ))
    })?;
    for (f, v) in [
        ("record.serial", &r.record.serial),
        ("record.mac", &r.record.mac),
        ("record.manufacturer", &r.record.manufacturer),
        ("record.model", &r.record.model),
    ] {
        check_text(f, v.as_deref().unwrap_or(""), 256)?;
    }
    Ok(taken)
}

fn check_scan(s: &ScanDone) -> Result<(String, String)> {
    let started = normalize_time("started_at", &s.started_at)?;
    let finished = normalize_time("finished_at", &s.finished_at)?;
    check_text("trigger", &s.trigger, 64)?;
    if s.ranges.len() > 1024 {
        return Err(TelemetryError::Invalid("more than 1024 ranges".into()));
    }
    for r in &s.ranges {
        check_text("ranges", r, 100)?;
    }
    Ok((started, finished))
}

/// Stores one batch for `agent`; returns the ack and how many webhook
/// events were queued.
pub async fn store_batch(
    svc: &Services,
    agent: &AgentInfo,
    items: &[IngestItem],
) -> Result<(IngestAck, usize)> {
    let now = svc.time.rfc3339();
    let now_unix = svc.time.unix();
    // Dropped (rolled back) on any error: nothing of the batch stays.
    let mut tx = svc.store.begin().await?;
    let rules = alerts::load_rules(&mut tx, agent.customer_id).await?;
    let mut ack = IngestAck::default();
    let mut events = 0;
    let mut readings = 0u64;
    let at = Stamp {
        now: &now,
        unix: now_unix,
    };
    for item in items {
        let id = item.id();
        match store_item(&mut tx, &svc.cfg(), agent, &rules, item, at).await {
            Ok(n) => {
                events += n;
                readings += u64::from(matches!(item, IngestItem::Reading(_)));
                ack.accepted.push(id.to_string());
            }
            Err(TelemetryError::Invalid(e)) => ack.rejected.push(Rejected {
                id: id.to_string(),
                error: e,
            }),
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    // Counted once committed: a batch rolled back stored nothing.
    svc.metrics
        .readings(readings, u64::try_from(ack.rejected.len()).unwrap_or(0));
    Ok((ack, events))
}

/// The batch's time, in the store's two forms.
#[derive(Clone, Copy)]
struct Stamp<'a> {
    now: &'a str,
    unix: i64,
}

/// One item; `Invalid` errors are raised before anything is written.
async fn store_item(
    tx: &mut Tx,
    cfg: &RelayConfig,
    agent: &AgentInfo,
    rules: &Rules,
    item: &IngestItem,
    at: Stamp<'_>,
) -> Result<usize> {
    let id = item.id();
    check_id("id", id)?;
    match tx.item_owner(id).await? {
        Some(a) if a == agent.id => return Ok(0),
        Some(_) => {
            return Err(TelemetryError::Invalid(
                "item id already used by another agent".into(),
            ))
        }
        None => {}
    }
    let now = at.now;
    let changes = match item {
        IngestItem::Reading(r) => {
            let taken = check_reading(r)?;
            let record = serde_json::to_string(&r.record)
                .map_err(|e| TelemetryError::Invalid(format!("record: {e}")))?;
            tx.insert_item(id, &agent.id, "reading", now).await?;
            let m = inventory::match_device(tx, agent, &r.record, id, &r.scan, &taken, now).await?;
            let identity = r.record.identity().key();
            tx.insert_reading(&NewReading {
                id,
                device_id: m.device_id,
                agent_id: &agent.id,
                scan: &r.scan,
                taken_at: &taken,
                received_at: now,
                address: &r.record.address,
                identity: &identity,
                record: &record,
            })
            .await?;
            if m.newest {
                let prev = tx.reading_before(m.device_id, &taken, id).await?;
                let prev = prev.and_then(|p| previous_counters(&p.taken_at, &p.record));
                let at = humantime::parse_rfc3339(&taken).map(crate::services::clock::unix);
                let step = match (&prev, at) {
                    (Some((prev_at, c)), Ok(at)) => Some(alerts::Step {
                        prev: c,
                        prev_at: *prev_at,
                        at,
                    }),
                    _ => None,
                };
                alerts::evaluate_reading(
                    tx,
                    m.device_id,
                    agent.customer_id,
                    &r.record,
                    step,
                    rules,
                    now,
                )
                .await?
            } else {
                vec![]
            }
        }
        IngestItem::ScanDone(s) => {
            let (started, finished) = check_scan(s)?;
            tx.insert_item(id, &agent.id, "scan_done", now).await?;
            let ranges = serde_json::to_string(&s.ranges).unwrap_or_else(|_| "[]".into());
            tx.insert_scan(&NewScan {
                id,
                agent_id: &agent.id,
                started_at: &started,
                finished_at: &finished,
                trigger: &s.trigger,
                ranges: &ranges,
                addresses: i64::from(s.addresses),
                found: i64::from(s.found),
                received_at: now,
            })
            .await?;
            alerts::evaluate_scan_done(tx, agent, id, &s.ranges, rules, now).await?
        }
    };
    let mut queued = 0;
    for c in &changes {
        let alert = alerts::AlertView::from(tx.alert(c.alert_id).await?);
        let event = if c.raised {
            "alert.raised"
        } else {
            "alert.resolved"
        };
        if super::email::enqueue(tx, cfg, rules, &alert, c.raised, at.now, at.unix).await? {
            queued += 1;
        }
        if cfg.alerts.webhook_url.is_some()
            && super::webhook::enqueue(
                tx,
                &cfg.alerts,
                event,
                json!({"alert": alert}),
                at.now,
                at.unix,
            )
            .await?
        {
            queued += 1;
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_proto::telemetry::{DeviceRecord, ErrorState, Level, Supply, SupplyClass, SupplyKind};
    use dwa_store::alerts::AlertState;

    fn agent(id: &str) -> AgentInfo {
        AgentInfo {
            id: id.into(),
            customer_id: if id == "agt_x" { 2 } else { 1 },
        }
    }

    fn rec(address: &str, serial: Option<&str>, mac: Option<&str>) -> DeviceRecord {
        DeviceRecord {
            address: address.into(),
            manufacturer: Some("HP".into()),
            serial: serial.map(str::to_string),
            mac: mac.map(str::to_string),
            ..Default::default()
        }
    }

    fn reading(id: &str, scan: &str, minute: u32, record: DeviceRecord) -> IngestItem {
        IngestItem::Reading(Reading {
            id: id.into(),
            scan: scan.into(),
            taken_at: format!("2026-11-22T10:{minute:02}:00Z"),
            record,
        })
    }

    fn done(id: &str, ranges: &[&str]) -> IngestItem {
        IngestItem::ScanDone(ScanDone {
            id: id.into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            finished_at: "2026-11-22T10:00:05Z".into(),
            trigger: "schedule".into(),
            ranges: ranges.iter().map(|r| r.to_string()).collect(),
            addresses: 254,
            found: 1,
        })
    }

    async fn put(svc: &Services, a: &str, items: Vec<IngestItem>) -> IngestAck {
        store_batch(svc, &agent(a), &items).await.expect("store").0
    }

    async fn device_of(svc: &Services, reading: &str) -> i64 {
        svc.store
            .reading_device(reading)
            .await
            .unwrap()
            .expect("reading stored")
    }

    async fn view(svc: &Services, device: i64) -> dwa_store::devices::DeviceViewRow {
        svc.store
            .device_view(device)
            .await
            .unwrap()
            .expect("device")
    }

    async fn address(svc: &Services, device: i64) -> (String, Option<String>) {
        let d = view(svc, device).await;
        (d.address, d.displaced_from)
    }

    async fn counts(svc: &Services) -> dwa_store::readings::TelemetryCounts {
        svc.store.telemetry_counts().await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_posted_twice_is_stored_once() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        let items = vec![
            reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None)),
            reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None)),
            done("s1", &["10.0.0.0/24"]),
        ];
        let ack = put(db, "agt_a", items.clone()).await;
        assert_eq!(ack.accepted, vec!["r1", "r1", "s1"]);
        assert!(ack.rejected.is_empty());
        let ack = put(db, "agt_a", items).await;
        assert_eq!(ack.accepted.len(), 3);
        let n = counts(db).await;
        assert_eq!((n.readings, n.scans, n.devices), (1, 1, 1));
        // Another agent cannot reuse (or probe) the id.
        let ack = put(
            db,
            "agt_b",
            vec![reading("r1", "s9", 2, rec("10.0.0.9", None, None))],
        )
        .await;
        assert_eq!(ack.rejected.len(), 1);
        assert_eq!(counts(db).await.readings, 1);
    }

    #[tokio::test]
    async fn identity_survives_an_address_change() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        put(
            db,
            "agt_a",
            vec![reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None))],
        )
        .await;
        put(
            db,
            "agt_a",
            vec![reading("r2", "s2", 2, rec("10.0.0.6", Some("A1"), None))],
        )
        .await;
        let d = device_of(db, "r1").await;
        assert_eq!(device_of(db, "r2").await, d);
        assert_eq!(address(db, d).await, ("10.0.0.6".into(), None));
        let v = view(db, d).await;
        assert_eq!(
            (v.first_seen.as_deref(), v.last_seen.as_deref()),
            (
                Some("2026-11-22T10:01:00.000Z"),
                Some("2026-11-22T10:02:00.000Z")
            )
        );
        // An older reading drained late does not move it back.
        put(
            db,
            "agt_a",
            vec![reading("r0", "s0", 0, rec("10.0.0.5", Some("A1"), None))],
        )
        .await;
        assert_eq!(device_of(db, "r0").await, d);
        assert_eq!(address(db, d).await.0, "10.0.0.6");
        // Another agent of the same customer sees it: it follows; an agent
        // of another customer gets its own device.
        put(
            db,
            "agt_b",
            vec![reading("r3", "s3", 3, rec("192.168.1.5", Some("A1"), None))],
        )
        .await;
        assert_eq!(device_of(db, "r3").await, d);
        put(
            db,
            "agt_x",
            vec![reading("r4", "s4", 4, rec("192.168.1.5", Some("A1"), None))],
        )
        .await;
        assert_ne!(device_of(db, "r4").await, d);
        // Found by MAC when the serial did not decode; the identity is kept.
        put(
            db,
            "agt_a",
            vec![reading(
                "m1",
                "s5",
                5,
                rec("10.0.0.20", Some("B1"), Some("00:AA:00:00:00:01")),
            )],
        )
        .await;
        put(
            db,
            "agt_a",
            vec![reading(
                "m2",
                "s6",
                6,
                rec("10.0.0.21", None, Some("00:aa:00:00:00:01")),
            )],
        )
        .await;
        let m = device_of(db, "m1").await;
        assert_eq!(device_of(db, "m2").await, m);
        assert_eq!(view(db, m).await.identity.as_deref(), Some("serial:hp:B1"));
    }

    #[tokio::test]
    async fn a_hand_added_device_is_claimed_and_weak_readings_stay_with_it() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        let hand = db
            .store
            .add_device(
                "agt_a",
                "10.0.0.7",
                Some("front desk"),
                "2026-01-01T00:00:00.000Z",
            )
            .await
            .unwrap();
        put(
            db,
            "agt_a",
            vec![reading("r1", "s1", 1, rec("10.0.0.7", Some("C1"), None))],
        )
        .await;
        assert_eq!(device_of(db, "r1").await, hand);
        // No serial or MAC this time: still the same device, identity kept.
        put(
            db,
            "agt_a",
            vec![reading("r2", "s2", 2, rec("10.0.0.7", None, None))],
        )
        .await;
        assert_eq!(device_of(db, "r2").await, hand);
        let v = view(db, hand).await;
        assert_eq!(
            (v.identity.as_deref(), v.name.as_deref()),
            (Some("serial:hp:C1"), Some("front desk"))
        );
        assert_eq!(counts(db).await.devices, 1);
    }

    #[tokio::test]
    async fn a_device_taking_an_occupied_address_displaces_the_occupant() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        put(
            db,
            "agt_a",
            vec![
                reading("a1", "s1", 1, rec("10.0.0.5", Some("A"), None)),
                reading("b1", "s1", 1, rec("10.0.0.6", Some("B"), None)),
            ],
        )
        .await;
        let (a, b) = (device_of(db, "a1").await, device_of(db, "b1").await);
        // B moved to .5 (A is elsewhere now, not yet seen).
        put(
            db,
            "agt_a",
            vec![reading("b2", "s2", 2, rec("10.0.0.5", Some("B"), None))],
        )
        .await;
        assert_eq!(device_of(db, "b2").await, b);
        assert_eq!(address(db, b).await, ("10.0.0.5".into(), None));
        assert_eq!(
            address(db, a).await,
            (format!("displaced-{a}"), Some("10.0.0.5".into()))
        );
        // A turns up at .6: back to a real address.
        put(
            db,
            "agt_a",
            vec![reading("a2", "s2", 2, rec("10.0.0.6", Some("A"), None))],
        )
        .await;
        assert_eq!(address(db, a).await, ("10.0.0.6".into(), None));
        // A new printer replaces A at .6: a new device, A displaced.
        put(
            db,
            "agt_a",
            vec![reading("c1", "s3", 3, rec("10.0.0.6", Some("C"), None))],
        )
        .await;
        let c = device_of(db, "c1").await;
        assert!(c != a && c != b);
        assert_eq!(address(db, a).await.0, format!("displaced-{a}"));
        let history = db.store.device_readings(a, None, 1000).await.unwrap();
        assert_eq!(history.len(), 2);
    }

    #[tokio::test]
    async fn invalid_items_are_rejected_alone_and_a_failed_batch_leaves_nothing() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        let ack = put(
            db,
            "agt_a",
            vec![
                reading("ok1", "s1", 1, rec("10.0.0.5", Some("A"), None)),
                reading("bad id!", "s1", 1, rec("10.0.0.6", None, None)),
                reading("bad2", "s1", 1, rec("printer.local", None, None)),
                IngestItem::Reading(Reading {
                    id: "bad3".into(),
                    scan: "s1".into(),
                    taken_at: "yesterday".into(),
                    record: rec("10.0.0.7", None, None),
                }),
            ],
        )
        .await;
        assert_eq!(ack.accepted, vec!["ok1"]);
        let errors: Vec<&str> = ack.rejected.iter().map(|r| r.error.as_str()).collect();
        assert_eq!(ack.rejected.len(), 3, "{errors:?}");
        assert!(
            errors[1].contains("IP address") && errors[2].contains("taken_at"),
            "{errors:?}"
        );
        assert_eq!(counts(db).await.items, 1);
        // A storage failure in the middle of a batch rolls all of it back.
        db.store.fail_reading_insert("boom").await.unwrap();
        let r = store_batch(
            db,
            &agent("agt_a"),
            &[
                reading("ok2", "s2", 2, rec("10.0.0.8", Some("Z"), None)),
                reading("boom", "s2", 2, rec("10.0.0.9", None, None)),
            ],
        )
        .await;
        assert!(r.is_err());
        let n = counts(db).await;
        assert_eq!((n.items, n.devices), (1, 1));
    }

    fn toner(pct: f32) -> Supply {
        Supply {
            index: 1,
            description: Some("Black Toner".into()),
            kind: Some(SupplyKind::Toner),
            class: Some(SupplyClass::Consumed),
            colour: Some("black".into()),
            level: Level::Value(pct as i64),
            max: Level::Value(100),
            unit: Some("percent".into()),
            percent: Some(pct),
            fullness_percent: None,
        }
    }

    async fn alerts_in(svc: &Services, state: AlertState) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = svc
            .store
            .alerts(state, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.kind, a.subject))
            .collect();
        v.sort();
        v
    }

    async fn active(svc: &Services) -> Vec<(String, String)> {
        alerts_in(svc, AlertState::Active).await
    }

    #[tokio::test]
    async fn alerts_are_raised_once_and_resolved_when_the_condition_clears() {
        let (_t, svc) = crate::testutil::svc().await;
        let mut cfg = (*svc.cfg()).clone();
        cfg.alerts = crate::config::AlertsSection {
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            webhook_secret: Some(crate::config::Secret::new("0123456789abcdef")),
            ..Default::default()
        };
        svc.set_cfg(cfg);
        let db = &*svc;
        let mut r = rec("10.0.0.5", Some("A"), None);
        r.supplies = vec![toner(5.0)];
        r.error_states = vec![ErrorState::Jammed, ErrorState::LowPaper];
        let (_, ev) = store_batch(db, &agent("agt_a"), &[reading("r1", "s1", 1, r.clone())])
            .await
            .unwrap();
        assert_eq!(
            active(db).await,
            vec![
                ("jam".into(), String::new()),
                ("supply_low".into(), "Black Toner".into())
            ]
        );
        assert_eq!(ev, 2);
        // Still low, still jammed: nothing new.
        let (_, ev) = store_batch(db, &agent("agt_a"), &[reading("r2", "s2", 2, r.clone())])
            .await
            .unwrap();
        assert_eq!((ev, active(db).await.len()), (0, 2));
        // Fixed.
        r.supplies = vec![toner(60.0)];
        r.error_states = vec![];
        let (_, ev) = store_batch(db, &agent("agt_a"), &[reading("r3", "s3", 3, r.clone())])
            .await
            .unwrap();
        assert_eq!(ev, 2);
        assert!(active(db).await.is_empty());
        assert_eq!(alerts_in(db, AlertState::Resolved).await.len(), 2);
        let events: Vec<String> = db
            .store
            .outbox()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.event)
            .collect();
        assert_eq!(
            events,
            vec![
                "alert.raised",
                "alert.raised",
                "alert.resolved",
                "alert.resolved"
            ]
        );
        // A customer rule turns the supply threshold up.
        alerts::store_rules(
            db,
            1,
            &[alerts::RuleInput {
                kind: "supply_low".into(),
                enabled: true,
                threshold: Some(70.0),
                email_to: vec![],
                email_mode: Default::default(),
            }],
        )
        .await
        .unwrap();
        store_batch(db, &agent("agt_a"), &[reading("r4", "s4", 4, r)])
            .await
            .unwrap();
        assert_eq!(
            active(db).await,
            vec![("supply_low".into(), "Black Toner".into())]
        );
    }

    #[tokio::test]
    async fn a_device_missing_from_three_scans_is_silent_until_seen() {
        let (_t, svc) = crate::testutil::svc().await;
        let db = &*svc;
        let ranges = ["10.0.0.0/24"];
        put(
            db,
            "agt_a",
            vec![
                reading("r1", "s1", 1, rec("10.0.0.5", Some("A"), None)),
                reading("o1", "s1", 1, rec("10.9.0.5", Some("O"), None)),
                done("s1", &ranges),
            ],
        )
        .await;
        for (i, s) in ["s2", "s3"].iter().enumerate() {
            put(db, "agt_a", vec![done(s, &ranges)]).await;
            assert!(active(db).await.is_empty(), "after {} missed", i + 1);
        }
        put(db, "agt_a", vec![done("s4", &ranges)]).await;
        // Only A: the other device's address is outside the scanned range.
        assert_eq!(active(db).await, vec![("silent".into(), String::new())]);
        let a = device_of(db, "r1").await;
        assert_eq!(view(db, a).await.missed_scans, 3);
        put(db, "agt_a", vec![done("s5", &ranges)]).await;
        assert_eq!(
            alerts_in(db, AlertState::All).await.len(),
            1,
            "one active alert per device and kind"
        );
        put(
            db,
            "agt_a",
            vec![
                reading("r6", "s6", 6, rec("10.0.0.5", Some("A"), None)),
                done("s6", &ranges),
            ],
        )
        .await;
        assert!(active(db).await.is_empty());
    }
}
