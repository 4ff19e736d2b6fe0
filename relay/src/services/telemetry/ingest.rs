//! `POST /agent/v1/ingest`: agents upload spooled telemetry.
//!
//! Order of checks, cheapest refusal first: the `Authorization` header
//! parses and names a known, unrevoked agent (401); the body fits
//! `MAX_BATCH_BYTES` (413) and arrives within [`BODY_TIMEOUT`] (408); the
//! signature covers this body (401); the JSON is a batch (400) of at most
//! `MAX_BATCH_ITEMS` items (413). Auth refusals are audited.
//!
//! The batch is stored in one `BEGIN IMMEDIATE` transaction: on any storage
//! error nothing of it stays (500, the agent retries). An invalid item is
//! `rejected` with its reason and the others are stored; an item stored
//! before (by this agent) is `accepted` again without a second copy.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dwa_link::agent_auth::Signed;
use dwa_proto::audit::kind;
use dwa_proto::telemetry::{
    IngestAck, IngestBatch, IngestItem, Reading, Rejected, ScanDone, INGEST_PATH, MAX_BATCH_BYTES,
    MAX_BATCH_ITEMS,
};
use http_body_util::BodyExt;
use serde_json::json;
use sqlx::{Row, SqliteConnection};

use super::alerts::{self, Rules};
use super::{inventory, normalize_time, AgentInfo};
use crate::adapters::http::{api_error, PeerAddr};
use crate::app::Relay;
use crate::config::AlertsSection;
use crate::db::Db;
use crate::error::{RelayError, Result};
use crate::util::{now_rfc3339, unix_now};

/// A body that trickles in cannot hold a connection for long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);

async fn refuse(relay: &Relay, peer: &str, agent: Option<&str>, reason: String) -> Response {
    relay
        .audit
        .record(
            kind::TELEMETRY_AUTH_REFUSED,
            &format!("peer:{peer}"),
            agent,
            json!({"reason": reason}),
        )
        .await;
    api_error(StatusCode::UNAUTHORIZED, "unauthorized", reason)
}

/// Upload a batch of spooled telemetry, signed by the agent's key.
#[utoipa::path(
    post,
    path = "/agent/v1/ingest",
    tag = "agent",
    security(("agent_signature" = [])),
    request_body(content = Object, description = "An `IngestBatch`: `{items: [...]}`"),
    responses(
        (status = 200, description = "`IngestAck`: per item accepted or rejected with its reason",
         body = Object),
        (status = 400, description = "Not a batch", body = crate::adapters::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or bad agent signature",
         body = crate::adapters::openapi::ErrorBody),
        (status = 408, description = "Body not received in time", body = crate::adapters::openapi::ErrorBody),
        (status = 413, description = "Batch too large", body = crate::adapters::openapi::ErrorBody),
    )
)]
pub async fn handler(
    State(relay): State<Relay>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    req: Request,
) -> Response {
    let peer = peer.to_string();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let signed = match Signed::parse(header) {
        Ok(s) => s,
        Err(e) => return refuse(&relay, &peer, None, e.to_string()).await,
    };
    let row =
        match sqlx::query("SELECT customer_id, public_key, revoked_at FROM agents WHERE id = ?")
            .bind(&signed.agent)
            .fetch_optional(&relay.db.pool)
            .await
        {
            Ok(r) => r,
            Err(e) => return RelayError::from(e).into_response(),
        };
    let Some(row) = row else {
        return refuse(
            &relay,
            &peer,
            None,
            format!("unknown agent {}", signed.agent),
        )
        .await;
    };
    if row.get::<Option<String>, _>("revoked_at").is_some() {
        return refuse(&relay, &peer, Some(&signed.agent), "agent revoked".into()).await;
    }
    let agent = AgentInfo {
        id: signed.agent.clone(),
        customer_id: row.get("customer_id"),
    };
    let key = match dwa_link::ssh::parse_public(&row.get::<String, _>("public_key")) {
        Ok(k) => k,
        Err(e) => return RelayError::Key(e).into_response(),
    };
    let too_large = || {
        api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {MAX_BATCH_BYTES} bytes; send fewer items per batch"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES as u64) {
        return too_large();
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BATCH_BYTES);
    let body = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => {
            return api_error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "body not received in time",
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("reading the body: {e}"),
            )
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if let Err(e) = signed.verify(&key, "POST", INGEST_PATH, &body, unix_now() as u64) {
        return refuse(&relay, &peer, Some(&agent.id), e.to_string()).await;
    }
    let batch: IngestBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "invalid", format!("batch: {e}")),
    };
    if batch.items.len() > MAX_BATCH_ITEMS {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!(
                "{} items in one batch; at most {MAX_BATCH_ITEMS}",
                batch.items.len()
            ),
        );
    }
    match store_batch(&relay.db, &relay.cfg.alerts, &agent, &batch.items).await {
        Ok((ack, events)) => {
            if events > 0 {
                relay.telemetry.wake.notify_one();
            }
            let _ = relay
                .store
                .touch_agent(&agent.id, &relay.time.rfc3339())
                .await;
            tracing::debug!(agent = %agent.id, accepted = ack.accepted.len(), rejected = ack.rejected.len(), "ingest");
            Json(ack).into_response()
        }
        Err(e) => e.into_response(),
    }
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
        Err(RelayError::Invalid(format!(
            "{what} must be 1..=64 characters of letters, digits, '-' or '_'"
        )))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(RelayError::Invalid(format!(
            "{field}: longer than {max} bytes"
        )));
    }
    Ok(())
}

