//! Property-based fuzzing of what the agent decodes from printers: the
//! SNMP decoder over arbitrary varbinds (printer, host-resources, system
//! and vendor subtrees, every value type), and the same over the real
//! walks with their values mutated. Whatever a device answers, the result
//! is a record (with field errors), never a panic.

use dwa_agent::telemetry::decode::decode;
use dwa_proto::snmprec::{Oid, Value, Walk};
use proptest::prelude::*;

/// Subtrees the decoder reads.
const ROOTS: [&[u32]; 6] = [
    &[1, 3, 6, 1, 2, 1, 1],
    &[1, 3, 6, 1, 2, 1, 2, 2, 1],
    &[1, 3, 6, 1, 2, 1, 25, 3],
    &[1, 3, 6, 1, 2, 1, 43],
    &[1, 3, 6, 1, 4, 1, 11, 2, 3, 9, 4, 2],
    &[1, 3, 6, 1, 4, 1, 1347, 42],
];

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![-3i64..=3, 0i64..200].prop_map(Value::Integer),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(Value::OctetString),
        "[ -~]{0,40}".prop_map(|s| Value::OctetString(s.into_bytes())),
        Just(Value::Null),
        proptest::collection::vec(0u32..50, 0..12).prop_map(|v| Value::ObjectId(Oid(v))),
        any::<[u8; 4]>().prop_map(Value::IpAddress),
        any::<u32>().prop_map(Value::Counter32),
        any::<u32>().prop_map(Value::Gauge32),
        any::<u32>().prop_map(Value::TimeTicks),
        any::<u64>().prop_map(Value::Counter64),
    ]
}

fn varbind() -> impl Strategy<Value = (Oid, Value)> {
    (
        0usize..ROOTS.len(),
        proptest::collection::vec(0u32..12, 0..6),
        value(),
    )
        .prop_map(|(r, tail, v)| {
            let mut oid = ROOTS[r].to_vec();
            oid.extend(tail);
            (Oid(oid), v)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_walk_decodes_to_a_record(binds in proptest::collection::vec(varbind(), 0..120)) {
        let mut walk = Walk::new();
        for (o, v) in binds {
            walk.insert(o, v);
        }
        let rec = decode("192.0.2.7", &walk);
        prop_assert_eq!(rec.address.as_str(), "192.0.2.7");
    }
}

/// The real walks, each value replaced by an arbitrary one of any type
/// with some probability: still a record.
#[test]
fn mutated_real_walks_decode_to_a_record() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/snmprec");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("SKIPPED: {} is absent (the shared fixtures)", dir.display());
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let mut walks = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "snmprec") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (walk, _) = dwa_proto::snmprec::parse_lenient(&text);
        let binds: Vec<(Oid, Value)> = walk.iter().map(|(o, v)| (o.clone(), v.clone())).collect();
        walks += 1;
        let n = binds.len().max(1);
        runner
            .run(
                &proptest::collection::vec((0..n, value()), 1..40),
                |swaps| {
                    let mut w = Walk::new();
                    for (o, v) in &binds {
                        w.insert(o.clone(), v.clone());
                    }
                    for (i, v) in swaps {
                        if let Some((o, _)) = binds.get(i) {
                            w.insert(o.clone(), v);
                        }
                    }
                    let rec = decode("192.0.2.8", &w);
                    prop_assert_eq!(rec.address.as_str(), "192.0.2.8");
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(walks > 0, "no .snmprec walk in {}", dir.display());
}
