//! Test support for end-to-end tests: real `dwa-relay` and `dwa-agent`
//! processes on loopback, builders for them, simple target servers, and an
//! `assert_eventually!` helper that polls instead of sleeping (with
//! `assert_eventually_blocking!` for synchronous code).
//!
//! Every fixture gets its own loopback /24 (`127.A.B.0/24`, unique per test
//! process and fixture): the relay listens on `.1`, targets use `.10`..
//! So tests run in parallel with fixed ports and never collide.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

pub mod browser;
pub mod hostile;
pub mod smtp;

/// For the macros: tokio under a path that works from any caller.
#[doc(hidden)]
pub use tokio as __tokio;

/// Users' TOTP secrets, and the last time step each used: a code is good
/// once, so the next log-in takes a later step (waiting if it must).
#[derive(Default, Clone)]
pub struct Totp(Arc<std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>>);

impl Totp {
    pub fn add(&self, user: &str, uri: &str) {
        self.0
            .lock()
            .expect("totp lock")
            .insert(user.to_string(), (uri.to_string(), 0));
    }

    pub fn uri(&self, user: &str) -> Option<String> {
        self.0
            .lock()
            .expect("totp lock")
            .get(user)
            .map(|(u, _)| u.clone())
    }

    /// A fresh code for `user` (None: the user has no two-factor): the
    /// current step, else the next (accepted within the skew), else wait.
    pub async fn code(&self, user: &str) -> Option<String> {
        let (uri, last) = self.0.lock().expect("totp lock").get(user).cloned()?;
        let totp = totp_rs::TOTP::from_url(&uri).expect("otpauth URI");
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let step = (now / 30).max(last + 1);
            if step <= now / 30 + 1 {
                if let Some(e) = self.0.lock().expect("totp lock").get_mut(user) {
                    e.1 = step;
                }
                return Some(totp.generate(step * 30));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub const SSH_PORT: u16 = 2222;
pub const HTTPS_PORT: u16 = 8443;

/// Polls `cond` every 50 ms, sleeping with `tokio::time::sleep`, until it
/// holds or `timeout` passes; then panics naming the condition. For async
/// code: `cond` is a `bool` expression and may `.await` (an async
/// condition), e.g. `assert_eventually!(api.ready().await, secs(5), "…")`.
/// The message (format arguments) is optional.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually!($cond, $timeout, "")
    };
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let timeout: std::time::Duration = $timeout;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if $cond { break; }
            if std::time::Instant::now() > deadline {
                panic!(
                    "assert_eventually!({}) did not hold within {:?}: {}",
                    stringify!($cond),
                    timeout,
                    format_args!($($msg)+)
                );
            }
            $crate::__tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

/// [`assert_eventually!`] for synchronous code (plain `#[test]`s and the
/// blocking fixture helpers): the same, sleeping the thread.
#[macro_export]
macro_rules! assert_eventually_blocking {
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually_blocking!($cond, $timeout, "")
    };
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let timeout: std::time::Duration = $timeout;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if $cond { break; }
            if std::time::Instant::now() > deadline {
                panic!(
                    "assert_eventually_blocking!({}) did not hold within {:?}: {}",
                    stringify!($cond),
                    timeout,
                    format_args!($($msg)+)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }};
}

fn bin_dir() -> PathBuf {
    // target/debug/deps/<test> -> target/debug
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Paths of the real binaries, built fresh once per test process (a plain
/// `cargo test` does not build other packages' executables).
pub fn bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let d = bin_dir();
        // Built already (scripts/test.sh builds them first): do not rebuild
        // from a source tree that may have changed since.
        if std::env::var_os("DWA_TEST_BINS_BUILT").is_some() {
            return (d.join("dwa-relay"), d.join("dwa-agent"));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bins", "-p", "dwa-relay", "-p", "dwa-agent"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building dwa-relay and dwa-agent failed");
        let d = bin_dir();
        (d.join("dwa-relay"), d.join("dwa-agent"))
    })
}

/// A fresh loopback /24 prefix "127.A.B" for one fixture.
pub fn subnet() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}", 40 + (pid % 180), 1 + (n % 250))
}

