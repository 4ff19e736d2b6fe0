//! Targets the agent's policy denies never get a connection, whatever the
//! relay asks: the target listeners must see nothing, the requester gets
//! the reason, and the audit log says who decided.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use dwa_e2e_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_targets_never_get_a_connection() {
    let relay = Relay::start_new();
    // A loopback listener on an ephemeral port that the policy lists, so the
    // only reason to refuse it is the address.
    let lo = echo_target("127.0.0.1:0").await;
    let lo_port = lo.addr.port();
    let ok_ip = relay.ip(10);
    let allow = format!("{ok_ip}/32");
    let mut agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&allow],
            ports: &[7000, lo_port],
            transport: "ssh",
        },
    );
    agent.start();
    relay.wait_connected(&agent);
    let ok = echo_target(&format!("{ok_ip}:7000")).await;
    let other_port = echo_target(&format!("{ok_ip}:7001")).await;

    for d in [ok_ip.as_str(), "127.0.0.1", "::ffff:127.0.0.1", "localhost"] {
        relay.add_device(&agent, d);
    }

    // Denied by the agent: loopback not named, its mapped form, a name
    // resolving to loopback.
    for host in ["127.0.0.1", "::ffff:127.0.0.1", "localhost"] {
        let e = relay.open(&agent.id, host, lo_port).await.expect_err(host);
        assert!(
            e.contains("denied by the agent") && e.contains("loopback"),
            "{host}: {e}"
        );
    }
    // Denied by the relay already: a port the agent does not allow, and a
    // device not registered for this agent.
    let e = relay.open(&agent.id, &ok_ip, 7001).await.expect_err("port");
    assert!(e.contains("7001"), "{e}");
    let e = relay
        .open(&agent.id, &relay.ip(11), 7000)
        .await
        .expect_err("unregistered");
    assert!(e.contains("not registered"), "{e}");

    assert_eq!(lo.count(), 0, "a denied loopback target was connected to");
    assert_eq!(other_port.count(), 0, "a denied port was connected to");

    // The allowed one still works on the same session.
    let mut s = relay.open(&agent.id, &ok_ip, 7000).await.expect("allowed");
    assert_eq!(roundtrip(&mut s, b"ping").await, b"ping");
    assert_eq!(ok.count(), 1);

    let denied = relay.audit_kind("stream.denied");
    let by_agent: Vec<_> = denied
        .iter()
        .filter(|r| r["detail"]["decided_by"] == "agent")
        .collect();
    let by_relay: Vec<_> = denied
        .iter()
        .filter(|r| r["detail"]["decided_by"] == "relay")
        .collect();
    assert_eq!(by_agent.len(), 3, "{denied:?}");
    assert_eq!(by_relay.len(), 2, "{denied:?}");
    for r in &by_agent {
        assert_eq!(r["detail"]["rule"], "special", "{r}");
        assert!(
            r["actor"].as_str().unwrap_or("").starts_with("cli:"),
            "the requester is the actor: {r}"
        );
    }
}

#[test]
fn policy_check_explains_decisions() {
    let relay = Relay::start_new();
    let ip = relay.ip(10);
    let agent = Agent::enroll(
        &relay,
        EnrollArgs {
            allow: &[&format!("{ip}/32")],
            ports: &[80],
            transport: "ssh",
        },
    );
    let check = |target: &str| {
        Command::new(&bins().1)
            .args(["policy", "check", target, "--config"])
            .arg(&agent.config)
            .output()
            .expect("policy check")
    };
    let out = check(&format!("{ip}:80"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("allow") && text.contains("policy.allow[0]"),
        "{text}"
    );

    for (t, why) in [
        ("127.0.0.1:80", "loopback"),
        ("[::ffff:127.0.0.1]:80", "loopback"),
        (&format!("{ip}:22") as &str, "port 22"),
        ("169.254.1.1:80", "link-local"),
    ] {
        let out = check(t);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{t}: {text}");
        assert!(
            text.starts_with("deny") && text.contains(why),
            "{t}: {text}"
        );
    }
    let out = check("not-an-address");
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}
