//! `dwa-sim`: runs a printer fleet until Ctrl-C or SIGTERM. Prints one JSON
//! line per printer on stdout (so scripts can read where each one listens);
//! logs go to stderr.

use anyhow::Context;
use clap::Parser;
use dwa_sim::{parse_addresses, Fleet, FleetConfig};

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
    };
    let fleet = Fleet::start(cfg).await.context("starting the fleet")?;
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
