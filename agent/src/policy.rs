//! The agent's policy with the host's own addresses as they are now.
//!
//! `dwa_policy` decides with the own addresses it is given (no I/O); the
//! host gains and loses addresses while the agent runs (DHCP, a new
//! interface, `ip addr add`), so this reads them again (getifaddrs) and
//! hands out a policy snapshot deciding with the current set:
//!
//! - [`LivePolicy::now`]: with a read that started after the call, shared
//!   by the calls that waited for it. Streams and diagnostics, whose target
//!   the relay names, and the addresses of each scan when it starts: each
//!   is decided with the addresses of that moment. One read at a time, so
//!   a flood of opens costs at most one thread reading back to back (a
//!   read: ~30-60 µs with a few addresses, ~1 ms with 200; the caller's
//!   thread blocks that long).
//! - [`LivePolicy::recent`]: with a read at most [`MAX_AGE`] old. Each walk
//!   and NetBIOS request of a running scan, trap senders (and the answer
//!   to an inform), relay-pushed scan settings (decided again when they
//!   are scanned): at most one read per `MAX_AGE` however many decisions.
//!
//! A failed read keeps the previous set (refusing the addresses last seen
//! rather than none).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwa_policy::agent::AgentPolicy;
use ipnetwork::IpNetwork;

/// How old the own addresses behind [`LivePolicy::recent`] may be.
pub const MAX_AGE: Duration = Duration::from_secs(1);

type Reader = Box<dyn Fn() -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

pub struct LivePolicy {
    read: Reader,
    state: Mutex<State>,
}

struct State {
    policy: Arc<AgentPolicy>,
    /// The addresses as last read, before normalization.
    read: Vec<IpAddr>,
    /// When the last read started.
    read_at: Option<Instant>,
}

/// This host's interface addresses.
fn read_own() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect())
}

impl LivePolicy {
    /// `policy` with its own addresses read from the host at each decision.
    pub fn new(policy: AgentPolicy) -> Self {
        Self::with_reader(policy, read_own)
    }

    /// As [`LivePolicy::new`], the own addresses read by `read`.
    pub fn with_reader(
        policy: AgentPolicy,
        read: impl Fn() -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            read: Box::new(read),
            state: Mutex::new(State {
                read: policy.own_addresses(),
                policy: Arc::new(policy),
                read_at: None,
            }),
        }
    }

    /// The policy with the own addresses read after this call began.
    pub fn now(&self) -> Arc<AgentPolicy> {
        let asked = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.read_at {
            // Another call's read started after this one asked: as fresh.
            Some(t) if t > asked => s.policy.clone(),
            _ => self.refresh(&mut s),
        }
    }

    /// The policy with own addresses read at most [`MAX_AGE`] ago.
    pub fn recent(&self) -> Arc<AgentPolicy> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.read_at {
            Some(t) if t.elapsed() < MAX_AGE => s.policy.clone(),
            _ => self.refresh(&mut s),
        }
    }

    fn refresh(&self, s: &mut State) -> Arc<AgentPolicy> {
        let started = Instant::now();
        match (self.read)() {
            Ok(read) if read != s.read => {
                s.policy = Arc::new(s.policy.with_own_addresses(read.clone()));
                s.read = read;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reading this host's addresses: {e} (keeping the last ones)"),
        }
        s.read_at = Some(started);
        s.policy.clone()
    }

    /// Puts `policy` in force for every decision from now on (SIGHUP: the
    /// configured rules changed); the own addresses stay those last read.
    pub fn replace(&self, policy: AgentPolicy) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.policy = Arc::new(policy.with_own_addresses(s.read.clone()));
    }

    /// Allowed ports (they do not depend on the own addresses).
    pub fn ports(&self) -> Vec<u16> {
        self.snapshot().ports()
    }

    /// Allow entries (they do not depend on the own addresses).
    pub fn allow(&self) -> Vec<IpNetwork> {
        self.snapshot().allow()
    }

    fn snapshot(&self) -> Arc<AgentPolicy> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .clone()
    }
}

