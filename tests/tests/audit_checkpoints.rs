//! Signed audit checkpoints: the relay signs the chain's head with its
//! host key, appends it to a file outside the database and sends it to the
//! agent, which keeps it in its own audit log beside every stream it
//! opened or refused. Deleting the newest records — invisible to the chain
//! alone — is caught against the relay's file, and against the agent's copy
//! once the relay's file is gone too. The signature is checked by OpenSSH.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dwa_e2e_tests::*;
use serde_json::Value;
use sqlx::Connection;

const PORT: u16 = 7070;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn verify(relay: &Relay, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let out = relay.cli(&args);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The id of the newest `stream.open` record.
fn last_stream_open(relay: &Relay) -> i64 {
    relay
        .audit_kind("stream.open")
        .last()
        .and_then(|r| r["id"].as_i64())
        .expect("a stream.open record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_is_caught_by_the_checkpoint_file_and_the_agents_copy() {
    let (mut relay, mut agent, ip) = Relay::with_agent_config(
        |cfg| {
            *cfg = cfg.replace(
                "checkpoint_interval = \"5m\"",
                "checkpoint_interval = \"1s\"",
            )
        },
        &[PORT, PORT + 1],
    );
    let _target = echo_target(&format!("{ip}:{PORT}")).await;
    relay.add_device(&agent, &ip);

    // One stream opened, one the agent could not open (nothing listens).
    let mut s = relay.open(&agent.id, &ip, PORT).await.expect("stream");
    assert_eq!(roundtrip(&mut s, b"ping").await, b"ping");
    drop(s);
    assert!(relay.open(&agent.id, &ip, PORT + 1).await.is_err());
    let opened = last_stream_open(&relay);

    // The relay's file and the agent's log both get a checkpoint past it.
    let file = relay.data.join("audit-checkpoints.jsonl");
    let agent_log = agent.config.with_file_name("audit.jsonl");
    let covers = |p: &Path, agent_form: bool| {
        lines(p).iter().any(|l| {
            let cp = if agent_form { &l["detail"] } else { l };
            (!agent_form || l["kind"] == "relay.checkpoint")
                && cp["id"].as_i64().is_some_and(|id| id >= opened)
        })
    };
    assert_eventually!(
        covers(&file, false) && covers(&agent_log, true),
        Duration::from_secs(20),
        "checkpoints past record {opened}: relay {:?}, agent {:?}",
        std::fs::read_to_string(&file).unwrap_or_default(),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    // The agent's own record of what it did on the site's network.
    let own = lines(&agent_log);
    let kinds: Vec<&str> = own.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert!(kinds.contains(&"stream.open"), "{kinds:?}");
    let denied = own
        .iter()
        .find(|l| l["kind"] == "stream.denied")
        .expect("the refused stream");
    assert_eq!(denied["detail"]["port"], PORT + 1);
    assert_eq!(denied["detail"]["rule"], "connect_failed", "{denied}");
    let shown = agent_cli(&["audit", "--config", &agent.config.display().to_string()]);
    assert!(
        shown.contains(&format!("refused {ip}:{}", PORT + 1))
            && shown.contains("relay audit log at record"),
        "{shown}"
    );

    // Anyone with the relay's public key checks a checkpoint with OpenSSH.
    if have_openssh() {
        let cp = lines(&file).pop().unwrap();
        openssh_verifies(&relay.data, &cp);
    } else {
        eprintln!("skipping the ssh-keygen -Y verify check: OpenSSH is not installed");
    }

    relay.stop();
    agent.signal(libc::SIGTERM);
    let (code, text) = verify(&relay, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("matches the signed checkpoint"), "{text}");

    // The newest records deleted (triggers dropped first): the chain alone
    // still verifies, the checkpoint does not.
    let db = relay.data.join("dwa.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_no_delete")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit WHERE id >= $1")
        .bind(opened)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (code, text) = verify(&relay, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("truncated"), "{text}");

    // The relay's own file removed as well: only the agent's copy tells.
    let moved = relay.data.join("gone.jsonl");
    std::fs::rename(&file, &moved).unwrap();
    let (code, text) = verify(&relay, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no signed checkpoint found"), "{text}");
    let copy = agent_log.display().to_string();
    let (code, text) = verify(&relay, &["--checkpoint", &copy]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("truncated") && text.contains(&format!("record {}", opened - 1)),
        "{text}"
    );

    // A checkpoint signed by another key is not evidence.
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("k");
    if have_openssh() {
        let forged = forge(&key, &lines(&moved).pop().unwrap());
        let (code, text) = verify(&relay, &["--checkpoint", &forged.display().to_string()]);
        assert_ne!(code, 0, "{text}");
        assert!(text.contains("verifies with this relay's key"), "{text}");
    }
    let (code, text) = verify(&relay, &["--checkpoint", "/nonexistent/file"]);
    assert!(
        code != 0 && code != 2,
        "a missing file is an error, not tampering: {text}"
    );
}

fn agent_cli(args: &[&str]) -> String {
    let out = Command::new(&bins().1).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `ssh-keygen -Y verify` accepts the checkpoint's signature over its
/// documented text with the relay's public host key.
fn openssh_verifies(data: &Path, cp: &Value) {
    let tmp = tempfile::tempdir().unwrap();
    let pubkey = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(data.join("ssh_host_ed25519_key"))
        .output()
        .unwrap();
    assert!(pubkey.status.success());
    let signers = tmp.path().join("allowed_signers");
    std::fs::write(
        &signers,
        format!("relay {}", String::from_utf8_lossy(&pubkey.stdout)),
    )
    .unwrap();
    let sig = tmp.path().join("sig");
    std::fs::write(&sig, cp["sig"].as_str().unwrap()).unwrap();
    let text = format!(
        "dwa audit checkpoint v1\nrelay {}\nrecord {}\nhash {}\ntime {}\n",
        cp["relay"].as_str().unwrap(),
        cp["id"],
        cp["hash"].as_str().unwrap(),
        cp["ts"]
    );
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&signers)
        .args(["-I", "relay", "-n", "dwa-audit-checkpoint@v1", "-s"])
        .arg(&sig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -Y verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same checkpoint re-signed by a key of our own (OpenSSH's
/// `ssh-keygen -Y sign`), in a file.
fn forge(key: &Path, cp: &Value) -> PathBuf {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(key)
        .status()
        .unwrap();
    assert!(ok.success());
    let msg = key.with_file_name("msg");
    std::fs::write(&msg, "anything").unwrap();
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "dwa-audit-checkpoint@v1", "-f"])
        .arg(key)
        .arg(&msg)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut forged = cp.clone();
    forged["sig"] = std::fs::read_to_string(msg.with_extension("sig"))
        .unwrap()
        .into();
    let path = key.with_file_name("forged.jsonl");
    std::fs::write(&path, format!("{forged}\n")).unwrap();
    path
}
