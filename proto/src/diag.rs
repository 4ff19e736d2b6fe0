//! Typed diagnostics the relay asks an agent to run (never a shell): ICMP
//! echo, TCP connect, HTTP(S) probe, IPP Get-Printer-Attributes and PJL
//! INFO. The request and its result travel on the control channel
//! ([`crate::control::ControlMsg::Diag`] and
//! [`crate::control::ControlMsg::DiagResult`]); both sides bound every
//! parameter with [`DiagRequest::validate`] (the agent does not trust the
//! relay to have done it).

use serde::{Deserialize, Serialize};

/// Version of the request/result shapes below.
pub const DIAG_VERSION: u32 = 1;

pub const MAX_COUNT: u32 = 20;
pub const MIN_INTERVAL_MS: u64 = 200;
pub const MAX_INTERVAL_MS: u64 = 5_000;
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 10_000;
/// ICMP payload: an Ethernet MTU's IPv4 datagram without fragments.
pub const MAX_SIZE: usize = 1472;
/// Most ports one TCP diagnostic tries.
pub const MAX_PORTS: usize = 32;
/// Longest text field carried back (server header, PJL answers...).
pub const MAX_TEXT: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagKind {
    Ping,
    Tcp,
    Http,
    Ipp,
    Pjl,
}

impl DiagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiagKind::Ping => "ping",
            DiagKind::Tcp => "tcp",
            DiagKind::Http => "http",
            DiagKind::Ipp => "ipp",
            DiagKind::Pjl => "pjl",
        }
    }

    /// The port probed when the request names none (TCP: none, every port
    /// of the agent's policy).
    pub fn default_port(self) -> Option<u16> {
        match self {
            DiagKind::Ping | DiagKind::Tcp => None,
            DiagKind::Http => Some(80),
            DiagKind::Ipp => Some(631),
            DiagKind::Pjl => Some(9100),
        }
    }
}

/// One diagnostic, every parameter filled in and bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagRequest {
    pub version: u32,
    pub kind: DiagKind,
    /// TCP ports: HTTP/IPP/PJL exactly one; TCP one or more, or empty for
    /// "every port the agent's policy allows". Ping: empty.
    pub ports: Vec<u16>,
    /// Echo requests (ping only).
    pub count: u32,
    pub interval_ms: u64,
    /// Per echo, per connection, or per whole exchange.
    pub timeout_ms: u64,
    /// ICMP payload bytes.
    pub size: usize,
    /// HTTP: speak TLS (HTTPS).
    pub tls: bool,
}

/// The optional parameters as a user gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagParams {
    pub kind: Option<DiagKind>,
    pub port: Option<u16>,
    pub count: Option<u32>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub size: Option<usize>,
    pub tls: Option<bool>,
}

impl DiagRequest {
    /// Fills in defaults and checks the bounds; the error names the field.
    pub fn from_params(p: &DiagParams) -> Result<DiagRequest, String> {
        let kind = p
            .kind
            .ok_or("kind is required (ping, tcp, http, ipp, pjl)")?;
        let port = p.port.or(kind.default_port());
        let r = DiagRequest {
            version: DIAG_VERSION,
            kind,
            ports: match kind {
                DiagKind::Ping => {
                    if p.port.is_some() {
                        return Err("port: ping takes no port".into());
                    }
                    vec![]
                }
                _ => port.into_iter().collect(),
            },
            count: p.count.unwrap_or(4),
            interval_ms: p.interval_ms.unwrap_or(1000),
            timeout_ms: p.timeout_ms.unwrap_or(match kind {
                DiagKind::Ping => 1000,
                _ => 5000,
            }),
            size: p.size.unwrap_or(56),
            tls: p.tls.unwrap_or(port == Some(443)),
        };
        if kind != DiagKind::Ping && p.count.is_some() {
            return Err("count: only ping takes a count".into());
        }
        r.validate()?;
        Ok(r)
    }

    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != DIAG_VERSION {
            return Err(format!("version {} is not {DIAG_VERSION}", self.version));
        }
        if !(1..=MAX_COUNT).contains(&self.count) {
            return Err(format!("count must be 1..={MAX_COUNT}"));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return Err(format!(
                "interval_ms must be {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}"
            ));
        }
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "timeout_ms must be {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}"
            ));
        }
        if self.size > MAX_SIZE {
            return Err(format!("size must be at most {MAX_SIZE}"));
        }
        if self.ports.contains(&0) {
            return Err("port must be 1..=65535".into());
        }
        let want = match self.kind {
            DiagKind::Ping => self.ports.is_empty(),
            DiagKind::Tcp => self.ports.len() <= MAX_PORTS,
            _ => self.ports.len() == 1,
        };
        if !want {
            return Err(format!("ports: wrong number for {}", self.kind.as_str()));
        }
        if self.tls && self.kind != DiagKind::Http {
            return Err("tls: only http takes tls".into());
        }
        Ok(())
    }

    /// The longest the agent may take: what the relay waits for, plus slack.
    pub fn budget_ms(&self) -> u64 {
        match self.kind {
            DiagKind::Ping => {
                u64::from(self.count.saturating_sub(1)) * self.interval_ms + self.timeout_ms
            }
            // TCP ports are tried in parallel.
            _ => self.timeout_ms,
        }
    }
}

