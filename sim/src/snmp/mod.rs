//! The simulated printers' SNMP agents (v1 and v2c, read-only) and the
//! "black hole" that keeps addresses without a device silent.
//!
//! - [`profile`]: the device profiles shipped in `sim/profiles/` and their
//!   per-address templating ([`Identity`]).
//! - `responder`: one datagram in, one answer (or silence) out.
//! - here: sockets, serve loops, [`Fault`]s, datagram counters.
//!
//! Every device of a fleet listens on the same UDP port (the collector scans
//! one port), each on its own address: the sockets are bound to the device
//! address explicitly, with `SO_REUSEADDR` so that a [`BlackHole`] bound to
//! `0.0.0.0` on the same port can take whatever is sent to the other
//! addresses. Linux delivers a datagram to the most specific bound socket,
//! so live devices still get their own traffic (checked by a test).

pub mod profile;
mod responder;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use profile::{Identity, Profile, PROFILES};
pub use responder::{Responder, MAX_RESPONSE, MIN_RESPONSE};

use crate::SimError;

/// Misbehaviour of one simulated device, for robustness tests of a
/// collector. Protocol faults hit answers to requests for Printer-MIB OIDs
/// (`1.3.6.1.2.1.43...`), so the device is found but cannot be read fully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answers about the Printer-MIB are cut in half (broken BER).
    TruncatedBer,
    /// Answers about the Printer-MIB carry request-id + 1.
    WrongRequestId,
    /// 2000 extra supply rows: more than a collector's varbind budget.
    HugeTable,
    /// Latin-1, invalid UTF-8 and embedded NULs in sysName and supply
    /// descriptions.
    NonUtf8Strings,
    /// Serial as INTEGER, life count as OID, a level as text, the error
    /// state as INTEGER, a supply type as IpAddress, sysObjectID as text.
    WrongTypes,
    /// The page counters run down as time passes.
    CountersBackwards,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "truncated-ber" => Fault::TruncatedBer,
            "wrong-request-id" => Fault::WrongRequestId,
            "huge-table" => Fault::HugeTable,
            "non-utf8-strings" => Fault::NonUtf8Strings,
            "wrong-types" => Fault::WrongTypes,
            "counters-backwards" => Fault::CountersBackwards,
            other => return Err(format!("unknown fault {other:?}")),
        })
    }
}

/// Where datagrams to addresses without a device go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlackHole {
    /// One socket on `0.0.0.0:<port>`: every IPv4 address without a device.
    Wildcard,
    /// One socket per listed address.
    Addresses(Vec<IpAddr>),
}

/// SNMP settings of a fleet (used when `FleetConfig::snmp_port` is set).
#[derive(Debug, Clone)]
pub struct SnmpOptions {
    /// v1/v2c community; requests with another one get no answer.
    pub community: String,
    /// Profile names used round-robin over the addresses; empty: every
    /// printer profile in turn. Names come from [`PROFILES`].
    pub profiles: Vec<String>,
    /// Per-address profile, winning over `profiles`.
    pub profile_of: Vec<(IpAddr, String)>,
    pub faults: Vec<(IpAddr, Fault)>,
    /// Largest answer in bytes; clamped to [`MIN_RESPONSE`]..=[`MAX_RESPONSE`].
    /// Default 1472: one Ethernet frame, what most printers use.
    pub max_response: usize,
    pub black_hole: Option<BlackHole>,
}

impl Default for SnmpOptions {
    fn default() -> Self {
        SnmpOptions {
            community: "public".to_string(),
            profiles: Vec::new(),
            profile_of: Vec::new(),
            faults: Vec::new(),
            max_response: 1472,
            black_hole: None,
        }
    }
}

impl SnmpOptions {
    /// The profile for the `i`-th address.
    pub fn profile_for(&self, i: usize, addr: IpAddr) -> Result<&'static Profile, SimError> {
        let unknown = |name: &str| SimError::UnknownProfile(name.to_string());
        if let Some((_, name)) = self.profile_of.iter().find(|(a, _)| *a == addr) {
            return profile::by_name(name).ok_or_else(|| unknown(name));
        }
        if self.profiles.is_empty() {
            let printers: Vec<&'static Profile> = profile::printers().collect();
            return Ok(printers[i % printers.len()]);
        }
        let name = &self.profiles[i % self.profiles.len()];
        profile::by_name(name).ok_or_else(|| unknown(name))
    }

    pub fn fault_for(&self, addr: IpAddr) -> Option<Fault> {
        self.faults
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, f)| *f)
    }
}

/// Datagram counters of one socket.
#[derive(Debug, Default)]
pub struct SnmpStats {
    received: AtomicU64,
    answered: AtomicU64,
}

