//! The relay's edges: each adapter parses what arrives, calls a service and
//! maps the service's typed error to its own kind of reply.
//!
//! - [`ssh`]: the russh server handler (agents, and plain `ssh -R` clients).
//! - [`state`]: what every adapter shares (`RelayState`: the services plus
//!   the listeners' configuration, slots and rates).
//! - [`http`]: the HTTPS listener and its host router: portal host, session
//!   hosts, agent endpoints; the API's replies and error mapping
//!   (`http::reply`), single sign-on's endpoints (`http::sso`), the one
//!   outbound HTTP client (`http::client`).
//! - [`api`]: the JSON API under `/api/v1`.
//! - [`portal`]: the server-rendered portal.
//! - [`openapi`]: the OpenAPI document of every route.
//! - [`web`]: the session-host proxy to printers' web pages.
//! - [`metrics`]: the Prometheus `/metrics` listener.
//! - [`admin_socket`]: the local socket the CLI uses to reach the server.
//! - [`webhook`]: posts alert events to the configured receiver.
//! - [`oidc_client`]: single sign-on's calls to the identity provider.

pub mod admin_socket;
pub mod api;
pub mod http;
pub mod metrics;
pub mod oidc_client;
pub mod openapi;
pub mod portal;
pub mod smtp;
pub mod ssh;
pub mod state;
pub mod web;
pub mod webhook;
