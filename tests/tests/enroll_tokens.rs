//! Enrollment tokens: at most their number of uses, never after expiry, and
//! never with a relay whose certificate is not the one the token names.
//! Each refusal is clear to the person enrolling and audited.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dwa_e2e_tests::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn token_works_five_times_then_refuses() {
    let relay = Relay::start_new();
    let token = relay.token("acme", 5, "1h");
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let out = enroll_output(
            &relay.url(),
            &token,
            &dir.path().join(format!("a{i}.toml")),
            &EnrollArgs::default(),
        );
        assert!(out.status.success(), "use {}: {}", i + 1, stderr(&out));
    }
    let cfg = dir.path().join("a5.toml");
    let out = enroll_output(&relay.url(), &token, &cfg, &EnrollArgs::default());
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("already used 5 times"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one clear line: {e}");
    assert!(!cfg.exists(), "a refused enrollment wrote agent.toml");
    assert!(!dir.path().join("agent_key").exists() || dir.path().join("a0.toml").exists());

    assert_eq!(relay.audit_kind("enroll.ok").len(), 5);
    let refused = relay.audit_kind("enroll.refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["detail"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("5 times"));
    // The CLI caps uses at 5.
    let out = relay.cli(&["token", "create", "--customer", "acme", "--uses", "6"]);
    assert!(!out.status.success());
}

#[test]
fn expired_and_unknown_tokens_are_refused() {
    let relay = Relay::start_new();
    let token = relay.token("acme", 5, "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let dir = tempfile::tempdir().unwrap();
    let out = enroll_output(
        &relay.url(),
        &token,
        &dir.path().join("a.toml"),
        &EnrollArgs::default(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Same fingerprint, a secret the relay never issued.
    let fp = token.rsplit('.').next().unwrap();
    let forged = format!("dwa1.AAAAAAAAAAAAAAAAAAAAAA.{fp}");
    let out = enroll_output(
        &relay.url(),
        &forged,
        &dir.path().join("b.toml"),
        &EnrollArgs::default(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown enrollment token"),
        "{}",
        stderr(&out)
    );

    let out = enroll_output(
        &relay.url(),
        "not-a-token",
        &dir.path().join("c.toml"),
        &EnrollArgs::default(),
    );
    assert!(
        stderr(&out).contains("malformed enrollment token"),
        "{}",
        stderr(&out)
    );

    let reasons: Vec<String> = relay
        .audit_kind("enroll.refused")
        .iter()
        .map(|r| r["detail"]["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("expired")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown")), "{reasons:?}");
}

#[test]
fn wrong_certificate_fingerprint_is_refused_before_anything_is_sent() {
    let relay = Relay::start_new();
    // A token of this relay with another relay's certificate fingerprint:
    // what an agent would hold if it were talking to an impostor.
    let good = relay.token("acme", 5, "1h");
    let other_fp = {
        let o = Relay::start_new();
        let t = o.token("acme", 1, "1h");
        t.rsplit('.').next().unwrap().to_string()
    };
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[2] = &other_fp;
    let bad = parts.join(".");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.toml");
    let out = enroll_output(&relay.url(), &bad, &cfg, &EnrollArgs::default());
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("fingerprint") && e.contains("expected the pinned"),
        "{e}"
    );
    assert!(!cfg.exists());
    // The secret was never sent: the token still has all its uses.
    assert!(relay.audit_kind("enroll.ok").is_empty());
    assert_eventually_blocking!(
        !relay.audit_kind("tls.cert_rejected").is_empty(),
        Duration::from_secs(10),
        "the relay did not audit the rejected certificate"
    );
    let out = enroll_output(
        &relay.url(),
        &good,
        &dir.path().join("b.toml"),
        &EnrollArgs::default(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_token_comes_from_a_file_a_variable_or_argv_but_one_only() {
    let relay = Relay::start_new();
    let token = relay.token("acme", 5, "1h");
    let dir = tempfile::tempdir().unwrap();
    let enroll = |name: &str, source: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(&bins().1);
        cmd.args(["--json", "enroll", "--relay", &relay.url(), "--config"])
            .arg(dir.path().join(name))
            .args(source);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let file = dir.path().join("token.txt");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = enroll("f.toml", &["--token-file", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = enroll(
        "e.toml",
        &["--token-env", "DWA_TEST_TOKEN"],
        Some(("DWA_TEST_TOKEN", &token)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = enroll("a.toml", &["--token", &token], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(relay.audit_kind("enroll.ok").len(), 3);

    // A variable that is not set, no source, or two sources: refused
    // before anything is sent.
    let out = enroll("x.toml", &["--token-env", "DWA_TEST_UNSET"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("DWA_TEST_UNSET is not set"),
        "{}",
        stderr(&out)
    );
    let out = enroll("y.toml", &[], None);
    assert!(!out.status.success());
    let out = enroll(
        "z.toml",
        &["--token", &token, "--token-file", file.to_str().unwrap()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    assert_eq!(relay.audit_kind("enroll.ok").len(), 3);
    assert!(relay.audit_kind("enroll.refused").is_empty());
}
