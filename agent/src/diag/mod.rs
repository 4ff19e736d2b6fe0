//! Diagnostics the relay asks for (`ControlMsg::Diag`): typed probes, never
//! a shell. Every target is resolved, then decided by the agent's policy
//! before anything is sent; a refused target gets no packet at all and the
//! refusal goes back with its rule. At most [`MAX_CONCURRENT`] run at once.
//!
//! - `icmp`: echo requests (unprivileged datagram socket, raw fallback).
//! - `tcp`: connect to each port: open / closed / filtered.
//! - `http`: status, Server header, TLS version and certificate.
//! - `ipp`: Get-Printer-Attributes over HTTP.
//! - `pjl`: `INFO ID` and `INFO STATUS` on the raw port.

mod http;
mod icmp;
mod ipp;
mod pjl;
mod tcp;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dwa_policy::agent::{AgentPolicy, Decision};
use dwa_proto::diag::{DiagKind, DiagOutcome, DiagRequest, DiagResult};
use tokio::sync::Semaphore;

use crate::policy::LivePolicy;

pub use http::parse_subject;
pub use ipp::parse_response as parse_ipp;
pub use pjl::parse as parse_pjl;

/// Diagnostics running at once; more are refused (the relay rate-limits
/// too, this bounds what a hostile relay can make the agent do).
pub const MAX_CONCURRENT: usize = 4;

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared by every session of the agent: the cap is per agent.
pub struct DiagService {
    policy: Arc<LivePolicy>,
    limit: Arc<Semaphore>,
    /// Built on first HTTPS probe.
    printer_tls: OnceLock<Option<Arc<rustls::ClientConfig>>>,
}

fn refused(d: &Decision) -> DiagOutcome {
    DiagOutcome::Refused {
        rule: d.rule.name().to_string(),
        reason: d.reason(),
    }
}

fn failed(reason: impl Into<String>) -> DiagOutcome {
    DiagOutcome::Failed {
        reason: reason.into(),
    }
}

