//! Answering one SNMP datagram from a device's walk: v1 and v2c, GET,
//! GETNEXT and GETBULK. BER comes from `rasn-snmp`; nothing here encodes
//! by hand. Every decoding failure or foreign message ends in `None` (no
//! answer), as on a real agent.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use dwa_proto::snmprec::Value;
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v1, v2, v2c};

use super::profile::{Dynamic, Instance};
use super::Fault;

/// Printer-MIB: the protocol faults hit answers to requests for it only,
/// so that discovery works and the collector gets as far as a real broken
/// device would let it.
const PRT: [u32; 7] = [1, 3, 6, 1, 2, 1, 43];

/// Smallest and largest answer we will build: RFC 3417's minimum message
/// size, and the largest UDP payload over IPv4.
pub const MIN_RESPONSE: usize = 484;
pub const MAX_RESPONSE: usize = 65_507;

/// Bytes a message spends around its varbind list, beyond the community:
/// SEQUENCE, version, PDU tag, request id, error status and index, list
/// header, each with a length of up to 3 bytes. Conservative on purpose:
/// the final encoding is checked anyway.
const ENVELOPE: usize = 40;

/// One device's SNMP agent.
#[derive(Debug)]
pub struct Responder {
    pub community: Vec<u8>,
    entries: BTreeMap<Vec<u32>, Value>,
    dynamic: BTreeMap<Vec<u32>, Dynamic>,
    base_total: u64,
    fault: Option<Fault>,
    max_response: usize,
    started: Instant,
    /// sysUpTime when the simulator started: some hours, device-specific.
    base_uptime: u32,
}

/// What a walk lookup found, before encoding.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Value(Value),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

/// The request, decoded.
struct Request {
    version: i64,
    community: Vec<u8>,
    request_id: i32,
    kind: Kind,
    oids: Vec<Vec<u32>>,
}

enum Kind {
    Get,
    GetNext,
    GetBulk {
        non_repeaters: u32,
        max_repetitions: u32,
    },
    Set,
}

/// The answer, before encoding.
struct Answer {
    error_status: u32,
    error_index: u32,
    varbinds: Vec<(Vec<u32>, Found)>,
}

impl Answer {
    fn ok(varbinds: Vec<(Vec<u32>, Found)>) -> Answer {
        Answer {
            error_status: 0,
            error_index: 0,
            varbinds,
        }
    }
}

/// Pages printed per second of simulator run time.
const PAGES_PER_SECOND: u64 = 1;

impl Responder {
    pub fn new(
        instance: Instance,
        community: &[u8],
        fault: Option<Fault>,
        max_response: usize,
    ) -> Self {
        let base_uptime = 360_000 + (instance.identity.base_total as u32 % 1000) * 8_640;
        Responder {
            community: community.to_vec(),
            base_total: instance.identity.base_total,
            entries: instance.entries,
            dynamic: instance.dynamic,
            fault,
            max_response: max_response.clamp(MIN_RESPONSE, MAX_RESPONSE),
            started: Instant::now(),
            base_uptime,
        }
    }

    /// The total page count the device reports now.
    pub fn total_now(&self) -> u64 {
        let pages = self.started.elapsed().as_secs() * PAGES_PER_SECOND;
        match self.fault {
            // A board swap: the count runs down instead of up.
            Some(Fault::CountersBackwards) => self.base_total.saturating_sub(pages),
            _ => self.base_total + pages,
        }
    }

    fn value_at(&self, oid: &[u32], v: &Value) -> Value {
        let Some(d) = self.dynamic.get(oid) else {
            return v.clone();
        };
        let ticks = self
            .base_uptime
            .wrapping_add((self.started.elapsed().as_millis() / 10) as u32);
        let n = d.value(self.total_now(), ticks);
        match v {
            Value::Integer(_) => Value::Integer(n.min(i32::MAX as u64) as i64),
            Value::Counter64(_) => Value::Counter64(n),
            Value::Gauge32(_) => Value::Gauge32(n as u32),
            Value::TimeTicks(_) => Value::TimeTicks(n as u32),
            _ => Value::Counter32(n as u32),
        }
    }

    fn get(&self, oid: &[u32]) -> Found {
        match self.entries.get(oid) {
            Some(v) => Found::Value(self.value_at(oid, v)),
            None => {
                // An instance of a known object (same column) is missing,
                // or the object itself is unknown.
                let parent = &oid[..oid.len().saturating_sub(1)];
                let column_known = !parent.is_empty()
                    && self
                        .entries
                        .range::<[u32], _>((Bound::Excluded(parent), Bound::Unbounded))
                        .next()
                        .is_some_and(|(k, _)| k.starts_with(parent));
                if column_known {
                    Found::NoSuchInstance
                } else {
                    Found::NoSuchObject
                }
            }
        }
    }

