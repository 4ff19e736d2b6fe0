//! `dwa-agent scan` (the real binary) against the fleet simulator's SNMP
//! agents on loopback: every printer's identity, counters, supplies, status
//! and alerts must come out as its profile and template say; a switch is no
//! printer; silent addresses cost no more than the timeout; hostile devices
//! neither crash the scan nor hide the healthy ones. Runs everywhere (no
//! shared fixtures). Addresses: 127.20.0.x and 127.20.1.x.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use dwa_proto::telemetry::{DeviceRecord, ErrorState, Level, SupplyClass, SupplyKind};
use dwa_sim::{BlackHole, Fault, Fleet, FleetConfig, Printer, SnmpOptions};

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

/// Run the scan in a blocking thread (the fleet keeps serving meanwhile).
async fn scan(range: &str, port: u16, extra: &[&str]) -> (Vec<DeviceRecord>, String, Duration) {
    let mut args: Vec<String> = [
        "scan",
        range,
        "--port",
        &port.to_string(),
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_dwa-agent"))
            .args(&args)
            .env("DWA_LOG", "warn")
            .output()
            .expect("run dwa-agent")
    })
    .await
    .expect("join");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "scan failed ({:?}): {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let recs: Vec<DeviceRecord> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON output: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    (recs, stderr, took)
}

/// One supply as the profile defines it.
struct S {
    index: u32,
    description: &'static str,
    kind: SupplyKind,
    class: SupplyClass,
    colour: Option<&'static str>,
    level: Level,
    max: Level,
    unit: &'static str,
    percent: Option<f32>,
    fullness: Option<f32>,
}

#[allow(clippy::too_many_arguments)]
const fn s(
    index: u32,
    description: &'static str,
    kind: SupplyKind,
    class: SupplyClass,
    colour: Option<&'static str>,
    level: Level,
    max: Level,
    unit: &'static str,
    percent: Option<f32>,
    fullness: Option<f32>,
) -> S {
    S {
        index,
        description,
        kind,
        class,
        colour,
        level,
        max,
        unit,
        percent,
        fullness,
    }
}

use Level::{SomeRemaining, Unknown, Value as V};
use SupplyClass::{Consumed, Receptacle};

