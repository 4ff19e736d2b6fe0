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
//! at once when the preferred answer arrives (v2c with the first community,
//! and the v3 engine too when v3 users are configured), otherwise when its
//! attempt's deadline passes (no further attempts once anything answered). The caller walks responders meanwhile.
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
    // Nothing better can come: final now, so its walk starts now. With v3
    // users, both the engine and the community must have answered: an
    // engine that refuses every user falls back to the community, as
    // `scan_one` does, and must not be reported before its answer is in.
    if st.best == Some(0) && (st.v3 || !opts.v3) {
        finish(i, st, stats);
    }
}

#[cfg(test)]
mod tests {
    //! Fake agents on 127.41.1.x / 127.41.2.x (std sockets in threads),
    //! speaking through rasn like the simulator.

    use std::net::UdpSocket as StdSocket;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use rasn_smi::v2::{ObjectSyntax, SimpleSyntax};

    use super::*;

    #[derive(Clone, Copy)]
    enum Behave {
        /// Answer these versions (0 = v1, 1 = v2c) for this community,
        /// after ignoring the first `drop_first` datagrams.
        Agent {
            versions: &'static [i64],
            community: &'static [u8],
            drop_first: usize,
            /// Before each real answer: garbage, an answer with an unknown
            /// id, and one with the id of the address `spoof` probes
            /// further on (a silent one); a stray socket also sends the
            /// right id from a wrong source.
            spoof: Option<i32>,
        },
        /// An SNMPv3 engine; `also_v2c`: and a v2c agent for `public`.
        V3Engine {
            also_v2c: bool,
        },
        Silent,
    }

    struct Fake {
        port: u16,
        received: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn oid(c: &[u32]) -> ObjectIdentifier {
        ObjectIdentifier::new(c.to_vec()).expect("oid")
    }

    fn response(version: i64, community: &[u8], id: i32) -> Vec<u8> {
        rasn::ber::encode(&v2c::Message {
            version: Integer::from(version),
            community: OctetString::from(community.to_vec()),
            data: v2::Pdus::Response(v2::Response(v2::Pdu {
                request_id: id,
                error_status: 0,
                error_index: 0,
                variable_bindings: vec![v2::VarBind {
                    name: oid(&SYS_OBJECT_ID),
                    value: v2::VarBindValue::Value(ObjectSyntax::Simple(SimpleSyntax::ObjectId(
                        oid(&[1, 3, 6, 1, 4, 1, 11]),
                    ))),
                }],
            })),
        })
        .expect("encode")
    }

    fn report(req: &v3::Message) -> Vec<u8> {
        let mut msg = v3::Message {
            version: Integer::from(3),
            global_data: v3::HeaderData {
                message_id: req.global_data.message_id.clone(),
                max_size: Integer::from(1472),
                flags: OctetString::from(vec![0]),
                security_model: Integer::from(3),
            },
            security_parameters: OctetString::default(),
            scoped_data: v3::ScopedPduData::CleartextPdu(v3::ScopedPdu {
                engine_id: OctetString::from(b"\x80\x00\x1f\x88\x04fake".to_vec()),
                name: OctetString::default(),
                data: v2::Pdus::Report(v2::Report(v2::Pdu {
                    request_id: 0,
                    error_status: 0,
                    error_index: 0,
                    variable_bindings: Vec::new(),
                })),
            }),
        };
        let usm = v3::USMSecurityParameters {
            authoritative_engine_id: OctetString::from(b"\x80\x00\x1f\x88\x04fake".to_vec()),
            authoritative_engine_boots: Integer::from(1),
            authoritative_engine_time: Integer::from(100),
            user_name: OctetString::default(),
            authentication_parameters: OctetString::default(),
            privacy_parameters: OctetString::default(),
        };
        if let Err(e) = msg.encode_security_parameters(rasn::Codec::Ber, &usm) {
            panic!("usm: {e}");
        }
        rasn::ber::encode(&msg).expect("encode")
    }

