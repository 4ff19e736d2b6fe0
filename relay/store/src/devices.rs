//! Devices: registered by hand or discovered by telemetry, each behind one
//! agent; the certificates seen on their HTTPS ports. The inventory's
//! matching of readings to devices (in [`crate::Tx`]) is in
//! [`crate::readings`].

use crate::{unique, Result, Store, StoreError, Tx};

/// A device and the customer it belongs to (through its agent): what a
/// stream, a web session or a tunnel needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct DeviceTarget {
    pub id: i64,
    pub name: Option<String>,
    pub address: String,
    pub agent_id: String,
    pub customer_id: i64,
}

const TARGET_SELECT: &str = "SELECT d.id, d.name, d.address, d.agent_id, a.customer_id \
    FROM devices d JOIN agents a ON a.id = d.agent_id";

/// What recording a device's certificate found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSeen {
    /// When this certificate was first seen on that port.
    pub first_seen: String,
    /// The certificate seen before, if this one differs from it.
    pub changed_from: Option<String>,
}

/// The rows whose customer is in `customers` (None: all of them).
fn in_scope<T>(rows: Vec<T>, customers: Option<&[i64]>, customer: impl Fn(&T) -> i64) -> Vec<T> {
    rows.into_iter()
        .filter(|r| customers.is_none_or(|c| c.contains(&customer(r))))
        .collect()
}

impl Store {
    pub async fn add_device(
        &self,
        agent_id: &str,
        address: &str,
        name: Option<&str>,
        now: &str,
    ) -> Result<i64> {
        let r = sqlx::query_scalar(
            "INSERT INTO devices (agent_id, address, name, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(agent_id)
        .bind(address)
        .bind(name)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        unique(r, || {
            format!("device {address} is already registered for this agent")
        })
    }

    pub async fn device_registered(&self, agent_id: &str, address: &str) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE agent_id = $1 AND address = $2")
                .bind(agent_id)
                .bind(address)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    pub async fn device_target(&self, id: i64) -> Result<DeviceTarget> {
        sqlx::query_as(&format!("{TARGET_SELECT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no device {id}")))
    }

    /// Devices with their customer, optionally only those of `customers`.
    pub async fn device_targets(&self, customers: Option<&[i64]>) -> Result<Vec<DeviceTarget>> {
        let rows: Vec<DeviceTarget> = sqlx::query_as(&format!("{TARGET_SELECT} ORDER BY d.id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(in_scope(rows, customers, |d| d.customer_id))
    }

    /// Removes a device and everything recorded of it (readings, alerts,
    /// certificates); false if there was no such device.
    pub async fn remove_device(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM alerts WHERE device_id = $1",
            "DELETE FROM device_tls WHERE device_id = $1",
            "DELETE FROM readings WHERE device_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx.tx).await?;
        }
        let n = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records the certificate seen on a device's HTTPS port (trust on
    /// first use, with notice: a new one is recorded, the change reported).
    pub async fn note_device_cert(
        &self,
        device: i64,
        port: u16,
        sha256: &str,
        now: &str,
    ) -> Result<CertSeen> {
        let mut tx = self.begin().await?;
        let out = tx.note_device_cert(device, port, sha256, now).await?;
        tx.commit().await?;
        Ok(out)
    }
}

impl Tx {
    async fn note_device_cert(
        &mut self,
        device: i64,
        port: u16,
        sha256: &str,
        now: &str,
    ) -> Result<CertSeen> {
        let port = i64::from(port);
        let old: Option<(String, String)> = sqlx::query_as(
            "SELECT cert_sha256, first_seen FROM device_tls WHERE device_id = $1 AND port = $2",
        )
        .bind(device)
        .bind(port)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(match old {
            Some((cert, first_seen)) if cert == sha256 => {
                sqlx::query(
                    "UPDATE device_tls SET last_seen = $1 WHERE device_id = $2 AND port = $3",
                )
                .bind(now)
                .bind(device)
                .bind(port)
                .execute(&mut *self.tx)
                .await?;
                CertSeen {
                    first_seen,
                    changed_from: None,
                }
            }
            Some((cert, _)) => {
                sqlx::query(
                    "UPDATE device_tls SET cert_sha256 = $1, first_seen = $2, last_seen = $2 \
                     WHERE device_id = $3 AND port = $4",
                )
                .bind(sha256)
                .bind(now)
                .bind(device)
                .bind(port)
                .execute(&mut *self.tx)
                .await?;
                CertSeen {
                    first_seen: now.to_string(),
                    changed_from: Some(cert),
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO device_tls (device_id, port, cert_sha256, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $4)",
                )
                .bind(device)
                .bind(port)
                .bind(sha256)
                .bind(now)
                .execute(&mut *self.tx)
                .await?;
                CertSeen {
                    first_seen: now.to_string(),
                    changed_from: None,
                }
            }
        })
    }
}

/// A device's inventory row with its latest reading's record (JSON) and
/// its count of active alerts.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeviceViewRow {
    pub id: i64,
    pub agent_id: String,
    pub customer_id: i64,
    pub customer: String,
    pub address: String,
    pub name: Option<String>,
    pub identity: Option<String>,
    pub mac: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub missed_scans: i64,
    pub displaced_from: Option<String>,
    pub record: Option<String>,
    pub active_alerts: i64,
}

const VIEW_SELECT: &str = "SELECT d.id, d.agent_id, a.customer_id, c.name AS customer, d.address, d.name, \
    d.identity, d.mac, d.first_seen, d.last_seen, d.missed_scans, d.displaced_from, r.record, \
    (SELECT COUNT(*) FROM alerts x WHERE x.device_id = d.id AND x.resolved_at IS NULL) AS active_alerts \
    FROM devices d JOIN agents a ON a.id = d.agent_id JOIN customers c ON c.id = a.customer_id \
    LEFT JOIN readings r ON r.id = d.latest_reading";

/// A customer with how many live agents and devices it has.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerCounts {
    pub id: i64,
    pub name: String,
    pub agents: i64,
    pub devices: i64,
}

impl Store {
    /// Devices with their latest record, optionally only those of
    /// `customers`.
    pub async fn device_views(&self, customers: Option<&[i64]>) -> Result<Vec<DeviceViewRow>> {
        let rows: Vec<DeviceViewRow> = sqlx::query_as(&format!("{VIEW_SELECT} ORDER BY d.id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(in_scope(rows, customers, |d| d.customer_id))
    }

    pub async fn device_view(&self, id: i64) -> Result<Option<DeviceViewRow>> {
        Ok(sqlx::query_as(&format!("{VIEW_SELECT} WHERE d.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every customer with its counts of live agents and devices, by name.
    pub async fn customer_counts(&self) -> Result<Vec<CustomerCounts>> {
        Ok(sqlx::query_as(
            "SELECT c.id, c.name, \
             (SELECT COUNT(*) FROM agents a WHERE a.customer_id = c.id AND a.revoked_at IS NULL) AS agents, \
             (SELECT COUNT(*) FROM devices d JOIN agents a ON a.id = d.agent_id WHERE a.customer_id = c.id) AS devices \
             FROM customers c ORDER BY c.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
