//! One address cannot lock everyone else out. 200 idle TCP
//! connections from one address (they never send a byte): a client from
//! another address still gets the relay's SSH banner at once, an agent
//! restarted meanwhile reconnects, and the flood keeps at most
//! `limits.handshakes_per_source` connections (the rest are closed at
//! once, the silent ones after `limits.version_timeout`). And connections
//! held open to both ports take at most `limits.connections_per_source`
//! of the relay's `max_connections`.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use dwa_e2e_tests::{Relay, SSH_PORT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(source, 0))?;
    s.connect(to).await
}

/// Whether the relay closes `s` within `within` (EOF or reset).
async fn closed_within(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The relay said something (it should not, to a silent client).
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_lock_nobody_out() {
    let (relay, mut agent, _) = Relay::with_agent(&[80]);
    let ssh: SocketAddr = format!("{}:{SSH_PORT}", relay.ip(1)).parse().unwrap();
    let flooder: IpAddr = relay.ip(50).parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = connect_from(flooder, ssh).await {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 200, "the kernel accepted every connection");
    let flood_started = Instant::now();

    // Another address: our version line, and the relay's banner at once.
    let other: IpAddr = relay.ip(60).parse().unwrap();
    let mut probe = connect_from(other, ssh).await.unwrap();
    probe.write_all(b"SSH-2.0-probe_1.0\r\n").await.unwrap();
    let mut banner = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 512];
        while !banner.windows(4).any(|w| w == b"SSH-") {
            let n = probe.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            banner.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    assert!(
        matches!(got, Ok(Ok(()))) && banner.starts_with(b"SSH-2.0-"),
        "no SSH banner within 5 s while one address floods: {:?}",
        String::from_utf8_lossy(&banner)
    );

    // An agent restarted meanwhile gets back in.
    let connects = relay.audit_kind("agent.connect").len();
    agent.kill9();
    agent.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.audit_kind("agent.connect").len() == connects {
        assert!(
            Instant::now() < deadline,
            "the agent did not reconnect during the flood\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        flood_started.elapsed() < Duration::from_secs(9),
        "the checks above took so long the flood may have timed out: {:?}",
        flood_started.elapsed()
    );

    // The flood kept at most 8 connections past the first second; those
    // went when they stayed silent.
    let results = futures_util::future::join_all(
        idle.into_iter()
            .map(|s| closed_within(s, Duration::from_secs(1))),
    )
    .await;
    let kept = results.iter().filter(|closed| !**closed).count();
    assert!(kept <= 8, "{kept} silent connections kept from one address");
    assert!(
        relay
            .logs()
            .contains("too many SSH handshakes from this address"),
        "{}",
        relay.logs()
    );
    drop(probe);
}

/// Connection slots: with room for 60 connections, one address holding
/// open connections to both ports cannot take them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_slot() {
    let mut relay = Relay::init_with(|c| {
        *c = c
            .replace("max_connections = 10000", "max_connections = 60")
            .replace(
                "connections_per_source = 1000",
                "connections_per_source = 20",
            );
        assert!(c.contains("connections_per_source = 20"), "{c}");
        assert!(c.contains("max_connections = 60"), "{c}");
    });
    relay.start();
    let ssh: SocketAddr = format!("{}:{SSH_PORT}", relay.ip(1)).parse().unwrap();
    let https: SocketAddr = format!("{}:{}", relay.ip(1), dwa_e2e_tests::HTTPS_PORT)
        .parse()
        .unwrap();
    let hog: IpAddr = relay.ip(70).parse().unwrap();
    let mut held = Vec::new();
    for i in 0..60 {
        let to = if i % 2 == 0 { ssh } else { https };
        if let Ok(s) = connect_from(hog, to).await {
            held.push(s);
        }
    }
    // The relay closes what is over the address's share at once.
    let results = futures_util::future::join_all(
        held.into_iter()
            .map(|s| closed_within(s, Duration::from_millis(1500))),
    )
    .await;
    let kept = results.iter().filter(|closed| !**closed).count();
    assert!(kept <= 20, "{kept} connections kept from one address");

    // Meanwhile another address is served on both ports.
    let other: IpAddr = relay.ip(71).parse().unwrap();
    let mut probe = connect_from(other, ssh).await.unwrap();
    probe.write_all(b"SSH-2.0-probe_1.0\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf))
        .await
        .expect("an SSH banner within 5 s")
        .unwrap();
    assert!(buf[..n].starts_with(b"SSH-2.0-"), "{:?}", &buf[..n]);
    let api = dwa_e2e_tests::browser::Api::from_source(&relay, other);
    let (status, _) = api.call(reqwest::Method::GET, "/me", None).await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNAUTHORIZED,
        "served, not refused"
    );
    assert!(
        relay
            .logs()
            .contains("too many connections from this address"),
        "{}",
        relay.logs()
    );
}

/// HTTPS, slow TLS and slow headers: one address's connections that have
/// not sent their first request hold at most
/// `limits.tls_handshakes_per_source` places (beyond them they are closed
/// at once), silent ones only for `limits.version_timeout`, ones that
/// finished TLS but send no request only until the header timeout.
/// Another address is served throughout, and the flooder itself again
/// once its places came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_tls_and_slow_headers_from_one_address_lock_nobody_out() {
    let mut relay = Relay::init_with(|c| {
        *c = c.replace(
            "tls_handshakes_per_source = 32",
            "tls_handshakes_per_source = 10",
        );
        assert!(c.contains("tls_handshakes_per_source = 10"), "{c}");
    });
    relay.start();
    let https: SocketAddr = format!("{}:{}", relay.ip(1), dwa_e2e_tests::HTTPS_PORT)
        .parse()
        .unwrap();
    let flooder: IpAddr = relay.ip(80).parse().unwrap();

    // Ten that finish the TLS handshake, then never send a request.
    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_file(relay.data.join("tls_cert.pem")).unwrap();
    let tls = std::sync::Arc::new(
        dwa_link::tls::pinned_client_config(&dwa_link::tls::fingerprint(&der)).unwrap(),
    );
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls::pki_types::ServerName::try_from("dwa.localhost").unwrap();
    let mut quiet = Vec::new();
    for _ in 0..10 {
        let tcp = connect_from(flooder, https).await.unwrap();
        quiet.push(connector.connect(name.clone(), tcp).await.expect("TLS"));
    }
    let quiet_since = Instant::now();

    // Then 50 silent ones: no place left, closed at once.
    let mut silent = Vec::new();
    for _ in 0..50 {
        if let Ok(s) = connect_from(flooder, https).await {
            silent.push(s);
        }
    }
    let results = futures_util::future::join_all(
        silent
            .into_iter()
            .map(|s| closed_within(s, Duration::from_millis(1500))),
    )
    .await;
    let kept = results.iter().filter(|closed| !**closed).count();
    assert_eq!(kept, 0, "{kept} connections kept over the address's places");
    assert!(
        relay
            .logs()
            .contains("too many TLS handshakes from this address"),
        "{}",
        relay.logs()
    );

    // Another address is served meanwhile.
    let other: IpAddr = relay.ip(81).parse().unwrap();
    let api = dwa_e2e_tests::browser::Api::from_source(&relay, other);
    let (status, _) = api.call(reqwest::Method::GET, "/me", None).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "served");

    // The ten without a request go at the header timeout (10 s).
    let mut buf = [0u8; 64];
    for mut s in quiet {
        let r = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a connection without a request was kept: {r:?}"
        );
    }
    assert!(
        quiet_since.elapsed() < Duration::from_secs(15),
        "{:?}",
        quiet_since.elapsed()
    );
    // Its places back, the flooder's own request is served.
    let again = dwa_e2e_tests::browser::Api::from_source(&relay, flooder);
    let (status, _) = again.call(reqwest::Method::GET, "/me", None).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "served again");
}
