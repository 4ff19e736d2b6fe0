//! Bringing up the paths under test: the DWA relay + agent (with a
//! `dwa-relay forward` for the tunnel bench, or web sessions for the web
//! bench), and OpenSSH's sshd with `ssh -N -L` or `ssh -N -R` as the
//! reference.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::procs::{first_line, free_port, log_tail, run, wait_connectable, Procs};

const STARTUP: Duration = Duration::from_secs(60);
const RELAY_IP: &str = "127.77.0.1";
const SSHD_IP: &str = "127.77.0.2";
const SSHD: &str = "/usr/sbin/sshd";

/// Names of the processes that carry the data, for CPU accounting.
pub const DWA_PROCS: &[&str] = &["relay", "agent"];
pub const OPENSSH_PROCS: &[&str] = &["sshd", "ssh"];

pub struct Dwa {
    pub listen: SocketAddr,
    pub agent_id: String,
}

/// A running relay with one connected agent.
pub struct RelayAgent {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub https: SocketAddr,
    pub domain: String,
    pub agent_id: String,
    pub admin_password: String,
    /// The admin's two-factor secret (`otpauth://` URI) when init made one.
    pub admin_totp_uri: Option<String>,
}

impl RelayAgent {
    fn data_s(&self) -> String {
        self.data.to_string_lossy().to_string()
    }

    /// The relay's self-signed certificate (PEM).
    pub fn cert_pem(&self) -> PathBuf {
        self.data.join("tls_cert.pem")
    }
}

/// relay.toml `[web]` values the web bench sets between `init` and `serve`,
/// so that the per-session rate limits do not cap the measurement.
pub struct WebTuning {
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub sessions_per_minute: u32,
    /// `None`: the relay's default.
    pub printer_connections: Option<usize>,
}

fn json_line(line: &str, what: &str) -> Result<Value> {
    serde_json::from_str(line.trim()).with_context(|| format!("{what}: not JSON: {line:?}"))
}

fn tcmd(bin: &Path) -> tokio::process::Command {
    tokio::process::Command::new(bin)
}

/// Rewrites relay.toml's `[web]` section with `t`'s values.
fn tune_web(path: &Path, t: &WebTuning) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut doc: toml::Table = text
        .parse()
        .with_context(|| format!("parse {}", path.display()))?;
    let web = doc
        .entry("web")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("relay.toml: [web] is not a table")?;
    let mut set = |k: &str, v: i64| {
        web.insert(k.to_string(), toml::Value::Integer(v));
    };
    set("requests_per_second", t.requests_per_second.into());
    set("request_burst", t.request_burst.into());
    set("sessions_per_minute", t.sessions_per_minute.into());
    if let Some(n) = t.printer_connections {
        set("printer_connections", n as i64);
    }
    std::fs::write(path, toml::to_string(&doc)?)
        .with_context(|| format!("write {}", path.display()))
}

/// Relay, enrollment, agent, device registration and the forward.
pub async fn dwa(
    procs: &mut Procs,
    bins: &Path,
    target: SocketAddr,
    transport: &str,
) -> Result<Dwa> {
    let ra = relay_agent(procs, bins, &[target.port()], transport, None).await?;
    device_add(&ra, target.ip()).await?;
    let listen = forward(procs, &ra, target).await?;
    Ok(Dwa {
        listen,
        agent_id: ra.agent_id,
    })
}