    fn fake(ip: &str, port: u16, behave: Behave) -> Fake {
        let ip: IpAddr = ip.parse().expect("ip");
        let sock = StdSocket::bind(SocketAddr::new(ip, port)).expect("bind fake agent");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let stray = StdSocket::bind("127.41.2.99:0").expect("bind stray");
        let received = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let seen = r.fetch_add(1, Ordering::Relaxed);
                let d = &buf[..n];
                match behave {
                    Behave::Silent => {}
                    Behave::V3Engine { also_v2c } => {
                        if let Ok(m) = rasn::ber::decode::<v3::Message>(d) {
                            let _ = sock.send_to(&report(&m), peer);
                        } else if let Ok(m) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(d) {
                            if let (true, v2::Pdus::GetRequest(g)) = (also_v2c, &m.data) {
                                if m.version == Integer::from(1)
                                    && m.community.as_ref() == b"public"
                                {
                                    let _ =
                                        sock.send_to(&response(1, b"public", g.0.request_id), peer);
                                }
                            }
                        }
                    }
                    Behave::Agent {
                        versions,
                        community,
                        drop_first,
                        spoof,
                    } => {
                        let Ok(m) = rasn::ber::decode::<v2c::Message<v2::Pdus>>(d) else {
                            continue;
                        };
                        let v2::Pdus::GetRequest(g) = &m.data else {
                            continue;
                        };
                        let version = i64::try_from(&m.version).unwrap_or(-1);
                        let id = g.0.request_id;
                        if seen < drop_first
                            || !versions.contains(&version)
                            || m.community.as_ref() != community
                        {
                            continue;
                        }
                        if let Some(offset) = spoof {
                            let _ = sock.send_to(b"\x30\x03\x02\x01", peer);
                            let _ =
                                sock.send_to(&response(version, community, id + 1_000_000), peer);
                            let _ = sock.send_to(&response(version, community, id + offset), peer);
                            let _ = stray.send_to(&response(version, community, id), peer);
                        }
                        let _ = sock.send_to(&response(version, community, id), peer);
                    }
                }
            }
        });
        Fake {
            port,
            received,
            stop,
        }
    }

    fn range(prefix: &str, from: u8, to: u8) -> Vec<IpAddr> {
        (from..=to)
            .map(|i| format!("{prefix}.{i}").parse().expect("ip"))
            .collect()
    }

    async fn run(addrs: &[IpAddr], opts: &DiscoverOptions) -> (Vec<Discovered>, DiscoverStats) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stats = discover(addrs, opts, tx).await.expect("discovery runs");
        let mut out = Vec::new();
        while let Some(d) = rx.recv().await {
            out.push(d);
        }
        (out, stats)
    }

    fn answer_of(found: &[Discovered], ip: &str) -> Option<Answer> {
        let ip: IpAddr = ip.parse().expect("ip");
        let hits: Vec<_> = found.iter().filter(|d| d.ip == ip).collect();
        assert_eq!(hits.len(), 1, "{ip} reported once");
        hits[0].answer.clone()
    }

    #[tokio::test]
    async fn finds_responders_and_ignores_strays() {
        // communities ["public", "other"] + v3: 5 probes per address, so
        // id + 3 × 5 is the same probe to the address 3 further on (.4).
        let agent = |community, versions, spoof| Behave::Agent {
            versions,
            community,
            drop_first: 0,
            spoof,
        };
        let a = fake("127.41.1.1", 0, agent(b"public", &[0, 1], Some(15)));
        let port = a.port;
        let _v1 = fake("127.41.1.2", port, agent(b"public", &[0], None));
        let _v3 = fake("127.41.1.3", port, Behave::V3Engine { also_v2c: false });
        let _both = fake("127.41.1.6", port, Behave::V3Engine { also_v2c: true });
        let _other = fake("127.41.1.5", port, agent(b"other", &[0, 1], None));
        let opts = DiscoverOptions {
            communities: vec!["public".into(), "other".into()],
            v3: true,
            port,
            timeout: Duration::from_millis(200),
            retries: 1,
            rate: SEND_RATE,
        };
        let addrs = range("127.41.1", 1, 8);
        let (found, stats) = run(&addrs, &opts).await;
        assert_eq!(found.len(), addrs.len());
        let v2c = |c| Some((CommunityVersion::V2c, c));
        assert_eq!(
            answer_of(&found, "127.41.1.1"),
            Some(Answer {
                community: v2c(0),
                v3: false
            })
        );
        assert_eq!(
            answer_of(&found, "127.41.1.2"),
            Some(Answer {
                community: Some((CommunityVersion::V1, 0)),
                v3: false
            }),
            "a v1-only device"
        );
        assert_eq!(
            answer_of(&found, "127.41.1.3"),
            Some(Answer {
                community: None,
                v3: true
            }),
            "an SNMPv3 engine"
        );
        // Spoofed answers with .4's ids came from .1 and from a stray.
        assert_eq!(answer_of(&found, "127.41.1.4"), None);
        assert_eq!(
            answer_of(&found, "127.41.1.5"),
            Some(Answer {
                community: v2c(1),
                v3: false
            }),
            "the second community"
        );
        assert_eq!(
            answer_of(&found, "127.41.1.6"),
            Some(Answer {
                community: v2c(0),
                v3: true
            }),
            "an engine that also takes a community"
        );
        for silent in ["127.41.1.7", "127.41.1.8"] {
            assert_eq!(answer_of(&found, silent), None);
        }
        assert_eq!(stats.responders, 5);
        // Per answer of .1 (v2c, v1): garbage, unknown id, .4's id, stray.
        assert!(stats.ignored >= 8, "{stats:?}");
    }

    #[tokio::test]
    async fn silence_costs_the_timeout_once_and_retries_only_the_silent() {
        let a = fake(
            "127.41.2.1",
            0,
            Behave::Agent {
                versions: &[0, 1],
                community: b"public",
                drop_first: 0,
                spoof: None,
            },
        );
        let port = a.port;
        // Loses the first attempt's two datagrams: found on a retry.
        let late = fake(
            "127.41.2.2",
            port,
            Behave::Agent {
                versions: &[1],
                community: b"public",
                drop_first: 2,
                spoof: None,
            },
        );
        let silent = fake("127.41.2.3", port, Behave::Silent);
        let timeout = Duration::from_millis(150);
        let opts = DiscoverOptions {
            communities: vec!["public".into()],
            v3: false,
            port,
            timeout,
            retries: 2,
            rate: SEND_RATE,
        };
        // 60 addresses, 58 of them silent (nothing bound but .3).
        let addrs = range("127.41.2", 1, 60);
        let started = std::time::Instant::now();
        let (found, stats) = run(&addrs, &opts).await;
        let took = started.elapsed();
        // Address by address this would be 58 × 2 × 3 × 150 ms; here it is
        // three timeouts for the whole sweep, plus sending.
        assert!(took >= timeout * 3, "{took:?}");
        assert!(took < timeout * 3 + Duration::from_millis(600), "{took:?}");
        assert_eq!(found.len(), 60);
        assert_eq!(stats.responders, 2);
        assert!(answer_of(&found, "127.41.2.1").is_some());
        assert_eq!(
            answer_of(&found, "127.41.2.2").and_then(|a| a.community),
            Some((CommunityVersion::V2c, 0))
        );
        // Give the fake threads a moment to count.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.received.load(Ordering::Relaxed), 2, "answered: no resend");
        assert_eq!(late.received.load(Ordering::Relaxed), 4, "two attempts");
        assert_eq!(
            silent.received.load(Ordering::Relaxed),
            6,
            "3 attempts × (v2c, v1)"
        );
        assert_eq!(stats.sent, 2 + 4 + 58 * 6);
    }

    #[test]
    fn ids_map_back_and_reject_others() {
        let ids = Ids::new(10, 3).expect("ids");
        assert_eq!(ids.lookup(i64::from(ids.id(7, 2))), Some((7, 2)));
        assert_eq!(ids.lookup(i64::from(ids.id(0, 0))), Some((0, 0)));
        assert_eq!(ids.lookup(i64::from(ids.id(9, 2)) + 1), None);
        assert_eq!(ids.lookup(i64::from(ids.base) - 1), None);
        assert!(parse(b"\x30\x03\x02\x01").is_none());
        assert!(parse(&[]).is_none());
    }
}
