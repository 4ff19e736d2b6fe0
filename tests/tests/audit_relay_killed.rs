//! A relay killed with -9 in the middle of a 1 GiB stream leaves a
//! `stream.open` without its close; the next start writes that close
//! (error `relay restart: …`) before it serves anything, then
//! `relay.started`. A second start finds nothing left to close, and the
//! chain verifies throughout.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dwa_e2e_tests::*;
use serde_json::Value;
use tokio::io::AsyncReadExt;

fn closes_of(relay: &Relay, stream: &Value) -> Vec<Value> {
    relay
        .audit_kind("stream.close")
        .into_iter()
        .filter(|r| r["detail"]["stream"] == *stream)
        .collect()
}

fn verify(relay: &Relay) {
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_cut_by_kill9_gets_its_close_record_at_restart() {
    let (mut relay, agent, ip) = Relay::with_agent(&[7000]);
    let _gen = generator_target(&format!("{ip}:7000"), 1 << 30).await;

    // A finished stream first: its close is written the ordinary way and
    // must not be written twice.
    {
        let mut s = relay.open(&agent.id, &ip, 7000).await.expect("stream");
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).await.expect("first MiB");
    }
    assert_eventually!(
        relay.audit_kind("stream.close").len() == 1,
        Duration::from_secs(10),
        "the first stream's close record"
    );

    let mut s = relay.open(&agent.id, &ip, 7000).await.expect("stream");
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..8 {
        s.read_exact(&mut buf).await.expect("8 MiB of the 1 GiB");
    }
    let opens = relay.audit_kind("stream.open");
    assert_eq!(opens.len(), 2);
    let cut = opens[1]["detail"]["stream"].clone();
    relay.kill9();
    drop(s);
    assert!(
        relay.audit_kind("stream.close").len() == 1,
        "killed: no close record for the cut stream yet"
    );

    relay.start();
    relay.wait_connected(&agent);
    let closes = closes_of(&relay, &cut);
    let late: Vec<&Value> = closes
        .iter()
        .filter(|r| r["id"].as_i64() > opens[1]["id"].as_i64())
        .collect();
    assert_eq!(late.len(), 1, "one close for the cut stream: {closes:?}");
    let c = late[0];
    assert!(
        c["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("relay restart")),
        "{c}"
    );
    assert_eq!(c["detail"]["target"], opens[1]["detail"]["target"]);
    assert_eq!(c["actor"], opens[1]["actor"]);
    assert_eq!(c["agent"], opens[1]["agent"]);
    let started = relay.audit_kind("relay.started");
    let last = started.last().expect("relay.started");
    assert_eq!(last["detail"]["unclosed_streams"], 1, "{started:?}");
    assert!(
        last["id"].as_i64() > c["id"].as_i64(),
        "the close is written before the relay says it started"
    );
    verify(&relay);

    // Nothing is left to close the next time.
    relay.stop();
    relay.start();
    relay.wait_connected(&agent);
    let started = relay.audit_kind("relay.started");
    assert_eq!(started.last().unwrap()["detail"]["unclosed_streams"], 0);
    assert_eq!(relay.audit_kind("stream.close").len(), 2);
    verify(&relay);
}
