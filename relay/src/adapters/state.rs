//! What the adapters share: the services, plus what only the listeners
//! need (SSH and TLS configuration, connection slots and rates, the
//! session-host proxy's runtimes, the identity provider's client).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::config::DataDir;
use crate::error::Result;
use crate::services::clock::Time;
use crate::services::{Services, Svc};

pub struct RelayState {
    pub svc: Svc,
    pub ssh_config: Arc<russh::server::Config>,
    pub tls: Arc<rustls::ServerConfig>,
    /// Open connections (SSH + HTTPS), and SSH handshakes in progress.
    pub connections: Arc<Semaphore>,
    pub handshakes: Arc<Semaphore>,
    /// SSH handshakes in progress per source address.
    pub handshake_sources: Arc<PerSource>,
    /// HTTPS connections per source before their first request.
    pub tls_handshake_sources: Arc<PerSource>,
    /// Open connections (SSH + HTTPS) per source address.
    pub connection_sources: Arc<PerSource>,
    /// New TCP connections per source address (SSH and HTTPS together).
    pub conn_rate: Arc<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// The session-host proxy's per-session runtimes.
    pub web_rt: crate::adapters::web::proxy::Runtimes,
    /// How single sign-on reaches the identity provider (`[oidc]` only).
    pub oidc_http: Option<Arc<crate::adapters::oidc_client::ProviderClient>>,
}

/// Adapters reach the services through the relay.
impl Deref for RelayState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.svc
    }
}

/// 20 new connections a second per source address, bursts of 200: enough
/// for a site's agents reconnecting together, not for a flood.
fn conn_quota() -> governor::Quota {
    let per_sec = std::num::NonZeroU32::new(20).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(200).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_second(per_sec).allow_burst(burst)
}

pub type Relay = Arc<RelayState>;

impl RelayState {
    pub async fn load(dir: DataDir, bound_ssh_port: u16, bound_https_port: u16) -> Result<Relay> {
        let svc = Arc::new(
            Services::open(
                dir.clone(),
                Some((bound_ssh_port, bound_https_port)),
                Time::system(),
            )
            .await?,
        );
        let key = crate::init::load_host_key(&dir)?;
        let tls = crate::init::load_tls(&dir)?;
        let cfg = svc.cfg();
        let ssh_config = Arc::new(dwa_link::ssh::server_config(cfg.keepalive(), vec![key]));
        let oidc_http = cfg
            .oidc
            .as_ref()
            .map(crate::adapters::oidc_client::ProviderClient::new)
            .transpose()?
            .map(Arc::new);
        Ok(Arc::new(RelayState {
            connections: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(cfg.limits.max_handshakes)),
            handshake_sources: Arc::new(PerSource::new(cfg.limits.handshakes_per_source)),
            tls_handshake_sources: Arc::new(PerSource::new(cfg.limits.tls_handshakes_per_source)),
            connection_sources: Arc::new(PerSource::new(cfg.limits.connections_per_source)),
            conn_rate: Arc::new(governor::RateLimiter::keyed(conn_quota())),
            web_rt: Default::default(),
            oidc_http,
            ssh_config,
            tls: tls.config,
            svc,
        }))
    }

    /// Whether a new connection from `ip` is within its rate.
    pub fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.conn_rate.check_key(&ip).is_ok()
    }
}

/// Things in progress per source address, at most `cap` each. IPv4-mapped
/// addresses count as IPv4; an IPv6 address counts as its /64 (one site's
/// network, where any host is the attacker's to choose).
pub struct PerSource {
    cap: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One place of a [`PerSource`], given back when dropped.
pub struct SourceSlot {
    owner: Arc<PerSource>,
    key: IpAddr,
}

impl PerSource {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match dwa_policy::agent::normalize_addr(ip) {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }

    /// A place for `ip`, or `None` when its address already has `cap`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = Self::key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Places taken by `ip`'s address now.
    pub fn in_use(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&Self::key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// One admitted TCP connection: within its address's rate and holding a
/// slot of `limits.max_connections` and one of its address's
/// `limits.connections_per_source` until dropped.
pub struct Admitted {
    pub sock: tokio::net::TcpStream,
    pub peer: std::net::SocketAddr,
    pub slot: ConnSlot,
}

/// The places an open connection holds; given back when dropped.
pub struct ConnSlot {
    _all: tokio::sync::OwnedSemaphorePermit,
    _source: SourceSlot,
}

impl RelayState {
    /// Next admitted connection on `listener`; `None` at shutdown. Refused
    /// connections are dropped at once (closed), with a log line.
    pub async fn accept(&self, listener: &tokio::net::TcpListener) -> Option<Admitted> {
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.shutdown.cancelled() => return None,
            };
            if !self.admit(peer.ip()) {
                tracing::warn!(%peer, "connection rate limit exceeded; refusing");
                continue;
            }
            // Its address's share first: one address cannot take every
            // connection slot.
            let Some(source) = self.connection_sources.try_take(peer.ip()) else {
                tracing::warn!(%peer, "too many connections from this address; refusing");
                continue;
            };
            let Ok(all) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached; refusing");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let slot = ConnSlot {
                _all: all,
                _source: source,
            };
            return Some(Admitted { sock, peer, slot });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_at_most_its_cap_and_gets_it_back() {
        let slots = Arc::new(PerSource::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let one = slots.try_take(a).expect("first");
        let two = slots.try_take(a).expect("second");
        assert!(slots.try_take(a).is_none(), "over the cap");
        assert!(
            slots.try_take(b).is_some(),
            "another address is not affected"
        );
        // The IPv4-mapped form is the same address.
        assert!(slots
            .try_take("::ffff:192.0.2.1".parse().unwrap())
            .is_none());
        drop(one);
        assert_eq!(slots.in_use(a), 1);
        let _three = slots.try_take(a).expect("a place came back");
        drop(two);
        drop(_three);
        assert_eq!(slots.in_use(a), 0);
        assert!(
            slots.counts.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn an_ipv6_network_counts_as_one_source() {
        let slots = Arc::new(PerSource::new(1));
        let _x = slots
            .try_take("2001:db8:1:2::1".parse().unwrap())
            .expect("first");
        assert!(slots
            .try_take("2001:db8:1:2::ffff".parse().unwrap())
            .is_none());
        assert!(slots.try_take("2001:db8:1:3::1".parse().unwrap()).is_some());
    }
}
