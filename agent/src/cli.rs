//! Command line of `dwa-agent`. Errors are one line on stderr with exit
//! code 1; `policy check` exits 0 for allow and 3 for deny.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dwa_agent::config::{AgentConfig, Secret, TransportMode};
use dwa_agent::enroll::{enroll, EnrollOptions};
use dwa_agent::policy::LivePolicy;
use dwa_agent::session::Agent;
use dwa_agent::telemetry::spool::{Limits, OnBadKey, Spool};
use dwa_agent::telemetry::v3::{
    AuthProtocol, PrivProtocol, SecurityLevel, V3Field, V3Input, V3Security,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Parser)]
#[command(
    name = "dwa-agent",
    version,
    about = "DWA site agent: outbound tunnel to the relay, local policy as the final word"
)]
struct Cli {
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
    /// Register with a relay using an enrollment token; writes agent.toml and the agent key.
    ///
    /// The token is a secret: prefer --token-file (`-` reads standard
    /// input) or --token-env over --token, which other users see in ps.
    #[command(group = clap::ArgGroup::new("token_source")
        .required(true)
        .args(["token", "token_file", "token_env"]))]
    Enroll {
        /// The relay's HTTPS URL, such as https://dwa.example.com:8443.
        #[arg(long)]
        relay: String,
        /// File holding the enrollment token (dwa1.…) from `dwa-relay token create`; `-` reads standard input.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Environment variable holding the enrollment token.
        #[arg(long)]
        token_env: Option<String>,
        /// The enrollment token itself (visible in the process list: prefer --token-file).
        #[arg(long)]
        token: Option<String>,
        /// Where to write the agent's configuration (the key goes next to it).
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
        /// Networks the agent may reach (policy.allow); default: the scan ranges.
        #[arg(long)]
        allow: Vec<String>,
        /// Allowed ports (policy.ports); default 80, 443, 8000, 9100, 631.
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// How to reach the relay: SSH, SSH over WebSocket, or SSH falling back to WebSocket.
        #[arg(long, default_value = "auto", value_parser = ["ssh", "websocket", "auto"])]
        transport: String,
        /// Enroll again over an existing agent.toml.
        #[arg(long)]
        force: bool,
    },
    /// Keep the tunnel to the relay up until Ctrl-C or SIGTERM.
    Run {
        /// The agent's configuration, written by `enroll`.
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
    /// One-shot SNMP scan; prints the printers found.
    ///
    /// Credentials: the --v3-* user and --community values given here;
    /// with neither, those of --config's [scan] section; else community
    /// "public". SNMPv3 pass phrases are read from an environment variable
    /// or a file, never from the command line (other users see it in ps).
    Scan {
        /// CIDR (192.168.1.0/24), single address, a.b.c.x-y, first-last, or
        /// a host name (resolved now; with --config, each address must be
        /// allowed by its policy).
        #[arg(required = true)]
        ranges: Vec<String>,
        /// DNS server (ADDR or ADDR:PORT, repeatable) for host names and
        /// PTR lookups; default: --config's scan.dns_servers, else the system's.
        #[arg(long = "dns-server", value_parser = dwa_agent::telemetry::names::parse_server)]
        dns_servers: Vec<std::net::SocketAddr>,
        /// Do not look up the printers' DNS names (PTR).
        #[arg(long)]
        no_dns_names: bool,
        /// Do not ask the printers for their NetBIOS names.
        #[arg(long)]
        no_netbios: bool,
        /// NetBIOS name service port (default 137, or --config's).
        #[arg(long)]
        netbios_port: Option<u16>,
        /// File of communities to try, one per line (blank lines and `#`
        /// comments skipped); `-` reads standard input. Tried first.
        #[arg(long)]
        community_file: Option<PathBuf>,
        /// Environment variable holding a community to try (after the file's).
        #[arg(long)]
        community_env: Option<String>,
        /// Community to try, in order (repeatable; visible in the process
        /// list: prefer --community-file); default "public" unless a v3
        /// user is given.
        #[arg(long = "community")]
        communities: Vec<String>,
        /// Default 161, or [scan] snmp_port of --config.
        #[arg(long)]
        port: Option<u16>,
        /// agent.toml whose [scan] section (communities, [[scan.v3]] users,
        /// snmp_port) applies when no credentials are given here.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        v3: V3Args,
        /// Per-request timeout.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Retries per request after a timeout.
        #[arg(long, default_value_t = 1)]
        retries: u32,
        /// Devices walked at the same time. Discovery, which finds them, covers
        /// the whole range over one paced socket regardless.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        concurrency: u32,
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
        format: String,
    },
    /// Local policy.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// The telemetry spool: readings waiting for the relay.
    Spool {
        #[command(subcommand)]
        cmd: SpoolCmd,
    },
    /// What the agent is doing: link to the relay and its transport, last
    /// upload, readings waiting, last scan, policy, version.
    Status {
        /// The agent's configuration.
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
    /// The agent's own audit log: streams opened and refused, diagnostics
    /// run, and the relay's signed audit checkpoints (check the relay's
    /// log against them: `dwa-relay audit verify --checkpoint audit.jsonl`).
    Audit {
        /// The agent's configuration, whose audit log is printed.
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// Items pending, and counts of items spooled, acknowledged and dropped.
    Status {
        /// The agent's configuration, whose spool is reported.
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
}

/// One SNMPv3 user for `scan`, tried before any community.
#[derive(clap::Args)]
struct V3Args {
    /// SNMPv3 user name.
    #[arg(long)]
    v3_user: Option<String>,
    /// noAuthNoPriv, authNoPriv or authPriv; default: from the keys given.
    #[arg(long, requires = "v3_user")]
    v3_level: Option<SecurityLevel>,
    /// Auth protocol: md5, sha, sha224, sha256, sha384, sha512.
    #[arg(long, value_name = "PROTOCOL", requires = "v3_user")]
    v3_auth: Option<AuthProtocol>,
    /// Environment variable holding the auth pass phrase.
    #[arg(long, value_name = "VAR", requires = "v3_user")]
    v3_auth_password_env: Option<String>,
    /// File holding the auth pass phrase (one trailing newline is ignored).
    #[arg(
        long,
        value_name = "FILE",
        requires = "v3_user",
        conflicts_with = "v3_auth_password_env"
    )]
    v3_auth_password_file: Option<PathBuf>,
    /// Privacy protocol: des, aes (AES-128), aes192, aes256, aes192c, aes256c.
    #[arg(long, value_name = "PROTOCOL", requires = "v3_user")]
    v3_priv: Option<PrivProtocol>,
    /// Environment variable holding the privacy pass phrase.
    #[arg(long, value_name = "VAR", requires = "v3_user")]
    v3_priv_password_env: Option<String>,
    /// File holding the privacy pass phrase.
    #[arg(
        long,
        value_name = "FILE",
        requires = "v3_user",
        conflicts_with = "v3_priv_password_env"
    )]
    v3_priv_password_file: Option<PathBuf>,
}

