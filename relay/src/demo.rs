//! `dwa-relay demo`: the whole product on one machine — a relay, one agent
//! (the real `dwa-agent` binary next to this one), and a simulated printer
//! fleet on loopback — with a ready web-session link. Ctrl-C stops all of it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dwa_sim::{Fleet, FleetConfig};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::config::DataDir;
use crate::error::{RelayError, Result};
use crate::services::web_sessions::{self, OpenRequest};

pub struct DemoOptions {
    /// Kept after the demo when given; a temporary directory otherwise.
    pub data_dir: Option<PathBuf>,
    pub ssh_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub printers: u8,
    /// First printer address; the others follow.
    pub first_printer: Ipv4Addr,
    pub http_port: u16,
    pub https_port: u16,
    /// UDP port of the printers' SNMP agents (the agent scans it).
    pub snmp_port: u16,
    /// TCP ports where the printers answer IPP and PJL (diagnostics).
    pub ipp_port: u16,
    pub pjl_port: u16,
    pub json: bool,
}

const CUSTOMER: &str = "Demo Customer";

fn fail(what: &str, e: impl std::fmt::Display) -> RelayError {
    RelayError::Unavailable(format!("{what}: {e}"))
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn run(o: DemoOptions) -> Result<()> {
    let agent_bin = std::env::current_exe()?.with_file_name("dwa-agent");
    if !agent_bin.exists() {
        return Err(RelayError::NotFound(format!(
            "{} not found: the demo runs the real agent (build both with `cargo build --bins`)",
            agent_bin.display()
        )));
    }
    let tmp;
    let dir = match &o.data_dir {
        Some(d) => DataDir(d.clone()),
        None => {
            tmp = tempfile::tempdir()?;
            DataDir(tmp.path().join("relay"))
        }
    };
    let report = crate::init::init(&dir, "dwa.localhost", o.ssh_listen, o.https_listen).await?;
    demo_without_two_factor(&dir).await?;

    // The fleet first: the agent's policy allows exactly its addresses.
    let addrs: Vec<IpAddr> = (0..o.printers.max(1))
        .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(o.first_printer) + u32::from(i))))
        .collect();
    let fleet = Fleet::start(FleetConfig {
        addresses: addrs.clone(),
        http_port: o.http_port,
        https_port: Some(o.https_port),
        snmp_port: Some(o.snmp_port),
        ipp_port: Some(o.ipp_port),
        pjl_port: Some(o.pjl_port),
        ..Default::default()
    })
    .await
    .map_err(|e| fail("starting the simulated printers", e))?;

    let bound = crate::app::start(dir.clone()).await?;
    let relay = bound.relay.clone();
    let result = async {
        let cid = relay
            .store
            .add_customer(CUSTOMER, &relay.time.rfc3339())
            .await?;
        let (token, _) =
            crate::services::enrollment::issue_token(&relay, cid, 1, 600, "demo").await?;
        let agent_toml = dir.path("demo-agent.toml");
        let relay_url = format!("https://{}", bound.https);
        let mut enroll = tokio::process::Command::new(&agent_bin);
        enroll
            .args([
                "--json",
                "enroll",
                "--relay",
                &relay_url,
                "--token",
                &token,
                "--transport",
                "ssh",
                "--config",
            ])
            .arg(&agent_toml)
            .args([
                "--port",
                &o.http_port.to_string(),
                "--port",
                &o.https_port.to_string(),
                "--port",
                &o.ipp_port.to_string(),
                "--port",
                &o.pjl_port.to_string(),
            ]);
        for a in &addrs {
            enroll.args(["--allow", &format!("{a}/32")]);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), enroll.output())
            .await
            .map_err(|_| fail("enrolling the agent", "timed out"))??;
        if !out.status.success() {
            return Err(fail(
                "enrolling the agent",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let enrolled: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| fail("reading the agent's enrollment", e))?;
        scan_fleet(&agent_toml, &addrs, o.snmp_port)?;
        let agent_id = enrolled["agent_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Named devices first: the agent's first readings then claim them
        // (after it, a reading would have created them unnamed).
        let mut devices = vec![];
        for (i, a) in addrs.iter().enumerate() {
            let id = relay
                .store
                .add_device(
                    &agent_id,
                    &a.to_string(),
                    Some(&format!("Printer {}", i + 1)),
                    &relay.time.rfc3339(),
                )
                .await?;
            devices.push(id);
        }
        let log = std::fs::File::create(dir.path("demo-agent.log"))?;
        let mut agent = tokio::process::Command::new(&agent_bin)
            .args(["run", "--config"])
            .arg(&agent_toml)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let r = serve_demo(&relay, &o, &report, &agent_id, &addrs, &devices, &dir).await;
        // SIGTERM, then a bounded wait; kill_on_drop covers the rest.
        if let Some(pid) = agent.id() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), agent.wait())
            .await
            .is_err()
        {
            let _ = agent.kill().await;
        }
        r
    }
    .await;
    fleet.shutdown().await;
    crate::app::stop(&relay).await;
    result
}