impl SnmpStats {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

/// One device's SNMP side, as seen from outside.
#[derive(Debug, Clone)]
pub struct SnmpDevice {
    pub addr: SocketAddr,
    pub community: String,
    pub identity: Identity,
    pub fault: Option<Fault>,
    pub stats: Arc<SnmpStats>,
    responder: Arc<Responder>,
}

impl SnmpDevice {
    /// The total page count the device reports at this moment.
    pub fn total_now(&self) -> u64 {
        self.responder.total_now()
    }
}

/// A bound, not yet serving, UDP socket.
pub(crate) struct BoundSocket {
    socket: UdpSocket,
    addr: SocketAddr,
}

/// Bind `addr` with `SO_REUSEADDR` (see the module docs).
pub(crate) fn bind_udp(addr: SocketAddr) -> Result<BoundSocket, SimError> {
    let err = |source| SimError::Bind { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    let std: std::net::UdpSocket = s.into();
    let local = std.local_addr().map_err(err)?;
    let socket = UdpSocket::from_std(std).map_err(err)?;
    Ok(BoundSocket {
        socket,
        addr: local,
    })
}

/// Bind one socket per address, all on one port. Port 0: the first address
/// picks a free port and the others must get the same one; if one of them
/// has it taken, start over with another port (a few times).
pub(crate) fn bind_all(addrs: &[IpAddr], port: u16) -> Result<Vec<BoundSocket>, SimError> {
    const ATTEMPTS: usize = 16;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some(&first) = addrs.first() else {
            return Ok(Vec::new());
        };
        let s0 = bind_udp(SocketAddr::new(first, port))?;
        let chosen = s0.addr.port();
        let mut out = vec![s0];
        let mut failed = None;
        for &a in &addrs[1..] {
            match bind_udp(SocketAddr::new(a, chosen)) {
                Ok(s) => out.push(s),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => return Ok(out),
            // A fixed port taken is final; a chosen one may be retried.
            Some(e) if port != 0 => return Err(e),
            Some(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(SimError::NoAddresses))
}

/// Build the responder of each address.
pub(crate) fn devices(
    opts: &SnmpOptions,
    sockets: &[BoundSocket],
) -> Result<Vec<SnmpDevice>, SimError> {
    sockets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ip = s.addr.ip();
            let profile = opts.profile_for(i, ip)?;
            let fault = opts.fault_for(ip);
            let inst = profile.instantiate(ip, fault)?;
            let identity = inst.identity.clone();
            let responder =
                Responder::new(inst, opts.community.as_bytes(), fault, opts.max_response);
            Ok(SnmpDevice {
                addr: s.addr,
                community: opts.community.clone(),
                identity,
                fault,
                stats: Arc::new(SnmpStats::default()),
                responder: Arc::new(responder),
            })
        })
        .collect()
}

/// Serve `device` on `socket` until cancelled.
pub(crate) fn spawn_device(
    device: &SnmpDevice,
    socket: BoundSocket,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let responder = device.responder.clone();
    let stats = device.stats.clone();
    let span = tracing::info_span!("snmp", addr = %socket.addr);
    tracker.spawn(serve(socket.socket, Some(responder), stats, cancel).instrument(span));
}

/// The black hole's sockets: bound now, so that an error leaves nothing
/// running; [`spawn_black_hole`] serves them.
pub(crate) fn bind_black_hole(hole: &BlackHole, port: u16) -> Result<Vec<BoundSocket>, SimError> {
    match hole {
        BlackHole::Wildcard => Ok(vec![bind_udp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        ))?]),
        BlackHole::Addresses(a) => a
            .iter()
            .map(|&ip| bind_udp(SocketAddr::new(ip, port)))
            .collect(),
    }
}

pub(crate) fn spawn_black_hole(
    sockets: Vec<BoundSocket>,
    stats: Arc<SnmpStats>,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    for s in sockets {
        let span = tracing::info_span!("snmp_black_hole", addr = %s.addr);
        tracker.spawn(serve(s.socket, None, stats.clone(), cancel.clone()).instrument(span));
    }
}

/// Receive until cancelled; answer when there is a responder. A datagram
/// that gets no answer (malformed, wrong community, no device) is dropped.
async fn serve(
    socket: UdpSocket,
    responder: Option<Arc<Responder>>,
    stats: Arc<SnmpStats>,
    cancel: CancellationToken,
) {
    // The largest UDP payload: a longer request is cut by the kernel and
    // then fails to decode, which is the right outcome.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux
                    // (ECONNREFUSED): nothing to do but go on.
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(r) = &responder else { continue };
        let Some(answer) = r.respond(&buf[..n]) else {
            continue;
        };
        match socket.send_to(&answer, peer).await {
            Ok(_) => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, %peer, "send failed"),
        }
    }
}

impl BoundSocket {
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) fn into_socket(self) -> UdpSocket {
        self.socket
    }
}
