//! The agent's own audit log (`audit.jsonl` beside agent.toml): every
//! stream the agent opened or refused, every diagnostic it ran, each
//! reload of agent.toml, and the relay's signed audit checkpoints — so a site can see what was done on
//! its network, and check the relay's log against it
//! (`dwa-relay audit verify --checkpoint audit.jsonl`), without trusting
//! the relay.
//!
//! One JSON object per line: `{ts, time, kind, detail}`. Lines are queued
//! (bounded; beyond it they are counted and the count written as its own
//! line) and written by one task in batches, each batch synced. The file
//! is bounded too: past [`MAX_FILE`] it moves to `audit.jsonl.1` (the one
//! before is dropped), so a hostile relay cannot fill the disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dwa_proto::audit::{Checkpoint, CHECKPOINT_KIND};
use russh::keys::PublicKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines waiting for the writer.
const QUEUE: usize = 4096;
/// Lines per write (and sync).
const BATCH: usize = 256;
/// Size at which the file is rotated.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// A relay's checkpoints kept at most this often; one arriving sooner
/// waits (replaced by any newer one) until the interval has passed.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// When the last checkpoint was kept, and the newest one waiting.
#[derive(Default)]
struct Checkpoints {
    last: Option<Instant>,
    pending: Option<Checkpoint>,
}

/// The handle streams, diagnostics and the session write through.
#[derive(Clone)]
pub struct LocalAudit {
    tx: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
    checkpoints: Arc<Mutex<Checkpoints>>,
}

/// Writes the queued lines; run it with [`Writer::run`].
pub struct Writer {
    rx: mpsc::Receiver<String>,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
    log: LocalAudit,
}

fn line(kind: &str, detail: serde_json::Value) -> String {
    let now = SystemTime::now();
    let ts = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({
        "ts": ts,
        "time": humantime::format_rfc3339_seconds(now).to_string(),
        "kind": kind,
        "detail": detail,
    })
    .to_string()
}

impl LocalAudit {
    pub fn open(path: PathBuf) -> (Self, Writer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let log = Self {
            tx,
            dropped: dropped.clone(),
            checkpoints: Arc::default(),
        };
        (
            log.clone(),
            Writer {
                rx,
                path,
                dropped,
                log,
            },
        )
    }

    /// Queues one line; never waits (a full queue counts it as dropped).
    pub fn record(&self, kind: &str, detail: serde_json::Value) {
        if self.tx.try_send(line(kind, detail)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps a relay checkpoint if its signature verifies with the pinned
    /// relay key: now, or (sooner than [`CHECKPOINT_EVERY`] after the last)
    /// when the interval has passed. Whether it verified.
    pub fn checkpoint(&self, cp: &Checkpoint, relay_key: &PublicKey) -> bool {
        if let Err(e) = dwa_link::checkpoint::verify(cp, relay_key) {
            tracing::warn!(error = %e, "audit checkpoint from the relay refused");
            return false;
        }
        let now = {
            let mut c = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
            if c.last.is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY) {
                if c.pending.as_ref().is_none_or(|p| cp.id >= p.id) {
                    c.pending = Some(cp.clone());
                }
                false
            } else {
                c.last = Some(Instant::now());
                c.pending = None;
                true
            }
        };
        if now {
            self.keep(cp);
        }
        true
    }

    fn keep(&self, cp: &Checkpoint) {
        self.record(
            CHECKPOINT_KIND,
            serde_json::to_value(cp).unwrap_or_default(),
        );
    }

    /// The checkpoint that waited, if its time has come.
    fn due(&self) -> Option<Checkpoint> {
        let mut c = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        if c.last.is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY) {
            return None;
        }
        let cp = c.pending.take()?;
        c.last = Some(Instant::now());
        Some(cp)
    }
}

