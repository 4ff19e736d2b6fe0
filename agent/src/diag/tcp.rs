//! TCP connect to each port, in parallel: open, closed (refused), filtered
//! (no answer in time). Ports the policy refuses are reported as denied
//! and never tried.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dwa_policy::agent::AgentPolicy;
use dwa_proto::diag::{PortState, TcpPort, TcpResult};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::ms_since;

async fn one(addr: IpAddr, port: u16, timeout: Duration) -> TcpPort {
    let t = Instant::now();
    let (state, detail) = match tokio::time::timeout(
        timeout,
        TcpStream::connect(SocketAddr::new(addr, port)),
    )
    .await
    {
        Ok(Ok(_)) => (PortState::Open, None),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (PortState::Closed, None)
        }
        Ok(Err(e)) => (PortState::Error, Some(e.to_string())),
        Err(_) => (PortState::Filtered, None),
    };
    TcpPort {
        port,
        state,
        time_ms: ms_since(t),
        detail,
    }
}

pub async fn probe(
    policy: &AgentPolicy,
    addr: IpAddr,
    ports: &[u16],
    timeout: Duration,
) -> TcpResult {
    let mut out = Vec::with_capacity(ports.len());
    let mut set = JoinSet::new();
    for &port in ports {
        let d = policy.decide(addr, port);
        if d.allowed {
            set.spawn(one(d.addr, port, timeout));
        } else {
            out.push(TcpPort {
                port,
                state: PortState::Denied,
                time_ms: 0.0,
                detail: Some(format!("{}: {}", d.rule.name(), d.reason())),
            });
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(p) = r {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.port);
    TcpResult {
        address: addr.to_string(),
        ports: out,
    }
}
