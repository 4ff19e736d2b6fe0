//! NetBIOS names of devices: a node status request (RFC 1002 4.2.17, what
//! `nmblookup -A` and `nbtstat -A` send) to UDP 137 of one address,
//! unicast, only to addresses the scan already found inside its ranges.
//!
//! Answers are parsed by the `netbios-parser` crate. The request is built
//! here: no crate encodes NetBIOS name service messages, and the request
//! is one fixed question (the wildcard name `*`, first-level encoded per
//! RFC 1001 14.1) behind a DNS-shaped header; Samba's `nmbd` (a real
//! responder) answers it in the tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use netbios_parser::{parse_nbss_packet, RData};
use tokio::net::UdpSocket;

/// The NetBIOS name service port.
pub const PORT: u16 = 137;
/// Largest answer read (a node status answer with 255 names is ~4.6 KiB).
const MAX_ANSWER: usize = 8192;
/// Name flags: group name (RFC 1002 4.2.18, NAME_FLAGS G bit).
const GROUP: u16 = 0x8000;

/// Settings of the NetBIOS lookups of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetbiosOptions {
    pub port: u16,
    pub timeout: Duration,
    pub retries: u32,
}

/// RFC 1001 14.1 first-level encoding of a 16-byte NetBIOS name: each
/// nibble as a letter 'A'..='P', behind its length byte (32), then the
/// root label (no scope).
pub fn encode_name(raw: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(32);
    for b in raw {
        out.push(b'A' + (b >> 4));
        out.push(b'A' + (b & 0x0f));
    }
    out.push(0);
    out
}

/// The wildcard name of a node status request: `*` padded with NULs (not
/// spaces: RFC 1002 4.2.17).
pub fn wildcard() -> [u8; 16] {
    let mut n = [0u8; 16];
    n[0] = b'*';
    n
}

/// NODE STATUS REQUEST with transaction id `id`: no flags (unicast, no
/// recursion), one question NBSTAT/IN for `*`.
pub fn node_status_request(id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(50);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&encode_name(&wildcard()));
    m.extend_from_slice(&[0x00, 0x21, 0x00, 0x01]);
    m
}

/// The device's name from a node status answer to transaction `id`: the
/// unique workstation name (`<00>`), else its unique server name
/// (`<20>`). `None` for anything else (another id, a request, garbage, a
/// name that is not printable).
pub fn name_from_answer(id: u16, datagram: &[u8]) -> Option<String> {
    let (_, pkt) = parse_nbss_packet(datagram).ok()?;
    if pkt.header.name_trn_id != id || !pkt.header.response() {
        return None;
    }
    let names = pkt.rr_answer.iter().find_map(|rr| match &rr.rdata {
        RData::NBStat { names, .. } => Some(names),
        _ => None,
    })?;
    let pick = |suffix: u8| {
        names
            .iter()
            .find(|n| n.name.nb_type.0 == suffix && n.name_flags & GROUP == 0)
            .map(|n| n.name.nb_name.trim_end_matches(['\0', ' ']).to_string())
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic()))
    };
    pick(0x00).or_else(|| pick(0x20))
}

/// Asks `ip` for its NetBIOS name: `timeout` per attempt, `retries` more
/// attempts; only an answer from that address and port counts.
pub async fn query(ip: Ipv4Addr, opts: NetbiosOptions) -> Option<String> {
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
        .await
        .ok()?;
    let peer = SocketAddr::new(IpAddr::V4(ip), opts.port);
    let id: u16 = rand::random();
    let request = node_status_request(id);
    let mut buf = vec![0u8; MAX_ANSWER];
    for _ in 0..=opts.retries {
        if sock.send_to(&request, peer).await.is_err() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + opts.timeout;
        loop {
            let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
            match r {
                Err(_) => break,
                // ICMP port unreachable surfaces as an error: no responder.
                Ok(Err(_)) => return None,
                Ok(Ok((n, from))) if from == peer => {
                    if let Some(name) = buf.get(..n).and_then(|d| name_from_answer(id, d)) {
                        return Some(name);
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_what_nmblookup_sends() {
        let m = node_status_request(0x1234);
        assert_eq!(&m[..12], &[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        // "*" + 15 NULs: CK then 30 A's (RFC 1002 4.2.17).
        let name = std::str::from_utf8(&m[13..45]).unwrap();
        assert_eq!(name, format!("CK{}", "A".repeat(30)));
        assert_eq!((m[12], m[45]), (32, 0));
        assert_eq!(&m[46..], &[0, 0x21, 0, 1]);
        // The crate reads our request back as a NBSTAT question for "*".
        let (_, pkt) = parse_nbss_packet(&m).unwrap();
        assert!(pkt.header.request());
        assert_eq!(pkt.questions[0].qtype.0, 0x21);
        let q = pkt.questions[0].qname.decode().unwrap();
        assert_eq!(q.nb_name.trim_end_matches('\0'), "*");
    }

    #[test]
    fn garbage_and_other_ids_give_no_name() {
        assert_eq!(name_from_answer(1, b""), None);
        assert_eq!(name_from_answer(1, &[0xff; 7]), None);
        assert_eq!(name_from_answer(0x1234, &node_status_request(0x1234)), None);
    }
}