/// A secret file's text; `-` is standard input.
fn read_secret_file(path: &std::path::Path, flag: &str) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .with_context(|| format!("--{flag}-file -: cannot read standard input"))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("--{flag}-file: cannot read {}", path.display()))
}

/// Communities for `scan`: the file's, then the variable's, then argv's.
fn given_communities(
    file: Option<&std::path::Path>,
    env: Option<&str>,
    argv: Vec<String>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(path) = file {
        let text = read_secret_file(path, "community")?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
        if out.is_empty() {
            bail!("--community-file: {} holds no community", path.display());
        }
    }
    if let Some(Secret(c)) = read_secret(env, None, "community")? {
        if c.is_empty() {
            bail!("--community-env: the variable is empty");
        }
        out.push(c);
    }
    out.extend(argv);
    Ok(out)
}

/// A secret from an environment variable or a file (`-`: standard input),
/// never argv.
fn read_secret(
    env: Option<&str>,
    file: Option<&std::path::Path>,
    flag: &str,
) -> Result<Option<Secret>> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) => Ok(Some(Secret(v))),
            Err(std::env::VarError::NotPresent) => {
                bail!("--{flag}-env: environment variable {var} is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("--{flag}-env: environment variable {var} is not UTF-8")
            }
        };
    }
    if let Some(path) = file {
        let text = read_secret_file(path, flag)?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        return Ok(Some(Secret(text.to_string())));
    }
    Ok(None)
}

