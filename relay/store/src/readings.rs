//! Telemetry as agents upload it: items (every upload's idempotency key),
//! readings, finished scans; and the steps of filing a reading under its
//! device, which the relay's inventory rules combine inside one [`Tx`].

use crate::{Result, Store, Tx};

/// A reading to store; `record` is the device record as JSON.
#[derive(Debug, Clone)]
pub struct NewReading<'a> {
    pub id: &'a str,
    pub device_id: i64,
    pub agent_id: &'a str,
    pub scan: &'a str,
    pub taken_at: &'a str,
    pub received_at: &'a str,
    pub address: &'a str,
    pub identity: &'a str,
    pub record: &'a str,
}

/// A finished scan to store; `ranges` is the JSON list of its ranges.
#[derive(Debug, Clone)]
pub struct NewScan<'a> {
    pub id: &'a str,
    pub agent_id: &'a str,
    pub started_at: &'a str,
    pub finished_at: &'a str,
    pub trigger: &'a str,
    pub ranges: &'a str,
    pub addresses: i64,
    pub found: i64,
    pub received_at: &'a str,
}

/// Where a device is and who it is: what matching a reading needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceSlot {
    pub id: i64,
    pub agent_id: String,
    pub address: String,
    pub identity: Option<String>,
    pub last_seen: Option<String>,
}

/// A device a finished scan may have missed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScanCandidate {
    pub id: i64,
    pub address: String,
    pub missed_scans: i64,
}

/// One stored reading; `record` is the device record as JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReadingRow {
    pub id: String,
    pub scan: String,
    pub taken_at: String,
    pub received_at: String,
    pub address: String,
    pub identity: String,
    pub record: String,
}

const SLOT: &str = "SELECT d.id, d.agent_id, d.address, d.identity, d.last_seen FROM devices d";