/// What each printer profile says (sim/profiles/*.snmprec).
struct Expect {
    profile: &'static str,
    printer_index: u32,
    firmware: Option<&'static str>,
    unit: &'static str,
    supplies: Vec<S>,
    errors: Vec<ErrorState>,
    device_status: Option<&'static str>,
    printer_status: Option<&'static str>,
    /// Fields no source of the profile has.
    missing: Vec<&'static str>,
    /// (severity, code, code name, description, group, group index)
    alert: (&'static str, i64, &'static str, &'static str, i64, i64),
    console: Vec<&'static str>,
}

#[rustfmt::skip]
fn expectations() -> Vec<Expect> {
    vec![
        Expect {
            profile: "hp_color_mfp",
            printer_index: 1,
            firmware: Some("2409081_052622"),
            unit: "impressions",
            supplies: vec![
                s(1, "Black Cartridge HP W2030X", SupplyKind::TonerCartridge, Consumed, Some("black"), V(63), V(100), "percent", Some(63.0), None),
                s(2, "Cyan Cartridge HP W2031X", SupplyKind::TonerCartridge, Consumed, Some("cyan"), V(8), V(100), "percent", Some(8.0), None),
                s(3, "Magenta Cartridge HP W2033X", SupplyKind::TonerCartridge, Consumed, Some("magenta"), SomeRemaining, V(100), "percent", None, None),
                s(4, "Yellow Cartridge HP W2032X", SupplyKind::TonerCartridge, Consumed, Some("yellow"), V(91), V(100), "percent", Some(91.0), None),
                s(5, "Toner Collection Unit HP 3WT90A", SupplyKind::WasteToner, Receptacle, None, V(85), V(100), "percent", None, Some(15.0)),
            ],
            errors: vec![ErrorState::LowToner],
            device_status: Some("warning"),
            printer_status: Some("idle"),
            alert: ("warning", 1104, "marker_toner_almost_empty", "Cyan Cartridge Low", 11, 2),
            console: vec!["Ready", "Cyan cartridge low"],
            missing: vec![],
        },
        Expect {
            profile: "kyocera_mono",
            printer_index: 1,
            firmware: None,
            unit: "impressions",
            supplies: vec![
                s(1, "TK-3160", SupplyKind::Toner, Consumed, Some("black"), V(1200), V(3000), "tenths_of_grams", Some(40.0), None),
                s(2, "Waste Toner Box", SupplyKind::WasteToner, Receptacle, None, SomeRemaining, V(100), "percent", None, None),
            ],
            errors: vec![ErrorState::LowPaper, ErrorState::NoPaper, ErrorState::InputTrayEmpty],
            device_status: Some("warning"),
            printer_status: Some("other"),
            alert: ("warning", 808, "input_media_supply_empty", "Add paper in Cassette 1.", 8, 1),
            console: vec!["Add paper in Cassette 1."],
            missing: vec!["firmware"],
        },
        Expect {
            profile: "ricoh_color_mfp",
            printer_index: 2,
            firmware: Some("1.02"),
            unit: "impressions",
            supplies: vec![
                s(1, "Toner (Black)", SupplyKind::Toner, Consumed, Some("black"), V(40), V(100), "percent", Some(40.0), None),
                s(2, "Toner (Cyan)", SupplyKind::Toner, Consumed, Some("cyan"), V(70), V(100), "percent", Some(70.0), None),
                s(3, "Toner (Magenta)", SupplyKind::Toner, Consumed, Some("magenta"), V(30), V(100), "percent", Some(30.0), None),
                s(4, "Toner (Yellow)", SupplyKind::Toner, Consumed, Some("yellow"), V(20), V(100), "percent", Some(20.0), None),
                s(5, "Waste Toner Bottle", SupplyKind::WasteToner, Receptacle, None, V(100), V(100), "percent", None, Some(0.0)),
            ],
            errors: vec![ErrorState::DoorOpen],
            device_status: Some("down"),
            printer_status: Some("other"),
            alert: ("critical", 3, "cover_open", "Front Cover Open", 6, 1),
            console: vec!["Close Front Cover."],
            missing: vec![],
        },
        Expect {
            profile: "brother_inkjet",
            printer_index: 1,
            firmware: Some("1.12"),
            unit: "impressions",
            supplies: vec![
                s(1, "Black Ink", SupplyKind::InkCartridge, Consumed, Some("black"), V(55), Unknown, "percent", Some(55.0), None),
                s(2, "Cyan Ink", SupplyKind::InkCartridge, Consumed, Some("cyan"), SomeRemaining, Unknown, "percent", None, None),
                s(3, "Magenta Ink", SupplyKind::InkCartridge, Consumed, Some("magenta"), V(35), Unknown, "percent", Some(35.0), None),
                s(4, "Yellow Ink", SupplyKind::InkCartridge, Consumed, Some("yellow"), V(5), Unknown, "percent", Some(5.0), None),
            ],
            errors: vec![ErrorState::LowToner],
            device_status: Some("warning"),
            printer_status: Some("idle"),
            alert: ("warning", 1104, "marker_toner_almost_empty", "Ink Low Yellow", 11, 4),
            console: vec!["Ink Low Yellow"],
            missing: vec![],
        },
        // hrDeviceTable without hrDeviceType: status and error state still
        // come from the printer's rows; model and serial from Ricoh's MIB.
        Expect {
            profile: "ricoh_no_hrtype",
            printer_index: 1,
            firmware: Some("1.40"),
            unit: "sheets",
            supplies: vec![
                s(1, "黑色碳粉", SupplyKind::Toner, Consumed, Some("black"), V(60), V(100), "percent", Some(60.0), None),
                s(2, "廢棄碳粉", SupplyKind::WasteToner, Receptacle, None, V(90), V(100), "percent", None, Some(10.0)),
                s(3, "青色碳粉", SupplyKind::Toner, Consumed, Some("cyan"), V(10), V(100), "percent", Some(10.0), None),
            ],
            errors: vec![ErrorState::LowToner],
            device_status: Some("warning"),
            printer_status: None,
            alert: ("warning", 1104, "marker_toner_almost_empty", "Toner low (cyan)", 11, 3),
            console: vec![],
            missing: vec!["printer_status"],
        },
        // No HOST-RESOURCES-MIB: model and firmware from sysDescr, the
        // maker from sysDescr over the OEM's enterprise number.
        Expect {
            profile: "oem_sysdescr_only",
            printer_index: 1,
            firmware: Some("CXTZJ.081.022"),
            unit: "impressions",
            supplies: vec![
                s(1, "Black Cartridge", SupplyKind::Toner, Consumed, Some("black"), V(3000), V(15000), "impressions", Some(20.0), None),
                s(2, "Imaging Kit", SupplyKind::Other, Consumed, None, V(45000), V(60000), "impressions", Some(75.0), None),
                s(3, "Maintenance Kit", SupplyKind::Fuser, Consumed, None, V(150_000), V(200_000), "impressions", Some(75.0), None),
            ],
            errors: vec![],
            device_status: None,
            printer_status: None,
            alert: ("critical", 8, "jam", "Paper jam in tray 1", 13, 1),
            console: vec![],
            missing: vec!["device_status", "printer_status", "error_states"],
        },
    ]
}

fn check(rec: &DeviceRecord, p: &Printer, before: u64, after: u64) {
    let snmp = p.snmp.as_ref().expect("snmp");
    let id = &snmp.identity;
    let e = expectations()
        .into_iter()
        .find(|e| e.profile == id.profile)
        .expect("a printer profile");
    let name = format!("{} at {}", id.profile, p.addr);
    assert_eq!(rec.address, p.addr.to_string(), "{name}");
    assert_eq!(rec.printer_index, Some(e.printer_index), "{name}");
    assert_eq!(rec.manufacturer.as_deref(), id.vendor, "{name}");
    assert_eq!(rec.model.as_deref(), id.model, "{name}");
    assert_eq!(rec.serial.as_deref(), Some(id.serial.as_str()), "{name}");
    assert_eq!(rec.mac.as_deref(), Some(id.mac.as_str()), "{name}");
    assert_eq!(
        rec.sys_name.as_deref(),
        Some(id.sys_name.as_str()),
        "{name}"
    );
    assert_eq!(rec.firmware.as_deref(), e.firmware, "{name}");
    assert!(
        rec.field_errors.is_empty(),
        "{name}: {:?}",
        rec.field_errors
    );

    let c = &rec.counters;
    let total = c.total.unwrap_or_else(|| panic!("{name}: no total"));
    assert!(
        (before..=after).contains(&total),
        "{name}: total {total} not in {before}..={after}"
    );
    assert_eq!(c.source.as_deref(), Some("printer-mib"), "{name}");
    assert_eq!(c.unit.as_deref(), Some(e.unit), "{name}");
    // The vendor counters come from the same instant's total (same split
    // as the simulator's): within the scan's window too.
    match id.profile {
        "hp_color_mfp" => {
            let (m, col) = (c.mono.expect("mono"), c.colour.expect("colour"));
            assert!(
                (before..=after + 2).contains(&(m + col)),
                "{name}: {m} + {col}"
            );
        }
        "kyocera_mono" | "ricoh_color_mfp" => {
            let (pr, cp) = (c.print.expect("print"), c.copy.expect("copy"));
            assert!(
                (before..=after + 2).contains(&(pr + cp)),
                "{name}: {pr} + {cp}"
            );
        }
        _ => {}
    }

    assert_eq!(
        rec.supplies.len(),
        e.supplies.len(),
        "{name}: {:?}",
        rec.supplies
    );
    for (got, want) in rec.supplies.iter().zip(&e.supplies) {
        let sn = format!("{name}, supply {}", want.index);
        assert_eq!(got.index, want.index, "{sn}");
        assert_eq!(got.description.as_deref(), Some(want.description), "{sn}");
        assert_eq!(got.kind, Some(want.kind), "{sn}");
        assert_eq!(got.class, Some(want.class), "{sn}");
        assert_eq!(got.colour.as_deref(), want.colour, "{sn}");
        assert_eq!(got.level, want.level, "{sn}");
        assert_eq!(got.max, want.max, "{sn}");
        assert_eq!(got.unit.as_deref(), Some(want.unit), "{sn}");
        assert_eq!(got.percent, want.percent, "{sn}");
        assert_eq!(got.fullness_percent, want.fullness, "{sn}");
    }
    assert_eq!(rec.error_states, e.errors, "{name}");
    assert_eq!(rec.device_status.as_deref(), e.device_status, "{name}");
    assert_eq!(rec.printer_status.as_deref(), e.printer_status, "{name}");
    assert_eq!(rec.missing, e.missing, "{name}");
    assert_eq!(rec.alerts.len(), 1, "{name}: {:?}", rec.alerts);
    let a = &rec.alerts[0];
    let (sev, code, code_name, descr, group, gi) = e.alert;
    assert_eq!(a.severity.as_deref(), Some(sev), "{name}");
    assert_eq!(a.code, Some(code), "{name}");
    assert_eq!(a.code_name.as_deref(), Some(code_name), "{name}");
    assert_eq!(a.description.as_deref(), Some(descr), "{name}");
    assert_eq!((a.group, a.group_index), (Some(group), Some(gi)), "{name}");
    assert_eq!(rec.console, e.console, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_reads_every_simulated_printer() {
    let addrs = [
        "127.20.0.1",  // hp
        "127.20.0.2",  // kyocera
        "127.20.0.3",  // ricoh
        "127.20.0.4",  // brother
        "127.20.0.5",  // switch: no printer
        "127.20.0.6",  // hp again: a second, different instance
        "127.20.0.9",  // no hrDeviceType (Ricoh-like)
        "127.20.0.10", // no HOST-RESOURCES-MIB, rebadged (Toshiba on Lexmark)
    ];
    let f = fleet(
        &addrs,
        SnmpOptions {
            profile_of: vec![(ip("127.20.0.5"), "switch".into())],
            profiles: [
                "hp_color_mfp",
                "kyocera_mono",
                "ricoh_color_mfp",
                "brother_inkjet",
                "switch",
                "hp_color_mfp",
                "ricoh_no_hrtype",
                "oem_sysdescr_only",
            ]
            .map(String::from)
            .to_vec(),
            // .7 and .8 hold no device and stay silent, as on a LAN.
            black_hole: Some(BlackHole::Addresses(vec![
                ip("127.20.0.7"),
                ip("127.20.0.8"),
            ])),
            ..SnmpOptions::default()
        },
    )
    .await;
    let port = f.snmp_port.expect("snmp port");
    let before: Vec<u64> = f
        .printers
        .iter()
        .map(|p| p.snmp.as_ref().expect("snmp").total_now())
        .collect();
    // 500 ms x 2 attempts x (v2c, v1) = 2 s for each silent address, in
    // parallel; the printers answer in milliseconds.
    let (recs, _, took) = scan(
        "127.20.0.1-127.20.0.10",
        port,
        &["--timeout", "500ms", "--retries", "1"],
    )
    .await;
    let after: Vec<u64> = f
        .printers
        .iter()
        .map(|p| p.snmp.as_ref().expect("snmp").total_now())
        .collect();

    let got: Vec<&str> = recs.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        got,
        [
            "127.20.0.1",
            "127.20.0.2",
            "127.20.0.3",
            "127.20.0.4",
            "127.20.0.6",
            "127.20.0.9",
            "127.20.0.10"
        ]
    );
    for (i, p) in f.printers.iter().enumerate() {
        if let Some(rec) = recs.iter().find(|r| r.address == p.addr.to_string()) {
            check(rec, p, before[i], after[i]);
        }
    }
    assert_ne!(recs[0].serial, recs[4].serial);
    assert_ne!(recs[0].mac, recs[4].mac);
    assert!(took < Duration::from_secs(8), "scan took {took:?}");
    let hole = f.black_hole.clone().expect("black hole");
    // Each silent address: 2 attempts of v2c and 2 of v1.
    assert_eq!(hole.received(), 8, "datagrams to the silent addresses");

    // A second scan sees the counters grown.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (again, _, _) = scan("127.20.0.1", port, &["--timeout", "500ms"]).await;
    assert!(again[0].counters.total > recs[0].counters.total);
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_survives_hostile_devices() {
    let faults = [
        ("127.20.1.1", "hp_color_mfp", Fault::TruncatedBer),
        ("127.20.1.2", "kyocera_mono", Fault::WrongRequestId),
        ("127.20.1.3", "ricoh_color_mfp", Fault::HugeTable),
        ("127.20.1.4", "brother_inkjet", Fault::NonUtf8Strings),
        ("127.20.1.5", "hp_color_mfp", Fault::WrongTypes),
        ("127.20.1.6", "kyocera_mono", Fault::CountersBackwards),
    ];
    let mut addrs: Vec<&str> = faults.iter().map(|f| f.0).collect();
    addrs.push("127.20.1.7"); // a healthy brother
    let f = fleet(
        &addrs,
        SnmpOptions {
            profile_of: faults
                .iter()
                .map(|(a, p, _)| (ip(a), p.to_string()))
                .chain([(ip("127.20.1.7"), "brother_inkjet".to_string())])
                .collect(),
            faults: faults.iter().map(|(a, _, f)| (ip(a), *f)).collect(),
            ..SnmpOptions::default()
        },
    )
    .await;
    let port = f.snmp_port.expect("snmp port");
    let (recs, stderr, took) = scan(
        "127.20.1.1-127.20.1.7",
        port,
        &["--timeout", "500ms", "--retries", "1"],
    )
    .await;
    let find = |a: &str| recs.iter().find(|r| r.address == a);
    for r in &recs {
        eprintln!(
            "{}: serial {:?} total {:?} supplies {} errors {:?}",
            r.address,
            r.serial,
            r.counters.total,
            r.supplies.len(),
            r.field_errors
        );
    }
    eprintln!("stderr: {stderr}\ntook {took:?}");

    // The healthy printer is complete.
    let healthy = f
        .printers
        .iter()
        .find(|p| p.addr == ip("127.20.1.7"))
        .expect("healthy");
    let rec = find("127.20.1.7").expect("healthy printer reported");
    let total = healthy.snmp.as_ref().expect("snmp").total_now();
    check(rec, healthy, total.saturating_sub(60), total);

    // Wrong types: reported, with field errors instead of values.
    let rec = find("127.20.1.5").expect("wrong-types printer reported");
    let fields: Vec<&str> = rec.field_errors.iter().map(|e| e.field.as_str()).collect();
    for want in [
        "sys_object_id",
        "serial",
        "counters.total",
        "supplies.1.level",
        "supplies.1.kind",
        "error_states",
    ] {
        assert!(
            fields.contains(&want),
            "no field error for {want}: {fields:?}"
        );
    }
    assert_eq!(rec.supplies.len(), 5);
    // prtMarkerLifeCount is broken: the vendor total stands in.
    assert!(rec.counters.total.is_some());
    assert_eq!(rec.counters.source.as_deref(), Some("vendor:11"));

    // Non-UTF-8 strings: decoded (Latin-1 fallback), never an error.
    let rec = find("127.20.1.4").expect("non-utf8 printer reported");
    assert_eq!(
        rec.sys_name.as_deref().map(|s| s.starts_with("Drucker-B")),
        Some(true),
        "{:?}",
        rec.sys_name
    );
    assert_eq!(rec.supplies.len(), 4);

    // Huge table: reported, the walk bounded by the collector's budget.
    let rec = find("127.20.1.3").expect("huge-table printer reported");
    assert!(rec.supplies.len() > 5, "{}", rec.supplies.len());
    assert_eq!(
        rec.serial.as_deref(),
        Some(
            f.printers[2]
                .snmp
                .as_ref()
                .expect("snmp")
                .identity
                .serial
                .as_str()
        )
    );

    // Counters running backwards: reported as the device says.
    let rec = find("127.20.1.6").expect("backwards printer reported");
    let base = f.printers[5]
        .snmp
        .as_ref()
        .expect("snmp")
        .identity
        .base_total;
    assert!(rec.counters.total.is_some_and(|t| t <= base));

    // The huge table ran the budget out: the record says so.
    let walk_errors = |r: &DeviceRecord| -> Vec<String> {
        r.field_errors
            .iter()
            .filter(|e| e.field == "walk")
            .map(|e| e.error.clone())
            .collect()
    };
    let huge = find("127.20.1.3").expect("huge-table printer reported");
    assert_eq!(
        walk_errors(huge),
        ["stopped after 5000 values"],
        "{:?}",
        huge.field_errors
    );

    // Broken answers to Printer-MIB requests: that root fails and leaves a
    // trace; what came before (system group, interfaces, hrDeviceTable)
    // and the vendor subtrees after it are still read.
    for (i, a, why) in [
        (0, "127.20.1.1", "snmp: "),
        (1, "127.20.1.2", "RequestIdMismatch"),
    ] {
        let r = find(a).unwrap_or_else(|| panic!("{a}: not reported"));
        let id = &f.printers[i].snmp.as_ref().expect("snmp").identity;
        assert_eq!(r.model.as_deref(), id.model, "{a}");
        assert_eq!(r.mac.as_deref(), Some(id.mac.as_str()), "{a}");
        assert!(r.supplies.is_empty(), "{a}: supplies from broken answers");
        assert_eq!(r.serial, None, "{a}");
        let errs = walk_errors(r);
        assert_eq!(errs.len(), 1, "{a}: {errs:?}");
        assert!(
            errs[0].starts_with("1.3.6.1.2.1.43: ") && errs[0].contains(why),
            "{a}: {errs:?}"
        );
        // The vendor page counter lies past the Printer-MIB in walk order.
        assert!(r.counters.total.is_some(), "{a}: vendor counters not read");
    }
    for a in ["127.20.1.4", "127.20.1.5", "127.20.1.6", "127.20.1.7"] {
        let r = find(a).unwrap_or_else(|| panic!("{a}: not reported"));
        assert!(walk_errors(r).is_empty(), "{a}: {:?}", r.field_errors);
    }
    assert!(took < Duration::from_secs(30), "{took:?}");
    f.shutdown().await;
}

/// `dwa-agent scan` with `input` on standard input and `env` set.
fn scan_with(args: &[&str], input: &str, env: &[(&str, &str)]) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dwa-agent"))
        .args(args)
        .env("DWA_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dwa-agent");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("dwa-agent scan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn communities_come_from_a_file_or_a_variable_not_only_argv() {
    let f = fleet(
        &["127.20.2.1"],
        SnmpOptions {
            community: "s3cret-ro".into(),
            ..SnmpOptions::default()
        },
    )
    .await;
    let port = f.snmp_port.expect("snmp port").to_string();
    let base = [
        "scan",
        "127.20.2.1",
        "--port",
        &port,
        "--timeout",
        "300ms",
        "--format",
        "json",
    ];
    let found = |out: &std::process::Output| -> usize {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recs: Vec<DeviceRecord> = serde_json::from_slice(&out.stdout).expect("JSON");
        recs.len()
    };
    // Without the community: the printer stays silent.
    assert_eq!(found(&scan_with(&base, "", &[])), 0);
    // From standard input, after a comment and a wrong one.
    let mut args = base.to_vec();
    args.extend(["--community-file", "-"]);
    let out = scan_with(&args, "# site communities\nwrong\n\ns3cret-ro\n", &[]);
    assert_eq!(found(&out), 1);
    // From a variable.
    let mut args = base.to_vec();
    args.extend(["--community-env", "SITE_COMMUNITY"]);
    let out = scan_with(&args, "", &[("SITE_COMMUNITY", "s3cret-ro")]);
    assert_eq!(found(&out), 1);
    // An empty file is an error, not a silent "public".
    let mut args = base.to_vec();
    args.extend(["--community-file", "-"]);
    let out = scan_with(&args, "# nothing\n", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no community"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
