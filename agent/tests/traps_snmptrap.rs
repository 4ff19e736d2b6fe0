//! SNMP traps with net-snmp's `snmptrap`/`snmpinform` as the real senders:
//! a Printer-MIB alert trap from a printer inside the policy becomes an
//! immediate scan of that printer, spooled with the trap attached; a second
//! one within the device's interval does not scan again; senders outside
//! the policy and unknown communities are ignored; informs are answered.
//! The listener runs on a high loopback port (no root needed); printers
//! are the fleet simulator's on 127.23.0.x.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, UdpSocket as StdUdp};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwa_agent::policy::LivePolicy;
use dwa_agent::telemetry::collector::{Collector, Plan};
use dwa_agent::telemetry::names::Names;
use dwa_agent::telemetry::scan::ScanOptions;
use dwa_agent::telemetry::spool::{Limits, OnBadKey, Spool};
use dwa_agent::telemetry::traps::{TrapListener, TrapStats};
use dwa_policy::agent::{AgentPolicy, PolicyConfig};
use dwa_proto::telemetry::IngestItem;
use dwa_sim::{Fleet, FleetConfig, SnmpOptions};
use tokio_util::sync::CancellationToken;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

async fn items(spool: &Spool) -> Vec<IngestItem> {
    spool
        .peek(1000, 1 << 24)
        .await
        .expect("peek")
        .iter()
        .map(|i| serde_json::from_str(&i.json).expect("item"))
        .collect()
}

/// Readings spooled so far, as (address, trap OID).
async fn readings(spool: &Spool) -> Vec<(String, Option<String>)> {
    items(spool)
        .await
        .into_iter()
        .filter_map(|i| match i {
            IngestItem::Reading(r) => Some((r.record.address, r.record.trap.map(|t| t.trap_oid))),
            _ => None,
        })
        .collect()
}

async fn wait_for(spool: &Spool, n: usize) -> Vec<(String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = readings(spool).await;
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn send(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool)
        .args(args)
        .output()
        .expect("run net-snmp tool")
}

