//! The simulator's SNMP agents over real UDP on loopback, checked with an
//! independent client (`snmp2`) and with raw datagrams: GET, GETNEXT,
//! GETBULK, v1 errors, silence on a wrong community or garbage, the
//! response size bound, growing counters and the black hole.
//! Addresses: 127.21.x.y (no other test binds there).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use dwa_sim::snmp::profile;
use dwa_sim::{BlackHole, Fault, Fleet, FleetConfig, SnmpOptions};
use rasn::types::{Integer, ObjectIdentifier, OctetString};
use rasn_snmp::{v2, v2c};
use snmp2::{AsyncSession, Oid, Value};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

async fn fleet(addrs: &[&str], snmp: SnmpOptions) -> Fleet {
    Fleet::start(FleetConfig::snmp(
        addrs.iter().map(|a| ip(a)).collect(),
        snmp,
    ))
    .await
    .expect("fleet starts")
}

fn oid(c: &[u64]) -> Oid<'static> {
    Oid::from(c).expect("oid")
}

fn parts(o: &Oid<'_>) -> Vec<u64> {
    o.iter().expect("oid arcs").collect()
}

async fn v2c_session(addr: SocketAddr, community: &[u8]) -> AsyncSession {
    AsyncSession::new_v2c(addr, community, 1000)
        .await
        .expect("session")
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn get_getnext_getbulk_v2c() {
    let f = fleet(&["127.21.0.1"], SnmpOptions::default()).await;
    let dev = f.printers[0].snmp.clone().expect("snmp");
    assert_eq!(dev.identity.profile, "hp_color_mfp");
    let mut s = v2c_session(dev.addr, b"public").await;

    // GET: a value, a missing instance of a known column, an unknown object.
    let sys_name = oid(&[1, 3, 6, 1, 2, 1, 1, 5, 0]);
    let missing_instance = oid(&[1, 3, 6, 1, 2, 1, 1, 5, 7]);
    let unknown = oid(&[1, 3, 6, 1, 2, 1, 99, 1, 0]);
    let pdu = tokio::time::timeout(T, s.get_many(&[&sys_name, &missing_instance, &unknown]))
        .await
        .expect("answer")
        .expect("pdu");
    assert_eq!(pdu.error_status, 0);
    let vbs: Vec<_> = pdu.varbinds.collect();
    assert!(matches!(vbs[0].1, Value::OctetString(b) if b == dev.identity.sys_name.as_bytes()));
    assert!(matches!(vbs[1].1, Value::NoSuchInstance), "{:?}", vbs[1].1);
    assert!(matches!(vbs[2].1, Value::NoSuchObject), "{:?}", vbs[2].1);

    // GETNEXT from a column prefix lands on its first instance.
    let pdu = tokio::time::timeout(T, s.getnext(&oid(&[1, 3, 6, 1, 2, 1, 1, 5])))
        .await
        .expect("answer")
        .expect("pdu");
    let (o, v) = pdu.varbinds.clone().next().expect("varbind");
    assert_eq!(parts(&o), [1, 3, 6, 1, 2, 1, 1, 5, 0]);
    assert!(matches!(v, Value::OctetString(_)));

    // GETNEXT past the last entry: endOfMibView.
    let pdu = tokio::time::timeout(T, s.getnext(&oid(&[1, 3, 6, 1, 9])))
        .await
        .expect("answer")
        .expect("pdu");
    let (_, v) = pdu.varbinds.clone().next().expect("varbind");
    assert!(matches!(v, Value::EndOfMibView), "{v:?}");

    // GETBULK: 1 non-repeater (sysDescr's successor), then 3 rounds of
    // two interleaved columns.
    let descr_col = oid(&[1, 3, 6, 1, 2, 1, 1, 1]);
    let type_col = oid(&[1, 3, 6, 1, 2, 1, 43, 11, 1, 1, 5, 1]);
    let desc_col = oid(&[1, 3, 6, 1, 2, 1, 43, 11, 1, 1, 6, 1]);
    let pdu = tokio::time::timeout(T, s.getbulk(&[&descr_col, &type_col, &desc_col], 1, 3))
        .await
        .expect("answer")
        .expect("pdu");
    let got: Vec<(Vec<u64>, String)> = pdu
        .varbinds
        .map(|(o, v)| {
            let v = match v {
                Value::OctetString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (parts(&o), v)
        })
        .collect();
    let p = |tail: &[u64]| {
        let mut v = vec![1, 3, 6, 1, 2, 1];
        v.extend_from_slice(tail);
        v
    };
    let want = vec![
        p(&[1, 1, 0]),
        p(&[43, 11, 1, 1, 5, 1, 1]),
        p(&[43, 11, 1, 1, 6, 1, 1]),
        p(&[43, 11, 1, 1, 5, 1, 2]),
        p(&[43, 11, 1, 1, 6, 1, 2]),
        p(&[43, 11, 1, 1, 5, 1, 3]),
        p(&[43, 11, 1, 1, 6, 1, 3]),
    ];
    assert_eq!(got.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>(), want);
    assert_eq!(got[1].1, "21");
    assert_eq!(got[2].1, "Black Cartridge HP W2030X");

    // GETBULK at the end of the MIB stops with endOfMibView.
    let pdu = tokio::time::timeout(
        T,
        s.getbulk(
            &[&oid(&[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2, 1, 4, 1, 2, 7])],
            0,
            10,
        ),
    )
    .await
    .expect("answer")
    .expect("pdu");
    let vbs: Vec<_> = pdu.varbinds.collect();
    assert!(vbs.len() <= 2, "{vbs:?}");
    assert!(matches!(
        vbs.last().map(|v| &v.1),
        Some(Value::EndOfMibView)
    ));
    f.shutdown().await;
}

#[tokio::test]
async fn v1_errors_are_no_such_name() {
    let f = fleet(&["127.21.0.11"], SnmpOptions::default()).await;
    let dev = f.printers[0].snmp.clone().expect("snmp");
    let mut s = AsyncSession::new_v1(dev.addr, b"public", 77)
        .await
        .expect("session");
    let good = oid(&[1, 3, 6, 1, 2, 1, 1, 1, 0]);
    let bad = oid(&[1, 3, 6, 1, 2, 1, 1, 99, 0]);
    let pdu = tokio::time::timeout(T, s.get_many(&[&good, &bad]))
        .await
        .expect("answer")
        .expect("pdu");
    assert_eq!((pdu.error_status, pdu.error_index), (2, 2));
    let pdu = tokio::time::timeout(T, s.getnext(&oid(&[1, 3, 6, 1, 9])))
        .await
        .expect("answer")
        .expect("pdu");
    assert_eq!((pdu.error_status, pdu.error_index), (2, 1));
    let pdu = tokio::time::timeout(T, s.getnext(&oid(&[1, 3, 6, 1, 2, 1, 1, 1])))
        .await
        .expect("answer")
        .expect("pdu");
    assert_eq!(pdu.error_status, 0);
    f.shutdown().await;
}

/// A raw GETBULK request, encoded with rasn.
fn bulk_request(community: &[u8], id: i32, oids: &[&[u32]], nr: u32, mr: u32) -> Vec<u8> {
    let msg = v2c::Message {
        version: Integer::from(1),
        community: OctetString::from(community.to_vec()),
        data: v2::Pdus::GetBulkRequest(v2::GetBulkRequest(v2::BulkPdu {
            request_id: id,
            non_repeaters: nr,
            max_repetitions: mr,
            variable_bindings: oids
                .iter()
                .map(|o| v2::VarBind {
                    name: ObjectIdentifier::new(o.to_vec()).expect("oid"),
                    value: v2::VarBindValue::Unspecified,
                })
                .collect(),
        })),
    };
    rasn::ber::encode(&msg).expect("encode")
}

fn udp_client(peer: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    s.connect(peer).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(400)))
        .expect("timeout");
    s
}