/// Relay (init, `tuning` applied, serve), a customer, an enrollment token,
/// and an agent allowed 127.77.1.0/24 on `ports`, enrolled and connected.
pub async fn relay_agent(
    procs: &mut Procs,
    bins: &Path,
    ports: &[u16],
    transport: &str,
    tuning: Option<&WebTuning>,
) -> Result<RelayAgent> {
    let relay = bins.join("dwa-relay");
    let agent = bins.join("dwa-agent");
    for b in [&relay, &agent] {
        if !b.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p dwa-relay -p dwa-agent) or pass --bin-dir",
                b.display()
            );
        }
    }
    let data = procs.dir.join("relay");
    let data_s = data.to_string_lossy().to_string();
    let ssh_port = free_port(RELAY_IP)?;
    let https_port = loop {
        let p = free_port(RELAY_IP)?;
        if p != ssh_port {
            break p;
        }
    };
    let init = run(
        "dwa-relay init",
        tcmd(&relay).args([
            "--data-dir",
            &data_s,
            "--json",
            "init",
            "--ssh-listen",
            &format!("{RELAY_IP}:{ssh_port}"),
            "--https-listen",
            &format!("{RELAY_IP}:{https_port}"),
        ]),
        STARTUP,
    )
    .await?;
    let init = json_line(&init, "init")?;
    let admin_password = init["admin_password"]
        .as_str()
        .context("init: no \"admin_password\" field")?
        .to_string();
    let admin_totp_uri = init["admin_totp_uri"].as_str().map(str::to_string);
    let domain = init["domain"]
        .as_str()
        .context("init: no \"domain\" field")?
        .to_string();
    if let Some(t) = tuning {
        tune_web(&data.join("relay.toml"), t)?;
    }
    run(
        "dwa-relay customer add",
        tcmd(&relay).args(["--data-dir", &data_s, "customer", "add", "bench"]),
        STARTUP,
    )
    .await?;
    let tok = run(
        "dwa-relay token create",
        tcmd(&relay).args([
            "--data-dir",
            &data_s,
            "--json",
            "token",
            "create",
            "--customer",
            "bench",
        ]),
        STARTUP,
    )
    .await?;
    let token = json_line(&tok, "token create")?["token"]
        .as_str()
        .context("token create: no \"token\" field")?
        .to_string();

    let mut serve = procs.spawn(
        "relay",
        Command::new(&relay).args(["--data-dir", &data_s, "--json", "serve"]),
        true,
    )?;
    let ready = json_line(
        &first_line(&mut serve, "dwa-relay serve", STARTUP).await?,
        "serve",
    )?;
    println!(
        "  relay serving: ssh {} https {}",
        ready["ssh"].as_str().unwrap_or("?"),
        ready["https"].as_str().unwrap_or("?")
    );

    let agent_toml = data.join("agent").join("agent.toml");
    let agent_toml_s = agent_toml.to_string_lossy().to_string();
    let enrolled = run(
        "dwa-agent enroll",
        tcmd(&agent)
            .args([
                "--json",
                "enroll",
                "--relay",
                &format!("https://{RELAY_IP}:{https_port}"),
                "--token",
                &token,
                "--config",
                &agent_toml_s,
                "--allow",
                "127.77.1.0/24",
                "--transport",
                transport,
            ])
            .args(
                ports
                    .iter()
                    .flat_map(|p| ["--port".to_string(), p.to_string()]),
            ),
        STARTUP,
    )
    .await?;
    let agent_id = json_line(&enrolled, "enroll")?["agent_id"]
        .as_str()
        .context("enroll: no \"agent_id\" field")?
        .to_string();
    procs.spawn(
        "agent",
        Command::new(&agent).args(["run", "--config", &agent_toml_s]),
        false,
    )?;

    // Until the relay lists the agent as connected.
    let start = Instant::now();
    loop {
        procs.check_alive("agent")?;
        procs.check_alive("relay")?;
        let list = run(
            "dwa-relay agent list",
            tcmd(&relay).args(["--data-dir", &data_s, "--json", "agent", "list"]),
            STARTUP,
        )
        .await?;
        let v = json_line(&list, "agent list")?;
        let connected = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["id"].as_str() == Some(&agent_id) && x["connected"] == Value::Bool(true))
        });
        if connected {
            break;
        }
        if start.elapsed() > STARTUP {
            bail!(
                "agent {agent_id} not connected after {STARTUP:?}; agent log:\n{}",
                log_tail(&procs.dir.join("agent.log"), 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  agent {agent_id} connected");
    Ok(RelayAgent {
        bin: relay,
        data,
        https: format!("{RELAY_IP}:{https_port}").parse()?,
        domain,
        agent_id,
        admin_password,
        admin_totp_uri,
    })
}

/// Registers a device at `ip` behind the agent; returns its id.
pub async fn device_add(ra: &RelayAgent, ip: IpAddr) -> Result<i64> {
    let out = run(
        "dwa-relay device add",
        tcmd(&ra.bin).args([
            "--data-dir",
            &ra.data_s(),
            "--json",
            "device",
            "add",
            "--agent",
            &ra.agent_id,
            "--address",
            &ip.to_string(),
        ]),
        STARTUP,
    )
    .await?;
    json_line(&out, "device add")?["id"]
        .as_i64()
        .context("device add: no \"id\" field")
}

/// `dwa-relay forward` to `target`; returns where it listens.
async fn forward(procs: &mut Procs, ra: &RelayAgent, target: SocketAddr) -> Result<SocketAddr> {
    let mut fwd = procs.spawn(
        "forward",
        Command::new(&ra.bin).args([
            "--data-dir",
            &ra.data_s(),
            "--json",
            "forward",
            "--agent",
            &ra.agent_id,
            "--target",
            &target.to_string(),
            "--listen",
            "127.0.0.1:0",
        ]),
        true,
    )?;
    let f = json_line(
        &first_line(&mut fwd, "dwa-relay forward", STARTUP).await?,
        "forward",
    )?;
    let listen: SocketAddr = f["listen"]
        .as_str()
        .context("forward: no \"listen\" field")?
        .parse()
        .context("forward: bad listen address")?;
    println!("  dwa-relay forward listening on {listen} -> {target}");
    Ok(listen)
}

pub struct OpenSsh {
    pub listen: SocketAddr,
    pub version: String,
    /// Cipher negotiated, from `ssh -v` (None if not found in its log).
    pub cipher: Option<String>,
}

fn current_user() -> String {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return u;
        }
    }
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

async fn keygen(path: &Path) -> Result<()> {
    run(
        "ssh-keygen",
        tokio::process::Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "dwa-bench",
            "-f",
            &path.to_string_lossy(),
        ]),
        STARTUP,
    )
    .await
    .map(|_| ())
}

