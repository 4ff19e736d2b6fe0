//! Property-based fuzzing of the wire decoders both ends feed with what
//! the other end (possibly hostile) sends: control frames in any chunking,
//! enrollment tokens, snmpsim walks (seeded from the real walks in
//! `../shared/fixtures/snmprec` when present), ingest batches. Each must
//! give a value or a clean error — never a panic — and hold bounded
//! memory. Case counts stay small so CI spends seconds here.

use dwa_proto::control::{encode, ControlMsg, Decoder, MAX_FRAME};
use dwa_proto::enroll::EnrollToken;
use dwa_proto::telemetry::IngestBatch;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Real frames to mutate: every message kind the peers send most.
fn seed_frames() -> Vec<Vec<u8>> {
    [
        ControlMsg::Ping { seq: 7 },
        ControlMsg::Pong { seq: 7 },
        ControlMsg::Credit {
            stream: 3,
            bytes: 65_536,
        },
    ]
    .iter()
    .map(encode)
    .collect()
}

/// Feeds `data` in the given chunk sizes; returns the messages, whether
/// it ended in an error, and the most bytes the decoder held.
fn drain(data: &[u8], cuts: &[usize]) -> (usize, bool, usize) {
    let mut d = Decoder::new();
    let (mut msgs, mut held) = (0, 0);
    let mut rest = data;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        d.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_msg() {
                Ok(Some(_)) => msgs += 1,
                Ok(None) => break,
                Err(_) => return (msgs, true, held.max(d.pending())),
            }
        }
        held = held.max(d.pending());
    }
    (msgs, false, held)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn control_frames_never_panic_and_stay_bounded(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(1usize..512, 1..8),
    ) {
        let (_, _, held) = drain(&data, &cuts);
        // At most one frame's worth plus one chunk is ever held.
        prop_assert!(held <= 4 + MAX_FRAME + 512);
    }

    #[test]
    fn mutated_frames_decode_or_fail_cleanly(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cuts in proptest::collection::vec(1usize..64, 1..4),
    ) {
        let mut frame = seed_frames()[which].clone();
        for (at, b) in flips {
            let i = at % frame.len();
            frame[i] ^= b;
        }
        drain(&frame, &cuts);
    }

    #[test]
    fn the_chunking_does_not_change_what_is_decoded(
        picks in proptest::collection::vec(0usize..3, 1..20),
        cuts in proptest::collection::vec(1usize..40, 1..6),
    ) {
        let seeds = seed_frames();
        let stream: Vec<u8> = picks.iter().flat_map(|&i| seeds[i].clone()).collect();
        let (whole, err, _) = drain(&stream, &[stream.len().max(1)]);
        let (chunked, err2, _) = drain(&stream, &cuts);
        prop_assert!(!err && !err2);
        prop_assert_eq!(whole, picks.len());
        prop_assert_eq!(chunked, picks.len());
    }

    #[test]
    fn enrollment_tokens_parse_or_fail_cleanly(text in ".{0,200}") {
        let _ = EnrollToken::parse(&text);
    }

    #[test]
    fn mutated_tokens_parse_or_fail_cleanly(
        secret in any::<[u8; 16]>(),
        fp in any::<[u8; 32]>(),
        cut in any::<usize>(),
        junk in "[ -~]{0,8}",
    ) {
        let good = EnrollToken { secret, tls_fingerprint: fp }.encode();
        prop_assert_eq!(EnrollToken::parse(&good).ok(), Some(EnrollToken { secret, tls_fingerprint: fp }));
        let at = cut % (good.len() + 1);
        let bad = format!("{}{junk}{}", &good[..at], &good[at..]);
        let _ = EnrollToken::parse(&bad);
    }

    #[test]
    fn snmprec_lines_parse_or_fail_cleanly(text in "([0-9.]{0,30}\\|[0-9a-z]{0,4}\\|[ -~]{0,40}\n){0,20}") {
        let _ = dwa_proto::snmprec::parse_lenient(&text);
        let _ = dwa_proto::snmprec::parse(&text);
    }

    #[test]
    fn ingest_batches_parse_or_fail_cleanly(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = serde_json::from_slice::<IngestBatch>(&data);
    }

    #[test]
    fn ingest_batch_shapes_parse_or_fail_cleanly(
        items in proptest::collection::vec(
            prop_oneof![
                Just("{\"type\":\"reading\",\"id\":\"a\",\"scan\":\"b\",\"taken_at\":\"x\",\"record\":{}}".to_string()),
                Just("{\"type\":\"scan_done\"}".to_string()),
                "\\{\"type\":\"[a-z_]{0,12}\"(,\"[a-z]{1,8}\":(null|[0-9]{1,20}|\"[ -~]{0,10}\"|\\[\\]|\\{\\})){0,4}\\}",
            ],
            0..20,
        ),
    ) {
        let body = format!("{{\"items\":[{}]}}", items.join(","));
        let _ = serde_json::from_str::<IngestBatch>(&body);
    }
}

/// Every real walk, with bytes of its lines mutated: no panic.
#[test]
fn mutated_real_walks_parse_or_fail_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/snmprec");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("SKIPPED: {} is absent (the shared fixtures)", dir.display());
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
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
        assert!(!walk.is_empty(), "{} gave no varbind", path.display());
        walks += 1;
        let bytes = text.into_bytes();
        runner
            .run(
                &proptest::collection::vec((any::<usize>(), any::<u8>()), 1..32),
                |flips| {
                    let mut b = bytes.clone();
                    for (at, x) in flips {
                        let i = at % b.len().max(1);
                        if let Some(c) = b.get_mut(i) {
                            *c ^= x;
                        }
                    }
                    let _ = dwa_proto::snmprec::parse_lenient(&String::from_utf8_lossy(&b));
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    assert!(walks > 0, "no .snmprec walk in {}", dir.display());
}
