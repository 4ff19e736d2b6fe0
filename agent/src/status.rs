//! What the running agent tells `dwa-agent status`: its link to the relay,
//! its last upload and scan, since when readings wait. The running agent
//! keeps a [`StatusBoard`] and writes it to `status.json` beside
//! agent.toml (atomically, owner-only, at most a few times a second); the
//! command reads that file, the spool and the config — it never talks to
//! the running process, so it works as another user with read access and
//! while the agent is stuck.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The file beside agent.toml.
pub const STATUS_FILE: &str = "status.json";

/// Writes at most this often.
const WRITE_EVERY: Duration = Duration::from_millis(200);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    pub updated_at: u64,
    pub link: Link,
    pub last_upload: Option<Upload>,
    pub last_scan: Option<ScanSeen>,
    /// Since when readings have waited in the spool (the first item
    /// spooled while it was empty); None: empty, or waiting since before
    /// this process started (then `started_at` is the bound).
    pub spool_waiting_since: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// `connecting`, `connected`, `down` or `stopped`.
    pub state: String,
    /// `ssh` or `websocket` while connected.
    pub transport: Option<String>,
    pub since: u64,
    /// Why the last session failed, if it did.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub at: u64,
    pub items: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSeen {
    pub at: u64,
    pub id: String,
    pub trigger: String,
    pub addresses: u32,
    pub found: u32,
}

/// The running agent's status, and the nudge for its writer.
pub struct StatusBoard {
    status: Mutex<Status>,
    changed: Notify,
    path: PathBuf,
}