impl std::fmt::Debug for LivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePolicy")
            .field("policy", &self.snapshot())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwa_policy::agent::{PolicyConfig, Rule};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn decides_with_the_addresses_read_now() {
        let host = Arc::new(Mutex::new(vec![ip("10.0.0.1")]));
        let reads = Arc::new(AtomicUsize::new(0));
        let (h, r) = (host.clone(), reads.clone());
        let cfg = PolicyConfig {
            allow: vec!["10.0.0.0/24".into()],
            ..PolicyConfig::default()
        };
        let policy = AgentPolicy::from_config(&cfg, vec![ip("10.0.0.1")]).unwrap();
        let live = LivePolicy::with_reader(policy, move || {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(h.lock().unwrap().clone())
        });
        assert_eq!(live.now().decide(ip("10.0.0.1"), 80).rule, Rule::OwnAddress);
        assert!(live.now().decide(ip("10.0.0.30"), 80).allowed);
        assert_eq!(reads.load(Ordering::SeqCst), 2, "one read per now()");

        host.lock().unwrap().push(ip("10.0.0.30"));
        assert_eq!(
            live.now().decide(ip("10.0.0.30"), 80).rule,
            Rule::OwnAddress
        );
        // recent(): the read just made is young enough.
        assert_eq!(
            live.recent().decide(ip("10.0.0.30"), 80).rule,
            Rule::OwnAddress
        );
        assert_eq!(reads.load(Ordering::SeqCst), 3);

        host.lock().unwrap().retain(|a| *a != ip("10.0.0.1"));
        assert!(
            live.now().decide(ip("10.0.0.1"), 80).allowed,
            "no longer own"
        );
        assert_eq!(live.ports(), vec![80, 443, 631, 8000, 9100]);
    }

    #[test]
    fn a_failed_read_keeps_the_last_addresses() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fail.clone();
        let cfg = PolicyConfig {
            allow: vec!["10.0.0.0/24".into()],
            ..PolicyConfig::default()
        };
        let live =
            LivePolicy::with_reader(AgentPolicy::from_config(&cfg, vec![]).unwrap(), move || {
                if f.load(Ordering::SeqCst) {
                    Err(std::io::Error::other("no netlink"))
                } else {
                    Ok(vec![ip("10.0.0.7")])
                }
            });
        assert_eq!(live.now().decide(ip("10.0.0.7"), 80).rule, Rule::OwnAddress);
        fail.store(true, Ordering::SeqCst);
        assert_eq!(live.now().decide(ip("10.0.0.7"), 80).rule, Rule::OwnAddress);
    }

    #[test]
    fn a_replaced_policy_decides_at_once_with_the_own_addresses() {
        let cfg = |allow: &str| PolicyConfig {
            allow: vec![allow.into()],
            ..PolicyConfig::default()
        };
        let live = LivePolicy::with_reader(
            AgentPolicy::from_config(&cfg("10.0.0.0/24"), vec![]).unwrap(),
            || Ok(vec![ip("10.0.1.5")]),
        );
        assert!(live.now().decide(ip("10.0.0.9"), 80).allowed);
        live.replace(AgentPolicy::from_config(&cfg("10.0.1.0/24"), vec![]).unwrap());
        let d = live.recent().decide(ip("10.0.0.9"), 80);
        assert!(!d.allowed, "outside the new allow list: {d:?}");
        assert!(live.recent().decide(ip("10.0.1.9"), 80).allowed);
        assert_eq!(
            live.recent().decide(ip("10.0.1.5"), 80).rule,
            Rule::OwnAddress,
            "the own addresses read before the replacement still count"
        );
        assert_eq!(
            live.allow(),
            vec!["10.0.1.0/24".parse::<IpNetwork>().unwrap()]
        );
    }

    #[test]
    fn reads_the_real_host() {
        read_own().unwrap();
    }
}
