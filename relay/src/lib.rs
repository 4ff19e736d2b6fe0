//! `dwa-relay`, the cloud side of DWA.
//!
//! - [`config`]: relay.toml (unknown keys rejected, then validated) and the
//!   data directory's layout.
//! - [`init`]: `dwa-relay init` — host key, TLS certificate, database, admin.
//! - [`db`]: the SQLite store (sqlx, versioned migrations in `migrations/`).
//! - [`audit`]: the append-only, hash-chained audit log.
//! - [`enroll`]: redeeming enrollment tokens.
//! - [`state`]: shared state handed to every task (one shutdown signal, one
//!   task tracker).
//! - [`ssh`]: the russh server adapter and the per-connection lifecycle.
//! - [`agents`]: the registry of live agent sessions and relay-opened streams.
//! - [`https`]: rustls + hyper endpoint: enrollment, SSH over WebSocket.
//! - [`auth`]: log-in sessions, API tokens, the caller ([`auth::Principal`])
//!   and its permission checks.
//! - [`api`]: the dealer API under `/api/v1`.
//! - [`oidc`]: single sign-on for directory users (OpenID Connect).
//! - [`openapi`]: the OpenAPI document of every route, at
//!   `/api/v1/openapi.json`.
//! - [`audit_api`]: `GET /api/v1/audit`, scoped per caller.
//! - [`portal`]: the server-rendered portal (maud), on the relay's own host.
//! - [`web`]: Device Web Access sessions and the session-host proxy.
//! - [`telemetry`]: agents' uploads, the device inventory, alerts and their
//!   webhook, the CSV report.
//! - [`diag`]: diagnostics run by agents (`POST /api/v1/devices/{id}/diagnostics`).
//! - [`accounts`]: two-factor, lockout, inactivity, the admin user API,
//!   session timeouts, CSRF and security headers.
//! - [`tunnels`]: raw TCP tunnels to a device port, bound to the requester's
//!   address and a time limit.
//! - [`ipp_audit`]: IPP operations recognised in traffic to port 631.
//! - [`admin`]: the local admin socket the CLI uses to reach the server.
//! - [`serve`]: wiring, start and stop.
//! - [`demo`]: relay + agent + simulated fleet on loopback, in one command.

pub mod accounts;
pub mod admin;
pub mod agents;
pub mod api;
pub mod audit;
pub mod audit_api;
pub mod auth;
pub mod config;
pub mod db;
pub mod demo;
pub mod diag;
pub mod enroll;
pub mod error;
pub mod https;
pub mod init;
pub mod ipp_audit;
pub mod oidc;
pub mod openapi;
pub mod portal;
pub mod serve;
pub mod ssh;
pub mod state;
pub mod telemetry;
pub mod tunnels;
pub mod util;
pub mod web;

pub use error::{RelayError, Result};
