//! Signed audit checkpoints (`dwa_proto::audit::Checkpoint`): every
//! `audit.checkpoint_interval`, at start and at stop, the chain's head is
//! signed with the relay's SSH host key, appended to
//! [`CHECKPOINT_FILE`] outside the database, and sent to every connected
//! agent, which keeps it in its own audit log. `audit verify` checks the
//! chain against the newest checkpoint it finds there, or one it is given:
//! deleting the newest records, or rewriting the chain, no longer leaves a
//! log that passes.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use dwa_proto::audit::{check_against, checkpoints_in, Checkpoint, CheckpointMismatch};
use dwa_proto::control::ControlMsg;
use tracing::Instrument;

use crate::services::error::{Class, Failure};
use crate::services::Services;

/// Beside the database, one checkpoint per line.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";

/// Largest checkpoint source `verify` reads (the file, or `--checkpoint`).
const MAX_SOURCE: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sign(#[from] dwa_link::checkpoint::CheckpointError),
    #[error(transparent)]
    Audit(#[from] crate::services::audit::AuditError),
    #[error(transparent)]
    Store(#[from] dwa_store::StoreError),
    #[error("{0}")]
    Mismatch(#[from] CheckpointMismatch),
    #[error("{0}")]
    Invalid(String),
}

impl Failure for CheckpointError {
    fn class(&self) -> Class {
        match self {
            CheckpointError::Invalid(_) => Class::Invalid,
            _ => Class::Internal,
        }
    }
}

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Signs the chain's head and appends it to the checkpoint file (synced
/// before it is sent anywhere); None when the log is empty or the head is
/// the one `last` already covers.
pub async fn write(svc: &Services, last: Option<i64>) -> Result<Option<Checkpoint>> {
    let Some((id, hash)) = svc.store.audit_head().await? else {
        return Ok(None);
    };
    if last == Some(id) {
        return Ok(None);
    }
    let cp = dwa_link::checkpoint::sign(&svc.host_key, id, &hash, svc.time.unix())?;
    let line = serde_json::to_string(&cp)
        .map_err(|e| CheckpointError::Invalid(format!("checkpoint: {e}")))?;
    let path = svc.dir.path(CHECKPOINT_FILE);
    let p = path.clone();
    tokio::task::spawn_blocking(move || append_line(&p, &line))
        .await
        .map_err(|e| CheckpointError::Invalid(format!("checkpoint writer: {e}")))?
        .map_err(file_error(&path))?;
    Ok(Some(cp))
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// Sends `cp` to every agent with a control channel (dropped for a full
/// queue, like any control message; the next one supersedes it).
pub fn broadcast(svc: &Services, cp: &Checkpoint) -> usize {
    let mut n = 0;
    for conn in svc.agents.list() {
        if let Some(native) = conn.native() {
            native.control.send(ControlMsg::AuditCheckpoint(cp.clone()));
            n += 1;
        }
    }
    n
}

/// The newest checkpoint written by this process, if any (for an agent
/// that just connected).
pub fn newest(svc: &Services) -> Option<Checkpoint> {
    svc.checkpoint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(MAX_SOURCE).read_to_string(&mut text)?;
    Ok(text)
}

/// What `audit verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub records: u64,
    /// The checkpoint the chain was checked against (None: none found).
    pub checkpoint: Option<Checkpoint>,
    /// Where it came from: the relay's file or the given one.
    pub source: Option<String>,
    /// Lines of the sources that did not verify with the relay's key.
    pub rejected: usize,
}

/// Verifies the chain, then against the newest checkpoint of the relay's
/// file and of `given` (a file: the relay's, a copy, or an agent's audit
/// log); a checkpoint whose signature fails is not used, and counted.
pub async fn verify(svc: &Services, given: Option<&Path>) -> Result<Verified> {
    let chain = svc.audit.records(None).await?;
    let records = dwa_proto::audit::verify_chain(chain.clone())
        .map_err(crate::services::audit::AuditError::Chain)?;
    let mut sources = vec![(svc.dir.path(CHECKPOINT_FILE), false)];
    if let Some(g) = given {
        sources.push((g.to_path_buf(), true));
    }
    let mut best: Option<(Checkpoint, String)> = None;
    let mut rejected = 0;
    for (path, required) in sources {
        let text = match read_bounded(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(file_error(&path)(e)),
        };
        let all = checkpoints_in(&text);
        if required && all.is_empty() {
            return Err(CheckpointError::Invalid(format!(
                "{}: no checkpoint in it",
                path.display()
            )));
        }
        let n = all.len();
        let key = svc.host_key.public_key();
        let valid: Vec<Checkpoint> = all
            .into_iter()
            .filter(|c| dwa_link::checkpoint::verify(c, key).is_ok())
            .collect();
        rejected += n - valid.len();
        let good = valid.into_iter().max_by_key(|c| c.id);
        if required && good.is_none() {
            return Err(CheckpointError::Invalid(format!(
                "{}: none of its {n} checkpoint(s) verifies with this relay's key",
                path.display()
            )));
        }
        if let Some(cp) = good {
            if best.as_ref().is_none_or(|(b, _)| cp.id > b.id) {
                best = Some((cp, path.display().to_string()));
            }
        }
    }
    if let Some((cp, _)) = &best {
        check_against(cp, &chain)?;
    }
    Ok(Verified {
        records,
        source: best.as_ref().map(|(_, s)| s.clone()),
        checkpoint: best.map(|(c, _)| c),
        rejected,
    })
}

/// The periodic writer: a checkpoint at start, every interval the head
/// moved, and a last one at stop.
pub fn spawn(svc: &crate::services::Svc) {
    let svc = svc.clone();
    let every = svc
        .cfg()
        .audit
        .checkpoint_interval
        .max(Duration::from_secs(1));
    svc.tracker.clone().spawn(
        async move {
            let mut last = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = svc.shutdown.cancelled() => true,
                };
                match write(&svc, last).await {
                    Ok(Some(cp)) => {
                        let agents = broadcast(&svc, &cp);
                        *svc.checkpoint.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(cp.clone());
                        tracing::debug!(id = cp.id, agents, "audit checkpoint");
                        last = Some(cp.id);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "writing an audit checkpoint"),
                }
                if stopping {
                    break;
                }
            }
        }
        .instrument(tracing::info_span!("audit_checkpoints")),
    );
}
