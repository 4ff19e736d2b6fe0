//! Names under `localhost` are loopback (RFC 6761 §6.3) in the agent itself:
//! it enrolls with and connects to a relay named by one, though no system
//! resolver on the machine knows the name.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use dwa_e2e_tests::*;

/// A name nobody's resolver knows, under the default domain.
const NAME: &str = "relay-test.dwa.localhost";

#[test]
fn agent_enrolls_and_connects_by_a_localhost_name() {
    // The name is loopback, so the relay's HTTPS listener is on 127.0.0.1
    // (other fixtures use their own 127.A.B.1; a free port avoids them).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let mut relay = Relay::init_with(|cfg| {
        let https = format!(":{HTTPS_PORT}\"");
        *cfg = cfg
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("listen") && l.ends_with(&https) {
                    format!("listen = \"127.0.0.1:{port}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
    });
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let token = relay.token("acme", 1, "1h");

    // Upper case and a trailing dot: the same name.
    let url = format!("https://{}.:{port}", NAME.to_ascii_uppercase());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = enroll_output(
        &url,
        &token,
        &dir.path().join("agent.toml"),
        &EnrollArgs::default(),
    );
    assert!(
        out.status.success(),
        "enroll by {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The tunnel (SSH over WebSocket on the HTTPS port) dials the same name.
    let mut agent = Agent::enroll_with(
        &format!("https://{NAME}:{port}"),
        &relay.token("acme", 1, "1h"),
        EnrollArgs {
            transport: "websocket",
            ..EnrollArgs::default()
        },
    );
    agent.start();
    relay.wait_connected(&agent);
}
