//! Child processes and the scratch directory of one bench run: every child
//! is killed and reaped, and the directory removed, when the guard drops.

use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Owns the scratch directory and every long-running child process.
pub struct Procs {
    pub dir: PathBuf,
    keep: bool,
    children: Vec<(String, Child)>,
}

/// A long-running child as the caller sees it.
pub struct Spawned {
    /// Lines of the child's stdout, if it was piped.
    pub lines: Option<UnboundedReceiver<String>>,
    pub log: PathBuf,
}

impl Procs {
    /// Creates a fresh scratch directory under the system temp dir.
    pub fn new(keep: bool) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("dwa-bench-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self {
            dir,
            keep,
            children: Vec::new(),
        })
    }

    /// Starts a child whose stderr goes to `<dir>/<name>.log`. With
    /// `pipe_stdout` its stdout lines are delivered on `lines` (a thread keeps
    /// draining them so the child never blocks on a full pipe); otherwise
    /// stdout goes to the log as well.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command, pipe_stdout: bool) -> Result<Spawned> {
        let log = self.dir.join(format!("{name}.log"));
        let err = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let out = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(err.try_clone()?)
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        let lines = match child.stdout.take() {
            Some(stdout) => {
                let (tx, rx) = unbounded_channel();
                std::thread::spawn(move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let _ = tx.send(line);
                    }
                });
                Some(rx)
            }
            None => None,
        };
        self.children.push((name.to_string(), child));
        Ok(Spawned { lines, log })
    }

    /// Fails with the child's log tail if the child `name` has exited.
    pub fn check_alive(&mut self, name: &str) -> Result<()> {
        let dir = self.dir.clone();
        for (n, c) in &mut self.children {
            if n == name {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "{name} exited ({status}); last lines of its log:\n{}",
                        log_tail(&dir.join(format!("{name}.log")), 15)
                    );
                }
            }
        }
        Ok(())
    }

    /// Names and pids of the children whose names are given.
    pub fn pids(&self, names: &[&str]) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(n, c)| (n.clone(), c.id()))
            .collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // Reverse start order: clients before the servers they talk to.
        while let Some((_, mut c)) = self.children.pop() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.keep {
            eprintln!("(kept scratch directory {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits for the next stdout line of a spawned child.
pub async fn first_line(s: &mut Spawned, what: &str, timeout: Duration) -> Result<String> {
    let rx = s.lines.as_mut().context("stdout was not piped")?;
    match tokio::time::timeout(timeout, rx.recv()).await {
        Ok(Some(line)) => Ok(line),
        Ok(None) => bail!(
            "{what} closed its output before it was ready; last lines of {}:\n{}",
            s.log.display(),
            log_tail(&s.log, 15)
        ),
        Err(_) => bail!(
            "{what} not ready after {timeout:?}; last lines of {}:\n{}",
            s.log.display(),
            log_tail(&s.log, 15)
        ),
    }
}

/// Runs a command to completion (bounded by `timeout`) and returns stdout.
pub async fn run(
    what: &str,
    cmd: &mut tokio::process::Command,
    timeout: Duration,
) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer after {timeout:?}"))?
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> Result<u16> {
    let l = StdListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(l.local_addr()?.port())
}

/// Polls until a TCP connection to `addr` succeeds; `alive` is asked between
/// attempts so that a child that died fails the wait at once.
pub async fn wait_connectable(
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            return Ok(());
        }
        alive()?;
        if start.elapsed() > timeout {
            bail!("{addr} not accepting connections after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// (ppid, user + system ticks) from a /proc/PID/stat text.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // Fields after "(comm)": state ppid ... utime(12th) stime(13th).
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 {
        return None;
    }
    let ppid = f[1].parse().ok()?;
    Some((
        ppid,
        f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
    ))
}

/// CPU ticks (user + system, all threads) used so far by this process alone.
pub fn own_cpu_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0, |(_, t)| t)
}

/// CPU ticks (user + system) used so far by `roots` and all their live
/// descendants, from /proc.
pub fn cpu_ticks(roots: &[u32]) -> u64 {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new(); // pid, ppid, ticks
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if let Some((ppid, t)) = parse_stat(&stat) {
                procs.push((pid, ppid, t));
            }
        }
    }
    let mut set: Vec<u32> = roots.to_vec();
    loop {
        let before = set.len();
        for &(pid, ppid, _) in &procs {
            if set.contains(&ppid) && !set.contains(&pid) {
                set.push(pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    procs
        .iter()
        .filter(|(pid, _, _)| set.contains(pid))
        .map(|(_, _, t)| t)
        .sum()
}
