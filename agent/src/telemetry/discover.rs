//! Discovery: which addresses answer SNMP at all, before anything is walked.
//!
//! The per-address probe (`scan::scan_one`) opens an `snmp2` session per
//! attempt and waits out `timeout × attempts` for every version and
//! community in turn: on a LAN, where dead addresses are silent, that is
//! seconds per address, and raising the concurrency costs a 128 KiB session
//! each. Here ONE UDP socket per address family carries a GET of
//! sysObjectID.0 for every community (v2c and v1) to every address — and,
//! with v3 users configured, an SNMPv3 engine-discovery probe — paced by a
//! token bucket. Answers are matched by request id (msgID for v3) *and*
//! source address; anything else (strays, garbage, wrong ids, another
//! community) is ignored. After `timeout` the addresses that gave no answer
//! at all are probed again, `retries` times; the deadlines run per address,
//! so resends interleave with first sends and a silent address costs
//! `timeout × attempts` of the whole sweep, not of its own slot.
//!
//! Each address is reported on the channel as soon as its result is final:
//! at once when the preferred answer arrives (v2c with the first community;
//! or the v3 engine, when v3 users are configured), otherwise when its last
//! attempt's deadline passes. The caller walks responders meanwhile.
//!
//! BER comes from `rasn-snmp` (as in the simulator), never by hand.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v1, v2, v2c, v3};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::AgentError;

/// Default send rate, datagrams per second. A few thousand: fast enough
/// for a /20 in about two seconds, slow enough that a site's switches and
/// the host's ARP/neighbour table (default gc_thresh3 = 1024 entries, each
/// unresolved one held for about three seconds) are not flooded.
pub const SEND_RATE: u32 = 8000;
/// Datagrams the bucket may send back to back.
const BURST: f64 = 64.0;
/// sysObjectID.0: every agent has it; the cheapest question.
const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];
/// Largest datagram we accept; answers to one GET are small.
const RECV_BUF: usize = 65_536;

/// v1 or v2c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommunityVersion {
    V2c,
    V1,
}

/// One question sent to every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// A GET of sysObjectID.0 with the community at this index.
    Community(CommunityVersion, usize),
    /// SNMPv3 engine discovery (RFC 3414 section 4).
    V3,
}

/// What answered at one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The first (version, community index) in preference order that
    /// answered: v2c over v1, communities in configured order.
    pub community: Option<(CommunityVersion, usize)>,
    /// An SNMPv3 engine answered the discovery probe.
    pub v3: bool,
}

/// The final result for one address; `answer: None` means silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub ip: IpAddr,
    pub answer: Option<Answer>,
}

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    pub communities: Vec<String>,
    /// Also send the SNMPv3 engine-discovery probe.
    pub v3: bool,
    pub port: u16,
    pub timeout: Duration,
    pub retries: u32,
    /// Datagrams per second (token bucket).
    pub rate: u32,
}

/// Counters of one discovery run, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverStats {
    pub sent: u64,
    pub responders: usize,
    /// Datagrams received that matched no outstanding probe.
    pub ignored: u64,
}

#[derive(Debug, Default)]
struct AddrState {
    attempts: u32,
    /// Best answering probe so far (index into the probe list, lower wins).
    best: Option<usize>,
    v3: bool,
    done: bool,
}

/// Paces sends: `rate` tokens a second, at most [`BURST`] saved up.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Bucket {
            rate: f64::from(rate.max(1)),
            tokens: BURST,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(BURST);
        self.at = now;
    }

    /// When `n` tokens will be there.
    fn ready_at(&self, n: f64) -> Instant {
        let missing = (n - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / self.rate)
    }
}

/// Sockets by address family, bound to the wildcard address.
struct Sockets {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Sockets {
    async fn bind(addrs: &[IpAddr]) -> Result<Self, AgentError> {
        let bind = |ip: IpAddr| async move {
            UdpSocket::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|e| AgentError::Discovery(format!("bind a UDP socket: {e}")))
        };
        let v4 = match addrs.iter().any(IpAddr::is_ipv4) {
            true => Some(bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await?),
            false => None,
        };
        let v6 = match addrs.iter().any(IpAddr::is_ipv6) {
            true => Some(bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).await?),
            false => None,
        };
        Ok(Sockets { v4, v6 })
    }

    fn for_ip(&self, ip: IpAddr) -> Option<&UdpSocket> {
        match ip {
            IpAddr::V4(_) => self.v4.as_ref(),
            IpAddr::V6(_) => self.v6.as_ref(),
        }
    }
}