const ALERT: &str = "1.3.6.1.2.1.43.18.2.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printer_alert_traps_trigger_an_immediate_reading() {
    if !Path::new("/usr/bin/snmptrap").exists() {
        println!("skipping: snmptrap not installed (scripts/test.sh installs snmp)");
        return;
    }
    let printers = ["127.23.0.1", "127.23.0.2", "127.23.0.3", "127.23.0.4"];
    let fleet = Fleet::start(FleetConfig::snmp(
        printers.iter().map(|a| ip(a)).collect(),
        SnmpOptions {
            profiles: vec!["kyocera_mono".into()],
            ..SnmpOptions::default()
        },
    ))
    .await
    .expect("fleet");
    let snmp_port = fleet.snmp_port.expect("snmp port");
    let dir = tempfile::tempdir().expect("tmp");
    let spool = Spool::open(
        &dir.path().join("spool.db"),
        &dir.path().join("spool_key"),
        Limits {
            max_items: 10_000,
            max_bytes: 1 << 30,
        },
        OnBadKey::StartFresh,
    )
    .await
    .expect("spool");
    let policy = Arc::new(LivePolicy::new(
        AgentPolicy::from_config(
            &PolicyConfig {
                allow: vec!["127.23.0.0/28".into()],
                ..PolicyConfig::default()
            },
            vec![],
        )
        .expect("policy"),
    ));
    let options = ScanOptions {
        v3: vec![],
        communities: vec!["public".into()],
        port: snmp_port,
        timeout: Duration::from_millis(500),
        retries: 1,
        concurrency: 4,
        progress: false,
        dns: None,
        netbios: None,
        target_names: vec![],
        policy: None,
    };
    let collector = Arc::new(Collector::new(
        Plan {
            ranges: vec![],
            interval: Duration::from_secs(3600),
        },
        policy.clone(),
        options,
        Arc::new(Names::new(&[]).expect("names")),
        spool.clone(),
        Arc::new(tokio::sync::Notify::new()),
    ));
    let stats = Arc::new(TrapStats::default());
    let listener = TrapListener {
        policy,
        collector,
        communities: vec!["public".into()],
        min_interval: Duration::from_secs(60),
        stats: stats.clone(),
    };
    let std = StdUdp::bind("127.0.0.1:0").expect("bind");
    std.set_nonblocking(true).expect("nonblocking");
    let target = format!("127.0.0.1:{}", std.local_addr().expect("addr").port());
    let socket = tokio::net::UdpSocket::from_std(std).expect("socket");
    let stop = CancellationToken::new();
    let task = tokio::spawn(listener.run(socket, stop.clone()));

    // printerV2Alert from .1: paper out (code 808, group 8).
    let trap = |from: &str, community: &str| {
        send(
            "snmptrap",
            &[
                "-v2c",
                "-c",
                community,
                &format!("--clientaddr={from}"),
                &target,
                "",
                ALERT,
                "1.3.6.1.2.1.43.18.1.1.2.1.5",
                "i",
                "4",
                "1.3.6.1.2.1.43.18.1.1.4.1.5",
                "i",
                "8",
                "1.3.6.1.2.1.43.18.1.1.7.1.5",
                "i",
                "808",
            ],
        )
    };
    assert!(trap("127.23.0.1", "public").status.success());
    let got = wait_for(&spool, 1).await;
    assert_eq!(got, [("127.23.0.1".to_string(), Some(ALERT.to_string()))]);
    let all = items(&spool).await;
    let IngestItem::Reading(r) = &all[0] else {
        panic!("{all:?}")
    };
    let t = r.record.trap.as_ref().expect("trap attached");
    assert_eq!(t.version, "v2c");
    let a = t.alert.as_ref().expect("alert varbinds");
    assert_eq!((a.index, a.code, a.group), (5, Some(808), Some(8)));
    assert_eq!(a.code_name.as_deref(), Some("input_media_supply_empty"));
    assert_eq!(a.severity.as_deref(), Some("warning"));
    // The immediate reading is a full one: the printer's alert table too.
    assert_eq!(r.record.alerts[0].code, Some(808));
    assert!(all
        .iter()
        .any(|i| matches!(i, IngestItem::ScanDone(d) if d.trigger == "trap")));

    // Again within the interval: no second scan.
    assert!(trap("127.23.0.1", "public").status.success());
    // Outside the policy (.99 is not in 127.23.0.0/28), a wrong community,
    // a trap that is no printer alert: ignored.
    assert!(trap("127.23.0.99", "public").status.success());
    assert!(trap("127.23.0.4", "private").status.success());
    let cold = send(
        "snmptrap",
        &[
            "-v2c",
            "-c",
            "public",
            "--clientaddr=127.23.0.4",
            &target,
            "",
            "1.3.6.1.6.3.1.1.5.1",
        ],
    );
    assert!(cold.status.success());

    // v1 printerV1Alert from .2 (enterprise printerV2AlertPrefix, specific 1).
    let v1 = send(
        "snmptrap",
        &[
            "-v1",
            "-c",
            "public",
            "--clientaddr=127.23.0.2",
            &target,
            "1.3.6.1.2.1.43.18.2",
            "127.23.0.2",
            "6",
            "1",
            "",
            "1.3.6.1.2.1.43.18.1.1.7.1.2",
            "i",
            "8",
        ],
    );
    assert!(
        v1.status.success(),
        "{}",
        String::from_utf8_lossy(&v1.stderr)
    );
    // An inform from .3: snmpinform exits 0 only when it is acknowledged.
    let inform = send(
        "snmpinform",
        &[
            "-v2c",
            "-c",
            "public",
            "-t",
            "2",
            "-r",
            "1",
            "--clientaddr=127.23.0.3",
            &target,
            "",
            ALERT,
            "1.3.6.1.2.1.43.18.1.1.7.1.3",
            "i",
            "3",
        ],
    );
    assert!(
        inform.status.success(),
        "inform not acknowledged: {}",
        String::from_utf8_lossy(&inform.stderr)
    );

    wait_for(&spool, 3).await;
    // Give a stray extra scan time to show up before counting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut got = readings(&spool).await;
    got.sort();
    let want: Vec<(String, Option<String>)> = ["127.23.0.1", "127.23.0.2", "127.23.0.3"]
        .iter()
        .map(|a| (a.to_string(), Some(ALERT.to_string())))
        .collect();
    assert_eq!(got, want, "one reading per alerting printer");
    let v1_item = items(&spool).await.into_iter().find_map(|i| match i {
        IngestItem::Reading(r) if r.record.address == "127.23.0.2" => r.record.trap,
        _ => None,
    });
    let v1_item = v1_item.expect("v1 trap attached");
    assert_eq!(v1_item.version, "v1");
    assert_eq!(v1_item.alert.and_then(|a| a.code), Some(8));
    assert_eq!(stats.triggered.load(Ordering::Relaxed), 3);
    assert_eq!(stats.rate_limited.load(Ordering::Relaxed), 1);
    assert_eq!(stats.outside_policy.load(Ordering::Relaxed), 1);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    assert_eq!(stats.other.load(Ordering::Relaxed), 1);
    stop.cancel();
    task.await.expect("listener ends");
    fleet.shutdown().await;
}
