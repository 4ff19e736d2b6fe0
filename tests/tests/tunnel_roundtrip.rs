//! Enroll → connect → the relay opens a stream to an allowed target → bytes
//! round-trip (a small exchange, then 64 MiB full-duplex); over plain SSH, over the WebSocket, and with `auto` falling
//! back to the WebSocket when the SSH port is unreachable.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::*;

async fn roundtrip_through(transport: &str, break_ssh_port: bool) {
    let relay = Relay::start_new();
    let target_ip = relay.ip(10);
    let net = format!("{target_ip}/32");
    let mut agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&net],
            ports: &[7000],
            transport,
        },
    );
    if break_ssh_port {
        // Nothing listens there: `auto` must fall back to the WebSocket.
        agent.edit_config(|c| *c = c.replace("ssh_port = 2222", "ssh_port = 1"));
    }
    agent.start();
    relay.wait_connected(&agent);
    let target = echo_target(&format!("{target_ip}:7000")).await;
    relay.add_device(&agent, &target_ip);

    let mut s = relay
        .open(&agent.id, &target_ip, 7000)
        .await
        .expect("stream");
    let data = pattern(300_000, 7);
    assert_eq!(roundtrip(&mut s, &data).await, data);
    drop(s);
    // Bulk both ways at once: the SSH session flushes megabytes per write,
    // which the WebSocket transport must cut into messages.
    let bulk = relay
        .open(&agent.id, &target_ip, 7000)
        .await
        .expect("bulk stream");
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        duplex_echo(bulk, 64 << 20),
    )
    .await
    .expect("64 MiB echo timed out");
    assert_eq!(target.count(), 2);

    let want = if transport == "ssh" {
        "ssh"
    } else {
        "websocket"
    };
    let connects = relay.audit_kind("agent.connect");
    assert_eq!(
        connects.last().expect("connect record")["detail"]["transport"],
        want
    );
    assert_eventually!(
        relay
            .audit_kind("stream.close")
            .iter()
            .any(|r| r["detail"]["bytes_up"] == 300_000 && r["detail"]["bytes_down"] == 300_000),
        std::time::Duration::from_secs(10),
        "stream close record with byte counts missing: {:?}",
        relay.audit()
    );
    let out = relay.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_roundtrip_over_ssh() {
    roundtrip_through("ssh", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_roundtrip_over_websocket() {
    roundtrip_through("websocket", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_falls_back_to_websocket() {
    roundtrip_through("auto", true).await;
}
