//! A small SNMP v1/v2c/v3 client over `snmp2` for the collector: probe,
//! then bounded subtree walks into a [`Walk`].
//!
//! `snmp2` is built with `heap_buffers`: its two 64 KiB buffers per session
//! would otherwise sit in every future and stack frame that holds one.
//! It has no timeout, no retry and no walk. Every call here runs under a
//! timeout; every failed attempt is followed by a fresh session (a fresh UDP
//! socket), so a late answer to an abandoned attempt can never be taken for
//! the next one. A response whose request id does not match counts as a
//! failed attempt.
//!
//! v1/v2c open a session per attempt. v3 first discovers the agent's engine
//! (id, boots, time; RFC 3414 section 4) and derives the localized keys,
//! which costs a round trip and about 2 MB of hashing, so its session is
//! kept while requests succeed and dropped on the first failure.
//! `snmp2` reports every unauthenticated Report PDU (unknown user, wrong
//! digest, unsupported level, decryption error) as one `NotAuthenticated`,
//! and agents drop requests they cannot decrypt; [`Client`] tells these
//! apart with one request at a lower level (see `diagnose`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use snmp2::AsyncSession;

use super::v3::{SecurityLevel, V3Failure, V3Security};
use dwa_proto::snmprec::{Oid, Value, Walk};

/// SNMP protocol version of a session; v3 carries its USM credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
    V3(V3Security),
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum SnmpError {
    #[error("no answer within {0:?} after {1} attempt(s)")]
    Timeout(Duration, u32),
    #[error("snmp: {0}")]
    Protocol(String),
    /// An SNMPv3 engine answered but did not accept these credentials.
    #[error("{message}")]
    V3 { failure: V3Failure, message: String },
}

/// One varbind copied out of a response PDU.
#[derive(Debug, Clone, PartialEq)]
pub enum Vb {
    Value(Value),
    EndOfMibView,
    NoSuchObject,
    NoSuchInstance,
    /// A type the collector has no use for (Opaque, constructed...).
    Unsupported,
}

/// A response, owned.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub error_status: u32,
    pub varbinds: Vec<(Vec<u32>, Vb)>,
}

enum Op<'a> {
    Get(&'a [&'a [u32]]),
    GetNext(&'a [u32]),
    GetBulk(&'a [u32], u32),
}

/// Subtrees the decoder reads: standard MIBs and the vendor OIDs it knows.
pub const WALK_ROOTS: &[&[u32]] = &[
    &[1, 3, 6, 1, 2, 1, 1],
    &[1, 3, 6, 1, 2, 1, 2, 2, 1, 3],
    &[1, 3, 6, 1, 2, 1, 2, 2, 1, 6],
    &[1, 3, 6, 1, 2, 1, 4, 20, 1],
    &[1, 3, 6, 1, 2, 1, 25, 3],
    &[1, 3, 6, 1, 2, 1, 43],
    // HP: PML status (serial, firmware), IEEE 1284 device id, page counters.
    &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 1, 1, 7],
    &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 1, 3],
    &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 4, 1, 2],
    // Kyocera counters.
    &[1, 3, 6, 1, 4, 1, 1347, 43, 10, 1, 1, 12],
    &[1, 3, 6, 1, 4, 1, 1347, 42, 3, 1, 1, 1],
    // Ricoh: model and firmware, serial, counter table.
    &[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 1, 1],
    &[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 2, 1, 4],
    &[1, 3, 6, 1, 4, 1, 367, 3, 2, 1, 2, 19, 5, 1],
    // Xerox: device id, counters.
    &[1, 3, 6, 1, 4, 1, 253, 8, 51, 1, 2, 1, 20],
    &[1, 3, 6, 1, 4, 1, 253, 8, 53, 13, 2, 1, 6, 1, 20],
    // Canon: firmware, counters.
    &[1, 3, 6, 1, 4, 1, 1602, 1, 1, 1, 4],
    &[1, 3, 6, 1, 4, 1, 1602, 1, 11, 1, 3, 1, 4],
    // Brother: device id, serial and counter, firmware.
    &[1, 3, 6, 1, 4, 1, 2435, 2, 3, 9, 1, 1, 7],
    &[1, 3, 6, 1, 4, 1, 2435, 2, 3, 9, 4, 2, 1, 5, 5],
    &[1, 3, 6, 1, 4, 1, 2435, 2, 4, 3, 1240, 6, 5],
    // Dell, Konica Minolta firmware.
    &[1, 3, 6, 1, 4, 1, 674, 10898, 100, 1, 1, 1],
    &[1, 3, 6, 1, 4, 1, 18334, 1, 1, 1, 1, 6, 1],
];

