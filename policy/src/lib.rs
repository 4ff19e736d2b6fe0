//! # dwa-policy
//!
//! Pure policy decisions for DWA, each with a reason a human can read.
//! No I/O, no clocks, no DNS: callers pass in everything a decision needs
//! (resolved addresses, the agent host's own addresses, the relay's view of
//! the device) and get back a verdict plus the rule that produced it.
//!
//! Module map:
//!
//! - [`agent`] — the agent's local allowlist, the final authority on what the
//!   agent may connect to: [`PolicyConfig`] (the raw `[policy]` table of
//!   `agent.toml`), [`AgentPolicy`] (validated form), [`Decision`], [`Rule`]
//!   and [`SpecialKind`]. Decides TCP targets ([`AgentPolicy::decide`]), ICMP
//!   echo targets ([`AgentPolicy::decide_icmp`]) and resolved name lists
//!   ([`AgentPolicy::filter_resolved`]).
//! - [`relay`] — the relay's own, coarser check made before it asks an agent
//!   to open anything: [`RelayCheck`] → [`RelayDecision`].
//! - [`roles`] — who may do what for which customer: [`Role`], [`Action`],
//!   [`permit`] → [`Permission`].
//! - [`PolicyError`] — the crate's single error type; every configuration
//!   error names the offending key and index (e.g. `policy.allow[2]`).

#![forbid(unsafe_code)]

pub mod agent;
mod error;
pub mod relay;
pub mod roles;

pub use agent::{
    default_ports, normalize_addr, AgentPolicy, Decision, PolicyConfig, Rule, SpecialKind,
    DEFAULT_PORTS,
};
pub use error::PolicyError;
pub use relay::{relay_decide, RelayCheck, RelayDecision};
pub use roles::{permit, Action, Permission, Role, Scope};