/// The agent's answer to one diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DiagOutcome {
    /// It ran; what it found (which may be "no answer").
    Done { result: DiagResult },
    /// The agent's policy refused the target: nothing was sent.
    Refused { rule: String, reason: String },
    /// It could not run (no ICMP socket, too many diagnostics...).
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiagResult {
    Ping(PingResult),
    Tcp(TcpResult),
    Http(HttpResult),
    Ipp(IppResult),
    Pjl(PjlResult),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    pub address: String,
    /// `datagram` (unprivileged ICMP socket) or `raw`.
    pub socket: String,
    pub size: usize,
    /// One entry per echo request: RTT in ms, or None (no reply in time).
    pub rtts_ms: Vec<Option<f64>>,
    #[serde(flatten)]
    pub stats: PingStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
    pub loss_pct: f64,
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    /// Population standard deviation (as ping(8) reports "mdev").
    pub rtt_stddev_ms: Option<f64>,
}

impl PingStats {
    pub fn from_rtts(rtts: &[Option<f64>]) -> PingStats {
        let got: Vec<f64> = rtts
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let sent = u32::try_from(rtts.len()).unwrap_or(u32::MAX);
        let received = u32::try_from(got.len()).unwrap_or(u32::MAX);
        let loss_pct = if sent == 0 {
            0.0
        } else {
            f64::from(sent - received) * 100.0 / f64::from(sent)
        };
        if got.is_empty() {
            return PingStats {
                sent,
                received,
                loss_pct,
                rtt_min_ms: None,
                rtt_avg_ms: None,
                rtt_max_ms: None,
                rtt_stddev_ms: None,
            };
        }
        let n = got.len() as f64;
        let min = got.iter().copied().fold(f64::INFINITY, f64::min);
        let max = got.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let avg = got.iter().sum::<f64>() / n;
        let var = got.iter().map(|v| (v - avg) * (v - avg)).sum::<f64>() / n;
        PingStats {
            sent,
            received,
            loss_pct,
            rtt_min_ms: Some(min),
            rtt_avg_ms: Some(avg),
            rtt_max_ms: Some(max),
            rtt_stddev_ms: Some(var.sqrt()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpResult {
    pub address: String,
    pub ports: Vec<TcpPort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Connected.
    Open,
    /// Refused (RST).
    Closed,
    /// No answer within the timeout.
    Filtered,
    /// Another error (unreachable...).
    Error,
    /// The agent's policy refused the port: nothing was sent.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpPort {
    pub port: u16,
    pub state: PortState,
    pub time_ms: f64,
    /// Denied: the policy rule; Error: the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResult {
    pub address: String,
    pub port: u16,
    pub tls: bool,
    pub status: u16,
    pub server: Option<String>,
    pub time_ms: f64,
    /// TLS: negotiated version (`TLSv1_3`), certificate subject and the
    /// SHA-256 of its DER (lowercase hex).
    pub tls_version: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IppResult {
    pub address: String,
    pub port: u16,
    pub http_status: u16,
    /// IPP status, e.g. `successful-ok`.
    pub ipp_status: String,
    /// `idle`, `processing`, `stopped` (or the number when unknown).
    pub printer_state: Option<String>,
    pub printer_state_reasons: Vec<String>,
    pub make_and_model: Option<String>,
    pub firmware: Option<String>,
    pub time_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PjlResult {
    pub address: String,
    pub port: u16,
    /// The `INFO ID` answer's text line, e.g. `"HP LaserJet M507"`.
    pub id: Option<String>,
    /// `INFO STATUS`: CODE, DISPLAY, ONLINE.
    pub status_code: Option<u32>,
    pub display: Option<String>,
    pub online: Option<bool>,
    /// What came back, truncated to [`MAX_TEXT`].
    pub raw: String,
    pub time_ms: f64,
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_replies_and_losses() {
        let s = PingStats::from_rtts(&[Some(1.0), None, Some(3.0), Some(2.0)]);
        assert_eq!((s.sent, s.received), (4, 3));
        assert_eq!(s.loss_pct, 25.0);
        assert_eq!(s.rtt_min_ms, Some(1.0));
        assert_eq!(s.rtt_max_ms, Some(3.0));
        assert_eq!(s.rtt_avg_ms, Some(2.0));
        let sd = s.rtt_stddev_ms.unwrap();
        assert!((sd - (2.0f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
    }

    #[test]
    fn stats_of_nothing_and_of_all_lost() {
        let s = PingStats::from_rtts(&[]);
        assert_eq!((s.sent, s.received, s.loss_pct), (0, 0, 0.0));
        let s = PingStats::from_rtts(&[None, None]);
        assert_eq!(s.loss_pct, 100.0);
        assert_eq!(s.rtt_avg_ms, None);
        let s = PingStats::from_rtts(&[Some(5.0)]);
        assert_eq!(s.rtt_stddev_ms, Some(0.0));
        // A NaN from a broken clock is a lost reply, not a poisoned mean.
        let s = PingStats::from_rtts(&[Some(f64::NAN), Some(1.0)]);
        assert_eq!((s.received, s.rtt_avg_ms), (1, Some(1.0)));
    }

    #[test]
    fn params_get_defaults_and_bounds() {
        let p = |v: serde_json::Value| serde_json::from_value::<DiagParams>(v).unwrap();
        let r = DiagRequest::from_params(&p(serde_json::json!({"kind": "ping"}))).unwrap();
        assert_eq!((r.count, r.ports.len()), (4, 0));
        let r =
            DiagRequest::from_params(&p(serde_json::json!({"kind": "http", "port": 443}))).unwrap();
        assert!(r.tls);
        let r = DiagRequest::from_params(&p(serde_json::json!({"kind": "ipp"}))).unwrap();
        assert_eq!(r.ports, vec![631]);
        let r = DiagRequest::from_params(&p(serde_json::json!({"kind": "tcp"}))).unwrap();
        assert!(r.ports.is_empty());
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"kind": "ping", "count": 21}),
            serde_json::json!({"kind": "ping", "count": 0}),
            serde_json::json!({"kind": "ping", "interval_ms": 10}),
            serde_json::json!({"kind": "ping", "timeout_ms": 60000}),
            serde_json::json!({"kind": "ping", "size": 1473}),
            serde_json::json!({"kind": "ping", "port": 80}),
            serde_json::json!({"kind": "tcp", "port": 0}),
            serde_json::json!({"kind": "tcp", "count": 3}),
            serde_json::json!({"kind": "pjl", "tls": true}),
        ] {
            assert!(DiagRequest::from_params(&p(bad.clone())).is_err(), "{bad}");
        }
        assert!(
            serde_json::from_value::<DiagParams>(serde_json::json!({"kind": "shell"})).is_err()
        );
        assert!(serde_json::from_value::<DiagParams>(serde_json::json!({"cmd": "ls"})).is_err());
    }

    #[test]
    fn a_hostile_request_is_refused_by_validate() {
        let mut r = DiagRequest::from_params(&DiagParams {
            kind: Some(DiagKind::Tcp),
            ..Default::default()
        })
        .unwrap();
        r.ports = (1..=100).collect();
        assert!(r.validate().is_err());
        r.ports = vec![80];
        r.count = 1_000_000;
        assert!(r.validate().is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