const SYS_DESCR: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 1, 0];
const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];
/// error-status authorizationError (RFC 3416): VACM refused the request.
const AUTHORIZATION_ERROR: u32 = 16;
/// GETBULK max-repetitions: small enough for one UDP datagram of printer data.
const MAX_REPETITIONS: u32 = 20;

static NEXT_REQ_ID: AtomicI32 = AtomicI32::new(0);

fn next_req_id() -> i32 {
    let mut id = NEXT_REQ_ID.fetch_add(1000, Ordering::Relaxed);
    if id == 0 {
        // Seed once from the clock, so two scans do not start alike.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        id = (nanos & 0x3fff_ffff) as i32 + 1;
        NEXT_REQ_ID.store(id.wrapping_add(1000), Ordering::Relaxed);
    }
    id & 0x3fff_ffff
}

/// One agent, one community (v1/v2c) or user (v3), one version.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// v1/v2c only.
    pub community: Vec<u8>,
    pub version: Version,
    pub timeout: Duration,
    pub retries: u32,
    v3: V3State,
}

/// v3 only: the session whose engine discovery is done, and whether a
/// request with these credentials ever succeeded (later failures are then
/// the network's, not the credentials').
#[derive(Default)]
struct V3State {
    session: Mutex<Option<AsyncSession>>,
    verified: AtomicBool,
}

impl V3State {
    fn take(&self) -> Option<AsyncSession> {
        self.session.lock().ok()?.take()
    }

    fn keep(&self, s: AsyncSession) {
        if let Ok(mut g) = self.session.lock() {
            *g = Some(s);
        }
        self.verified.store(true, Ordering::Relaxed);
    }
}

/// A clone has its own socket: sessions are never shared.
impl Clone for V3State {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for V3State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V3State")
    }
}

/// How an `snmp2` v3 error reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V3Class {
    /// An unauthenticated Report where an authenticated answer was due.
    Unauthenticated,
    /// A Report PDU that `snmp2` parsed (noAuthNoPriv) and refused as the
    /// wrong message type.
    Report,
    /// Engine boots/time outside the window.
    TimeWindow,
    Other,
}

fn classify(e: &snmp2::Error) -> V3Class {
    use snmp2::v3::AuthErrorKind as K;
    match e {
        snmp2::Error::AuthFailure(
            K::NotAuthenticated | K::SignatureMismatch | K::UsernameMismatch,
        ) => V3Class::Unauthenticated,
        snmp2::Error::AuthFailure(
            K::EngineTimeMismatch | K::EngineBootsMismatch | K::EngineBootsNotProvided,
        ) => V3Class::TimeWindow,
        snmp2::Error::AsnWrongType => V3Class::Report,
        _ => V3Class::Other,
    }
}

/// Result of one diagnostic request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trial {
    /// Any Response, error-status included: the agent accepted the message.
    Answered,
    Unauthenticated,
    Report,
    Silent,
    Other,
}

