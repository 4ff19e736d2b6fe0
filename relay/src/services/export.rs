//! A customer's data in one archive (`dwa-relay customer export`): a
//! `.tar.gz` of JSON files — the customer, its agents (no keys), devices,
//! readings, scans, alerts, users (no credentials) and the audit records
//! concerning it (`Store::audit_of_customer`; docs/privacy.md says which).
//! Written beside the target under a temporary name and moved into place,
//! never over an existing file: a failed export leaves no half archive.

use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

use dwa_proto::audit::Event;
use dwa_store::customers::ExportPart;
use serde::Serialize;

use crate::services::auth::AuthError;
use crate::services::devices::Actor;
use crate::services::error::{Class, Failure};
use crate::services::Services;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    NotFound(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
}

impl Failure for ExportError {
    fn class(&self) -> Class {
        match self {
            ExportError::NotFound(_) => Class::NotFound,
            ExportError::File { .. } => Class::Internal,
            ExportError::Auth(e) => e.class(),
            ExportError::Store(e) => e.class(),
            ExportError::Audit(e) => e.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ExportError::Auth(e) => e.code(),
            _ => self.class().code(),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exported {
    pub customer: i64,
    pub name: String,
    pub file: String,
    pub agents: u64,
    pub devices: u64,
    pub readings: u64,
    pub scans: u64,
    pub alerts: u64,
    pub users: u64,
    pub audit_records: u64,
}

/// Readings fetched per query: the archive's size is not bounded by memory.
const READINGS_PAGE: i64 = 1000;

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Exports `customer` to `to` (which must not exist) and audits it.
pub async fn export_customer(
    svc: &Services,
    by: Actor<'_>,
    customer: i64,
    to: &Path,
) -> Result<Exported, ExportError> {
    by.check_admin()?;
    let c = svc
        .store
        .customer(customer)
        .await?
        .ok_or_else(|| ExportError::NotFound(format!("no customer {customer}")))?;
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut out = Exported {
        customer,
        name: c.name.clone(),
        file: to.display().to_string(),
        ..Exported::default()
    };
    for (file, part) in [
        ("agents.jsonl", ExportPart::Agents),
        ("devices.jsonl", ExportPart::Devices),
        ("scans.jsonl", ExportPart::Scans),
        ("alerts.jsonl", ExportPart::Alerts),
        ("users.jsonl", ExportPart::Users),
    ] {
        let rows = svc.store.customer_export_part(customer, part).await?;
        let n = rows.len() as u64;
        match part {
            ExportPart::Agents => out.agents = n,
            ExportPart::Devices => out.devices = n,
            ExportPart::Scans => out.scans = n,
            ExportPart::Alerts => out.alerts = n,
            ExportPart::Users => out.users = n,
        }
        files.push((file, jsonl(rows)));
    }
    let audit = svc.store.audit_of_customer(customer).await?;
    out.audit_records = audit.len() as u64;
    files.push((
        "audit.jsonl",
        crate::services::audit::to_jsonl(&audit).into_bytes(),
    ));

    // Readings can be millions: paged into a temporary file, not memory.
    // Plain std writes: the export runs in the CLI's own process.
    let mut readings = tempfile::tempfile().map_err(file_error(Path::new("readings")))?;
    let mut after = String::new();
    loop {
        let page = svc
            .store
            .customer_readings_page(customer, &after, READINGS_PAGE)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = last.clone();
        out.readings += page.len() as u64;
        let n = page.len() as i64;
        for (_, json) in page {
            readings
                .write_all(json.as_bytes())
                .and_then(|_| readings.write_all(b"\n"))
                .map_err(file_error(Path::new("readings")))?;
        }
        if n < READINGS_PAGE {
            break;
        }
    }

    let summary = serde_json::json!({
        "format": 1,
        "customer": c,
        "exported_at": svc.time.rfc3339(),
        "exported_by": by.name(),
        "counts": {
            "agents": out.agents, "devices": out.devices, "readings": out.readings,
            "scans": out.scans, "alerts": out.alerts, "users": out.users,
            "audit_records": out.audit_records,
        },
    });
    let summary = serde_json::to_vec_pretty(&summary).unwrap_or_default();
    files.insert(0, ("customer.json", summary));
    write_archive(to, svc.time.unix(), &files, readings)?;

    svc.audit
        .append(
            Event::CustomerExport {
                customer,
                name: c.name,
                agents: out.agents,
                devices: out.devices,
                readings: out.readings,
                alerts: out.alerts,
                audit_records: out.audit_records,
            },
            &by.name(),
            None,
        )
        .await?;
    Ok(out)
}

fn jsonl(rows: Vec<String>) -> Vec<u8> {
    let mut v = Vec::new();
    for r in rows {
        v.extend_from_slice(r.as_bytes());
        v.push(b'\n');
    }
    v
}

fn header(size: u64, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    // Personal data: readable by the exporting account alone.
    h.set_mode(0o600);
    h.set_mtime(mtime.max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Writes the archive next to `to`, then moves it there (refusing to
/// replace an existing file).
fn write_archive(
    to: &Path,
    mtime: i64,
    files: &[(&str, Vec<u8>)],
    mut readings: std::fs::File,
) -> Result<(), ExportError> {
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if to.exists() {
        return Err(file_error(to)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists; an export never replaces a file",
        )));
    }
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(file_error(&dir))?;
    let gz = flate2::write::GzEncoder::new(tmp, flate2::Compression::default());
    let mut ar = tar::Builder::new(gz);
    let io = file_error(to);
    let result = (|| -> std::io::Result<tempfile::NamedTempFile> {
        for (name, data) in files {
            let mut h = header(data.len() as u64, mtime);
            ar.append_data(&mut h, name, data.as_slice())?;
        }
        let len = readings.stream_position()?;
        readings.rewind()?;
        let mut h = header(len, mtime);
        ar.append_data(&mut h, "readings.jsonl", &mut readings)?;
        let gz = ar.into_inner()?;
        let tmp = gz.finish()?;
        tmp.as_file().sync_all()?;
        Ok(tmp)
    })();
    let tmp = result.map_err(io)?;
    tmp.persist_noclobber(to)
        .map_err(|e| file_error(to)(e.error))?;
    Ok(())
}
