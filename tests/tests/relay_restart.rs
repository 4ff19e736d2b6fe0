//! The agent comes back by itself: after a clean relay restart, after a
//! kill -9 of the relay, after its own kill -9; and a new session of an agent
//! replaces a stale one atomically.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dwa_e2e_tests::*;

async fn stream_works(relay: &Relay, agent: &Agent, ip: &str) {
    let mut s = relay.open(&agent.id, ip, 7000).await.expect("stream");
    assert_eq!(roundtrip(&mut s, b"hello again").await, b"hello again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_reconnects_after_relay_restart_and_kill9() {
    let (mut relay, mut agent, ip) = Relay::with_agent(&[7000]);
    let _echo = echo_target(&format!("{ip}:7000")).await;
    stream_works(&relay, &agent, &ip).await;

    relay.stop();
    relay.start();
    relay.wait_connected(&agent);
    stream_works(&relay, &agent, &ip).await;

    relay.kill9();
    relay.start();
    relay.wait_connected(&agent);
    stream_works(&relay, &agent, &ip).await;

    agent.kill9();
    assert_eventually!(
        !relay.connected(&agent.id),
        Duration::from_secs(20),
        "relay kept a dead agent"
    );
    agent.start();
    relay.wait_connected(&agent);
    stream_works(&relay, &agent, &ip).await;

    // Nothing was lost from the audit log across the restarts.
    assert!(relay.audit_kind("agent.connect").len() >= 4);
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_session_replaces_a_stale_one() {
    let (relay, mut old, ip) = Relay::with_agent(&[7000]);
    let _echo = echo_target(&format!("{ip}:7000")).await;
    // Freeze the first process: its TCP connection stays open but nothing
    // answers, as with a half-dead site link.
    old.signal(libc::SIGSTOP);
    let mut new = old.clone_process();
    new.start();
    assert_eventually!(
        !relay.audit_kind("agent.replaced").is_empty(),
        Duration::from_secs(30),
        "no replacement recorded\n{}",
        relay.logs()
    );
    // Streams go through the new session at once.
    tokio::time::timeout(Duration::from_secs(20), stream_works(&relay, &new, &ip))
        .await
        .expect("stream through the new session");
    // The frozen session is cut, not left to linger until keepalives give
    // up (a minute): its end is recorded as a replacement.
    assert_eventually!(
        relay
            .audit_kind("agent.disconnect")
            .iter()
            .any(|r| r["detail"]["replaced"] == true),
        Duration::from_secs(10),
        "the stale session was not closed: {:?}",
        relay.audit_kind("agent.disconnect")
    );
    old.kill9();
    let _ = &mut new;
}