    /// The next entry after `oid`; v1 skips Counter64 (it cannot carry it).
    fn next(&self, oid: &[u32], v1: bool) -> Option<(Vec<u32>, Value)> {
        self.entries
            .range::<[u32], _>((Bound::Excluded(oid), Bound::Unbounded))
            .find(|(_, v)| !(v1 && matches!(v, Value::Counter64(_))))
            .map(|(k, v)| (k.clone(), self.value_at(k, v)))
    }

    /// Answer one datagram; `None` means stay silent.
    pub fn respond(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let req = decode_request(datagram)?;
        // Wrong community: real devices drop it (at most a trap).
        if req.community != self.community {
            return None;
        }
        let v1 = match req.version {
            0 => true,
            1 => false,
            _ => return None,
        };
        let answer = match req.kind {
            Kind::Get => self.answer_get(&req.oids, v1),
            Kind::GetNext => self.answer_getnext(&req.oids, v1),
            Kind::GetBulk { .. } if v1 => return None,
            Kind::GetBulk {
                non_repeaters,
                max_repetitions,
            } => self.answer_getbulk(&req, non_repeaters, max_repetitions),
            // Read-only device: v1 readOnly(4)... RFC 2576 maps it to
            // noSuchName for v1; v2c notWritable(17).
            Kind::Set => Answer {
                error_status: if v1 { 2 } else { 17 },
                error_index: 1,
                varbinds: req
                    .oids
                    .iter()
                    .map(|o| (o.clone(), Found::Value(Value::Null)))
                    .collect(),
            },
        };
        // Requests *for* the Printer-MIB only: a GETBULK of an earlier
        // subtree that runs on into it still gets a clean answer, so a
        // collector that walks subtree by subtree reads everything else.
        let touches_prt = req.oids.iter().any(|o| o.starts_with(&PRT));
        let request_id = match self.fault {
            Some(Fault::WrongRequestId) if touches_prt => req.request_id.wrapping_add(1),
            _ => req.request_id,
        };
        let mut bytes = self.encode_bounded(&req, request_id, answer)?;
        if self.fault == Some(Fault::TruncatedBer) && touches_prt {
            bytes.truncate(bytes.len() / 2);
        }
        Some(bytes)
    }

    fn answer_get(&self, oids: &[Vec<u32>], v1: bool) -> Answer {
        let mut out = Vec::with_capacity(oids.len());
        for (i, oid) in oids.iter().enumerate() {
            match self.get(oid) {
                Found::Value(Value::Counter64(_)) | Found::NoSuchObject | Found::NoSuchInstance
                    if v1 =>
                {
                    return v1_no_such_name(oids, i);
                }
                found => out.push((oid.clone(), found)),
            }
        }
        Answer::ok(out)
    }

    fn answer_getnext(&self, oids: &[Vec<u32>], v1: bool) -> Answer {
        let mut out = Vec::with_capacity(oids.len());
        for (i, oid) in oids.iter().enumerate() {
            match self.next(oid, v1) {
                Some((k, v)) => out.push((k, Found::Value(v))),
                None if v1 => return v1_no_such_name(oids, i),
                None => out.push((oid.clone(), Found::EndOfMibView)),
            }
        }
        Answer::ok(out)
    }