/// A reading as stored: its normalised time.
fn check_reading(r: &Reading) -> Result<String> {
    check_id("scan", &r.scan)?;
    let taken = normalize_time("taken_at", &r.taken_at)?;
    r.record.address.parse::<std::net::IpAddr>().map_err(|_| {
        RelayError::Invalid(format!(
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
        return Err(RelayError::Invalid("more than 1024 ranges".into()));
    }
    for r in &s.ranges {
        check_text("ranges", r, 100)?;
    }
    Ok((started, finished))
}

/// Stores one batch for `agent`; returns the ack and how many webhook
/// events were queued.
pub async fn store_batch(
    db: &Db,
    alerts_cfg: &AlertsSection,
    agent: &AgentInfo,
    items: &[IngestItem],
) -> Result<(IngestAck, usize)> {
    // Dropped (rolled back) on any error: nothing of the batch stays.
    let mut tx = db.pool.begin_with("BEGIN IMMEDIATE").await?;
    let rules = alerts::load_rules(&mut tx, agent.customer_id).await?;
    let mut ack = IngestAck::default();
    let mut events = 0;
    for item in items {
        let id = item.id();
        match store_item(&mut tx, alerts_cfg, agent, &rules, item).await {
            Ok(n) => {
                events += n;
                ack.accepted.push(id.to_string());
            }
            Err(RelayError::Invalid(e)) => ack.rejected.push(Rejected {
                id: id.to_string(),
                error: e,
            }),
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok((ack, events))
}

/// One item; `Invalid` errors are raised before anything is written.
async fn store_item(
    conn: &mut SqliteConnection,
    alerts_cfg: &AlertsSection,
    agent: &AgentInfo,
    rules: &Rules,
    item: &IngestItem,
) -> Result<usize> {
    let id = item.id();
    check_id("id", id)?;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT agent_id FROM telemetry_items WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    match owner {
        Some(a) if a == agent.id => return Ok(0),
        Some(_) => {
            return Err(RelayError::Invalid(
                "item id already used by another agent".into(),
            ))
        }
        None => {}
    }
    let now = now_rfc3339();
    let changes = match item {
        IngestItem::Reading(r) => {
            let taken = check_reading(r)?;
            let record = serde_json::to_string(&r.record)
                .map_err(|e| RelayError::Invalid(format!("record: {e}")))?;
            insert_item(conn, id, agent, "reading", &now).await?;
            let m = inventory::match_device(conn, agent, &r.record, id, &r.scan, &taken).await?;
            sqlx::query(
                "INSERT INTO readings (id, device_id, agent_id, scan, taken_at, received_at, address, identity, record) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(m.device_id)
            .bind(&agent.id)
            .bind(&r.scan)
            .bind(&taken)
            .bind(&now)
            .bind(&r.record.address)
            .bind(r.record.identity().key())
            .bind(record)
            .execute(&mut *conn)
            .await?;
            if m.newest {
                alerts::evaluate_reading(conn, m.device_id, agent.customer_id, &r.record, rules)
                    .await?
            } else {
                vec![]
            }
        }
        IngestItem::ScanDone(s) => {
            let (started, finished) = check_scan(s)?;
            insert_item(conn, id, agent, "scan_done", &now).await?;
            sqlx::query(
                "INSERT INTO scans (id, agent_id, started_at, finished_at, trigger, ranges, addresses, found, received_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&agent.id)
            .bind(started)
            .bind(finished)
            .bind(&s.trigger)
            .bind(serde_json::to_string(&s.ranges).unwrap_or_else(|_| "[]".into()))
            .bind(i64::from(s.addresses))
            .bind(i64::from(s.found))
            .bind(&now)
            .execute(&mut *conn)
            .await?;
            alerts::evaluate_scan_done(conn, agent, id, &s.ranges, rules).await?
        }
    };
    let mut queued = 0;
    for c in &changes {
        let alert = alerts::alert_json(conn, c.alert_id).await?;
        let event = if c.raised {
            "alert.raised"
        } else {
            "alert.resolved"
        };
        if alerts_cfg.webhook_url.is_some()
            && super::webhook::enqueue(conn, alerts_cfg, event, json!({"alert": alert})).await?
        {
            queued += 1;
        }
    }
    Ok(queued)
}

async fn insert_item(
    conn: &mut SqliteConnection,
    id: &str,
    agent: &AgentInfo,
    kind: &str,
    now: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO telemetry_items (id, agent_id, kind, received_at) VALUES (?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&agent.id)
    .bind(kind)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_proto::telemetry::{DeviceRecord, ErrorState, Level, Supply, SupplyClass, SupplyKind};

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

    async fn put(db: &Db, a: &str, items: Vec<IngestItem>) -> IngestAck {
        store_batch(db, &AlertsSection::default(), &agent(a), &items)
            .await
            .expect("store")
            .0
    }

    async fn device_of(db: &Db, reading: &str) -> i64 {
        sqlx::query_scalar("SELECT device_id FROM readings WHERE id = ?")
            .bind(reading)
            .fetch_one(&db.pool)
            .await
            .expect("reading stored")
    }

    async fn address(db: &Db, device: i64) -> (String, Option<String>) {
        sqlx::query_as("SELECT address, displaced_from FROM devices WHERE id = ?")
            .bind(device)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    }

    async fn count(db: &Db, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
    }

    #[tokio::test]
    async fn a_batch_posted_twice_is_stored_once() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        let items = vec![
            reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None)),
            reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None)),
            done("s1", &["10.0.0.0/24"]),
        ];
        let ack = put(&db, "agt_a", items.clone()).await;
        assert_eq!(ack.accepted, vec!["r1", "r1", "s1"]);
        assert!(ack.rejected.is_empty());
        let ack = put(&db, "agt_a", items).await;
        assert_eq!(ack.accepted.len(), 3);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM readings").await, 1);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM scans").await, 1);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM devices").await, 1);
        // Another agent cannot reuse (or probe) the id.
        let ack = put(
            &db,
            "agt_b",
            vec![reading("r1", "s9", 2, rec("10.0.0.9", None, None))],
        )
        .await;
        assert_eq!(ack.rejected.len(), 1);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM readings").await, 1);
    }

    #[tokio::test]
    async fn identity_survives_an_address_change() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        put(
            &db,
            "agt_a",
            vec![reading("r1", "s1", 1, rec("10.0.0.5", Some("A1"), None))],
        )
        .await;
        put(
            &db,
            "agt_a",
            vec![reading("r2", "s2", 2, rec("10.0.0.6", Some("A1"), None))],
        )
        .await;
        let d = device_of(&db, "r1").await;
        assert_eq!(device_of(&db, "r2").await, d);
        assert_eq!(address(&db, d).await, ("10.0.0.6".into(), None));
        let (first, last): (String, String) =
            sqlx::query_as("SELECT first_seen, last_seen FROM devices WHERE id = ?")
                .bind(d)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            (first.as_str(), last.as_str()),
            ("2026-11-22T10:01:00.000Z", "2026-11-22T10:02:00.000Z")
        );
        // An older reading drained late does not move it back.
        put(
            &db,
            "agt_a",
            vec![reading("r0", "s0", 0, rec("10.0.0.5", Some("A1"), None))],
        )
        .await;
        assert_eq!(device_of(&db, "r0").await, d);
        assert_eq!(address(&db, d).await.0, "10.0.0.6");
        // Another agent of the same customer sees it: it follows; an agent
        // of another customer gets its own device.
        put(
            &db,
            "agt_b",
            vec![reading("r3", "s3", 3, rec("192.168.1.5", Some("A1"), None))],
        )
        .await;
        assert_eq!(device_of(&db, "r3").await, d);
        put(
            &db,
            "agt_x",
            vec![reading("r4", "s4", 4, rec("192.168.1.5", Some("A1"), None))],
        )
        .await;
        assert_ne!(device_of(&db, "r4").await, d);
        // Found by MAC when the serial did not decode; the identity is kept.
        put(
            &db,
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
            &db,
            "agt_a",
            vec![reading(
                "m2",
                "s6",
                6,
                rec("10.0.0.21", None, Some("00:aa:00:00:00:01")),
            )],
        )
        .await;
        let m = device_of(&db, "m1").await;
        assert_eq!(device_of(&db, "m2").await, m);
        let id: String = sqlx::query_scalar("SELECT identity FROM devices WHERE id = ?")
            .bind(m)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(id, "serial:hp:B1");
    }

    #[tokio::test]
    async fn a_hand_added_device_is_claimed_and_weak_readings_stay_with_it() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        let hand: i64 = sqlx::query_scalar(
            "INSERT INTO devices (agent_id, address, name, created_at) \
             VALUES ('agt_a', '10.0.0.7', 'front desk', '2026-01-01T00:00:00.000Z') RETURNING id",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        put(
            &db,
            "agt_a",
            vec![reading("r1", "s1", 1, rec("10.0.0.7", Some("C1"), None))],
        )
        .await;
        assert_eq!(device_of(&db, "r1").await, hand);
        // No serial or MAC this time: still the same device, identity kept.
        put(
            &db,
            "agt_a",
            vec![reading("r2", "s2", 2, rec("10.0.0.7", None, None))],
        )
        .await;
        assert_eq!(device_of(&db, "r2").await, hand);
        let (id, name): (String, Option<String>) =
            sqlx::query_as("SELECT identity, name FROM devices WHERE id = ?")
                .bind(hand)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            (id.as_str(), name.as_deref()),
            ("serial:hp:C1", Some("front desk"))
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM devices").await, 1);
    }

    #[tokio::test]
    async fn a_device_taking_an_occupied_address_displaces_the_occupant() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        put(
            &db,
            "agt_a",
            vec![
                reading("a1", "s1", 1, rec("10.0.0.5", Some("A"), None)),
                reading("b1", "s1", 1, rec("10.0.0.6", Some("B"), None)),
            ],
        )
        .await;
        let (a, b) = (device_of(&db, "a1").await, device_of(&db, "b1").await);
        // B moved to .5 (A is elsewhere now, not yet seen).
        put(
            &db,
            "agt_a",
            vec![reading("b2", "s2", 2, rec("10.0.0.5", Some("B"), None))],
        )
        .await;
        assert_eq!(device_of(&db, "b2").await, b);
        assert_eq!(address(&db, b).await, ("10.0.0.5".into(), None));
        assert_eq!(
            address(&db, a).await,
            (format!("displaced-{a}"), Some("10.0.0.5".into()))
        );
        // A turns up at .6: back to a real address.
        put(
            &db,
            "agt_a",
            vec![reading("a2", "s2", 2, rec("10.0.0.6", Some("A"), None))],
        )
        .await;
        assert_eq!(address(&db, a).await, ("10.0.0.6".into(), None));
        // A new printer replaces A at .6: a new device, A displaced.
        put(
            &db,
            "agt_a",
            vec![reading("c1", "s3", 3, rec("10.0.0.6", Some("C"), None))],
        )
        .await;
        let c = device_of(&db, "c1").await;
        assert!(c != a && c != b);
        assert_eq!(address(&db, a).await.0, format!("displaced-{a}"));
        let sql = format!("SELECT COUNT(*) FROM readings WHERE device_id = {a}");
        assert_eq!(count(&db, &sql).await, 2);
    }

    #[tokio::test]
    async fn invalid_items_are_rejected_alone_and_a_failed_batch_leaves_nothing() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        let ack = put(
            &db,
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
        assert_eq!(count(&db, "SELECT COUNT(*) FROM telemetry_items").await, 1);
        // A storage failure in the middle of a batch rolls all of it back.
        sqlx::query("CREATE TRIGGER boom BEFORE INSERT ON readings WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
            .execute(&db.pool).await.unwrap();
        let r = store_batch(
            &db,
            &AlertsSection::default(),
            &agent("agt_a"),
            &[
                reading("ok2", "s2", 2, rec("10.0.0.8", Some("Z"), None)),
                reading("boom", "s2", 2, rec("10.0.0.9", None, None)),
            ],
        )
        .await;
        assert!(r.is_err());
        assert_eq!(count(&db, "SELECT COUNT(*) FROM telemetry_items").await, 1);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM devices").await, 1);
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

    async fn active(db: &Db) -> Vec<(String, String)> {
        sqlx::query_as("SELECT kind, subject FROM alerts WHERE resolved_at IS NULL ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn alerts_are_raised_once_and_resolved_when_the_condition_clears() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        let cfg = AlertsSection {
            webhook_url: Some("http://127.0.0.1:9/hook".into()),
            webhook_secret: Some(crate::config::Secret::new("0123456789abcdef")),
            ..Default::default()
        };
        let mut r = rec("10.0.0.5", Some("A"), None);
        r.supplies = vec![toner(5.0)];
        r.error_states = vec![ErrorState::Jammed, ErrorState::LowPaper];
        let (_, ev) = store_batch(
            &db,
            &cfg,
            &agent("agt_a"),
            &[reading("r1", "s1", 1, r.clone())],
        )
        .await
        .unwrap();
        assert_eq!(
            active(&db).await,
            vec![
                ("jam".into(), String::new()),
                ("supply_low".into(), "Black Toner".into())
            ]
        );
        assert_eq!(ev, 2);
        // Still low, still jammed: nothing new.
        let (_, ev) = store_batch(
            &db,
            &cfg,
            &agent("agt_a"),
            &[reading("r2", "s2", 2, r.clone())],
        )
        .await
        .unwrap();
        assert_eq!((ev, active(&db).await.len()), (0, 2));
        // Fixed.
        r.supplies = vec![toner(60.0)];
        r.error_states = vec![];
        let (_, ev) = store_batch(
            &db,
            &cfg,
            &agent("agt_a"),
            &[reading("r3", "s3", 3, r.clone())],
        )
        .await
        .unwrap();
        assert_eq!(ev, 2);
        assert!(active(&db).await.is_empty());
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM alerts WHERE resolved_at IS NOT NULL"
            )
            .await,
            2
        );
        let events: Vec<String> =
            sqlx::query_scalar("SELECT event FROM webhook_outbox ORDER BY id")
                .fetch_all(&db.pool)
                .await
                .unwrap();
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
            &db,
            1,
            &[alerts::RuleInput {
                kind: "supply_low".into(),
                enabled: true,
                threshold: Some(70.0),
            }],
        )
        .await
        .unwrap();
        store_batch(&db, &cfg, &agent("agt_a"), &[reading("r4", "s4", 4, r)])
            .await
            .unwrap();
        assert_eq!(
            active(&db).await,
            vec![("supply_low".into(), "Black Toner".into())]
        );
    }

    #[tokio::test]
    async fn a_device_missing_from_three_scans_is_silent_until_seen() {
        let (_t, db) = crate::services::telemetry::testutil::db().await;
        let ranges = ["10.0.0.0/24"];
        put(
            &db,
            "agt_a",
            vec![
                reading("r1", "s1", 1, rec("10.0.0.5", Some("A"), None)),
                reading("o1", "s1", 1, rec("10.9.0.5", Some("O"), None)),
                done("s1", &ranges),
            ],
        )
        .await;
        for (i, s) in ["s2", "s3"].iter().enumerate() {
            put(&db, "agt_a", vec![done(s, &ranges)]).await;
            assert!(active(&db).await.is_empty(), "after {} missed", i + 1);
        }
        put(&db, "agt_a", vec![done("s4", &ranges)]).await;
        // Only A: the other device's address is outside the scanned range.
        assert_eq!(active(&db).await, vec![("silent".into(), String::new())]);
        let missed: i64 =
            sqlx::query_scalar("SELECT missed_scans FROM devices WHERE address = '10.0.0.5'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(missed, 3);
        put(&db, "agt_a", vec![done("s5", &ranges)]).await;
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM alerts").await,
            1,
            "one active alert per device and kind"
        );
        put(
            &db,
            "agt_a",
            vec![
                reading("r6", "s6", 6, rec("10.0.0.5", Some("A"), None)),
                done("s6", &ranges),
            ],
        )
        .await;
        assert!(active(&db).await.is_empty());
    }
}