fn decode_response(b: &[u8]) -> v2c::Message<v2::Pdus> {
    rasn::ber::decode(b).expect("a well-formed response")
}

fn varbinds(m: &v2c::Message<v2::Pdus>) -> &[v2::VarBind] {
    match &m.data {
        v2::Pdus::Response(r) => &r.0.variable_bindings,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_community_and_garbage_get_no_answer() {
    let f = fleet(&["127.21.0.21"], SnmpOptions::default()).await;
    let dev = f.printers[0].snmp.clone().expect("snmp");
    let sock = udp_client(dev.addr);
    let root: &[u32] = &[1, 3, 6, 1, 2, 1, 1];
    let mut buf = vec![0u8; 65_535];

    sock.send(&bulk_request(b"private", 5, &[root], 0, 5))
        .expect("send");
    assert!(sock.recv(&mut buf).is_err(), "answered a wrong community");

    // Garbage: empty, random, a valid request cut short, a valid request
    // with every byte flipped in turn. None may stop the agent.
    let good = bulk_request(b"public", 6, &[root], 0, 5);
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x30],
        vec![0xff; 100],
        good[..good.len() / 2].to_vec(),
    ];
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0xa5;
        junk.push(b);
    }
    // A length field claiming gigabytes.
    junk.push(vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01]);
    for j in &junk {
        sock.send(j).expect("send");
    }
    // Drain whatever the mutations still made valid (some flips land in
    // the community or the OID and are still a request).
    while sock.recv(&mut buf).is_ok() {}

    sock.send(&good).expect("send");
    let n = sock.recv(&mut buf).expect("the agent still answers");
    let m = decode_response(&buf[..n]);
    assert_eq!(varbinds(&m).len(), 5);
    assert!(dev.stats.received() >= junk.len() as u64 + 2);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getbulk_answers_fit_the_response_size() {
    let supplies: &[u32] = &[1, 3, 6, 1, 2, 1, 43, 11, 1, 1];
    for (max, addr) in [(1472usize, "127.21.0.31"), (65_507, "127.21.0.32")] {
        let f = fleet(
            &[addr],
            SnmpOptions {
                faults: vec![(ip(addr), Fault::HugeTable)],
                max_response: max,
                ..SnmpOptions::default()
            },
        )
        .await;
        let dev = f.printers[0].snmp.clone().expect("snmp");
        let sock = udp_client(dev.addr);
        let mut buf = vec![0u8; 65_535];
        sock.send(&bulk_request(b"public", 9, &[supplies], 0, 5000))
            .expect("send");
        let n = sock.recv(&mut buf).expect("answer");
        assert!(n <= max, "{n} bytes > {max}");
        let m = decode_response(&buf[..n]);
        let count = varbinds(&m).len();
        // Truncated, not failed: as many as fit, and close to the bound.
        assert!(count > 10, "{count} varbinds");
        assert!(n > max - 200, "{n} bytes leaves too much room under {max}");
        if let v2::Pdus::Response(r) = &m.data {
            assert_eq!(r.0.error_status, 0);
            assert_eq!(r.0.request_id, 9);
        }
        f.shutdown().await;
    }
}

