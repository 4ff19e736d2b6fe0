//! Interop with a peer we did not write: Debian's OpenSSH client holding an
//! enrolled agent's key does `ssh -N -R 0:HOST:PORT` against the relay, and
//! the relay carries streams to it. An unknown key is refused and audited.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dwa_e2e_tests::*;

fn require_openssh() {
    assert!(
        have_openssh(),
        "this test needs the OpenSSH client (Debian package openssh-client); scripts/test.sh installs it"
    );
}

fn ssh(relay: &Relay, key: &std::path::Path, user: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ConnectTimeout=10",
        "-p",
        &SSH_PORT.to_string(),
        "-i",
    ])
    .arg(key)
    .args(extra)
    .arg(format!("{user}@{}", relay.ip(1)));
    c
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssh_remote_forward_carries_relay_streams() {
    require_openssh();
    let relay = Relay::start_new();
    let ip = relay.ip(10);
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    let _echo = echo_target(&format!("{ip}:7000")).await;

    let mut child = ssh(
        &relay,
        &agent.key_path(),
        &agent.id,
        &["-v", "-N", "-R", &format!("0:{ip}:7000")],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ssh");
    let stderr = child.stderr.take().expect("stderr");
    let _guard = Kill(child);
    // OpenSSH prints the port the server allocated once it accepted -R.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if let Some(rest) = line.split("Allocated port ").nth(1) {
                let port: u16 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let _ = tx.send(Ok(port));
                return;
            }
        }
        let _ = tx.send(Err(all));
    });
    let port = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(p)) => p,
        other => panic!(
            "ssh -R did not get a port: {other:?}\nrelay log:\n{}",
            relay.logs()
        ),
    };
    assert!(port > 0);
    relay.wait_connected(&agent);

    // The relay opens a stream to the forward; OpenSSH connects to HOST:PORT.
    let mut s = relay
        .open(&agent.id, &ip, port)
        .await
        .expect("stream via OpenSSH");
    let data = pattern(200_000, 3);
    assert_eq!(roundtrip(&mut s, &data).await, data);
    drop(s);
    assert_eq!(_echo.count(), 1);
    let binds = relay.audit_kind("forward.bind");
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0]["detail"]["port"], port);
}

#[test]
fn openssh_with_unknown_key_is_refused_and_audited() {
    require_openssh();
    let relay = Relay::start_new();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("stranger");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let out = ssh(&relay, &key, "agt_nobody", &["-N", "-R", "0:127.0.0.1:80"])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = relay.audit_kind("agent.auth_refused");
    assert!(!refused.is_empty());
    assert_eq!(refused[0]["detail"]["reason"], "unknown key");
}

#[test]
fn remote_forwards_are_capped_per_connection() {
    require_openssh();
    let relay = Relay::start_new();
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    let ip = relay.ip(10);
    // 17 forwards: the 17th is refused, and ExitOnForwardFailure ends ssh.
    let mut args: Vec<String> = vec!["-N".into()];
    for i in 0..17 {
        args.push("-R".into());
        args.push(format!("0:{ip}:{}", 7000 + i));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ssh(&relay, &agent.key_path(), &agent.id, &refs)
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("remote port forwarding failed"), "{e}");
    assert_eq!(relay.audit_kind("forward.bind").len(), 16);
}
