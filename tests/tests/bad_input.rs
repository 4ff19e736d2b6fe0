//! Hostile and broken input: garbage and silence on the SSH port, garbage on
//! the WebSocket, an oversized control frame, a revoked key, a relay with
//! another host key, bad configuration. Clear errors, nothing crashes, the
//! relay keeps serving, and it audits what it sees.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwa_e2e_tests::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn short_handshake(cfg: &mut String) {
    *cfg = cfg.replace("handshake_timeout = \"10s\"", "handshake_timeout = \"2s\"");
}

/// Reads until EOF or error; returns how long the peer took to hang up.
async fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the relay kept the connection open for over {limit:?}"
    );
    start.elapsed()
}

async fn agent_still_connects(relay: &Relay, transport: &str) {
    let mut a = Agent::enroll(
        relay,
        EnrollArgs {
            transport,
            ..Default::default()
        },
    );
    a.start();
    relay.wait_connected(&a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_and_silence_on_the_ssh_port() {
    let mut relay = Relay::init_with(short_handshake);
    relay.start();
    relay.ok(&["customer", "add", "acme"]);
    let addr = format!("{}:{SSH_PORT}", relay.ip(1));

    let mut s = TcpStream::connect(&addr).await.unwrap();
    let junk: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&junk).await;
    closed_within(s, Duration::from_secs(10)).await;

    // A version line and then nothing: the handshake deadline ends it.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"SSH-2.0-slowloris\r\n").await.unwrap();
    let took = closed_within(s, Duration::from_secs(15)).await;
    assert!(
        took >= Duration::from_millis(1500),
        "closed before the deadline: {took:?}"
    );

    // Many silent connections at once: bounded handshakes queue and expire,
    // and a real agent still gets through afterwards.
    let mut silent = vec![];
    for _ in 0..100 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    for s in silent {
        closed_within(s, Duration::from_secs(30)).await;
    }
    agent_still_connects(&relay, "ssh").await;
}

fn relay_pin(relay: &Relay) -> String {
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_file(relay.data.join("tls_cert.pem")).unwrap();
    dwa_link::tls::fingerprint(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_websocket() {
    let relay = Relay::start_new();
    let tls = Arc::new(dwa_link::tls::pinned_client_config(&relay_pin(&relay)).unwrap());
    let addr = format!("{}:{HTTPS_PORT}", relay.ip(1));
    let host = relay.ip(1);

    // Binary garbage where SSH is expected.
    use dwa_link::transport::Transport;
    let t = dwa_link::transport::WsTransport {
        addr: addr.clone(),
        host: host.clone(),
        tls: tls.clone(),
        timeout: Duration::from_secs(10),
    };
    let mut io = t.connect().await.expect("websocket");
    let _ = io
        .write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff garbage")
        .await;
    let mut buf = vec![0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "garbage over the WebSocket did not end the connection"
    );

    // A text frame is not SSH either.
    let stream =
        dwa_link::transport::tls_connect(&addr, &host, tls.clone(), Duration::from_secs(10))
            .await
            .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/agent/ws"), stream)
        .await
        .unwrap();
    let _ = ws
        .send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await;
    let r = tokio::time::timeout(Duration::from_secs(15), async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(r.is_ok(), "a text frame did not end the connection");

    // A plain GET to the WebSocket path is a clear 400, not a crash.
    let stream = dwa_link::transport::tls_connect(&addr, &host, tls, Duration::from_secs(10))
        .await
        .unwrap();
    let mut stream = stream;
    stream
        .write_all(b"GET /agent/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("WebSocket"),
        "{resp}"
    );

    agent_still_connects(&relay, "websocket").await;
}

struct AcceptAll;
impl russh::client::Handler for AcceptAll {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _k: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_control_frame_ends_the_session_and_is_audited() {
    let relay = Relay::start_new();
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    // A misbehaving client holding a valid agent key.
    let key = russh::keys::load_secret_key(agent.key_path(), None).unwrap();
    let cfg = Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect(cfg, (relay.ip(1).as_str(), SSH_PORT), AcceptAll)
        .await
        .unwrap();
    let ok = h
        .authenticate_publickey(
            agent.id.clone(),
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(ok.success());
    let ch = h.channel_open_session().await.unwrap();
    ch.request_subsystem(true, dwa_proto::CONTROL_SUBSYSTEM)
        .await
        .unwrap();
    let mut frame = (1u32 << 20).to_be_bytes().to_vec();
    frame.extend_from_slice(&[b'{'; 1000]);
    ch.data(&frame[..]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), &mut h).await;
    assert!(
        ended.is_ok(),
        "the relay kept a session that sent an oversized frame"
    );
    assert_eventually!(
        relay
            .audit_kind("protocol.error")
            .iter()
            .any(|r| r["detail"]["error"]
                .as_str()
                .unwrap_or("")
                .contains("exceeds")),
        Duration::from_secs(10),
        "protocol error not audited: {:?}",
        relay.audit()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_agent_is_dropped_and_cannot_return() {
    let relay = Relay::start_new();
    let mut agent = Agent::enroll(&relay, EnrollArgs::default());
    agent.start();
    relay.wait_connected(&agent);
    relay.ok(&["agent", "revoke", &agent.id]);
    assert_eventually!(
        !relay.connected(&agent.id),
        Duration::from_secs(15),
        "revoked agent still connected"
    );
    assert_eventually!(
        relay
            .audit_kind("agent.auth_refused")
            .iter()
            .any(|r| r["detail"]["reason"] == "agent key revoked"),
        Duration::from_secs(30),
        "the revoked agent's reconnect was not refused and audited"
    );
    assert!(!relay.connected(&agent.id));
    assert_eventually!(
        agent.logs().contains("refused this agent's key"),
        Duration::from_secs(10),
        "the agent did not say why:\n{}",
        agent.logs()
    );
}

#[test]
fn relay_with_another_host_key_is_refused() {
    let relay = Relay::start_new();
    let mut agent = Agent::enroll(&relay, EnrollArgs::default());
    let impostor = dwa_link::ssh::generate_ed25519();
    let line = dwa_link::ssh::public_openssh(impostor.public_key());
    agent.edit_config(|c| {
        let start = c.find("ssh_host_key = \"").unwrap() + "ssh_host_key = \"".len();
        let end = start + c[start..].find('"').unwrap();
        c.replace_range(start..end, &line);
    });
    agent.start();
    assert_eventually_blocking!(
        agent.logs().contains("is pinned: refusing to connect"),
        Duration::from_secs(20),
        "agent did not refuse the relay's host key:\n{}",
        agent.logs()
    );
    assert!(!relay.connected(&agent.id));
    assert!(
        agent.is_running(),
        "a host key mismatch must not crash the agent"
    );
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let relay = Relay::start_new();
    let agent = Agent::enroll(&relay, EnrollArgs::default());
    let run = || {
        Command::new(&bins().1)
            .args(["run", "--config"])
            .arg(&agent.config)
            .output()
            .unwrap()
    };
    agent.edit_config(|c| *c = c.replace("allow = []", "allow = [\"10.0.0.0/24\", \"10.0.0/33\"]"));
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("policy.allow[1]"), "{e}");

    agent.edit_config(|c| {
        *c = c.replace(
            "allow = [\"10.0.0.0/24\", \"10.0.0/33\"]",
            "allow = []\nbogus_key = 1",
        )
    });
    let out = run();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("bogus_key"), "{e}");

    let mut bad = Relay::init();
    let cfg = bad.data.join("relay.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\nsurprise = true\n")).unwrap();
    let out = bad.cli(&["serve"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("surprise"), "{e}");
    let _ = &mut bad;
}