#[tokio::test]
async fn counters_grow_and_identity_follows_the_address() {
    let f = fleet(&["127.21.0.41", "127.21.0.42"], SnmpOptions::default()).await;
    let a = f.printers[0].snmp.clone().expect("snmp");
    let b = f.printers[1].snmp.clone().expect("snmp");
    assert_eq!(a.identity.profile, "hp_color_mfp");
    assert_eq!(b.identity.profile, "kyocera_mono");
    assert_ne!(a.identity.serial, b.identity.serial);
    let life = oid(&[1, 3, 6, 1, 2, 1, 43, 10, 2, 1, 4, 1, 1]);
    let mut s = v2c_session(a.addr, b"public").await;
    let read = |pdu: snmp2::Pdu<'_>| match pdu.varbinds.clone().next() {
        Some((_, Value::Counter32(c))) => u64::from(c),
        other => panic!("{other:?}"),
    };
    let first = read(s.get(&life).await.expect("pdu"));
    assert!(first >= a.identity.base_total);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = read(s.get(&life).await.expect("pdu"));
    assert!(second >= first + 2, "{first} -> {second}");
    assert!(second <= a.total_now());
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_keeps_dead_addresses_silent() {
    // Without a black hole, loopback refuses at once (ICMP port
    // unreachable), which no LAN does.
    let f = fleet(&["127.21.1.1"], SnmpOptions::default()).await;
    let port = f.snmp_port.expect("port");
    let sock = udp_client(SocketAddr::new(ip("127.21.1.2"), port));
    let req = bulk_request(b"public", 1, &[&[1, 3, 6, 1, 2, 1, 1]], 0, 2);
    sock.send(&req).expect("send");
    let mut buf = vec![0u8; 65_535];
    let e = sock.recv(&mut buf).expect_err("nobody there");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    f.shutdown().await;

    for hole in [
        BlackHole::Wildcard,
        BlackHole::Addresses(vec![ip("127.21.2.2")]),
    ] {
        let f = fleet(
            &["127.21.2.1", "127.21.2.3"],
            SnmpOptions {
                black_hole: Some(hole.clone()),
                ..SnmpOptions::default()
            },
        )
        .await;
        let port = f.snmp_port.expect("port");
        let dead = udp_client(SocketAddr::new(ip("127.21.2.2"), port));
        dead.send(&req).expect("send");
        let e = dead.recv(&mut buf).expect_err("silent");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{hole:?}: {e}"
        );
        let hole_stats = f.black_hole.clone().expect("black hole");
        assert_eq!(hole_stats.received(), 1, "{hole:?}");
        // The more specific sockets still get their own traffic.
        for p in &f.printers {
            let dev = p.snmp.clone().expect("snmp");
            let live = udp_client(dev.addr);
            live.send(&req).expect("send");
            let n = live.recv(&mut buf).expect("live printer answers");
            assert_eq!(varbinds(&decode_response(&buf[..n])).len(), 2);
            assert_eq!(dev.stats.received(), 1);
        }
        assert_eq!(hole_stats.received(), 1, "{hole:?}");
        f.shutdown().await;
    }
}

