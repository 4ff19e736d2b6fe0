//! SIGHUP reloads the configuration of a running relay or agent: what is
//! read at each use takes effect at once, what is bound at start is named
//! and kept, and a file that does not load changes nothing — the process
//! keeps serving with the configuration it had, and says why.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dwa_e2e_tests::browser::Api;
use dwa_e2e_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn hup(pid: Option<u32>) {
    let pid = pid.expect("running") as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// Waits (bounded) until `f` gives something.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A log-in refused before two-factor is looked at: a dummy code.
async fn login(relay: &Relay, user: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({"username": user, "password": password, "totp": "000000"});
    Api::new(relay)
        .call(Method::POST, "/login", Some(body))
        .await
}

/// `user` fails `n` times, then gives the right password: the status then.
async fn after_failures(relay: &Relay, user: &str, password: &str, n: usize) -> StatusCode {
    for _ in 0..n {
        assert_eq!(
            login(relay, user, "wrong").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    login(relay, user, password).await.0
}

fn edit_relay_toml(relay: &Relay, f: impl FnOnce(&mut toml::Table)) {
    let path = relay.data.join("relay.toml");
    let mut t: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    f(&mut t);
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_reload_applies_per_use_settings_keeps_bound_ones_and_survives_a_bad_file() {
    let mut relay = Relay::init();
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let mut pw = Vec::new();
    for name in ["tina", "tom", "ted"] {
        let u = relay
            .add_user(&[name, "--role", "technician", "--customer", "acme"])
            .await;
        pw.push(u["password"].as_str().unwrap().to_string());
    }
    // Before: two failures do not lock (the default is five): the right
    // password gets as far as two-factor.
    assert_eq!(
        after_failures(&relay, "tina", &pw[0], 2).await,
        StatusCode::UNAUTHORIZED
    );

    // Lockout is read at each log-in; the SSH listener is bound at start.
    edit_relay_toml(&relay, |t| {
        let accounts = t
            .entry("accounts")
            .or_insert_with(|| toml::Table::new().into());
        accounts
            .as_table_mut()
            .unwrap()
            .insert("lockout_after".into(), 2.into());
        let ssh = t["ssh"].as_table_mut().unwrap();
        ssh.insert("listen".into(), "127.0.0.1:1".into());
    });
    hup(relay.pid());
    let rec = wait_for("relay.config_reloaded", || {
        relay.audit_kind("relay.config_reloaded").pop()
    })
    .await;
    let applied: Vec<&str> = rec["detail"]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(applied, vec!["accounts"], "{rec}");
    assert_eq!(rec["detail"]["restart_needed"], json!(["ssh"]), "{rec}");
    assert!(relay.logs().contains("relay.toml reloaded"));
    // In force now: the second failure locks.
    assert_eq!(
        after_failures(&relay, "tom", &pw[1], 2).await,
        StatusCode::LOCKED
    );

    // A file that does not load: refused, audited, nothing changes.
    let path = relay.data.join("relay.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    edit_relay_toml(&relay, |t| {
        let a = t["accounts"].as_table_mut().unwrap();
        a.insert("lockout_afterr".into(), 9.into());
        a.insert("lockout_after".into(), 9.into());
    });
    hup(relay.pid());
    wait_for("the refused reload in the log", || {
        relay
            .logs()
            .contains("relay.toml not reloaded")
            .then_some(())
    })
    .await;
    // (The CLI reading the audit log loads relay.toml too.)
    std::fs::write(&path, &good).unwrap();
    let refused = relay
        .audit_kind("relay.config_reload_refused")
        .pop()
        .expect("the refusal is audited");
    assert!(
        refused["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("lockout_afterr"),
        "{refused}"
    );
    // Still serving, still with lockout after two (not the bad file's 9).
    assert_eq!(
        after_failures(&relay, "ted", &pw[2], 2).await,
        StatusCode::LOCKED
    );
    let ok = relay.cli(&["audit", "verify"]);
    assert!(ok.status.success(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_reload_puts_a_narrower_policy_in_force_without_dropping_the_link() {
    let (relay, mut agent, ip) = Relay::with_agent(&[7000]);
    let target = echo_target(&format!("{ip}:7000")).await;
    let mut s = relay.open(&agent.id, &ip, 7000).await.expect("allowed");
    assert_eq!(roundtrip(&mut s, b"before").await, b"before");
    drop(s);
    let before = target.count();
    assert_eq!(before, 1);

    // The site narrows the policy to another address and reloads.
    let other = relay.ip(11);
    agent.edit_config(|c| *c = c.replace(&format!("{ip}/32"), &format!("{other}/32")));
    agent.signal(libc::SIGHUP);
    wait_for("the agent's reload", || {
        agent.logs().contains("agent.toml reloaded").then_some(())
    })
    .await;
    // The relay still believes .10 is allowed (the agent's hello is older);
    // the agent, the final word, refuses it on the same link.
    let e = relay
        .open(&agent.id, &ip, 7000)
        .await
        .expect_err("denied after the reload");
    assert!(e.contains("denied by the agent"), "{e}");
    assert_eq!(target.count(), before, "a refused target was connected to");
    assert!(relay.connected(&agent.id), "the reload dropped the link");

    // A file that does not load keeps the policy in force and the agent up.
    agent.edit_config(|c| c.push_str("\nnot toml [[[\n"));
    agent.signal(libc::SIGHUP);
    wait_for("the refused reload", || {
        agent
            .logs()
            .contains("agent.toml not reloaded")
            .then_some(())
    })
    .await;
    assert!(agent.is_running());
    let e = relay
        .open(&agent.id, &ip, 7000)
        .await
        .expect_err("still denied");
    assert!(e.contains("denied by the agent"), "{e}");
    assert_eq!(target.count(), before);

    // The site's own log says when its policy changed.
    let audit = std::fs::read_to_string(agent.config_dir().join("audit.jsonl")).unwrap();
    let reload: Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "config.reloaded")
        .expect("config.reloaded in the agent's audit log");
    assert_eq!(reload["detail"]["applied"], json!(["policy"]), "{reload}");
}