    /// RFC 3416 4.2.3: the first N varbinds once, then up to M rounds of
    /// the R others; rounds stop early when every repeater is at the end
    /// of the MIB, and whole varbinds are left out rather than exceed the
    /// response size (the caller checks the final size).
    fn answer_getbulk(&self, req: &Request, non_repeaters: u32, max_repetitions: u32) -> Answer {
        let n = (non_repeaters as usize).min(req.oids.len());
        let mut out = Vec::new();
        for oid in &req.oids[..n] {
            out.push(match self.next(oid, false) {
                Some((k, v)) => (k, Found::Value(v)),
                None => (oid.clone(), Found::EndOfMibView),
            });
        }
        let mut cursors: Vec<Vec<u32>> = req.oids[n..].to_vec();
        let budget = self
            .max_response
            .saturating_sub(ENVELOPE + req.community.len());
        let mut size: usize = out.iter().map(|(o, f)| varbind_size(o, f)).sum();
        'rounds: for _ in 0..max_repetitions {
            if cursors.is_empty() {
                break;
            }
            let mut all_ended = true;
            for cursor in cursors.iter_mut() {
                let vb = match self.next(cursor, false) {
                    Some((k, v)) => {
                        all_ended = false;
                        (k, Found::Value(v))
                    }
                    None => (cursor.clone(), Found::EndOfMibView),
                };
                let s = varbind_size(&vb.0, &vb.1);
                if size + s > budget {
                    break 'rounds;
                }
                size += s;
                cursor.clone_from(&vb.0);
                out.push(vb);
            }
            if all_ended {
                break;
            }
        }
        Answer::ok(out)
    }

    /// Encode; if it does not fit, GETBULK drops trailing varbinds and
    /// anything else answers tooBig with no varbinds (RFC 3416 4.2.1).
    fn encode_bounded(
        &self,
        req: &Request,
        request_id: i32,
        mut answer: Answer,
    ) -> Option<Vec<u8>> {
        let bulk = matches!(req.kind, Kind::GetBulk { .. });
        loop {
            let bytes = encode_response(req, request_id, &answer)?;
            if bytes.len() <= self.max_response {
                return Some(bytes);
            }
            if bulk && !answer.varbinds.is_empty() {
                let over = bytes.len() - self.max_response;
                // Drop about enough at once, then re-check.
                let mut freed = 0;
                while freed < over {
                    match answer.varbinds.pop() {
                        Some((o, f)) => freed += varbind_size(&o, &f),
                        None => break,
                    }
                }
                continue;
            }
            answer = Answer {
                error_status: 1,
                error_index: 0,
                varbinds: Vec::new(),
            };
            return encode_response(req, request_id, &answer);
        }
    }
}

fn v1_no_such_name(oids: &[Vec<u32>], i: usize) -> Answer {
    Answer {
        error_status: 2,
        error_index: i as u32 + 1,
        varbinds: oids
            .iter()
            .map(|o| (o.clone(), Found::Value(Value::Null)))
            .collect(),
    }
}

fn oid_of(c: &[u32]) -> ObjectIdentifier {
    // Arcs that X.690 cannot encode (first > 2, fewer than 2 arcs) only
    // come from a broken profile line: "0.0" stands in.
    ObjectIdentifier::new(c.to_vec())
        .unwrap_or_else(|| ObjectIdentifier::new_unchecked(vec![0, 0].into()))
}

fn v2_value(f: &Found) -> v2::VarBindValue {
    use rasn_smi::v1::{Counter, Gauge, IpAddress, TimeTicks};
    use rasn_smi::v2::{ApplicationSyntax as A, Counter64, ObjectSyntax as O, SimpleSyntax as S};
    match f {
        Found::NoSuchObject => v2::VarBindValue::NoSuchObject,
        Found::NoSuchInstance => v2::VarBindValue::NoSuchInstance,
        Found::EndOfMibView => v2::VarBindValue::EndOfMibView,
        Found::Value(v) => v2::VarBindValue::Value(match v {
            Value::Integer(i) => O::Simple(S::Integer(Integer::from(*i))),
            Value::OctetString(b) => O::Simple(S::String(OctetString::from(b.clone()))),
            Value::ObjectId(o) => O::Simple(S::ObjectId(oid_of(&o.0))),
            Value::IpAddress(a) => O::ApplicationWide(A::Address(IpAddress((*a).into()))),
            Value::Counter32(u) => O::ApplicationWide(A::Counter(Counter(*u))),
            Value::Gauge32(u) => O::ApplicationWide(A::Unsigned(Gauge(*u))),
            Value::TimeTicks(u) => O::ApplicationWide(A::Ticks(TimeTicks(*u))),
            Value::Counter64(u) => O::ApplicationWide(A::BigCounter(Counter64(*u))),
            Value::Null => return v2::VarBindValue::Unspecified,
        }),
    }
}