/// Points the demo agent's telemetry at the simulated printers: their
/// addresses, their SNMP port, a scan a minute.
fn scan_fleet(agent_toml: &std::path::Path, addrs: &[IpAddr], snmp_port: u16) -> Result<()> {
    let text = std::fs::read_to_string(agent_toml)?;
    let mut cfg: toml::Table =
        toml::from_str(&text).map_err(|e| fail("reading the agent's configuration", e))?;
    let mut scan = toml::Table::new();
    let ranges: Vec<toml::Value> = addrs
        .iter()
        .map(|a| toml::Value::from(a.to_string()))
        .collect();
    scan.insert("ranges".into(), ranges.into());
    scan.insert("snmp_port".into(), i64::from(snmp_port).into());
    scan.insert("interval".into(), "1m".into());
    cfg.insert("scan".into(), scan.into());
    let text = toml::to_string(&cfg).map_err(|e| fail("writing the agent's configuration", e))?;
    crate::util::write_private(agent_toml, text.as_bytes())?;
    Ok(())
}

/// The demo's relay is a throwaway on loopback: two-factor is off for it
/// (the admin logs in with the password alone), and its output says so.
async fn demo_without_two_factor(dir: &DataDir) -> Result<()> {
    let path = dir.path(crate::config::CONFIG_FILE);
    let mut cfg = crate::config::RelayConfig::load(&dir.0)?;
    cfg.accounts.require_totp.clear();
    let text = toml::to_string(&cfg).map_err(|e| crate::RelayError::Config(e.to_string()))?;
    crate::util::write_private(&path, text.as_bytes())?;
    let store = dwa_store::Store::open_sqlite(&dir.path(crate::config::DB_FILE), false).await?;
    if let Some(id) = store.user_id_by_name("admin").await? {
        store.reset_totp(id).await?;
    }
    store.close().await;
    Ok(())
}

async fn serve_demo(
    relay: &crate::adapters::state::Relay,
    o: &DemoOptions,
    report: &crate::init::InitReport,
    agent_id: &str,
    addrs: &[IpAddr],
    devices: &[i64],
    dir: &DataDir,
) -> Result<()> {
    // Wait for the agent's session (its Hello included) before opening.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay
        .agents
        .get(agent_id)
        .and_then(|c| c.native())
        .is_none()
    {
        if tokio::time::Instant::now() > deadline {
            return Err(fail(
                "the agent did not connect",
                format!("see {}", dir.path("demo-agent.log").display()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = crate::services::auth::local_principal(relay, &report.admin_user).await?;
    let req = OpenRequest {
        port: o.http_port,
        tls: None,
        rewrite: None,
    };
    let warm = crate::adapters::web::proxy::Prewarm(relay.clone());
    let link = |v: &web_sessions::Opened| v.url.clone();
    let first = web_sessions::open(&relay.svc, &admin, devices[0], &req, &warm).await?;
    let portal = format!("{}/", relay.portal_origin());
    if o.json {
        println!(
            "{}",
            json!({"portal": portal, "api": format!("{portal}api/v1"), "username": report.admin_user,
                   "password": report.admin_password, "two_factor": "off for this throwaway demo relay",
                   "web_session": link(&first),
                   "printers": addrs, "device_ids": devices, "data_dir": dir.0})
        );
    } else {
        println!(
            "DWA demo running (data in {}).\n\n  Portal:     {portal}   (API under {portal}api/v1)\n  Log in:     {} / {}   (two-factor is off for this throwaway demo relay)\n  Printers:   {} simulated, {}..  (web {}, https {}, SNMP {})\n  Telemetry:  the agent scans them every minute: {portal}api/v1/devices, {portal}api/v1/devices.csv\n  Web session for Printer 1 (one-time link, valid 60 s; your browser will warn about the demo's self-signed certificate):\n    {}\n\nPress Enter for a new web-session link; Ctrl-C stops everything.",
            dir.0.display(),
            report.admin_user,
            report.admin_password,
            addrs.len(),
            addrs[0],
            o.http_port,
            o.https_port,
            o.snmp_port,
            link(&first)
        );
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = crate::app::shutdown_signal() => return Ok(()),
            l = lines.next_line(), if stdin_open => match l {
                Ok(Some(_)) => match web_sessions::open(&relay.svc, &admin, devices[0], &req, &warm).await {
                    Ok(v) if o.json => println!("{}", json!({"web_session": link(&v)})),
                    Ok(v) => println!("  {}", link(&v)),
                    Err(e) => eprintln!("  web session: {e}"),
                },
                // No terminal (or it closed): keep running until a signal.
                _ => stdin_open = false,
            },
        }
    }
}
