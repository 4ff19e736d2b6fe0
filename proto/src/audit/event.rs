//! What the relay audits: one [`Event`] variant per record kind, with its
//! detail fields typed.
//!
//! Each variant is declared once, in [`events!`] below, with its kind
//! string and version; the serde names, [`Event::kind`], [`Kind`] and the
//! [`CATALOG`] that `docs/audit.md` is checked against are all generated
//! from that one declaration.
//!
//! A record's detail is the variant's fields as a JSON object plus `"v"`,
//! the event's version. Changing an event: a new optional field (`Option`,
//! absent or null in older records) keeps the version; renaming or
//! removing a field, or changing its type, is a new version of that event,
//! and [`Event::parse`] must then learn to read the old one. Records
//! written before details carried `"v"` have the shape of version 1.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diag::DiagRequest;
use crate::ProtoError;

/// Version of records whose detail has no `"v"` (written before details
/// were versioned; their fields are those of version 1).
pub const UNVERSIONED: u32 = 1;

/// One event kind as documented: its detail's field names, and for events
/// whose fields depend on a tag (`admin.command`'s `command`) each case's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInfo {
    pub kind: &'static str,
    pub version: u32,
    /// Top-level fields (for a tagged event: the tag alone).
    pub fields: &'static [&'static str],
    pub cases: Option<Cases>,
}

/// The cases of a tagged event, told apart by the value of `tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cases {
    pub tag: &'static str,
    pub cases: &'static [CaseInfo],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseInfo {
    /// The tag's value, e.g. `device add`.
    pub name: &'static str,
    /// Fields besides the tag.
    pub fields: &'static [&'static str],
}

