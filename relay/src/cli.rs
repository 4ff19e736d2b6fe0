//! Command line of `dwa-relay`. Each command prints a human form or, with
//! `--json`, one JSON document; errors are one line on stderr, exit code 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dwa_proto::audit::{AdminCommand, Event};
use dwa_relay::adapters::admin_socket::{local_actor, AdminRequest};
use dwa_relay::config::{DataDir, ADMIN_SOCKET};
use dwa_relay::services::audit::{to_csv, to_jsonl};
use dwa_relay::services::clock::Time;
use dwa_relay::services::devices::Actor;
use dwa_relay::services::Services;
use dwa_relay::util::{parse_duration, random_password};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "dwa-relay",
    version,
    about = "DWA relay: SSH endpoint for agents, HTTPS, audit log"
)]
struct Cli {
    /// Data directory (relay.toml, keys, database).
    #[arg(
        long,
        global = true,
        env = "DWA_DATA_DIR",
        default_value = "./dwa-data"
    )]
    data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log lines on stderr: text, or json (one object per line).
    #[arg(long, global = true, env = "DWA_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a data directory: config, SSH host key, TLS certificate, database, admin user.
    Init {
        /// The relay's DNS name; web sessions live on s-<id>.<domain>.
        #[arg(long, default_value = "dwa.localhost")]
        domain: String,
        /// Address the SSH endpoint for agents listens on.
        #[arg(long, default_value = "0.0.0.0:2222")]
        ssh_listen: SocketAddr,
        /// Address the HTTPS listener (API, portal, enrollment, WebSocket) listens on.
        #[arg(long, default_value = "0.0.0.0:8443")]
        https_listen: SocketAddr,
    },
    /// Run the relay until Ctrl-C or SIGTERM.
    Serve,
    /// Relay, agent and a simulated printer fleet on loopback, with a ready
    /// web-session link. Ctrl-C stops everything.
    Demo {
        /// Keep the demo's data here (default: a temporary directory, removed at exit;
        /// the global --data-dir is not used).
        #[arg(long)]
        keep_data: Option<PathBuf>,
        /// Address the demo relay's SSH endpoint listens on.
        #[arg(long, default_value = "127.0.0.1:2222")]
        ssh_listen: SocketAddr,
        /// Browsers resolve *.localhost to loopback: session hosts work as is.
        #[arg(long, default_value = "127.0.0.1:8443")]
        https_listen: SocketAddr,
        /// How many simulated printers to run (1..=200).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=200))]
        printers: u8,
        /// Loopback address of the first printer; the others follow it.
        #[arg(long, default_value = "127.31.0.1")]
        first_printer: std::net::Ipv4Addr,
        /// The printers' HTTP port.
        #[arg(long, default_value_t = 8080)]
        printer_http_port: u16,
        /// The printers' HTTPS port.
        #[arg(long, default_value_t = 8443)]
        printer_https_port: u16,
        /// The printers' SNMP agents (unprivileged: not 161).
        #[arg(long, default_value_t = 1161)]
        printer_snmp_port: u16,
        /// The printers' IPP port, for diagnostics (unprivileged: not 631).
        #[arg(long, default_value_t = 8631)]
        printer_ipp_port: u16,
        /// The printers' raw/PJL port, for diagnostics.
        #[arg(long, default_value_t = 9100)]
        printer_pjl_port: u16,
    },
    /// Manage customers.
    Customer {
        #[command(subcommand)]
        cmd: CustomerCmd,
    },
    /// Reports to file.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// Register devices by hand.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Enrolled agents.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// Print the audit log, or verify its hash chain.
    Audit {
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
        /// Only records at or after TIME (RFC 3339, or a duration ago such as 24h).
        #[arg(long)]
        since: Option<String>,
        /// Output format: one JSON object a line, or CSV.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: AuditFormat,
    },
    /// Copy the data directory while the relay runs: a consistent snapshot
    /// of the database, and the config, keys and certificate beside it.
    Backup {
        /// Directory to write (must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Open a stream through an agent and bridge it to stdin/stdout (like `ssh -W`).
    Connect {
        /// The agent to go through: its id, or its name when unambiguous.
        #[arg(long)]
        agent: String,
        /// HOST:PORT as seen from the agent.
        target: String,
    },
    /// Listen locally and carry each connection through an agent (like `ssh -L`).
    Forward {
        /// The agent to go through: its id, or its name when unambiguous.
        #[arg(long)]
        agent: String,
        /// HOST:PORT as seen from the agent.
        #[arg(long)]
        target: String,
        /// Local ADDRESS:PORT to listen on (port 0: any free port, printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum CustomerCmd {
    /// Add a customer.
    Add {
        /// The customer's name (unique).
        name: String,
    },
    /// Erase a customer and all its data: its agents are revoked, web
    /// sessions and tunnels to its devices end; one audit record says so.
    Erase {
        /// The customer's name.
        name: String,
    },
    /// Export all of a customer's data to one .tar.gz (JSON files: the
    /// customer, agents, devices, readings, scans, alerts, users and the
    /// audit records concerning it); audited.
    Export {
        /// The customer's name.
        name: String,
        /// The archive to write (must not exist).
        #[arg(long)]
        to: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// A customer's billing meter report: every device's start and end
    /// reading of each counter, pages, estimates and flags; audited.
    Billing {
        /// The customer's name.
        #[arg(long)]
        customer: String,
        /// First day of the period (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: String,
        /// Last day of the period, inclusive (YYYY-MM-DD, UTC).
        #[arg(long)]
        to: String,
        /// csv, or xlsx (a spreadsheet with estimated cells marked).
        #[arg(long, value_enum, default_value = "csv")]
        format: BillingFormat,
        /// The file to write (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BillingFormat {
    Csv,
    Xlsx,
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Register a device by hand (devices are otherwise found by telemetry).
    Add {
        /// The agent the device sits behind: its id, or its name when unambiguous.
        #[arg(long)]
        agent: String,
        /// The device's IP address (or host name) as the agent reaches it.
        #[arg(long)]
        address: String,
        /// A name to show in the portal.
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a device, its readings and alerts; its web sessions and
    /// tunnels end.
    Remove {
        /// The device id.
        id: i64,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; prints a one-time password (its first log-in must choose
    /// another; the user enrolls their own two-factor).
    Add {
        /// The user's log-in name (1..=64 characters).
        name: String,
        /// What the user may do.
        #[arg(long, value_parser = ["admin", "technician", "viewer", "customer"])]
        role: String,
        /// A customer the user belongs to (repeatable; exactly one for role customer).
        #[arg(long = "customer")]
        customers: Vec<String>,
    },
    /// Clear a lockout after failed log-ins.
    Unlock {
        /// The user's log-in name.
        name: String,
    },
    /// Issue a new one-time password (forgotten password); the user's
    /// log-ins and API tokens end.
    ResetPassword {
        /// The user's log-in name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an enrollment token for a customer's agents; prints it once.
    Create {
        /// The customer whose agents enroll with it.
        #[arg(long)]
        customer: String,
        /// How many agents may enroll with it (1..=5).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=5))]
        uses: u8,
        /// How long it stays valid (1s..=30d, such as 24h).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// List enrolled agents, their customers and whether they are connected.
    List,
    /// Revoke an agent's identity and drop its session.
    Revoke {
        /// The agent: its id, or its name when unambiguous.
        agent: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain and check it against the newest signed
    /// checkpoint (the relay's checkpoint file, and `--checkpoint`); exit 0
    /// if intact.
    Verify {
        /// A file holding checkpoints: a copy of the relay's
        /// audit-checkpoints.jsonl, or an agent's audit.jsonl.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AuditFormat {
    Jsonl,
    Csv,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.parse().unwrap_or_default();
    dwa_link::cli::run_main_with(format, run(cli))
}

fn print(json_mode: bool, value: serde_json::Value, text: String) {
    if json_mode {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// `dwa-relay backup`: the database through the store's snapshot, then
/// every other regular file of the data directory (config, keys,
/// certificate), permissions kept. Returns the names written.
async fn backup(svc: &Services, dir: &DataDir, to: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::DirBuilderExt;
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        bail!("{} exists and is not empty", to.display());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let db = dwa_relay::config::DB_FILE;
    svc.store
        .backup_to(&to.join(db))
        .await
        .context("copying the database")?;
    let mut files = vec![db.to_string()];
    for e in std::fs::read_dir(&dir.0)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        // The live database and its journal are in the snapshot; the
        // admin socket belongs to the running relay.
        if name.starts_with(db)
            || name == dwa_relay::config::ADMIN_SOCKET
            || !e.file_type()?.is_file()
        {
            continue;
        }
        std::fs::copy(e.path(), to.join(&name)).with_context(|| format!("copying {name}"))?;
        files.push(name);
    }
    files.sort();
    Ok(files)
}

/// Writes a report readable by its owner only (it names the customer's
/// devices).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn open(dir: &DataDir) -> Result<Services> {
    if !dir.path(dwa_relay::config::CONFIG_FILE).exists() {
        bail!(
            "{} is not a relay data directory (run `dwa-relay init --data-dir {}` first)",
            dir.0.display(),
            dir.0.display()
        );
    }
    Ok(Services::open(dir.clone(), None, Time::system()).await?)
}

fn parse_target(s: &str) -> Result<(String, u16)> {
    dwa_link::cli::split_host_port(s).map_err(anyhow::Error::msg)
}

fn parse_since(s: &str) -> Result<String> {
    if humantime::parse_rfc3339_weak(s).is_ok() {
        return Ok(s.to_string());
    }
    let d = parse_duration(s).map_err(|_| {
        anyhow::anyhow!("--since {s:?}: expected RFC 3339 time or a duration such as 24h")
    })?;
    let t = std::time::SystemTime::now() - d;
    Ok(humantime::format_rfc3339_millis(t).to_string())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let dir = DataDir(cli.data_dir.clone());
    let j = cli.json;
    let actor = local_actor();
    match cli.cmd {
        Cmd::Init {
            domain,
            ssh_listen,
            https_listen,
        } => {
            let r = dwa_relay::init::init(&dir, &domain, ssh_listen, https_listen).await?;
            let totp = r
                .admin_totp_uri
                .as_deref()
                .map(|u| {
                    format!("\n  Two-factor (add to an authenticator app; shown once):\n    {u}")
                })
                .unwrap_or_default();
            print(
                j,
                serde_json::to_value(&r)?,
                format!(
                    "Relay initialised in {}\n  SSH host key: {}\n  TLS certificate: sha256:{}\n\n  Admin user: {}\n  Password: {}\n  (shown once; only its argon2id hash is stored; change it on the portal's Password page){totp}",
                    r.data_dir, r.ssh_host_key_fingerprint, r.tls_fingerprint, r.admin_user, r.admin_password
                ),
            );
        }
        Cmd::Demo {
            keep_data,
            ssh_listen,
            https_listen,
            printers,
            first_printer,
            printer_http_port,
            printer_https_port,
            printer_snmp_port,
            printer_ipp_port,
            printer_pjl_port,
        } => {
            #[cfg(feature = "demo")]
            dwa_relay::demo::run(dwa_relay::demo::DemoOptions {
                data_dir: keep_data,
                ssh_listen,
                https_listen,
                printers,
                first_printer,
                http_port: printer_http_port,
                https_port: printer_https_port,
                snmp_port: printer_snmp_port,
                ipp_port: printer_ipp_port,
                pjl_port: printer_pjl_port,
                json: j,
            })
            .await?;
            #[cfg(not(feature = "demo"))]
            {
                let _ = (keep_data, ssh_listen, https_listen, printers, first_printer);
                let _ = (printer_http_port, printer_https_port, printer_snmp_port);
                let _ = (printer_ipp_port, printer_pjl_port);
                bail!("this dwa-relay was built without the demo (cargo feature `demo`)");
            }
        }
        Cmd::Serve => {
            let _ = open(&dir).await?;
            let b = dwa_relay::app::start(dir).await?;
            let metrics = b.metrics.map(|a| a.to_string());
            tracing::info!(ssh = %b.ssh, https = %b.https, metrics = metrics.as_deref().unwrap_or("off"), "relay serving");
            print(
                j,
                json!({"ssh": b.ssh.to_string(), "https": b.https.to_string(), "metrics": metrics}),
                format!(
                    "dwa-relay serving: ssh={} https={} metrics={}",
                    b.ssh,
                    b.https,
                    metrics.as_deref().unwrap_or("off")
                ),
            );
            dwa_relay::app::shutdown_signal().await;
            tracing::info!("shutting down");
            dwa_relay::app::stop(&b.relay).await;
        }
        Cmd::Customer {
            cmd: CustomerCmd::Erase { name },
        } => {
            let svc = open(&dir).await?;
            let id = svc.store.customer_id(&name).await?;
            let agents: Vec<String> = svc
                .store
                .agents()
                .await?
                .into_iter()
                .filter(|a| a.customer_id == id)
                .map(|a| a.id)
                .collect();
            let e = dwa_relay::services::devices::erase_customer(&svc, Actor::Local(&actor), id)
                .await?;
            // The running server drops the erased agents' sessions.
            for agent in agents {
                let _ = dwa_relay::adapters::admin_socket::request(
                    &dir.path(ADMIN_SOCKET),
                    &AdminRequest::Disconnect { agent },
                )
                .await;
            }
            let text = format!(
                "customer {name} erased: {} agents, {} devices, {} readings, {} alerts; {} customer users deactivated",
                e.agents, e.devices, e.readings, e.alerts, e.users_deactivated
            );
            print(j, serde_json::to_value(&e)?, text);
        }
        Cmd::Customer {
            cmd: CustomerCmd::Export { name, to },
        } => {
            let svc = open(&dir).await?;
            let id = svc.store.customer_id(&name).await?;
            let e =
                dwa_relay::services::export::export_customer(&svc, Actor::Local(&actor), id, &to)
                    .await?;
            let text = format!(
                "customer {name} exported to {}: {} agents, {} devices, {} readings, {} scans, {} alerts, {} users, {} audit records",
                e.file, e.agents, e.devices, e.readings, e.scans, e.alerts, e.users, e.audit_records
            );
            print(j, serde_json::to_value(&e)?, text);
        }
        Cmd::Customer {
            cmd: CustomerCmd::Add { name },
        } => {
            let svc = open(&dir).await?;
            let audit = &svc.audit;
            let id = svc.store.add_customer(&name, &svc.time.rfc3339()).await?;
            audit
                .append(
                    Event::AdminCommand(AdminCommand::CustomerAdd {
                        customer: name.clone(),
                        via: None,
                    }),
                    &actor,
                    None,
                )
                .await?;
            print(
                j,
                json!({"id": id, "name": name}),
                format!("customer {name} added (id {id})"),
            );
        }
        Cmd::Report {
            cmd:
                ReportCmd::Billing {
                    customer,
                    from,
                    to,
                    format,
                    out,
                },
        } => {
            use dwa_relay::services::telemetry::billing;
            let svc = open(&dir).await?;
            let id = svc.store.customer_id(&customer).await?;
            let period = billing::Period::new(&from, &to)?;
            let format = match format {
                BillingFormat::Csv => billing::Format::Csv,
                BillingFormat::Xlsx => billing::Format::Xlsx,
            };
            let (report, bytes) =
                billing::produce(&svc, Actor::Local(&actor), id, &period, format).await?;
            write_private(&out, &bytes)?;
            let rows: usize = report.devices.iter().map(|d| d.lines.len().max(1)).sum();
            let text = format!(
                "billing report of {customer} for {from}..{to} written to {}: {} devices, {rows} rows, {} flags",
                out.display(),
                report.devices.len(),
                report.flags()
            );
            print(
                j,
                json!({"file": out.display().to_string(), "devices": report.devices.len(),
                       "rows": rows, "flags": report.flags()}),
                text,
            );
        }
        Cmd::Device {
            cmd:
                DeviceCmd::Add {
                    agent,
                    address,
                    name,
                },
        } => {
            let svc = open(&dir).await?;
            let d = dwa_relay::services::devices::add(
                &svc,
                Actor::Local(&actor),
                &agent,
                &address,
                name.as_deref(),
            )
            .await?;
            let text = format!(
                "device {} added for agent {} (id {})",
                d.address, d.agent, d.id
            );
            print(j, serde_json::to_value(&d)?, text);
        }
        Cmd::Device {
            cmd: DeviceCmd::Remove { id },
        } => {
            let svc = open(&dir).await?;
            dwa_relay::services::devices::remove(&svc, Actor::Local(&actor), id).await?;
            print(
                j,
                json!({"id": id, "removed": true}),
                format!("device {id} removed"),
            );
        }
        Cmd::User {
            cmd:
                UserCmd::Add {
                    name,
                    role,
                    customers,
                },
        } => {
            let svc = open(&dir).await?;
            let audit = &svc.audit;
            if name.trim().is_empty() || name.len() > 64 {
                bail!("user name must be 1..=64 characters");
            }
            if role == "customer" && customers.len() != 1 {
                bail!("a customer user belongs to exactly one customer (--customer NAME)");
            }
            let password = random_password();
            let mut ids = vec![];
            for c in &customers {
                ids.push(svc.store.customer_id(c).await?);
            }
            let id = svc
                .store
                .add_user(&dwa_store::users::NewUser {
                    username: &name,
                    password_hash: &dwa_relay::init::hash_password(&password)?,
                    role: &role,
                    customers: &ids,
                    created_at: &svc.time.rfc3339(),
                    last_active: None,
                    password_change_required: true,
                })
                .await?;
            audit
                .append(
                    Event::AdminCommand(AdminCommand::UserAdd {
                        user: name.clone(),
                        role: role.clone(),
                        customers: customers.clone(),
                        totp: false,
                    }),
                    &actor,
                    None,
                )
                .await?;
            let v = json!({"id": id, "name": name, "role": role, "password": password,
                           "password_change_required": true});
            let text = format!(
                "user {name} ({role}) added\n  One-time password: {password}\n  \
                 (its first log-in must choose the user's own password; two-factor, where the role requires it, is the user's to enroll)"
            );
            print(j, v, text);
        }
        Cmd::User {
            cmd: UserCmd::ResetPassword { name },
        } => {
            let svc = open(&dir).await?;
            let password =
                dwa_relay::services::accounts::users::reset_password_named(&svc, &actor, &name)
                    .await?;
            print(
                j,
                json!({"user": name, "password": password, "password_change_required": true}),
                format!("user {name}: new one-time password: {password}\n  (shown once; the user's log-ins and API tokens have ended)"),
            );
        }
        Cmd::User {
            cmd: UserCmd::Unlock { name },
        } => {
            let svc = open(&dir).await?;
            dwa_relay::services::accounts::users::unlock_user_named(&svc, &actor, &name).await?;
            print(
                j,
                json!({"user": name, "unlocked": true}),
                format!("user {name} unlocked"),
            );
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    customer,
                    uses,
                    ttl,
                },
        } => {
            let svc = open(&dir).await?;
            let audit = &svc.audit;
            let ttl = parse_duration(&ttl)?;
            if ttl.as_secs() == 0 || ttl.as_secs() > 30 * 86_400 {
                bail!("--ttl must be between 1s and 30d");
            }
            let cid = svc.store.customer_id(&customer).await?;
            let (token, expires) = dwa_relay::services::enrollment::issue_token(
                &svc,
                cid,
                uses,
                ttl.as_secs() as i64,
                &actor,
            )
            .await?;
            let exp_text = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires as u64),
            )
            .to_string();
            audit
                .append(
                    Event::AdminCommand(AdminCommand::TokenCreate {
                        customer: customer.clone(),
                        uses,
                        expires_at: exp_text.clone(),
                        via: None,
                    }),
                    &actor,
                    None,
                )
                .await?;
            print(
                j,
                json!({"token": token, "customer": customer, "uses": uses, "expires_at": exp_text}),
                format!(
                    "{token}\n(customer {customer}; up to {uses} enrollments; expires {exp_text})"
                ),
            );
        }
        Cmd::Agent {
            cmd: AgentCmd::List,
        } => {
            let svc = open(&dir).await?;
            let agents = svc.store.agents().await?;
            let live = match dwa_relay::adapters::admin_socket::request(
                &dir.path(ADMIN_SOCKET),
                &AdminRequest::Status,
            )
            .await
            {
                Ok((r, _)) => r.agents.unwrap_or_default(),
                Err(_) => serde_json::Value::Array(vec![]),
            };
            let live_ids: Vec<&str> = live
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
                .unwrap_or_default();
            let rows: Vec<_> = agents.iter().map(|a| json!({"id": a.id, "name": a.name, "customer": a.customer,
                "connected": live_ids.contains(&a.id.as_str()), "revoked": a.revoked_at.is_some(), "last_seen": a.last_seen})).collect();
            let mut text = String::from(
                "ID                    NAME                 CUSTOMER             CONNECTED REVOKED",
            );
            for r in &rows {
                text.push_str(&format!(
                    "\n{:<21} {:<20} {:<20} {:<9} {}",
                    r["id"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    r["customer"].as_str().unwrap_or(""),
                    r["connected"],
                    r["revoked"]
                ));
            }
            print(j, json!(rows), text);
        }
        Cmd::Agent {
            cmd: AgentCmd::Revoke { agent },
        } => {
            let svc = open(&dir).await?;
            let (id, _) =
                dwa_relay::services::devices::revoke_agent(&svc, Actor::Local(&actor), &agent)
                    .await?;
            let a = svc.store.find_agent(&id).await?;
            // Drop its live session, if the server is running.
            let _ = dwa_relay::adapters::admin_socket::request(
                &dir.path(ADMIN_SOCKET),
                &AdminRequest::Disconnect {
                    agent: a.id.clone(),
                },
            )
            .await;
            print(
                j,
                json!({"id": a.id, "revoked": true}),
                format!("agent {} ({}) revoked", a.name, a.id),
            );
        }
        Cmd::Audit {
            cmd: Some(AuditCmd::Verify { checkpoint }),
            ..
        } => {
            let svc = open(&dir).await?;
            match dwa_relay::services::checkpoints::verify(&svc, checkpoint.as_deref()).await {
                Ok(v) => {
                    let n = v.records;
                    let anchor = match (&v.checkpoint, &v.source) {
                        (Some(c), Some(src)) => format!(
                            "; matches the signed checkpoint of record {} ({} s after the epoch) in {src}",
                            c.id, c.ts
                        ),
                        _ => "; no signed checkpoint found: deleting the newest records would not show".into(),
                    };
                    let rejected = if v.rejected > 0 {
                        format!("\n  WARNING: {} checkpoint(s) did not verify with this relay's key and were not used", v.rejected)
                    } else {
                        String::new()
                    };
                    print(
                        j,
                        json!({"ok": true, "records": n, "checkpoint": v.checkpoint,
                               "checkpoint_source": v.source, "checkpoints_rejected": v.rejected}),
                        format!("audit log intact: {n} records{anchor}{rejected}"),
                    )
                }
                Err(
                    e @ (dwa_relay::services::checkpoints::CheckpointError::File { .. }
                    | dwa_relay::services::checkpoints::CheckpointError::Invalid(_)),
                ) => return Err(e.into()),
                Err(e) => {
                    print(
                        j,
                        json!({"ok": false, "error": e.to_string()}),
                        format!("audit log TAMPERED: {e}"),
                    );
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Cmd::Audit {
            cmd: None,
            since,
            format,
        } => {
            let svc = open(&dir).await?;
            let audit = &svc.audit;
            let since = since.as_deref().map(parse_since).transpose()?;
            let records = audit.records(since.as_deref()).await?;
            match format {
                // --json: one JSON document (an array) like every command.
                AuditFormat::Jsonl if j => {
                    let all: Vec<serde_json::Value> = to_jsonl(&records)
                        .lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                    println!("{}", serde_json::Value::Array(all));
                }
                AuditFormat::Jsonl => print!("{}", to_jsonl(&records)),
                AuditFormat::Csv => print!("{}", to_csv(&records)?),
            }
        }
        Cmd::Backup { to } => {
            let svc = open(&dir).await?;
            let files = backup(&svc, &dir, &to).await?;
            print(
                j,
                json!({"to": to.display().to_string(), "files": files}),
                format!("backup written to {} ({} files)", to.display(), files.len()),
            );
        }
        Cmd::Connect { agent, target } => {
            let (host, port) = parse_target(&target)?;
            let (resp, mut sock) = dwa_relay::adapters::admin_socket::request(
                &dir.path(ADMIN_SOCKET),
                &AdminRequest::Connect { agent, host, port },
            )
            .await?;
            if !resp.ok {
                bail!("{}", resp.error.unwrap_or_default());
            }
            let mut stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            tokio::io::copy_bidirectional(&mut stdio, &mut sock)
                .await
                .context("stream")?;
        }
        Cmd::Forward {
            agent,
            target,
            listen,
        } => {
            let (host, port) = parse_target(&target)?;
            let (resp, mut sock) = dwa_relay::adapters::admin_socket::request(
                &dir.path(ADMIN_SOCKET),
                &AdminRequest::Forward {
                    agent,
                    host,
                    port,
                    listen,
                },
            )
            .await?;
            if !resp.ok {
                bail!("{}", resp.error.unwrap_or_default());
            }
            let bound = resp.listen.unwrap_or_default();
            print(
                j,
                json!({"listen": bound}),
                format!("forwarding {bound} -> {target} (Ctrl-C to stop)"),
            );
            use tokio::io::AsyncReadExt;
            let mut b = [0u8; 1];
            tokio::select! {
                _ = dwa_relay::app::shutdown_signal() => {}
                _ = sock.read(&mut b) => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand, option and positional argument, by its path,
    /// that `--help` would show without a word of explanation.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            // clap's own --help/--version carry their own text.
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(format!("{sub_path} (subcommand)"));
            }
            missing_help(sub, &sub_path, out);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_help() {
        let cmd = super::Cli::command();
        let mut missing = Vec::new();
        missing_help(&cmd, cmd.get_name(), &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