impl V3Args {
    /// The user given on the command line, checked; errors name the flag.
    fn security(&self) -> Result<Option<V3Security>> {
        let Some(user) = &self.v3_user else {
            return Ok(None);
        };
        let input = V3Input {
            user: user.clone(),
            level: self.v3_level,
            auth_protocol: self.v3_auth,
            auth_password: read_secret(
                self.v3_auth_password_env.as_deref(),
                self.v3_auth_password_file.as_deref(),
                "v3-auth-password",
            )?,
            priv_protocol: self.v3_priv,
            priv_password: read_secret(
                self.v3_priv_password_env.as_deref(),
                self.v3_priv_password_file.as_deref(),
                "v3-priv-password",
            )?,
        };
        let sec = input.build().map_err(|e| {
            let flag = match e.field {
                V3Field::User => "--v3-user",
                V3Field::AuthProtocol => "--v3-auth",
                V3Field::AuthPassword => "--v3-auth-password-env/-file",
                V3Field::PrivProtocol => "--v3-priv",
                V3Field::PrivPassword => "--v3-priv-password-env/-file",
            };
            anyhow::anyhow!("{flag}: {}", e.message)
        })?;
        Ok(Some(sec))
    }
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Would the agent connect to ADDRESS:PORT? Prints allow/deny and the deciding rule.
    Check {
        /// ADDRESS:PORT (or HOST:PORT) the agent would be asked to reach.
        target: String,
        /// The agent's configuration, whose policy decides.
        #[arg(long, env = "DWA_AGENT_CONFIG", default_value = "agent.toml")]
        config: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.parse().unwrap_or_default();
    dwa_link::cli::run_main_with(format, run(cli))
}

fn split_target(s: &str) -> Result<(String, u16)> {
    dwa_link::cli::split_host_port(s).map_err(anyhow::Error::msg)
}

/// SIGHUP reloads agent.toml (see `dwa_agent::reload`); the outcome is
/// logged, a file that does not load keeps the running configuration.
fn spawn_reload_on_sighup(
    reloader: dwa_agent::reload::Reloader,
    shutdown: CancellationToken,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {}
                    _ = shutdown.cancelled() => return,
                }
                match reloader.reload() {
                    Ok(r) => {
                        tracing::info!(applied = ?r.applied, restart_needed = ?r.restart_needed,
                            "agent.toml reloaded");
                        if !r.restart_needed.is_empty() {
                            tracing::warn!(settings = ?r.restart_needed,
                                "changed in agent.toml, in force at the next start only");
                        }
                    }
                    Err(e) => tracing::error!(error = %e,
                        "agent.toml not reloaded; the running configuration stays"),
                }
            }
        }
        .instrument(tracing::info_span!("reload")),
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Enroll {
            relay,
            token,
            token_file,
            token_env,
            config,
            allow,
            ports,
            transport,
            force,
        } => {
            let transport = match transport.as_str() {
                "ssh" => TransportMode::Ssh,
                "websocket" => TransportMode::Websocket,
                _ => TransportMode::Auto,
            };
            let token = match read_secret(token_env.as_deref(), token_file.as_deref(), "token")? {
                Some(t) => t.0.trim().to_string(),
                None => token.unwrap_or_default(),
            };
            let e = enroll(EnrollOptions {
                relay,
                token,
                config_path: config.clone(),
                allow,
                ports,
                transport,
                force,
            })
            .await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"agent_id": e.response.agent_id, "agent_name": e.response.agent_name,
                    "customer": e.response.customer, "config": config.display().to_string(),
                    "ssh_host_key": dwa_link::ssh::parse_public(&e.response.ssh_host_key).map(|k| dwa_link::ssh::fingerprint(&k)).unwrap_or_default()})
                );
            } else {
                println!(
                    "enrolled as {} ({}) for customer {}\nconfiguration written to {}",
                    e.response.agent_name,
                    e.response.agent_id,
                    e.response.customer,
                    config.display()
                );
            }
        }
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let mut agent = Agent::load(cfg, &config)?.with_telemetry(&config).await?;
            let shutdown = CancellationToken::new();
            spawn_reload_on_sighup(agent.reloader(&config), shutdown.clone())?;
            let s = shutdown.clone();
            tokio::spawn(async move {
                let term = async {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut t) => {
                            t.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                };
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
                s.cancel();
            });
            agent.run(shutdown).await;
        }
        Cmd::Scan {
            ranges,
            dns_servers,
            no_dns_names,
            no_netbios,
            netbios_port,
            community_file,
            community_env,
            communities,
            port,
            config,
            v3,
            timeout,
            retries,
            concurrency,
            format,
        } => {
            use dwa_agent::telemetry::{names, netbios, scan};
            let cfg = config.as_deref().map(AgentConfig::load).transpose()?;
            let dns_servers = match (&cfg, dns_servers.is_empty()) {
                (Some(c), true) => c.scan.dns_servers()?,
                _ => dns_servers,
            };
            let resolver = std::sync::Arc::new(names::Names::new(&dns_servers)?);
            let policy = cfg
                .as_ref()
                .map(|c| c.policy(dwa_agent::config::own_addresses()))
                .transpose()?;
            let resolved = names::resolve_targets(&resolver, policy.as_ref(), &ranges).await;
            if resolved.ranges.is_empty() {
                if let Some((target, why)) = resolved.refused.first() {
                    bail!("nothing to scan: {target}: {why}");
                }
            }
            for (target, why) in &resolved.refused {
                eprintln!("warning: {target}: {why}");
            }
            let addrs = scan::expand_ranges(&resolved.ranges)?;
            let format = match format.as_str() {
                _ if cli.json => scan::Format::Json,
                "json" => scan::Format::Json,
                "csv" => scan::Format::Csv,
                _ => scan::Format::Table,
            };
            let communities = given_communities(
                community_file.as_deref(),
                community_env.as_deref(),
                communities,
            )?;
            let cli_v3 = v3.security()?;
            // Credentials given here replace the config's; a v3 user alone
            // means v3 only.
            let (v3, communities) = if cli_v3.is_some() || !communities.is_empty() {
                (cli_v3.into_iter().collect(), communities)
            } else if let Some(cfg) = &cfg {
                (cfg.scan.v3_security()?, cfg.scan.effective_communities())
            } else {
                (vec![], vec!["public".to_string()])
            };
            let port = port
                .or(cfg.as_ref().map(|c| c.scan.snmp_port))
                .unwrap_or(161);
            let netbios_port = netbios_port
                .or(cfg.as_ref().map(|c| c.scan.netbios_port))
                .unwrap_or(netbios::PORT);
            let opts = scan::ScanOptions {
                dns: (!no_dns_names).then(|| resolver.clone()),
                netbios: (!no_netbios).then_some(netbios::NetbiosOptions {
                    port: netbios_port,
                    timeout,
                    retries,
                }),
                target_names: resolved.names,
                policy: policy.map(|p| std::sync::Arc::new(LivePolicy::new(p))),
                v3,
                communities,
                port,
                timeout,
                retries,
                concurrency: concurrency as usize,
                progress: true,
            };
            let report = scan::scan(addrs, opts).await;
            for (ip, why) in &report.refused {
                eprintln!("warning: {ip}: {why}");
            }
            print!("{}", scan::render(&report.devices, format)?);
        }
        Cmd::Status { config } => {
            let cfg = AgentConfig::load(&config)?;
            let policy = cfg.policy(dwa_agent::config::own_addresses())?;
            let st = dwa_agent::status::read(&config).ok();
            let running = st
                .as_ref()
                .is_some_and(|s| s.link.state != "stopped" && dwa_agent::status::alive(s.pid));
            // The spool is read-only here, as in `spool status`.
            let spool_path = cfg.spool_path(&config);
            let spool = if spool_path.exists() {
                Spool::open(
                    &spool_path,
                    &cfg.spool_key_path(&config),
                    Limits {
                        max_items: cfg.spool.max_items,
                        max_bytes: cfg.spool.max_bytes,
                    },
                    OnBadKey::Fail,
                )
                .await
                .ok()
            } else {
                None
            };
            let spool_stats = match &spool {
                Some(s) => s.stats().await.ok(),
                None => None,
            };
            let v = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "agent_id": cfg.agent_id,
                "relay": cfg.relay,
                "transport_setting": format!("{:?}", cfg.transport).to_lowercase(),
                "running": running,
                "status": st,
                "spool": spool_stats,
                "policy": {
                    "allow": policy.allow().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "deny": policy.deny().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "ports": policy.ports(),
                },
                "scan_ranges": cfg.scan.ranges,
            });
            if cli.json {
                println!("{v}");
            } else {
                println!("{}", dwa_agent::status::describe(&v));
            }
        }
        Cmd::Audit { config } => {
            let cfg = AgentConfig::load(&config)?;
            let path = cfg.audit_log_path(&config);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "{}: no audit log yet (it is written by `dwa-agent run`)",
                    path.display()
                ),
                Err(e) => bail!("{}: {e}", path.display()),
            };
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if cli.json {
                    println!("{v}");
                } else {
                    println!("{}", dwa_agent::local_audit::describe(&v));
                }
            }
        }
        Cmd::Spool {
            cmd: SpoolCmd::Status { config },
        } => {
            let cfg = AgentConfig::load(&config)?;
            let path = cfg.spool_path(&config);
            if !path.exists() {
                bail!(
                    "{}: no spool yet (it is created by `dwa-agent run`)",
                    path.display()
                );
            }
            // Read-only: a spool the key does not open is reported, never
            // moved aside from under a running agent.
            let spool = Spool::open(
                &path,
                &cfg.spool_key_path(&config),
                Limits {
                    max_items: cfg.spool.max_items,
                    max_bytes: cfg.spool.max_bytes,
                },
                OnBadKey::Fail,
            )
            .await?;
            let st = spool.stats().await?;
            if cli.json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!(
                    "pending {} items ({} bytes); spooled {}, acknowledged {}, dropped when full {}",
                    st.pending, st.pending_bytes, st.spooled, st.acknowledged, st.dropped
                );
            }
        }
        Cmd::Policy {
            cmd: PolicyCmd::Check { target, config },
        } => {
            let cfg = AgentConfig::load(&config)?;
            let policy = cfg.policy(dwa_agent::config::own_addresses())?;
            let (host, port) = split_target(&target)?;
            let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .with_context(|| format!("cannot resolve {host:?}"))?
                    .map(|a| a.ip())
                    .collect(),
            };
            let decisions: Vec<_> = addrs.iter().map(|a| policy.decide(*a, port)).collect();
            let allowed = decisions.iter().any(|d| d.allowed);
            if cli.json {
                println!(
                    "{}",
                    json!({"target": target, "allowed": allowed, "decisions": decisions})
                );
            } else {
                for d in &decisions {
                    println!("{d}");
                }
            }
            return Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            });
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