/// Milliseconds since `t`, as a float (sub-millisecond RTTs on a LAN).
pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl DiagService {
    pub fn new(policy: Arc<LivePolicy>) -> Self {
        Self {
            policy,
            limit: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            printer_tls: OnceLock::new(),
        }
    }

    fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.printer_tls
            .get_or_init(|| dwa_link::tls::any_cert_client_config().map(Arc::new).ok())
            .clone()
    }

    async fn resolve(target: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = target.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((target, 0))).await {
            Ok(Ok(a)) => {
                let v: Vec<IpAddr> = a.map(|a| a.ip()).collect();
                if v.is_empty() {
                    Err(format!("{target:?} resolved to no address"))
                } else {
                    Ok(v)
                }
            }
            Ok(Err(e)) => Err(format!("cannot resolve {target:?}: {e}")),
            Err(_) => Err(format!("resolving {target:?} timed out")),
        }
    }

    /// The first resolved address the policy's address rules allow (ports
    /// aside), else the decision that refused the first one.
    fn pick_address(policy: &AgentPolicy, addrs: &[IpAddr]) -> Result<IpAddr, Decision> {
        let mut first = None;
        for &a in addrs {
            let d = policy.decide_icmp(a);
            if d.allowed {
                return Ok(d.addr);
            }
            first.get_or_insert(d);
        }
        Err(first.unwrap_or_else(|| policy.decide_icmp(IpAddr::from([0, 0, 0, 0]))))
    }

    /// Runs one diagnostic to its end (bounded by its own timeouts and by
    /// an overall budget).
    pub async fn run(&self, target: &str, req: &DiagRequest) -> DiagOutcome {
        if let Err(e) = req.validate() {
            return failed(format!("invalid diagnostic: {e}"));
        }
        let Ok(_permit) = self.limit.clone().try_acquire_owned() else {
            return failed(format!(
                "the agent is running its maximum of {MAX_CONCURRENT} diagnostics"
            ));
        };
        let addrs = match Self::resolve(target).await {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        // The host's own addresses as they are now (see `crate::policy`).
        let policy = self.policy.now();
        let addr = match Self::pick_address(&policy, &addrs) {
            Ok(a) => a,
            Err(d) => return refused(&d),
        };
        // Single-port probes: address and port decided together, and the
        // checked address is the one probed.
        let port = req.ports.first().copied();
        if req.kind != DiagKind::Ping && req.kind != DiagKind::Tcp {
            let Some(port) = port else {
                return failed("no port");
            };
            let d = policy.decide(addr, port);
            if !d.allowed {
                return refused(&d);
            }
        }
        let budget = Duration::from_millis(req.budget_ms()) + Duration::from_secs(2);
        let timeout = Duration::from_millis(req.timeout_ms);
        let run = async {
            match req.kind {
                DiagKind::Ping => icmp::ping(addr, req).await.map(DiagResult::Ping),
                DiagKind::Tcp => {
                    let ports = if req.ports.is_empty() {
                        policy.ports()
                    } else {
                        req.ports.clone()
                    };
                    Ok(DiagResult::Tcp(
                        tcp::probe(&policy, addr, &ports, timeout).await,
                    ))
                }
                DiagKind::Http => {
                    let tls = if req.tls {
                        match self.tls_config() {
                            Some(c) => Some(c),
                            None => return Err("TLS client configuration unavailable".into()),
                        }
                    } else {
                        None
                    };
                    http::probe(addr, port.unwrap_or(80), tls, timeout)
                        .await
                        .map(DiagResult::Http)
                }
                DiagKind::Ipp => ipp::probe(addr, port.unwrap_or(631), timeout)
                    .await
                    .map(DiagResult::Ipp),
                DiagKind::Pjl => pjl::probe(addr, port.unwrap_or(9100), timeout)
                    .await
                    .map(DiagResult::Pjl),
            }
        };
        match tokio::time::timeout(budget, run).await {
            Ok(Ok(result)) => DiagOutcome::Done { result },
            Ok(Err(e)) => failed(e),
            Err(_) => failed(format!("no result within {budget:?}")),
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever a printer answers on its PJL or IPP port: parsed or
        /// refused, never a panic.
        #[test]
        fn printer_answers_parse_or_fail_cleanly(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            text in "(@PJL [A-Z ]{0,12}(=[ -~]{0,16})?\r?\n|\x0c|[ -~]{0,20}\n){0,16}",
        ) {
            let _ = super::pjl::parse(&data);
            let _ = super::pjl::parse(text.as_bytes());
            let _ = super::ipp::parse_response(&data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_policy::agent::PolicyConfig;
    use dwa_proto::diag::{DiagParams, PortState};

    fn svc() -> DiagService {
        let cfg = PolicyConfig {
            allow: vec!["192.0.2.0/24".into()],
            ports: vec![80, 9100],
            ..PolicyConfig::default()
        };
        DiagService::new(Arc::new(LivePolicy::new(
            AgentPolicy::from_config(&cfg, vec![]).unwrap(),
        )))
    }

    fn req(kind: DiagKind, port: Option<u16>) -> DiagRequest {
        DiagRequest::from_params(&DiagParams {
            kind: Some(kind),
            port,
            ..Default::default()
        })
        .unwrap()
    }

    fn rule(o: &DiagOutcome) -> &str {
        match o {
            DiagOutcome::Refused { rule, .. } => rule,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn refusals_name_the_rule_and_send_nothing() {
        let s = svc();
        // Outside the allow list, loopback, a port outside policy.ports.
        let o = s.run("198.51.100.7", &req(DiagKind::Ping, None)).await;
        assert_eq!(rule(&o), "not_allowed");
        let o = s.run("127.0.0.1", &req(DiagKind::Ping, None)).await;
        assert_eq!(rule(&o), "special");
        let o = s.run("192.0.2.5", &req(DiagKind::Http, Some(22))).await;
        assert_eq!(rule(&o), "port_not_allowed");
        // TCP: a refused port is listed as denied, never tried (192.0.2.x
        // is TEST-NET: a connect would time out, not return at once).
        let started = Instant::now();
        let o = s.run("192.0.2.5", &req(DiagKind::Tcp, Some(22))).await;
        let DiagOutcome::Done {
            result: DiagResult::Tcp(t),
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(t.ports[0].state, PortState::Denied);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_hostile_request_fails_validation() {
        let mut r = req(DiagKind::Ping, None);
        r.count = 10_000;
        let o = svc().run("192.0.2.5", &r).await;
        assert!(matches!(o, DiagOutcome::Failed { .. }), "{o:?}");
    }
}