impl StatusBoard {
    pub fn new(config_path: &Path) -> Self {
        let path = config_path.with_file_name(STATUS_FILE);
        let t = now();
        Self {
            status: Mutex::new(Status {
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                started_at: t,
                updated_at: t,
                link: Link {
                    state: "connecting".into(),
                    since: t,
                    ..Link::default()
                },
                ..Status::default()
            }),
            changed: Notify::new(),
            path,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.updated_at = now();
        drop(s);
        self.changed.notify_one();
    }

    fn set_link(&self, state: &str, transport: Option<&str>, error: Option<String>) {
        self.update(|s| {
            if s.link.state != state {
                s.link.since = now();
            }
            s.link.state = state.into();
            s.link.transport = transport.map(str::to_string);
            if error.is_some() || state == "connected" {
                s.link.last_error = error;
            }
        });
    }

    pub fn connecting(&self) {
        self.set_link("connecting", None, None);
    }

    pub fn connected(&self, transport: &str) {
        self.set_link("connected", Some(transport), None);
    }

    pub fn down(&self, error: String) {
        self.set_link("down", None, Some(error));
    }

    /// A batch the relay acknowledged; `empty`: nothing waits any more.
    pub fn uploaded(&self, items: usize, empty: bool) {
        self.update(|s| {
            s.last_upload = Some(Upload {
                at: now(),
                items: items as u64,
            });
            if empty {
                s.spool_waiting_since = None;
            }
        });
    }

    /// A scan spooled; `was_empty`: the spool held nothing before it.
    pub fn scanned(&self, scan: ScanSeen, was_empty: bool) {
        self.update(|s| {
            if was_empty && s.spool_waiting_since.is_none() {
                s.spool_waiting_since = Some(scan.at);
            }
            s.last_scan = Some(scan);
        });
    }

    pub fn snapshot(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn write(&self) {
        let s = self.snapshot();
        let Ok(text) = serde_json::to_vec_pretty(&s) else {
            return;
        };
        if let Err((p, e)) = dwa_link::fs::write_private(&self.path, &text) {
            tracing::warn!(path = %p.display(), error = %e, "writing the status file");
        }
    }

    /// Writes the file now and after every change until `shutdown`, then
    /// once more as `stopped`.
    pub async fn run_writer(&self, shutdown: CancellationToken) {
        loop {
            self.write();
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            tokio::time::sleep(WRITE_EVERY).await;
        }
        self.set_link("stopped", None, None);
        self.write();
    }
}

/// The status file of the agent configured at `config_path`, if any.
pub fn read(config_path: &Path) -> std::io::Result<Status> {
    let text = std::fs::read(config_path.with_file_name(STATUS_FILE))?;
    serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn ago(t: &serde_json::Value) -> String {
    match t.as_u64() {
        Some(t) => format!("{} s ago", now().saturating_sub(t)),
        None => "never".into(),
    }
}

/// `dwa-agent status` for a person, from its JSON form.
pub fn describe(v: &serde_json::Value) -> String {
    let st = &v["status"];
    let link = &st["link"];
    let running = v["running"] == true;
    let mut out = vec![format!(
        "dwa-agent {} (agent {}), relay {}",
        v["version"].as_str().unwrap_or(""),
        v["agent_id"].as_str().unwrap_or(""),
        v["relay"].as_str().unwrap_or("")
    )];
    if !running {
        out.push(format!(
            "  not running (last state {}, {})",
            link["state"].as_str().unwrap_or("unknown"),
            ago(&st["updated_at"])
        ));
    } else {
        out.push(format!(
            "  link: {}{} since {}",
            link["state"].as_str().unwrap_or("?"),
            link["transport"]
                .as_str()
                .map(|t| format!(" over {t}"))
                .unwrap_or_default(),
            ago(&link["since"])
        ));
    }
    if let Some(e) = link["last_error"].as_str() {
        out.push(format!("  last link error: {e}"));
    }
    out.push(format!(
        "  last upload: {}",
        match st["last_upload"]["items"].as_u64() {
            Some(n) => format!("{n} items, {}", ago(&st["last_upload"]["at"])),
            None => "none since start".into(),
        }
    ));
    let sp = &v["spool"];
    out.push(format!(
        "  spool: {} items waiting ({} bytes){}",
        sp["pending"].as_u64().unwrap_or(0),
        sp["pending_bytes"].as_u64().unwrap_or(0),
        match st["spool_waiting_since"].as_u64() {
            Some(_) => format!(", oldest spooled {}", ago(&st["spool_waiting_since"])),
            None => String::new(),
        }
    ));
    let sc = &st["last_scan"];
    out.push(format!(
        "  last scan: {}",
        match sc["found"].as_u64() {
            Some(found) => format!(
                "{found} printers in {} addresses ({}), {}",
                sc["addresses"],
                sc["trigger"].as_str().unwrap_or(""),
                ago(&sc["at"])
            ),
            None => "none since start".into(),
        }
    ));
    let list = |k: &str| {
        v["policy"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.to_string().trim_matches('"').to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    out.push(format!(
        "  policy: allow [{}], deny [{}], ports [{}]",
        list("allow"),
        list("deny"),
        list("ports")
    ));
    out.join("\n")
}

/// Whether process `pid` is alive (Linux: its /proc entry).
pub fn alive(pid: u32) -> bool {
    pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_board_is_written_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = tmp.path().join("agent.toml");
        let board = std::sync::Arc::new(StatusBoard::new(&cfg));
        board.connected("ssh");
        let scan = ScanSeen {
            at: 5,
            id: "s1".into(),
            trigger: "schedule".into(),
            addresses: 16,
            found: 4,
        };
        board.scanned(scan.clone(), true);
        let stop = CancellationToken::new();
        let b = board.clone();
        let s2 = stop.clone();
        let writer = tokio::spawn(async move { b.run_writer(s2).await });
        let mut got = None;
        for _ in 0..50 {
            if let Ok(s) = read(&cfg) {
                if s.last_scan.is_some() {
                    got = Some(s);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = got.expect("status written");
        assert_eq!(s.link.state, "connected");
        assert_eq!(s.link.transport.as_deref(), Some("ssh"));
        assert_eq!(s.last_scan, Some(scan));
        assert_eq!(s.spool_waiting_since, Some(5));
        board.uploaded(5, true);
        board.down("relay gone".into());
        stop.cancel();
        writer.await.expect("writer");
        let s = read(&cfg).expect("read");
        assert_eq!(s.link.state, "stopped");
        assert_eq!(s.link.last_error.as_deref(), Some("relay gone"));
        assert_eq!(s.spool_waiting_since, None);
        assert_eq!(s.last_upload.map(|u| u.items), Some(5));
        assert!(alive(std::process::id()));
    }
}
