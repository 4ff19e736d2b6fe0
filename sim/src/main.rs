//! `dwa-sim`: runs a printer fleet until Ctrl-C or SIGTERM. Prints one JSON
//! line per printer on stdout (so scripts can read where each one listens);
//! logs go to stderr.

use anyhow::Context;
use clap::Parser;
use dwa_sim::{parse_addresses, BlackHole, Fault, Fleet, FleetConfig, SnmpOptions};

#[derive(Parser, Debug)]
#[command(name = "dwa-sim", version, about = "Printer fleet simulator")]
struct Args {
    /// Addresses to run printers on: `127.30.0.1`, `127.30.0.1-127.30.0.10`
    /// (or `-10`), `127.30.0.0/28`, comma-separated or repeated; at most 4096.
    #[arg(long = "addresses", required = true)]
    addresses: Vec<String>,
    /// HTTP port on every address; 0 picks a free one per printer.
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// HTTPS port on every address; 0 picks a free one per printer.
    #[arg(long, default_value_t = 443, conflicts_with = "no_https")]
    https_port: u16,
    /// Serve HTTP only.
    #[arg(long)]
    no_https: bool,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, default_value = "admin")]
    password: String,
    /// Run an SNMP v1/v2c agent on this UDP port of every address (0: one
    /// free port for all). Without it, no SNMP.
    #[arg(long)]
    snmp_port: Option<u16>,
    /// Answer IPP Get-Printer-Attributes on this TCP port (631 on a real
    /// printer; 0: a free port per printer). Without it, no IPP.
    #[arg(long)]
    ipp_port: Option<u16>,
    /// Answer PJL INFO ID / INFO STATUS on this TCP port (9100 on a real
    /// printer; 0: a free port per printer). Without it, no raw port.
    #[arg(long)]
    pjl_port: Option<u16>,
    /// Answer NetBIOS node status requests on this UDP port (137 on a real
    /// printer; 0: one free port for all). Without it, no NetBIOS.
    #[arg(long)]
    netbios_port: Option<u16>,
    /// SNMP community the agents answer to.
    #[arg(long, default_value = "public")]
    community: String,
    /// Device profiles used in turn (repeatable; default: every printer
    /// profile): hp_color_mfp, kyocera_mono, ricoh_color_mfp,
    /// brother_inkjet, ricoh_no_hrtype, oem_sysdescr_only, switch.
    #[arg(long = "profile")]
    profiles: Vec<String>,
    /// Misbehave at one address: ADDR=FAULT, FAULT one of truncated-ber,
    /// wrong-request-id, huge-table, non-utf8-strings, wrong-types,
    /// counters-backwards (repeatable).
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<(std::net::IpAddr, Fault)>,
    /// Swallow SNMP sent to every other IPv4 address on the SNMP port, as
    /// a LAN does (instead of the ICMP port-unreachable of loopback).
    #[arg(long, requires = "snmp_port")]
    black_hole: bool,
    /// Largest SNMP answer in bytes (484..=65507).
    #[arg(long, default_value_t = 1472)]
    snmp_max_response: usize,
}

fn parse_fault(s: &str) -> Result<(std::net::IpAddr, Fault), String> {
    let (addr, fault) = s.split_once('=').ok_or("expected ADDR=FAULT")?;
    let addr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    Ok((addr, fault.parse()?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = FleetConfig {
        addresses: parse_addresses(&args.addresses)?,
        http_port: args.http_port,
        https_port: (!args.no_https).then_some(args.https_port),
        username: args.username,
        password: args.password,
        snmp_port: args.snmp_port,
        snmp: SnmpOptions {
            community: args.community,
            profiles: args.profiles,
            profile_of: Vec::new(),
            faults: args.faults,
            max_response: args.snmp_max_response,
            black_hole: args.black_hole.then_some(BlackHole::Wildcard),
        },
        ipp_port: args.ipp_port,
        pjl_port: args.pjl_port,
        netbios_port: args.netbios_port,
    };
    let fleet = Fleet::start(cfg).await.context("starting the fleet")?;
    if let Some(port) = fleet.snmp_port {
        tracing::info!(port, "SNMP agents listening");
    }
    for line in dwa_sim::fleet::describe(&fleet) {
        println!("{line}");
    }
    wait_for_signal().await?;
    fleet.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