/// A detail whose fields depend on a tag field: an internally tagged enum,
/// each case `Variant("tag value") { fields }`.
macro_rules! cases {
    (
        $(#[$meta:meta])*
        pub enum $Name:ident by $tag:literal {
            $(
                $(#[$vmeta:meta])*
                $V:ident($case:literal) {
                    $( $(#[$fmeta:meta])* $f:ident : $t:ty ),* $(,)?
                }
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = $tag)]
        pub enum $Name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $case)]
                $V { $( $(#[$fmeta])* $f: $t ),* },
            )*
        }

        impl $Name {
            pub const CASES: Cases = Cases {
                tag: $tag,
                cases: &[ $( CaseInfo { name: $case, fields: &[ $( stringify!($f) ),* ] } ),* ],
            };

            /// The tag's value.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $Name::$V { .. } => $case, )*
                }
            }

            /// One value of each case, every field at its default.
            #[cfg(test)]
            pub(crate) fn samples() -> Vec<Self> {
                vec![ $( $Name::$V { $( $f: Default::default() ),* } ),* ]
            }
        }
    };
}

macro_rules! event_fields {
    ({ $( $(#[$m:meta])* $f:ident : $t:ty ),* $(,)? }) => { &[ $( stringify!($f) ),* ] };
    (( $T:ident )) => { &[ $T::CASES.tag ] };
}

macro_rules! event_cases {
    ({ $($body:tt)* }) => {
        None
    };
    (( $T:ident )) => {
        Some($T::CASES)
    };
}

#[cfg(test)]
macro_rules! event_samples {
    ($V:ident { $( $(#[$m:meta])* $f:ident : $t:ty ),* $(,)? }) => {
        vec![Event::$V { $( $f: Default::default() ),* }]
    };
    ($V:ident ( $T:ident )) => {
        $T::samples().into_iter().map(Event::$V).collect::<Vec<_>>()
    };
}

/// Every event: `Variant("kind", version) { fields }`, or
/// `Variant("kind", version)(Cases)` for a detail told apart by a tag.
macro_rules! events {
    (
        $(
            $(#[$vmeta:meta])*
            $V:ident($kind:literal, $ver:literal) $body:tt
        )*
    ) => {
        /// An audit event: its kind is the variant, its detail the fields.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "detail")]
        pub enum Event {
            $(
                $(#[$vmeta])*
                #[serde(rename = $kind)]
                $V $body,
            )*
        }

        /// The kinds of [`Event`], without their details.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $( $V, )*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[ $( Kind::$V ),* ];

            /// The kind as stored, e.g. `stream.open`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Kind::$V => $kind, )*
                }
            }

            /// The version its details are written with now.
            pub const fn version(self) -> u32 {
                match self {
                    $( Kind::$V => $ver, )*
                }
            }

            pub fn parse(s: &str) -> Option<Kind> {
                match s {
                    $( $kind => Some(Kind::$V), )*
                    _ => None,
                }
            }
        }

        impl Event {
            pub fn kind_id(&self) -> Kind {
                match self {
                    $( Event::$V { .. } => Kind::$V, )*
                }
            }

            #[cfg(test)]
            pub(crate) fn samples() -> Vec<Event> {
                let mut all = Vec::new();
                $( all.extend(event_samples!($V $body)); )*
                all
            }
        }

        /// Every event with its fields, in declaration order.
        pub const CATALOG: &[EventInfo] = &[
            $(
                EventInfo {
                    kind: $kind,
                    version: $ver,
                    fields: event_fields!($body),
                    cases: event_cases!($body),
                },
            )*
        ];
    };
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// The kind as stored, e.g. `stream.open`.
    pub fn kind(&self) -> &'static str {
        self.kind_id().as_str()
    }

    pub fn version(&self) -> u32 {
        self.kind_id().version()
    }

    /// The detail as stored: the fields and `"v"`.
    pub fn detail(&self) -> Result<Map<String, Value>, ProtoError> {
        let bad = |reason: String| ProtoError::BadDetail {
            kind: self.kind().to_string(),
            reason,
        };
        let mut tagged = serde_json::to_value(self).map_err(|e| bad(e.to_string()))?;
        let Some(Value::Object(mut d)) = tagged.get_mut("detail").map(Value::take) else {
            return Err(bad("its fields are not a JSON object".into()));
        };
        d.insert("v".into(), self.version().into());
        Ok(d)
    }

    /// Reads a stored record's detail back (with or without `"v"`).
    pub fn parse(kind: &str, detail: &str) -> Result<Event, ProtoError> {
        let bad = |reason: String| ProtoError::BadDetail {
            kind: kind.to_string(),
            reason,
        };
        let k = Kind::parse(kind).ok_or_else(|| bad("unknown kind".into()))?;
        let d: Value = serde_json::from_str(detail).map_err(|e| bad(e.to_string()))?;
        let v = match d.get("v") {
            None => UNVERSIONED,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(format!("version {v} is not a number")))?,
        };
        if v != k.version() {
            return Err(bad(format!(
                "version {v} (this build reads version {})",
                k.version()
            )));
        }
        serde_json::from_value(serde_json::json!({"kind": kind, "detail": d}))
            .map_err(|e| bad(e.to_string()))
    }
}

/// A printer's TLS certificate as a web session saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrinterCertificate {
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub sha256: String,
    /// Negotiated TLS version, e.g. `TLSv1_3`.
    pub version: String,
    /// Reached through the agent's legacy (OpenSSL, TLS 1.0+) connector.
    pub legacy: bool,
    pub first_seen: String,
    /// The certificate seen before, when it changed.
    pub changed_from: Option<String>,
}

/// One alert rule as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub kind: String,
    pub enabled: bool,
    pub threshold: Option<f64>,
    /// E-mail recipients (absent in records before e-mail alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_to: Option<Vec<String>>,
    /// `immediate` or `digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_mode: Option<String>,
}

cases! {
    /// A command run on the relay host (CLI, admin socket) or an
    /// administrator's change made in the portal.
    pub enum AdminCommand by "command" {
        /// `dwa-relay init` created the relay's directory.
        Init("init") {
            domain: String,
        }
        CustomerAdd("customer add") {
            customer: String,
            /// `portal` when made in the portal.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            via: Option<String>,
        }
        UserAdd("user add") {
            user: String,
            role: String,
            /// Customer names.
            customers: Vec<String>,
            /// Two-factor was provisioned (the role requires it).
            totp: bool,
        }
        TokenCreate("token create") {
            /// Customer name.
            customer: String,
            uses: u8,
            /// RFC 3339.
            expires_at: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            via: Option<String>,
        }
        DeviceAdd("device add") {
            device: i64,
            address: String,
            name: Option<String>,
        }
        DeviceRemove("device remove") {
            device: i64,
            address: String,
        }
        AgentRevoke("agent revoke") {
            /// false: it was revoked already.
            changed: bool,
        }
        /// `dwa-relay forward`: a local port carried to an agent's target.
        Forward("forward") {
            listen: String,
            agent: String,
            /// `host:port`.
            target: String,
        }
    }
}

cases! {
    /// Two-factor set-up and recovery-code use.
    pub enum TotpEvent by "event" {
        EnrollmentStarted("enrollment started") {}
        Enrolled("enrolled") {}
        RecoveryCodeUsed("recovery code used") {
            /// Recovery codes left.
            left: i64,
            peer: String,
        }
    }
}

cases! {
    /// An administrator's change through the API (or `dwa-relay user
    /// unlock`).
    pub enum UserAdmin by "action" {
        UserCreate("user create") {
            user: String,
            id: i64,
            role: String,
            /// Customer ids.
            customers: Vec<i64>,
            totp: bool,
        }
        /// Only what the request changed is set; the rest is null.
        UserUpdate("user update") {
            id: i64,
            user: String,
            role: Option<String>,
            customers: Option<Vec<i64>>,
            active: Option<bool>,
        }
        UserUnlock("user unlock") {
            user: String,
            /// Absent when unlocked with the CLI (by name).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            id: Option<i64>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            was_locked: Option<bool>,
        }
        UserResetTotp("user reset-totp") {
            id: i64,
            user: String,
        }
        /// A new one-time password issued; the user's sessions ended.
        UserResetPassword("user reset-password") {
            id: i64,
            user: String,
        }
        CustomerCreate("customer create") {
            id: i64,
            customer: String,
        }
        EnrollmentTokenCreate("enrollment token create") {
            customer_id: i64,
            uses: u8,
            /// Unix seconds.
            expires_at: i64,
        }
    }
}

events! {
    /// An agent enrolled with a token.
    EnrollOk("enroll.ok", 1) {
        agent_name: String,
        customer: String,
        key_fingerprint: String,
        agent_version: String,
    }
    /// An enrollment refused (token, key or host name).
    EnrollRefused("enroll.refused", 1) {
        reason: String,
        hostname: String,
    }
    /// An agent's SSH session authenticated.
    AgentConnect("agent.connect", 1) {
        peer: String,
        /// `ssh` (SSH over TCP) or `websocket`.
        transport: String,
        /// The agent's name.
        name: String,
    }
    /// An agent's SSH session ended.
    AgentDisconnect("agent.disconnect", 1) {
        peer: String,
        transport: String,
        duration_ms: u64,
        /// Why it ended; null when the agent closed it.
        reason: Option<String>,
        /// A newer session of the same agent took over.
        replaced: bool,
        /// Control messages the agent sent unasked, dropped (absent in
        /// older records and when there were none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unsolicited: Option<u64>,
    }
    /// An SSH key refused (unknown, revoked).
    AgentAuthRefused("agent.auth_refused", 1) {
        key_fingerprint: String,
        reason: String,
        transport: String,
    }
    /// A second session of an agent replaced its first.
    AgentReplaced("agent.replaced", 1) {
        old_peer: String,
        new_peer: String,
    }
    /// A stream to a device opened through an agent.
    StreamOpen("stream.open", 1) {
        stream: u32,
        /// `host:port`.
        target: String,
        transport: String,
        /// The target's certificate, when the agent spoke TLS to it.
        tls_sha256: Option<String>,
        tls_version: Option<String>,
        tls_legacy: Option<bool>,
    }
    /// A stream closed.
    StreamClose("stream.close", 1) {
        stream: u32,
        target: String,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        error: Option<String>,
    }
    /// A stream refused by the relay's or the agent's policy.
    StreamDenied("stream.denied", 1) {
        target: String,
        /// `relay` or `agent`.
        decided_by: String,
        reason: String,
        /// The agent's stream id and rule code (agent denials only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    }
    /// A stream that was allowed but could not be opened (agent offline,
    /// timeout, connection failure).
    StreamFailed("stream.failed", 1) {
        target: String,
        reason: String,
    }
    /// An agent bound a (virtual) remote forward.
    ForwardBind("forward.bind", 1) {
        address: String,
        port: u32,
    }
    /// A TLS client refused the relay's certificate (a stale or wrong pin).
    TlsCertRejected("tls.cert_rejected", 1) {
        error: String,
    }
    /// A command on the relay host or an administrator's change in the
    /// portal.
    AdminCommand("admin.command", 1)(AdminCommand)
    /// A log-in that succeeded.
    UserLogin("user.login", 1) {
        peer: String,
        role: String,
        two_factor: bool,
        /// The log-in may only enroll two-factor.
        restricted: bool,
        /// The password was an administrator's one-time password: the
        /// log-in may only replace it (absent from older records).
        #[serde(default)]
        password_change: bool,
    }
    UserLoginFailed("user.login_failed", 1) {
        peer: String,
        reason: String,
    }
    UserLogout("user.logout", 1) {}
    /// A user chose a new password (the current one given); the user's
    /// other sessions and API tokens ended.
    UserPasswordChanged("user.password_changed", 1) {
        /// The password was an administrator's one-time password.
        was_one_time: bool,
        /// Grants ended: other log-ins, API tokens, what they opened.
        grants_ended: u64,
    }
    /// A password change refused (wrong current password, weak new one).
    UserPasswordChangeFailed("user.password_change_failed", 1) {
        reason: String,
    }
    /// Too many failed log-ins for an account or a source address (429).
    UserLoginRateLimited("user.login_rate_limited", 1) {
        peer: String,
        /// `account` or `address`.
        limit: String,
    }
    /// An account locked after consecutive failed log-ins.
    UserLocked("user.locked", 1) {
        failed_logins: i64,
        peer: String,
    }
    /// An account deactivated (unused too long).
    UserDeactivated("user.deactivated", 1) {
        user: String,
        id: i64,
        reason: String,
        /// Unix seconds.
        last_active: i64,
        inactive_after_days: u64,
    }
    /// Two-factor enrolled, confirmed or a recovery code used.
    UserTotp("user.totp", 1)(TotpEvent)
    /// An administrator's change to a user, customer or enrollment token.
    UserAdmin("user.admin", 1)(UserAdmin)
    TokenCreate("token.create", 1) {
        id: i64,
        name: String,
    }
    TokenRevoke("token.revoke", 1) {
        id: i64,
    }
    WebSessionCreate("web.session_create", 1) {
        session: String,
        device: i64,
        address: String,
        port: u16,
        tls: bool,
        /// The printer's certificate (TLS sessions).
        certificate: Option<PrinterCertificate>,
        expires_at: String,
    }
    WebSessionEnd("web.session_end", 1) {
        session: String,
        device: i64,
        address: String,
        port: u16,
        user: String,
        reason: String,
        duration_ms: u64,
        bytes_up: u64,
        bytes_down: u64,
        requests: u64,
    }
    WebSessionRefused("web.session_refused", 1) {
        device: i64,
        port: u16,
        reason: String,
    }
    /// One request through a web session (or one WebSocket).
    WebRequest("web.request", 1) {
        session: String,
        device: i64,
        method: String,
        path: String,
        status: u16,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        /// The response body was read to its end (HTTP requests).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        complete: Option<bool>,
        /// WebSocket records only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        websocket: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    WebTicketRefused("web.ticket_refused", 1) {
        session: String,
        why: String,
    }
    /// A device's HTTPS certificate differs from the one seen before.
    TlsCertChanged("tls.cert_changed", 1) {
        session: String,
        device: i64,
        address: String,
        port: u16,
        previous_sha256: String,
        sha256: String,
    }
    ProtocolError("protocol.error", 1) {
        error: String,
    }
    /// Refusals before authentication that were counted, not written one
    /// by one (the first of each source and interval is).
    /// The relay started serving. Streams the previous run left without a
    /// close record (it was killed) got theirs just before this record.
    RelayStarted("relay.started", 1) {
        version: String,
        /// Close records written for streams the previous run left open.
        unclosed_streams: u64,
    }
    /// relay.toml was read again (SIGHUP) and put in force.
    RelayConfigReloaded("relay.config_reloaded", 1) {
        /// Sections with a setting that changed and is in force now.
        applied: Vec<String>,
        /// Settings that changed in the file but are read once at start:
        /// kept as they run until the next start.
        restart_needed: Vec<String>,
    }
    /// relay.toml did not load on SIGHUP; the running configuration stays.
    RelayConfigReloadRefused("relay.config_reload_refused", 1) {
        error: String,
    }
    AuditRefusalsCounted("audit.refusals_counted", 1) {
        /// The kind of the refusals counted.
        refused: String,
        /// Their source address; absent: many sources.
        source: Option<String>,
        count: u64,
        since: String,
        until: String,
    }
    /// A telemetry upload whose signature or agent was refused.
    TelemetryAuthRefused("telemetry.auth_refused", 1) {
        reason: String,
    }
    /// Scan settings of an agent changed on the relay.
    TelemetryScanConfig("telemetry.scan_config", 1) {
        ranges: Option<Vec<String>>,
        interval_secs: Option<u64>,
        /// Sent to the agent at once (it was connected).
        pushed: bool,
    }
    /// What the agent made of the scan settings it was sent.
    TelemetryScanConfigApplied("telemetry.scan_config_applied", 1) {
        ranges: Vec<String>,
        interval_secs: u64,
        /// `[range, reason]` pairs.
        refused: Vec<(String, String)>,
    }
    TelemetryScanNow("telemetry.scan_now", 1) {
        request: String,
    }
    /// A customer's alert rules changed.
    TelemetryAlertRules("telemetry.alert_rules", 1) {
        customer: i64,
        rules: Vec<AlertRule>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    }
    /// One alert e-mail delivered, or given up after its last attempt:
    /// a summary, never the message.
    TelemetryAlertEmail("telemetry.alert_email", 1) {
        customer: i64,
        /// `immediate` or `digest`.
        mode: String,
        recipients: u64,
        /// Alert changes in the message.
        alerts: u64,
        /// `delivered` or `failed`.
        outcome: String,
        attempts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    /// A diagnostic run by an agent: who, device, kind, parameters and the
    /// result (or the agent's refusal, or no answer in time).
    DiagRun("diag.run", 1) {
        device: i64,
        address: String,
        kind: String,
        request: String,
        params: DiagRequest,
        /// The agent's answer, trimmed (RTT lists and raw PJL left out),
        /// or `{"outcome": "timeout", "reason"}`. Open JSON: its shape is
        /// each diagnostic's result, which grows with the agents.
        outcome: Value,
    }
    /// A diagnostic refused before reaching the agent (permission, rate,
    /// agent offline, the relay's port check).
    DiagRefused("diag.refused", 1) {
        device: i64,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// `user` or `device` (rate limits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    }
    /// A directory user logged in through single sign-on (OpenID Connect).
    SsoLogin("sso.login", 1) {
        peer: String,
        issuer: String,
        subject: String,
        groups: Vec<String>,
        /// `id_token` or `userinfo`.
        groups_from: String,
        matched: Vec<String>,
        role: String,
        customers: Vec<String>,
        unknown_customers: Vec<String>,
    }
    /// A single-sign-on log-in that was refused (state, provider, token or
    /// group mapping).
    SsoRefused("sso.refused", 1) {
        peer: String,
        reason: String,
        issuer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_error: Option<String>,
    }
    /// A raw TCP tunnel opened.
    TunnelOpen("tunnel.open", 1) {
        tunnel: String,
        device: i64,
        address: String,
        port: u16,
        listen: String,
        client: String,
        expires_at: String,
    }
    /// A tunnel request refused (permission, limits, relay-side policy).
    TunnelRefused("tunnel.refused", 1) {
        device: i64,
        port: u16,
        client: String,
        reason: String,
    }
    /// A connection to a tunnel's listener refused (another source
    /// address, too many connections).
    TunnelSourceRefused("tunnel.source_refused", 1) {
        tunnel: String,
        source: String,
        reason: String,
        port: u16,
        device: i64,
    }
    /// One connection carried by a tunnel: bytes each way, duration.
    TunnelConnection("tunnel.connection", 1) {
        tunnel: String,
        source: String,
        /// Absent in records written before it was added.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        bytes_up: u64,
        bytes_down: u64,
        duration_ms: u64,
        error: Option<String>,
        /// IPP operations beyond the per-connection limit (port 631).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ipp_operations_not_audited: Option<u64>,
    }
    /// A tunnel closed (expired, revoked, logout, shutdown).
    TunnelClose("tunnel.close", 1) {
        tunnel: String,
        device: i64,
        port: u16,
        user: String,
        reason: String,
        duration_ms: u64,
        connections: u64,
        refused: u64,
        bytes_up: u64,
        bytes_down: u64,
    }
    /// One IPP request seen on its way to port 631, through a web session
    /// or a tunnel (operation, requested attributes; never document data).
    IppOperation("ipp.operation", 1) {
        device: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tunnel: Option<String>,
        /// The tunnel client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// Null when the request could not be read (see `error`).
        operation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation_id: Option<i16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_attributes: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        printer_uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    /// A log-in session, API token or pending single-sign-on log-in ended.
    GrantEnd("grant.end", 1) {
        grant: i64,
        /// `login`, `api_token` or `sso_pending`.
        kind: String,
        user_id: Option<i64>,
        reason: String,
    }
    /// A customer and all its data erased (agents, devices, readings,
    /// alerts); earlier audit records stay.
    CustomerErase("customer.erase", 1) {
        customer: i64,
        name: String,
        /// Agent ids.
        agents: Vec<String>,
        devices: u64,
        readings: u64,
        alerts: u64,
        users_deactivated: u64,
    }
    /// A customer's data exported in one archive (`customer export`).
    CustomerExport("customer.export", 1) {
        customer: i64,
        name: String,
        agents: u64,
        devices: u64,
        readings: u64,
        alerts: u64,
        /// Audit records in the archive.
        audit_records: u64,
    }
    /// A customer's billing meter report produced (CLI, API, portal or a
    /// scheduled e-mail).
    TelemetryBillingReport("telemetry.billing_report", 1) {
        customer: i64,
        name: String,
        /// First day of the period (YYYY-MM-DD).
        from: String,
        /// Last day of the period, inclusive.
        to: String,
        /// `csv` or `xlsx`.
        format: String,
        devices: u64,
        /// Counters flagged (drop, reset, jump) in the period.
        flags: u64,
    }
    /// A customer's monthly billing report e-mail set or changed.
    TelemetryBillingSchedule("telemetry.billing_schedule", 1) {
        customer: i64,
        /// Day of the month (1..=28) on or after which last month is sent.
        day: i64,
        /// `csv` or `xlsx`.
        format: String,
        /// Addresses the report goes to (how many, not who).
        recipients: u64,
    }
    /// A customer's monthly billing report e-mail removed.
    TelemetryBillingScheduleRemoved("telemetry.billing_schedule_removed", 1) {
        customer: i64,
    }
    /// Readings older than the retention removed (one record per run that
    /// removed any).
    TelemetryReadingsPruned("telemetry.readings_pruned", 1) {
        /// RFC 3339: readings taken before it went.
        older_than: String,
        readings: u64,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::diag::DiagParams;

    impl Default for DiagRequest {
        fn default() -> Self {
            let p = DiagParams {
                kind: Some(crate::diag::DiagKind::Ping),
                ..DiagParams::default()
            };
            DiagRequest::from_params(&p).expect("a ping with default parameters")
        }
    }

    #[test]
    fn kind_strings_are_unique_and_match_the_catalog() {
        let kinds: HashSet<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds.len(), Kind::ALL.len());
        assert_eq!(CATALOG.len(), Kind::ALL.len());
        for (info, k) in CATALOG.iter().zip(Kind::ALL) {
            assert_eq!(info.kind, k.as_str());
            assert_eq!(info.version, k.version());
            assert_eq!(Kind::parse(info.kind), Some(*k));
        }
        assert_eq!(Kind::SsoLogin.as_str(), "sso.login");
        for info in CATALOG {
            if let Some(c) = info.cases {
                let names: HashSet<&str> = c.cases.iter().map(|c| c.name).collect();
                assert_eq!(names.len(), c.cases.len(), "{}", info.kind);
            }
        }
    }

    #[test]
    fn every_variant_has_a_sample() {
        let samples = Event::samples();
        let seen: HashSet<(&str, Option<String>)> =
            samples.iter().map(|e| (e.kind(), case_of(e))).collect();
        for info in CATALOG {
            match info.cases {
                None => assert!(seen.contains(&(info.kind, None)), "{}", info.kind),
                Some(c) => {
                    for case in c.cases {
                        let key = (info.kind, Some(case.name.to_string()));
                        assert!(seen.contains(&key), "{key:?}");
                    }
                }
            }
        }
    }

    fn case_of(e: &Event) -> Option<String> {
        match e {
            Event::AdminCommand(c) => Some(c.name().into()),
            Event::UserTotp(c) => Some(c.name().into()),
            Event::UserAdmin(c) => Some(c.name().into()),
            _ => None,
        }
    }

    #[test]
    fn every_variant_serializes_with_its_version_and_catalogued_fields() {
        for e in Event::samples() {
            let d = e.detail().expect("detail");
            assert_eq!(d.get("v"), Some(&Value::from(e.version())), "{e:?}");
            let info = CATALOG
                .iter()
                .find(|i| i.kind == e.kind())
                .expect("catalogued");
            let mut known: HashSet<&str> = info.fields.iter().copied().collect();
            if let Some(c) = info.cases {
                let name = d.get(c.tag).and_then(Value::as_str).expect("tag");
                let case = c.cases.iter().find(|x| x.name == name).expect("case");
                known.extend(case.fields);
            }
            for key in d.keys().filter(|k| *k != "v") {
                assert!(known.contains(key.as_str()), "{}: {key}", e.kind());
            }
        }
    }

    #[test]
    fn details_round_trip() {
        for e in Event::samples() {
            let text = Value::Object(e.detail().expect("detail")).to_string();
            assert_eq!(Event::parse(e.kind(), &text), Ok(e.clone()), "{text}");
        }
        let full = Event::StreamDenied {
            target: "10.0.0.5:80".into(),
            decided_by: "agent".into(),
            reason: "not allowed".into(),
            stream: Some(7),
            rule: Some("port_not_allowed".into()),
        };
        let text = Value::Object(full.detail().expect("detail")).to_string();
        assert_eq!(Event::parse("stream.denied", &text), Ok(full));
    }

    #[test]
    fn detail_keys_are_the_stored_names() {
        let e = Event::AdminCommand(AdminCommand::DeviceAdd {
            device: 3,
            address: "10.0.0.5".into(),
            name: None,
        });
        assert_eq!(e.kind(), "admin.command");
        assert_eq!(
            Value::Object(e.detail().expect("detail")),
            serde_json::json!({"v": 1, "command": "device add", "device": 3,
                               "address": "10.0.0.5", "name": null})
        );
        let e = Event::StreamDenied {
            target: "h:1".into(),
            decided_by: "relay".into(),
            reason: "r".into(),
            stream: None,
            rule: None,
        };
        let d = e.detail().expect("detail");
        assert!(
            !d.contains_key("rule") && !d.contains_key("stream"),
            "{d:?}"
        );
    }

    #[test]
    fn records_without_a_version_are_read_as_version_1() {
        let old = r#"{"peer":"10.0.0.9:5000","reason":"wrong user name or password"}"#;
        assert_eq!(
            Event::parse("user.login_failed", old),
            Ok(Event::UserLoginFailed {
                peer: "10.0.0.9:5000".into(),
                reason: "wrong user name or password".into(),
            })
        );
        let old = r#"{"action":"user unlock","user":"ann"}"#;
        assert!(matches!(
            Event::parse("user.admin", old),
            Ok(Event::UserAdmin(UserAdmin::UserUnlock { id: None, .. }))
        ));
        assert_eq!(Event::parse("user.logout", "{}"), Ok(Event::UserLogout {}));
    }

    #[test]
    fn unknown_kinds_versions_and_shapes_are_refused() {
        let refused =
            |k: &str, d: &str| matches!(Event::parse(k, d), Err(ProtoError::BadDetail { .. }));
        assert!(refused("no.such_kind", "{}"));
        assert!(refused("token.revoke", r#"{"v":2,"id":1}"#));
        assert!(refused("token.revoke", r#"{"v":"1","id":1}"#));
        assert!(refused("token.revoke", r#"{"id":"one"}"#));
        assert!(refused("token.revoke", "not json"));
        assert!(refused("admin.command", r#"{"command":"no such command"}"#));
    }
}