/// Whether the OpenSSH reference can run here; prints why not.
pub fn openssh_available() -> bool {
    if !Path::new(SSHD).exists() {
        println!(
            "  OpenSSH server not installed ({SSHD} missing): skipping the OpenSSH columns.\n  \
             To include them run: apt-get install -y openssh-server openssh-client"
        );
        return false;
    }
    true
}

/// sshd on 127.77.0.2 and `ssh -N -L` to the target.
pub async fn openssh(
    procs: &mut Procs,
    target: SocketAddr,
    cipher: Option<&str>,
) -> Result<OpenSsh> {
    let sshd = sshd(procs).await?;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1")?).parse()?;
    let spec = format!("{listen}:{}:{}", target.ip(), target.port());
    let cipher = ssh_client(procs, &sshd, "-L", &spec, listen, cipher).await?;
    println!(
        "  ssh -L listening on {listen} -> {target} via sshd {} (cipher {})",
        sshd.addr,
        cipher.as_deref().unwrap_or("unknown")
    );
    Ok(OpenSsh {
        listen,
        version: sshd.version,
        cipher,
    })
}

/// sshd on 127.77.0.2 and, from the "site", `ssh -N -R` so that a port on
/// the sshd side reaches `printer`: OpenSSH's way to put a LAN device on a
/// cloud host.
pub async fn openssh_reverse(
    procs: &mut Procs,
    printer: SocketAddr,
    cipher: Option<&str>,
) -> Result<OpenSsh> {
    let sshd = sshd(procs).await?;
    // sshd binds the forwarded port itself; GatewayPorts clientspecified
    // lets it bind the address asked for.
    let listen: SocketAddr = format!("{SSHD_IP}:{}", free_port(SSHD_IP)?).parse()?;
    let spec = format!("{listen}:{}:{}", printer.ip(), printer.port());
    let cipher = ssh_client(procs, &sshd, "-R", &spec, listen, cipher).await?;
    println!(
        "  ssh -R: sshd {} listening on {listen} -> {printer} (cipher {})",
        sshd.addr,
        cipher.as_deref().unwrap_or("unknown")
    );
    Ok(OpenSsh {
        listen,
        version: sshd.version,
        cipher,
    })
}