fn v1_value(f: &Found) -> rasn_smi::v1::ObjectSyntax {
    use rasn_smi::v1::{
        ApplicationSyntax as A, Counter, Gauge, IpAddress, NetworkAddress, ObjectSyntax as O,
        SimpleSyntax as S, TimeTicks,
    };
    match f {
        Found::Value(v) => match v {
            Value::Integer(i) => O::Simple(S::Number(Integer::from(*i))),
            Value::OctetString(b) => O::Simple(S::String(OctetString::from(b.clone()))),
            Value::ObjectId(o) => O::Simple(S::Object(oid_of(&o.0))),
            Value::IpAddress(a) => {
                O::ApplicationWide(A::Address(NetworkAddress::Internet(IpAddress((*a).into()))))
            }
            Value::Counter32(u) => O::ApplicationWide(A::Counter(Counter(*u))),
            Value::Gauge32(u) => O::ApplicationWide(A::Gauge(Gauge(*u))),
            Value::TimeTicks(u) => O::ApplicationWide(A::Ticks(TimeTicks(*u))),
            // Never reached: v1 lookups skip Counter64.
            Value::Counter64(_) | Value::Null => O::Simple(S::Empty),
        },
        _ => O::Simple(S::Empty),
    }
}

/// Encoded size of one varbind (v2 encoding; v1's is never larger).
fn varbind_size(oid: &[u32], f: &Found) -> usize {
    let vb = v2::VarBind {
        name: oid_of(oid),
        value: v2_value(f),
    };
    rasn::ber::encode(&vb)
        .map(|b| b.len())
        .unwrap_or(usize::MAX / 4)
}

fn encode_response(req: &Request, request_id: i32, a: &Answer) -> Option<Vec<u8>> {
    let community = OctetString::from(req.community.clone());
    let r = if req.version == 0 {
        rasn::ber::encode(&v1::Message {
            version: Integer::from(0),
            community,
            data: v1::Pdus::GetResponse(v1::GetResponse(v1::Pdu {
                request_id: Integer::from(request_id),
                error_status: Integer::from(a.error_status),
                error_index: Integer::from(a.error_index),
                variable_bindings: a
                    .varbinds
                    .iter()
                    .map(|(o, f)| v1::VarBind {
                        name: oid_of(o),
                        value: v1_value(f),
                    })
                    .collect(),
            })),
        })
    } else {
        rasn::ber::encode(&v2c::Message {
            version: Integer::from(1),
            community,
            data: v2::Pdus::Response(v2::Response(v2::Pdu {
                request_id,
                error_status: a.error_status,
                error_index: a.error_index,
                variable_bindings: a
                    .varbinds
                    .iter()
                    .map(|(o, f)| v2::VarBind {
                        name: oid_of(o),
                        value: v2_value(f),
                    })
                    .collect(),
            })),
        })
    };
    match r {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an SNMP response");
            None
        }
    }
}