async fn recv(sock: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Request ids: `base + address index × probes + probe index`, so an
/// answer names its address and probe without a table.
struct Ids {
    base: u32,
    probes: usize,
    total: u64,
}

impl Ids {
    fn new(addrs: usize, probes: usize) -> Result<Self, AgentError> {
        let total = addrs as u64 * probes as u64;
        // Ids must stay positive i32 (v3 msgID: 0..2^31-1).
        if total >= 1 << 30 {
            return Err(AgentError::Discovery(format!(
                "too many probes ({total}): fewer communities or addresses"
            )));
        }
        // Random base: a late answer to an earlier scan rarely matches.
        let base = 1 + rand::random::<u32>() % (1 << 30);
        Ok(Ids {
            base,
            probes,
            total,
        })
    }

    fn id(&self, addr: usize, probe: usize) -> i32 {
        // Below 2^31 by construction (base < 2^30 + 1, total < 2^30).
        (self.base as u64 + (addr * self.probes + probe) as u64) as i32
    }

    /// (address index, probe index) of an id we sent, if it is one.
    fn lookup(&self, id: i64) -> Option<(usize, usize)> {
        let k = u64::try_from(id.checked_sub(i64::from(self.base))?).ok()?;
        if k >= self.total {
            return None;
        }
        let k = k as usize;
        Some((k / self.probes, k % self.probes))
    }
}

fn probes(communities: usize, v3: bool) -> Vec<Probe> {
    let mut p = Vec::with_capacity(communities * 2 + 1);
    // Preference order: v2c before v1 for each community, communities in
    // configured order; v3 last (its answer is a separate flag).
    for c in 0..communities {
        p.push(Probe::Community(CommunityVersion::V2c, c));
        p.push(Probe::Community(CommunityVersion::V1, c));
    }
    if v3 {
        p.push(Probe::V3);
    }
    p
}

fn encode_probe(probe: Probe, id: i32, communities: &[String]) -> Result<Vec<u8>, AgentError> {
    let enc = |e: rasn::error::EncodeError| AgentError::Discovery(format!("encode a probe: {e}"));
    match probe {
        Probe::Community(version, c) => {
            let oid = ObjectIdentifier::new(SYS_OBJECT_ID.to_vec())
                .ok_or_else(|| AgentError::Discovery("bad sysObjectID".into()))?;
            // A v1 GetRequest has the same shape and tag as v2's: only the
            // version field differs (as the simulator decodes it).
            rasn::ber::encode(&v2c::Message {
                version: Integer::from(match version {
                    CommunityVersion::V1 => 0,
                    CommunityVersion::V2c => 1,
                }),
                community: OctetString::from(communities[c].as_bytes().to_vec()),
                data: v2::Pdus::GetRequest(v2::GetRequest(v2::Pdu {
                    request_id: id,
                    error_status: 0,
                    error_index: 0,
                    variable_bindings: vec![v2::VarBind {
                        name: oid,
                        value: v2::VarBindValue::Unspecified,
                    }],
                })),
            })
            .map_err(enc)
        }
        Probe::V3 => {
            // RFC 3414 section 4: noAuthNoPriv, reportable, empty user and
            // engine id, no varbinds; any engine answers with a Report
            // (usmStatsUnknownEngineIDs) carrying our msgID.
            let mut msg = v3::Message {
                version: Integer::from(3),
                global_data: v3::HeaderData {
                    message_id: Integer::from(id),
                    max_size: Integer::from(65_507),
                    flags: OctetString::from(vec![0x04]),
                    security_model: Integer::from(3),
                },
                security_parameters: OctetString::default(),
                scoped_data: v3::ScopedPduData::CleartextPdu(v3::ScopedPdu {
                    engine_id: OctetString::default(),
                    name: OctetString::default(),
                    data: v2::Pdus::GetRequest(v2::GetRequest(v2::Pdu {
                        request_id: id,
                        error_status: 0,
                        error_index: 0,
                        variable_bindings: Vec::new(),
                    })),
                }),
            };
            let usm = v3::USMSecurityParameters {
                authoritative_engine_id: OctetString::default(),
                authoritative_engine_boots: Integer::from(0),
                authoritative_engine_time: Integer::from(0),
                user_name: OctetString::default(),
                authentication_parameters: OctetString::default(),
                privacy_parameters: OctetString::default(),
            };
            msg.encode_security_parameters(rasn::Codec::Ber, &usm)
                .map_err(|e| AgentError::Discovery(format!("encode a v3 probe: {e}")))?;
            rasn::ber::encode(&msg).map_err(enc)
        }
    }
}

/// What a datagram says, if it is an answer at all: (id, version, community,
/// counts as an answer).
struct Parsed {
    id: i64,
    /// 0 = v1, 1 = v2c, 3 = v3.
    version: i64,
    community: Vec<u8>,
    live: bool,
}

fn parse(datagram: &[u8]) -> Option<Parsed> {
    if let Ok(m) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(datagram) {
        let v2::Pdus::Response(r) = &m.data else {
            return None;
        };
        let p = &r.0;
        // As `snmp::answered`: an error status (v1 noSuchName, say) is an
        // agent that took the community; a v2c answer of only noSuch* or
        // endOfMibView is not counted, as the per-address probe does not.
        let live = p.error_status != 0
            || p.variable_bindings
                .iter()
                .any(|vb| matches!(vb.value, v2::VarBindValue::Value(_)));
        return Some(Parsed {
            id: i64::from(p.request_id),
            version: i64::try_from(&m.version).ok()?,
            community: m.community.to_vec(),
            live,
        });
    }
    // A v1 answer with a value v2's syntax does not take.
    if let Ok(m) = rasn::ber::decode::<v1::Message<v1::Pdus>>(datagram) {
        let v1::Pdus::GetResponse(r) = &m.data else {
            return None;
        };
        return Some(Parsed {
            id: i64::try_from(&r.0.request_id).ok()?,
            version: i64::try_from(&m.version).ok()?,
            community: m.community.to_vec(),
            live: true,
        });
    }
    let m = rasn::ber::decode::<v3::Message>(datagram).ok()?;
    Some(Parsed {
        id: i64::try_from(&m.global_data.message_id).ok()?,
        version: i64::try_from(&m.version).ok()?,
        community: Vec::new(),
        live: true,
    })
}

/// Probe every address; send each final result on `out` as soon as it is
/// known (silent addresses too). Returns when every address is final.
pub async fn discover(
    addrs: &[IpAddr],
    opts: &DiscoverOptions,
    out: mpsc::UnboundedSender<Discovered>,
) -> Result<DiscoverStats, AgentError> {
    let probes = probes(opts.communities.len(), opts.v3);
    let mut stats = DiscoverStats::default();
    if addrs.is_empty() || probes.is_empty() {
        for ip in addrs {
            let _ = out.send(Discovered {
                ip: *ip,
                answer: None,
            });
        }
        return Ok(stats);
    }
    let ids = Ids::new(addrs.len(), probes.len())?;
    let socks = Sockets::bind(addrs).await?;
    let attempts = opts.retries.saturating_add(1);
    let mut state: Vec<AddrState> = addrs.iter().map(|_| AddrState::default()).collect();
    // To send, in order; and sent, by deadline (deadlines grow with send
    // time, the timeout being one for all: a queue is enough).
    let mut queue: VecDeque<usize> = (0..addrs.len()).collect();
    let mut inflight: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut bucket = Bucket::new(opts.rate);
    let mut buf = vec![0u8; RECV_BUF];
    let mut buf6 = vec![0u8; if socks.v6.is_some() { RECV_BUF } else { 0 }];
    let per_addr = probes.len() as f64;
    let mut pending = addrs.len();

    let finish = |i: usize, st: &mut AddrState, pending: &mut usize, stats: &mut DiscoverStats| {
        st.done = true;
        *pending -= 1;
        let answer = (st.best.is_some() || st.v3).then(|| Answer {
            community: st.best.and_then(|b| match probes[b] {
                Probe::Community(v, c) => Some((v, c)),
                Probe::V3 => None,
            }),
            v3: st.v3,
        });
        if answer.is_some() {
            stats.responders += 1;
        }
        // The receiver gone means the scan was dropped: nothing to do.
        let _ = out.send(Discovered {
            ip: addrs[i],
            answer,
        });
    };

    while pending > 0 {
        let now = Instant::now();
        // Deadlines passed: final, or once more.
        while let Some(&(deadline, i)) = inflight.front() {
            if deadline > now {
                break;
            }
            inflight.pop_front();
            let st = &mut state[i];
            if st.done {
                continue;
            }
            if st.best.is_some() || st.v3 || st.attempts >= attempts {
                finish(i, st, &mut pending, &mut stats);
            } else {
                queue.push_back(i);
            }
        }
        // Send what the bucket allows, one address (all its probes) at once.
        bucket.refill(now);
        while bucket.tokens >= per_addr.min(BURST) {
            let Some(i) = queue.pop_front() else { break };
            let ip = addrs[i];
            let target = SocketAddr::new(ip, opts.port);
            if let Some(sock) = socks.for_ip(ip) {
                for (p, probe) in probes.iter().enumerate() {
                    let msg = encode_probe(*probe, ids.id(i, p), &opts.communities)?;
                    // A send error (no route, a full queue) is an attempt
                    // without answer: the retry or the timeout covers it.
                    if let Err(e) = sock.send_to(&msg, target).await {
                        tracing::debug!(%ip, "discovery send: {e}");
                    }
                    stats.sent += 1;
                }
            }
            bucket.tokens -= per_addr;
            state[i].attempts += 1;
            inflight.push_back((Instant::now() + opts.timeout, i));
        }
        if pending == 0 {
            break;
        }
        let next_deadline = inflight.front().map(|(d, _)| *d);
        let next_send = (!queue.is_empty()).then(|| bucket.ready_at(per_addr.min(BURST)));
        let wake = match (next_deadline, next_send) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // Nothing in flight, nothing to send, yet not all final:
            // cannot happen; do not spin if it does.
            (None, None) => break,
        };
        // Answers first: the socket's receive buffer must not overflow
        // while we send.
        let got = tokio::select! {
            biased;
            r = recv(&socks.v4, &mut buf) => Some((r, &buf)),
            r = recv(&socks.v6, &mut buf6) => Some((r, &buf6)),
            _ = tokio::time::sleep_until(wake) => None,
        };
        if let Some((r, b)) = got {
            handle(
                r,
                b,
                addrs,
                &ids,
                &probes,
                opts,
                &mut state,
                &mut stats,
                |i, st, stats| finish(i, st, &mut pending, stats),
            );
        }
    }
    Ok(stats)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    r: std::io::Result<(usize, SocketAddr)>,
    buf: &[u8],
    addrs: &[IpAddr],
    ids: &Ids,
    probes: &[Probe],
    opts: &DiscoverOptions,
    state: &mut [AddrState],
    stats: &mut DiscoverStats,
    mut finish: impl FnMut(usize, &mut AddrState, &mut DiscoverStats),
) {
    let (n, src) = match r {
        Ok(x) => x,
        Err(e) => {
            // ICMP errors surface here on some systems: not an answer.
            tracing::debug!("discovery recv: {e}");
            return;
        }
    };
    let Some(data) = buf.get(..n) else { return };
    let matched = parse(data).and_then(|p| {
        let (i, probe) = ids.lookup(p.id)?;
        // From the address and port we asked, in the version we asked.
        if addrs[i] != src.ip() || src.port() != opts.port || state[i].done {
            return None;
        }
        let ok = match probes[probe] {
            Probe::Community(v, c) => {
                let version = match v {
                    CommunityVersion::V2c => 1,
                    CommunityVersion::V1 => 0,
                };
                p.version == version && p.community == opts.communities[c].as_bytes() && p.live
            }
            Probe::V3 => p.version == 3,
        };
        ok.then_some((i, probe))
    });
    let Some((i, probe)) = matched else {
        stats.ignored += 1;
        return;
    };
    let st = &mut state[i];
    match probes[probe] {
        Probe::V3 => st.v3 = true,
        Probe::Community(..) => {
            st.best = Some(st.best.map_or(probe, |b| b.min(probe)));
        }
    }
    // Nothing better can come: final now, so its walk starts now.
    let v3_wanted = opts.v3;
    if (st.v3 && v3_wanted) || (!v3_wanted && st.best == Some(0)) {
        finish(i, st, stats);
    }
}