impl Tx {
    /// The agent that uploaded item `id`, if any did.
    pub async fn item_owner(&mut self, id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT agent_id FROM telemetry_items WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    pub async fn insert_item(
        &mut self,
        id: &str,
        agent: &str,
        kind: &str,
        now: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO telemetry_items (id, agent_id, kind, received_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(agent)
        .bind(kind)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn insert_reading(&mut self, r: &NewReading<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO readings (id, device_id, agent_id, scan, taken_at, received_at, address, identity, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.id)
        .bind(r.device_id)
        .bind(r.agent_id)
        .bind(r.scan)
        .bind(r.taken_at)
        .bind(r.received_at)
        .bind(r.address)
        .bind(r.identity)
        .bind(r.record)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The device's newest reading taken before `taken_at`, other than
    /// `except` (the one being filed).
    pub async fn reading_before(
        &mut self,
        device: i64,
        taken_at: &str,
        except: &str,
    ) -> Result<Option<PeriodReading>> {
        Ok(sqlx::query_as(
            "SELECT taken_at, record FROM readings WHERE device_id = $1 AND taken_at < $2 \
             AND id != $3 ORDER BY taken_at DESC LIMIT 1",
        )
        .bind(device)
        .bind(taken_at)
        .bind(except)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    pub async fn insert_scan(&mut self, s: &NewScan<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO scans (id, agent_id, started_at, finished_at, trigger, ranges, addresses, found, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(s.id)
        .bind(s.agent_id)
        .bind(s.started_at)
        .bind(s.finished_at)
        .bind(s.trigger)
        .bind(s.ranges)
        .bind(s.addresses)
        .bind(s.found)
        .bind(s.received_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The first device of `customer` whose `identity` is `key`.
    pub async fn device_with_identity(
        &mut self,
        customer: i64,
        key: &str,
    ) -> Result<Option<DeviceSlot>> {
        Ok(sqlx::query_as(&format!(
            "{SLOT} JOIN agents a ON a.id = d.agent_id \
             WHERE a.customer_id = $1 AND d.identity = $2 ORDER BY d.id LIMIT 1"
        ))
        .bind(customer)
        .bind(key)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// The first device of `customer` with this (normalised) MAC.
    pub async fn device_with_mac(
        &mut self,
        customer: i64,
        mac: &str,
    ) -> Result<Option<DeviceSlot>> {
        Ok(sqlx::query_as(&format!(
            "{SLOT} JOIN agents a ON a.id = d.agent_id \
             WHERE a.customer_id = $1 AND d.mac = $2 ORDER BY d.id LIMIT 1"
        ))
        .bind(customer)
        .bind(mac)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// The device behind `agent` at `address`.
    pub async fn device_at(&mut self, agent: &str, address: &str) -> Result<Option<DeviceSlot>> {
        Ok(
            sqlx::query_as(&format!("{SLOT} WHERE d.agent_id = $1 AND d.address = $2"))
                .bind(agent)
                .bind(address)
                .fetch_optional(&mut *self.tx)
                .await?,
        )
    }

    /// Moves a device behind `agent` to `address` (no longer displaced).
    pub async fn move_device(&mut self, id: i64, agent: &str, address: &str) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET agent_id = $1, address = $2, displaced_from = NULL WHERE id = $3",
        )
        .bind(agent)
        .bind(address)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn set_device_identity(&mut self, id: i64, key: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET identity = $1 WHERE id = $2")
            .bind(key)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Frees `address` for another device: the occupant's address becomes
    /// `displaced-<id>` (the UNIQUE(agent, address) key stays intact) and
    /// `displaced_from` keeps the old one.
    pub async fn displace_device(&mut self, id: i64, address: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET address = $1, displaced_from = $2 WHERE id = $3")
            .bind(format!("displaced-{id}"))
            .bind(address)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// A device first known from a reading.
    pub async fn add_discovered_device(
        &mut self,
        agent: &str,
        address: &str,
        name: Option<&str>,
        identity: &str,
        now: &str,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO devices (agent_id, address, name, created_at, identity) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(agent)
        .bind(address)
        .bind(name)
        .bind(now)
        .bind(identity)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Records the device's newest reading: where and when it was seen.
    pub async fn note_newest_reading(
        &mut self,
        id: i64,
        mac: Option<&str>,
        taken_at: &str,
        reading: &str,
        scan: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET mac = COALESCE($1, mac), last_seen = $2, latest_reading = $3, \
             last_scan = $4, missed_scans = 0, first_seen = COALESCE(first_seen, $2) WHERE id = $5",
        )
        .bind(mac)
        .bind(taken_at)
        .bind(reading)
        .bind(scan)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// An older reading (a spool drained late) can still be the first.
    pub async fn note_older_reading(&mut self, id: i64, taken_at: &str) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET first_seen = MIN(COALESCE(first_seen, $1), $1) WHERE id = $2",
        )
        .bind(taken_at)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The agent's devices that telemetry has seen, not displaced, and not
    /// seen in scan `scan`.
    pub async fn scan_candidates(&mut self, agent: &str, scan: &str) -> Result<Vec<ScanCandidate>> {
        Ok(sqlx::query_as(
            "SELECT id, address, missed_scans FROM devices WHERE agent_id = $1 \
             AND last_seen IS NOT NULL AND displaced_from IS NULL \
             AND (last_scan IS NULL OR last_scan != $2)",
        )
        .bind(agent)
        .bind(scan)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn set_missed_scans(&mut self, id: i64, missed: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET missed_scans = $1 WHERE id = $2")
            .bind(missed)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// A device's readings, newest first, at most `limit`, taken at or
    /// after `since` when given.
    pub async fn device_readings(
        &self,
        device: i64,
        since: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ReadingRow>> {
        Ok(sqlx::query_as(
            "SELECT id, scan, taken_at, received_at, address, identity, record FROM readings \
             WHERE device_id = $1 AND ($2 IS NULL OR taken_at >= $2) \
             ORDER BY taken_at DESC, id LIMIT $3",
        )
        .bind(device)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// What a billing period of `device` needs: its readings taken in
    /// `[start, end)` (oldest first, at most `limit`), and the newest one
    /// before `start` and the oldest at or after `end`, which bound the
    /// estimates at the boundaries. Three index range scans, never the
    /// device's whole history.
    pub async fn period_readings(
        &self,
        device: i64,
        start: &str,
        end: &str,
        limit: i64,
    ) -> Result<Vec<PeriodReading>> {
        Ok(sqlx::query_as(
            "SELECT taken_at, record FROM (SELECT taken_at, record FROM readings \
             WHERE device_id = $1 AND taken_at < $2 ORDER BY taken_at DESC LIMIT 1) \
             UNION ALL SELECT taken_at, record FROM (SELECT taken_at, record FROM readings \
             WHERE device_id = $1 AND taken_at >= $2 AND taken_at < $3 ORDER BY taken_at LIMIT $4) \
             UNION ALL SELECT taken_at, record FROM (SELECT taken_at, record FROM readings \
             WHERE device_id = $1 AND taken_at >= $3 ORDER BY taken_at LIMIT 1) \
             ORDER BY taken_at",
        )
        .bind(device)
        .bind(start)
        .bind(end)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The device a stored reading was filed under.
    pub async fn reading_device(&self, reading: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT device_id FROM readings WHERE id = $1")
                .bind(reading)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// When the agent's newest upload of a reading arrived.
    pub async fn last_reading_received(&self, agent: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(received_at) FROM readings WHERE agent_id = $1")
                .bind(agent)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Deletes at most `limit` readings taken before `before` (RFC 3339)
    /// in one short transaction; returns how many went. Each device's
    /// newest reading stays, so the inventory still shows its last state.
    /// Their telemetry items stay too: an agent re-sending a pruned reading
    /// is told it was stored, not made to store it again.
    pub async fn prune_readings(&self, before: &str, limit: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM readings WHERE id IN (SELECT r.id FROM readings r \
             WHERE r.taken_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM devices d WHERE d.latest_reading = r.id) LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// How many telemetry items, readings and scans are stored (operators'
    /// figures and tests).
    pub async fn telemetry_counts(&self) -> Result<TelemetryCounts> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM telemetry_items) AS items, \
             (SELECT COUNT(*) FROM readings) AS readings, \
             (SELECT COUNT(*) FROM scans) AS scans, \
             (SELECT COUNT(*) FROM devices) AS devices",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// A reading as a billing period uses it; `record` is the device record
/// as JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PeriodReading {
    pub taken_at: String,
    pub record: String,
}

/// Row counts of the telemetry tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TelemetryCounts {
    pub items: i64,
    pub readings: i64,
    pub scans: i64,
    pub devices: i64,
}

#[cfg(test)]
mod tests {
    use crate::Store;

    /// A store with customer `acme`, its agent `agt` and one device at
    /// 10.0.0.5 (its id).
    async fn store_with_device() -> (tempfile::TempDir, Store, i64) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&tmp.path().join("t.db"), true)
            .await
            .expect("open");
        let c = store
            .add_customer("acme", "2020-01-01T00:00:00.000Z")
            .await
            .expect("customer");
        sqlx::query("INSERT INTO agents (id, name, customer_id, public_key, hostname, created_at) VALUES ('agt', 'a', $1, 'k', 'h', 'x')")
            .bind(c)
            .execute(&store.pool)
            .await
            .expect("agent");
        let dev = store
            .add_device("agt", "10.0.0.5", None, "2020-01-01T00:00:00.000Z")
            .await
            .expect("device");
        (tmp, store, dev)
    }

    async fn reading(store: &Store, id: &str, device: i64, taken_at: &str) {
        for sql in [
            "INSERT INTO telemetry_items (id, agent_id, kind, received_at) VALUES ($1, 'agt', 'reading', $2)",
            "INSERT INTO readings (id, device_id, agent_id, scan, taken_at, received_at, address, identity, record) \
             VALUES ($1, $3, 'agt', 's', $2, $2, '10.0.0.5', 'serial:X', '{}')",
        ] {
            sqlx::query(sql)
                .bind(id)
                .bind(taken_at)
                .bind(device)
                .execute(&store.pool)
                .await
                .expect("insert");
        }
    }

    #[tokio::test]
    async fn period_readings_are_the_period_and_one_reading_either_side() {
        let (_tmp, store, dev) = store_with_device().await;
        for (i, day) in [
            "05-01", "06-20", "06-30", "07-01", "07-15", "08-01", "08-02",
        ]
        .iter()
        .enumerate()
        {
            reading(
                &store,
                &format!("r{i}"),
                dev,
                &format!("2026-{day}T00:00:00.000Z"),
            )
            .await;
        }
        let got = store
            .period_readings(
                dev,
                "2026-07-01T00:00:00.000Z",
                "2026-08-01T00:00:00.000Z",
                100,
            )
            .await
            .expect("period");
        let days: Vec<&str> = got.iter().map(|r| &r.taken_at[5..10]).collect();
        assert_eq!(days, ["06-30", "07-01", "07-15", "08-01"]);
        // The limit bounds the period's part only.
        let got = store
            .period_readings(
                dev,
                "2026-07-01T00:00:00.000Z",
                "2026-08-01T00:00:00.000Z",
                1,
            )
            .await
            .expect("period");
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn prune_takes_old_readings_in_batches_and_keeps_the_newest_per_device() {
        let (_tmp, store, dev) = store_with_device().await;
        let stale = store
            .add_device("agt", "10.0.0.6", None, "2020-01-01T00:00:00.000Z")
            .await
            .expect("device");
        for i in 0..5 {
            reading(
                &store,
                &format!("old{i}"),
                dev,
                &format!("2023-01-0{}T00:00:00.000Z", i + 1),
            )
            .await;
        }
        reading(&store, "new", dev, "2026-01-01T00:00:00.000Z").await;
        // A device not heard from since: its only reading is old but newest.
        reading(&store, "last", stale, "2023-01-01T00:00:00.000Z").await;
        sqlx::query(
            "UPDATE devices SET latest_reading = CASE id WHEN $1 THEN 'new' ELSE 'last' END",
        )
        .bind(dev)
        .execute(&store.pool)
        .await
        .expect("latest");

        let cutoff = "2024-01-01T00:00:00.000Z";
        assert_eq!(store.prune_readings(cutoff, 2).await.expect("prune"), 2);
        assert_eq!(store.prune_readings(cutoff, 2).await.expect("prune"), 2);
        assert_eq!(store.prune_readings(cutoff, 2).await.expect("prune"), 1);
        assert_eq!(store.prune_readings(cutoff, 2).await.expect("prune"), 0);
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM readings ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .expect("ids");
        assert_eq!(left, ["last", "new"]);
        // The idempotency keys stay.
        assert_eq!(store.telemetry_counts().await.expect("counts").items, 7);
    }
}