#[tokio::test]
async fn profiles_are_configurable_and_unknown_ones_rejected() {
    let f = fleet(
        &["127.21.3.1", "127.21.3.2", "127.21.3.3"],
        SnmpOptions {
            profiles: vec!["brother_inkjet".into(), "switch".into()],
            profile_of: vec![(ip("127.21.3.3"), "ricoh_color_mfp".into())],
            ..SnmpOptions::default()
        },
    )
    .await;
    let names: Vec<&str> = f
        .printers
        .iter()
        .map(|p| p.snmp.as_ref().expect("snmp").identity.profile)
        .collect();
    assert_eq!(names, ["brother_inkjet", "switch", "ricoh_color_mfp"]);
    assert!(f.printers[1]
        .snmp
        .as_ref()
        .expect("snmp")
        .identity
        .vendor
        .is_none());
    f.shutdown().await;

    let err = Fleet::start(FleetConfig {
        addresses: vec![ip("127.21.3.9")],
        http_port: 0,
        https_port: None,
        snmp_port: Some(0),
        snmp: SnmpOptions {
            profiles: vec!["nope".into()],
            ..SnmpOptions::default()
        },
        ..FleetConfig::default()
    })
    .await
    .expect_err("unknown profile");
    assert!(err.to_string().contains("nope"));
    assert!(profile::PROFILES.len() >= 5);
}