impl Writer {
    /// Writes until `shutdown`, then what is still queued.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let mut batch = Vec::with_capacity(BATCH);
            tokio::select! {
                n = self.rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = tick.tick() => {
                    if let Some(cp) = self.log.due() {
                        self.log.keep(&cp);
                    }
                    continue;
                }
                _ = shutdown.cancelled() => {
                    if let Some(cp) = self.log.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).pending.take() {
                        self.log.keep(&cp);
                    }
                    self.rx.close();
                    while self.rx.recv_many(&mut batch, BATCH).await > 0 {
                        self.write(std::mem::take(&mut batch)).await;
                    }
                    return;
                }
            }
            self.write(batch).await;
        }
    }

    async fn write(&self, mut batch: Vec<String>) {
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.push(line("audit.dropped", serde_json::json!({ "lines": lost })));
        }
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || append(&path, &batch)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "writing the local audit log")
            }
            Err(e) => tracing::error!(error = %e, "local audit writer"),
        }
    }
}

/// One line of the log, for a person: time, kind, what.
pub fn describe(v: &serde_json::Value) -> String {
    let d = &v["detail"];
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let what = match v["kind"].as_str().unwrap_or("") {
        "stream.open" => format!("opened {}:{} ({})", s("host"), d["port"], s("address")),
        "stream.denied" => format!("refused {}:{}: {}", s("host"), d["port"], s("reason")),
        "diag.run" => format!("ran {} toward {}", s("kind"), s("target")),
        CHECKPOINT_KIND => format!("relay audit log at record {} ({})", d["id"], s("hash")),
        "audit.dropped" => format!("{} lines lost (queue full)", d["lines"]),
        "config.reloaded" => format!(
            "agent.toml reloaded: applied {}, at the next start {}",
            d["applied"], d["restart_needed"]
        ),
        _ => d.to_string(),
    };
    format!(
        "{}  {:<16} {what}",
        v["time"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or("")
    )
}

fn append(path: &Path, lines: &[String]) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= MAX_FILE) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, PathBuf::from(old))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[tokio::test]
    async fn lines_are_written_and_a_full_queue_is_counted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let (log, writer) = LocalAudit::open(path.clone());
        for i in 0..QUEUE + 10 {
            log.record("stream.open", serde_json::json!({ "stream": i }));
        }
        let stop = CancellationToken::new();
        stop.cancel();
        writer.run(stop).await;
        let got = lines(&path);
        assert_eq!(got.len(), QUEUE + 1, "the queue, and the count");
        let opens = got.iter().filter(|l| l["kind"] == "stream.open").count();
        assert_eq!(opens, QUEUE);
        let lost: Vec<_> = got
            .iter()
            .filter(|l| l["kind"] == "audit.dropped")
            .collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["detail"]["lines"], 10);
    }

    #[tokio::test]
    async fn only_signed_checkpoints_are_kept_and_not_too_often() {
        // (the interval itself is not waited for here: `due` is checked)
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        let (log, writer) = LocalAudit::open(path.clone());
        let relay = dwa_link::ssh::generate_ed25519();
        let other = dwa_link::ssh::generate_ed25519();
        let forged = dwa_link::checkpoint::sign(&other, 9, "ff", 1).expect("sign");
        assert!(!log.checkpoint(&forged, relay.public_key()));
        let good = dwa_link::checkpoint::sign(&relay, 9, "ff", 1).expect("sign");
        assert!(log.checkpoint(&good, relay.public_key()));
        // Too soon: they wait, the newest replacing the older.
        let later = dwa_link::checkpoint::sign(&relay, 11, "ee", 2).expect("sign");
        let newest = dwa_link::checkpoint::sign(&relay, 12, "dd", 3).expect("sign");
        assert!(log.checkpoint(&later, relay.public_key()));
        assert!(log.checkpoint(&newest, relay.public_key()));
        assert!(log.due().is_none(), "not yet");
        let stop = CancellationToken::new();
        stop.cancel();
        writer.run(stop).await;
        // The waiting one is written at stop.
        assert_eq!(
            dwa_proto::audit::checkpoints_in(&std::fs::read_to_string(&path).unwrap_or_default()),
            vec![good, newest]
        );
    }

    #[test]
    fn a_full_file_is_rotated() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("audit.jsonl");
        std::fs::write(&path, vec![b'x'; MAX_FILE as usize]).expect("fill");
        append(&path, &["{}".to_string()]).expect("append");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{}\n");
        assert_eq!(
            std::fs::metadata(tmp.path().join("audit.jsonl.1"))
                .expect("rotated")
                .len(),
            MAX_FILE
        );
    }
}