/// Decode a v1 or v2c request. v1 and v2c requests share their shape
/// (GetRequest and GetNextRequest are the same in both), so both decode
/// as v2c messages; the version field tells them apart.
fn decode_request(datagram: &[u8]) -> Option<Request> {
    let msg: v2c::Message<v2::Pdus> = rasn::ber::decode(datagram).ok()?;
    let version = i64::try_from(&msg.version).ok()?;
    let oids =
        |vbs: &[v2::VarBind]| -> Vec<Vec<u32>> { vbs.iter().map(|vb| vb.name.to_vec()).collect() };
    let (request_id, kind, oids) = match &msg.data {
        v2::Pdus::GetRequest(p) => (p.0.request_id, Kind::Get, oids(&p.0.variable_bindings)),
        v2::Pdus::GetNextRequest(p) => {
            (p.0.request_id, Kind::GetNext, oids(&p.0.variable_bindings))
        }
        v2::Pdus::SetRequest(p) => (p.0.request_id, Kind::Set, oids(&p.0.variable_bindings)),
        v2::Pdus::GetBulkRequest(p) => (
            p.0.request_id,
            Kind::GetBulk {
                non_repeaters: p.0.non_repeaters,
                max_repetitions: p.0.max_repetitions,
            },
            oids(&p.0.variable_bindings),
        ),
        // Responses, traps, informs, reports: not ours to answer.
        _ => return None,
    };
    Some(Request {
        version,
        community: msg.community.to_vec(),
        request_id,
        kind,
        oids,
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::snmp::profile;

    fn responder(max: usize) -> Responder {
        let p = profile::by_name("ricoh_color_mfp").expect("profile");
        let inst = p
            .instantiate("127.21.9.1".parse().expect("ip"), None)
            .expect("instance");
        Responder::new(inst, b"public", None, max)
    }

    fn request(version: i64, pdu: v2::Pdus) -> Vec<u8> {
        rasn::ber::encode(&v2c::Message {
            version: Integer::from(version),
            community: OctetString::from(b"public".to_vec()),
            data: pdu,
        })
        .expect("encode")
    }

    fn pdu(oids: &[&[u32]]) -> v2::Pdu {
        v2::Pdu {
            request_id: 42,
            error_status: 0,
            error_index: 0,
            variable_bindings: oids
                .iter()
                .map(|o| v2::VarBind {
                    name: oid_of(o),
                    value: v2::VarBindValue::Unspecified,
                })
                .collect(),
        }
    }

    /// Random bytes and mutations of valid requests: never a panic, and
    /// whatever is answered decodes.
    #[test]
    fn random_datagrams_never_panic() {
        let r = responder(1472);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = [
            request(
                1,
                v2::Pdus::GetNextRequest(v2::GetNextRequest(pdu(&[&[1, 3, 6, 1]]))),
            ),
            request(
                0,
                v2::Pdus::GetRequest(v2::GetRequest(pdu(&[&[1, 3, 6, 1, 2, 1, 1, 1, 0]]))),
            ),
            request(
                1,
                v2::Pdus::GetBulkRequest(v2::GetBulkRequest(v2::BulkPdu {
                    request_id: 1,
                    non_repeaters: 1,
                    max_repetitions: 50,
                    variable_bindings: pdu(&[&[1, 3, 6, 1, 2, 1, 1], &[1, 3, 6, 1, 2, 1, 43]])
                        .variable_bindings,
                })),
            ),
        ];
        let mut answered = 0;
        for i in 0..20_000 {
            let mut d = if i % 4 == 0 {
                let n = rng.gen_range(0..200);
                (0..n).map(|_| rng.gen()).collect::<Vec<u8>>()
            } else {
                valid[i % valid.len()].clone()
            };
            if !d.is_empty() {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..d.len());
                    d[at] = rng.gen();
                }
                if rng.gen_bool(0.2) {
                    d.truncate(rng.gen_range(0..d.len()));
                }
            }
            if let Some(a) = r.respond(&d) {
                answered += 1;
                assert!(a.len() <= 1472);
                let _: v2c::Message<v2::Pdus> = rasn::ber::decode(&a).expect("answer decodes");
            }
        }
        // Mutations that only touch values or ids still make requests.
        assert!(answered > 0);
    }

    #[test]
    fn v1_and_v2c_answers_and_errors() {
        let r = responder(1472);
        let sys_descr: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 1, 0];
        let unknown: &[u32] = &[1, 3, 6, 1, 2, 1, 1, 99, 0];
        // v1 GET with an unknown OID: noSuchName at index 2.
        let a = r
            .respond(&request(
                0,
                v2::Pdus::GetRequest(v2::GetRequest(pdu(&[sys_descr, unknown]))),
            ))
            .expect("answer");
        let m: v1::Message<v1::Pdus> = rasn::ber::decode(&a).expect("v1 answer");
        let v1::Pdus::GetResponse(p) = m.data else {
            panic!("not a response")
        };
        assert_eq!(p.0.error_status, Integer::from(2));
        assert_eq!(p.0.error_index, Integer::from(2));
        // v1 GETBULK does not exist: silence. Unknown version: silence.
        let bulk = v2::Pdus::GetBulkRequest(v2::GetBulkRequest(v2::BulkPdu {
            request_id: 1,
            non_repeaters: 0,
            max_repetitions: 5,
            variable_bindings: pdu(&[sys_descr]).variable_bindings,
        }));
        assert!(r.respond(&request(0, bulk.clone())).is_none());
        assert!(r.respond(&request(3, bulk.clone())).is_none());
        // A GET too big for the response size: tooBig, no varbinds.
        let many: Vec<&[u32]> = std::iter::repeat_n(sys_descr, 200).collect();
        let a = r
            .respond(&request(
                1,
                v2::Pdus::GetRequest(v2::GetRequest(pdu(&many))),
            ))
            .expect("answer");
        let m: v2c::Message<v2::Pdus> = rasn::ber::decode(&a).expect("answer");
        let v2::Pdus::Response(p) = m.data else {
            panic!("not a response")
        };
        assert_eq!(p.0.error_status, 1);
        assert!(p.0.variable_bindings.is_empty());
        // The largest response size lets the same GET through.
        let big = responder(MAX_RESPONSE);
        let a = big
            .respond(&request(
                1,
                v2::Pdus::GetRequest(v2::GetRequest(pdu(&many))),
            ))
            .expect("answer");
        let m: v2c::Message<v2::Pdus> = rasn::ber::decode(&a).expect("answer");
        let v2::Pdus::Response(p) = m.data else {
            panic!("not a response")
        };
        assert_eq!((p.0.error_status, p.0.variable_bindings.len()), (0, 200));
    }
}