fn kill(child: &mut Child, signal: i32) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub struct Relay {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    /// The admin's one-time password from `init`.
    pub admin_password: String,
    /// Two-factor of users whose roles require it (from `init` and
    /// `user add` output), for [`Relay::totp_code`].
    pub totp: Totp,
    pub net: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Relay {
    /// `init` in a temp dir; `edit` may change relay.toml before serving.
    pub fn init_with(edit: impl FnOnce(&mut String)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("relay");
        let net = subnet();
        let out = Command::new(&bins().0)
            .arg("--data-dir")
            .arg(&data)
            .args(["--json", "init", "--ssh-listen"])
            .arg(format!("{net}.1:{SSH_PORT}"))
            .arg("--https-listen")
            .arg(format!("{net}.1:{HTTPS_PORT}"))
            .output()
            .expect("dwa-relay init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let admin_password = report["admin_password"]
            .as_str()
            .expect("init prints the admin password")
            .to_string();
        let totp = Totp::default();
        if let Some(uri) = report["admin_totp_uri"].as_str() {
            totp.add("admin", uri);
        }
        let cfg_path = data.join("relay.toml");
        let mut cfg = std::fs::read_to_string(&cfg_path).expect("relay.toml");
        edit(&mut cfg);
        std::fs::write(&cfg_path, cfg).expect("write relay.toml");
        let log = tmp.path().join("relay.log");
        Self {
            _tmp: tmp,
            data,
            admin_password,
            totp,
            net,
            child: None,
            log,
        }
    }

    pub fn init() -> Self {
        Self::init_with(|_| {})
    }

    /// Initialised, serving, with customer "acme".
    pub fn start_new() -> Self {
        let mut r = Self::init();
        r.start();
        r.ok(&["customer", "add", "acme"]);
        r
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut child = Command::new(&bins().0)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--json", "serve"])
            .env("DWA_LOG", "info,dwa_relay=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("dwa-relay serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(
            line.contains("https"),
            "relay did not start: {line:?}\n{}",
            self.logs()
        );
        self.child = Some(child);
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c, libc::SIGTERM);
            assert!(
                wait_exit(&mut c, Duration::from_secs(20)),
                "relay did not stop on SIGTERM"
            );
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("https://{}.1:{HTTPS_PORT}", self.net)
    }

    pub fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.net)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&bins().0)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("dwa-relay")
    }

    /// Runs a command with --json; asserts success; returns its JSON.
    pub fn ok(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "dwa-relay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value =
            serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null);
        v
    }

    /// `dwa-relay user add NAME --role ROLE [--customer C]...` (`args`
    /// after `add`), then the user's own first log-in as a person makes
    /// it: the one-time password replaced, two-factor enrolled where the
    /// role requires it (its secret kept for [`Relay::totp`]). Returns the
    /// command's JSON with `password` now the user's own.
    pub async fn add_user(&self, args: &[&str]) -> Value {
        let mut a = vec!["user", "add"];
        a.extend_from_slice(args);
        let mut v = self.ok(&a);
        let name = v["name"]
            .as_str()
            .expect("user add prints the name")
            .to_string();
        let once = v["password"]
            .as_str()
            .expect("user add prints a password")
            .to_string();
        let own = format!("{once}-own");
        browser::first_login(self, &name, &once, &own).await;
        v["password"] = own.into();
        v
    }

    pub fn token(&self, customer: &str, uses: u8, ttl: &str) -> String {
        let v = self.ok(&[
            "token",
            "create",
            "--customer",
            customer,
            "--uses",
            &uses.to_string(),
            "--ttl",
            ttl,
        ]);
        v["token"].as_str().expect("token").to_string()
    }

    pub fn audit(&self) -> Vec<Value> {
        let out = self.cli(&["audit"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn audit_kind(&self, kind: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    pub fn connected(&self, agent_id: &str) -> bool {
        let v = self.ok(&["agent", "list"]);
        v.as_array()
            .map(|a| {
                a.iter()
                    .any(|x| x["id"] == agent_id && x["connected"] == true)
            })
            .unwrap_or(false)
    }

    pub fn wait_connected(&self, agent: &Agent) {
        assert_eventually_blocking!(
            self.connected(&agent.id),
            Duration::from_secs(30),
            "agent {} never connected\nagent log:\n{}\nrelay log:\n{}",
            agent.id,
            agent.logs(),
            self.logs()
        );
    }

    /// A serving relay with one connected agent (SSH transport) whose policy
    /// allows exactly `.10` on `ports`, registered as a device. Returns the
    /// relay, the agent and the target address.
    pub fn with_agent(ports: &[u16]) -> (Relay, Agent, String) {
        let (relay, agent, ip) = Self::with_agent_config(|_| {}, ports);
        relay.add_device(&agent, &ip);
        (relay, agent, ip)
    }

    /// [`Relay::with_agent`] with relay.toml edited by `edit` first, and the
    /// target not yet registered as a device.
    pub fn with_agent_config(
        edit: impl FnOnce(&mut String),
        ports: &[u16],
    ) -> (Relay, Agent, String) {
        let mut relay = Relay::init_with(edit);
        relay.start();
        relay.ok(&["customer", "add", "acme"]);
        let ip = relay.ip(10);
        let allow = format!("{ip}/32");
        let mut agent = Agent::enroll(
            &relay,
            EnrollArgs {
                allow: &[&allow],
                ports,
                transport: "ssh",
            },
        );
        agent.start();
        relay.wait_connected(&agent);
        (relay, agent, ip)
    }

    /// Registers a device; returns its id.
    pub fn add_device(&self, agent: &Agent, address: &str) -> i64 {
        self.ok(&["device", "add", "--agent", &agent.id, "--address", address])["id"]
            .as_i64()
            .expect("device id")
    }

    /// Opens a stream through the running relay (its admin socket).
    pub async fn open(&self, agent: &str, host: &str, port: u16) -> Result<UnixStream, String> {
        let req = dwa_relay::adapters::admin_socket::AdminRequest::Connect {
            agent: agent.to_string(),
            host: host.to_string(),
            port,
        };
        let (resp, sock) =
            dwa_relay::adapters::admin_socket::request(&self.data.join("admin.sock"), &req)
                .await
                .map_err(|e| e.to_string())?;
        if resp.ok {
            Ok(sock)
        } else {
            Err(resp.error.unwrap_or_default())
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Agent {
    _tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub id: String,
    child: Option<Child>,
    log: PathBuf,
}

pub struct EnrollArgs<'a> {
    pub allow: &'a [&'a str],
    pub ports: &'a [u16],
    pub transport: &'a str,
}

impl Default for EnrollArgs<'_> {
    fn default() -> Self {
        Self {
            allow: &[],
            ports: &[],
            transport: "ssh",
        }
    }
}

/// Runs `dwa-agent enroll`, the token on standard input (the documented
/// form: no secret in argv); returns the output whether or not it worked.
pub fn enroll_output(url: &str, token: &str, config: &Path, a: &EnrollArgs) -> Output {
    let mut cmd = Command::new(&bins().1);
    cmd.args([
        "--json",
        "enroll",
        "--relay",
        url,
        "--token-file",
        "-",
        "--config",
    ])
    .arg(config)
    .args(["--transport", a.transport]);
    for n in a.allow {
        cmd.args(["--allow", n]);
    }
    for p in a.ports {
        cmd.args(["--port", &p.to_string()]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dwa-agent enroll");
    if let Some(mut stdin) = child.stdin.take() {
        // A token followed by a newline, as a person pastes it.
        let _ = writeln!(stdin, "{token}");
    }
    child.wait_with_output().expect("dwa-agent enroll")
}

impl Agent {
    pub fn enroll(relay: &Relay, a: EnrollArgs) -> Self {
        let token = relay.token("acme", 1, "1h");
        Self::enroll_with(&relay.url(), &token, a)
    }

    pub fn enroll_with(url: &str, token: &str, a: EnrollArgs) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("agent.toml");
        let out = enroll_output(url, token, &config, &a);
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("enroll json");
        let log = tmp.path().join("agent.log");
        Self {
            id: v["agent_id"].as_str().expect("agent_id").to_string(),
            _tmp: tmp,
            config,
            child: None,
            log,
        }
    }

    pub fn start(&mut self) {
        self.start_wrapped(&[]);
    }

    /// [`Agent::start`] under `wrapper` (a command and its arguments that
    /// end by running the agent's argv, e.g. `unshare` for a private
    /// mount namespace); empty runs the agent directly.
    pub fn start_wrapped(&mut self, wrapper: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bins().1);
                c
            }
            None => Command::new(&bins().1),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .env("DWA_LOG", "info,dwa_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dwa-agent run");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(c) = self.child.as_mut() {
            kill(c, sig);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn edit_config(&self, f: impl FnOnce(&mut String)) {
        let mut s = std::fs::read_to_string(&self.config).expect("agent.toml");
        f(&mut s);
        std::fs::write(&self.config, s).expect("write agent.toml");
    }

    /// The directory of agent.toml (its key, spool, audit log, status).
    pub fn config_dir(&self) -> PathBuf {
        self.config
            .parent()
            .expect("agent.toml has a directory")
            .to_path_buf()
    }

    pub fn key_path(&self) -> PathBuf {
        self.config.with_file_name("agent_key")
    }

    /// A second agent process on the same identity (config and key).
    pub fn clone_process(&self) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("agent.toml");
        std::fs::copy(&self.config, &config).expect("copy config");
        std::fs::copy(self.key_path(), tmp.path().join("agent_key")).expect("copy key");
        let log = tmp.path().join("agent.log");
        Agent {
            _tmp: tmp,
            config,
            id: self.id.clone(),
            child: None,
            log,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill9();
    }
}

/// A TCP server counting the connections it accepted.
pub struct Target {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl Target {
    pub fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Echoes every connection until EOF.
pub async fn echo_target(addr: &str) -> Target {
    serve_target(addr, |mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Writes `size` bytes of a known pattern to each connection, then closes.
pub async fn generator_target(addr: &str, size: u64) -> Target {
    serve_target(addr, move |mut s| async move {
        let buf = pattern(64 * 1024, 0);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
        let _ = s.shutdown().await;
    })
    .await
}

pub async fn serve_target<F, Fut>(addr: &str, f: F) -> Target
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let f = Arc::new(f);
    let addr = l.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(f(s));
        }
    });
    Target { addr, accepted }
}

/// Deterministic bytes: stream offset `start` onward.
pub fn pattern(len: usize, start: u64) -> Vec<u8> {
    (0..len as u64).map(|i| ((start + i) % 251) as u8).collect()
}

/// Sends `data` and reads the same amount back; returns what was read.
pub async fn roundtrip(s: &mut UnixStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).await.expect("write");
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("read");
    back
}

/// Writes `total` bytes of the pattern while reading them back; checks them.
pub async fn duplex_echo(s: UnixStream, total: u64) {
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(256 * 1024) as usize;
            w.write_all(&pattern(n, off)).await.expect("write");
            off += n as u64;
        }
        w.shutdown().await.expect("shutdown");
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < total {
        let n = r.read(&mut buf).await.expect("read");
        assert!(n > 0, "stream ended after {off} of {total} bytes");
        assert_eq!(
            &buf[..n],
            &pattern(n, off)[..],
            "corrupt data at offset {off}"
        );
        off += n as u64;
    }
    writer.await.expect("writer");
}

/// Whether Debian's OpenSSH client is installed (tests that need it say so
/// and skip when it is not, e.g. on a fresh machine without scripts/test.sh).
pub fn have_openssh() -> bool {
    Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn assert_eventually_awaits_its_condition() {
        let polls = AtomicU32::new(0);
        let ready = || async { polls.fetch_add(1, Ordering::SeqCst) >= 3 };
        assert_eventually!(ready().await, Duration::from_secs(5), "never ready");
        assert_eq!(polls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    #[should_panic(expected = "assert_eventually!(1 + 1 == 3) did not hold within 100ms: math")]
    async fn assert_eventually_names_the_condition() {
        assert_eventually!(1 + 1 == 3, Duration::from_millis(100), "{}", "math");
    }
}