/// A running sshd and the client key it accepts.
struct Sshd {
    addr: SocketAddr,
    client_key: PathBuf,
    version: String,
}

async fn sshd(procs: &mut Procs) -> Result<Sshd> {
    let dir: PathBuf = procs.dir.join("openssh");
    std::fs::create_dir_all(&dir)?;
    // sshd refuses to start without its privilege-separation directory.
    if let Err(e) = std::fs::create_dir_all("/run/sshd") {
        println!("  warning: cannot create /run/sshd ({e}); sshd may refuse to start");
    }
    let host_key = dir.join("host_ed25519");
    let client_key = dir.join("client_ed25519");
    keygen(&host_key).await?;
    keygen(&client_key).await?;
    let port = free_port(SSHD_IP)?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress {SSHD_IP}:{port}\n\
             HostKey {}\n\
             AuthorizedKeysFile {}.pub\n\
             PidFile none\n\
             UsePAM no\n\
             StrictModes no\n\
             AllowTcpForwarding yes\n\
             GatewayPorts clientspecified\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             LogLevel INFO\n",
            host_key.display(),
            client_key.display()
        ),
    )?;
    let config_s = config.to_string_lossy().to_string();
    run(
        "sshd -t (config test)",
        tokio::process::Command::new(SSHD).args(["-t", "-f", &config_s]),
        STARTUP,
    )
    .await?;
    let version = run(
        "ssh -V",
        tokio::process::Command::new("sh").args(["-c", "ssh -V 2>&1"]),
        STARTUP,
    )
    .await
    .map(|s| s.trim().to_string())
    .unwrap_or_default();

    procs.spawn(
        "sshd",
        Command::new(SSHD).args(["-D", "-e", "-f", &config_s]),
        false,
    )?;
    let addr: SocketAddr = format!("{SSHD_IP}:{port}").parse()?;
    {
        let p = &mut *procs;
        wait_connectable(addr, STARTUP, || p.check_alive("sshd")).await?;
    }
    Ok(Sshd {
        addr,
        client_key,
        version,
    })
}

/// `ssh -v -N <flag> <spec>` to `sshd`, waiting until `listen` accepts;
/// returns the negotiated cipher as `ssh -v` logs it.
async fn ssh_client(
    procs: &mut Procs,
    sshd: &Sshd,
    flag: &str,
    spec: &str,
    listen: SocketAddr,
    cipher: Option<&str>,
) -> Result<Option<String>> {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-v",
        "-N",
        flag,
        spec,
        "-i",
        &sshd.client_key.to_string_lossy(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-F",
        "/dev/null",
        "-p",
        &sshd.addr.port().to_string(),
    ]);
    if let Some(c) = cipher {
        cmd.args(["-c", c]);
    }
    cmd.arg(format!("{}@{}", current_user(), sshd.addr.ip()));
    procs.spawn("ssh", &mut cmd, false)?;
    {
        let p = &mut *procs;
        wait_connectable(listen, STARTUP, || p.check_alive("ssh")).await?;
    }
    let log = std::fs::read_to_string(procs.dir.join("ssh.log")).unwrap_or_default();
    Ok(log
        .lines()
        .find_map(|l| l.split("server->client cipher: ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string()))
}

/// `dwa-relay --version` of the binaries under test ("" if it fails).
pub async fn relay_version(bins: &std::path::Path) -> String {
    crate::procs::run(
        "dwa-relay --version",
        tokio::process::Command::new(bins.join("dwa-relay")).arg("--version"),
        std::time::Duration::from_secs(30),
    )
    .await
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}
