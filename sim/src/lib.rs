//! DWA printer fleet simulator: many printers' embedded web servers on
//! loopback addresses, behaving like real ones (absolute self-links,
//! Host/Referer/Origin checks on log-in, cookies scoped to the printer's
//! address, Basic auth, gzip, WebSocket status feed), plus bulk endpoints for
//! throughput and latency benchmarks. Used by end-to-end tests, the demo and
//! benchmarks.
//!
//! Modules:
//! - [`fleet`]: [`FleetConfig`], [`Fleet`] (start/shutdown), [`Printer`];
//!   binding, accepting, TLS, HTTP/1.1 serving; how ports are chosen.
//! - `app`: the embedded web server's routes and handlers.
//! - `pages`: the HTML, CSS and JavaScript it serves.
//! - `ws`: `GET /ws`, the live status feed and echo.
//! - [`download`]: deterministic streamed download content, [`download_sha256`].
//! - [`stats`]: [`Stats`], [`RequestLog`], and the byte-counting socket wrapper.
//! - [`ipp`]: IPP Get-Printer-Attributes and PJL `INFO` answers, for the
//!   agent's diagnostics.
//! - `tls`: each printer's fresh self-signed certificate.
//! - [`snmp`]: each printer's SNMP v1/v2c agent answering from a device
//!   profile (`sim/profiles/*.snmprec`, templated per address), faults for
//!   robustness tests, and the black hole that keeps empty addresses silent.
//! - [`netbios`]: each printer's answer to NetBIOS node status requests
//!   (its name, as `nmblookup -A` shows it).
//! - [`addrs`]: address specs (`A`, `A-B`, CIDR) for the `dwa-sim` binary.

pub mod addrs;
mod app;
pub mod download;
pub mod fleet;
pub mod ipp;
pub mod netbios;
mod pages;
pub mod snmp;
pub mod stats;
mod tls;
mod ws;

pub use addrs::parse_addresses;
pub use download::download_sha256;
pub use fleet::{Fleet, FleetConfig, Printer};
pub use snmp::{BlackHole, Fault, SnmpOptions};
pub use stats::{RequestLog, Stats};

/// Everything the simulator library can fail at.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no addresses to run printers on")]
    NoAddresses,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("bad address spec {spec:?}: {reason}")]
    Address { spec: String, reason: String },
    #[error("more than {0} addresses")]
    TooManyAddresses(usize),
    #[error("no SNMP profile called {0:?}")]
    UnknownProfile(String),
    #[error("SNMP profile {profile}, line {line}: {reason}")]
    Profile {
        profile: &'static str,
        line: usize,
        reason: String,
    },
}
