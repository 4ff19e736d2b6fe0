//! The simulated printers' NetBIOS name service: answers node status
//! requests (`nmblookup -A`, RFC 1002 4.2.17-18) with the printer's name,
//! as print servers and Windows-friendly printers do.
//!
//! Requests are parsed by the `netbios-parser` crate; the answer is built
//! here (no crate encodes NetBIOS name service messages) and is checked in
//! the tests against Samba's `nmblookup`, the real reader.

use std::sync::Arc;

use netbios_parser::parse_nbss_packet;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::snmp::BoundSocket;

/// The workgroup every simulated printer claims.
pub const WORKGROUP: &str = "WORKGROUP";
/// Name flags: ACTIVE (RFC 1002 4.2.18).
const ACTIVE: u16 = 0x0400;
/// Name flags: group name.
const GROUP: u16 = 0x8000;

/// What one printer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// At most 15 characters, upper case (NetBIOS names are).
    pub name: String,
    /// The MAC the statistics' unit id carries.
    pub mac: [u8; 6],
}

impl NodeStatus {
    /// From a host name: upper-cased, cut to 15 bytes, ASCII only.
    pub fn new(host: &str, mac: [u8; 6]) -> NodeStatus {
        let name: String = host
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(15)
            .collect::<String>()
            .to_ascii_uppercase();
        NodeStatus { name, mac }
    }
}

/// 16 bytes: the name space-padded to 15, then the suffix.
fn raw_name(name: &str, suffix: u8) -> [u8; 16] {
    let mut n = [b' '; 16];
    for (i, b) in name.bytes().take(15).enumerate() {
        n[i] = b;
    }
    n[15] = suffix;
    n
}

/// First-level encoding of the question name we answer for (`*`, NUL
/// padded), as in the request.
fn encoded_wildcard() -> Vec<u8> {
    let mut raw = [0u8; 16];
    raw[0] = b'*';
    let mut out = vec![32];
    for b in raw {
        out.push(b'A' + (b >> 4));
        out.push(b'A' + (b & 0x0f));
    }
    out.push(0);
    out
}

/// The answer to a node status request `datagram`, or `None` when it is
/// not one (garbage, a name query, an answer).
pub fn respond(status: &NodeStatus, datagram: &[u8]) -> Option<Vec<u8>> {
    let (_, pkt) = parse_nbss_packet(datagram).ok()?;
    if !pkt.header.request() || pkt.header.opcode() != 0 {
        return None;
    }
    let q = pkt.questions.first()?;
    if q.qtype.0 != 0x21 {
        return None;
    }
    let names: [(&str, u8, u16); 3] = [
        (&status.name, 0x00, ACTIVE),
        (&status.name, 0x20, ACTIVE),
        (WORKGROUP, 0x00, ACTIVE | GROUP),
    ];
    let mut rdata = vec![names.len() as u8];
    for (n, suffix, flags) in names {
        rdata.extend_from_slice(&raw_name(n, suffix));
        rdata.extend_from_slice(&flags.to_be_bytes());
    }
    // Statistics (46 bytes): the unit id is the MAC, the rest zero.
    let mut stats = [0u8; 46];
    stats[..6].copy_from_slice(&status.mac);
    rdata.extend_from_slice(&stats);

    let mut m = Vec::with_capacity(64 + rdata.len());
    m.extend_from_slice(&pkt.header.name_trn_id.to_be_bytes());
    // Response, opcode query, authoritative answer.
    m.extend_from_slice(&[0x84, 0x00, 0, 0, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(&encoded_wildcard());
    m.extend_from_slice(&[0x00, 0x21, 0x00, 0x01, 0, 0, 0, 0]);
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    Some(m)
}

/// Serves node status requests on `socket` until cancelled.
pub(crate) fn spawn(
    status: Arc<NodeStatus>,
    socket: BoundSocket,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) {
    let span = tracing::info_span!("netbios", name = %status.name);
    tracker.spawn(serve(status, socket.into_socket(), cancel).instrument(span));
}

async fn serve(status: Arc<NodeStatus>, socket: UdpSocket, cancel: CancellationToken) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        if let Some(answer) = buf.get(..n).and_then(|d| respond(&status, d)) {
            if let Err(e) = socket.send_to(&answer, peer).await {
                tracing::debug!(error = %e, %peer, "send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&encoded_wildcard());
        m.extend_from_slice(&[0, 0x21, 0, 1]);
        m
    }

    #[test]
    fn answers_node_status_and_nothing_else() {
        let st = NodeStatus::new("npi0a1b2c-long-host-name", [0, 0x1b, 0xa9, 1, 2, 3]);
        assert_eq!(st.name, "NPI0A1B2C-LONG-");
        let a = respond(&st, &request(0xbeef)).expect("an answer");
        let (_, pkt) = parse_nbss_packet(&a).expect("the crate reads our answer");
        assert_eq!(pkt.header.name_trn_id, 0xbeef);
        assert!(pkt.header.response());
        let netbios_parser::RData::NBStat { names, stats } = &pkt.rr_answer[0].rdata else {
            panic!("not NBSTAT: {:?}", pkt.rr_answer);
        };
        assert_eq!(names.len(), 3);
        assert_eq!(names[0].name.nb_name, "NPI0A1B2C-LONG-");
        assert_eq!(names[2].name.nb_name, WORKGROUP);
        assert_eq!(stats.unit_id, 0x001b_a901_0203);
        // An answer is not answered; garbage neither.
        assert_eq!(respond(&st, &a), None);
        assert_eq!(respond(&st, b"\x00\x01"), None);
        let mut name_query = request(1);
        let len = name_query.len();
        name_query[len - 3] = 0x20;
        assert_eq!(respond(&st, &name_query), None);
    }
}