fn to_snmp_oid(oid: &[u32]) -> Result<snmp2::Oid<'static>, SnmpError> {
    let parts: Vec<u64> = oid.iter().map(|&c| u64::from(c)).collect();
    snmp2::Oid::from(&parts).map_err(|e| SnmpError::Protocol(format!("bad OID: {e:?}")))
}

fn from_snmp_oid(oid: &snmp2::Oid<'_>) -> Option<Vec<u32>> {
    oid.iter()?.map(|c| u32::try_from(c).ok()).collect()
}

fn copy_value(v: &snmp2::Value<'_>) -> Vb {
    use snmp2::Value as S;
    match v {
        S::Integer(i) => Vb::Value(Value::Integer(*i)),
        S::OctetString(b) => Vb::Value(Value::OctetString(b.to_vec())),
        S::Null => Vb::Value(Value::Null),
        S::ObjectIdentifier(o) => match from_snmp_oid(o) {
            Some(c) => Vb::Value(Value::ObjectId(Oid(c))),
            None => Vb::Unsupported,
        },
        S::IpAddress(a) => Vb::Value(Value::IpAddress(*a)),
        S::Counter32(c) => Vb::Value(Value::Counter32(*c)),
        S::Unsigned32(c) => Vb::Value(Value::Gauge32(*c)),
        S::Timeticks(t) => Vb::Value(Value::TimeTicks(*t)),
        S::Counter64(c) => Vb::Value(Value::Counter64(*c)),
        S::EndOfMibView => Vb::EndOfMibView,
        S::NoSuchObject => Vb::NoSuchObject,
        S::NoSuchInstance => Vb::NoSuchInstance,
        _ => Vb::Unsupported,
    }
}

fn copy_pdu(pdu: &snmp2::Pdu<'_>) -> Response {
    Response {
        error_status: pdu.error_status,
        varbinds: pdu
            .varbinds
            .clone()
            .filter_map(|(oid, v)| Some((from_snmp_oid(&oid)?, copy_value(&v))))
            .collect(),
    }
}

/// One request on `session`; the PDU is copied out before the session's
/// receive buffer (which it borrows) is used again.
async fn run_op(session: &mut AsyncSession, op: &Op<'_>) -> Result<Response, snmp2::Error> {
    match op {
        Op::Get(oids) => {
            let oids = oids
                .iter()
                .map(|o| to_snmp_oid(o))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| snmp2::Error::ValueOutOfRange)?;
            let refs: Vec<&snmp2::Oid<'_>> = oids.iter().collect();
            session.get_many(&refs).await.map(|p| copy_pdu(&p))
        }
        Op::GetNext(oid) => {
            let oid = to_snmp_oid(oid).map_err(|_| snmp2::Error::ValueOutOfRange)?;
            session.getnext(&oid).await.map(|p| copy_pdu(&p))
        }
        Op::GetBulk(oid, reps) => {
            let oid = to_snmp_oid(oid).map_err(|_| snmp2::Error::ValueOutOfRange)?;
            session
                .getbulk(&[&oid], 0, *reps)
                .await
                .map(|p| copy_pdu(&p))
        }
    }
}

/// A v3 request. `AuthUpdated` means the answer only refreshed the engine
/// boots/time (RFC 3414 section 3.2, step 7): ask once more.
async fn run_v3(session: &mut AsyncSession, op: &Op<'_>) -> Result<Response, snmp2::Error> {
    match run_op(session, op).await {
        Err(snmp2::Error::AuthUpdated) => run_op(session, op).await,
        r => r,
    }
}

impl Client {
    pub fn new(addr: SocketAddr, version: Version, timeout: Duration, retries: u32) -> Self {
        Self {
            addr,
            community: Vec::new(),
            version,
            timeout,
            retries,
            v3: V3State::default(),
        }
    }

    pub fn with_community(mut self, community: &[u8]) -> Self {
        self.community = community.to_vec();
        self
    }

