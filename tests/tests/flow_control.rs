//! The russh flow-control trap, proven gone: a stalled reader on one stream
//! does not stall the others (nor the control channel), memory per stream
//! stays bounded, a 1 GiB full-duplex echo completes, and 200 streams run
//! at once on one agent session.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwa_e2e_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_reader_does_not_stall_other_streams() {
    let (relay, _agent, ip) = Relay::with_agent(&[7000, 7001]);
    // A printer pushing a huge download to a browser that stopped reading.
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let _gen = serve_target(&format!("{ip}:7000"), move |mut s| {
        let p = p.clone();
        async move {
            let buf = vec![7u8; 64 * 1024];
            for _ in 0..(1024 * 1024 * 1024 / buf.len()) {
                if s.write_all(&buf).await.is_err() {
                    return;
                }
                p.fetch_add(buf.len() as u64, Ordering::SeqCst);
            }
        }
    })
    .await;
    let _echo = echo_target(&format!("{ip}:7001")).await;

    let stalled = relay
        .open(&_agent.id, &ip, 7000)
        .await
        .expect("stalled stream");
    // Wait until the producer is blocked: no progress for half a second.
    let mut last = u64::MAX;
    assert_eventually!(
        {
            let now = produced.load(Ordering::SeqCst);
            let still = now == last && now > 0;
            last = now;
            if !still {
                tokio::time::sleep(Duration::from_millis(450)).await;
            }
            still
        },
        Duration::from_secs(30),
        "producer never blocked"
    );
    let buffered = produced.load(Ordering::SeqCst);
    // Credits bound what sits unread between printer and browser: one window
    // (1 MiB) plus kernel socket buffers — never the whole download.
    assert!(
        buffered < 48 * 1024 * 1024,
        "{buffered} bytes left the producer with nobody reading"
    );

    // Other streams of the same agent session move at full speed meanwhile.
    let s = relay
        .open(&_agent.id, &ip, 7001)
        .await
        .expect("second stream");
    tokio::time::timeout(Duration::from_secs(120), duplex_echo(s, 64 * 1024 * 1024))
        .await
        .expect("a stalled stream stalled another one");
    for _ in 0..10 {
        let mut s = relay
            .open(&_agent.id, &ip, 7001)
            .await
            .expect("new stream while one is stalled");
        assert_eq!(roundtrip(&mut s, b"still alive").await, b"still alive");
    }
    for (who, pid) in [("relay", relay.pid()), ("agent", _agent.pid())] {
        let rss = rss_kib(pid.expect("pid"));
        assert!(
            rss < 200 * 1024,
            "{who} RSS {rss} KiB with one stalled stream"
        );
    }
    // The stalled stream is intact: it can still be read from the start.
    let mut stalled = stalled;
    let mut head = vec![0u8; 1024 * 1024];
    stalled
        .read_exact(&mut head)
        .await
        .expect("stalled stream resumes");
    assert!(head.iter().all(|b| *b == 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_gib_full_duplex_echo() {
    let (relay, agent, ip) = Relay::with_agent(&[7001]);
    let _echo = echo_target(&format!("{ip}:7001")).await;
    let s = relay.open(&agent.id, &ip, 7001).await.expect("stream");
    tokio::time::timeout(Duration::from_secs(600), duplex_echo(s, 1024 * 1024 * 1024))
        .await
        .expect("1 GiB full-duplex echo did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_streams() {
    let (relay, agent, ip) = Relay::with_agent(&[7001]);
    let _echo = echo_target(&format!("{ip}:7001")).await;
    let relay = Arc::new(relay);
    let mut streams = vec![];
    // All 200 open at the same time before any data flows.
    for _ in 0..200 {
        streams.push(relay.open(&agent.id, &ip, 7001).await.expect("open"));
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(duplex_echo(s, 2 * 1024 * 1024)))
        .collect();
    for t in tasks {
        let r = tokio::time::timeout(Duration::from_secs(120), t).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "stream failed: {r:?}\nrelay log:\n{}\nagent log:\n{}",
            relay.logs(),
            agent.logs()
        );
    }
    assert_eq!(_echo.count(), 200);
}
