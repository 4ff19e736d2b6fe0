//! `dwa-relay`, the cloud side of DWA, in three layers (see
//! `docs/architecture.md` and `CONTRIBUTING.md` for the rules):
//!
//! - [`adapters`] speak the wire: the russh handler, the HTTPS listener and
//!   its host router, the JSON API, the portal, OpenAPI, the admin socket,
//!   the session-host proxy. They parse, call one service, and map the
//!   service's error to a reply in one place per adapter.
//! - [`services`] hold the rules: streams through agents, web sessions,
//!   tunnels, diagnostics, accounts, single sign-on, enrollment, telemetry,
//!   audit. Typed results and one error enum each; no HTTP or SSH framework,
//!   no SQL.
//! - the store (`dwa-store`) is the only code that speaks SQL.
//!
//! Around them: [`app`] builds everything from the data directory and is
//! the one place that starts and stops it; [`config`] is relay.toml;
//! [`init`] creates a data directory; `demo` (the `demo` feature, on by
//! default, off in production builds) runs relay, agent and a simulated
//! fleet in one command.

pub mod adapters;
pub mod app;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod init;
pub mod services;
#[cfg(test)]
pub(crate) mod testutil;
pub mod util;

pub use error::{RelayError, Result};