    /// One v1/v2c attempt on a fresh session.
    async fn attempt(&self, op: &Op<'_>) -> Result<Response, snmp2::Error> {
        let community = self.community.as_slice();
        let mut session = match &self.version {
            Version::V1 => AsyncSession::new_v1(self.addr, community, next_req_id()).await,
            Version::V2c => AsyncSession::new_v2c(self.addr, community, next_req_id()).await,
            Version::V3(_) => return Err(snmp2::Error::UnsupportedVersion),
        }
        .map_err(|_| snmp2::Error::Send)?;
        run_op(&mut session, op).await
    }

    /// Up to `retries + 1` attempts, each under the timeout.
    async fn request(&self, op: &Op<'_>) -> Result<Response, SnmpError> {
        if let Version::V3(sec) = &self.version {
            return self.request_v3(sec, op).await;
        }
        let attempts = self.retries.saturating_add(1);
        let mut last = None;
        for _ in 0..attempts {
            match tokio::time::timeout(self.timeout, self.attempt(op)).await {
                Ok(Ok(r)) => return Ok(r),
                // A stale or foreign answer, or a socket error: try again.
                Ok(Err(e)) => last = Some(format!("{e:?}")),
                Err(_) => {}
            }
        }
        Err(match last {
            Some(e) => SnmpError::Protocol(e),
            None => SnmpError::Timeout(self.timeout, attempts),
        })
    }

    /// A fresh v3 session after engine discovery (under the timeout).
    /// `Err(None)`: no answer.
    async fn discover(&self, sec: &V3Security) -> Result<AsyncSession, Option<snmp2::Error>> {
        let mut session = AsyncSession::new_v3(self.addr, next_req_id(), sec.to_snmp2())
            .await
            .map_err(|_| Some(snmp2::Error::Send))?;
        match tokio::time::timeout(self.timeout, session.init()).await {
            Ok(Ok(())) => Ok(session),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    /// Up to `retries + 1` attempts; discovery and the request each under
    /// the timeout. Refused credentials end the attempts at once.
    async fn request_v3(&self, sec: &V3Security, op: &Op<'_>) -> Result<Response, SnmpError> {
        let attempts = self.retries.saturating_add(1);
        let mut engine_answered = false;
        // The last attempt's failure; `None` = no answer.
        let mut last: Option<snmp2::Error> = None;
        for _ in 0..attempts {
            let mut session = match self.v3.take() {
                Some(s) => s,
                None => match self.discover(sec).await {
                    Ok(s) => s,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                },
            };
            engine_answered = true;
            match tokio::time::timeout(self.timeout, run_v3(&mut session, op)).await {
                Ok(Ok(resp)) => {
                    self.v3.keep(session);
                    return Ok(resp);
                }
                Ok(Err(e)) => {
                    let refused =
                        matches!(classify(&e), V3Class::Unauthenticated | V3Class::Report);
                    last = Some(e);
                    if refused {
                        break;
                    }
                }
                Err(_) => last = None,
            }
        }
        if !engine_answered || self.v3.verified.load(Ordering::Relaxed) {
            // No v3 engine here, or credentials already proven: not theirs.
            return Err(match last {
                None => SnmpError::Timeout(self.timeout, attempts),
                Some(e) => SnmpError::Protocol(e.to_string()),
            });
        }
        let failure = match last.as_ref().map(classify) {
            None if sec.level() == SecurityLevel::AuthPriv => self.diagnose(sec, false).await,
            None => V3Failure::NoAnswer,
            Some(V3Class::Unauthenticated) => self.diagnose(sec, true).await,
            // Only a noAuthNoPriv request gets a Report this far; for a
            // known user the agent would have answered (or denied access).
            Some(V3Class::Report) if sec.level() == SecurityLevel::NoAuthNoPriv => {
                V3Failure::UnknownUser
            }
            Some(V3Class::Report) => V3Failure::Other("unexpected Report PDU".into()),
            Some(V3Class::TimeWindow) => V3Failure::NotInTimeWindow,
            Some(V3Class::Other) => {
                V3Failure::Other(last.map(|e| e.to_string()).unwrap_or_default())
            }
        };
        Err(v3_error(sec, failure))
    }

    /// Which part of the credentials was refused: the same user once at
    /// authNoPriv (does the auth key work?) and once at noAuthNoPriv (does
    /// the agent know the user? An unknown one gets a Report, a known one
    /// an answer, usually authorizationError). `refused`: the original
    /// request got an unauthenticated Report rather than silence.
    async fn diagnose(&self, sec: &V3Security, refused: bool) -> V3Failure {
        if sec.level() == SecurityLevel::AuthPriv {
            match self.trial(&sec.downgraded(SecurityLevel::AuthNoPriv)).await {
                Trial::Answered => return V3Failure::Privacy,
                Trial::Unauthenticated => {}
                _ if refused => return V3Failure::AuthRefused,
                _ => return V3Failure::NoAnswer,
            }
        }
        match self
            .trial(&sec.downgraded(SecurityLevel::NoAuthNoPriv))
            .await
        {
            Trial::Report => V3Failure::UnknownUser,
            Trial::Answered => V3Failure::WrongAuth,
            _ => V3Failure::AuthRefused,
        }
    }

    /// One GET of sysObjectID with `sec` on its own session, no retry.
    async fn trial(&self, sec: &V3Security) -> Trial {
        let Ok(mut session) = self.discover(sec).await else {
            return Trial::Silent;
        };
        let op = Op::Get(&[&SYS_OBJECT_ID]);
        match tokio::time::timeout(self.timeout, run_v3(&mut session, &op)).await {
            Ok(Ok(_)) => Trial::Answered,
            Ok(Err(e)) => match classify(&e) {
                V3Class::Unauthenticated => Trial::Unauthenticated,
                V3Class::Report => Trial::Report,
                _ => Trial::Other,
            },
            Err(_) => Trial::Silent,
        }
    }

    /// GET sysObjectID and sysDescr: does this agent answer this community
    /// (or v3 user)?
    pub async fn probe(&self) -> Result<Response, SnmpError> {
        let resp = self
            .request(&Op::Get(&[&SYS_OBJECT_ID, &SYS_DESCR]))
            .await?;
        if let Version::V3(sec) = &self.version {
            if resp.error_status == AUTHORIZATION_ERROR {
                return Err(v3_error(sec, V3Failure::AccessDenied));
            }
        }
        Ok(resp)
    }

    /// Walk one subtree into `walk`, spending at most `*budget` varbinds.
    /// Stops at the subtree's end, on endOfMibView/noSuch*, on an error
    /// status, and on an OID that does not increase (a buggy agent).
    pub async fn walk_subtree(
        &self,
        root: &[u32],
        walk: &mut Walk,
        budget: &mut usize,
    ) -> Result<(), SnmpError> {
        let mut current: Vec<u32> = root.to_vec();
        while *budget > 0 {
            let resp = match self.version {
                Version::V2c | Version::V3(_) => {
                    let reps = MAX_REPETITIONS.min(u32::try_from(*budget).unwrap_or(u32::MAX));
                    self.request(&Op::GetBulk(&current, reps)).await?
                }
                Version::V1 => self.request(&Op::GetNext(&current)).await?,
            };
            if resp.error_status != 0 || resp.varbinds.is_empty() {
                // v1 noSuchName (2) = end of MIB; any other error: stop too.
                return Ok(());
            }
            for (oid, vb) in resp.varbinds {
                if !oid.starts_with(root) || oid.len() <= root.len() || oid <= current {
                    return Ok(());
                }
                let value = match vb {
                    Vb::Value(v) => v,
                    Vb::Unsupported => {
                        current = oid;
                        continue;
                    }
                    Vb::EndOfMibView | Vb::NoSuchObject | Vb::NoSuchInstance => return Ok(()),
                };
                walk.insert(Oid(oid.clone()), value);
                current = oid;
                *budget -= 1;
                if *budget == 0 {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Walk every subtree in `roots` within one budget. A root whose
    /// request fails is recorded and the next root is tried: a buggy
    /// table (broken BER, a wrong request id) should not hide the rest of
    /// the device. A timeout ends the walk: the device is gone, and every
    /// further root would cost another `timeout × attempts`.
    pub async fn walk_all(&self, roots: &[&[u32]], max_varbinds: usize) -> WalkRun {
        let mut run = WalkRun::default();
        let mut budget = max_varbinds;
        for root in roots {
            if budget == 0 {
                break;
            }
            if let Err(e) = self.walk_subtree(root, &mut run.walk, &mut budget).await {
                let gone = matches!(e, SnmpError::Timeout(..));
                run.failures.push((Oid(root.to_vec()), e));
                if gone {
                    break;
                }
            }
        }
        // The budget spent: the device had at least this much to say.
        run.exhausted = budget == 0 && max_varbinds > 0;
        run
    }

    /// [`Client::walk_all`], reduced to the values and the first failure.
    pub async fn walk(&self, roots: &[&[u32]], max_varbinds: usize) -> (Walk, Option<SnmpError>) {
        let run = self.walk_all(roots, max_varbinds).await;
        (run.walk, run.failures.into_iter().next().map(|(_, e)| e))
    }
}

/// What a walk collected, and where it fell short.
#[derive(Debug, Default)]
pub struct WalkRun {
    pub walk: Walk,
    /// Roots whose walk ended in an error, in walk order.
    pub failures: Vec<(Oid, SnmpError)>,
    /// The varbind budget ran out: later values were not read.
    pub exhausted: bool,
}

fn v3_error(sec: &V3Security, failure: V3Failure) -> SnmpError {
    SnmpError::V3 {
        message: failure.describe(sec),
        failure,
    }
}

/// Does the probe response show a live agent (some varbind with a value)?
pub fn answered(resp: &Response) -> bool {
    resp.error_status != 0 || resp.varbinds.iter().any(|(_, v)| matches!(v, Vb::Value(_)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn oid_round_trip() {
        let o = to_snmp_oid(&[1, 3, 6, 1, 4, 1, 367, 3, 2]).unwrap();
        assert_eq!(
            from_snmp_oid(&o).unwrap(),
            vec![1, 3, 6, 1, 4, 1, 367, 3, 2]
        );
    }

    // ------------------------------------------------ a buggy fake agent

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 128 {
            out.push(n as u8);
        } else {
            out.extend([0x82, (n >> 8) as u8, n as u8]);
        }
        out.extend_from_slice(content);
        out
    }

    fn int(v: i64) -> Vec<u8> {
        let bytes = v.to_be_bytes();
        let mut i = 0;
        while i < 7
            && ((bytes[i] == 0 && bytes[i + 1] & 0x80 == 0)
                || (bytes[i] == 0xff && bytes[i + 1] & 0x80 != 0))
        {
            i += 1;
        }
        tlv(0x02, &bytes[i..])
    }

    fn oid(c: &[u32]) -> Vec<u8> {
        let mut body = vec![(c[0] * 40 + c[1]) as u8];
        for &x in &c[2..] {
            let mut chunk = vec![(x & 0x7f) as u8];
            let mut x = x >> 7;
            while x > 0 {
                chunk.push((x & 0x7f) as u8 | 0x80);
                x >>= 7;
            }
            chunk.reverse();
            body.extend(chunk);
        }
        tlv(0x06, &body)
    }

    /// A v2c agent on 127.0.0.1 whose GETNEXT/GETBULK answers come from
    /// `next(requested OID)`: one varbind per answer.
    fn fake_agent(next: fn(&[u32]) -> Vec<u32>) -> (SocketAddr, Arc<AtomicBool>) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = snmp2::Pdu::from_bytes(&buf[..n]) else {
                    continue;
                };
                let Some((first, _)) = req.varbinds.clone().next() else {
                    continue;
                };
                let first = from_snmp_oid(&first).unwrap();
                let reply = if req.message_type == snmp2::MessageType::GetRequest {
                    first
                } else {
                    next(&first)
                };
                let vb = tlv(0x30, &[oid(&reply), tlv(0x04, b"x")].concat());
                let pdu = tlv(
                    0xa2,
                    &[int(i64::from(req.req_id)), int(0), int(0), tlv(0x30, &vb)].concat(),
                );
                let msg = tlv(0x30, &[int(1), tlv(0x04, req.community), pdu].concat());
                let _ = sock.send_to(&msg, peer);
            }
        });
        (addr, stop)
    }

    fn client(addr: SocketAddr) -> Client {
        Client::new(addr, Version::V2c, Duration::from_secs(2), 0).with_community(b"public")
    }

    #[tokio::test]
    async fn stuck_agent_does_not_loop() {
        // Always answers the same OID: the walk stops at the first repeat.
        let (addr, stop) = fake_agent(|_| vec![1, 3, 6, 1, 2, 1, 1, 1, 0]);
        let c = client(addr);
        assert!(answered(&c.probe().await.unwrap()));
        let (walk, err) = c.walk(&[&[1, 3, 6, 1, 2, 1, 1]], 5000).await;
        stop.store(true, Ordering::Relaxed);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(walk.len(), 1);
    }

    #[tokio::test]
    async fn endless_agent_is_bounded() {
        // Every answer is deeper than the question: only the budget stops it.
        let (addr, stop) = fake_agent(|o| [o, &[1]].concat());
        let c = client(addr);
        let (walk, err) = c.walk(&[&[1, 3, 6, 1, 2, 1, 43]], 50).await;
        stop.store(true, Ordering::Relaxed);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(walk.len(), 50);
    }

    #[tokio::test]
    async fn silent_agent_times_out_after_retries() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut c = client(sock.local_addr().unwrap());
        c.timeout = Duration::from_millis(100);
        c.retries = 2;
        let t = std::time::Instant::now();
        let e = c.probe().await.unwrap_err();
        assert!(matches!(e, SnmpError::Timeout(_, 3)), "{e:?}");
        assert!(t.elapsed() < Duration::from_millis(1000));
        assert!(
            sock.recv(&mut [0u8; 1500]).is_ok(),
            "the requests were sent"
        );
    }

    #[tokio::test]
    async fn silent_v3_agent_is_a_timeout_not_a_refusal() {
        // Engine discovery gets no answer: a plain timeout after the retries
        // (the scan then skips the other v3 users), with requests sent.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sec = crate::telemetry::v3::V3Input {
            user: "u".into(),
            ..Default::default()
        }
        .build()
        .unwrap();
        let c = Client::new(
            sock.local_addr().unwrap(),
            Version::V3(sec),
            Duration::from_millis(100),
            1,
        );
        let t = std::time::Instant::now();
        let e = c.probe().await.unwrap_err();
        assert!(matches!(e, SnmpError::Timeout(_, 2)), "{e:?}");
        assert!(t.elapsed() < Duration::from_millis(1000));
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).unwrap();
        let msg = snmp2::AsnReader::from_bytes(&buf[..n])
            .read_raw(snmp2::asn1::TYPE_SEQUENCE)
            .unwrap();
        assert_eq!(
            snmp2::AsnReader::from_bytes(msg)
                .read_asn_integer()
                .unwrap(),
            3,
            "an SNMPv3 message"
        );
    }

    #[test]
    fn req_ids_are_positive_and_distinct() {
        let a = next_req_id();
        let b = next_req_id();
        assert!(a > 0 && b > 0 && a != b);
    }
}
